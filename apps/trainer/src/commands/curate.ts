// `nr curate`: @nr/data's curation pipeline on a dataset file — verifier answer check → exact dedup → near dedup
// (sentence embeddings) → contamination against eval sets (n-grams, optionally embeddings) → learnable-zone
// difficulty filter (samples from the current model on the GPU). Writes the kept problems as JSONL and a JSON report
// of what each step removed and why.
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Argv, CommandModule } from "yargs";
import type { CurateOptions, CurationResult, MathRecord, OnnxEmbedder } from "@nr/data";
import { writeJsonAtomic } from "../run/folder.js";
import { consoleIo, type CommandIo } from "./eval.js";
import { checkNumber, loadProblems, makePrompter, openModel, PROMPT_FORMATS, refuseOutputsOverInputs, resolveModelPaths, UsageError, type OpenedModel, type PromptFormat } from "./common.js";

export interface CurateArgs {
  data: string;
  split?: string;
  n?: number;
  out: string;
  report?: string;
  skipBadRows: boolean;
  answerCheck: boolean;
  dedup: boolean;
  nearDedup: boolean;
  embedder: string;
  nearThreshold: number;
  sameAnswer: boolean;
  evalSet?: string[];
  ngram: number;
  ngramThreshold: number;
  model?: string;
  adapter?: string;
  quant?: "none" | "nf4";
  samples: number;
  minPass: number;
  maxPass: number;
  temperature: number;
  maxNewTokens: number;
  promptFormat: PromptFormat;
  seed: number;
  progress?: boolean;
}

export interface CurateReport {
  data: string;
  out: string;
  input: number;
  kept: number;
  steps: { step: string; before: number; after: number; removed: CurationResult["steps"][number]["removed"] }[];
  difficulty?: { histogram: number[]; passCounts: Record<string, number> };
}

/** "hash": the built-in hashed bag-of-words ONNX model; a folder: an ONNX sentence encoder + its WordPiece vocab.txt. */
async function makeEmbedder(spec: string): Promise<OnnxEmbedder> {
  const { buildHashEmbeddingModel, hashTokenizer, OnnxEmbedder, WordPieceTokenizer } = await import("@nr/data");
  const sessionOptions = { intraOpNumThreads: 1 };
  if (spec === "hash") return OnnxEmbedder.create(buildHashEmbeddingModel(), { tokenizer: hashTokenizer(), sessionOptions });
  if (!existsSync(spec) || !statSync(spec).isDirectory()) throw new UsageError(`--embedder ${spec}: expected "hash" or a folder with model.onnx (or onnx/model.onnx) and vocab.txt (a MiniLM-class sentence encoder)`);
  const model = [join(spec, "model.onnx"), join(spec, "onnx", "model.onnx")].find((p) => existsSync(p));
  if (!model) throw new UsageError(`--embedder ${spec}: no model.onnx or onnx/model.onnx there`);
  if (!existsSync(join(spec, "vocab.txt"))) throw new UsageError(`--embedder ${spec}: no vocab.txt there (the WordPiece vocabulary of the encoder)`);
  const tok = await WordPieceTokenizer.fromVocabFile(join(spec, "vocab.txt"));
  return OnnxEmbedder.create(model, { tokenizer: tok.tokenizer, sessionOptions });
}

/** --report, default `<out without .jsonl>.report.json`. */
const reportPathOf = (a: CurateArgs) => resolve(a.report ?? resolve(a.out).replace(/\.jsonl?$/i, "") + ".report.json");

export async function runCurate(a: CurateArgs, io: CommandIo = consoleIo): Promise<CurateReport> {
  // Curate writes its output and report last; neither may replace an input it reads.
  refuseOutputsOverInputs([["--out", a.out], ["--report", reportPathOf(a)]], [["--data", a.data], ...(a.evalSet ?? []).map((f) => ["--eval-set", f] as const)]);
  checkNumber("near-threshold", a.nearThreshold, { min: 0, max: 1 });
  checkNumber("ngram", a.ngram, { int: true, min: 1 });
  checkNumber("ngram-threshold", a.ngramThreshold, { min: 0, max: 1 });
  checkNumber("samples", a.samples, { int: true, min: 1 });
  checkNumber("min-pass", a.minPass, { int: true, min: 0 });
  checkNumber("max-pass", a.maxPass, { int: true, min: 0 });
  checkNumber("temperature", a.temperature, { min: 0 });
  checkNumber("max-new-tokens", a.maxNewTokens, { int: true, min: 1 });
  if (a.model === undefined && a.adapter !== undefined) throw new UsageError("--adapter needs --model (the base checkpoint the adapter was trained on)");
  if (a.model !== undefined && !(a.minPass <= a.maxPass && a.maxPass <= a.samples)) throw new UsageError(`the difficulty filter needs --min-pass <= --max-pass <= --samples (got ${a.minPass}, ${a.maxPass}, ${a.samples})`);
  if (a.model !== undefined) resolveModelPaths({ model: a.model, adapter: a.adapter });
  const { curate, formatCurationReport, writeJsonl } = await import("@nr/data");
  const { records, source } = await loadProblems({ data: a.data, n: a.n, split: a.split, skipBadRows: a.skipBadRows, seed: a.seed, syntheticSplit: "train", warn: io.err });
  const evalSets: Record<string, readonly MathRecord[]> = {};
  for (const f of a.evalSet ?? []) evalSets[f] = (await loadProblems({ data: f, skipBadRows: a.skipBadRows, warn: io.err })).records;
  const embedder = a.nearDedup ? await makeEmbedder(a.embedder) : null;
  let model: OpenedModel | null = null;
  try {
    const opts: CurateOptions = { answerCheck: a.answerCheck, exactDedup: a.dedup, log: (l) => io.err(`curate: ${l}`) };
    if (embedder) opts.nearDedup = { embedder, threshold: a.nearThreshold, requireSameAnswer: a.sameAnswer };
    if (Object.keys(evalSets).length) opts.contamination = { evalSets, ngram: a.ngram, ngramThreshold: a.ngramThreshold, ...(embedder ? { embedder, embeddingThreshold: a.nearThreshold } : {}) };
    if (a.model !== undefined) {
      model = await openModel({ model: a.model, adapter: a.adapter, quant: a.quant });
      const prompter = await makePrompter(a.promptFormat, model);
      io.err(`curate: difficulty filter with ${model.adapterDir ?? model.modelDir} on ${model.gpu.adapterName} (${a.samples} samples at temperature ${a.temperature}; keep ${a.minPass}..${a.maxPass} correct; prompts: ${prompter.describe})`);
      opts.difficulty = { generator: model.generator, n: a.samples, minPass: a.minPass, maxPass: a.maxPass, temperature: a.temperature, maxNewTokens: a.maxNewTokens, seed: a.seed, prompt: (r) => prompter.build(r.problem), progress: a.progress ?? true };
    }
    io.err(`curate: ${records.length} problems from ${source}`);
    const result = await curate(records, opts);
    const out = resolve(a.out);
    await writeJsonl(out, result.records);
    const report: CurateReport = { data: source, out, input: records.length, kept: result.records.length, steps: result.steps.map((s) => ({ step: s.step, before: s.before, after: s.after, removed: s.removed })) };
    if (result.difficulty) report.difficulty = { histogram: result.difficulty.histogram, passCounts: result.difficulty.passCounts };
    const reportPath = reportPathOf(a);
    writeJsonAtomic(reportPath, report);
    io.log(formatCurationReport(result));
    io.log(`kept ${result.records.length} of ${records.length} → ${out} (report: ${reportPath})`);
    return report;
  } finally {
    model?.close();
    await embedder?.release();
  }
}

export const curateCommand: CommandModule<object, CurateArgs> = {
  command: "curate",
  describe: "Curate a math dataset: answer check, exact/near dedup, contamination vs eval sets, difficulty filter with a model",
  builder: (y) =>
    y
      .option("data", { type: "string", demandOption: true, describe: '.jsonl/.json/.parquet file or dataset folder ("synthetic": the train split)' })
      .option("split", { type: "string", describe: "split of a dataset folder" })
      .option("n", { type: "number", describe: "only the first n problems" })
      .option("out", { type: "string", demandOption: true, describe: "kept problems, as JSONL ({id, problem, answer, solution?, source, meta?})" })
      .option("report", { type: "string", describe: "JSON report of every removal and its reason (default: <out>.report.json)" })
      .option("skip-bad-rows", { type: "boolean", default: false, describe: "skip malformed rows (listed on stderr) instead of failing" })
      .option("answer-check", { type: "boolean", default: true, describe: "drop problems whose gold answer the verifier cannot parse (--no-answer-check to skip)" })
      .option("dedup", { type: "boolean", default: true, describe: "drop exact duplicates of the normalised problem text (--no-dedup to skip)" })
      .option("near-dedup", { type: "boolean", default: false, describe: "drop near duplicates by sentence-embedding cosine" })
      .option("embedder", { type: "string", default: "hash", describe: '"hash" (built-in hashed bag of words) or a folder with model.onnx + vocab.txt (MiniLM-class)' })
      .option("near-threshold", { type: "number", default: 0.9, describe: "cosine at or above which two problems are duplicates" })
      .option("same-answer", { type: "boolean", default: false, describe: "near duplicates must also have equal gold answers" })
      .option("eval-set", { type: "string", array: true, describe: "eval set file(s): drop training problems that overlap them (repeatable)" })
      .option("ngram", { type: "number", default: 8, describe: "word n-gram length for the contamination check" })
      .option("ngram-threshold", { type: "number", default: 0.5, describe: "shared n-gram fraction that flags contamination" })
      .option("model", { type: "string", describe: "checkpoint for the difficulty filter (runs only when given)" })
      .option("adapter", { type: "string", describe: "PEFT LoRA adapter for the difficulty filter's model" })
      .option("quant", { choices: ["none", "nf4"] as const, describe: "difficulty filter: base weights as NF4 (default: the adapter's run config, else none)" })
      .option("samples", { type: "number", default: 8, describe: "difficulty filter: samples per problem" })
      .option("min-pass", { type: "number", default: 2, describe: "difficulty filter: keep problems solved at least this often" })
      .option("max-pass", { type: "number", default: 5, describe: "… and at most this often" })
      .option("temperature", { type: "number", default: 1.0, describe: "difficulty filter: sampling temperature" })
      .option("max-new-tokens", { type: "number", default: 256, describe: "difficulty filter: token budget per sample" })
      .option("prompt-format", { choices: PROMPT_FORMATS, default: "auto" as PromptFormat, describe: "difficulty filter prompts (see nr eval --help)" })
      .option("seed", { type: "number", default: 0, describe: "sampling seed" })
      .example("$0 curate --data train.jsonl --out curated.jsonl --near-dedup --eval-set gsm8k_test.jsonl", "verifier check, dedup, near dedup, decontaminate against GSM8K test")
      .example("$0 curate --data train.jsonl --out zone.jsonl --model ~/Qwen2.5-0.5B-Instruct --samples 8 --min-pass 2 --max-pass 5", "keep the learnable zone (2–5 of 8 samples correct)") as unknown as Argv<CurateArgs>,
  handler: async (a) => {
    await runCurate(a);
  },
};
