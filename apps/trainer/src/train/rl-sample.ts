// Phase 1 of an RL step: sample G completions per prompt with the policy and score them with the verifier. Which
// groups are kept, and whether more prompts are drawn to replace dropped ones, is the algorithm's refill policy
// (@nr/algos stepPlan(...).sample, i.e. dynamicSample); this file only generates and scores what it is asked for.
import { thinks, unfinished } from "@nr/data";
import type { CompletionGroup, StepPlan } from "@nr/algos";
import type { RlPrompt, RlSample, RlStepOptions, RolloutSource } from "./rl-types.js";

/** One generated completion as the sampler returned it. */
export interface SampledSequence {
  tokenIds: number[];
  logprobs: number[];
  text: string;
  finishReason: string;
  toolMask?: number[];
}

/** One prompt's scored group: the CompletionGroup @nr/algos reads, plus where it came from. */
export interface Rollout extends CompletionGroup {
  prompt: RlPrompt;
  seqs: SampledSequence[];
  /** Index of this group's first completion in SampledStep.samples. */
  sampleOffset: number;
}

export interface SampledStep {
  /** The groups the refill policy kept for training (at most one per prompt asked for). */
  kept: Rollout[];
  /** Every group generated in every round (the reward metrics are over all of them). */
  all: Rollout[];
  /** Every completion generated, in order (samples.jsonl). */
  samples: RlSample[];
  promptsUsed: number;
  generatedTokens: number;
}

/** Score one prompt's completions; appends them to `samples` (as prompt number `promptNumber`). */
async function scoreGroup(prompt: RlPrompt, seqs: SampledSequence[], promptNumber: number, samples: RlSample[], o: RlStepOptions): Promise<Rollout> {
  const group: Rollout = { prompt, seqs, sampleOffset: samples.length, rewards: [], lengths: [], correct: [], formatOk: [], truncated: [] };
  for (const s of seqs) {
    const r = await o.reward(s.text, prompt.gold);
    // The EOS token is part of what the policy produced: it is trained on (its log-prob comes from the forward).
    const length = s.tokenIds.length + (s.finishReason === "eos" ? 1 : 0);
    group.rewards.push(r.reward);
    group.lengths.push(length);
    group.correct!.push(r.correct);
    group.formatOk!.push(r.formatOk);
    group.truncated!.push(unfinished(s.finishReason));
    samples.push({ prompt: promptNumber, text: s.text, reward: r.reward, correct: r.correct, advantage: 0, length, finishReason: s.finishReason });
  }
  return group;
}

/**
 * Round 0 samples `prompts`; each further round the plan asks for draws that many prompts from `o.morePrompts`
 * (none without it, which ends sampling). Round r samples with seed `o.seed + 7919·r`.
 */
export async function sampleAndScore(gen: RolloutSource, prompts: RlPrompt[], o: RlStepOptions, plan: StepPlan): Promise<SampledStep> {
  if (prompts.length === 0) throw new Error("rlStep: no prompts to sample (rl.promptsPerStep must be ≥ 1)");
  const step: SampledStep = { kept: [], all: [], samples: [], promptsUsed: 0, generatedTokens: 0 };
  const round = async (r: number, stillNeeded: number): Promise<Rollout[]> => {
    const batch = r === 0 ? prompts : (o.morePrompts?.(stillNeeded) ?? []);
    if (batch.length === 0) return [];
    const sampling = { temperature: o.temperature, topP: o.topP, topK: o.topK, maxNewTokens: o.maxNewTokens, seed: o.seed + 7919 * r };
    const seqs = await gen.generateIds(batch.map((p) => ({ promptIds: p.promptIds, n: o.G })), sampling);
    const groups: Rollout[] = [];
    for (let i = 0; i < batch.length; i++) {
      groups.push(await scoreGroup(batch[i], seqs[i], step.promptsUsed + i, step.samples, o));
      step.generatedTokens += seqs[i].reduce((a, s) => a + s.tokenIds.length, 0);
    }
    step.promptsUsed += batch.length;
    step.all.push(...groups);
    return groups;
  };
  step.kept = (await plan.sample(round, prompts.length)).groups;
  return step;
}

/** The step's sampling metrics: rewards, accuracy, lengths, truncation and thinking rates over every completion. */
export function samplingMetrics(step: SampledStep) {
  const { samples, all } = step;
  const n = Math.max(1, samples.length);
  const rewards = all.flatMap((g) => g.rewards);
  const mean = rewards.reduce((a, b) => a + b, 0) / Math.max(1, rewards.length);
  const std = Math.sqrt(rewards.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, rewards.length - 1));
  const lens = samples.map((s) => s.length);
  return {
    rewardMean: mean,
    rewardStd: std,
    accuracy: samples.filter((s) => s.correct).length / n,
    responseLengthMean: lens.reduce((a, b) => a + b, 0) / Math.max(1, lens.length),
    responseLengthMax: Math.max(0, ...lens),
    truncationRate: samples.filter((s) => unfinished(s.finishReason)).length / n,
    thinkingRate: samples.filter((s) => thinks(s.text)).length / n,
    fracZeroStdGroups: all.filter((g) => g.rewards.every((r) => r === g.rewards[0])).length / Math.max(1, all.length),
    samples,
    promptsUsed: step.promptsUsed,
    groupsKept: step.kept.length,
    generatedTokens: step.generatedTokens,
  };
}
