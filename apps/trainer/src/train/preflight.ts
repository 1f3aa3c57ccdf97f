// Pre-flight: before step 1, one forward + backward at the longest sequences of each phase, so that a GPU
// out-of-memory is a message naming the knobs instead of a crash hours into a run. Before that, as soon as the
// adapter is known and before the model loads, the KV caches of generation (one binding per layer's K and V) are
// checked against the adapter's binding limit (kvCacheProblem, also used by nr generate / eval / serve).
import { GpuError, type Gpu } from "@nr/kernels";
import type { GpuSessionOptions } from "../gpu-session.js";
import type { Engine } from "@nr/autograd";
import type { Decoder, ModelConfig } from "@nr/model";
import type { LoraModel } from "@nr/lora";
import { rlTokenBudget, type TrainConfig } from "../run/index.js";
import { EVAL_BATCH } from "./run-eval.js";
import { kvCacheProblem } from "../kv-fit.js";
import type { SftExampleIds } from "./loop.js";
import { rowsPerForward } from "../fit.js";

/**
 * One forward + backward at the longest sequences each phase will see (SFT: batchSize × the longest example; RL: the
 * rows of a minibatch × (longest prompt + the largest completion budget)), with no update. A GPU out-of-memory error
 * here becomes a message with the knobs to turn, instead of a crash at step 137.
 */
export async function preflight(a: { gpu: Gpu; engine: Engine; decoder: Decoder; lora: LoraModel; config: TrainConfig; sftExamples: SftExampleIds[]; rlPromptLen: number; pad: number; log: (l: string) => void }) {
  const { gpu, engine: e, decoder, config, pad } = a;
  const probe = async (phase: string, rows: number, len: number, checkpoint: boolean, knobs: string) => {
    if (rows <= 0 || len < 2) return;
    gpu.pool.resetPeak();
    const ids = Array.from({ length: len }, (_, i) => (i * 7 + 3) % Math.max(2, decoder.config.vocabSize));
    const { makeBatch } = await import("@nr/model");
    try {
      await e.scope(async () => {
        const b = makeBatch(e, Array.from({ length: rows }, () => ids), { pad });
        const res = decoder.forward(b, { checkpoint });
        decoder.backward(res, new Float64Array(rows * len).fill(-1 / (rows * len)));
        await res.logp.read();
      });
      for (const t of a.lora.parameters("policy")) {
        t.grad?.dispose();
        t.grad = null;
      }
    } catch (err) {
      if (err instanceof GpuError && err.kind === "out-of-memory") throw new Error(`pre-flight: one ${phase} step at ${rows} sequences × ${len} tokens does not fit in GPU memory (${err.message}). ${knobs}`);
      throw err;
    }
    a.log(`pre-flight: ${phase} step at ${rows} × ${len} tokens fits (GPU pool peak ${(gpu.pool.getStats().peakAllocatedBytes / 2 ** 20).toFixed(1)} MiB; largest buffer allowed ${(gpu.limits.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB)`);
  };
  if (config.sft.enabled && a.sftExamples.length) {
    const longest = Math.max(...a.sftExamples.map((x) => x.promptIds.length + x.completionIds.length));
    // sftStep runs a batch in parts that one binding holds the activation of
    await probe("SFT", Math.min(config.sft.batchSize, rowsPerForward(e, decoder.config, longest) || Infinity), longest, config.sft.checkpointing, "Lower sft.batchSize (raise sft.gradAccum to keep the effective batch), set sft.checkpointing true, or lower sft.maxSeqLen.");
  }
  if (config.rl.enabled && config.rl.steps > 0) {
    const budget = rlTokenBudget(config);
    // rl.microBatchRows 0: a minibatch's rows, capped as rlStep caps them to what one binding holds
    const cap = rowsPerForward(e, decoder.config, a.rlPromptLen + budget) || Infinity;
    const rows = config.rl.microBatchRows > 0 ? config.rl.microBatchRows : Math.min(cap, Math.ceil((config.rl.promptsPerStep * config.rl.G) / config.rl.miniBatches));
    await probe("RL", rows, a.rlPromptLen + budget, config.sft.checkpointing, "Set rl.microBatchRows (completions per forward pass), raise rl.miniBatches, lower rl.maxNewTokens / rl.G, or set sft.checkpointing true (used by RL too).");
  }
}

/**
 * `nr train`'s generation KV caches (RL: rl.promptsPerStep × rl.G rows of prompt + the largest completion budget;
 * evals: up to EVAL_BATCH problems × (1 greedy + eval.samples) rows of prompt + eval.maxNewTokens) against the binding
 * limit. Throws one error listing every phase that does not fit; run it after the adapter is known, before loading.
 */
export function preflightKvCache(m: ModelConfig, config: TrainConfig, limit: number, promptTokens: { rl: number; eval: number }): void {
  const problems: string[] = [];
  if (config.rl.enabled && config.rl.steps > 0 && !config.rl.rollout?.servers.length) {
    const rows = config.rl.promptsPerStep * config.rl.G;
    problems.push(kvCacheProblem(m, "pre-flight, RL generation", rows, promptTokens.rl + rlTokenBudget(config), limit, "rl.promptsPerStep or rl.G (rows), or rl.maxNewTokens / rl.lengthStages (tokens); or generate on servers (rl.rollout.servers)") ?? "");
  }
  if (config.eval.n > 0) {
    const rows = Math.min(EVAL_BATCH, config.eval.n) * (1 + config.eval.samples);
    problems.push(kvCacheProblem(m, "pre-flight, eval", rows, promptTokens.eval + config.eval.maxNewTokens, limit, "eval.samples (rows; problems run 32 at a time) or eval.maxNewTokens (tokens)") ?? "");
  }
  const found = problems.filter((p) => p !== "");
  if (found.length) throw new Error(found.join("\n"));
}

/** openGpuSession's beforeLoad for `nr train`: preflightKvCache at the longest encoded RL and eval prompts. */
export function trainKvCheck(config: TrainConfig, encodePrompt: (problem: string) => number[], train: { problem: string }[], heldout: { problem: string }[]): NonNullable<GpuSessionOptions["beforeLoad"]> {
  const longest = (rows: { problem: string }[]) => Math.max(1, ...rows.map((r) => encodePrompt(r.problem).length));
  // the RL prompts sampled come from the whole train split: its first 256 stand in for it, as the probes do
  const promptTokens = { rl: longest(train.slice(0, 256)), eval: longest(heldout.slice(0, config.eval.n)) };
  return (gpu, m) => preflightKvCache(m, config, Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize), promptTokens);
}
