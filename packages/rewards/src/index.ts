// @nr/rewards: answer extraction, equivalence checking and reward functions for math RL.
// verify() is the entry point; everything below it is exported for tools, tests and custom pipelines.
export { verify, analyse, compareAnalysed } from "./verify.js";
export type { VerifyOptions, VerifyResult, MatchType, Analysed } from "./verify.js";
export { createVerifier, resolveWorkerUrl } from "./pool.js";
export type { Verifier, VerifierOptions, VerifierStats } from "./pool.js";
export { formatOk, rewardFromResult, mathReward, gsm8kReward, correctnessReward, formatReward } from "./rewards.js";
export type { FormatOptions, RewardOptions, RewardResult } from "./rewards.js";
export {
  extractBoxed,
  findBoxes,
  finalBoxGroup,
  lastBoxUnbalanced,
  matchBrace,
  findMathSpans,
  spanGroupEndingAt,
  unwrapWholeMath,
  findMarkers,
  captureAfter,
  findNumbers,
  lastNumber,
  lastBold,
} from "./extract.js";
export type { Box, Span, Marker, NumberMatch } from "./extract.js";
export { cleanText, repairControlChars, unescapeIfDoubled, cutAtSpecialTokens, splitThink } from "./text.js";
export type { ThinkSplit } from "./text.js";
export { normalizeAnswer, stringKey, stripWrappers } from "./normalize.js";
export type { Side } from "./normalize.js";
export { parseAnswer, tokenize } from "./parse.js";
export type { Tok } from "./parse.js";
export { walk, freeSymbols, show, renameSymbols, isScalar } from "./ast.js";
export type { Node, RelOp } from "./ast.js";
export { toVal, joinAnswers, expandPm, isLabel, matrixValue } from "./structure.js";
export type { Val, Brackets } from "./structure.js";
export { Comparer, relToSet, unwrapSingleton } from "./compare.js";
export type { CompareOptions } from "./compare.js";
export { exactEval, numEval, newState, UndefinedValue } from "./evaluate.js";
export type { NumState } from "./evaluate.js";
export { Q, CQ } from "./rational.js";
export { LIMITS, Budget, BudgetError, ParseError, SizeLimit, Signal } from "./limits.js";
