// Shared by the model-facing subcommands (eval, generate, curate): open a checkpoint (+ optional PEFT adapter) on the
// GPU as a WebGpuGenerator, load problems (a dataset file or the synthetic task), and build prompts in the format
// the model expects. Every failure names the path or line that was wrong and what to pass instead.
import { existsSync, readFileSync, realpathSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
// The GPU and data packages are imported when a command runs, not when the CLI starts (`nr --help` stays fast).
import type { Gpu } from "@nr/kernels";
import type { Engine } from "@nr/autograd";
import type { Decoder, ModelConfig, ModelTokenizer } from "@nr/model";
import type { LoraModel } from "@nr/lora";
import type { WebGpuGenerator } from "@nr/rollout";
import type { FewShotExample, MathRecord } from "@nr/data";
import { DEFAULT_CONFIG, type TrainConfig } from "../run/config.js";
import { kvCacheProblem } from "../kv-fit.js";

/** @nr/lora's ADAPTER_CONFIG: the file that marks a PEFT adapter folder. */
const ADAPTER_CONFIG = "adapter_config.json";

/** A user error: the CLI prints its message (no stack) and exits with code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Model + adapter
// ---------------------------------------------------------------------------------------------------------------

export interface OpenModelOptions {
  /** HF checkpoint folder (config.json, *.safetensors, tokenizer.json). */
  model: string;
  /** PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors), e.g. runs/NAME/checkpoints/step-N. */
  adapter?: string;
  /** Context window for generation (default: the generator's). */
  contextLength?: number;
  /** Base weights: "nf4" quantises the linear layers at load, as a QLoRA run trains (default: the adapter's run
   * config model.quant when known, else "none"). */
  quant?: "none" | "nf4";
  /**
   * The generation this command will run: rows decoded together and tokens per row (prompt + new tokens; a lower
   * bound when the prompts are not encoded yet), and the flags that set them. Checked against the adapter's
   * binding limit before the weights load (kvCacheProblem).
   */
  kvCache?: { rows: number; tokens: number; what: string; knobs: string };
}

export interface OpenedModel {
  gpu: Gpu;
  engine: Engine;
  decoder: Decoder;
  tokenizer: ModelTokenizer;
  generator: WebGpuGenerator;
  /** The LoRA wrapper when an adapter was loaded (adapter name "adapter", selected, not training). */
  lora: LoraModel | null;
  modelDir: string;
  adapterDir: string | null;
  /** The run folder's config.json when the adapter sits in `<run>/checkpoints/step-N` of an `nr train` run. */
  runConfig: TrainConfig | null;
  /** How the base's linear weights are held. */
  quant: "none" | "nf4";
  close(): void;
}

/** Fails with a clear message unless `dir` is a folder holding `file`. */
function requireDirWith(dir: string, file: string, what: string, flag: string): string {
  const abs = resolve(dir);
  if (!existsSync(abs)) throw new UsageError(`${flag} ${dir}: no such folder (expected ${what})`);
  if (!statSync(abs).isDirectory()) throw new UsageError(`${flag} ${dir}: not a folder (expected ${what})`);
  if (!existsSync(join(abs, file))) throw new UsageError(`${flag} ${dir}: no ${file} there (expected ${what})`);
  return abs;
}

/**
 * The folder of the `nr train` run an adapter folder would belong to, or null. An `nr train` run keeps adapters in
 * `<run>/best` and `<run>/checkpoints/step-N/adapter`; `<run>/checkpoints/step-N` itself is accepted too.
 */
export function runDirOfAdapter(adapterDir: string): string | null {
  const abs = resolve(adapterDir);
  const up = (p: string, n: number): string => (n === 0 ? p : up(dirname(p), n - 1));
  return basename(abs) === "best" ? dirname(abs)
    : basename(abs) === "adapter" && basename(up(abs, 2)) === "checkpoints" ? up(abs, 3)
    : basename(dirname(abs)) === "checkpoints" ? up(abs, 2)
    : null;
}

/** The config.json of the `nr train` run an adapter folder belongs to (see {@link runDirOfAdapter}), or null. */
export function runConfigOfAdapter(adapterDir: string): TrainConfig | null {
  const runDir = runDirOfAdapter(adapterDir);
  if (runDir === null) return null;
  const cfg = join(runDir, "config.json");
  if (!existsSync(cfg)) return null;
  let parsed: TrainConfig;
  try {
    parsed = JSON.parse(readFileSync(cfg, "utf8")) as TrainConfig;
  } catch (e) {
    // The adapter's prompt format and base quantisation come from here: guessing them would skew every result.
    throw new UsageError(`${cfg} (the config of the run this adapter belongs to) is not valid JSON (${(e as Error).message}): restore it, or copy the adapter folder out of the run and pass --prompt-format and --quant`);
  }
  // A run's resolved config, not some other config.json (e.g. an HF checkpoint's) that happens to sit there.
  return parsed !== null && typeof parsed.data === "object" && typeof parsed.rl === "object" && typeof parsed.model === "object" ? parsed : null;
}

export interface ModelPaths {
  modelDir: string;
  adapterDir: string | null;
  runConfig: TrainConfig | null;
  /** The `nr train` run folder of the adapter (when runConfig was found there). */
  runDir: string | null;
}

/** Check the --model / --adapter folders (before any GPU work) and find the adapter's run config. */
export function resolveModelPaths(o: OpenModelOptions): ModelPaths {
  const modelDir = requireDirWith(o.model, "config.json", "a Hugging Face checkpoint folder with config.json, *.safetensors and tokenizer.json", "--model");
  if (!existsSync(join(modelDir, "tokenizer.json"))) throw new UsageError(`--model ${o.model}: no tokenizer.json there (the checkpoint's tokenizer is needed to encode prompts)`);
  // A checkpoint folder of a run (`<run>/checkpoints/step-N`) holds its adapter in `adapter/`.
  const isCheckpoint = o.adapter !== undefined && basename(dirname(resolve(o.adapter))) === "checkpoints" && existsSync(join(o.adapter, "adapter", ADAPTER_CONFIG));
  const adapterArg = isCheckpoint ? join(o.adapter!, "adapter") : o.adapter;
  const adapterDir = adapterArg !== undefined ? requireDirWith(adapterArg, ADAPTER_CONFIG, "a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors), e.g. runs/NAME/best or runs/NAME/checkpoints/step-N", "--adapter") : null;
  const runConfig = adapterDir ? runConfigOfAdapter(adapterDir) : null;
  return { modelDir, adapterDir, runConfig, runDir: runConfig ? runDirOfAdapter(adapterDir!) : null };
}

/** Load a checkpoint (and adapter) onto the GPU (../gpu-session.ts). Call `close()` when done (it destroys the device). */
export async function openModel(o: OpenModelOptions): Promise<OpenedModel> {
  const { modelDir, adapterDir, runConfig } = resolveModelPaths(o);
  const [{ openGpuSession }, { loadPeftAdapter }] = await Promise.all([import("../gpu-session.js"), import("@nr/lora")]);
  const quant = o.quant ?? runConfig?.model.quant ?? "none";
  const kv = o.kvCache;
  const beforeLoad = kv && ((gpu: Gpu, m: ModelConfig) => {
    const problem = kvCacheProblem(m, kv.what, kv.rows, kv.tokens, Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize), kv.knobs);
    if (problem) throw new UsageError(problem);
  });
  const session = await openGpuSession({ modelDir, quant, doubleQuant: runConfig?.model.doubleQuant, dtype: quant === "none" ? runConfig?.model.dtype : undefined, contextLength: o.contextLength, beforeLoad });
  try {
    let lora: LoraModel | null = null;
    if (adapterDir) {
      lora = session.lora();
      try {
        await loadPeftAdapter(lora, adapterDir, "adapter");
      } catch (e) {
        throw new UsageError(`--adapter ${o.adapter}: ${(e as Error).message}`);
      }
      lora.select("adapter");
      lora.setTraining(false);
    }
    const { gpu, engine, decoder, tokenizer, generator } = session;
    return { gpu, engine, decoder, tokenizer, generator, lora, modelDir, adapterDir, runConfig, quant, close: () => session.close() };
  } catch (e) {
    session.close();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Prompts
// ---------------------------------------------------------------------------------------------------------------

export const PROMPT_FORMATS = ["auto", "chat", "qa", "raw", "tir"] as const;
export type PromptFormat = (typeof PROMPT_FORMATS)[number];

/** The `Q: …\nA: ` format `nr train` uses for SFT, RL and its own evals. */
export const qaPrompt = (problem: string) => `Q: ${problem}\nA: `;

export interface Prompter {
  format: Exclude<PromptFormat, "auto">;
  /** What the format is, for the log line. */
  describe: string;
  build(problem: string): string;
}

/**
 * The prompt format an `nr train` run used: its `data.prompt` ("auto" = chat for a checkpoint given by model.dir,
 * qa for a generated model); runs from before that key existed used qa.
 */
export function runPromptFormat(run: TrainConfig): "qa" | "chat" | "tir" {
  const p = (run.data as { prompt?: string }).prompt ?? "qa";
  if (p === "chat" || p === "qa" || p === "tir") return p;
  return run.model.dir ? "chat" : "qa";
}

/**
 * How problems become prompts. `chat`: the checkpoint's chat template (built-in ChatML when it has none) with the
 * step-by-step/boxed system prompt; `qa`: `Q: …\nA: ` (what `nr train` uses for generated models); `raw`: the text
 * as is. `auto`: for an adapter from an `nr train` run folder, the format that run trained with; for a base made by
 * `nr pretrain` (its folder has PRETRAIN.md) `qa`, the format of its whole corpus; else `chat`.
 */
export async function makePrompter(format: PromptFormat, m: Pick<ModelPaths, "modelDir" | "runConfig">, shots: readonly FewShotExample[] = []): Promise<Prompter> {
  const byPretrain = format === "auto" && !m.runConfig && existsSync(join(m.modelDir, "PRETRAIN.md"));
  const f = format !== "auto" ? format : m.runConfig ? runPromptFormat(m.runConfig) : byPretrain ? "qa" : "chat";
  if (f === "qa") return { format: f, describe: `Q: …\\nA: (${byPretrain ? "the format nr pretrain trained this base on" : "nr train's format for generated models"})`, build: qaPrompt };
  if (f === "raw") return { format: f, describe: "raw text", build: (p) => p };
  const { ChatTemplate, buildPrompt } = await import("@nr/data/core");
  let template: InstanceType<typeof ChatTemplate>;
  let describe = "the checkpoint's chat template";
  try {
    template = await ChatTemplate.fromTokenizerDir(m.modelDir);
  } catch {
    template = ChatTemplate.chatml();
    describe = "built-in ChatML (the checkpoint has no chat template)";
  }
  // tir: the same template with the tool-integrated system prompt; the caller attaches the sandbox (nr eval).
  // Few-shot: worked examples as earlier user/assistant turns (chat and tir only; qa and raw refuse them in nr eval).
  const fewShot = shots.length ? `, ${shots.length}-shot` : "";
  if (f === "tir") return { format: "tir", describe: `${describe}, TIR system prompt (python blocks run in the sandbox)${fewShot}`, build: (p) => buildPrompt(template, p, { style: "tir", shots }) };
  return { format: "chat", describe: describe + fewShot, build: (p) => buildPrompt(template, p, { shots }) };
}

// ---------------------------------------------------------------------------------------------------------------
// Problems
// ---------------------------------------------------------------------------------------------------------------

export interface LoadProblemsOptions {
  /** A JSONL/JSON/Parquet file or dataset folder, or "synthetic". */
  data: string;
  /** At most this many problems (the first n). */
  n?: number;
  /** Dataset folder split (train, test, …). */
  split?: string;
  /** Skip bad rows (listing them on stderr) instead of failing on the first. */
  skipBadRows?: boolean;
  /** Synthetic task: seed and difficulty (default: the run's config when known, else the embedded default's). */
  seed?: number;
  syntheticSplit?: "train" | "heldout";
  difficulty?: TrainConfig["data"]["difficulty"];
  warn?: (line: string) => void;
}

/**
 * Problems for eval/generate/curate. A malformed or incomplete row fails with `file:line: reason` (or, with
 * `skipBadRows`, is listed on stderr and skipped).
 */
export async function loadProblems(o: LoadProblemsOptions): Promise<{ records: MathRecord[]; source: string }> {
  if (o.n !== undefined && !(Number.isInteger(o.n) && o.n >= 1)) throw new UsageError(`--n ${o.n}: expected an integer >= 1`);
  if (o.data === "synthetic") {
    const { generateSynthetic } = await import("@nr/data/core");
    const d = o.difficulty ?? DEFAULT_CONFIG.data.difficulty;
    const records = generateSynthetic({ count: o.n ?? 100, seed: o.seed ?? 0, split: o.syntheticSplit ?? "heldout", ...d });
    return { records, source: `synthetic (${o.syntheticSplit ?? "heldout"} split, seed ${o.seed ?? 0}, steps ${d.minSteps}..${d.maxSteps})` };
  }
  if (!existsSync(o.data)) throw new UsageError(`--data ${o.data}: no such file or folder (expected "synthetic" or a .jsonl/.json/.parquet file or dataset folder)`);
  const { DatasetError, formatBadRows, loadDataset } = await import("@nr/data");
  let loaded;
  try {
    loaded = await loadDataset(o.data, { split: o.split, limit: o.n, onBadRow: o.skipBadRows ? "skip" : "error" });
  } catch (e) {
    if (e instanceof DatasetError) throw new UsageError(`${e.message}${e.report.snippet ? `\n  ${e.report.snippet}` : ""}\n(fix the row, or pass --skip-bad-rows to skip such rows)`);
    const msg = (e as Error).message.replace(/; pass the split option$/, "; pick one with --split NAME");
    throw new UsageError(`--data ${o.data}: ${msg}`);
  }
  if (loaded.badRows.length) (o.warn ?? ((l: string) => console.error(l)))(formatBadRows(loaded.badRows));
  if (loaded.records.length === 0) throw new UsageError(`--data ${o.data}: no usable problems${loaded.badRows.length ? ` (${loaded.badRows.length} bad rows skipped)` : ""}`);
  return { records: loaded.records, source: loaded.files.join(", ") };
}

/** The same file after resolving `..`, symlinks and the working directory (a path that does not exist yet as is). */
function realPath(p: string): string {
  return existsSync(p) ? realpathSync(p) : resolve(p);
}

/**
 * Refuse an output file that is one of the command's inputs (`--out X --data X` would replace the data with the
 * results). Each entry is [flag, path]; "synthetic" and absent paths are skipped.
 */
export function refuseOutputsOverInputs(outputs: readonly (readonly [string, string | undefined])[], inputs: readonly (readonly [string, string | undefined])[]): void {
  for (const [flag, file] of outputs) {
    if (file === undefined) continue;
    for (const [inFlag, input] of inputs) {
      if (input !== undefined && input !== "synthetic" && realPath(file) === realPath(input)) throw new UsageError(`${flag} ${file} is the ${inFlag} file: writing it would replace the input; write to another file`);
    }
    for (const [other, path] of outputs) if (other !== flag && path !== undefined && realPath(file) === realPath(path)) throw new UsageError(`${flag} and ${other} name the same file (${file}): give each its own`);
  }
}

/** Parse a number option strictly (yargs turns "abc" into NaN). */
export function checkNumber(flag: string, v: number | undefined, o: { min?: number; max?: number; int?: boolean } = {}): void {
  if (v === undefined) return;
  const bad = !Number.isFinite(v) || (o.int && !Number.isInteger(v)) || (o.min !== undefined && v < o.min) || (o.max !== undefined && v > o.max);
  if (bad) throw new UsageError(`--${flag} ${v}: expected ${o.int ? "an integer" : "a number"}${o.min !== undefined ? ` >= ${o.min}` : ""}${o.max !== undefined ? ` <= ${o.max}` : ""}`);
}

/** The model and sampling flags that eval and generate share. */
export interface SamplingArgs {
  model: string;
  adapter?: string;
  quant?: "none" | "nf4";
  split?: string;
  samples: number;
  temperature: number;
  topP: number;
  maxNewTokens: number;
  seed: number;
  batchSize: number;
  promptFormat: PromptFormat;
  skipBadRows: boolean;
  /** The length-explosion guard with its defaults (@nr/data REPETITION_STOP_DEFAULTS): stop looping completions. */
  repetitionStop?: boolean;
}

/** Check the shared sampling flags (not --seed: each command checks it where its other rules allow). */
export function checkSamplingArgs(a: SamplingArgs): void {
  checkNumber("samples", a.samples, { int: true, min: 1 });
  checkNumber("temperature", a.temperature, { min: 0 });
  checkNumber("top-p", a.topP, { min: 0, max: 1 });
  checkNumber("max-new-tokens", a.maxNewTokens, { int: true, min: 1 });
  checkNumber("batch-size", a.batchSize, { int: true, min: 1 });
}
