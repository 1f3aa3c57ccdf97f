// Reward shaping that belongs to algorithms: DAPO soft overlong punishment, GRPO-LEAD length-dependent reward and
// difficulty weights, LPRO reward, reward mapping. Pure functions over one group.
import { allEqual, mean, std } from "./stats.js";
import type { AlgoConfig, CompletionGroup, StdConvention } from "./types.js";

/**
 * DAPO soft overlong punishment (added to the reward):
 *   0                                   if len ≤ maxLength − cacheLength
 *   ((maxLength − cacheLength) − len) / cacheLength   inside the buffer
 *   −1                                  if len > maxLength
 * multiplied by `factor` (veRL `penalty_factor`, default 1).
 */
export function softOverlongPenalty(length: number, maxLength: number, cacheLength: number, factor = 1): number {
  if (!Number.isFinite(maxLength) || maxLength <= 0) {
    throw new Error(`softOverlongPenalty: maxLength = ${maxLength} (allowed: a finite number > 0)`);
  }
  if (!Number.isFinite(cacheLength) || cacheLength < 0 || cacheLength > maxLength) {
    throw new Error(`softOverlongPenalty: cacheLength = ${cacheLength} (allowed: a number in [0, maxLength = ${maxLength}])`);
  }
  if (!Number.isFinite(length) || length < 0) {
    throw new Error(`softOverlongPenalty: length = ${length} (allowed: a finite number ≥ 0)`);
  }
  const free = maxLength - cacheLength;
  if (length <= free) return 0;
  if (length > maxLength) return -1 * factor;
  // cacheLength > 0 here (length ∈ (free, maxLength] is empty otherwise).
  return ((free - length) / cacheLength) * factor;
}

/** GRPO-LEAD decreasing logistic weight w(x) = A + (B − A)/(1 + exp(k (x − x0))). */
export function leadWeight(x: number, p: { A: number; B: number; x0: number; k: number }): number {
  return p.A + (p.B - p.A) / (1 + Math.exp(p.k * (x - p.x0)));
}

/** Correctness flags of a group: `correct` if given, else `rewards[i] > 0` (GRPO-LEAD code convention). */
export function correctness(group: CompletionGroup): boolean[] {
  if (group.correct) return group.correct.slice();
  return group.rewards.map((r) => r > 0);
}

/** Indices of scorable completions (finite base reward and finite length). */
export function scorableIndices(group: CompletionGroup): number[] {
  const idx: number[] = [];
  for (let i = 0; i < group.rewards.length; i++) {
    if (Number.isFinite(group.rewards[i]) && Number.isFinite(group.lengths[i])) idx.push(i);
  }
  return idx;
}

/**
 * Length z-scores of the correct completions of a group, used by GRPO-LEAD: z_i = (L_i − μ_C)/(σ_C + ε) with
 * σ_C = 1 when |C| ≤ 1 (reference code). 0 for non-correct entries, and 0 when the correct lengths are all equal.
 */
export function correctLengthZ(
  lengths: number[],
  isCorrect: boolean[],
  scorable: number[],
  convention: StdConvention,
  eps: number,
): Float64Array {
  const z = new Float64Array(lengths.length);
  const C = scorable.filter((i) => isCorrect[i]);
  if (C.length === 0) return z;
  const Lc = C.map((i) => lengths[i]);
  if (allEqual(Lc)) return z;
  const mu = mean(Lc);
  const sigma = C.length <= 1 ? 1 : std(Lc, convention);
  for (const i of C) z[i] = (lengths[i] - mu) / (sigma + eps);
  return z;
}

/**
 * GRPO-LEAD shaped rewards of one group (before normalisation).
 * - paper: correct → exp(−α z_i); wrong → `wrongReward` (−1), or `unformattedReward` (0) when formatOk[i] is false.
 * - simple (brief): correct → r_i · exp(−α |z_i|); wrong → r_i.
 * The length factor applies only when `lengthRewardMinTokens` is 0 or the mean of the 3 shortest lengths exceeds it.
 * Unscorable completions get NaN.
 */
export function leadRewards(group: CompletionGroup, cfg: AlgoConfig): Float64Array {
  const G = group.rewards.length;
  const out = new Float64Array(G).fill(NaN);
  const scorable = scorableIndices(group);
  const ok = correctness(group);
  const p = cfg.lead;
  let applyLength = true;
  if (p.lengthRewardMinTokens > 0) {
    const shortest = scorable.map((i) => group.lengths[i]).sort((a, b) => a - b).slice(0, 3);
    applyLength = shortest.length > 0 && mean(shortest) > p.lengthRewardMinTokens;
  }
  const z = applyLength
    ? correctLengthZ(group.lengths, ok, scorable, cfg.advantage.std, cfg.advantage.eps)
    : new Float64Array(G);
  for (const i of scorable) {
    if (p.variant === "paper") {
      if (ok[i]) out[i] = Math.exp(-p.alpha * z[i]);
      else out[i] = group.formatOk && group.formatOk[i] === false ? p.unformattedReward : p.wrongReward;
    } else {
      out[i] = ok[i] ? group.rewards[i] * Math.exp(-p.alpha * Math.abs(z[i])) : group.rewards[i];
    }
  }
  return out;
}

/** LPRO reward r_i = 1[correct_i] + formatWeight · 1[formatOk_i] (format term omitted when formatOk is absent). */
export function lproRewards(group: CompletionGroup, cfg: AlgoConfig): Float64Array {
  const G = group.rewards.length;
  const out = new Float64Array(G).fill(NaN);
  const ok = correctness(group);
  for (const i of scorableIndices(group)) {
    out[i] = (ok[i] ? 1 : 0) + (group.formatOk?.[i] ? cfg.lpro.formatWeight : 0);
  }
  return out;
}

/**
 * The reward each estimator normalises, per completion (NaN = unscorable):
 * `group`/`gae`: mapped base reward (raw or 2r − 1); `lead`: GRPO-LEAD reward; `lpro`: LPRO reward;
 * plus the soft overlong penalty when `overlong.softPenalty` is on.
 */
export function shapedRewards(group: CompletionGroup, cfg: AlgoConfig): Float64Array {
  checkGroup(group);
  let r: Float64Array;
  switch (cfg.advantage.estimator) {
    case "lead":
      r = leadRewards(group, cfg);
      break;
    case "lpro":
      r = lproRewards(group, cfg);
      break;
    default: {
      r = new Float64Array(group.rewards.length).fill(NaN);
      for (const i of scorableIndices(group)) {
        const b = group.rewards[i];
        r[i] = cfg.reward.mapping === "signed" ? 2 * b - 1 : b;
      }
    }
  }
  if (cfg.overlong.softPenalty) {
    const o = cfg.overlong;
    for (let i = 0; i < r.length; i++) {
      if (Number.isFinite(r[i])) r[i] += softOverlongPenalty(group.lengths[i], o.maxLength, o.cacheLength, o.factor);
    }
  }
  return r;
}

/** Validates the shape of a group; throws a clear error naming the field. */
export function checkGroup(group: CompletionGroup): void {
  if (!group || !Array.isArray(group.rewards) || !Array.isArray(group.lengths)) {
    throw new Error("@nr/algos: a group needs `rewards: number[]` and `lengths: number[]`");
  }
  const G = group.rewards.length;
  if (group.lengths.length !== G) {
    throw new Error(`@nr/algos: group.lengths has ${group.lengths.length} entries, group.rewards has ${G} (allowed: equal lengths)`);
  }
  for (const key of ["correct", "formatOk", "truncated", "values", "oldLogp", "refLogp"] as const) {
    const a = group[key];
    if (a !== undefined && a.length !== G) {
      throw new Error(`@nr/algos: group.${key} has ${a.length} entries, group.rewards has ${G} (allowed: one per completion)`);
    }
  }
  for (let i = 0; i < G; i++) {
    const L = group.lengths[i];
    if (Number.isFinite(group.rewards[i]) && !(Number.isFinite(L) && L >= 0)) {
      throw new Error(`@nr/algos: group.lengths[${i}] = ${L} (allowed: a finite number ≥ 0)`);
    }
  }
}

/**
 * Overlong filtering: a copy of the loss mask with every token of a truncated sequence set to 0.
 * `mask` is per token (padded [N][T] when `seqIds` is absent), `truncated` per sequence.
 */
export function maskTruncated(
  mask: ArrayLike<number>,
  truncated: ArrayLike<boolean | number>,
  numSequences: number,
  seqIds?: ArrayLike<number>,
): Float64Array {
  const out = Float64Array.from(mask);
  const T = numSequences > 0 ? mask.length / numSequences : 0;
  for (let t = 0; t < out.length; t++) {
    const s = seqIds ? seqIds[t] : Math.floor(t / T);
    if (truncated[s]) out[t] = 0;
  }
  return out;
}
