// Test helpers (excluded from the build): random batches for gradient checks over the test kit's seeded PRNG (@nr/kernels/testing).
// Seed: env NR_SEED, else a fresh random seed; it is printed so a failing run can be replayed with NR_SEED=<seed>.

import { freshSeed, rng } from "@nr/kernels/testing";
import { groupAdvantages } from "./advantages.js";
import type { AlgoConfig, PolicyBatch } from "./types.js";

let announced = false;

/** The run's seed (the test kit's: NR_SEED pins it), printed once so a failing run can be replayed. */
export function testSeed(): number {
  const seed = freshSeed();
  if (!announced) {
    // eslint-disable-next-line no-console
    console.log(`[@nr/algos tests] NR_SEED=${seed}`);
    announced = true;
  }
  return seed;
}

export interface Rand {
  u(): number;
  uniform(lo: number, hi: number): number;
  normal(mu?: number, sigma?: number): number;
  int(lo: number, hi: number): number;
  bool(p?: number): boolean;
  seed: number;
}

export function rand(seed: number): Rand {
  const r = rng(seed);
  return {
    seed,
    u: r,
    uniform: (lo, hi) => lo + (hi - lo) * r(),
    normal: (mu = 0, sigma = 1) => {
      const u1 = Math.max(r(), 1e-300);
      const u2 = r();
      return mu + sigma * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    },
    int: (lo, hi) => lo + Math.floor(r() * (hi - lo + 1)),
    bool: (p = 0.5) => r() < p,
  };
}

/** Central finite difference of f at x[i] (x is modified and restored). */
export function centralDiff(f: () => number, x: Float64Array, i: number, h: number): number {
  const x0 = x[i];
  x[i] = x0 + h;
  const fp = f();
  x[i] = x0 - h;
  const fm = f();
  x[i] = x0;
  return (fp - fm) / (2 * h);
}

// ---------------------------------------------------------------------------------------------------------------
// Random policy batches


export interface BatchOptions {
  groups?: number;
  groupSize?: number;
  T?: number;
  /** Packed layout with shuffled seqIds instead of padded [N][T]. */
  packed?: boolean;
  /** Std of the per-token log-ratio logp − oldLogp (token-level presets). */
  deltaSigma?: number;
  /** Half-width of the per-sequence log-ratio offset (sequence-level presets). */
  seqOffset?: number;
  withSampling?: boolean;
  /** Std of oldLogp − samplingLogp. */
  samplingSigma?: number;
  /** Put NaN instead of finite garbage into masked positions. */
  nanPadding?: boolean;
  /** Per-token advantages (random) instead of group advantages. */
  tokenAdvantages?: boolean;
  entropyRange?: [number, number];
}

/**
 * A random batch of `groups` prompts × `groupSize` completions: random lengths (one completion fully padded),
 * random holes in the mask, one group with all-equal rewards (zero advantages), advantages from the preset.
 * Float64Arrays so that tests can perturb inputs in place.
 */
export function randomBatch(R: Rand, cfg: AlgoConfig, o: BatchOptions = {}): PolicyBatch & {
  logp: Float64Array;
  entropy: Float64Array;
  values: Float64Array;
  mask: Float64Array;
} {
  const groups = o.groups ?? 3;
  const G = o.groupSize ?? 4;
  const T = o.T ?? 10;
  const N = groups * G;
  const M = N * T;
  const mask = new Float64Array(M);
  const lengths: number[] = [];
  for (let s = 0; s < N; s++) {
    const n = s === 1 ? 0 : R.int(1, T);
    lengths.push(n);
    for (let j = 0; j < n; j++) mask[s * T + j] = R.bool(0.1) && n > 1 ? 0 : 1;
  }
  const pad = o.nanPadding ? NaN : -50;
  const logp = new Float64Array(M);
  const oldLogp = new Float64Array(M);
  const refLogp = new Float64Array(M);
  const samplingLogp = new Float64Array(M);
  const entropy = new Float64Array(M);
  const values = new Float64Array(M);
  const oldValues = new Float64Array(M);
  const returns = new Float64Array(M);
  const tokenAdvantages = new Float64Array(M);
  const [hLo, hHi] = o.entropyRange ?? [0.05, 2.5];
  for (let s = 0; s < N; s++) {
    const off = o.seqOffset !== undefined ? R.uniform(-o.seqOffset, o.seqOffset) : 0;
    for (let j = 0; j < T; j++) {
      const t = s * T + j;
      const real = j < lengths[s];
      const lp = -R.uniform(0.01, 4);
      const d = o.seqOffset !== undefined ? off + R.normal(0, o.seqOffset / 4) : R.normal(0, o.deltaSigma ?? 0.3);
      logp[t] = real ? lp : pad;
      oldLogp[t] = real ? lp - d : pad;
      refLogp[t] = real ? lp + R.normal(0, 0.4) : pad;
      samplingLogp[t] = real ? oldLogp[t] + R.normal(0, o.samplingSigma ?? 0.1) : pad;
      entropy[t] = real ? R.uniform(hLo, hHi) : pad;
      values[t] = real ? R.normal() : pad;
      oldValues[t] = real ? values[t] + R.normal(0, 0.3) : pad;
      returns[t] = real ? R.normal() : pad;
      tokenAdvantages[t] = real ? R.normal() : pad;
    }
  }
  // Advantages from the preset; group 0 mixed, group 1 random, last group all-equal (zero-std).
  const advantages = new Float64Array(N);
  const meanLength = new Float64Array(N);
  if (cfg.advantage.estimator !== "gae") {
    for (let g = 0; g < groups; g++) {
      const rewards = Array.from({ length: G }, (_, i) =>
        g === groups - 1 ? 1 : g === 0 ? i % 2 : R.bool() ? 1 : 0,
      );
      const lens = lengths.slice(g * G, (g + 1) * G).map((n) => Math.max(n, 1));
      const a = groupAdvantages(cfg.name, {
        rewards,
        lengths: lens,
        correct: rewards.map((x) => x > 0),
        formatOk: rewards.map(() => R.bool(0.8)),
      }, cfg);
      const ml = lens.reduce((x, y) => x + y, 0) / G;
      for (let i = 0; i < G; i++) {
        advantages[g * G + i] = a[i];
        meanLength[g * G + i] = ml;
      }
    }
  }
  const batch: PolicyBatch & { logp: Float64Array; entropy: Float64Array; values: Float64Array; mask: Float64Array } = {
    numSequences: N,
    logp,
    oldLogp,
    refLogp,
    entropy,
    values,
    oldValues,
    returns,
    mask,
    advantages,
    meanLength,
  };
  if (o.tokenAdvantages || cfg.advantage.estimator === "gae") batch.tokenAdvantages = tokenAdvantages;
  if (o.withSampling) batch.samplingLogp = samplingLogp;
  if (o.packed) return packBatch(R, batch);
  return batch;
}

/** Same tokens in a shuffled packed layout (seqIds), padding dropped except for a few masked tokens. */
function packBatch<B extends PolicyBatch & { logp: Float64Array; entropy: Float64Array; values: Float64Array; mask: Float64Array }>(R: Rand, b: B): B {
  const N = b.numSequences;
  const T = b.logp.length / N;
  const order: number[] = [];
  for (let t = 0; t < b.logp.length; t++) if (b.mask[t] === 1 || R.bool(0.2)) order.push(t);
  for (let i = order.length - 1; i > 0; i--) {
    const j = R.int(0, i);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const pick = (a: ArrayLike<number> | undefined) => (a ? Float64Array.from(order, (t) => a[t]) : undefined);
  const out = { ...b } as B;
  for (const k of ["logp", "oldLogp", "refLogp", "samplingLogp", "entropy", "values", "oldValues", "returns", "mask", "tokenAdvantages"] as const) {
    (out as Record<string, unknown>)[k] = pick(b[k]);
  }
  out.seqIds = Int32Array.from(order, (t) => Math.floor(t / T));
  return out;
}
