// @nr/rewards: answer extraction, equivalence checking and reward functions for math RL.
export { verify, analyse, compareAnalysed } from "./verify.js";
export type { VerifyOptions, VerifyResult, MatchType, Analysed } from "./verify.js";
export { createVerifier, resolveWorkerUrl } from "./pool.js";
export type { Verifier, VerifierOptions, VerifierStats } from "./pool.js";
export { formatOk, rewardFromResult, mathReward, gsm8kReward, correctnessReward, formatReward } from "./rewards.js";
export type { FormatOptions, RewardOptions, RewardResult } from "./rewards.js";
export {
  extractBoxed,
  findBoxes,
  findMathSpans,
  finalBoxGroup,
  lastBoxUnbalanced,
  lastNumber,
  findNumbers,
  matchBrace,
} from "./extract.js";
export type { Box, Span, NumberMatch } from "./extract.js";
export { normalizeAnswer, stringKey, stripWrappers } from "./normalize.js";
export { parseAnswer, tokenize } from "./parse.js";
export type { Tok } from "./parse.js";
export { toVal } from "./structure.js";
export type { Val } from "./structure.js";
export type { Node, RelOp } from "./ast.js";
export { Comparer } from "./compare.js";
export type { CompareOptions } from "./compare.js";
export { Q, CQ } from "./rational.js";
export { LIMITS, Budget, ParseError, SizeLimit, BudgetError } from "./limits.js";
export { cleanText, repairControlChars, unescapeIfDoubled, cutAtSpecialTokens, splitThink } from "./text.js";
