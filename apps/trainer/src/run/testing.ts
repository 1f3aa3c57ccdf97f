// Fixtures shared by the report tests (report.test.ts, report.browser.test.ts).
import type { RunSummary, SampleRecord, StepMetrics } from "./folder.js";

/** A plausible run: SFT steps 1..20 (loss), RL steps 21..60 (reward, accuracy, length, kl, entropy, loss), evals. */
export function fakeRun(): { metrics: StepMetrics[]; samples: SampleRecord[]; summary: RunSummary } {
  const metrics: StepMetrics[] = [];
  for (let s = 1; s <= 20; s++) metrics.push({ step: s, phase: "sft", loss: 3 * Math.exp(-s / 8) + 0.2, lr: 1e-3 });
  for (let s = 21; s <= 60; s++) {
    const t = (s - 20) / 40;
    metrics.push({ step: s, phase: "rl", loss: 0.05 * Math.sin(s), reward: 0.3 + 0.5 * t, accuracy: 0.3 + 0.5 * t, response_length: 40 + 20 * t, thinking_rate: 0.6 + 0.3 * t, kl: 0.002 * s, entropy: 1.2 - 0.6 * t });
    if (s % 10 === 0) metrics.push({ step: s, phase: "eval", eval_accuracy: 0.25 + 0.5 * t, eval_thinking_rate: 0.5 + 0.4 * t });
  }
  const samples: SampleRecord[] = [];
  for (let i = 0; i < 120; i++) samples.push({ step: 21 + (i % 40), phase: "rl", prompt: `Ann has ${i} <apples> & Ben…`, completion: `step ${i}\\boxed{${i}}`, gold: String(i), correct: i % 3 !== 0, reward: i % 3 !== 0 ? 1 : 0, response_length: 20 + ((i * 37) % 50), finish_reason: i % 17 === 0 ? "length" : "eos" });
  const summary: RunSummary = { wall_seconds: 321.4, eval_base: { accuracy: 0.05, n: 200 }, eval_before: { accuracy: 0.25, n: 200 }, eval_after: { accuracy: 0.72, n: 200 }, algo: "dr_grpo", steps: 60, sft_steps: 20, rl_steps: 40 };
  return { metrics, samples, summary };
}
