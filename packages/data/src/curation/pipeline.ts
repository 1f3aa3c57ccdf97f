/** The curation pipeline: answer check → exact dedup → near dedup → contamination → difficulty filter. */
import type { GradeFn } from "../grade.js";
import type { Generator } from "../generator.js";
import type { MathRecord } from "../types.js";
import { filterParsableAnswers } from "./answers.js";
import { checkContamination } from "./contamination.js";
import type { ContaminationOptions } from "./contamination.js";
import { dedupExact, dedupNear } from "./dedup.js";
import type { NearDedupOptions } from "./dedup.js";
import { filterByDifficulty } from "./difficulty.js";
import type { DifficultyOptions, DifficultyResult } from "./difficulty.js";

export interface CurateOptions {
  /** Drop problems whose gold the verifier cannot parse (default true). */
  answerCheck?: boolean;
  /** Verifier for the answer check and the difficulty filter (default @nr/rewards' verify). */
  grade?: GradeFn;
  /** Exact-duplicate removal by normalised problem text (default true). */
  exactDedup?: boolean;
  /** Near-duplicate removal with sentence embeddings (skipped when absent). */
  nearDedup?: NearDedupOptions;
  /** Drop training problems that overlap these eval sets (skipped when absent). */
  contamination?: ContaminationOptions & { evalSets: Record<string, readonly MathRecord[]> };
  /** Learnable-zone filter with the current model (skipped when absent; runs last, it is the costly step). */
  difficulty?: DifficultyOptions & { generator: Generator };
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

/** What one step removed. */
export interface CurationStep {
  step: "answer-check" | "exact-dedup" | "near-dedup" | "contamination" | "difficulty";
  before: number;
  after: number;
  /** Removed records with the reason (and the record they duplicate / the eval record they overlap). */
  removed: { id: string; reason: string; related?: string }[];
}

export interface CurationResult {
  records: MathRecord[];
  steps: CurationStep[];
  /** Difficulty-filter details (pass counts, histogram), when it ran. */
  difficulty?: DifficultyResult;
}

/** Runs the enabled curation steps in order and reports what each removed and why. */
export async function curate(records: readonly MathRecord[], options: CurateOptions = {}): Promise<CurationResult> {
  const log = options.log ?? (() => {});
  let cur: MathRecord[] = records.slice();
  const steps: CurationStep[] = [];
  const push = (s: CurationStep) => {
    steps.push(s);
    log(`${s.step}: ${s.before} → ${s.after} (removed ${s.removed.length})`);
  };
  if (options.answerCheck ?? true) {
    const r = await filterParsableAnswers(cur, { grade: options.grade });
    push({ step: "answer-check", before: cur.length, after: r.kept.length, removed: r.dropped.map((d) => ({ id: d.record.id, reason: d.reason })) });
    cur = r.kept;
  }
  if (options.exactDedup ?? true) {
    const r = dedupExact(cur);
    push({ step: "exact-dedup", before: cur.length, after: r.kept.length, removed: r.removed.map((d) => ({ id: d.record.id, reason: "same normalised text", related: d.duplicateOf })) });
    cur = r.kept;
  }
  if (options.nearDedup) {
    const r = await dedupNear(cur, options.nearDedup);
    push({
      step: "near-dedup",
      before: cur.length,
      after: r.kept.length,
      removed: r.removed.map((d) => ({ id: d.record.id, reason: `cosine ${d.similarity!.toFixed(3)}`, related: d.duplicateOf })),
    });
    cur = r.kept;
  }
  if (options.contamination) {
    const { evalSets, ...opts } = options.contamination;
    const r = await checkContamination(cur, evalSets, opts);
    push({
      step: "contamination",
      before: cur.length,
      after: r.clean.length,
      removed: r.hits.map((h) => ({
        id: h.id,
        reason: h.by.map((b) => (b === "ngram" ? `n-gram overlap ${h.ngramOverlap.toFixed(2)}` : `cosine ${h.similarity!.toFixed(3)}`)).join(", "),
        related: `${h.evalSet}:${h.evalId}`,
      })),
    });
    cur = r.clean;
  }
  let difficulty: DifficultyResult | undefined;
  if (options.difficulty) {
    const { generator, ...opts } = options.difficulty;
    difficulty = await filterByDifficulty(generator, cur, { grade: options.grade, ...opts });
    const n = opts.n ?? 8;
    push({
      step: "difficulty",
      before: cur.length,
      after: difficulty.kept.length,
      removed: [...difficulty.tooEasy, ...difficulty.tooHard].map((r) => ({ id: r.id, reason: `passed ${difficulty!.passCounts[r.id]}/${n}` })),
    });
    cur = difficulty.kept;
  }
  const result: CurationResult = { records: cur, steps };
  if (difficulty) result.difficulty = difficulty;
  return result;
}

/** A short text report: one line per step, plus the most common removal reasons. */
export function formatCurationReport(result: CurationResult, maxReasons = 5): string {
  const lines: string[] = [];
  for (const s of result.steps) {
    lines.push(`${s.step.padEnd(14)} ${String(s.before).padStart(7)} → ${String(s.after).padStart(7)}  (−${s.removed.length})`);
    const counts = new Map<string, number>();
    for (const r of s.removed) {
      const key = s.step === "near-dedup" || s.step === "contamination" ? r.reason.replace(/[\d.]+$/, "…") : r.reason;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    for (const [reason, c] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, maxReasons)) lines.push(`    ${c} × ${reason}`);
  }
  if (result.difficulty) lines.push(`pass-count histogram: ${result.difficulty.histogram.map((c, i) => `${i}:${c}`).join(" ")}`);
  return lines.join("\n");
}
