// How many steps SFT takes and which completion budget an RL step gets: the rules the pipeline runs, in one place.

import type { TrainConfig } from "../run/index.js";

/**
 * SFT optimizer steps: `sft.steps`, or `sft.epochs` passes over the usable examples in whole steps of
 * batchSize × gradAccum (at least one step per epoch; a partial last step is not taken). 0 when SFT is off.
 */
export function sftSchedule(c: TrainConfig, examples: number): { perEpoch: number; total: number } {
  const perEpoch = Math.max(1, Math.floor(examples / (c.sft.batchSize * c.sft.gradAccum)));
  const total = c.sft.enabled ? (c.sft.steps ?? Math.max(1, Math.round(perEpoch * (c.sft.epochs ?? 1)))) : 0;
  return { perEpoch, total };
}

/** The length stage RL step `step` (0-based) reaches by step count alone: stage k of n covers [k·steps/n, (k+1)·steps/n). */
export function stageIndexAt(c: TrainConfig, step: number): number {
  const st = c.rl.lengthStages;
  if (st.length === 0 || c.rl.steps === 0) return 0;
  return Math.min(st.length - 1, Math.floor((step * st.length) / c.rl.steps));
}

/** max_new_tokens at length stage `stage` (rl.maxNewTokens without stages). */
export function rlMaxNewTokens(c: TrainConfig, stage: number): number {
  const st = c.rl.lengthStages;
  return st.length ? st[Math.min(stage, st.length - 1)] : c.rl.maxNewTokens;
}
