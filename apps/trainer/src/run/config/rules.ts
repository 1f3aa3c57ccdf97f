// Cross-field rules of a training config that the schema cannot express: sampling needs a positive temperature, every
// sequence must fit the model's context window, micro-batches must fit a minibatch. Each problem names the key, its
// value and a fix; validateConfig lists them all at once, before any model is loaded.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { preset, type AlgoName, type AlgoOverrides } from "@nr/algos";
import type { TrainConfig } from "./types.js";
import { CONFIG_SCHEMA, describe, show, type Leaf } from "./schema.js";

/** Every rule across keys (model shape, quantisation, difficulty, RL batch shapes, length stages, name, sampling). */
export function crossFieldProblems(c: TrainConfig): string[] {
  const problems: string[] = [];
  const g = c.model.generate;
  if (g) {
    if (g.hidden % g.heads !== 0) problems.push(`model.generate.hidden = ${g.hidden} must be divisible by model.generate.heads = ${g.heads}`);
    else if ((g.hidden / g.heads) % 2 !== 0) problems.push(`model.generate.hidden / heads = ${g.hidden / g.heads} must be even (RoPE rotates pairs)`);
    if (g.heads % g.kvHeads !== 0) problems.push(`model.generate.heads = ${g.heads} must be a multiple of model.generate.kvHeads = ${g.kvHeads}`);
  }
  if (c.model.dtype === "f16" && c.model.quant === "nf4") problems.push(`model.dtype = "f16" needs model.quant = "none" (an NF4 base keeps its own 4-bit storage)`);
  if (c.model.doubleQuant && c.model.quant !== "nf4") problems.push(`model.doubleQuant = true needs model.quant = "nf4" (got "${c.model.quant}")`);
  if (c.data.difficulty.minSteps > c.data.difficulty.maxSteps) problems.push(`data.difficulty.minSteps = ${c.data.difficulty.minSteps} must be <= data.difficulty.maxSteps = ${c.data.difficulty.maxSteps}`);
  if (c.rl.G < 2 && c.rl.algo !== "ppo") problems.push(`rl.G = ${c.rl.G} is too small for rl.algo = "${c.rl.algo}": group-relative advantages need rl.G >= 2 (only "ppo" works with 1)`);
  const rollouts = c.rl.G * c.rl.promptsPerStep;
  if (c.rl.miniBatches > rollouts) problems.push(`rl.miniBatches = ${c.rl.miniBatches} exceeds the ${rollouts} completions per step (rl.G × rl.promptsPerStep)`);
  const st = c.rl.lengthStages;
  for (let i = 0; i < st.length; i++) {
    if (i > 0 && st[i] <= st[i - 1]) problems.push(`rl.lengthStages must increase (got ${st.join(",")})`);
    if (st[i] > c.rl.maxNewTokens) problems.push(`rl.lengthStages[${i}] = ${st[i]} exceeds rl.maxNewTokens = ${c.rl.maxNewTokens}`);
  }
  if (!c.sft.enabled && !c.rl.enabled) problems.push(`sft.enabled and rl.enabled are both false: nothing to train`);
  for (const url of c.rl.rollout?.servers ?? []) if (!/^https?:\/\/[^/\s]+/.test(url)) problems.push(`rl.rollout.servers: ${show(url)} is not an http(s) URL (e.g. http://127.0.0.1:8000/v1)`);
  if (c.rl.rollout && c.rl.rollout.tisCap > 0 && c.rl.rollout.tisCap < 1) problems.push(`rl.rollout.tisCap = ${c.rl.rollout.tisCap} must be 0 (off) or >= 1 (a cap below 1 would shrink every token's weight)`);
  if (!/^[\w.-]+$/.test(c.name) || c.name === "." || c.name === "..") problems.push(`name = ${show(c.name)} is not allowed: expected ${describe(CONFIG_SCHEMA.fields.name as Leaf)}`);
  problems.push(...samplingProblems(c), ...algoConfigProblems(c));
  return problems;
}

/** rl.algoConfig merged over the rl.algo preset and checked by @nr/algos itself; each message names rl.algoConfig.<key>. */
export function algoConfigProblems(c: TrainConfig): string[] {
  if (c.rl.algoConfig === undefined) return [];
  try {
    preset(c.rl.algo as AlgoName, c.rl.algoConfig as AlgoOverrides, "rl.algoConfig");
    return [];
  } catch (err) {
    const message = (err as Error).message.replace(/^@nr\/algos: /, "");
    const items = message.split("\n").filter((l) => l.startsWith("  - ")).map((l) => `${l.slice(4)} (for rl.algo = "${c.rl.algo}")`);
    return items.length ? items : [message];
  }
}

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
