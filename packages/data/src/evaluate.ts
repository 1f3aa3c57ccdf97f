import type { Completion, FinishReason, GenerationRequest, Generator } from "./generator.js";
import { resolveGrader, runGrade } from "./grade.js";
import type { GradeFn } from "./grade.js";
import { JsonlWriter } from "./jsonl.js";
import { lengthStats, majorityVote, mean, passAtK } from "./metrics.js";
import type { LengthStats } from "./metrics.js";
import { ProgressBar } from "./progress.js";
import { ChatTemplate, buildPrompt } from "./prompts.js";
import { type RepetitionStop, resolveRepetitionStop } from "./repetition.js";
import type { PromptOptions } from "./prompts.js";
import type { MathRecord } from "./types.js";

/** Options of {@link evaluate}. */
export interface EvaluateOptions {
  /** Builds the prompt of a record. Default: {@link buildPrompt} with `template` and `promptOptions`. */
  prompt?: (record: MathRecord) => string;
  /** Chat template for the default prompt (default: built-in ChatML). */
  template?: ChatTemplate;
  /** CoT/TIR/few-shot options for the default prompt (default CoT). */
  promptOptions?: PromptOptions;
  /** The prompt of a record as token ids (see GenerationRequest.promptIds); `prompt` then only labels it. */
  promptIds?: (record: MathRecord) => readonly number[];
  /** One greedy (temperature 0) completion per problem, for greedy pass@1. Default true. */
  greedy?: boolean;
  /**
   * Temperature of that one-completion pass: 0 (default) is greedy decoding; above 0 it is one seeded sample per
   * problem (nr train's eval.temperature), still reported as `greedyPass1`.
   */
  greedyTemperature?: number;
  /** Sampled completions per problem (n) for avg@n, pass@k and maj@k. Default 0 (none). */
  samples?: number;
  /** Sampling temperature (default 0.6). */
  temperature?: number;
  /** Nucleus mass for sampling (default 0.95). */
  topP?: number;
  /** Token budget per completion (default 1024). */
  maxNewTokens?: number;
  stop?: string[];
  /** The length-explosion guard: end looping completions early (finish reason "repetition"). Default off. */
  repetitionStop?: RepetitionStop;
  /** Base seed: problem i's sampled request gets seed + i (independent of batching). Default 0. */
  seed?: number;
  /** k values for pass@k (each ≤ samples). Default: 1, 2, 4, … up to samples, and samples. */
  ks?: number[];
  /** k values for maj@k (each ≤ samples; the first k samples vote). Default [samples] when samples > 1. */
  majKs?: number[];
  /** The verifier (default `verify` from @nr/rewards). */
  grade?: GradeFn;
  /**
   * How majority voting decides two different answer strings are the same answer. Default: the grader,
   * called as `grade("\boxed{a}", b)`; `false`: only {@link answerKey}-equal strings vote together.
   */
  equivalent?: false | ((a: string, b: string) => boolean | Promise<boolean>);
  /** Problems per generate() call (default 16). */
  batchSize?: number;
  /** Writes one JSON line per problem (prompt, responses, extracted answers, correctness) here. */
  outputPath?: string;
  /** Progress bar: true (default) draws one on stderr, false none, or pass your own. */
  progress?: boolean | ProgressBar;
  /** Prints the summary table: true (default) with console.log, false not, or a function to print with. */
  print?: boolean | ((text: string) => void);
  /** Name shown in the progress bar and the table. */
  name?: string;
}

/** One graded completion. */
export interface SampleResult {
  text: string;
  /** The answer extracted by the grader (null: none found). */
  predicted: string | null;
  correct: boolean;
  finishReason: FinishReason;
  /** Length in tokens when the generator reports them, else in characters. */
  length: number;
  reason?: string;
}

/** Everything about one problem (one JSONL line of `outputPath`). */
export interface ProblemResult {
  id: string;
  prompt: string;
  gold: string;
  greedy?: SampleResult;
  samples: SampleResult[];
  /** Correct samples. */
  numCorrect: number;
  /** pass@k estimates of this problem, by k. */
  passAtK: Record<string, number>;
  /** Majority answer and its correctness, by k. */
  majAtK: Record<string, { answer: string | null; votes: number; tie: boolean; correct: boolean }>;
}

export interface EvalSummary {
  name?: string;
  problems: number;
  /** Greedy pass@1 (fraction). */
  greedyPass1?: number;
  /** Samples per problem. */
  samples: number;
  /** avg@n: mean accuracy over all samples (equals pass@1 estimated from n samples). */
  avgAtN?: number;
  /** Mean unbiased pass@k over problems, by k. */
  passAtK: Record<string, number>;
  /** maj@k accuracy, by k. */
  majAtK: Record<string, number>;
  /** Response lengths of greedy and of sampled completions. */
  length: { unit: "tokens" | "chars"; greedy?: LengthStats; sampled?: LengthStats };
  /** Completions by finish reason (greedy and sampled together). */
  finishReasons: Record<FinishReason, number>;
  seconds: number;
  /** Per-problem results, in dataset order. */
  results: ProblemResult[];
}

function defaultKs(n: number): number[] {
  const ks: number[] = [];
  for (let k = 1; k <= n; k *= 2) ks.push(k);
  if (ks[ks.length - 1] !== n) ks.push(n);
  return ks;
}

/**
 * Evaluates a generator on a dataset: greedy pass@1, avg@n, unbiased pass@k and maj@k over sampled
 * completions, response lengths, finish reasons. Writes per-problem records to `outputPath` (JSONL),
 * draws a progress bar and prints a summary table.
 */
export async function evaluate(generator: Generator, dataset: readonly MathRecord[], options: EvaluateOptions = {}): Promise<EvalSummary> {
  const greedy = options.greedy ?? true;
  const n = options.samples ?? 0;
  if (!greedy && n <= 0) throw new Error("evaluate: nothing to do (greedy is false and samples is 0)");
  const ks = n > 0 ? (options.ks ?? defaultKs(n)) : [];
  const majKs = n > 1 ? (options.majKs ?? [n]) : (options.majKs ?? []);
  for (const k of [...ks, ...majKs]) if (!Number.isInteger(k) || k < 1 || k > n) throw new Error(`evaluate: k=${k} needs 1 ≤ k ≤ samples (${n})`);
  const grade = await resolveGrader(options.grade);
  const equivalent =
    options.equivalent === false ? undefined : (options.equivalent ?? (async (a: string, b: string) => (await runGrade(grade, `\\boxed{${a}}`, b)).correct));
  const template = options.template ?? ChatTemplate.chatml();
  const makePrompt = options.prompt ?? ((r: MathRecord) => buildPrompt(template, r.problem, options.promptOptions));
  const maxNewTokens = options.maxNewTokens ?? 1024;
  if (options.repetitionStop) resolveRepetitionStop(options.repetitionStop); // a bad setting fails before any generation
  const batchSize = Math.max(1, options.batchSize ?? 16);
  const seed = options.seed ?? 0;
  const writer = options.outputPath ? new JsonlWriter(options.outputPath) : null;
  const bar =
    options.progress instanceof ProgressBar
      ? options.progress
      : options.progress === false
        ? null
        : new ProgressBar({ total: dataset.length, label: options.name ?? "eval", unit: "problems" });

  const started = performance.now();
  const results: ProblemResult[] = [];
  const finishReasons: Record<FinishReason, number> = { eos: 0, stop: 0, length: 0, repetition: 0 };
  let allTokens = true;
  let correctSoFar = 0;
  let gradedSoFar = 0;

  const gradeCompletion = async (c: Completion, gold: string): Promise<SampleResult> => {
    const g = await runGrade(grade, c.text, gold);
    finishReasons[c.finishReason]++;
    if (c.tokens === undefined) allTokens = false;
    const out: SampleResult = { text: c.text, predicted: g.predicted, correct: g.correct, finishReason: c.finishReason, length: c.tokens ?? [...c.text].length };
    if (g.reason !== undefined) out.reason = g.reason;
    return out;
  };

  try {
    for (let start = 0; start < dataset.length; start += batchSize) {
      const batch = dataset.slice(start, start + batchSize);
      const prompts = batch.map(makePrompt);
      const requests: GenerationRequest[] = [];
      batch.forEach((_, j) => {
        const ids = options.promptIds?.(batch[j]);
        const base = { prompt: prompts[j], ...(ids ? { promptIds: ids } : {}), maxNewTokens, ...(options.stop ? { stop: options.stop } : {}), ...(options.repetitionStop ? { repetitionStop: options.repetitionStop } : {}) };
        if (greedy) requests.push({ ...base, n: 1, temperature: options.greedyTemperature ?? 0, seed: seed + start + j });
        if (n > 0) requests.push({ ...base, n, temperature: options.temperature ?? 0.6, topP: options.topP ?? 0.95, seed: seed + start + j });
      });
      const out = await generator.generate(requests);
      if (out.length !== requests.length) throw new Error(`generator returned ${out.length} results for ${requests.length} requests`);
      let r = 0;
      const batchResults: ProblemResult[] = [];
      for (let j = 0; j < batch.length; j++) {
        const rec = batch[j];
        const res: ProblemResult = { id: rec.id, prompt: prompts[j], gold: rec.answer, samples: [], numCorrect: 0, passAtK: {}, majAtK: {} };
        if (greedy) {
          const c = out[r++].completions;
          if (c.length !== 1) throw new Error(`generator returned ${c.length} completions for a greedy request`);
          res.greedy = await gradeCompletion(c[0], rec.answer);
        }
        if (n > 0) {
          const cs = out[r++].completions;
          if (cs.length !== n) throw new Error(`generator returned ${cs.length} completions, expected ${n}`);
          for (const c of cs) res.samples.push(await gradeCompletion(c, rec.answer));
          res.numCorrect = res.samples.filter((s) => s.correct).length;
          for (const k of ks) res.passAtK[k] = passAtK(n, res.numCorrect, k);
          for (const k of majKs) {
            const first = res.samples.slice(0, k);
            const vote = await majorityVote(first.map((s) => s.predicted), equivalent);
            res.majAtK[k] = { answer: vote.answer, votes: vote.votes, tie: vote.tie, correct: vote.index >= 0 && first[vote.index].correct };
          }
        }
        const primary = greedy ? (res.greedy!.correct ? 1 : 0) : res.numCorrect / n;
        correctSoFar += primary;
        gradedSoFar++;
        batchResults.push(res);
      }
      results.push(...batchResults);
      if (writer) await writer.write(batchResults);
      bar?.tick(batch.length, `acc ${((100 * correctSoFar) / gradedSoFar).toFixed(1)}%`);
    }
  } finally {
    if (writer) await writer.close();
  }
  bar?.finish();

  const summary: EvalSummary = {
    problems: results.length,
    samples: n,
    passAtK: {},
    majAtK: {},
    length: { unit: allTokens ? "tokens" : "chars" },
    finishReasons,
    seconds: (performance.now() - started) / 1000,
    results,
  };
  if (options.name) summary.name = options.name;
  if (greedy) {
    summary.greedyPass1 = mean(results.map((x) => (x.greedy!.correct ? 1 : 0)));
    summary.length.greedy = lengthStats(results.map((x) => x.greedy!.length));
  }
  if (n > 0) {
    summary.avgAtN = mean(results.map((x) => x.numCorrect / n));
    for (const k of ks) summary.passAtK[k] = mean(results.map((x) => x.passAtK[k]));
    for (const k of majKs) summary.majAtK[k] = mean(results.map((x) => (x.majAtK[k].correct ? 1 : 0)));
    summary.length.sampled = lengthStats(results.flatMap((x) => x.samples.map((s) => s.length)));
  }
  if (options.print !== false) {
    const print = typeof options.print === "function" ? options.print : (t: string) => console.log(t);
    print(formatEvalTable(summary));
  }
  return summary;
}

const pct = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? "-" : `${(100 * x).toFixed(1)}%`);

function lengthLine(s: LengthStats): string {
  return `mean ${s.mean.toFixed(1)} · p50 ${Math.round(s.p50)} · p90 ${Math.round(s.p90)} · max ${s.max}`;
}

/** The summary as a two-column text table. */
export function formatEvalTable(s: EvalSummary): string {
  const rows: [string, string][] = [];
  rows.push(["problems", String(s.problems)]);
  if (s.greedyPass1 !== undefined) rows.push(["greedy pass@1", pct(s.greedyPass1)]);
  if (s.avgAtN !== undefined) rows.push([`avg@${s.samples}`, pct(s.avgAtN)]);
  for (const [k, v] of Object.entries(s.passAtK)) rows.push([`pass@${k}`, pct(v)]);
  for (const [k, v] of Object.entries(s.majAtK)) rows.push([`maj@${k}`, pct(v)]);
  if (s.length.greedy) rows.push([`greedy length (${s.length.unit})`, lengthLine(s.length.greedy)]);
  if (s.length.sampled) rows.push([`sampled length (${s.length.unit})`, lengthLine(s.length.sampled)]);
  const total = s.finishReasons.eos + s.finishReasons.stop + s.finishReasons.length + (s.finishReasons.repetition ?? 0);
  rows.push(["truncated (length)", total > 0 ? pct(s.finishReasons.length / total) : "-"]);
  if (s.finishReasons.repetition) rows.push(["stopped looping (repetition)", pct(s.finishReasons.repetition / total)]);
  rows.push(["time", `${s.seconds.toFixed(1)}s`]);
  const w = Math.max(...rows.map((r) => r[0].length));
  const title = s.name ? `${s.name}\n` : "";
  return title + rows.map(([a, b]) => `${a.padEnd(w)}  ${b}`).join("\n");
}
