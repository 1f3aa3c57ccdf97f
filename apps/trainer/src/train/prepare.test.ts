// A run whose config asks for a generated model gets the tokenizer of its synthetic task's kind, the same one
// `nr pretrain --task` gives: number tokens for the expression kind, the word tokenizer otherwise.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadTokenizer } from "@nr/model";
import { DEFAULT_CONFIG, GENERATED_MODEL_DEFAULTS } from "../run/config/defaults.js";
import type { TrainConfig } from "../run/index.js";
import { prepareRun } from "./prepare.js";

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "nr-prepare-"));
});
afterAll(() => rm(root, { recursive: true, force: true }));

/** The default config with a generated model, the given task kind and a small data split. */
function generatedRun(kind: "words" | "expression"): TrainConfig {
  const c = structuredClone(DEFAULT_CONFIG) as TrainConfig;
  c.name = `gen-${kind}`;
  c.model = { ...c.model, dir: undefined, generate: { ...GENERATED_MODEL_DEFAULTS, hidden: 32, layers: 1, heads: 2, kvHeads: 1, intermediate: 64 } };
  c.data = { ...c.data, trainSize: 20, evalSize: 10, difficulty: { ...c.data.difficulty, kind } };
  c.output = { ...c.output, dir: root };
  return c;
}

describe("model.generate", () => {
  it("gives an expression-task run number tokens, a word-problem run the word tokenizer", async () => {
    const pieces = async (kind: "words" | "expression", text: string) => {
      const { run, modelDir } = await prepareRun(generatedRun(kind), {}, root, () => {});
      run.close();
      const tok = await loadTokenizer(modelDir);
      return tok.encode(text).map((id) => tok.decode([id]));
    };
    expect(await pieces("expression", "Q: 7 + 15 - 3 = ?")).toEqual(["Q:", " 7", " +", " 15", " -", " 3", " =", " ", "?"]);
    expect(await pieces("words", " 15")).toHaveLength(3);
  }, 60_000);
});
