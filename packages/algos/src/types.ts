// Shared types of @nr/algos. Every algorithm is a pure function of small arrays; see README.md for the
// batch layout and the trainer call sequence.

/** The algorithm presets. */
export type AlgoName = "grpo" | "dr_grpo" | "ppo" | "gspo" | "dapo" | "grpo_lead" | "lpro";

/** Numeric array accepted as input. Computation is always done in float64. */
export type NumArray = ArrayLike<number>;

/**
 * How advantages are estimated.
 * - `group`: GRPO-style `(R − μ_R)/(σ_R + ε)` (or `R − μ_R` with `scale: "none"`).
 * - `gae`: per-token GAE(γ, λ) from a value head (PPO).
 * - `lead`: GRPO-LEAD length-dependent reward + wrong-answer penalty + difficulty weights.
 * - `lpro`: LPRO length-penalised group advantage.
 */
export type AdvantageEstimator = "group" | "gae" | "lead" | "lpro";
/** Which σ divides the centred reward: the group's, the whole batch's, or none (Dr. GRPO). */
export type StdScale = "group" | "batch" | "none";
/** `bessel`: Σ(x−μ)²/(G−1) (TRL, veRL); `population`: Σ(x−μ)²/G. */
export type StdConvention = "bessel" | "population";
/** `raw`: R = r; `signed`: R = 2r − 1 (maps a {0,1} verifier reward onto DAPO's ±1). */
export type RewardMapping = "raw" | "signed";
export type RatioLevel = "token" | "sequence";
/**
 * Loss aggregation over the valid tokens of a batch (n_i = valid tokens of sequence i, N = sequences):
 * - `seq-mean-token-mean`: (1/N) Σ_i (1/n_i) Σ_t λ                         (GRPO, GSPO, GRPO-LEAD)
 * - `token-mean`:          Σ λ / tokensInStep  (global over the optimizer step) (DAPO, LPRO, PPO)
 * - `token-mean-local`:    Σ λ / (valid tokens of this call · gradAccumSteps)  (TRL "bnpo")
 * - `constant`:            Σ λ / (N · maxLength)                              (Dr. GRPO)
 * - `mean-length`:         (1/N) Σ_i Σ_t λ / μ_L(group of i)                  (brief's Dr. GRPO variant)
 * - `seq-mean-token-sum`:  (1/N) Σ_i Σ_t λ                                    (veRL; = LUSPO with sequence ratios)
 */
export type AggregationMode =
  | "seq-mean-token-mean"
  | "token-mean"
  | "token-mean-local"
  | "constant"
  | "mean-length"
  | "seq-mean-token-sum";
export type KlPlacement = "loss" | "reward" | "none";
export type KlEstimator = "k1" | "k2" | "k3";
/** Sampler/trainer mismatch correction (weights built from oldLogp − samplingLogp). */
export type ImportanceSamplingMode = "none" | "token_truncate" | "token_mask" | "sequence_truncate" | "sequence_mask";
export type LeadVariant = "paper" | "simple";

/** Fully resolved algorithm configuration (what `preset()` returns). */
export interface AlgoConfig {
  name: AlgoName;
  reward: {
    /** Mapping applied to the verifier's base reward before shaping (estimators `group` and `gae`). */
    mapping: RewardMapping;
  };
  advantage: {
    estimator: AdvantageEstimator;
    scale: StdScale;
    std: StdConvention;
    /** ε added to σ. */
    eps: number;
    /** A group whose (shaped) reward std is ≤ this counts as zero-std (metric, LPRO gate). */
    zeroStdTol: number;
  };
  gae: {
    gamma: number;
    lambda: number;
    /** Whiten token advantages over all valid tokens: (Â − mean)/sqrt(var + whitenEps), Bessel var. */
    whiten: boolean;
    whitenEps: number;
    /** Subtracted from the sequence score of truncated completions (TRL `missing_eos_penalty`); null = off. */
    missingEosPenalty: number | null;
  };
  lead: {
    variant: LeadVariant;
    /** Length-reward strength: paper exp(−α z) with α = 0.05; simple exp(−α |z|) with α = 0.1. */
    alpha: number;
    /** Logistic weight w(x) = A + (B − A)/(1 + exp(k (x − x0))). */
    A: number;
    B: number;
    x0: number;
    k: number;
    /** Paper variant: reward of a wrong but well-formatted answer. */
    wrongReward: number;
    /** Paper variant: reward of a wrong answer whose `formatOk` is false (no parseable answer). */
    unformattedReward: number;
    /** Apply the length reward only when the mean of the group's 3 shortest lengths exceeds this (0 = always). */
    lengthRewardMinTokens: number;
  };
  lpro: {
    /** λ of the length term. */
    lambda: number;
    /** r = 1[correct] + formatWeight · 1[formatOk]. */
    formatWeight: number;
    /** Drop the length term in groups whose reward std is ≤ advantage.zeroStdTol. */
    gateLengthOnZeroStd: boolean;
  };
  ratio: {
    level: RatioLevel;
    /** Clamp of the log-ratio (token δ, or the sequence mean of δ) before exp; null = none. */
    logRatioClamp: number | null;
  };
  clip: {
    epsLow: number;
    epsHigh: number;
    /** Dual-clip constant c (> 1) for negative advantages; null = off. */
    dualClip: number | null;
    /** Two-sided clip: the unclipped branch uses min(ρ, delta); null = off. */
    delta: number | null;
  };
  aggregation: {
    mode: AggregationMode;
    /** L_max of the `constant` mode. */
    maxLength: number;
  };
  kl: {
    placement: KlPlacement;
    estimator: KlEstimator;
    beta: number;
    /** Clamp of d = ref − logp before the estimator (veRL: 20); null = none. */
    clampLogRatio: number | null;
    /** Clamp of the estimate to ±clampValue (veRL: 10); null = none. */
    clampValue: number | null;
    /** Adaptive β controller (for KL-in-reward): β ← β·(1 + clip(KL/target − 1, ±0.2)·nSteps/horizon). */
    adaptive: { enabled: boolean; target: number; horizon: number };
  };
  entropy: {
    /** Entropy bonus coefficient c_H (L −= c_H · mean H). */
    coef: number;
    /** Keep the policy loss only on tokens with H ≥ quantile_{1−topQuantile}(H); 1 = off. */
    topQuantile: number;
    /** Skywork-OR1 adaptive coefficient: bonus only while entropy < target; coef ± delta per step in [min, max]. */
    adaptive: { enabled: boolean; target: number; delta: number; min: number; max: number };
  };
  importanceSampling: {
    mode: ImportanceSamplingMode;
    cap: number;
  };
  value: {
    /** c_v; 0 = no value loss. */
    coef: number;
    /** ε_v of the clipped value loss; null = unclipped. */
    clip: number | null;
  };
  overlong: {
    /** DAPO soft overlong punishment added to the reward. */
    softPenalty: boolean;
    maxLength: number;
    cacheLength: number;
    factor: number;
    /** Overlong filtering: zero the loss mask of truncated completions. */
    filter: boolean;
  };
  dynamicSampling: {
    enabled: boolean;
    /** Which per-completion quantity must vary inside a group: the correctness flags or the base reward. */
    metric: "correct" | "reward";
    /** A group is kept when std(metric) > stdThreshold. */
    stdThreshold: number;
    /** Cap on generation rounds (1 = drop without refill). */
    maxRounds: number;
    onCapReached: "partial" | "error";
  };
}

/** Deep partial, for overrides. */
export type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };
export type AlgoOverrides = DeepPartial<AlgoConfig>;

/** The G completions of one prompt. */
export interface CompletionGroup {
  /** Verifier base reward per completion; NaN = unscorable (excluded from statistics, advantage 0). */
  rewards: number[];
  /** Completion lengths in tokens (generated tokens incl. EOS), per completion. */
  lengths: number[];
  correct?: boolean[];
  formatOk?: boolean[];
  /** Completion hit the length budget without EOS. */
  truncated?: boolean[];
  /** PPO only: per completion, per generated token (length = lengths[i]). */
  values?: NumArray[];
  /** PPO KL-in-reward only: rollout log-probs per completion, per token. */
  oldLogp?: NumArray[];
  /** PPO KL-in-reward only: reference log-probs per completion, per token. */
  refLogp?: NumArray[];
}

export type Metrics = Record<string, number>;

/**
 * One call's worth of tokens. Per-token arrays all have the same length M and are laid out either
 * - padded, row-major [sequence][token] with M = numSequences · T (no `seqIds`), or
 * - packed, with `seqIds[t]` ∈ [0, numSequences) naming each token's sequence.
 * A sequence must lie entirely inside one call (sequence ratios and per-sequence means need all its tokens).
 */
export interface PolicyBatch {
  numSequences: number;
  seqIds?: ArrayLike<number>;
  /** log π_θ of the sampled token (from temperature-scaled logits). Differentiated: see `dLogp`. */
  logp: NumArray;
  /** log π_old; omitted = on-policy (oldLogp := detached logp, ratio ≡ 1). */
  oldLogp?: NumArray;
  /** log π_ref; needed when kl.placement = "loss" and β > 0. */
  refLogp?: NumArray;
  /** log-probs reported by the sampler, for the importance-sampling correction. */
  samplingLogp?: NumArray;
  /** Per-token entropy; needed for an entropy bonus or the top-entropy mask. Differentiated: `dEntropy`. */
  entropy?: NumArray;
  /** Current value predictions (PPO). Differentiated: `dValue`. */
  values?: NumArray;
  /** Value predictions at rollout (for value clipping). */
  oldValues?: NumArray;
  /** GAE returns (PPO value targets). */
  returns?: NumArray;
  /** Loss mask, 1 = generated token that is trained on, 0 = padding / prompt / tool tokens. */
  mask: NumArray;
  /** Per-sequence advantages (length numSequences). */
  advantages?: NumArray;
  /** Per-token advantages (length M); takes precedence over `advantages` (PPO/GAE). */
  tokenAdvantages?: NumArray;
  /** Per-sequence truncation flags; with overlong.filter their tokens are masked out. */
  truncated?: ArrayLike<boolean | number>;
  /** Valid (loss) tokens of the whole optimizer step (all micro-batches): global token-mean denominator. */
  tokensInStep?: number;
  /** Sequences of the whole optimizer step: denominator of the per-sequence modes. */
  sequencesInStep?: number;
  /** Micro-batches per optimizer step, for `token-mean-local`. */
  gradAccumSteps?: number;
  /** Per-sequence group mean completion length, for aggregation `mean-length`. */
  meanLength?: NumArray;
  /** Current adaptive entropy coefficient (overrides entropy.coef). */
  entropyCoef?: number;
  /** Current KL coefficient β (overrides kl.beta). */
  klCoef?: number;
}

export interface PolicyLossResult {
  loss: number;
  /** ∂loss/∂logp per token (0 on masked tokens). */
  dLogp: Float64Array;
  /** ∂loss/∂entropy per token (all zeros without an entropy bonus). */
  dEntropy: Float64Array;
  /** ∂loss/∂value per token, present when the value loss is active. */
  dValue?: Float64Array;
  /** The loss split into its terms (they sum to `loss`). */
  parts: { policy: number; kl: number; entropy: number; value: number };
  metrics: Metrics;
}
