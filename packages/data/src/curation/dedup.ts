/** Exact and near-duplicate removal. */
import type { MathRecord } from "../types.js";
import { cosine } from "./embeddings.js";
import type { Embedder } from "./embeddings.js";

/**
 * Text normalisation for exact-duplicate detection: Unicode NFKC, lower case, LaTeX `$` and
 * `\left`/`\right` removed, every run of whitespace and punctuation other than math symbols
 * collapsed to one space, trimmed.
 */
export function normalizeText(text: string): string {
  return text
    .normalize("NFKC")
    .toLowerCase()
    .replace(/\$|\\left|\\right/g, "")
    .replace(/[\s,.;:!?"'`“”‘’()[\]]+/g, " ")
    .trim();
}

/** A removed record and the kept record it duplicates. */
export interface DuplicateReport {
  record: MathRecord;
  duplicateOf: string;
  /** Cosine similarity (near-duplicates only). */
  similarity?: number;
}

export interface DedupResult {
  kept: MathRecord[];
  removed: DuplicateReport[];
}

/** Keeps the first record of each group with the same normalised problem text (by default {@link normalizeText} of `problem`). */
export function dedupExact(records: readonly MathRecord[], key: (r: MathRecord) => string = (r) => normalizeText(r.problem)): DedupResult {
  const first = new Map<string, string>();
  const kept: MathRecord[] = [];
  const removed: DuplicateReport[] = [];
  for (const r of records) {
    const k = key(r);
    const prev = first.get(k);
    if (prev !== undefined) removed.push({ record: r, duplicateOf: prev });
    else {
      first.set(k, r.id);
      kept.push(r);
    }
  }
  return { kept, removed };
}

export interface NearDedupOptions {
  embedder: Embedder;
  /** Cosine similarity at or above which a record duplicates an earlier kept one. Default 0.9. */
  threshold?: number;
  /** Text to embed (default the problem). */
  text?: (r: MathRecord) => string;
  /** Texts per embed() call (default 256). */
  chunk?: number;
  /**
   * Only count a pair as duplicates when their gold answers are also equal (after trimming). Keeps
   * "inverse" problems that tell the same story but ask for a different quantity (GSM8K has such pairs).
   */
  requireSameAnswer?: boolean;
}

/** Embeds records' texts in chunks. */
export async function embedRecords(records: readonly MathRecord[], embedder: Embedder, text: (r: MathRecord) => string = (r) => r.problem, chunk = 256): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (let i = 0; i < records.length; i += chunk) out.push(...(await embedder.embed(records.slice(i, i + chunk).map(text))));
  return out;
}

/**
 * Near-duplicate removal: embeds every record, then walks them in order and drops a record whose
 * cosine similarity to an already kept record is ≥ threshold (it names the most similar one).
 * Quadratic in the number of kept records (about 1 s per 10k×10k×64 on one core).
 */
export async function dedupNear(records: readonly MathRecord[], options: NearDedupOptions): Promise<DedupResult> {
  const threshold = options.threshold ?? 0.9;
  const vecs = await embedRecords(records, options.embedder, options.text, options.chunk);
  const kept: MathRecord[] = [];
  const keptVecs: Float32Array[] = [];
  const removed: DuplicateReport[] = [];
  for (let i = 0; i < records.length; i++) {
    let best = -Infinity;
    let bestJ = -1;
    for (let j = 0; j < keptVecs.length; j++) {
      if (options.requireSameAnswer && kept[j].answer.trim() !== records[i].answer.trim()) continue;
      const c = cosine(vecs[i], keptVecs[j]);
      if (c > best) {
        best = c;
        bestJ = j;
      }
    }
    if (bestJ >= 0 && best >= threshold) removed.push({ record: records[i], duplicateOf: kept[bestJ].id, similarity: best });
    else {
      kept.push(records[i]);
      keptVecs.push(vecs[i]);
    }
  }
  return { kept, removed };
}
