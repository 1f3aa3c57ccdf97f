// `nr generate`: completions of a model (+ adapter) on the GPU for --prompt texts or the problems of a dataset,
// printed to stdout and/or written as JSONL (one line per completion).
import { resolve } from "node:path";
import type { Argv, CommandModule } from "yargs";
import type { GenerationRequest } from "@nr/data";
import { consoleIo, modelOptions, type CommandIo } from "./eval.js";
import { checkNumber, checkSamplingArgs, loadProblems, makePrompter, openModel, refuseOutputsOverInputs, resolveModelPaths, UsageError, type SamplingArgs } from "./common.js";

export interface GenerateArgs extends SamplingArgs {
  prompt?: string[];
  data?: string;
  n?: number;
  out?: string;
  quiet: boolean;
}

/** One line of the output JSONL. */
export interface GeneratedLine {
  id: string;
  /** Index of the completion among the samples of its prompt. */
  sample: number;
  prompt: string;
  completion: string;
  tokens: number;
  finish_reason: string;
  gold?: string;
}

export async function runGenerate(a: GenerateArgs, io: CommandIo = consoleIo): Promise<GeneratedLine[]> {
  const prompts = a.prompt ?? [];
  if (prompts.length === 0 && a.data === undefined) throw new UsageError("nothing to generate: pass --prompt TEXT (repeatable) or --data FILE|synthetic");
  if (prompts.length > 0 && a.data !== undefined) throw new UsageError("pass either --prompt or --data, not both");
  if (prompts.some((p) => p.trim() === "")) throw new UsageError("--prompt is empty: pass the text to complete");
  checkSamplingArgs(a);
  checkNumber("seed", a.seed, { int: true, min: 0 });
  refuseOutputsOverInputs([["--out", a.out]], [["--data", a.data]]);
  const paths = resolveModelPaths({ model: a.model, adapter: a.adapter });
  const items =
    a.data !== undefined
      ? (await loadProblems({ data: a.data, n: a.n ?? (a.data === "synthetic" ? 10 : undefined), split: a.split, skipBadRows: a.skipBadRows, seed: a.seed, difficulty: paths.runConfig?.data.difficulty, warn: io.err })).records.map((r) => ({ id: r.id, text: r.problem, gold: r.answer as string | undefined }))
      : prompts.map((p, i) => ({ id: `prompt-${i + 1}`, text: p, gold: undefined as string | undefined }));
  const { JsonlWriter } = await import("@nr/data");
  // prompts are encoded after the load: 1 token stands in for the shortest, so the check cannot refuse what fits
  const kvCache = { rows: a.batchSize * a.samples, tokens: 1 + a.maxNewTokens, what: "generate (prompt ≥ 1 token + --max-new-tokens)", knobs: "--batch-size or --samples (sequences decoded together: batch-size × samples), or --max-new-tokens" };
  const m = await openModel({ model: a.model, adapter: a.adapter, quant: a.quant, kvCache });
  const writer = a.out ? new JsonlWriter(resolve(a.out)) : null;
  try {
    const prompter = await makePrompter(a.promptFormat, m);
    io.err(`generate: ${items.length} prompt(s) × ${a.samples}; prompts: ${prompter.describe}; ${a.temperature === 0 ? "greedy" : `temperature ${a.temperature}, top-p ${a.topP}`}; adapter ${m.gpu.adapterName}${m.adapterDir ? `; LoRA ${m.adapterDir}` : ""}`);
    const all: GeneratedLine[] = [];
    for (let s = 0; s < items.length; s += a.batchSize) {
      const batch = items.slice(s, s + a.batchSize);
      const requests: GenerationRequest[] = batch.map((it, j) => ({ prompt: prompter.build(it.text), n: a.samples, temperature: a.temperature, topP: a.topP, maxNewTokens: a.maxNewTokens, ...(a.repetitionStop ? { repetitionStop: {} } : {}), seed: a.seed + s + j }));
      const res = await m.generator.generate(requests);
      const lines: GeneratedLine[] = [];
      batch.forEach((it, j) =>
        res[j].completions.forEach((c, k) => {
          const line: GeneratedLine = { id: it.id, sample: k, prompt: requests[j].prompt, completion: c.text, tokens: c.tokens ?? [...c.text].length, finish_reason: c.finishReason };
          if (it.gold !== undefined) line.gold = it.gold;
          lines.push(line);
        }),
      );
      if (!a.quiet) for (const l of lines) io.log(`--- ${l.id}${a.samples > 1 ? ` #${l.sample}` : ""} (${l.tokens} tokens, ${l.finish_reason})\n${l.completion}`);
      if (writer) await writer.write(lines);
      all.push(...lines);
    }
    if (writer) io.err(`generate: wrote ${all.length} completion(s) to ${resolve(a.out!)}`);
    return all;
  } finally {
    await writer?.close();
    m.close();
  }
}

export const generateCommand: CommandModule<object, GenerateArgs> = {
  command: "generate",
  describe: "Completions of a model + adapter on the GPU for --prompt texts or a dataset's problems (stdout and/or JSONL)",
  builder: (y) =>
    modelOptions(y)
      .option("prompt", { type: "string", array: true, describe: "text to complete (repeatable); formatted by --prompt-format" })
      .option("data", { type: "string", describe: '"synthetic" or a .jsonl/.json/.parquet file or dataset folder: complete its problems' })
      .option("split", { type: "string", describe: "split of a dataset folder" })
      .option("n", { type: "number", describe: "first n problems of --data (default: all; 10 for synthetic)" })
      .option("samples", { type: "number", default: 1, describe: "completions per prompt" })
      .option("batch-size", { type: "number", default: 16, describe: "prompts per generation batch" })
      .option("out", { type: "string", describe: "write one JSON line per completion here" })
      .option("skip-bad-rows", { type: "boolean", default: false, describe: "skip malformed dataset rows instead of failing" })
      .option("quiet", { type: "boolean", default: false, describe: "do not print completions (with --out)" })
      .example('$0 generate --model runs/default/model --adapter runs/default/checkpoints/step-70 --prompt "Ann has 3 apples and buys 4 more. How many apples does Ann have?"', "one greedy completion")
      .example("$0 generate --model DIR --data problems.jsonl --n 20 --samples 4 --temperature 0.8 --out completions.jsonl --quiet", "4 samples each for 20 problems, to JSONL") as unknown as Argv<GenerateArgs>,
  handler: async (a) => {
    await runGenerate(a);
  },
};
