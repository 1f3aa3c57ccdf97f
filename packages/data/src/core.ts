// @nr/data/core: the parts of @nr/data that run in a browser as well as in Node: records and field
// maps, prompts and chat templates (ChatTemplate.fromConfig), the synthetic task, the generator
// interface, grading helpers, metrics, the progress bar and evaluate() (without outputPath, and with an
// explicit grade function). Loaders (node:fs, hyparquet files) and embeddings (onnxruntime-node) are
// only in the main entry.

export { DatasetError } from "./types.js";
export type { BadRowReport, MathRecord } from "./types.js";
export { LAYOUTS, detectLayout, getPath, mapRow, splitGsm8kAnswer, stripCalculatorAnnotations, stripThousands } from "./fields.js";
export type { FieldMap, Layout, RowContext } from "./fields.js";
export {
  CHATML_TEMPLATE,
  COT_SYSTEM_PROMPT,
  ChatTemplate,
  PLAIN_TEMPLATE,
  TIR_SYSTEM_PROMPT,
  buildMessages,
  buildPrompt,
  buildSftExample,
  hybridSftTarget,
  parseSftTarget,
  thinks,
  selectFewShot,
  sftTarget,
  shotResponse,
} from "./prompts.js";
export type { ChatMessage, FewShotExample, PromptOptions, SftExample } from "./prompts.js";
export {
  SYNTHETIC_NAMES,
  SYNTHETIC_KINDS,
  SYNTHETIC_OBJECTS,
  expressionFacts,
  generateSynthetic,
  syntheticAlphabet,
  syntheticSftTarget,
  syntheticSolution,
  syntheticSplitOf,
  syntheticWords,
} from "./synthetic.js";
export type { SyntheticKind, SyntheticOp, SyntheticOptions, SyntheticSplit, SyntheticStep } from "./synthetic.js";
export { ScriptedGenerator, unfinished } from "./generator.js";
export { REPETITION_STOP_DEFAULTS, RepeatDetector, firstRepetition, resolveRepetitionStop } from "./repetition.js";
export type { RepetitionStop } from "./repetition.js";
export type { Completion, FinishReason, GenerationRequest, GenerationResult, Generator, ScriptContext } from "./generator.js";
export { defaultGrader, resolveGrader, runGrade } from "./grade.js";
export type { GradeFn, GradeResult, Graded } from "./grade.js";
export { ProgressBar, formatDuration, formatRate } from "./progress.js";
export type { ProgressOptions, ProgressStream } from "./progress.js";
export { answerKey, lengthStats, majorityVote, mean, passAtK, quantile } from "./metrics.js";
export type { LengthStats, Vote, VoteGroup } from "./metrics.js";
export { evaluate, formatEvalTable } from "./evaluate.js";
export type { EvalSummary, EvaluateOptions, ProblemResult, SampleResult } from "./evaluate.js";
export { Rng, fnv1a, lastBoxed, mulberry32 } from "./util.js";
