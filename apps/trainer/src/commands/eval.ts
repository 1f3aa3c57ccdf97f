// `nr eval`: greedy pass@1 (and avg@n / pass@k / maj@k with --samples > 1) of a checkpoint, optionally with a LoRA
// adapter, on a dataset or the synthetic task. Generation runs on the GPU (WebGpuGenerator), grading with the
// @nr/rewards verifier through @nr/data's evaluate(). Prints a table and writes a JSON summary.
import { join, resolve } from "node:path";
import type { Argv, CommandModule } from "yargs";
import type { EvalSummary, MathRecord } from "@nr/data";
import type { TirStats } from "@nr/sandbox";
import { writeJsonAtomic } from "../run/folder.js";
import { DATA_SPLIT_FILE, runSplitOf, type DataSplitFile } from "../run/data.js";
import { attachTirSandbox } from "./sandbox.js";
import { checkNumber, checkSamplingArgs, loadProblems, makePrompter, openModel, PROMPT_FORMATS, refuseOutputsOverInputs, resolveModelPaths, UsageError, type PromptFormat, type SamplingArgs } from "./common.js";

export interface EvalArgs extends SamplingArgs {
  data: string;
  n: number;
  /** Few-shot: this many worked examples from `shotsFrom` before each problem (0 = zero-shot). */
  shots?: number;
  shotsFrom?: string;
  /** With an adapter trained on this data file: also evaluate the records its run trained on. */
  includeTrain?: boolean;
  out: string;
  details?: string;
  progress?: boolean;
}

export interface EvalReport {
  model: string;
  adapter: string | null;
  data: string;
  promptFormat: string;
  quant: "none" | "nf4";
  adapterName: string;
  options: Omit<EvalArgs, "model" | "adapter" | "quant" | "data" | "out" | "details" | "progress">;
  summary: Omit<EvalSummary, "results">;
  /** --prompt-format tir: the sandbox's tool calls (per completion, errors, timeouts). */
  tool?: TirStats;
  out: string;
  details: string | null;
}

export interface CommandIo {
  log: (line: string) => void;
  err: (line: string) => void;
}

export const consoleIo: CommandIo = { log: (l) => console.log(l), err: (l) => console.error(l) };

export async function runEval(a: EvalArgs, io: CommandIo = consoleIo): Promise<EvalReport> {
  checkNumber("n", a.n, { int: true, min: 1 });
  checkSamplingArgs(a);
  if (a.samples > 1 && a.temperature === 0) throw new UsageError(`--samples ${a.samples} at --temperature 0 would give ${a.samples} identical completions per problem; pass a sampling temperature (e.g. --temperature 0.6) or --samples 1`);
  checkNumber("seed", a.seed, { int: true, min: 0 });
  // Paths and data first: a bad flag or row fails before any GPU work.
  refuseOutputsOverInputs([["--out", a.out], ["--details", a.details]], [["--data", a.data]]);
  const paths = resolveModelPaths({ model: a.model, adapter: a.adapter });
  const run = paths.runConfig;
  // The adapter's run held records out of this very file: only those were never trained on.
  const split = paths.runDir && a.data !== "synthetic" ? runSplitOf(paths.runDir, a.data) : null;
  const loaded = await loadProblems({
    data: a.data,
    n: split && !a.includeTrain ? undefined : a.n,
    split: a.split,
    skipBadRows: a.skipBadRows,
    // The synthetic held-out set of an nr-train run: the run's seed and difficulty.
    seed: a.data === "synthetic" && run ? run.seed : a.seed,
    difficulty: run?.data.difficulty,
    warn: io.err,
  });
  const records = split ? heldOutOnly(loaded.records, split, join(paths.runDir!, DATA_SPLIT_FILE), a, io) : loaded.records;
  const source = loaded.source;
  const shots = await loadShots(a, records, io);
  // a greedy row per problem, plus --samples rows when sampling (as below); prompts count ≥ 1 token until encoded
  const kvRows = a.batchSize * (1 + (a.samples > 1 || a.temperature > 0 ? a.samples : 0));
  const kvCache = { rows: kvRows, tokens: 1 + a.maxNewTokens, what: "eval (prompt ≥ 1 token + --max-new-tokens)", knobs: "--batch-size or --samples (sequences decoded together: batch-size × (1 + samples)), or --max-new-tokens" };
  const m = await openModel({ model: a.model, adapter: a.adapter, quant: a.quant, kvCache });
  let tir: Awaited<ReturnType<typeof attachTirSandbox>> | null = null;
  try {
    const prompter = await makePrompter(a.promptFormat, m, shots);
    if (shots.length && prompter.format !== "chat" && prompter.format !== "tir") throw new UsageError(`--shots needs --prompt-format chat or tir (the examples are chat turns); this run's prompts are ${prompter.format}`);
    if (prompter.format === "tir") tir = await attachTirSandbox(m.generator, io.err);
    io.err(`eval: ${records.length} problems from ${source}; prompts: ${prompter.describe}; adapter ${m.gpu.adapterName}${m.quant === "nf4" ? "; NF4 base" : ""}${m.adapterDir ? `; LoRA ${m.adapterDir}` : ""}`);
    // Greedy pass@1 always; sampled completions when asked for several, or for one at a temperature above 0.
    const sampled = a.samples > 1 || a.temperature > 0 ? a.samples : 0;
    const { evaluate, formatEvalTable } = await import("@nr/data/core");
    const summary = await evaluate(m.generator, records, {
      prompt: (r) => prompter.build(r.problem),
      greedy: true,
      samples: sampled,
      temperature: a.temperature,
      topP: a.topP,
      maxNewTokens: a.maxNewTokens,
      ...(a.repetitionStop ? { repetitionStop: {} } : {}),
      seed: a.seed,
      batchSize: a.batchSize,
      outputPath: a.details,
      progress: a.progress ?? true,
      print: false,
      name: `eval ${m.adapterDir ?? m.modelDir}`,
    });
    io.log(formatEvalTable(summary));
    if (tir) io.log(tir.describe());
    const { results: _results, ...rest } = summary;
    const out = resolve(a.out);
    const report: EvalReport = {
      model: m.modelDir,
      adapter: m.adapterDir,
      data: source,
      promptFormat: prompter.format,
      quant: m.quant,
      adapterName: m.gpu.adapterName,
      options: { split: a.split, n: a.n, includeTrain: a.includeTrain ?? false, samples: a.samples, temperature: a.temperature, topP: a.topP, maxNewTokens: a.maxNewTokens, repetitionStop: a.repetitionStop ?? false, seed: a.seed, batchSize: a.batchSize, promptFormat: a.promptFormat, skipBadRows: a.skipBadRows, ...(shots.length ? { shots: shots.length, shotsFrom: a.shotsFrom } : {}) },
      summary: rest,
      ...(tir ? { tool: tir.tool.stats } : {}),
      out,
      details: a.details ? resolve(a.details) : null,
    };
    writeJsonAtomic(out, report);
    io.err(`eval: wrote ${out}${a.details ? ` and ${resolve(a.details)} (one line per problem)` : ""}`);
    return report;
  } finally {
    await tir?.close();
    m.close();
  }
}

/** The records a run held out (by id), first n; with --include-train all of them, with a warning. */
function heldOutOnly<R extends { id: string }>(records: R[], split: DataSplitFile, splitFile: string, a: EvalArgs, io: CommandIo): R[] {
  const held = new Set(split.eval);
  const trainIds = new Set(split.train);
  const trained = records.filter((r) => trainIds.has(r.id)).length;
  if (a.includeTrain) {
    io.err(`eval: warning: ${trained} of these ${records.length} problems were trained on by the adapter's run (${splitFile})`);
    return records;
  }
  const kept = records.filter((r) => held.has(r.id)).slice(0, a.n);
  io.err(`eval: the adapter's run held ${held.size} records of ${a.data} out (${splitFile}) and trained on ${trained}: evaluating ${kept.length} held-out ones (--include-train for every record)`);
  return kept;
}

/**
 * --shots K examples with worked solutions from --shots-from, picked by --seed; none of them is a problem being
 * evaluated (ids and problem texts are excluded), so a shot never gives an answer away.
 */
async function loadShots(a: EvalArgs, evaluated: readonly MathRecord[], io: CommandIo): Promise<MathRecord[]> {
  const k = a.shots ?? 0;
  checkNumber("shots", k, { int: true, min: 0 });
  if (k === 0) return [];
  if (!a.shotsFrom) throw new UsageError(`--shots ${k} needs --shots-from FILE (problems with worked solutions, e.g. the train split)`);
  const { records: pool } = await loadProblems({ data: a.shotsFrom, skipBadRows: a.skipBadRows, warn: io.err });
  const texts = new Set(evaluated.map((r) => r.problem.trim()));
  const { selectFewShot } = await import("@nr/data/core");
  try {
    return selectFewShot(pool.filter((r) => !texts.has(r.problem.trim())), k, { seed: a.seed, exclude: evaluated.map((r) => r.id) });
  } catch (err) {
    throw new UsageError(`--shots-from ${a.shotsFrom}: ${(err as Error).message.replace(/^selectFewShot: /, "")} (rows with a solution that are not evaluated problems)`);
  }
}

/** Options shared by eval and generate: the model, the adapter, the prompt format, sampling. */
export const modelOptions = <T>(y: Argv<T>) =>
  y
    .option("model", { type: "string", demandOption: true, describe: "Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json)" })
    .option("adapter", { type: "string", describe: "PEFT LoRA adapter folder, e.g. runs/NAME/checkpoints/step-N" })
    .option("prompt-format", { choices: PROMPT_FORMATS, default: "auto" as PromptFormat, describe: "chat: the checkpoint's chat template; qa: 'Q: …\\nA: '; raw: as is; tir: chat with the tool-integrated prompt, python blocks run in the sandbox; auto: what the adapter's nr-train run used (its data.prompt), else qa for a base made by nr pretrain (PRETRAIN.md in its folder), else chat" })
    .option("max-new-tokens", { type: "number", default: 256, describe: "token budget per completion" })
    .option("temperature", { type: "number", default: 0, describe: "sampling temperature (0 = greedy)" })
    .option("top-p", { type: "number", default: 0.95, describe: "nucleus mass when sampling" })
    .option("seed", { type: "number", default: 0, describe: "sampling seed (and the synthetic task's seed)" })
    .option("repetition-stop", { type: "boolean", default: false, describe: "length-explosion guard: end a completion whose last ≥ 64 tokens are one block (≤ 64 tokens) repeated ≥ 4 times (finish reason \"repetition\")" })
    .option("quant", { choices: ["none", "nf4"] as const, describe: "base weights: nf4 = 4-bit NormalFloat as QLoRA trains (default: the adapter's run config, else none)" });

export const evalCommand: CommandModule<object, EvalArgs> = {
  command: "eval",
  describe: "Greedy pass@1 (and avg@n with --samples) of a model + adapter on a dataset or the synthetic task, on the GPU",
  builder: (y) =>
    modelOptions(y)
      .option("data", { type: "string", default: "synthetic", describe: '"synthetic" (held-out split) or a .jsonl/.json/.parquet file or dataset folder' })
      .option("split", { type: "string", describe: "split of a dataset folder (train, test, …)" })
      .option("n", { type: "number", default: 100, describe: "evaluate the first n problems" })
      .option("shots", { type: "number", default: 0, describe: "few-shot: worked examples before each problem as earlier chat turns (chat/tir prompts)" })
      .option("shots-from", { type: "string", describe: "file or dataset the --shots examples come from (rows with a solution; evaluated problems are never picked)" })
      .option("samples", { type: "number", default: 1, describe: "sampled completions per problem for avg@n, pass@k, maj@k (needs --temperature > 0)" })
      .option("batch-size", { type: "number", default: 16, describe: "problems per generation batch" })
      .option("out", { type: "string", default: "eval.json", describe: "JSON summary written here" })
      .option("details", { type: "string", describe: "also write one JSON line per problem (prompt, completions, verdicts) here" })
      .option("skip-bad-rows", { type: "boolean", default: false, describe: "skip malformed dataset rows (listed on stderr) instead of failing" })
      .option("include-train", { type: "boolean", default: false, describe: "with an adapter whose nr-train run held records out of this --data file: evaluate every record, not only the held-out ones" })
      .example("$0 eval --model runs/default/model --adapter runs/default/checkpoints/step-70 --n 50", "greedy pass@1 of a trained adapter on 50 held-out synthetic problems")
      .example("$0 eval --model ~/Qwen2.5-0.5B-Instruct --data gsm8k_test.jsonl --samples 8 --temperature 0.6 --out gsm8k.json", "pass@1 greedy, avg@8 / pass@k / maj@8 sampled") as unknown as Argv<EvalArgs>,
  handler: async (a) => {
    await runEval(a);
  },
};
