// Pre-flight: before step 1, one forward + backward at the longest sequences of each phase, so that a GPU
// out-of-memory is a message naming the knobs instead of a crash hours into a run.
import { GpuError, type Gpu } from "@nr/kernels";
import type { Engine } from "@nr/autograd";
import type { Decoder } from "@nr/model";
import type { LoraModel } from "@nr/lora";
import { rlTokenBudget, type TrainConfig } from "../run/index.js";
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
