/** Exact and near-duplicate removal. */
import type { MathRecord } from "../types.js";
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
 * Quadratic in the number of kept records: GSM8K train (7473 problems, 128 dimensions) takes a few seconds on one core.
 */
export async function dedupNear(records: readonly MathRecord[], options: NearDedupOptions): Promise<DedupResult> {
  const threshold = options.threshold ?? 0.9;
  const vecs = await embedRecords(records, options.embedder, options.text, options.chunk);
  const kept: MathRecord[] = [];
  const removed: DuplicateReport[] = [];
  const D = vecs[0]?.length ?? 0;
  // Kept vectors live in one growing flat buffer: the scan below is the hot loop.
  let flat = new Float32Array(Math.max(1, Math.min(records.length, 1024)) * D);
  for (let i = 0; i < records.length; i++) {
    const v = vecs[i];
    let best = -Infinity;
    let bestJ = -1;
    for (let j = 0, off = 0; j < kept.length; j++, off += D) {
      if (options.requireSameAnswer && kept[j].answer.trim() !== records[i].answer.trim()) continue;
      // Four accumulators: several times faster than a plain loop in V8.
      let c0 = 0;
      let c1 = 0;
      let c2 = 0;
      let c3 = 0;
      let d = 0;
      for (; d + 3 < D; d += 4) {
        c0 += v[d] * flat[off + d];
        c1 += v[d + 1] * flat[off + d + 1];
        c2 += v[d + 2] * flat[off + d + 2];
        c3 += v[d + 3] * flat[off + d + 3];
      }
      for (; d < D; d++) c0 += v[d] * flat[off + d];
      const c = c0 + c1 + c2 + c3;
      if (c > best) {
        best = c;
        bestJ = j;
      }
    }
    if (bestJ >= 0 && best >= threshold) removed.push({ record: records[i], duplicateOf: kept[bestJ].id, similarity: best });
    else {
      if ((kept.length + 1) * D > flat.length) {
        const grown = new Float32Array(flat.length * 2);
        grown.set(flat);
        flat = grown;
      }
      flat.set(v, kept.length * D);
      kept.push(records[i]);
    }
  }
  return { kept, removed };
}
