export { verify, analyse, compareAnalysed } from "./verify.js";
export type { VerifyOptions, VerifyResult, MatchType, Analysed } from "./verify.js";
export { extractBoxed, findBoxes, findMathSpans, finalBoxGroup, lastBoxUnbalanced, lastNumber } from "./extract.js";
export { normalizeAnswer, stringKey } from "./normalize.js";
export { parseAnswer, tokenize } from "./parse.js";
export { toVal } from "./structure.js";
export type { Val } from "./structure.js";
export type { Node } from "./ast.js";
export { LIMITS } from "./limits.js";
