// Shared by tests and benchmarks (`@nr/lora/testing`, not the index): the masked log-probs of a batch of rows, one
// full-batch SFT step on them, and adapters with nonzero weights.
import type { AdamW } from "@nr/autograd";
import { makeBatch, type Decoder } from "@nr/model";
import type { LoraModel } from "./lora.js";

/**
 * Give adapter `name` seeded uniform weights in [−scale/2, scale/2] (A then B per projection), frozen. PEFT's init
 * has B = 0, an adapter that does not change the model; tests of serving and loading need one that does.
 */
export function randomizeAdapter(lora: LoraModel, name: string, seed: number, scale = 0.8) {
  const c = lora.configs.get(name);
  if (!c) throw new Error(`randomizeAdapter: no adapter named "${name}"`);
  let s = seed >>> 0;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * scale;
  for (const p of lora.projections) {
    if (!p.adapters.has(name)) continue;
    const A = Array.from({ length: c.r * p.inFeatures }, rand);
    p.setAdapter(name, c, A, Array.from({ length: p.outFeatures * c.r }, rand), false);
  }
}

/** Per-token log-probs (no tape) of left-padded `rows`, with the batch's loss mask. */
export async function maskedLogps(decoder: Decoder, rows: number[][]) {
  const e = decoder.engine;
  return e.scope(async () => {
    const b = makeBatch(e, rows, { leftPad: true });
    const { logp } = e.noGrad(() => decoder.forward(b));
    return { logp: await logp.read(), mask: b.lossMask };
  });
}

/** One AdamW step on the mean token NLL of `rows` (right-padded); returns that NLL before the step. */
export async function nllStep(decoder: Decoder, opt: AdamW, rows: number[][], lr: number): Promise<number> {
  const e = decoder.engine;
  return e.scope(async () => {
    const b = makeBatch(e, rows);
    const res = decoder.forward(b);
    const n = b.lossMask.reduce((a, m) => a + m, 0);
    const lp = await res.logp.read();
    const nll = -lp.reduce((s, v, i) => s + (b.lossMask[i] ? v : 0), 0) / n;
    opt.zeroGrad();
    decoder.backward(res, Array.from(b.lossMask, (m) => -m / n));
    opt.update(lr);
    return nll;
  });
}
