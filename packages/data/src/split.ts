// Train / held-out splits that never leak: a seeded split of one file into disjoint record sets, and the removal from
// train of every record whose question is an exact or near duplicate of a held-out one (two rows of a file, or a
// train and a test file, often hold the same question).
import { checkContamination } from "./curation/contamination.js";
import { normalizeText } from "./curation/dedup.js";
import type { MathRecord } from "./types.js";
import { Rng } from "./util.js";

/** A train record dropped because its question duplicates a held-out one. */
export interface LeakReport {
  id: string;
  /** The held-out record it duplicates. */
  heldOutId: string;
  /** "exact": equal normalised text; "ngram": shared word n-grams ≥ the threshold (overlap given). */
  by: "exact" | "ngram";
  overlap?: number;
}

export interface HeldOutSplit {
  train: MathRecord[];
  heldOut: MathRecord[];
  /** Train records dropped as duplicates of held-out ones. */
  leaks: LeakReport[];
}

export interface LeakOptions {
  /** Word n-gram length of the near-duplicate test (default 8, as `nr curate`'s contamination check). */
  ngram?: number;
  /** Shared n-gram fraction that makes two questions near duplicates (default 0.5). */
  ngramThreshold?: number;
}

/**
 * Drop from `train` every record whose question is an exact (normalised text) or near (word n-gram overlap) duplicate
 * of a held-out question, naming the held-out record it repeats.
 */
export async function dropHeldOutDuplicates(train: readonly MathRecord[], heldOut: readonly MathRecord[], o: LeakOptions = {}): Promise<HeldOutSplit> {
  const heldOutByText = new Map<string, string>();
  for (const r of heldOut) if (!heldOutByText.has(normalizeText(r.problem))) heldOutByText.set(normalizeText(r.problem), r.id);
  const leaks: LeakReport[] = [];
  const notExact: MathRecord[] = [];
  for (const r of train) {
    const dup = heldOutByText.get(normalizeText(r.problem));
    if (dup !== undefined) leaks.push({ id: r.id, heldOutId: dup, by: "exact" });
    else notExact.push(r);
  }
  const near = await checkContamination(notExact, { heldOut }, { ngram: o.ngram ?? 8, ngramThreshold: o.ngramThreshold ?? 0.5 });
  for (const h of near.hits) leaks.push({ id: h.id, heldOutId: h.evalId, by: "ngram", overlap: h.ngramOverlap });
  return { train: near.clean, heldOut: [...heldOut], leaks };
}

/**
 * Split one set of records into disjoint train and held-out parts: `heldOutSize` records picked by a seeded shuffle
 * (the same seed and records give the same split on every machine), both parts kept in file order; then train records
 * that duplicate a held-out question are dropped ({@link dropHeldOutDuplicates}).
 */
export async function splitHeldOut(records: readonly MathRecord[], heldOutSize: number, seed: number, o: LeakOptions = {}): Promise<HeldOutSplit> {
  if (!Number.isInteger(heldOutSize) || heldOutSize < 1 || heldOutSize >= records.length) {
    throw new Error(`cannot hold out ${heldOutSize} of ${records.length} records: need 1 <= held-out < records`);
  }
  const picked = new Set(new Rng(seed ^ 0x5eed5).shuffle(records.map((_, i) => i)).slice(0, heldOutSize));
  const heldOut = records.filter((_, i) => picked.has(i));
  const train = records.filter((_, i) => !picked.has(i));
  return dropHeldOutDuplicates(train, heldOut, o);
}
