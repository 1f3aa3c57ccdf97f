// What one RL step needs, decided from the algorithm config: the trainer runs the passes and fills the fields the
// plan names, and does not look at the config itself. See README.md "Step plan".
import { prepareConfig } from "./presets.js";
import { dynamicSample, type DynamicSampleResult } from "./sampling.js";
import type { AlgoConfig, CompletionGroup, KlPlacement } from "./types.js";

/** How the trainer reuses each rollout; these are run settings, not part of the algorithm config. */
export interface StepPlanOptions {
  /** Passes over each rollout (PPO epochs μ). Default 1. */
  epochs?: number;
  /** Optimizer steps per pass: the rollout is split into this many minibatches. Default 1. */
  miniBatches?: number;
  /** Whether a π_ref (an adapter or the bare base) is available to score against. Default true. */
  hasReference?: boolean;
}

export interface StepPlan {
  /** The validated, frozen config: pass it to computeAdvantages / stepNormalizers / policyLoss (validated once). */
  config: Readonly<AlgoConfig>;
  /** Which no-grad passes run over the rollout before the first update (per completion token). */
  passes: {
    /** π_old log-probs with the policy adapter (off-policy updates, or the KL-in-reward terms of PPO). */
    oldLogp: boolean;
    /** π_ref log-probs with the reference (KL in the loss or in the reward). */
    refLogp: boolean;
    /** V_old from the critic (PPO's GAE). */
    oldValues: boolean;
  };
  /** A value head / critic is trained with the policy (value.coef > 0). */
  critic: boolean;
  kl: {
    placement: KlPlacement;
    beta: number;
    /** The KL enters each group's per-token rewards (computeAdvantages reads group.oldLogp / refLogp). */
    inReward: boolean;
    /** The KL enters the loss (policyLoss reads batch.refLogp). */
    inLoss: boolean;
  };
  /** Fields computeAdvantages reads from each CompletionGroup besides rewards and lengths. */
  groupFields: { values: boolean; oldLogp: boolean; refLogp: boolean };
  /** Fields each policyLoss batch carries besides logp, mask, truncated and the normalisers. */
  batchFields: {
    /** Absent on-policy: the ratio is then exactly 1. */
    oldLogp: boolean;
    refLogp: boolean;
    /** Per-token advantages and returns (GAE), instead of one advantage per sequence. */
    tokenAdvantages: boolean;
    /** values (current, differentiated), oldValues, returns. */
    values: boolean;
    /** Entropy enters the loss (bonus or top-entropy mask); it is always a metric when given. */
    entropyInLoss: boolean;
  };
  minibatch: {
    epochs: number;
    miniBatches: number;
    /** One optimizer step per rollout: no π_old pass is needed and the order is kept. */
    onPolicy: boolean;
    /** Minibatches are drawn from a seeded shuffle of the rollout each epoch (when not on-policy). */
    shuffle: boolean;
  };
  sampling: {
    /** Groups without signal are dropped and refilled (DAPO) or only dropped (GRPO-LEAD: maxRounds 1). */
    dynamic: boolean;
    /** Generation rounds at most (1 when dynamic sampling is off). */
    maxRounds: number;
  };
  /**
   * The refill policy: `generateRound(round, stillNeeded)` samples and scores that many further groups (return []
   * when the prompt source has run out); informative groups are kept until `targetGroups` are collected or the
   * round cap is reached. Without dynamic sampling: one round, nothing dropped.
   */
  sample<G extends CompletionGroup>(
    generateRound: (round: number, stillNeeded: number) => G[] | Promise<G[]>,
    targetGroups: number,
  ): Promise<DynamicSampleResult<G>>;
}

function positiveInteger(name: string, v: number | undefined): number {
  if (v === undefined) return 1;
  if (!Number.isInteger(v) || v < 1) throw new Error(`stepPlan: options.${name} = ${v} (allowed: an integer ≥ 1)`);
  return v;
}

/** What one RL step of `config` needs (validates the config once; see {@link StepPlan}). */
export function stepPlan(config: AlgoConfig, options: StepPlanOptions = {}): StepPlan {
  const cfg = prepareConfig(config);
  const epochs = positiveInteger("epochs", options.epochs);
  const miniBatches = positiveInteger("miniBatches", options.miniBatches);
  const onPolicy = epochs * miniBatches === 1;
  const critic = cfg.value.coef > 0;
  const refLogp = cfg.kl.beta > 0 && (options.hasReference ?? true);
  const inReward = refLogp && cfg.kl.placement === "reward";
  // PPO's KL-in-reward needs log π_old − log π_ref per token, so π_old is scored even on-policy.
  const oldLogp = !onPolicy || (critic && inReward);
  const dynamic = cfg.dynamicSampling.enabled;
  return {
    config: cfg,
    passes: { oldLogp, refLogp, oldValues: critic },
    critic,
    kl: { placement: cfg.kl.placement, beta: cfg.kl.beta, inReward, inLoss: refLogp && cfg.kl.placement === "loss" },
    groupFields: { values: critic, oldLogp: critic && inReward, refLogp: critic && inReward },
    batchFields: {
      oldLogp: !onPolicy,
      refLogp,
      tokenAdvantages: cfg.advantage.estimator === "gae",
      values: critic,
      entropyInLoss: cfg.entropy.coef > 0 || cfg.entropy.topQuantile < 1,
    },
    minibatch: { epochs, miniBatches, onPolicy, shuffle: !onPolicy },
    sampling: { dynamic, maxRounds: dynamic ? cfg.dynamicSampling.maxRounds : 1 },
    sample: (generateRound, targetGroups) => dynamicSample(generateRound, targetGroups, cfg),
  };
}
