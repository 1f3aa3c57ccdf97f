// The padded row layout both training steps use: a row is a prompt followed by its completion; position t of the
// forward predicts token t + 1, so completion token j of row i is scored at flat position i·T + |prompt_i| − 1 + j.
import type { Engine } from "@nr/autograd";
import { makeBatch } from "@nr/model";

export interface SftExampleIds {
  promptIds: number[];
  completionIds: number[];
  /** Per completion token: 0 where the token is not the policy's action (TIR tool output), else 1. Default all 1. */
  lossMask?: number[];
}

/** Maps (row, completion token) to its flat position in a padded batch. */
export type PositionOf = (i: number, j: number) => number;

/**
 * Build a padded batch whose loss mask covers the completion tokens only (position t predicts token t + 1).
 * `at(i, j)` is the flat position whose log-prob is that of completion token j of row i.
 */
export function completionBatch(e: Engine, rows: SftExampleIds[], pad: number) {
  const b = makeBatch(e, rows.map((r) => [...r.promptIds, ...r.completionIds]), { pad });
  const at: PositionOf = (i, j) => i * b.T + rows[i].promptIds.length - 1 + j;
  const mask = new Float64Array(b.B * b.T);
  rows.forEach((r, i) => {
    for (let j = 0; j < r.completionIds.length; j++) mask[at(i, j)] = r.lossMask?.[j] ?? 1;
  });
  return { batch: b, mask, at };
}

/** Per-row (per completion token) values → the padded layout of a batch of `rows` (0 elsewhere). */
export function toPadded(rows: SftExampleIds[], perRow: ArrayLike<number>[], at: PositionOf, size: number): Float64Array {
  const out = new Float64Array(size);
  rows.forEach((r, i) => {
    for (let j = 0; j < r.completionIds.length; j++) out[at(i, j)] = perRow[i][j];
  });
  return out;
}

/**
 * The sampler's log-probs in the padded layout; where it gave none (the EOS the trainer appends) the trainer's own
 * value, so that token's importance weight is 1.
 */
export function samplerPadded(rows: SftExampleIds[], sampler: number[][], at: PositionOf, trainer: ArrayLike<number>): Float64Array {
  const out = Float64Array.from(trainer);
  rows.forEach((r, i) => {
    for (let j = 0; j < Math.min(r.completionIds.length, sampler[i].length); j++) out[at(i, j)] = sampler[i][j];
  });
  return out;
}

/** The padded layout → one array per row over its completion tokens. */
export function fromPadded(rows: SftExampleIds[], padded: ArrayLike<number>, at: PositionOf): Float64Array[] {
  return rows.map((r, i) => Float64Array.from({ length: r.completionIds.length }, (_, j) => padded[at(i, j)]));
}

/** `xs` in consecutive parts of at most `size` (one part when size is 0 or covers all). */
export function chunks<T>(xs: T[], size: number): T[][] {
  if (!(size > 0) || size >= xs.length) return [xs];
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += size) out.push(xs.slice(i, i + size));
  return out;
}
