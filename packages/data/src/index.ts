// @nr/data: datasets, prompts, curation, the synthetic task, and pass@k evaluation.

export { DatasetError } from "./types.js";
export type { BadRowReport, MathRecord } from "./types.js";

export { LAYOUTS, detectLayout, getPath, mapRow, splitGsm8kAnswer, stripCalculatorAnnotations, stripThousands } from "./fields.js";
export type { FieldMap, Layout, RowContext } from "./fields.js";
export { formatBadRows, listSplits, loadDataset, resolveDataFiles, splitOfFile } from "./load.js";
export type { LoadOptions, LoadedDataset } from "./load.js";
export { JsonlWriter, readJsonl, writeJsonl } from "./jsonl.js";

export {
  CHATML_TEMPLATE,
  COT_SYSTEM_PROMPT,
  ChatTemplate,
  PLAIN_TEMPLATE,
  TIR_SYSTEM_PROMPT,
  buildMessages,
  buildPrompt,
  buildSftExample,
  parseSftTarget,
  selectFewShot,
  sftTarget,
  shotResponse,
} from "./prompts.js";
export type { ChatMessage, FewShotExample, PromptOptions, SftExample } from "./prompts.js";

export {
  SYNTHETIC_NAMES,
  SYNTHETIC_OBJECTS,
  generateSynthetic,
  syntheticAlphabet,
  syntheticSftTarget,
  syntheticSolution,
  syntheticSplitOf,
  syntheticWords,
} from "./synthetic.js";
export type { SyntheticOp, SyntheticOptions, SyntheticSplit, SyntheticStep } from "./synthetic.js";

export { ScriptedGenerator } from "./generator.js";
export type { Completion, FinishReason, GenerationRequest, GenerationResult, Generator, ScriptContext } from "./generator.js";
export { defaultGrader, resolveGrader, runGrade } from "./grade.js";
export type { GradeFn, GradeResult, Graded } from "./grade.js";
export { ProgressBar, formatDuration, formatRate } from "./progress.js";
export type { ProgressOptions, ProgressStream } from "./progress.js";
export { answerKey, lengthStats, majorityVote, mean, passAtK, quantile } from "./metrics.js";
export type { LengthStats, Vote, VoteGroup } from "./metrics.js";
export { evaluate, formatEvalTable } from "./evaluate.js";
export type { EvalSummary, EvaluateOptions, ProblemResult, SampleResult } from "./evaluate.js";

export {
  DEFAULT_STOPWORDS,
  OnnxEmbedder,
  WordPieceTokenizer,
  buildHashEmbeddingModel,
  cosine,
  hashTokenizer,
  normalize,
  words,
} from "./curation/embeddings.js";
export type { Embedder, HashEmbeddingModelOptions, HashTokenizerOptions, OnnxEmbedderOptions, TextTokenizer, TokenizedText } from "./curation/embeddings.js";
export { dedupExact, dedupNear, embedRecords, normalizeText } from "./curation/dedup.js";
export type { DedupResult, DuplicateReport, NearDedupOptions } from "./curation/dedup.js";
export { checkContamination, ngramHashes } from "./curation/contamination.js";
export type { ContaminationHit, ContaminationOptions, ContaminationReport } from "./curation/contamination.js";
export { filterParsableAnswers } from "./curation/answers.js";
export type { AnswerCheckResult } from "./curation/answers.js";
export { filterByDifficulty } from "./curation/difficulty.js";
export type { DifficultyOptions, DifficultyResult } from "./curation/difficulty.js";
export { curate, formatCurationReport } from "./curation/pipeline.js";
export type { CurateOptions, CurationResult, CurationStep } from "./curation/pipeline.js";

export { Rng, fnv1a, lastBoxed, mulberry32 } from "./util.js";
