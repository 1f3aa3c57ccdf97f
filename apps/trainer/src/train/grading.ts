// How the trainer grades a completion: @nr/rewards' verifier, or a strict boxed-answer match when that package is not
// built (said in the run's first log line).
import { defaultGrader, type GradeFn } from "@nr/data";

/** The verifier from @nr/rewards; a strict boxed-answer match when that package is not built. */
export async function grader(): Promise<{ grade: GradeFn; name: string }> {
  try {
    return { grade: await defaultGrader(), name: "@nr/rewards verify" };
  } catch {
    const exact: GradeFn = (pred, gold) => {
      const m = /\\boxed\{([^{}]*)\}(?![\s\S]*\\boxed)/.exec(pred);
      return m !== null && m[1].trim() === gold.trim();
    };
    return { grade: exact, name: "exact boxed match (fallback: @nr/rewards not available)" };
  }
}

/** A grade as a boolean (a GradeFn may return the verifier's full result). */
export const isCorrect = (g: Awaited<ReturnType<GradeFn>>) => (typeof g === "boolean" ? g : g.correct);
