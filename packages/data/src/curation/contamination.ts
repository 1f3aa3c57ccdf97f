/** Contamination check of a training set against evaluation sets: word n-gram overlap and/or embedding similarity. */
import type { MathRecord } from "../types.js";
import { cosine, words } from "./embeddings.js";
import type { Embedder } from "./embeddings.js";
import { embedRecords } from "./dedup.js";
import { fnv1a } from "../util.js";

export interface ContaminationOptions {
  /** Word n-gram length (default 8). Texts shorter than n words count as one n-gram of all their words. */
  ngram?: number;
  /**
   * Flag a training record when the n-grams it shares with one eval record cover at least this fraction
   * of either text's n-grams (default 0.5). 0 flags any shared n-gram.
   */
  ngramThreshold?: number;
  /** Also compare embeddings: flag when cosine ≥ `embeddingThreshold`. */
  embedder?: Embedder;
  /** Default 0.9. */
  embeddingThreshold?: number;
  /** Text to compare (default the problem). */
  text?: (r: MathRecord) => string;
}

/** One flagged training record. */
export interface ContaminationHit {
  id: string;
  /** The closest eval record (by n-gram overlap, else by embedding). */
  evalId: string;
  evalSet: string;
  /** Shared n-grams / the smaller n-gram count of the two texts (0 when none shared). */
  ngramOverlap: number;
  /** Cosine similarity to the closest eval record (when an embedder was given). */
  similarity?: number;
  by: ("ngram" | "embedding")[];
}

export interface ContaminationReport {
  clean: MathRecord[];
  contaminated: MathRecord[];
  hits: ContaminationHit[];
}

/** Hashes of the word n-grams of a text. */
export function ngramHashes(text: string, n: number): Set<number> {
  const w = words(text);
  const out = new Set<number>();
  if (w.length === 0) return out;
  if (w.length < n) {
    out.add(fnv1a(w.join(" ")));
    return out;
  }
  for (let i = 0; i + n <= w.length; i++) out.add(fnv1a(w.slice(i, i + n).join(" ")));
  return out;
}

/**
 * Flags training records that overlap an evaluation set. For each training record the eval record
 * sharing the most word n-grams is found through an inverted index; the overlap is the shared count
 * over the smaller of the two n-gram counts (so a training problem that contains a test problem, or is
 * contained in one, scores 1). With an embedder, the nearest eval record by cosine is also checked.
 */
export async function checkContamination(
  train: readonly MathRecord[],
  evalSets: Record<string, readonly MathRecord[]>,
  options: ContaminationOptions = {},
): Promise<ContaminationReport> {
  const n = options.ngram ?? 8;
  const thr = options.ngramThreshold ?? 0.5;
  const text = options.text ?? ((r: MathRecord) => r.problem);
  const evals: { set: string; rec: MathRecord; size: number }[] = [];
  const index = new Map<number, number[]>();
  for (const [set, recs] of Object.entries(evalSets)) {
    for (const rec of recs) {
      const grams = ngramHashes(text(rec), n);
      const k = evals.length;
      evals.push({ set, rec, size: grams.size });
      for (const g of grams) {
        const list = index.get(g);
        if (list) list.push(k);
        else index.set(g, [k]);
      }
    }
  }
  let trainVecs: Float32Array[] | null = null;
  let evalVecs: Float32Array[] | null = null;
  if (options.embedder) {
    trainVecs = await embedRecords(train, options.embedder, text);
    evalVecs = await embedRecords(evals.map((e) => e.rec), options.embedder, text);
  }
  const embThr = options.embeddingThreshold ?? 0.9;
  const report: ContaminationReport = { clean: [], contaminated: [], hits: [] };
  for (let i = 0; i < train.length; i++) {
    const grams = ngramHashes(text(train[i]), n);
    const counts = new Map<number, number>();
    for (const g of grams) for (const k of index.get(g) ?? []) counts.set(k, (counts.get(k) ?? 0) + 1);
    let bestK = -1;
    let bestOverlap = 0;
    for (const [k, c] of counts) {
      const overlap = c / Math.max(1, Math.min(grams.size, evals[k].size));
      if (overlap > bestOverlap) {
        bestOverlap = overlap;
        bestK = k;
      }
    }
    const by: ("ngram" | "embedding")[] = [];
    if (bestK >= 0 && bestOverlap >= thr && bestOverlap > 0) by.push("ngram");
    let sim: number | undefined;
    let simK = -1;
    if (trainVecs && evalVecs) {
      sim = -Infinity;
      for (let k = 0; k < evalVecs.length; k++) {
        const c = cosine(trainVecs[i], evalVecs[k]);
        if (c > sim) {
          sim = c;
          simK = k;
        }
      }
      if (simK >= 0 && sim >= embThr) by.push("embedding");
    }
    if (by.length === 0) {
      report.clean.push(train[i]);
      continue;
    }
    const k = by.includes("ngram") ? bestK : simK;
    const hit: ContaminationHit = { id: train[i].id, evalId: evals[k].rec.id, evalSet: evals[k].set, ngramOverlap: bestK === k ? bestOverlap : 0, by };
    if (sim !== undefined && simK >= 0) hit.similarity = simK === k ? sim : cosine(trainVecs![i], evalVecs![k]);
    report.hits.push(hit);
    report.contaminated.push(train[i]);
  }
  return report;
}
