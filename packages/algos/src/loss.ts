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
import { validatedConfig } from "./presets.js";
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

/** What every term of the loss reads: the batch's shape, its valid tokens and the switches the config turns on. */
interface LossContext {
  batch: PolicyBatch;
  cfg: AlgoConfig;
  M: number;
  N: number;
  bySeq: number[][];
  seqOf: Int32Array;
  /** 1 on the tokens the loss is taken over (mask, minus truncated sequences under overlong.filter). */
  valid: Uint8Array;
  /** Valid tokens per sequence. */
  nSeq: Float64Array;
  localValid: number;
  logp: PolicyBatch["logp"];
  /** π_old log-probs (the current log-probs when the batch is on-policy: ratio 1). */
  old: PolicyBatch["logp"];
  /** Advantage of token t (per-token for PPO, else its sequence's). */
  adv: (t: number) => number;
  beta: number;
  klInLoss: boolean;
  needEntropyMask: boolean;
  valueOn: boolean;
}

const PER_TOKEN_FIELDS = ["oldLogp", "refLogp", "samplingLogp", "entropy", "values", "oldValues", "returns", "tokenAdvantages"] as const;
const PER_SEQUENCE_FIELDS = ["advantages", "truncated", "meanLength"] as const;

/** Array lengths, the sequence layout and the valid-token mask; throws on a malformed batch. */
function batchLayout(batch: PolicyBatch, cfg: AlgoConfig): Pick<LossContext, "M" | "N" | "bySeq" | "seqOf" | "valid" | "nSeq" | "localValid"> {
  if (!batch || typeof batch !== "object") throw new Error("policyLoss: batch must be an object");
  const M = requireField(batch.logp, "batch.logp is missing (per-token log-probs)").length;
  const N = batch.numSequences;
  checkLen("mask", requireField(batch.mask, "batch.mask is missing (per-token 0/1 loss mask)"), M, "one per token");
  for (const k of PER_TOKEN_FIELDS) checkLen(k, batch[k], M, "one per token");
  for (const k of PER_SEQUENCE_FIELDS) checkLen(k, batch[k], N, "one per sequence");
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
  return { M, N, bySeq, seqOf, valid, nSeq, localValid };
}

/** The batch fields the config's terms need are present and finite on valid tokens. */
function lossContext(batch: PolicyBatch, cfg: AlgoConfig): LossContext {
  const layout = batchLayout(batch, cfg);
  const { seqOf, localValid } = layout;
  const tokAdv = batch.tokenAdvantages;
  const seqAdv = batch.advantages;
  if (localValid > 0 && !tokAdv && !seqAdv) {
    throw new Error("policyLoss: batch.advantages (per sequence) or batch.tokenAdvantages (per token) is required");
  }
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
  const ctx: LossContext = {
    ...layout,
    batch,
    cfg,
    logp: batch.logp,
    old: batch.oldLogp ?? batch.logp,
    adv: tokAdv ? (t) => tokAdv[t] : (t) => seqAdv![seqOf[t]],
    beta,
    klInLoss,
    needEntropyMask,
    valueOn,
  };
  checkFiniteInputs(ctx);
  return ctx;
}

function checkFiniteInputs(ctx: LossContext): void {
  const { batch, valid, logp, old, adv, klInLoss, valueOn } = ctx;
  const bad = (name: string, t: number, v: number): never => {
    throw new Error(`policyLoss: batch.${name} at token ${t} = ${v} (allowed: a finite number on unmasked tokens)`);
  };
  for (let t = 0; t < ctx.M; t++) {
    if (!valid[t]) continue;
    if (!Number.isFinite(logp[t])) bad("logp", t, logp[t]);
    if (!Number.isFinite(old[t])) bad("oldLogp", t, old[t]);
    if (!Number.isFinite(adv(t))) bad(batch.tokenAdvantages ? "tokenAdvantages" : "advantages", t, adv(t));
    if (klInLoss && !Number.isFinite(batch.refLogp![t])) bad("refLogp", t, batch.refLogp![t]);
    if (batch.entropy && !Number.isFinite(batch.entropy[t])) bad("entropy", t, batch.entropy[t]);
    if (valueOn && !Number.isFinite(batch.values![t])) bad("values", t, batch.values![t]);
    if (valueOn && !Number.isFinite(batch.returns![t])) bad("returns", t, batch.returns![t]);
  }
}

/** Aggregation weight a_t of every valid token (depends only on masks and counts) and the step's token count. */
function aggregationWeights(ctx: LossContext): { agg: Float64Array; tokensInStep: number } {
  const { batch, cfg, M, N, valid, seqOf, nSeq, localValid } = ctx;
  const tokensInStep = positiveCount("tokensInStep", batch.tokensInStep, Math.max(localValid, 1), localValid);
  const seqsInStep = positiveCount("sequencesInStep", batch.sequencesInStep, Math.max(N, 1), N, true);
  const gradAccum = positiveCount("gradAccumSteps", batch.gradAccumSteps, 1, 1, true);
  const mode = cfg.aggregation.mode;
  if (mode === "mean-length") checkMeanLength(ctx);
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
  return { agg, tokensInStep };
}

function checkMeanLength(ctx: LossContext): void {
  const ml = requireField(ctx.batch.meanLength, 'aggregation.mode "mean-length" needs batch.meanLength (per-sequence group mean completion length; computeAdvantages returns it as groupMeanLength)');
  for (let s = 0; s < ctx.N; s++) {
    if (ctx.nSeq[s] > 0 && !(Number.isFinite(ml[s]) && ml[s] > 0)) {
      throw new Error(`policyLoss: batch.meanLength[${s}] = ${ml[s]} (allowed: a finite number > 0)`);
    }
  }
}

/** Top-entropy mask e_t (constant): 1 for tokens at or above the (1 − topQuantile) quantile of this call's entropies. */
function entropyKeepMask(ctx: LossContext): (t: number) => number {
  if (!ctx.needEntropyMask) return () => 1;
  const H = ctx.batch.entropy!;
  const hs: number[] = [];
  for (let t = 0; t < ctx.M; t++) if (ctx.valid[t]) hs.push(H[t]);
  const threshold = quantile(hs, 1 - ctx.cfg.entropy.topQuantile);
  return (t) => (H[t] >= threshold ? 1 : 0);
}

interface ImportanceWeights {
  on: boolean;
  /** q_t: constant weight against the sampler/trainer mismatch (1 when the correction is off). */
  weight: Float64Array;
  ratiosSeen: number[];
  logpDiffs: number[];
}

/** Importance-sampling correction for sampler/trainer mismatch, per token or per sequence (truncated or masked). */
function importanceWeights(ctx: LossContext): ImportanceWeights {
  const { batch, cfg, M, valid, old } = ctx;
  const mode = cfg.importanceSampling.mode;
  const out: ImportanceWeights = { on: mode !== "none" && batch.samplingLogp !== undefined, weight: new Float64Array(M).fill(1), ratiosSeen: [], logpDiffs: [] };
  if (!out.on) return out;
  const samp = batch.samplingLogp!;
  const cap = cfg.importanceSampling.cap;
  const apply = (r: number) => (mode.endsWith("truncate") ? Math.min(r, cap) : r > cap ? 0 : r);
  for (let t = 0; t < M; t++) {
    if (valid[t] && !Number.isFinite(samp[t])) {
      throw new Error(`policyLoss: batch.samplingLogp at token ${t} = ${samp[t]} (allowed: a finite number on unmasked tokens)`);
    }
  }
  if (mode.startsWith("token")) {
    for (let t = 0; t < M; t++) {
      if (!valid[t]) continue;
      const d = old[t] - samp[t];
      out.logpDiffs.push(Math.abs(d));
      out.weight[t] = apply(Math.exp(d));
      out.ratiosSeen.push(out.weight[t]);
    }
    return out;
  }
  for (const toks of ctx.bySeq) {
    let sum = 0;
    let any = false;
    for (const t of toks) {
      if (!valid[t]) continue;
      const d = old[t] - samp[t];
      out.logpDiffs.push(Math.abs(d));
      sum += d;
      any = true;
    }
    if (!any) continue;
    const w = apply(Math.exp(sum));
    for (const t of toks) out.weight[t] = w;
    out.ratiosSeen.push(w);
  }
  return out;
}

/** The clipped policy term's value, its counters and the ratio seen by each valid token. */
interface PolicyTerm {
  value: number;
  nLow: number;
  nHigh: number;
  nDual: number;
  nKept: number;
  ratioOf: Float64Array;
}

/** Per-token weight a_t · e_t · q_t of the policy term. */
type TokenWeight = (t: number) => number;

/** Adds the policy term's gradient into dLogp (token ratio w_t, or sequence ratio s_i shared by its tokens). */
function policyTerm(ctx: LossContext, weight: TokenWeight, keep: (t: number) => number, dLogp: Float64Array): PolicyTerm {
  const term: PolicyTerm = { value: 0, nLow: 0, nHigh: 0, nDual: 0, nKept: 0, ratioOf: new Float64Array(ctx.M) };
  const sur: SurrogateOut = { value: 0, grad: 0, lowClipped: false, highClipped: false, dualClipped: false };
  // Adds token t's surrogate at ratio rho to the term; returns its dλ/dρ times the token's weight.
  const addToken = (t: number, rho: number): number => {
    term.ratioOf[t] = rho;
    surrogateInto(sur, rho, ctx.adv(t), ctx.cfg.clip);
    if (sur.lowClipped) term.nLow++;
    if (sur.highClipped) term.nHigh++;
    if (sur.dualClipped) term.nDual++;
    term.nKept += keep(t);
    const W = weight(t);
    term.value += W * sur.value;
    return W * sur.grad;
  };
  if (ctx.cfg.ratio.level === "token") tokenRatioTerm(ctx, addToken, dLogp);
  else sequenceRatioTerm(ctx, addToken, dLogp);
  return term;
}

/** Log-ratio clamp: the clamped value and its derivative (0 where clamped). */
function clampLogRatio(x: number, clamp: number | null): { v: number; d: number } {
  return clamp !== null && Math.abs(x) > clamp ? { v: Math.sign(x) * clamp, d: 0 } : { v: x, d: 1 };
}

function tokenRatioTerm(ctx: LossContext, addToken: (t: number, rho: number) => number, dLogp: Float64Array): void {
  for (let t = 0; t < ctx.M; t++) {
    if (!ctx.valid[t]) continue;
    const { v, d } = clampLogRatio(ctx.logp[t] - ctx.old[t], ctx.cfg.ratio.logRatioClamp);
    const rho = Math.exp(v);
    dLogp[t] += addToken(t, rho) * rho * d;
  }
}

// GSPO: s_i = exp(mean_t(ℓ − ℓ_old)); ∂s_i/∂ℓ_t = s_i / n_i, shared by every valid token of the sequence.
function sequenceRatioTerm(ctx: LossContext, addToken: (t: number, rho: number) => number, dLogp: Float64Array): void {
  ctx.bySeq.forEach((toks, si) => {
    const n = ctx.nSeq[si];
    if (n === 0) return;
    let sum = 0;
    for (const t of toks) if (ctx.valid[t]) sum += ctx.logp[t] - ctx.old[t];
    const { v, d } = clampLogRatio(sum / n, ctx.cfg.ratio.logRatioClamp);
    const rho = Math.exp(v);
    let g = 0;
    for (const t of toks) if (ctx.valid[t]) g += addToken(t, rho);
    const perToken = (g * rho * d) / n;
    for (const t of toks) if (ctx.valid[t]) dLogp[t] += perToken;
  });
}

/** KL to π_ref: in the loss when placed there (gradient into dLogp); its mean is a metric whenever refLogp is given. */
function klTerm(ctx: LossContext, agg: Float64Array, dLogp: Float64Array): { value: number; metric: number } {
  const { batch, cfg, valid, logp, beta, klInLoss } = ctx;
  let value = 0;
  let sum = 0;
  let count = 0;
  if (!batch.refLogp) return { value, metric: 0 };
  const ref = batch.refLogp;
  const clamps = { clampLogRatio: cfg.kl.clampLogRatio, clampValue: cfg.kl.clampValue };
  for (let t = 0; t < ctx.M; t++) {
    if (!valid[t] || !Number.isFinite(ref[t])) continue;
    const k = klValueAndGrad(cfg.kl.estimator, logp[t], ref[t], clamps);
    sum += k.value;
    count++;
    if (klInLoss) {
      const w = agg[t] * beta;
      value += w * k.value;
      dLogp[t] += w * k.grad;
    }
  }
  return { value, metric: count ? sum / count : 0 };
}

/** Entropy bonus −c_H Σ H / tokensInStep (coefficient 0 once an adaptive target is reached). */
function entropyTerm(ctx: LossContext, tokensInStep: number): { value: number; mean: number; coef: number; dEntropy: Float64Array } {
  const { batch, cfg, M, valid, localValid } = ctx;
  const dEntropy = new Float64Array(M);
  let value = 0;
  let mean = 0;
  if (batch.entropy) {
    let s = 0;
    for (let t = 0; t < M; t++) if (valid[t]) s += batch.entropy[t];
    mean = localValid ? s / localValid : 0;
  }
  let coef = batch.entropyCoef ?? cfg.entropy.coef;
  if (!(Number.isFinite(coef) && coef >= 0)) throw new Error(`policyLoss: batch.entropyCoef = ${coef} (allowed: a finite number ≥ 0)`);
  if (cfg.entropy.adaptive.enabled && mean >= cfg.entropy.adaptive.target) coef = 0;
  if (coef > 0) {
    const H = requireField(batch.entropy, `entropy.coef = ${coef} > 0 needs batch.entropy (or set entropy.coef: 0)`);
    for (let t = 0; t < M; t++) {
      if (!valid[t]) continue;
      value -= (coef * H[t]) / tokensInStep;
      dEntropy[t] = -coef / tokensInStep;
    }
  }
  return { value, mean, coef, dEntropy };
}

/** PPO's clipped value loss c_v ½ max((V − R)², (V^clip − R)²) / tokensInStep and its gradient. */
function valueTerm(ctx: LossContext, tokensInStep: number): { value: number; dValue: Float64Array; clipped: number } {
  const { batch, cfg, M, valid } = ctx;
  const dValue = new Float64Array(M);
  const V = batch.values!;
  const R = batch.returns!;
  const Vold = batch.oldValues;
  const eps = cfg.value.clip;
  const scale = (cfg.value.coef * 0.5) / tokensInStep;
  let value = 0;
  let clipped = 0;
  for (let t = 0; t < M; t++) {
    if (!valid[t]) continue;
    const v = V[t];
    const vo = Vold ? Vold[t] : v;
    if (Vold && !Number.isFinite(vo)) throw new Error(`policyLoss: batch.oldValues at token ${t} = ${vo} (allowed: a finite number on unmasked tokens)`);
    let vc = v;
    let dvc = 1;
    if (eps !== null && (v < vo - eps || v > vo + eps)) {
      vc = v < vo - eps ? vo - eps : vo + eps;
      dvc = 0;
    }
    const u = (v - R[t]) ** 2;
    const c = (vc - R[t]) ** 2;
    if (u >= c) {
      value += scale * u;
      dValue[t] = scale * 2 * (v - R[t]);
    } else {
      clipped++;
      value += scale * c;
      dValue[t] = scale * 2 * (vc - R[t]) * dvc;
    }
  }
  return { value, dValue, clipped };
}

interface LossParts {
  policy: PolicyTerm;
  kl: { value: number; metric: number };
  entropy: { value: number; mean: number; coef: number };
  value?: { value: number; clipped: number };
  is: ImportanceWeights;
}

/** Metrics: token means over this call's valid tokens (0 when there are none). */
function lossMetrics(ctx: LossContext, p: LossParts): Metrics {
  const { M, valid, localValid } = ctx;
  const frac = (k: number) => (localValid ? k / localValid : 0);
  const ratios: number[] = [];
  const advs: number[] = [];
  for (let t = 0; t < M; t++) {
    if (!valid[t]) continue;
    ratios.push(p.policy.ratioOf[t]);
    advs.push(ctx.adv(t));
  }
  const rs = summary(ratios);
  const as = summary(advs);
  const { nLow, nHigh, nDual, nKept } = p.policy;
  const metrics: Metrics = {
    loss: p.policy.value + p.kl.value + p.entropy.value + (p.value?.value ?? 0),
    "loss/policy": p.policy.value,
    "loss/kl": p.kl.value,
    "loss/entropy": p.entropy.value,
    "loss/value": p.value?.value ?? 0,
    "clip_ratio/low_mean": frac(nLow),
    "clip_ratio/high_mean": frac(nHigh),
    "clip_ratio/region_mean": frac(nLow + nHigh),
    "clip_ratio/dual_mean": frac(nDual),
    kl: p.kl.metric,
    entropy: p.entropy.mean,
    "advantages/mean": as.mean,
    "advantages/std": as.std,
    "ratio/min": rs.min,
    "ratio/mean": rs.mean,
    "ratio/max": rs.max,
    "tokens/valid": localValid,
    "tokens/entropy_kept_frac": frac(nKept),
    "coef/kl": ctx.beta,
    "coef/entropy": p.entropy.coef,
  };
  if (p.is.on) Object.assign(metrics, samplingMetrics(p.is));
  if (p.value) Object.assign(metrics, valueMetrics(ctx, p.value.clipped));
  return metrics;
}

function samplingMetrics(is: ImportanceWeights): Metrics {
  const ld = summary(is.logpDiffs);
  const ir = summary(is.ratiosSeen);
  return {
    "sampling/sampling_logp_difference/mean": ld.mean,
    "sampling/sampling_logp_difference/max": ld.max,
    "sampling/importance_sampling_ratio/min": ir.min,
    "sampling/importance_sampling_ratio/mean": ir.mean,
    "sampling/importance_sampling_ratio/max": ir.max,
  };
}

function valueMetrics(ctx: LossContext, clipped: number): Metrics {
  const V = ctx.batch.values!;
  const R = ctx.batch.returns!;
  const vs: number[] = [];
  const rsv: number[] = [];
  const diff: number[] = [];
  for (let t = 0; t < ctx.M; t++) {
    if (!ctx.valid[t]) continue;
    vs.push(V[t]);
    rsv.push(R[t]);
    diff.push(R[t] - V[t]);
  }
  const varR = summary(rsv).std ** 2;
  return {
    "value/clipfrac": ctx.localValid ? clipped / ctx.localValid : 0,
    "value/explained_var": varR > 0 ? 1 - summary(diff).std ** 2 / varR : 0,
    "value/mean": summary(vs).mean,
    "value/returns_mean": summary(rsv).mean,
  };
}

/**
 * Loss of one (micro-)batch and its exact gradients. See README.md for the layout and the call sequence.
 * `dLogp[t] = ∂loss/∂logp[t]` (zero on masked tokens), `dEntropy`, and `dValue` when the value loss is on.
 * When `oldLogp` is omitted the batch is on-policy (oldLogp := stop-gradient(logp), ratio 1).
 * A config from {@link prepareConfig} (or `stepPlan(cfg).config`) is not validated again on each call.
 */
export function policyLoss(batch: PolicyBatch, config: AlgoConfig): PolicyLossResult {
  const ctx = lossContext(batch, validatedConfig(config));
  const { agg, tokensInStep } = aggregationWeights(ctx);
  const keep = entropyKeepMask(ctx);
  const is = importanceWeights(ctx);
  const dLogp = new Float64Array(ctx.M);
  const policy = policyTerm(ctx, (t) => agg[t] * keep(t) * is.weight[t], keep, dLogp);
  const kl = klTerm(ctx, agg, dLogp);
  const entropy = entropyTerm(ctx, tokensInStep);
  const value = ctx.valueOn ? valueTerm(ctx, tokensInStep) : undefined;
  const metrics = lossMetrics(ctx, { policy, kl, entropy, value, is });
  const result: PolicyLossResult = {
    loss: metrics.loss,
    dLogp,
    dEntropy: entropy.dEntropy,
    parts: { policy: policy.value, kl: kl.value, entropy: entropy.value, value: value?.value ?? 0 },
    metrics,
  };
  if (value) result.dValue = value.dValue;
  return result;
}
