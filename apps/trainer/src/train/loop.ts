// The two training loops over the GPU decoder with LoRA adapters:
//  sftStep — masked causal-LM loss on completion tokens only (prompt tokens get no loss);
//  rlStep  — one RL iteration of ARCHITECTURE.md's loop: sample G completions per prompt on the GPU with the policy
//            adapter, score them with the verifier, advantages and policy loss from @nr/algos, backward through the
//            decoder, clip, AdamW.
import type { AdamW, Engine } from "@nr/autograd";
import { makeBatch, type Decoder } from "@nr/model";
import type { LoraModel } from "@nr/lora";
import type { WebGpuGenerator } from "@nr/rollout";
import { computeAdvantages, policyLoss, stepNormalizers, type AlgoConfig, type CompletionGroup } from "@nr/algos";

export interface SftExampleIds {
  promptIds: number[];
  completionIds: number[];
}

/** Build a padded batch whose loss mask covers the completion tokens only (position t predicts token t + 1). */
function completionBatch(e: Engine, rows: SftExampleIds[], pad: number) {
  const b = makeBatch(e, rows.map((r) => [...r.promptIds, ...r.completionIds]), { pad });
  const mask = new Float64Array(b.B * b.T);
  rows.forEach((r, i) => {
    const Lp = r.promptIds.length;
    for (let j = 0; j < r.completionIds.length; j++) mask[i * b.T + Lp - 1 + j] = 1;
  });
  return { batch: b, mask };
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
export async function sftStep(e: Engine, decoder: Decoder, opt: AdamW, microBatches: SftExampleIds[][], o: { lr: number; clipGradNorm: number; pad: number; checkpoint?: boolean }): Promise<StepStats & { skipped: boolean }> {
  const totalTokens = microBatches.reduce((a, mb) => a + mb.reduce((s, r) => s + r.completionIds.length, 0), 0);
  if (totalTokens === 0) throw new Error("sftStep: no completion tokens in this step");
  opt.zeroGrad();
  let nll = 0;
  for (const mb of microBatches) {
    await e.scope(async () => {
      const { batch, mask } = completionBatch(e, mb, o.pad);
      const res = decoder.forward(batch, { checkpoint: o.checkpoint });
      const lp = await res.logp.read();
      for (let i = 0; i < mask.length; i++) if (mask[i]) nll -= lp[i];
      decoder.backward(res, Array.from(mask, (m) => -m / totalTokens));
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
}

export interface RlStepOptions {
  algo: AlgoConfig;
  G: number;
  temperature: number;
  topP?: number;
  maxNewTokens: number;
  lr: number;
  clipGradNorm: number;
  /** Optimizer steps per rollout (PPO epochs × minibatches); 1 = on-policy. */
  ppoEpochs: number;
  seed: number;
  pad: number;
  eos: number;
  /** Reward of a completion (verifier): 1 correct, 0 not (presets rescale as they define). */
  reward: (text: string, gold: string) => Promise<{ reward: number; correct: boolean; formatOk: boolean }>;
  checkpoint?: boolean;
}

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
  fracZeroStdGroups: number;
  clipRatio: number;
  entropy: number;
  samples: RlSample[];
  generateMs: number;
  trainMs: number;
  skipped: boolean;
}

export async function rlStep(e: Engine, decoder: Decoder, lora: LoraModel, opt: AdamW, gen: WebGpuGenerator, prompts: RlPrompt[], o: RlStepOptions): Promise<RlStepStats> {
  const t0 = performance.now();
  lora.setTraining(false);
  const seqs = await gen.generateIds(prompts.map((p) => ({ promptIds: p.promptIds, n: o.G })), { temperature: o.temperature, topP: o.topP, maxNewTokens: o.maxNewTokens, seed: o.seed });
  const generateMs = performance.now() - t0;
  const groups: CompletionGroup[] = [];
  const samples: RlSample[] = [];
  const rows: SftExampleIds[] = [];
  const samplingLogp: number[][] = [];
  const truncated: boolean[] = [];
  for (let i = 0; i < prompts.length; i++) {
    const rewards: number[] = [], lengths: number[] = [], correct: boolean[] = [], formatOk: boolean[] = [];
    for (const s of seqs[i]) {
      const r = await o.reward(s.text, prompts[i].gold);
      // The EOS token is part of what the policy produced: it is trained on (its log-prob comes from the forward).
      const completion = s.finishReason === "eos" ? [...s.tokenIds, o.eos] : s.tokenIds;
      rewards.push(r.reward);
      lengths.push(completion.length);
      correct.push(r.correct);
      formatOk.push(r.formatOk);
      rows.push({ promptIds: prompts[i].promptIds, completionIds: completion });
      samplingLogp.push(s.logprobs);
      truncated.push(s.finishReason === "length");
      samples.push({ prompt: i, text: s.text, reward: r.reward, correct: r.correct, advantage: 0, length: completion.length, finishReason: s.finishReason });
    }
    groups.push({ rewards, lengths, correct, formatOk });
  }
  const adv = computeAdvantages(groups, o.algo);
  adv.advantages.forEach((a: number, k: number) => (samples[k].advantage = a));

  // One padded micro-batch holding every completion; ppoEpochs optimizer steps over it.
  const t1 = performance.now();
  let loss = 0, gradNorm = 0, clipRatio = 0, entropyMean = 0;
  let skipped = false;
  lora.setTraining(true);
  const oldLogp: Float64Array[] = [];
  for (let epoch = 0; epoch < o.ppoEpochs; epoch++) {
    opt.zeroGrad();
    await e.scope(async () => {
      const { batch, mask } = completionBatch(e, rows, o.pad);
      const res = decoder.forward(batch, { temperature: o.temperature, checkpoint: o.checkpoint });
      const logp = await res.logp.read();
      const entropy = await res.entropy.read();
      if (epoch === 0) oldLogp.push(Float64Array.from(logp)); // θ_old = θ at rollout time
      const pb = { numSequences: rows.length, logp, oldLogp: oldLogp[0], entropy, mask, advantages: adv.advantages, truncated, meanLength: undefined };
      const norm = stepNormalizers([pb], o.algo);
      const out = policyLoss({ ...pb, ...norm }, o.algo);
      loss = out.loss;
      const m = out.metrics as Record<string, number>;
      clipRatio = m["clip_ratio/region_mean"] ?? 0;
      entropyMean = m["entropy"] ?? 0;
      decoder.backward(res, out.dLogp, out.dEntropy ?? undefined);
    });
    gradNorm = await opt.clipGradNorm(o.clipGradNorm);
    if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
      skipped = true;
      break;
    }
    opt.update(o.lr);
  }
  lora.setTraining(false);
  const rewardsAll = groups.flatMap((g) => g.rewards);
  const mean = rewardsAll.reduce((a, b) => a + b, 0) / rewardsAll.length;
  const std = Math.sqrt(rewardsAll.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, rewardsAll.length - 1));
  const lens = samples.map((s) => s.length);
  void samplingLogp;
  return {
    loss,
    gradNorm,
    rewardMean: mean,
    rewardStd: std,
    accuracy: samples.filter((s) => s.correct).length / samples.length,
    responseLengthMean: lens.reduce((a, b) => a + b, 0) / lens.length,
    responseLengthMax: Math.max(...lens),
    truncationRate: truncated.filter(Boolean).length / truncated.length,
    fracZeroStdGroups: groups.filter((g) => g.rewards.every((r) => r === g.rewards[0])).length / groups.length,
    clipRatio,
    entropy: entropyMean,
    samples,
    generateMs,
    trainMs: performance.now() - t1,
    skipped,
  };
}
