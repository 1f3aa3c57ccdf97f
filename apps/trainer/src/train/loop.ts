// The two training loops over the GPU decoder with LoRA adapters:
//  sftStep — masked causal-LM loss on completion tokens only (prompt tokens get no loss);
//  rlStep  — one RL iteration of ARCHITECTURE.md's loop: sample G completions per prompt on the GPU with the policy
//            adapter (refilling when dynamic sampling drops signal-free groups), score them with the verifier,
//            reference / old log-probs and (PPO) critic values from no-grad passes, advantages from @nr/algos, then
//            epochs × K minibatches of policy (+ value) loss, backward, clip, AdamW.
import { linear, type AdamW, type Engine, type Tensor } from "@nr/autograd";
import { makeBatch, type Decoder } from "@nr/model";
import type { LoraConfig, LoraModel } from "@nr/lora";
import type { WebGpuGenerator } from "@nr/rollout";
import { toolUseMetrics } from "./tir.js";
import { Rng, thinks } from "@nr/data";
import { computeAdvantages, filterGroups, policyLoss, stepNormalizers, type AlgoConfig, type CompletionGroup, type PolicyBatch } from "@nr/algos";
import { rowsPerForward } from "../fit.js";

export interface SftExampleIds {
  promptIds: number[];
  completionIds: number[];
  /** Per completion token: 0 where the token is not the policy's action (TIR tool output), else 1. Default all 1. */
  lossMask?: number[];
}

/**
 * Build a padded batch whose loss mask covers the completion tokens only (position t predicts token t + 1).
 * `at(i, j)` is the flat position whose log-prob is that of completion token j of row i.
 */
function completionBatch(e: Engine, rows: SftExampleIds[], pad: number) {
  const b = makeBatch(e, rows.map((r) => [...r.promptIds, ...r.completionIds]), { pad });
  const at = (i: number, j: number) => i * b.T + rows[i].promptIds.length - 1 + j;
  const mask = new Float64Array(b.B * b.T);
  rows.forEach((r, i) => {
    for (let j = 0; j < r.completionIds.length; j++) mask[at(i, j)] = r.lossMask?.[j] ?? 1;
  });
  return { batch: b, mask, at };
}

/** Per-row (per completion token) values → the padded layout of a batch of `rows` (0 elsewhere). */
function toPadded(rows: SftExampleIds[], perRow: ArrayLike<number>[], at: (i: number, j: number) => number, size: number): Float64Array {
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
function samplerPadded(rows: SftExampleIds[], sampler: number[][], at: (i: number, j: number) => number, trainer: ArrayLike<number>): Float64Array {
  const out = Float64Array.from(trainer);
  rows.forEach((r, i) => {
    for (let j = 0; j < Math.min(r.completionIds.length, sampler[i].length); j++) out[at(i, j)] = sampler[i][j];
  });
  return out;
}

function fromPadded(rows: SftExampleIds[], padded: ArrayLike<number>, at: (i: number, j: number) => number): Float64Array[] {
  return rows.map((r, i) => Float64Array.from({ length: r.completionIds.length }, (_, j) => padded[at(i, j)]));
}

export interface StepStats {
  loss: number;
  gradNorm: number;
  tokens: number;
}

/**
 * One optimizer step of SFT over `microBatches` (gradient accumulation): loss = −Σ mask·logp / Σ mask over the
 * whole step. Returns the mean loss; skips the update (and says so) when the loss or gradient is not finite.
 */
export async function sftStep(e: Engine, decoder: Decoder, opt: AdamW, microBatches: SftExampleIds[][], o: { lr: number; clipGradNorm: number; pad: number; checkpoint?: boolean; injectNan?: boolean }): Promise<StepStats & { skipped: boolean }> {
  const totalTokens = microBatches.reduce((a, mb) => a + mb.reduce((s, r) => s + r.completionIds.length, 0), 0);
  if (totalTokens === 0) throw new Error("sftStep: no completion tokens in this step");
  opt.zeroGrad();
  let nll = 0;
  // a micro-batch whose widest activation outgrows one binding is run in parts (the loss is normalised over the step)
  const fitting = microBatches.flatMap((mb) => chunks(mb, rowsPerForward(e, decoder.config, Math.max(...mb.map((r) => r.promptIds.length + r.completionIds.length)))));
  for (const mb of fitting) {
    await e.scope(async () => {
      const { batch, mask } = completionBatch(e, mb, o.pad);
      const res = decoder.forward(batch, { checkpoint: o.checkpoint });
      const lp = await res.logp.read();
      for (let i = 0; i < mask.length; i++) if (mask[i]) nll -= lp[i];
      const dLogp = Array.from(mask, (m) => -m / totalTokens);
      if (o.injectNan) dLogp[mask.indexOf(1)] = NaN; // test hook (NR_INJECT_NAN): a poisoned gradient must be caught
      decoder.backward(res, dLogp);
    });
  }
  const loss = nll / totalTokens;
  const gradNorm = await opt.clipGradNorm(o.clipGradNorm);
  const skipped = !Number.isFinite(loss) || !Number.isFinite(gradNorm);
  if (!skipped) opt.update(o.lr);
  return { loss, gradNorm, tokens: totalTokens, skipped };
}

export interface RlPrompt {
  promptIds: number[];
  gold: string;
  /** The problem text (for samples.jsonl). */
  problem?: string;
}

/** PPO's critic: its own LoRA adapter on the shared frozen base plus a linear value head on the final hidden state. */
export class Critic {
  readonly head: Tensor;
  readonly params: Tensor[];

  constructor(
    readonly lora: LoraModel,
    readonly decoder: Decoder,
    config: LoraConfig,
    readonly adapter = "critic",
  ) {
    const prev = lora.active;
    const adapterParams = lora.addAdapter(adapter, config); // addAdapter selects it: restore the previous choice
    lora.select(prev);
    const H = decoder.config.hiddenSize;
    // Zero-initialised head: V ≡ 0 at the start, so the first advantages are the plain returns.
    this.head = decoder.engine.tensor(new Float64Array(H), [1, H], { requiresGrad: true, name: "value_head.weight" });
    this.params = [...adapterParams, this.head];
  }

  /** V at every position of the batch, [B·T, 1] (position t = the state before token t + 1 is produced). */
  values(batch: ReturnType<typeof makeBatch>, checkpoint?: boolean): Tensor {
    return this.lora.withAdapter(this.adapter, () => linear(this.decoder.hidden(batch, { checkpoint }), this.head));
  }
}

export interface RlStepOptions {
  algo: AlgoConfig;
  G: number;
  temperature: number;
  topP?: number;
  topK?: number;
  maxNewTokens: number;
  lr: number;
  clipGradNorm: number;
  /** Passes over each rollout (PPO epochs μ); 1 = on-policy when miniBatches is 1 too. */
  ppoEpochs: number;
  /** Optimizer steps per pass (the rollout is split into K shuffled minibatches). Default 1. */
  miniBatches?: number;
  /** Completions per forward pass (gradient accumulation inside a minibatch); 0 = the whole minibatch. */
  microBatchRows?: number;
  seed: number;
  pad: number;
  eos: number;
  /** Reward of a completion (verifier): 1 correct, 0 not (presets rescale as they define). */
  reward: (text: string, gold: string) => Promise<{ reward: number; correct: boolean; formatOk: boolean }>;
  checkpoint?: boolean;
  /** The trained adapter (default "policy"). */
  policy?: string;
  /** π_ref for the KL term: an adapter name, or null for the bare base. Only used when the preset's β > 0. */
  reference?: string | null;
  /** PPO: critic adapter + value head (trained by the same optimizer). */
  critic?: Critic;
  /** Dynamic sampling refills: up to `n` further prompts (advancing the caller's data cursor). */
  morePrompts?: (n: number) => RlPrompt[];
  /** Test hook (NR_INJECT_NAN): poison the gradient of this step. */
  injectNan?: boolean;
  /**
   * Pass the sampler's log-probs to the loss so `algo.importanceSampling` corrects the sampler/trainer mismatch
   * (remote rollouts with rl.rollout.tisCap). Off: the sampler's log-probs are only measured (logpMismatch).
   */
  samplerCorrection?: boolean;
}

/** Where rollouts come from: the local WebGpuGenerator, or servers (RemoteRollout) with the same contract. */
export type RolloutSource = Pick<WebGpuGenerator, "generateIds">;

export interface RlSample {
  prompt: number;
  text: string;
  reward: number;
  correct: boolean;
  advantage: number;
  length: number;
  finishReason: string;
}

export interface RlStepStats {
  loss: number;
  gradNorm: number;
  rewardMean: number;
  rewardStd: number;
  accuracy: number;
  responseLengthMean: number;
  responseLengthMax: number;
  truncationRate: number;
  /** Share of the completions that reason in a non-empty `<think>` block (@nr/data `thinks`). */
  thinkingRate: number;
  fracZeroStdGroups: number;
  clipRatio: number;
  entropy: number;
  kl: number;
  /** Mean |sampler log-prob − training-forward log-prob| over the completion tokens (on-policy pass). */
  logpMismatch: number;
  samples: RlSample[];
  /** Prompts generated (all rounds) and groups kept for training. */
  promptsUsed: number;
  groupsKept: number;
  generateMs: number;
  generatedTokens: number;
  trainMs: number;
  trainTokens: number;
  /** The update was skipped: non-finite loss or gradient. */
  skipped: boolean;
  /** Nothing to learn from: dynamic sampling kept no group. */
  noSignal: boolean;
  /** Other @nr/algos metrics (last minibatch), e.g. "loss/kl", "value/explained_var". */
  extra: Record<string, number>;
}

interface Rollout {
  prompt: RlPrompt;
  promptIndex: number;
  seqs: { tokenIds: number[]; logprobs: number[]; text: string; finishReason: string; toolMask?: number[] }[];
  group: CompletionGroup;
  sampleOffset: number;
}

/** A permutation of 0..n-1 that depends only on `seed` (data order and minibatches are functions of the step: exact resume). */
export function seededPermutation(n: number, seed: number): number[] {
  return new Rng(seed).shuffle(Array.from({ length: n }, (_, i) => i));
}

function chunks<T>(xs: T[], size: number): T[][] {
  if (!(size > 0) || size >= xs.length) return [xs];
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += size) out.push(xs.slice(i, i + size));
  return out;
}

export async function rlStep(e: Engine, decoder: Decoder, lora: LoraModel, opt: AdamW, gen: RolloutSource, prompts: RlPrompt[], o: RlStepOptions): Promise<RlStepStats> {
  const policy = o.policy ?? "policy";
  const t0 = performance.now();
  lora.setTraining(false);
  lora.select(policy);

  // ---- rollout, with dynamic-sampling refills (groups whose rewards are all equal carry no signal)
  const dynamic = o.algo.dynamicSampling.enabled;
  const kept: Rollout[] = [];
  const samples: RlSample[] = [];
  const allGroups: CompletionGroup[] = [];
  let generatedTokens = 0, promptsUsed = 0;
  let batch = prompts;
  for (let round = 0; batch.length > 0; round++) {
    const seqs = await gen.generateIds(batch.map((p) => ({ promptIds: p.promptIds, n: o.G })), { temperature: o.temperature, topP: o.topP, topK: o.topK, maxNewTokens: o.maxNewTokens, seed: o.seed + 7919 * round });
    const rollouts: Rollout[] = [];
    for (let i = 0; i < batch.length; i++) {
      const rewards: number[] = [], lengths: number[] = [], correct: boolean[] = [], formatOk: boolean[] = [], truncated: boolean[] = [];
      const sampleOffset = samples.length;
      for (const s of seqs[i]) {
        const r = await o.reward(s.text, batch[i].gold);
        // The EOS token is part of what the policy produced: it is trained on (its log-prob comes from the forward).
        const length = s.tokenIds.length + (s.finishReason === "eos" ? 1 : 0);
        rewards.push(r.reward);
        lengths.push(length);
        correct.push(r.correct);
        formatOk.push(r.formatOk);
        truncated.push(s.finishReason === "length");
        generatedTokens += s.tokenIds.length;
        samples.push({ prompt: promptsUsed + i, text: s.text, reward: r.reward, correct: r.correct, advantage: 0, length, finishReason: s.finishReason });
      }
      const group: CompletionGroup = { rewards, lengths, correct, formatOk, truncated };
      allGroups.push(group);
      rollouts.push({ prompt: batch[i], promptIndex: promptsUsed + i, seqs: seqs[i], group, sampleOffset });
    }
    promptsUsed += batch.length;
    const keep = dynamic ? filterGroups(rollouts.map((r) => r.group), o.algo).keptIndices : rollouts.map((_, i) => i);
    for (const k of keep) if (kept.length < prompts.length) kept.push(rollouts[k]);
    const want = prompts.length - kept.length;
    if (!dynamic || want <= 0 || round + 1 >= o.algo.dynamicSampling.maxRounds || !o.morePrompts) break;
    batch = o.morePrompts(want);
  }
  const generateMs = performance.now() - t0;
  const tirExtra = toolUseMetrics(kept.flatMap((r) => r.seqs));
  const rewardsAll = allGroups.flatMap((g) => g.rewards);
  const mean = rewardsAll.reduce((a, b) => a + b, 0) / Math.max(1, rewardsAll.length);
  const std = Math.sqrt(rewardsAll.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, rewardsAll.length - 1));
  const lens = samples.map((s) => s.length);
  const base = {
    rewardMean: mean,
    rewardStd: std,
    accuracy: samples.filter((s) => s.correct).length / Math.max(1, samples.length),
    responseLengthMean: lens.reduce((a, b) => a + b, 0) / Math.max(1, lens.length),
    responseLengthMax: Math.max(0, ...lens),
    truncationRate: samples.filter((s) => s.finishReason === "length").length / Math.max(1, samples.length),
    thinkingRate: samples.filter((s) => thinks(s.text)).length / Math.max(1, samples.length),
    fracZeroStdGroups: allGroups.filter((g) => g.rewards.every((r) => r === g.rewards[0])).length / Math.max(1, allGroups.length),
    samples,
    promptsUsed,
    groupsKept: kept.length,
    generateMs,
    generatedTokens,
  };
  if (kept.length === 0) {
    return { ...base, loss: 0, gradNorm: 0, clipRatio: 0, entropy: 0, kl: 0, logpMismatch: 0, trainMs: 0, trainTokens: 0, skipped: false, noSignal: true, extra: tirExtra };
  }

  // ---- training rows: one per kept completion
  const t1 = performance.now();
  const rows: SftExampleIds[] = [];
  const samplerLogp: number[][] = [];
  const truncated: boolean[] = [];
  const owner: number[] = []; // row → index into samples
  for (const r of kept) {
    r.seqs.forEach((s, j) => {
      const eos = s.finishReason === "eos";
      // TIR: tokens a tool appended are context, not actions: out of the loss, its normalizers and the log-prob check.
      const lossMask = s.toolMask ? [...s.toolMask.map((m) => 1 - m), ...(eos ? [1] : [])] : undefined;
      rows.push({ promptIds: r.prompt.promptIds, completionIds: eos ? [...s.tokenIds, o.eos] : s.tokenIds, ...(lossMask ? { lossMask } : {}) });
      samplerLogp.push(s.logprobs);
      truncated.push(s.finishReason === "length");
      owner.push(r.sampleOffset + j);
    });
  }
  const all = rows.map((_, i) => i);
  // 0: as many rows per forward as one binding holds the widest activation of (all of them on a large-binding GPU)
  const micro = o.microBatchRows || rowsPerForward(e, decoder.config, Math.max(...rows.map((r) => r.promptIds.length + r.completionIds.length)));
  const K = Math.max(1, o.miniBatches ?? 1);
  const onPolicy = o.ppoEpochs * K === 1;
  const needRef = o.algo.kl.beta > 0 && o.reference !== undefined;
  const needOld = !onPolicy || (o.critic !== undefined && o.algo.kl.placement === "reward" && needRef);

  // ---- no-grad passes at rollout time: π_old, π_ref, V_old (per row, per completion token)
  const oldLogp: Float64Array[] = new Array(rows.length);
  const refLogp: Float64Array[] = new Array(rows.length);
  const oldValues: Float64Array[] = new Array(rows.length);
  const score = async (idx: number[], adapter: string | null, values: boolean) => {
    const part = idx.map((i) => rows[i]);
    await e.scope(async () => {
      const { batch: b, at } = completionBatch(e, part, o.pad);
      const res = e.noGrad(() => lora.withAdapter(adapter, () => decoder.forward(b, { temperature: o.temperature })));
      const lp = fromPadded(part, await res.logp.read(), at);
      idx.forEach((i, k) => (adapter === policy ? (oldLogp[i] = lp[k]) : (refLogp[i] = lp[k])));
      if (values && o.critic) {
        const v = e.noGrad(() => o.critic!.values(b));
        const vv = fromPadded(part, await v.read(), at);
        idx.forEach((i, k) => (oldValues[i] = vv[k]));
      }
    });
  };
  for (const c of chunks(all, micro)) {
    if (needOld || o.critic) await score(c, policy, o.critic !== undefined);
    if (needRef) await score(c, o.reference ?? null, false);
  }

  // ---- advantages (PPO: per token from V_old, with the KL-in-reward terms)
  const groups = kept.map((r) => r.group);
  if (o.critic) {
    let row = 0;
    for (const g of groups) {
      const n = g.rewards.length;
      g.values = oldValues.slice(row, row + n);
      if (needRef && o.algo.kl.placement === "reward") {
        g.oldLogp = oldLogp.slice(row, row + n);
        g.refLogp = refLogp.slice(row, row + n);
      }
      row += n;
    }
  }
  const adv = computeAdvantages(groups, o.algo);
  rows.forEach((_, i) => (samples[owner[i]].advantage = adv.advantages[i]));

  // ---- epochs × K minibatches, each one optimizer step (micro-batches accumulate)
  let loss = 0, gradNorm = 0, clipRatio = 0, entropyMean = 0, klMean = 0, mismatch = 0, trainTokens = 0;
  let skipped = false;
  let extra: Record<string, number> = {};
  lora.setTraining(true);
  outer: for (let epoch = 0; epoch < o.ppoEpochs; epoch++) {
    // Seeded (a function of seed and epoch only) so a resumed run sees the same minibatches.
    const order = onPolicy ? all : seededPermutation(rows.length, o.seed * 31 + epoch);
    const per = Math.ceil(order.length / K);
    for (let k = 0; k < K; k++) {
      const mbIdx = order.slice(k * per, (k + 1) * per);
      if (mbIdx.length === 0) continue;
      const parts = chunks(mbIdx, micro);
      const norm = stepNormalizers(
        parts.map((p) => {
          const m: number[] = [];
          p.forEach((i) => m.push(...rows[i].completionIds.map((_, j) => rows[i].lossMask?.[j] ?? 1)));
          return { mask: m, numSequences: p.length, seqIds: p.flatMap((i, s) => rows[i].completionIds.map(() => s)), truncated: p.map((i) => truncated[i]) };
        }),
        o.algo,
      );
      opt.zeroGrad();
      for (const p of parts) {
        const part = p.map((i) => rows[i]);
        await e.scope(async () => {
          const { batch: b, mask, at } = completionBatch(e, part, o.pad);
          const res = decoder.forward(b, { temperature: o.temperature, checkpoint: o.checkpoint });
          const values = o.critic ? o.critic.values(b, o.checkpoint) : null;
          const logp = await res.logp.read();
          const entropy = await res.entropy.read();
          if (epoch === 0 && k === 0) {
            // Sampler vs trainer: the same tokens scored by the KV-cache sampler and by the training forward.
            let s = 0, n = 0;
            p.forEach((i, r) => samplerLogp[i].forEach((lq, j) => rows[i].lossMask?.[j] !== 0 && ((s += Math.abs(lq - logp[at(r, j)])), n++)));
            mismatch = n ? s / n : 0;
          }
          const tokAdv = adv.tokenAdvantages ? toPadded(part, p.map((i) => adv.tokenAdvantages![i]), at, mask.length) : undefined;
          const oldPadded = onPolicy ? undefined : toPadded(part, p.map((i) => oldLogp[i]), at, mask.length);
          const pb: PolicyBatch = {
            numSequences: part.length,
            logp,
            oldLogp: oldPadded,
            samplingLogp: o.samplerCorrection ? samplerPadded(part, p.map((i) => samplerLogp[i]), at, oldPadded ?? logp) : undefined,
            refLogp: needRef ? toPadded(part, p.map((i) => refLogp[i]), at, mask.length) : undefined,
            entropy,
            mask,
            advantages: p.map((i) => adv.advantages[i]),
            tokenAdvantages: tokAdv,
            truncated: p.map((i) => truncated[i]),
            values: values ? await values.read() : undefined,
            oldValues: o.critic ? toPadded(part, p.map((i) => oldValues[i]), at, mask.length) : undefined,
            returns: adv.returns ? toPadded(part, p.map((i) => adv.returns![i]), at, mask.length) : undefined,
            ...norm,
          };
          const out = policyLoss(pb, o.algo);
          loss += out.loss;
          if (o.injectNan) out.dLogp[mask.indexOf(1)] = NaN;
          const m = out.metrics as Record<string, number>;
          clipRatio = m["clip_ratio/region_mean"] ?? 0;
          entropyMean = m["entropy"] ?? 0;
          klMean = m["kl"] ?? 0;
          extra = { ...m, ...tirExtra };
          trainTokens += mask.reduce((a, x) => a + x, 0);
          const seeds: Array<[Tensor, ArrayLike<number>]> = [[res.logp, out.dLogp]];
          if (out.dEntropy.some((x) => x !== 0)) seeds.push([res.entropy, out.dEntropy]);
          if (values && out.dValue) seeds.push([values, out.dValue]);
          e.backward(seeds);
        });
      }
      gradNorm = await opt.clipGradNorm(o.clipGradNorm);
      if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
        skipped = true;
        opt.zeroGrad();
        break outer;
      }
      opt.update(o.lr);
    }
  }
  lora.setTraining(false);
  const steps = o.ppoEpochs * K;
  return {
    ...base,
    loss: loss / steps,
    gradNorm,
    clipRatio,
    entropy: entropyMean,
    kl: klMean,
    logpMismatch: mismatch,
    trainMs: performance.now() - t1,
    trainTokens,
    skipped,
    noSignal: false,
    extra,
  };
}
