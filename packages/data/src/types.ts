/** One math problem in the normalised form every loader, curator and evaluator in this package uses. */
export interface MathRecord {
  /** Stable identifier: the dataset's own id field when it has one, otherwise `${source}:${row}`. */
  id: string;
  /** The problem statement shown to the model. */
  problem: string;
  /** The gold final answer (what the verifier compares against), without `\boxed{}`. */
  answer: string;
  /** A worked reference solution, when the dataset has one. */
  solution?: string;
  /** Where the record came from (file stem, dataset name, or "synthetic"). */
  source: string;
  /** Any further fields of the original row (subject, level, pass rates, …). */
  meta?: Record<string, unknown>;
}

/** A row that could not be turned into a {@link MathRecord}. */
export interface BadRowReport {
  /** File the row came from. */
  file: string;
  /** 1-based line number for JSONL, 1-based row number for Parquet and JSON arrays. */
  line: number;
  /** Why the row was rejected ("malformed JSON: …", "missing field \"answer\"", "empty answer", …). */
  reason: string;
  /** The start of the offending text (at most 200 characters), when there is one. */
  snippet?: string;
}

/** Thrown by the loaders when `onBadRow: "error"` meets a bad row. */
export class DatasetError extends Error {
  readonly report: BadRowReport;
  constructor(report: BadRowReport) {
    super(`${report.file}:${report.line}: ${report.reason}`);
    this.name = "DatasetError";
    this.report = report;
  }
}
