import { lastBoxed } from "./util.js";

/**
 * What a grader returns: a boolean, or an object with at least `correct` (the shape of
 * `@nr/rewards`' `verify`: `{ correct, predicted, gold, reason }`).
 */
export type GradeResult = boolean | { correct: boolean; predicted?: string | null; reason?: string };

/** Compares a model response (or a bare answer) with a gold answer. May be async. */
export type GradeFn = (prediction: string, gold: string) => GradeResult | Promise<GradeResult>;

/** A grade result in one shape. */
export interface Graded {
  correct: boolean;
  /** The answer the grader extracted from the prediction (falls back to the last `\boxed{}`). */
  predicted: string | null;
  reason?: string;
}

/** Calls a grader and normalises its result; when the grader does not report the extracted answer, the last `\boxed{}` content is used. */
export async function runGrade(grade: GradeFn, prediction: string, gold: string): Promise<Graded> {
  const r = await grade(prediction, gold);
  if (typeof r === "boolean") return { correct: r, predicted: lastBoxed(prediction) };
  const predicted = r.predicted === undefined ? lastBoxed(prediction) : r.predicted;
  return r.reason === undefined ? { correct: !!r.correct, predicted } : { correct: !!r.correct, predicted, reason: r.reason };
}

let cached: Promise<GradeFn> | null = null;

/**
 * The project's verifier, `verify` from `@nr/rewards`, loaded on first use.
 * Every function that grades takes a `grade` option; this is its default.
 */
export function defaultGrader(): Promise<GradeFn> {
  if (!cached) {
    // The specifier is held in a variable so this package type-checks before @nr/rewards is built.
    const specifier = "@nr/rewards";
    cached = import(specifier).then((mod: Record<string, unknown>) => {
      const verify = mod.verify;
      if (typeof verify !== "function") {
        cached = null;
        throw new Error("@nr/rewards does not export verify(); build it (pnpm --filter @nr/rewards build) or pass a grade option");
      }
      return verify as GradeFn;
    });
  }
  return cached;
}

/** The grader to use: the one given, else the default. */
export async function resolveGrader(grade?: GradeFn): Promise<GradeFn> {
  return grade ?? (await defaultGrader());
}
