// @nr/algos — RL advantage estimators, reward shaping and policy losses as pure functions over typed arrays.
export type {
  AlgoName,
  AlgoConfig,
  AlgoOverrides,
  DeepPartial,
  AdvantageEstimator,
  StdScale,
  StdConvention,
  RewardMapping,
  RatioLevel,
  AggregationMode,
  KlPlacement,
  KlEstimator,
  ImportanceSamplingMode,
  LeadVariant,
  CompletionGroup,
  PolicyBatch,
  PolicyLossResult,
  Metrics,
  NumArray,
} from "./types.js";
export { ALGO_NAMES, preset, prepareConfig, resolveConfig, validateConfig } from "./presets.js";
export {
  groupAdvantages,
  computeAdvantages,
  gae,
  gaeMasked,
  maskedWhiten,
  ppoTokenRewards,
  tokensBySequence,
} from "./advantages.js";
export type { AdvantageResult } from "./advantages.js";
export { policyLoss, clippedSurrogate, countLossTokens, stepNormalizers } from "./loss.js";
export { klEstimate, klValueAndGrad, adaptiveKlStep, adaptiveEntropyStep } from "./kl.js";
export type { KlClamp } from "./kl.js";
export {
  softOverlongPenalty,
  leadWeight,
  leadRewards,
  lproRewards,
  shapedRewards,
  correctness,
  correctLengthZ,
  maskTruncated,
} from "./shaping.js";
export { isInformativeGroup, filterGroups, dynamicSample } from "./sampling.js";
export type { GroupFilterResult, DynamicSampleResult } from "./sampling.js";
export { mean, std, zScores, quantile } from "./stats.js";
export { stepPlan } from "./plan.js";
export type { StepPlan, StepPlanOptions } from "./plan.js";
