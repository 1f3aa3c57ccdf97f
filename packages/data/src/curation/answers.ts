/** Drops problems whose gold answer the verifier cannot use. */
import { resolveGrader, runGrade } from "../grade.js";
import type { GradeFn } from "../grade.js";
import type { MathRecord } from "../types.js";

export interface AnswerCheckResult {
  kept: MathRecord[];
  dropped: { record: MathRecord; reason: string }[];
  /** Dropped records per reason. */
  reasons: Record<string, number>;
}

/**
 * Keeps the records whose gold answer the verifier accepts against itself: `grade("\boxed{gold}", gold)`
 * must be correct. A gold the verifier cannot parse (or compares unequal to itself) would give every
 * rollout reward 0, so such problems only add noise to RL. The reason is the verifier's `reason` when
 * it gives one, `"not equal to itself"` otherwise, or `"verifier error: …"` when it throws.
 */
export async function filterParsableAnswers(records: readonly MathRecord[], options: { grade?: GradeFn } = {}): Promise<AnswerCheckResult> {
  const grade = await resolveGrader(options.grade);
  const out: AnswerCheckResult = { kept: [], dropped: [], reasons: {} };
  for (const r of records) {
    let reason: string | null = null;
    try {
      const g = await runGrade(grade, `\\boxed{${r.answer}}`, r.answer);
      if (!g.correct) reason = g.reason ? g.reason : "not equal to itself";
    } catch (e) {
      reason = `verifier error: ${(e as Error).message}`;
    }
    if (reason === null) out.kept.push(r);
    else {
      out.dropped.push({ record: r, reason });
      out.reasons[reason] = (out.reasons[reason] ?? 0) + 1;
    }
  }
  return out;
}
