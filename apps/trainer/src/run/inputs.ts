// The token-level inputs of a training run, built and checked before the GPU starts: the tokenizer, the prompt
// format, the SFT examples (hybrid-thinking targets), and the rules that need tokens to check (some SFT example fits
// sft.maxSeqLen; the longest prompt plus each completion budget fits the model's context window).
import { join } from "node:path";
import type { MathRecord } from "@nr/data";
import type { ModelTokenizer } from "@nr/model";
import type { TrainConfig } from "./config.js";
import { DataError, type RunData } from "./data.js";
import { checkpointContextWindow, contextProblems } from "./config/rules.js";

/** One SFT example: prompt and completion token ids (the same shape as train/loop's SftExampleIds). */
export interface SftExampleTokens {
  promptIds: number[];
  completionIds: number[];
}

export interface RunInputs {
  tok: ModelTokenizer;
  promptStyle: "qa" | "chat" | "tir";
  encodePrompt: (problem: string) => number[];
  pad: number;
  eos: number;
  /** Train records with a worked solution (the SFT records). */
  sftRecords: MathRecord[];
  /** Their examples that fit sft.maxSeqLen (a seeded draw of sft.maxExamples of them when set). */
  sftExamples: SftExampleTokens[];
  /** How many targets answer with an empty <think></think> (sft.noThinkFraction). */
  noThinkTargets: number;
}

/**
 * `max` of `examples`, kept in their original order, picked by `shuffle` (a seeded shuffle of their indices); all of
 * them when `max` is unset or not smaller. The same seed picks the same worked solutions, so a resumed run sees them.
 */
export function drawExamples<T>(examples: T[], max: number | undefined, shuffle: (indices: number[]) => number[]): T[] {
  if (max === undefined || max >= examples.length) return examples;
  const keep = shuffle(examples.map((_, i) => i)).slice(0, max).sort((a, b) => a - b);
  return keep.map((i) => examples[i]);
}

/** Tokenize the run's prompts and SFT targets; throws DataError listing every problem found. */
export async function checkInputs(config: TrainConfig, modelDir: string, data: RunData): Promise<RunInputs> {
  const [{ loadTokenizer }, { buildMessages, hybridSftTarget, parseSftTarget, Rng }] = await Promise.all([import("@nr/model"), import("@nr/data")]);
  const tok = await loadTokenizer(modelDir);
  const promptStyle = config.data.prompt === "auto" ? (config.model.dir ? "chat" : "qa") : config.data.prompt;
  const encodePrompt = (problem: string) =>
    promptStyle === "qa" ? tok.encode(`Q: ${problem}\nA: `) : tok.encodeChat(buildMessages(problem, { style: promptStyle === "tir" ? "tir" : "cot" }).map((m) => ({ role: m.role, content: m.content })), { addGenerationPrompt: true });
  const pad = tok.padTokenId ?? tok.stopTokenIds[0] ?? 0;
  const eos = tok.stopTokenIds[0];
  // sft.noThinkFraction: that share of the targets answers with an empty <think></think> (a hybrid-thinking cold start).
  const trainPrompts = new Map(data.train.map((r) => [r, encodePrompt(r.problem)]));
  const sftRecords = data.train.filter((r) => r.solution);
  const sftTargets = sftRecords.map((r) => hybridSftTarget(r, { noThinkFraction: config.sft.noThinkFraction ?? 0, seed: config.seed }));
  const noThinkTargets = sftTargets.filter((t) => parseSftTarget(t)?.reasoning === "").length;
  const allSft = sftRecords.map((r, i) => ({ promptIds: trainPrompts.get(r)!, completionIds: [...tok.encode(sftTargets[i]), eos] }));
  const fitting = allSft.filter((x) => x.promptIds.length + x.completionIds.length <= config.sft.maxSeqLen);
  const sftExamples = drawExamples(fitting, config.sft.maxExamples, (ids) => new Rng(config.seed * 104_729 + 17).shuffle(ids));

  const problems: string[] = [];
  if (config.sft.enabled && sftExamples.length === 0) {
    problems.push(
      sftRecords.length === 0
        ? `sft.enabled = true but none of the ${data.train.length} train records of data.source ${config.data.source} has a worked solution (GSM8K answers with "####", or a "solution" field): use a dataset with solutions, or skip SFT (nr rl, or --sft.enabled false)`
        : `sft.maxSeqLen = ${config.sft.maxSeqLen} is shorter than every SFT example (prompt + target; the shortest has ${Math.min(...allSft.map((x) => x.promptIds.length + x.completionIds.length))} tokens): raise --sft.maxSeqLen`,
    );
  }
  const ctx = checkpointContextWindow(modelDir);
  if (ctx !== null) {
    let longestPrompt = 0;
    for (const ids of trainPrompts.values()) longestPrompt = Math.max(longestPrompt, ids.length);
    for (const r of data.heldout) longestPrompt = Math.max(longestPrompt, encodePrompt(r.problem).length);
    problems.push(...contextProblems(config, ctx, `max_position_embeddings in ${join(modelDir, "config.json")}`, longestPrompt));
  }
  if (problems.length) throw new DataError(problems.length === 1 ? problems[0] : `${problems.length} problems:\n  - ${problems.join("\n  - ")}`);
  return { tok, promptStyle, encodePrompt, pad, eos, sftRecords, sftExamples, noThinkTargets };
}
