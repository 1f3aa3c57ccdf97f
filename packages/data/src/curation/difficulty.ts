/** Learnable-zone difficulty filter: keep problems the current model solves sometimes, not always and not never. */
import { evaluate } from "../evaluate.js";
import type { EvaluateOptions, EvalSummary } from "../evaluate.js";
import type { Generator } from "../generator.js";
import type { MathRecord } from "../types.js";

export interface DifficultyOptions extends Pick<EvaluateOptions, "prompt" | "template" | "promptOptions" | "topP" | "maxNewTokens" | "stop" | "seed" | "grade" | "batchSize" | "outputPath" | "progress"> {
  /** Samples per problem (default 8). */
  n?: number;
  /** Keep problems with at least this many correct samples (default 2). */
  minPass?: number;
  /** … and at most this many (default 5; the LPRO recipe keeps 2–5 of 8). */
  maxPass?: number;
  /** Sampling temperature (default 1.0: the policy's own distribution). */
  temperature?: number;
}

export interface DifficultyResult {
  /** Problems in the learnable zone, with `meta.passCount`, `meta.passN` and `meta.passRate` added. */
  kept: MathRecord[];
  /** Solved more often than maxPass. */
  tooEasy: MathRecord[];
  /** Solved less often than minPass. */
  tooHard: MathRecord[];
  /** Pass count per problem id. */
  passCounts: Record<string, number>;
  /** histogram[c] = problems with c correct samples (c = 0..n). */
  histogram: number[];
  /** The underlying evaluation (pass@k etc. over all problems). */
  eval: EvalSummary;
}

/** Samples `n` solutions per problem with the generator, grades them, and keeps problems whose pass count lies in [minPass, maxPass]. */
export async function filterByDifficulty(generator: Generator, records: readonly MathRecord[], options: DifficultyOptions = {}): Promise<DifficultyResult> {
  const n = options.n ?? 8;
  const minPass = options.minPass ?? 2;
  const maxPass = options.maxPass ?? 5;
  if (!(0 <= minPass && minPass <= maxPass && maxPass <= n)) throw new Error(`filterByDifficulty: need 0 ≤ minPass ≤ maxPass ≤ n (got ${minPass}, ${maxPass}, ${n})`);
  const { n: _n, minPass: _a, maxPass: _b, temperature, ...rest } = options;
  const summary = await evaluate(generator, records, {
    ...rest,
    greedy: false,
    samples: n,
    temperature: temperature ?? 1.0,
    topP: options.topP ?? 1.0,
    ks: [1],
    majKs: [],
    print: false,
    name: "difficulty",
  });
  const out: DifficultyResult = { kept: [], tooEasy: [], tooHard: [], passCounts: {}, histogram: new Array(n + 1).fill(0), eval: summary };
  records.forEach((r, i) => {
    const c = summary.results[i].numCorrect;
    out.passCounts[r.id] = c;
    out.histogram[c]++;
    if (c < minPass) out.tooHard.push(r);
    else if (c > maxPass) out.tooEasy.push(r);
    else out.kept.push({ ...r, meta: { ...r.meta, passCount: c, passN: n, passRate: c / n } });
  });
  return out;
}
