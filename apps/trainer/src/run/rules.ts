// Cross-field rules of a training config that the schema cannot express: sampling needs a positive temperature, every
// sequence must fit the model's context window, micro-batches must fit a minibatch. Each problem names the key, its
// value and a fix; validateConfig lists them all at once, before any model is loaded.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { TrainConfig } from "./config.js";

/** Temperatures and batch sizes that only fail deep inside a run (at the first sampled token, after SFT). */
export function samplingProblems(c: TrainConfig): string[] {
  const problems: string[] = [];
  const rlSamples = c.rl.enabled && c.rl.steps > 0;
  if (rlSamples && !(c.rl.temperature > 0)) problems.push(`rl.temperature = ${c.rl.temperature} is not allowed: RL samples G completions per prompt and needs a temperature > 0 (e.g. --rl.temperature 1)`);
  if (c.eval.samples > 0 && !(c.eval.sampleTemperature > 0)) problems.push(`eval.sampleTemperature = ${c.eval.sampleTemperature} is not allowed with eval.samples = ${c.eval.samples}: sampled evals need a temperature > 0 (e.g. --eval.sampleTemperature 1), or set --eval.samples 0 for greedy only`);
  const rollouts = c.rl.G * c.rl.promptsPerStep;
  if (rlSamples && c.rl.microBatchRows > rollouts) problems.push(`rl.microBatchRows = ${c.rl.microBatchRows} exceeds the ${rollouts} completions per step (rl.G × rl.promptsPerStep): set it to at most ${rollouts}, or 0 for whole minibatches`);
  return problems;
}

/** The context window (max_position_embeddings) of an HF checkpoint folder, or null when it does not say. */
export function checkpointContextWindow(modelDir: string): number | null {
  try {
    const v = (JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")) as { max_position_embeddings?: unknown }).max_position_embeddings;
    return typeof v === "number" && Number.isInteger(v) && v > 0 ? v : null;
  } catch {
    return null;
  }
}

/** The largest completion budget RL uses (rl.maxNewTokens or the longest length stage). */
export const rlTokenBudget = (c: TrainConfig) => Math.max(c.rl.maxNewTokens, ...c.rl.lengthStages);

/**
 * Sequences that cannot fit a `ctx`-token context window: SFT examples (sft.maxSeqLen), RL and eval completions after
 * their prompts. `prompt` is the longest prompt in tokens (0 before the data is tokenized: completions alone).
 */
export function contextProblems(c: TrainConfig, ctx: number, where: string, prompt = 0): string[] {
  const problems: string[] = [];
  const room = ctx - prompt;
  const withPrompt = prompt > 0 ? ` after the longest ${prompt}-token prompt` : "";
  if (c.sft.enabled && c.sft.maxSeqLen > ctx) problems.push(`sft.maxSeqLen = ${c.sft.maxSeqLen} exceeds the model's ${ctx}-token context window (${where}): set --sft.maxSeqLen ${ctx} or less`);
  const rlBudget = rlTokenBudget(c);
  const rlKey = rlBudget === c.rl.maxNewTokens ? "rl.maxNewTokens" : "rl.lengthStages";
  if (c.rl.enabled && c.rl.steps > 0 && rlBudget >= room) problems.push(`${rlKey} = ${rlKey === "rl.maxNewTokens" ? rlBudget : c.rl.lengthStages.join(",")} does not fit the model's ${ctx}-token context window${withPrompt} (${where}): set at most ${Math.max(1, room - 1)} new tokens`);
  if (c.eval.maxNewTokens >= room) problems.push(`eval.maxNewTokens = ${c.eval.maxNewTokens} does not fit the model's ${ctx}-token context window${withPrompt} (${where}): set --eval.maxNewTokens ${Math.max(1, room - 1)} or less`);
  return problems;
}

/** contextProblems for a config whose model.dir exists (the generated-model case is checked once the model is made). */
export function modelDirContextProblems(c: TrainConfig, modelDir: string): string[] {
  if (!existsSync(join(modelDir, "config.json"))) return [];
  const ctx = checkpointContextWindow(modelDir);
  return ctx === null ? [] : contextProblems(c, ctx, `max_position_embeddings in ${join(modelDir, "config.json")}`);
}
