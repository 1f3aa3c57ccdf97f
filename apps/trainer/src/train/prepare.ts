// Everything a run needs before its GPU starts: the config (fresh, or the run's own with --resume overrides), the data
// and its held-out split, the run folder (locked; a new run's only once the data passed), the model folder (generated
// when the config asks for one) and the token-level inputs, each checked with a message naming what to fix.
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { generateModel } from "@nr/model";
import { syntheticWords } from "@nr/data";
import { RunFolder, resolveModelDir, type TrainConfig } from "../run/index.js";
import { loadRunData, recordDataSplit, type RunData } from "../run/data.js";
import { resumeConfig, type ResumeRecord } from "../run/resume.js";
import { checkInputs, type RunInputs } from "../run/inputs.js";
import type { PipelineOptions } from "./pipeline.js";

/** Tokenizer words of the generated default model: the synthetic task's words get single tokens. */
export function taskTokenizerWords(): string[] {
  const words = syntheticWords();
  return [...words, ...words.map((w) => ` ${w}`), "Q:", "\nA:", " =", " +", " -", " *", " /", "\\boxed"];
}

/**
 * Tokenizer words of a base made for the expression task (`nr pretrain --task expression`): every whole number below
 * 100, with and without a leading space, is one token, so `7 + 5 = 12` is one lookup from two number tokens to a third
 * (with digit tokens a model this small must also compose digits, and chains cost twice the tokens), and `\boxed{` is
 * one token. They come first: a BPE merge's rank is its order, and `\boxed{` must win over the words' `bo` merge.
 */
export function expressionTokenizerWords(): string[] {
  const numbers = Array.from({ length: 100 }, (_, n) => String(n));
  return [...numbers.map((n) => ` ${n}`), ...numbers, "\\boxed{", ...taskTokenizerWords()];
}

/** The tokenizer words of a base made for a synthetic task kind (`nr pretrain --task`, or a run's `model.generate`). */
export function tokenizerWordsFor(kind: "words" | "expression" = "words"): string[] {
  return kind === "expression" ? expressionTokenizerWords() : taskTokenizerWords();
}


export interface PreparedRun {
  run: RunFolder;
  config: TrainConfig;
  /** The checkpoint folder a --resume continues from (null: a fresh run, or no checkpoint yet). */
  resumeFrom: string | null;
  data: RunData;
  modelDir: string;
  inputs: RunInputs;
}

/** The config of a fresh run, or (--resume) the locked run folder with its config and latest checkpoint. */
function openConfig(configIn: TrainConfig | null, opts: PipelineOptions, cwd: string, log: (l: string) => void): { run: RunFolder | null; config: TrainConfig; resumeFrom: string | null } {
  if (!opts.resumeDir) {
    if (!configIn) throw new Error("runPipeline: a config is needed unless resuming");
    return { run: null, config: configIn, resumeFrom: null };
  }
  if (opts.overwrite) throw new Error("--overwrite and --resume contradict each other: --resume continues the run, --overwrite deletes it");
  // Locks the folder, then checks the saved config with the overrides (refusing unsafe ones) before writing.
  const { run, config, checkpoint } = RunFolder.resume(resolve(cwd, opts.resumeDir), { config: (saved, from) => resumeConfig(saved, opts.overrides ?? [], from?.step ?? 0, { cwd }) });
  const resumeFrom = checkpoint?.dir ?? null;
  log(resumeFrom ? `resuming ${run.dir} from ${resumeFrom}` : `resuming ${run.dir}: no complete checkpoint yet, starting from step 0`);
  const last = (config as { resumes?: ResumeRecord[] }).resumes?.at(-1);
  if (last && opts.overrides?.length) log(`resume: from step ${last.step}: ${last.changes.map((c) => `${c.key} ${JSON.stringify(c.from)} → ${JSON.stringify(c.to)}`).join(", ")} (recorded in config.json)`);
  return { run, config, resumeFrom };
}

/** See the module comment. Throws (exit code 2 in the CLI) before the GPU starts when anything is wrong. */
export async function prepareRun(configIn: TrainConfig | null, opts: PipelineOptions, cwd: string, log: (l: string) => void): Promise<PreparedRun> {
  const opened = openConfig(configIn, opts, cwd, log);
  const { config, resumeFrom } = opened;
  // Data and tokens are checked before a new run folder is written.
  const data = await loadRunData(config, cwd, log);
  let modelDir = config.model.dir ? resolveModelDir(config.model.dir, cwd) : undefined;
  let inputs = modelDir ? await checkInputs(config, modelDir, data) : null;
  const run = opened.run ?? RunFolder.open(config, { ifExists: opts.overwrite ? "overwrite" : "error", cwd });
  recordDataSplit(run.dir, data.split, resumeFrom !== null);

  if (!modelDir) {
    const g = config.model.generate!;
    modelDir = join(run.dir, "model");
    if (!existsSync(join(modelDir, "config.json"))) {
      log(`generating a Qwen2-architecture model (hidden ${g.hidden}, ${g.layers} layers, ${g.heads}/${g.kvHeads} heads) in ${modelDir}`);
      await generateModel(
        modelDir,
        { architecture: "qwen2", hiddenSize: g.hidden, intermediateSize: g.intermediate, numLayers: g.layers, numHeads: g.heads, numKvHeads: g.kvHeads, tieWordEmbeddings: true },
        { seed: config.seed, dtype: "f32", init: { std: 0.2 }, tokenizer: { words: tokenizerWordsFor(config.data.difficulty.kind) } },
      );
    }
  }
  inputs ??= await checkInputs(config, modelDir, data);
  return { run, config, resumeFrom, data, modelDir, inputs };
}
