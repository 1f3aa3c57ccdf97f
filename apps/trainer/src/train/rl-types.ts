// What an RL step takes and gives back (rl-step.ts runs it).
import type { AlgoConfig } from "@nr/algos";
import type { WebGpuGenerator } from "@nr/rollout";
import type { Critic } from "./critic.js";

export interface RlPrompt {
  promptIds: number[];
  gold: string;
  /** The problem text (for samples.jsonl). */
  problem?: string;
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
  /** Activation recompute (sft.checkpointing): keep only layer inputs in the forward, recompute in backward. */
  recompute?: boolean;
  /** The trained adapter (default "policy"). */
  policy?: string;
  /** π_ref for the KL term: an adapter name, or null for the bare base. Only used when the preset's β > 0. */
  reference?: string | null;
  /** PPO: critic adapter + value head (trained by the same optimizer); required exactly when the plan says `critic`. */
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
