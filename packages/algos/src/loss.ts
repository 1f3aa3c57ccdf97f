// Policy (and value) loss with its exact gradient with respect to each token's log-prob, entropy and value.
//
// Total loss over the valid tokens (i = sequence, t = token, m = mask):
//   L = Σ a_{i,t} e_{i,t} q_{i,t} λ(ρ, A_{i,t})          policy term (ρ = token ratio w_{i,t} or sequence ratio s_i)
//     + Σ a_{i,t} β k(ℓ_{i,t}, ℓ^ref_{i,t})               KL in loss
//     − c_H Σ H_{i,t} / T_H                               entropy bonus
//     + c_v ½ Σ max((V − R)², (V^clip − R)²) / T_V        clipped value loss (PPO)
// a = aggregation weight (depends only on masks and counts), e = top-entropy mask (0/1, constant), q = importance
// sampling weight for sampler/trainer mismatch (built from oldLogp and samplingLogp, constant).
import { klValueAndGrad } from "./kl.js";
import { validateConfig } from "./presets.js";
import { tokensBySequence } from "./advantages.js";
import { quantile, summary } from "./stats.js";
import type { AlgoConfig, Metrics, PolicyBatch, PolicyLossResult } from "./types.js";

interface SurrogateOut {
  value: number;
  grad: number;
  lowClipped: boolean;
  highClipped: boolean;
  dualClipped: boolean;
}

/** Clipped surrogate of one token / sequence: value λ = −min(ρ̃A, clip(ρ)A) (+ dual clip) and dλ/dρ. */
export function clippedSurrogate(rho: number, A: number, clip: AlgoConfig["clip"]): SurrogateOut {
  const out: SurrogateOut = { value: 0, grad: 0, lowClipped: false, highClipped: false, dualClipped: false };
  surrogateInto(out, rho, A, clip);
  return out;
}

// Writes into `out` (no allocation in the per-token loop).
function surrogateInto(out: SurrogateOut, rho: number, A: number, clip: AlgoConfig["clip"]): void {
  const lo = 1 - clip.epsLow;
  const hi = 1 + clip.epsHigh;
  const capped = clip.delta !== null && rho > clip.delta;
  const unc = capped ? (clip.delta as number) : rho;
  const clipped = rho < lo ? lo : rho > hi ? hi : rho;
  const l1 = -unc * A;
  const l2 = -clipped * A;
  if (l1 >= l2) {
    out.value = l1;
    out.grad = capped ? 0 : -A;
  } else {
    out.value = l2;
    out.grad = rho < lo || rho > hi ? 0 : -A;
  }
  out.dualClipped = false;
  if (clip.dualClip !== null && A < 0) {
    const cap = -clip.dualClip * A;
    if (cap < out.value) {
      out.value = cap;
      out.grad = 0;
      out.dualClipped = true;
    }
  }
  out.lowClipped = rho < lo && A < 0;
  out.highClipped = rho > hi && A > 0;
}

function checkLen(name: string, a: ArrayLike<unknown> | undefined, n: number, what: string): void {
  if (a !== undefined && a.length !== n) {
    throw new Error(`policyLoss: batch.${name} has ${a.length} entries (allowed: ${n}, ${what})`);
  }
}

function requireField<T>(v: T | undefined, msg: string): T {
  if (v === undefined) throw new Error(`policyLoss: ${msg}`);
  return v;
}

/** Effective loss mask (mask ∈ {0,1}, minus truncated sequences when overlong.filter is on). */
function effectiveMask(batch: PolicyBatch, cfg: AlgoConfig, seqOf: Int32Array): Uint8Array {
  const M = batch.mask.length;
  const valid = new Uint8Array(M);
  const filter = cfg.overlong.filter && batch.truncated !== undefined;
  for (let t = 0; t < M; t++) {
    const m = batch.mask[t];
    if (m !== 0 && m !== 1) throw new Error(`policyLoss: batch.mask[${t}] = ${m} (allowed: 0 | 1)`);
    valid[t] = m === 1 && !(filter && batch.truncated![seqOf[t]]) ? 1 : 0;
  }
  return valid;
}

/**
 * Number of loss tokens of a micro-batch under `config` (mask, minus truncated sequences when overlong filtering
 * is on). Sum it over all micro-batches of an optimizer step to get `tokensInStep` before the first backward.
 */
export function countLossTokens(
  batch: Pick<PolicyBatch, "mask" | "numSequences" | "seqIds" | "truncated">,
  config: AlgoConfig,
): number {
  const bySeq = tokensBySequence(batch.mask.length, batch.numSequences, batch.seqIds);
  const seqOf = new Int32Array(batch.mask.length);
  bySeq.forEach((toks, s) => toks.forEach((t) => (seqOf[t] = s)));
  checkLen("truncated", batch.truncated, batch.numSequences, "one per sequence");
  const valid = effectiveMask(batch as PolicyBatch, config, seqOf);
  let n = 0;
  for (let t = 0; t < valid.length; t++) n += valid[t];
  return n;
}

/** `tokensInStep` and `sequencesInStep` of an optimizer step made of these micro-batches. */
export function stepNormalizers(
  microBatches: Pick<PolicyBatch, "mask" | "numSequences" | "seqIds" | "truncated">[],
  config: AlgoConfig,
): { tokensInStep: number; sequencesInStep: number; gradAccumSteps: number } {
  let tokens = 0;
  let seqs = 0;
  for (const b of microBatches) {
    tokens += countLossTokens(b, config);
    seqs += b.numSequences;
  }
  return { tokensInStep: tokens, sequencesInStep: seqs, gradAccumSteps: microBatches.length };
}

function positiveCount(name: string, v: number | undefined, min: number, def: number, integer = false): number {
  if (v === undefined) return def;
  if (!Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) {
    throw new Error(`policyLoss: batch.${name} = ${v} (allowed: ${integer ? "an integer" : "a number"} ≥ ${min})`);
  }
  return v;
}

/**
 * Loss of one (micro-)batch and its exact gradients. See README.md for the layout and the call sequence.
 * `dLogp[t] = ∂loss/∂logp[t]` (zero on masked tokens), `dEntropy`, and `dValue` when the value loss is on.
 * When `oldLogp` is omitted the batch is on-policy (oldLogp := stop-gradient(logp), ratio 1).
 */
export function policyLoss(batch: PolicyBatch, config: AlgoConfig): PolicyLossResult {
  const cfg = validateConfig(config);
  if (!batch || typeof batch !== "object") throw new Error("policyLoss: batch must be an object");
  const M = requireField(batch.logp, "batch.logp is missing (per-token log-probs)").length;
  const N = batch.numSequences;
  checkLen("mask", requireField(batch.mask, "batch.mask is missing (per-token 0/1 loss mask)"), M, "one per token");
  for (const k of ["oldLogp", "refLogp", "samplingLogp", "entropy", "values", "oldValues", "returns", "tokenAdvantages"] as const) {
    checkLen(k, batch[k], M, "one per token");
  }
  for (const k of ["advantages", "truncated", "meanLength"] as const) checkLen(k, batch[k], N, "one per sequence");
  const bySeq = tokensBySequence(M, N, batch.seqIds);
  const seqOf = new Int32Array(M);
  bySeq.forEach((toks, s) => toks.forEach((t) => (seqOf[t] = s)));
  const valid = effectiveMask(batch, cfg, seqOf);

  const nSeq = new Float64Array(N);
  let localValid = 0;
  for (let t = 0; t < M; t++) {
    if (!valid[t]) continue;
    nSeq[seqOf[t]]++;
    localValid++;
  }

  // ----- inputs
  const logp = batch.logp;
  const old = batch.oldLogp ?? batch.logp;
  const tokAdv = batch.tokenAdvantages;
  const seqAdv = batch.advantages;
  if (localValid > 0 && !tokAdv && !seqAdv) {
    throw new Error("policyLoss: batch.advantages (per sequence) or batch.tokenAdvantages (per token) is required");
  }
  const adv = (t: number): number => (tokAdv ? tokAdv[t] : seqAdv![seqOf[t]]);
  const beta = batch.klCoef ?? cfg.kl.beta;
  if (!(Number.isFinite(beta) && beta >= 0)) throw new Error(`policyLoss: batch.klCoef = ${beta} (allowed: a finite number ≥ 0)`);
  const klInLoss = cfg.kl.placement === "loss" && beta > 0;
  if (klInLoss && !batch.refLogp) {
    throw new Error(`policyLoss: kl.beta = ${beta} with kl.placement "loss" needs batch.refLogp (or set kl.beta: 0 / kl.placement: "none")`);
  }
  const needEntropyMask = cfg.entropy.topQuantile < 1;
  if (needEntropyMask && !batch.entropy) {
    throw new Error(`policyLoss: entropy.topQuantile = ${cfg.entropy.topQuantile} < 1 needs batch.entropy`);
  }
  const valueOn = cfg.value.coef > 0;
  if (valueOn && (!batch.values || !batch.returns)) {
    throw new Error(`policyLoss: value.coef = ${cfg.value.coef} > 0 needs batch.values and batch.returns (or set value.coef: 0)`);
  }
  const bad = (name: string, t: number, v: number): never => {
    throw new Error(`policyLoss: batch.${name} at token ${t} = ${v} (allowed: a finite number on unmasked tokens)`);
  };
  for (let t = 0; t < M; t++) {
    if (!valid[t]) continue;
    if (!Number.isFinite(logp[t])) bad("logp", t, logp[t]);
    if (!Number.isFinite(old[t])) bad("oldLogp", t, old[t]);
    if (!Number.isFinite(adv(t))) bad(tokAdv ? "tokenAdvantages" : "advantages", t, adv(t));
    if (klInLoss && !Number.isFinite(batch.refLogp![t])) bad("refLogp", t, batch.refLogp![t]);
    if (batch.entropy && !Number.isFinite(batch.entropy[t])) bad("entropy", t, batch.entropy[t]);
    if (valueOn && !Number.isFinite(batch.values![t])) bad("values", t, batch.values![t]);
    if (valueOn && !Number.isFinite(batch.returns![t])) bad("returns", t, batch.returns![t]);
  }

  // ----- normalisers
  const tokensInStep = positiveCount("tokensInStep", batch.tokensInStep, Math.max(localValid, 1), localValid);
  const seqsInStep = positiveCount("sequencesInStep", batch.sequencesInStep, Math.max(N, 1), N, true);
  const gradAccum = positiveCount("gradAccumSteps", batch.gradAccumSteps, 1, 1, true);
  const mode = cfg.aggregation.mode;
  if (mode === "mean-length") {
    const ml = requireField(batch.meanLength, 'aggregation.mode "mean-length" needs batch.meanLength (per-sequence group mean completion length; computeAdvantages returns it as groupMeanLength)');
    for (let s = 0; s < N; s++) {
      if (nSeq[s] > 0 && !(Number.isFinite(ml[s]) && ml[s] > 0)) {
        throw new Error(`policyLoss: batch.meanLength[${s}] = ${ml[s]} (allowed: a finite number > 0)`);
      }
    }
  }
  // Aggregation weight a_t of every valid token (depends only on masks and counts).
  const agg = new Float64Array(M);
  for (let t = 0; t < M; t++) {
    if (!valid[t]) continue;
    const s = seqOf[t];
    switch (mode) {
      case "seq-mean-token-mean":
        agg[t] = 1 / (seqsInStep * nSeq[s]);
        break;
      case "token-mean":
        agg[t] = 1 / tokensInStep;
        break;
      case "token-mean-local":
        agg[t] = 1 / (localValid * gradAccum);
        break;
      case "constant":
        agg[t] = 1 / (seqsInStep * cfg.aggregation.maxLength);
        break;
      case "mean-length":
        agg[t] = 1 / (seqsInStep * batch.meanLength![s]);
        break;
      case "seq-mean-token-sum":
        agg[t] = 1 / seqsInStep;
        break;
    }
  }

  // ----- top-entropy mask (constant; the threshold is a quantile over this call's valid tokens)
  let entropyThreshold = -Infinity;
  if (needEntropyMask) {
    const hs: number[] = [];
    for (let t = 0; t < M; t++) if (valid[t]) hs.push(batch.entropy![t]);
    entropyThreshold = quantile(hs, 1 - cfg.entropy.topQuantile);
  }
  const entropyKeep = (t: number): number => (needEntropyMask ? (batch.entropy![t] >= entropyThreshold ? 1 : 0) : 1);

  // ----- importance-sampling correction for sampler/trainer mismatch (constant weights)
  const isMode = cfg.importanceSampling.mode;
  const isOn = isMode !== "none" && batch.samplingLogp !== undefined;
  const isWeight = new Float64Array(M).fill(1);
  const isRatioSeen: number[] = [];
  const logpDiffs: number[] = [];
  if (isOn) {
    const samp = batch.samplingLogp!;
    const cap = cfg.importanceSampling.cap;
    const apply = (r: number) => (isMode.endsWith("truncate") ? Math.min(r, cap) : r > cap ? 0 : r);
    for (let t = 0; t < M; t++) {
      if (valid[t] && !Number.isFinite(samp[t])) {
        throw new Error(`policyLoss: batch.samplingLogp at token ${t} = ${samp[t]} (allowed: a finite number on unmasked tokens)`);
      }
    }
    if (isMode.startsWith("token")) {
      for (let t = 0; t < M; t++) {
        if (!valid[t]) continue;
        const d = old[t] - samp[t];
        logpDiffs.push(Math.abs(d));
        isWeight[t] = apply(Math.exp(d));
        isRatioSeen.push(isWeight[t]);
      }
    } else {
      bySeq.forEach((toks) => {
        let sum = 0;
        let any = false;
        for (const t of toks) {
          if (!valid[t]) continue;
          const d = old[t] - samp[t];
          logpDiffs.push(Math.abs(d));
          sum += d;
          any = true;
        }
        if (!any) return;
        const w = apply(Math.exp(sum));
        for (const t of toks) isWeight[t] = w;
        isRatioSeen.push(w);
      });
    }
  }

  // ----- policy term
  const dLogp = new Float64Array(M);
  const ratioOf = new Float64Array(M);
  let policy = 0;
  let nLow = 0;
  let nHigh = 0;
  let nDual = 0;
  let nKept = 0;
  const lrClamp = cfg.ratio.logRatioClamp;
  const clampLr = (x: number): { v: number; d: number } =>
    lrClamp !== null && Math.abs(x) > lrClamp ? { v: Math.sign(x) * lrClamp, d: 0 } : { v: x, d: 1 };

  const sur: SurrogateOut = { value: 0, grad: 0, lowClipped: false, highClipped: false, dualClipped: false };
  const countFlags = (f: SurrogateOut) => {
    if (f.lowClipped) nLow++;
    if (f.highClipped) nHigh++;
    if (f.dualClipped) nDual++;
  };
  if (cfg.ratio.level === "token") {
    for (let t = 0; t < M; t++) {
      if (!valid[t]) continue;
      const { v, d } = clampLr(logp[t] - old[t]);
      const rho = Math.exp(v);
      ratioOf[t] = rho;
      surrogateInto(sur, rho, adv(t), cfg.clip);
      countFlags(sur);
      const e = entropyKeep(t);
      nKept += e;
      const W = agg[t] * e * isWeight[t];
      policy += W * sur.value;
      dLogp[t] += W * sur.grad * rho * d;
    }
  } else {
    bySeq.forEach((toks, si) => {
      const n = nSeq[si];
      if (n === 0) return;
      let sum = 0;
      for (const t of toks) if (valid[t]) sum += logp[t] - old[t];
      const { v, d } = clampLr(sum / n);
      const rho = Math.exp(v);
      let g = 0;
      for (const t of toks) {
        if (!valid[t]) continue;
        ratioOf[t] = rho;
        surrogateInto(sur, rho, adv(t), cfg.clip);
        countFlags(sur);
        const e = entropyKeep(t);
        nKept += e;
        const W = agg[t] * e * isWeight[t];
        policy += W * sur.value;
        g += W * sur.grad;
      }
      const perToken = (g * rho * d) / n;
      for (const t of toks) if (valid[t]) dLogp[t] += perToken;
    });
  }

  // ----- KL (in loss; metric whenever refLogp is given)
  let klPart = 0;
  let klMetricSum = 0;
  let klMetricCount = 0;
  if (batch.refLogp) {
    const ref = batch.refLogp;
    const clamps = { clampLogRatio: cfg.kl.clampLogRatio, clampValue: cfg.kl.clampValue };
    for (let t = 0; t < M; t++) {
      if (!valid[t] || !Number.isFinite(ref[t])) continue;
      const k = klValueAndGrad(cfg.kl.estimator, logp[t], ref[t], clamps);
      klMetricSum += k.value;
      klMetricCount++;
      if (klInLoss) {
        const w = agg[t] * beta;
        klPart += w * k.value;
        dLogp[t] += w * k.grad;
      }
    }
  }

  // ----- entropy bonus
  const dEntropy = new Float64Array(M);
  let entropyPart = 0;
  let entropyMean = 0;
  if (batch.entropy) {
    let s = 0;
    for (let t = 0; t < M; t++) if (valid[t]) s += batch.entropy[t];
    entropyMean = localValid ? s / localValid : 0;
  }
  let entCoef = batch.entropyCoef ?? cfg.entropy.coef;
  if (!(Number.isFinite(entCoef) && entCoef >= 0)) throw new Error(`policyLoss: batch.entropyCoef = ${entCoef} (allowed: a finite number ≥ 0)`);
  if (cfg.entropy.adaptive.enabled && entropyMean >= cfg.entropy.adaptive.target) entCoef = 0;
  if (entCoef > 0) {
    const H = requireField(batch.entropy, `entropy.coef = ${entCoef} > 0 needs batch.entropy (or set entropy.coef: 0)`);
    const denom = tokensInStep;
    for (let t = 0; t < M; t++) {
      if (!valid[t]) continue;
      entropyPart -= (entCoef * H[t]) / denom;
      dEntropy[t] = -entCoef / denom;
    }
  }

  // ----- value loss (PPO)
  let valuePart = 0;
  let dValue: Float64Array | undefined;
  let vClipped = 0;
  if (valueOn) {
    dValue = new Float64Array(M);
    const V = batch.values!;
    const R = batch.returns!;
    const Vold = batch.oldValues;
    const eps = cfg.value.clip;
    const scale = (cfg.value.coef * 0.5) / tokensInStep;
    for (let t = 0; t < M; t++) {
      if (!valid[t]) continue;
      const v = V[t];
      const vo = Vold ? Vold[t] : v;
      if (Vold && !Number.isFinite(vo)) throw new Error(`policyLoss: batch.oldValues at token ${t} = ${vo} (allowed: a finite number on unmasked tokens)`);
      let vc = v;
      let dvc = 1;
      if (eps !== null) {
        if (v < vo - eps) {
          vc = vo - eps;
          dvc = 0;
        } else if (v > vo + eps) {
          vc = vo + eps;
          dvc = 0;
        }
      }
      const u = (v - R[t]) ** 2;
      const c = (vc - R[t]) ** 2;
      if (u >= c) {
        valuePart += scale * u;
        dValue[t] = scale * 2 * (v - R[t]);
      } else {
        vClipped++;
        valuePart += scale * c;
        dValue[t] = scale * 2 * (vc - R[t]) * dvc;
      }
    }
  }

  // ----- metrics (token means over this call's valid tokens; 0 when there are none)
  const frac = (k: number) => (localValid ? k / localValid : 0);
  const ratios: number[] = [];
  const advs: number[] = [];
  for (let t = 0; t < M; t++) {
    if (!valid[t]) continue;
    ratios.push(ratioOf[t]);
    advs.push(adv(t));
  }
  const rs = summary(ratios);
  const as = summary(advs);
  const loss = policy + klPart + entropyPart + valuePart;
  const metrics: Metrics = {
    loss,
    "loss/policy": policy,
    "loss/kl": klPart,
    "loss/entropy": entropyPart,
    "loss/value": valuePart,
    "clip_ratio/low_mean": frac(nLow),
    "clip_ratio/high_mean": frac(nHigh),
    "clip_ratio/region_mean": frac(nLow + nHigh),
    "clip_ratio/dual_mean": frac(nDual),
    kl: klMetricCount ? klMetricSum / klMetricCount : 0,
    entropy: entropyMean,
    "advantages/mean": as.mean,
    "advantages/std": as.std,
    "ratio/min": rs.min,
    "ratio/mean": rs.mean,
    "ratio/max": rs.max,
    "tokens/valid": localValid,
    "tokens/entropy_kept_frac": frac(nKept),
    "coef/kl": beta,
    "coef/entropy": entCoef,
  };
  if (isOn) {
    const ld = summary(logpDiffs);
    const ir = summary(isRatioSeen);
    metrics["sampling/sampling_logp_difference/mean"] = ld.mean;
    metrics["sampling/sampling_logp_difference/max"] = ld.max;
    metrics["sampling/importance_sampling_ratio/min"] = ir.min;
    metrics["sampling/importance_sampling_ratio/mean"] = ir.mean;
    metrics["sampling/importance_sampling_ratio/max"] = ir.max;
  }
  if (valueOn) {
    const V = batch.values!;
    const R = batch.returns!;
    const vs: number[] = [];
    const rsv: number[] = [];
    const diff: number[] = [];
    for (let t = 0; t < M; t++) {
      if (!valid[t]) continue;
      vs.push(V[t]);
      rsv.push(R[t]);
      diff.push(R[t] - V[t]);
    }
    const varR = summary(rsv).std ** 2;
    metrics["value/clipfrac"] = frac(vClipped);
    metrics["value/explained_var"] = varR > 0 ? 1 - summary(diff).std ** 2 / varR : 0;
    metrics["value/mean"] = summary(vs).mean;
    metrics["value/returns_mean"] = summary(rsv).mean;
  }
  const result: PolicyLossResult = {
    loss,
    dLogp,
    dEntropy,
    parts: { policy, kl: klPart, entropy: entropyPart, value: valuePart },
    metrics,
  };
  if (dValue) result.dValue = dValue;
  return result;
}


