// The held-out evaluation of `nr train`: greedy pass@1 (eval.temperature), and with eval.samples = k also k samples
// per problem at eval.sampleTemperature: avg@k (the sampled pass@1 that R1-style reports quote) and pass@k. Fixed
// seeds: every eval draws the same way. Logged and written to metrics.jsonl.
import { ProgressBar, thinks, type MathRecord } from "@nr/data";
import type { WebGpuGenerator } from "@nr/rollout";
import type { LoraModel } from "@nr/lora";
import type { TrainConfig } from "../run/index.js";
import type { RunFolder } from "../run/folder.js";
import { describeEval } from "./eval-lines.js";
import { isCorrect } from "./grading.js";
import type { GradeFn } from "@nr/data";
import type { EvalRecord } from "./state.js";

export interface RunEvalParts {
  config: TrainConfig;
  run: RunFolder;
  lora: LoraModel;
  gen: WebGpuGenerator;
  grade: GradeFn;
  encodePrompt: (problem: string) => number[];
  /** The held-out problems (the first eval.n). */
  problems: MathRecord[];
  /** The step the record is filed under (read when the eval runs). */
  step: () => number;
  log: (line: string) => void;
}

/** The run's evaluator: `evaluate(label)` scores the current adapter (whatever lora has selected). */
export function runEvaluator(p: RunEvalParts): (label: string) => Promise<EvalRecord> {
  const { config, gen, grade, problems } = p;
  return async (label) => {
    p.lora.setTraining(false);
    const k = config.eval.samples;
    let correct = 0, sampledCorrect = 0, solved = 0, thinking = 0;
    const bar = new ProgressBar({ total: problems.length, label: `eval ${label}`, unit: "problems" });
    const chunk = 32;
    for (let i = 0; i < problems.length; i += chunk) {
      const part = problems.slice(i, i + chunk);
      const prompts = part.map((r) => p.encodePrompt(r.problem));
      const out = await gen.generateIds(prompts.map((promptIds) => ({ promptIds, n: 1 })), { temperature: config.eval.temperature, maxNewTokens: config.eval.maxNewTokens, seed: config.seed });
      for (let j = 0; j < part.length; j++) {
        if (isCorrect(await grade(out[j][0].text, part[j].answer))) correct++;
        if (thinks(out[j][0].text)) thinking++;
      }
      if (k > 0) {
        const sampled = await gen.generateIds(prompts.map((promptIds) => ({ promptIds, n: k })), { temperature: config.eval.sampleTemperature, topP: 1, maxNewTokens: config.eval.maxNewTokens, seed: config.seed + 1 + i });
        for (let j = 0; j < part.length; j++) {
          let c = 0;
          for (const s of sampled[j]) if (isCorrect(await grade(s.text, part[j].answer))) c++;
          sampledCorrect += c;
          if (c > 0) solved++;
        }
      }
      bar.tick(part.length);
    }
    bar.finish();
    const n = problems.length;
    const step = p.step();
    const rec: EvalRecord = { step, label, accuracy: n ? correct / n : 0, n, thinkingRate: n ? thinking / n : 0 };
    if (k > 0) Object.assign(rec, { samples: k, avgAtK: n ? sampledCorrect / (n * k) : 0, passAtK: n ? solved / n : 0 });
    p.log(`eval ${label}: ${describeEval(rec, config.eval.sampleTemperature)} on ${n} held-out problems`);
    p.run.logMetrics({ step, phase: "eval", eval_accuracy: rec.accuracy, eval_thinking_rate: rec.thinkingRate, ...(k > 0 ? { eval_avg_at_k: rec.avgAtK, eval_pass_at_k: rec.passAtK, eval_samples: k } : {}), eval_label: label, eval_n: n });
    return rec;
  };
}
