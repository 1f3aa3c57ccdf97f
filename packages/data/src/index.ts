// @nr/data: datasets, prompts, curation, the synthetic task, and pass@k evaluation.
// Everything in ./core.js (browser-safe) plus the Node-only loaders, JSONL helpers and curation.

export * from "./core.js";

export { formatBadRows, invalidUtf8Offset, listSplits, loadDataset, resolveDataFiles, splitOfFile } from "./load.js";
export type { LoadOptions, LoadedDataset } from "./load.js";
export { dropHeldOutDuplicates, splitHeldOut } from "./split.js";
export type { HeldOutSplit, LeakOptions, LeakReport } from "./split.js";
export { JsonlWriter, readJsonl, writeJsonl } from "./jsonl.js";

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
