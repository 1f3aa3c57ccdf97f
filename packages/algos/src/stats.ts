// Small numeric helpers (float64, NaN-free on empty inputs).
import type { NumArray, StdConvention } from "./types.js";

export function mean(xs: NumArray): number {
  const n = xs.length;
  if (n === 0) return 0;
  let s = 0;
  for (let i = 0; i < n; i++) s += xs[i];
  return s / n;
}

/**
 * Standard deviation. Bessel: sqrt(Σ(x−μ)²/(n−1)), defined as 0 for n < 2 (a single sample has no spread);
 * population: sqrt(Σ(x−μ)²/n), 0 for n = 0. Exactly 0 when all values are equal.
 */
export function std(xs: NumArray, convention: StdConvention = "bessel"): number {
  const n = xs.length;
  if (n === 0 || allEqual(xs)) return 0;
  const denom = convention === "bessel" ? n - 1 : n;
  if (denom <= 0) return 0;
  const m = mean(xs);
  let s = 0;
  for (let i = 0; i < n; i++) {
    const d = xs[i] - m;
    s += d * d;
  }
  return Math.sqrt(s / denom);
}

/** True when every value equals the first (true for empty input). */
export function allEqual(xs: NumArray): boolean {
  for (let i = 1; i < xs.length; i++) if (xs[i] !== xs[0]) return false;
  return true;
}

/**
 * z-scores (x − μ)/(σ + ε). Exactly 0 everywhere when the values are all equal (so float noise in μ never leaks
 * into an advantage), and 0 when σ + ε = 0.
 */
export function zScores(xs: NumArray, convention: StdConvention, eps: number): Float64Array {
  const out = new Float64Array(xs.length);
  if (allEqual(xs)) return out;
  const m = mean(xs);
  const denom = std(xs, convention) + eps;
  if (denom === 0) return out;
  for (let i = 0; i < xs.length; i++) out[i] = (xs[i] - m) / denom;
  return out;
}

/** Quantile with linear interpolation between order statistics (numpy/torch default). */
export function quantile(xs: NumArray, q: number): number {
  const n = xs.length;
  if (n === 0) return 0;
  const sorted = Float64Array.from(xs).sort();
  const pos = q * (n - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, n - 1);
  const frac = pos - lo;
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

export function clamp(x: number, lo: number, hi: number): number {
  return x < lo ? lo : x > hi ? hi : x;
}

/** Summary (mean, Bessel std, min, max) of values, zeros on empty input. */
export function summary(xs: NumArray): { mean: number; std: number; min: number; max: number } {
  if (xs.length === 0) return { mean: 0, std: 0, min: 0, max: 0 };
  let mn = Infinity;
  let mx = -Infinity;
  for (let i = 0; i < xs.length; i++) {
    if (xs[i] < mn) mn = xs[i];
    if (xs[i] > mx) mx = xs[i];
  }
  return { mean: mean(xs), std: std(xs, "bessel"), min: mn, max: mx };
}
