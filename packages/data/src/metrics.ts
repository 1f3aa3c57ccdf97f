/** Evaluation metrics: unbiased pass@k, majority voting, length statistics. */

/**
 * Unbiased pass@k estimator (Chen et al., 2021): the probability that at least one of `k` samples
 * drawn without replacement from `n` generated samples, `c` of them correct, is correct:
 * `1 − C(n−c, k) / C(n, k)`. Computed as `1 − ∏_{i=n−c+1}^{n} (1 − k/i)`, which never forms the
 * (huge) binomials and is exact to double precision.
 */
export function passAtK(n: number, c: number, k: number): number {
  if (!Number.isInteger(n) || !Number.isInteger(c) || !Number.isInteger(k)) throw new Error(`passAtK: integers required (n=${n}, c=${c}, k=${k})`);
  if (n < 1 || k < 1 || k > n || c < 0 || c > n) throw new Error(`passAtK: need 1 ≤ k ≤ n and 0 ≤ c ≤ n (n=${n}, c=${c}, k=${k})`);
  if (n - c < k) return 1;
  let prod = 1;
  for (let i = n - c + 1; i <= n; i++) prod *= 1 - k / i;
  return 1 - prod;
}

/** Mean of numbers (NaN for none). */
export function mean(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}

/** Linear-interpolated quantile (q in [0, 1]) of numbers (NaN for none). */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = xs.slice().sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

/** Default answer key for voting: removes `$`, spaces, `\left`/`\right`, `\!`/`\,`, a trailing period, and thousands separators in plain numbers. */
export function answerKey(answer: string): string {
  let s = answer.trim().replace(/\$/g, "").replace(/\\left|\\right|\\!|\\,|\\;|\\ /g, "").replace(/\s+/g, "");
  s = s.replace(/\.$/, "");
  if (/^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$/.test(s)) s = s.replace(/,/g, "");
  return s;
}

/** A group of equivalent answers in a vote. */
export interface VoteGroup {
  /** The first answer of the group, in sample order. */
  answer: string;
  /** Indices (into the voted list) of the samples in the group. */
  members: number[];
}

/** The outcome of a majority vote. */
export interface Vote {
  /** The winning answer (its first occurrence), or null when no sample had an answer. */
  answer: string | null;
  /** Index of the winning group's first sample, or -1. */
  index: number;
  /** Votes for the winner. */
  votes: number;
  /** True when another group had as many votes (the tie was broken by first occurrence). */
  tie: boolean;
  groups: VoteGroup[];
}

/**
 * Majority vote over extracted answers (null = no answer; such samples do not vote).
 * Answers are grouped by {@link answerKey}; when `equivalent` is given, groups whose first answers it
 * deems equal are merged as well (e.g. `0.5` and `\frac{1}{2}` with the verifier).
 *
 * Tie-breaking: among groups with the most votes, the one whose first sample comes earliest wins.
 * This is deterministic, and with samples in generation order it favours no particular answer.
 */
export async function majorityVote(answers: readonly (string | null)[], equivalent?: (a: string, b: string) => boolean | Promise<boolean>): Promise<Vote> {
  const groups: VoteGroup[] = [];
  const byKey = new Map<string, VoteGroup>();
  for (let i = 0; i < answers.length; i++) {
    const a = answers[i];
    if (a === null || a.trim() === "") continue;
    const key = answerKey(a);
    let g = byKey.get(key);
    if (!g && equivalent) {
      for (const cand of groups) {
        if (await equivalent(a, cand.answer)) {
          g = cand;
          break;
        }
      }
    }
    if (!g) {
      g = { answer: a, members: [] };
      groups.push(g);
    }
    byKey.set(key, g);
    g.members.push(i);
  }
  if (groups.length === 0) return { answer: null, index: -1, votes: 0, tie: false, groups };
  let best = groups[0];
  for (const g of groups) if (g.members.length > best.members.length) best = g; // strict: earlier group wins ties
  const tie = groups.some((g) => g !== best && g.members.length === best.members.length);
  return { answer: best.answer, index: best.members[0], votes: best.members.length, tie, groups };
}

/** Summary statistics of response lengths. */
export interface LengthStats {
  count: number;
  mean: number;
  std: number;
  min: number;
  p50: number;
  p90: number;
  max: number;
  /** Counts in power-of-two buckets: `{ upTo: 64, count }` holds lengths in (32, 64]; the first bucket starts at 0. */
  histogram: { upTo: number; count: number }[];
}

export function lengthStats(lengths: readonly number[]): LengthStats {
  const n = lengths.length;
  if (n === 0) return { count: 0, mean: NaN, std: NaN, min: NaN, p50: NaN, p90: NaN, max: NaN, histogram: [] };
  const m = mean(lengths);
  const std = Math.sqrt(mean(lengths.map((x) => (x - m) ** 2)));
  let min = Infinity;
  let max = -Infinity;
  for (const x of lengths) {
    if (x < min) min = x;
    if (x > max) max = x;
  }
  const histogram: { upTo: number; count: number }[] = [];
  let upTo = 16;
  while (upTo < max) upTo *= 2;
  const edges: number[] = [];
  for (let e = 16; e <= upTo; e *= 2) edges.push(e);
  for (const e of edges) histogram.push({ upTo: e, count: 0 });
  for (const x of lengths) {
    const i = edges.findIndex((e) => x <= e);
    histogram[i].count++;
  }
  return { count: n, mean: m, std, min, p50: quantile(lengths, 0.5), p90: quantile(lengths, 0.9), max, histogram };
}
