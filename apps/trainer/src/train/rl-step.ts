// One RL iteration (docs/architecture.md): @nr/algos' stepPlan decides what the step needs and this file runs it,
// in four phases —
//  1. sample + score: G completions per prompt, groups kept / refilled by the plan's refill policy (rl-sample.ts);
//  2. no-grad passes the plan names: π_old, π_ref, V_old (per completion token, before any update);
//  3. update: epochs × K minibatches of policy (+ value) loss, backward, clip, AdamW (micro-batches accumulate);
//  4. metrics: sampling metrics over every completion, loss metrics from the last minibatch.
import type { AdamW, Engine, Tensor } from "@nr/autograd";
import type { Decoder } from "@nr/model";
import type { LoraModel } from "@nr/lora";
import { computeAdvantages, policyLoss, stepNormalizers, stepPlan, type PolicyBatch, type StepPlan } from "@nr/algos";
import { Rng, unfinished } from "@nr/data";
import { rowsPerForward } from "../fit.js";
import { toolUseMetrics } from "./tir.js";
import { chunks, completionBatch, fromPadded, samplerPadded, toPadded, type SftExampleIds } from "./rows.js";
import { sampleAndScore, samplingMetrics, type Rollout } from "./rl-sample.js";
import type { RlPrompt, RlStepOptions, RlStepStats, RolloutSource } from "./rl-types.js";

/** A permutation of 0..n-1 that depends only on `seed` (data order and minibatches are functions of the step: exact resume). */
export function seededPermutation(n: number, seed: number): number[] {
  return new Rng(seed).shuffle(Array.from({ length: n }, (_, i) => i));
}

/** What every phase runs on. */
interface StepContext {
  e: Engine;
  decoder: Decoder;
  lora: LoraModel;
  policy: string;
  plan: StepPlan;
  o: RlStepOptions;
}

/** One training row per kept completion, with what the update needs to know about it. */
interface TrainingRows {
  rows: SftExampleIds[];
  samplerLogp: number[][];
  truncated: boolean[];
  /** Row → index into the step's samples. */
  owner: number[];
  /** Rows per forward pass. */
  micro: number;
}

/** Per row, per completion token: the no-grad scores the plan asked for (empty arrays otherwise). */
interface NoGradScores {
  oldLogp: Float64Array[];
  refLogp: Float64Array[];
  oldValues: Float64Array[];
}

type Advantages = ReturnType<typeof computeAdvantages>;

function trainingRows(c: StepContext, kept: Rollout[]): TrainingRows {
  const t: TrainingRows = { rows: [], samplerLogp: [], truncated: [], owner: [], micro: 0 };
  for (const r of kept) {
    r.seqs.forEach((s, j) => {
      const eos = s.finishReason === "eos";
      // TIR: tokens a tool appended are context, not actions: out of the loss, its normalizers and the log-prob check.
      const lossMask = s.toolMask ? [...s.toolMask.map((m) => 1 - m), ...(eos ? [1] : [])] : undefined;
      t.rows.push({ promptIds: r.prompt.promptIds, completionIds: eos ? [...s.tokenIds, c.o.eos] : s.tokenIds, ...(lossMask ? { lossMask } : {}) });
      t.samplerLogp.push(s.logprobs);
      t.truncated.push(unfinished(s.finishReason));
      t.owner.push(r.sampleOffset + j);
    });
  }
  // 0: as many rows per forward as one binding holds the widest activation of (all of them on a large-binding GPU)
  t.micro = c.o.microBatchRows || rowsPerForward(c.e, c.decoder.config, Math.max(...t.rows.map((r) => r.promptIds.length + r.completionIds.length)));
  return t;
}

/** Phase 2: the plan's no-grad passes; one pass with the policy adapter serves both π_old and V_old. */
async function noGradPasses(c: StepContext, t: TrainingRows): Promise<NoGradScores> {
  const { e, lora, decoder, plan, o } = c;
  const scores: NoGradScores = { oldLogp: new Array(t.rows.length), refLogp: new Array(t.rows.length), oldValues: new Array(t.rows.length) };
  const score = async (idx: number[], adapter: string | null, into: Float64Array[], values: boolean) => {
    const part = idx.map((i) => t.rows[i]);
    await e.scope(async () => {
      const { batch: b, at } = completionBatch(e, part, o.pad);
      const res = e.noGrad(() => lora.withAdapter(adapter, () => decoder.forward(b, { temperature: o.temperature })));
      const lp = fromPadded(part, await res.logp.read(), at);
      idx.forEach((i, k) => (into[i] = lp[k]));
      if (values) {
        const vv = fromPadded(part, await e.noGrad(() => o.critic!.values(b)).read(), at);
        idx.forEach((i, k) => (scores.oldValues[i] = vv[k]));
      }
    });
  };
  for (const idx of chunks(t.rows.map((_, i) => i), t.micro)) {
    if (plan.passes.oldLogp || plan.passes.oldValues) await score(idx, c.policy, scores.oldLogp, plan.passes.oldValues);
    if (plan.passes.refLogp) await score(idx, o.reference ?? null, scores.refLogp, false);
  }
  return scores;
}

/** The plan's group fields (V_old; π_old and π_ref for the KL-in-reward terms) on each kept group, then advantages. */
function advantages(c: StepContext, kept: Rollout[], scores: NoGradScores): Advantages {
  const f = c.plan.groupFields;
  let row = 0;
  for (const g of kept) {
    const n = g.rewards.length;
    if (f.values) g.values = scores.oldValues.slice(row, row + n);
    if (f.oldLogp) g.oldLogp = scores.oldLogp.slice(row, row + n);
    if (f.refLogp) g.refLogp = scores.refLogp.slice(row, row + n);
    row += n;
  }
  return computeAdvantages(kept, c.plan.config);
}

/** Running totals over the update's micro-batches. */
interface UpdateStats {
  loss: number;
  gradNorm: number;
  clipRatio: number;
  entropy: number;
  kl: number;
  logpMismatch: number;
  trainTokens: number;
  skipped: boolean;
  extra: Record<string, number>;
}

/** The loss inputs of the micro-batch `p` (row indices) in its padded layout, with the fields the plan names. */
function policyBatch(c: StepContext, t: TrainingRows, scores: NoGradScores, adv: Advantages, p: number[], padded: { mask: Float64Array; at: (i: number, j: number) => number; logp: Float64Array; entropy: Float64Array; values?: Float64Array }): PolicyBatch {
  const part = p.map((i) => t.rows[i]);
  const f = c.plan.batchFields;
  const { mask, at } = padded;
  const pad = (perRow: ArrayLike<number>[]) => toPadded(part, perRow, at, mask.length);
  const oldLogp = f.oldLogp ? pad(p.map((i) => scores.oldLogp[i])) : undefined;
  return {
    numSequences: part.length,
    logp: padded.logp,
    oldLogp,
    samplingLogp: c.o.samplerCorrection ? samplerPadded(part, p.map((i) => t.samplerLogp[i]), at, oldLogp ?? padded.logp) : undefined,
    refLogp: f.refLogp ? pad(p.map((i) => scores.refLogp[i])) : undefined,
    entropy: padded.entropy,
    mask,
    advantages: p.map((i) => adv.advantages[i]),
    tokenAdvantages: f.tokenAdvantages ? pad(p.map((i) => adv.tokenAdvantages![i])) : undefined,
    truncated: p.map((i) => t.truncated[i]),
    values: padded.values,
    oldValues: f.values ? pad(p.map((i) => scores.oldValues[i])) : undefined,
    returns: f.tokenAdvantages ? pad(p.map((i) => adv.returns![i])) : undefined,
  };
}

/** Forward, loss and backward of one micro-batch (gradients accumulate); `measure`: record the sampler/trainer gap. */
async function microStep(c: StepContext, t: TrainingRows, scores: NoGradScores, adv: Advantages, p: number[], norm: ReturnType<typeof stepNormalizers>, s: UpdateStats, measure: boolean) {
  const { e, decoder, o } = c;
  const part = p.map((i) => t.rows[i]);
  await e.scope(async () => {
    const { batch: b, mask, at } = completionBatch(e, part, o.pad);
    const res = decoder.forward(b, { temperature: o.temperature, checkpoint: o.recompute });
    const values = c.plan.batchFields.values ? o.critic!.values(b, o.recompute) : null;
    const logp = await res.logp.read();
    const entropy = await res.entropy.read();
    if (measure) {
      // Sampler vs trainer: the same tokens scored by the KV-cache sampler and by the training forward.
      let sum = 0, n = 0;
      p.forEach((i, r) => t.samplerLogp[i].forEach((lq, j) => t.rows[i].lossMask?.[j] !== 0 && ((sum += Math.abs(lq - logp[at(r, j)])), n++)));
      s.logpMismatch = n ? sum / n : 0;
    }
    const pb: PolicyBatch = { ...policyBatch(c, t, scores, adv, p, { mask, at, logp, entropy, values: values ? await values.read() : undefined }), ...norm };
    const out = policyLoss(pb, c.plan.config);
    s.loss += out.loss;
    if (o.injectNan) out.dLogp[mask.indexOf(1)] = NaN;
    const m = out.metrics as Record<string, number>;
    s.clipRatio = m["clip_ratio/region_mean"] ?? 0;
    s.entropy = m["entropy"] ?? 0;
    s.kl = m["kl"] ?? 0;
    s.extra = m;
    s.trainTokens += mask.reduce((a, x) => a + x, 0);
    const seeds: Array<[Tensor, ArrayLike<number>]> = [[res.logp, out.dLogp]];
    if (out.dEntropy.some((x) => x !== 0)) seeds.push([res.entropy, out.dEntropy]);
    if (values && out.dValue) seeds.push([values, out.dValue]);
    e.backward(seeds);
  });
}

/** The loss normalisers of one minibatch, over all its micro-batches (token counts, sequences, truncation). */
function normalizers(c: StepContext, t: TrainingRows, parts: number[][]) {
  return stepNormalizers(
    parts.map((p) => {
      const m: number[] = [];
      p.forEach((i) => m.push(...t.rows[i].completionIds.map((_, j) => t.rows[i].lossMask?.[j] ?? 1)));
      return { mask: m, numSequences: p.length, seqIds: p.flatMap((i, s) => t.rows[i].completionIds.map(() => s)), truncated: p.map((i) => t.truncated[i]) };
    }),
    c.plan.config,
  );
}

/** Phase 3: epochs × K minibatches, each one optimizer step; stops (skipped) at a non-finite loss or gradient. */
async function update(c: StepContext, opt: AdamW, t: TrainingRows, scores: NoGradScores, adv: Advantages): Promise<UpdateStats> {
  const s: UpdateStats = { loss: 0, gradNorm: 0, clipRatio: 0, entropy: 0, kl: 0, logpMismatch: 0, trainTokens: 0, skipped: false, extra: {} };
  const { epochs, miniBatches: K, shuffle } = c.plan.minibatch;
  const all = t.rows.map((_, i) => i);
  c.lora.setTraining(true);
  for (let epoch = 0; epoch < epochs && !s.skipped; epoch++) {
    // Seeded (a function of seed and epoch only) so a resumed run sees the same minibatches.
    const order = shuffle ? seededPermutation(t.rows.length, c.o.seed * 31 + epoch) : all;
    const per = Math.ceil(order.length / K);
    for (let k = 0; k < K && !s.skipped; k++) {
      const mbIdx = order.slice(k * per, (k + 1) * per);
      if (mbIdx.length === 0) continue;
      const parts = chunks(mbIdx, t.micro);
      const norm = normalizers(c, t, parts);
      opt.zeroGrad();
      for (const p of parts) await microStep(c, t, scores, adv, p, norm, s, epoch === 0 && k === 0);
      s.gradNorm = await opt.clipGradNorm(c.o.clipGradNorm);
      if (!Number.isFinite(s.loss) || !Number.isFinite(s.gradNorm)) {
        s.skipped = true;
        opt.zeroGrad();
      } else opt.update(c.o.lr);
    }
  }
  c.lora.setTraining(false);
  s.loss /= epochs * K;
  return s;
}

/** Stepping options that are run settings, not algorithm settings, as @nr/algos' stepPlan takes them. */
function planFor(o: RlStepOptions): StepPlan {
  const plan = stepPlan(o.algo, { epochs: o.ppoEpochs, miniBatches: Math.max(1, o.miniBatches ?? 1), hasReference: o.reference !== undefined });
  if (plan.critic !== (o.critic !== undefined)) {
    throw new Error(`rlStep: the algorithm ${plan.critic ? "trains a critic (value.coef > 0) but no Critic was given" : "has no value loss (value.coef = 0) but a Critic was given"}`);
  }
  return plan;
}

export async function rlStep(e: Engine, decoder: Decoder, lora: LoraModel, opt: AdamW, gen: RolloutSource, prompts: RlPrompt[], o: RlStepOptions): Promise<RlStepStats> {
  const c: StepContext = { e, decoder, lora, policy: o.policy ?? "policy", plan: planFor(o), o };
  const t0 = performance.now();
  lora.setTraining(false);
  lora.select(c.policy);
  const sampled = await sampleAndScore(gen, prompts, o, c.plan);
  const base = { ...samplingMetrics(sampled), generateMs: performance.now() - t0 };
  const tirExtra = toolUseMetrics(sampled.kept.flatMap((r) => r.seqs));
  if (sampled.kept.length === 0) {
    return { ...base, loss: 0, gradNorm: 0, clipRatio: 0, entropy: 0, kl: 0, logpMismatch: 0, trainMs: 0, trainTokens: 0, skipped: false, noSignal: true, extra: tirExtra };
  }
  const t1 = performance.now();
  const rows = trainingRows(c, sampled.kept);
  const scores = await noGradPasses(c, rows);
  const adv = advantages(c, sampled.kept, scores);
  rows.owner.forEach((s, i) => (sampled.samples[s].advantage = adv.advantages[i]));
  const u = await update(c, opt, rows, scores, adv);
  return { ...base, ...u, extra: { ...u.extra, ...tirExtra }, trainMs: performance.now() - t1, noSignal: false };
}
