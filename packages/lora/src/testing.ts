// Shared by this package's tests (not exported from the index): the masked log-probs of a batch of rows, and one
// full-batch SFT step on them.
import type { AdamW } from "@nr/autograd";
import { makeBatch, type Decoder } from "@nr/model";

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
