// The training steps over the GPU decoder with LoRA adapters:
//  sftStep — masked causal-LM loss on completion tokens only (prompt tokens get no loss), here;
//  rlStep  — one RL iteration as @nr/algos' step plan says, in rl-step.ts (phases) and rl-sample.ts (sampling).
import type { AdamW, Engine } from "@nr/autograd";
import type { Decoder } from "@nr/model";
import { rowsPerForward } from "../fit.js";
import { chunks, completionBatch, type SftExampleIds } from "./rows.js";

export type { SftExampleIds } from "./rows.js";
export { Critic } from "./critic.js";
export { rlStep, seededPermutation } from "./rl-step.js";
export type { RlPrompt, RlSample, RlStepOptions, RlStepStats, RolloutSource } from "./rl-types.js";

export interface StepStats {
  loss: number;
  gradNorm: number;
  tokens: number;
}

/**
 * One optimizer step of SFT over `microBatches` (gradient accumulation): loss = −Σ mask·logp / Σ mask over the
 * whole step. Returns the mean loss; skips the update (and says so) when the loss or gradient is not finite.
 */
export async function sftStep(e: Engine, decoder: Decoder, opt: AdamW, microBatches: SftExampleIds[][], o: { lr: number; clipGradNorm: number; pad: number; recompute?: boolean; injectNan?: boolean }): Promise<StepStats & { skipped: boolean }> {
  const totalTokens = microBatches.reduce((a, mb) => a + mb.reduce((s, r) => s + r.completionIds.length, 0), 0);
  if (totalTokens === 0) throw new Error("sftStep: no completion tokens in this step");
  opt.zeroGrad();
  let nll = 0;
  // a micro-batch whose widest activation outgrows one binding is run in parts (the loss is normalised over the step)
  const fitting = microBatches.flatMap((mb) => chunks(mb, rowsPerForward(e, decoder.config, Math.max(...mb.map((r) => r.promptIds.length + r.completionIds.length)))));
  for (const mb of fitting) {
    await e.scope(async () => {
      const { batch, mask } = completionBatch(e, mb, o.pad);
      const res = decoder.forward(batch, { checkpoint: o.recompute });
      const lp = await res.logp.read();
      for (let i = 0; i < mask.length; i++) if (mask[i]) nll -= lp[i];
      const dLogp = Array.from(mask, (m) => -m / totalTokens);
      if (o.injectNan) dLogp[mask.indexOf(1)] = NaN; // test hook (NR_INJECT_NAN): a poisoned gradient must be caught
      decoder.backward(res, dLogp);
    });
  }
  const loss = nll / totalTokens;
  const gradNorm = await opt.clipGradNorm(o.clipGradNorm);
  const skipped = !Number.isFinite(loss) || !Number.isFinite(gradNorm);
  if (!skipped) opt.update(o.lr);
  return { loss, gradNorm, tokens: totalTokens, skipped };
}
