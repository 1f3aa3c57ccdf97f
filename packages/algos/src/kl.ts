// KL estimators (Schulman, "Approximating KL divergence") and KL coefficient controllers.
import type { KlEstimator } from "./types.js";

export interface KlClamp {
  /** Clamp d = refLogp − logp to [−clampLogRatio, clampLogRatio]; null = none. */
  clampLogRatio?: number | null;
  /** Clamp the estimate to [−clampValue, clampValue]; null = none. */
  clampValue?: number | null;
}

/**
 * Per-token KL estimate of KL(π_θ ‖ π_ref) from the sampled token, with d = refLogp − logp:
 * k1 = −d, k2 = d²/2, k3 = exp(d) − d − 1.
 */
export function klEstimate(kind: KlEstimator, logp: number, refLogp: number, clampOpts: KlClamp = {}): number {
  return klValueAndGrad(kind, logp, refLogp, clampOpts).value;
}

/**
 * Estimate and its derivative with respect to `logp` (ref is frozen). Clamped regions have zero derivative.
 */
export function klValueAndGrad(
  kind: KlEstimator,
  logp: number,
  refLogp: number,
  clampOpts: KlClamp = {},
): { value: number; grad: number } {
  let d = refLogp - logp;
  // dd/dlogp = −1 unless the log-ratio clamp is active.
  let ddDl = -1;
  const cl = clampOpts.clampLogRatio;
  if (cl != null && Math.abs(d) > cl) {
    d = Math.sign(d) * cl;
    ddDl = 0;
  }
  let value: number;
  let dvDd: number;
  switch (kind) {
    case "k1":
      value = -d;
      dvDd = -1;
      break;
    case "k2":
      value = 0.5 * d * d;
      dvDd = d;
      break;
    case "k3":
      // expm1(d) − d is exp(d) − d − 1 without cancellation for small d.
      value = Math.expm1(d) - d;
      dvDd = Math.expm1(d);
      break;
    default:
      throw new Error(`klEstimate: unknown estimator '${String(kind)}' (allowed: "k1" | "k2" | "k3")`);
  }
  const cv = clampOpts.clampValue;
  if (cv != null && Math.abs(value) > cv) {
    value = Math.sign(value) * cv;
    dvDd = 0;
  }
  // (+ 0 turns a −0 from a clamped branch into 0)
  return { value, grad: dvDd * ddDl + 0 };
}

/**
 * Adaptive KL controller step (Ziegler et al.; veRL/OpenRLHF): β ← β·(1 + clip(KL/target − 1, −0.2, 0.2)·nSteps/horizon).
 */
export function adaptiveKlStep(beta: number, observedKl: number, nSteps: number, opts: { target: number; horizon: number }): number {
  if (!(opts.target > 0)) throw new Error(`adaptiveKlStep: kl.adaptive.target must be > 0 (got ${opts.target})`);
  if (!(opts.horizon > 0)) throw new Error(`adaptiveKlStep: kl.adaptive.horizon must be > 0 (got ${opts.horizon})`);
  const err = Math.min(Math.max(observedKl / opts.target - 1, -0.2), 0.2);
  return beta * (1 + (err * nSteps) / opts.horizon);
}

/**
 * Adaptive entropy coefficient step (Skywork-OR1 / TRL `use_adaptive_entropy`): raise c_H by `delta` while the
 * mean entropy is below target, lower it otherwise, clipped to [min, max]. Call once per optimizer step.
 */
export function adaptiveEntropyStep(
  coef: number,
  meanEntropy: number,
  opts: { target: number; delta: number; min: number; max: number },
): number {
  const next = meanEntropy < opts.target ? coef + opts.delta : coef - opts.delta;
  return Math.min(Math.max(next, opts.min), opts.max);
}
