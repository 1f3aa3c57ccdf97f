// `nr pretrain` in miniature: a few full-parameter steps on a tiny model. The output must be a loadable HF checkpoint
// that differs from its snapshots, the run must be reproducible byte for byte from its seed, and PRETRAIN.md must give
// a command line that names only real options.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGpu, type Gpu } from "@nr/kernels";
import { Engine, GpuBackend } from "@nr/autograd";
import { loadDecoder, loadTokenizer } from "@nr/model";
import { pretrain, pretrainCorpus, pretrainText, type PretrainOptions } from "./pretrain.js";
import { expressionFacts, generateSynthetic } from "@nr/data";

let root: string;
let gpu: Gpu;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "nr-pretrain-"));
  gpu = await createGpu();
});
afterAll(async () => {
  gpu?.destroy();
  await rm(root, { recursive: true, force: true });
});

const tiny = (out: string): PretrainOptions => ({
  out,
  seed: 3,
  steps: 6,
  batchSize: 4,
  lr: 5e-3,
  hidden: 32,
  layers: 1,
  heads: 2,
  kvHeads: 1,
  intermediate: 64,
  problems: 40,
  minSteps: 1,
  maxSteps: 2,
  maxOperand: 9,
  maxValue: 30,
  snapshotEvery: 3,
  log: () => {},
});

describe("nr pretrain (miniature, on the GPU)", () => {
  it("writes a loadable checkpoint and a snapshot, reproducibly, with a clean reproduce line", async () => {
    // As yargs passes them: kebab-case aliases, `_` and `$0` beside the named options.
    const a = await pretrain({ ...tiny(join(root, "a")), ...{ _: ["pretrain"], $0: "nr", "max-steps": 2 } } as PretrainOptions);
    expect(Number.isFinite(a.finalLoss)).toBe(true);
    expect(await readdir(join(root, "a.snapshots"))).toEqual(["step-3"]);

    const weights = async (dir: string) => new Uint8Array(await readFile(join(dir, "model.safetensors")));
    const final = await weights(a.dir);
    const snap = await weights(join(root, "a.snapshots", "step-3"));
    expect(Buffer.compare(Buffer.from(final), Buffer.from(snap))).not.toBe(0);

    // Same seed and options → the same bytes (the data order, init and GPU reductions are deterministic).
    await pretrain(tiny(join(root, "b")));
    expect(Buffer.compare(Buffer.from(final), Buffer.from(await weights(join(root, "b"))))).toBe(0);

    const md = await readFile(join(a.dir, "PRETRAIN.md"), "utf8");
    const line = /`pnpm nr pretrain ([^`]*)`/.exec(md)?.[1] ?? "";
    expect(line).toContain("--seed 3 --steps 6 --batch-size 4");
    expect(line).toContain("--min-steps 1 --max-steps 2 --max-operand 9 --max-value 30 --snapshot-every 3");
    expect(line).not.toMatch(/--_|\$0|undefined/);
    const snapMd = await readFile(join(root, "a.snapshots", "step-3", "PRETRAIN.md"), "utf8");
    expect(snapMd).toContain("The weights after step 3 of the 6-step run made by");

    const e = new Engine(new GpuBackend(gpu));
    const { config } = await loadDecoder(e, a.dir);
    expect([config.hiddenSize, config.numLayers]).toEqual([32, 1]);

    // --init continues from that checkpoint: same architecture whatever the flags say, other weights, and the
    // reproduce line names the checkpoint instead of the architecture flags.
    const c = await pretrain({ ...tiny(join(root, "c")), init: a.dir, hidden: 64, layers: 3, directShare: 0.5, snapshotEvery: 0 });
    const { config: cc } = await loadDecoder(e, c.dir);
    expect([cc.hiddenSize, cc.numLayers]).toEqual([32, 1]);
    expect(Buffer.compare(Buffer.from(final), Buffer.from(await weights(c.dir)))).not.toBe(0);
    const cLine = /`pnpm nr pretrain ([^`]*)`/.exec(await readFile(join(c.dir, "PRETRAIN.md"), "utf8"))?.[1] ?? "";
    expect(cLine).toContain(`--direct-share 0.5 --init ${a.dir}`);
    expect(cLine).not.toMatch(/--hidden|--layers|--heads|--intermediate/);
    await expect(pretrain({ ...tiny(join(root, "d")), init: root })).rejects.toThrow(/--init .*no model.safetensors/);
  }, 120_000);

  it("gives an expression-task base one token per number below 100 and one for \\boxed{", async () => {
    const out = join(root, "expr");
    await pretrain({ ...tiny(out), task: "expression", minSteps: 2, maxSteps: 2, maxValue: 20, steps: 1, snapshotEvery: 0 });
    const tok = await loadTokenizer(out);
    const pieces = (s: string) => tok.encode(s).map((id) => tok.decode([id]));
    expect(pieces("Q: 7 + 15 - 3 = ?")).toEqual(["Q:", " 7", " +", " 15", " -", " 3", " =", " ", "?"]);
    expect(pieces("<think>\n22 - 3 = 19\n</think>\n\\boxed{19}")).toEqual(["<think>", "\n", "22", " -", " 3", " =", " 19", "\n", "</think>", "\n", "\\boxed{", "19", "}"]);
    // Numbers of 100 and more fall back to digits; the word-problem base keeps its tokenizer.
    expect(pieces(" 105")).toEqual([" 10", "5"]);
    await pretrain({ ...tiny(join(root, "words")), steps: 1, snapshotEvery: 0 });
    expect((await loadTokenizer(join(root, "words"))).encode(" 15")).toHaveLength(3);
    // --init checks the tokenizer of the task being pretrained: a words base cannot continue as an expression base
    // (it has no number tokens), while an expression base holds every word of the words task.
    await expect(pretrain({ ...tiny(join(root, "expr-from-words")), task: "expression", init: join(root, "words"), steps: 1, snapshotEvery: 0 })).rejects.toThrow(/lacks tokens of the expression task's tokenizer \(" 0", " 1".*--task expression/);
    await pretrain({ ...tiny(join(root, "words-from-expr")), init: out, steps: 1, snapshotEvery: 0 });
  }, 60_000);

  it("answers the directShare of multi-step problems directly, never a one-step one", () => {
    const records = generateSynthetic({ count: 400, seed: 6, minSteps: 1, maxSteps: 3, maxOperand: 9, maxValue: 30 });
    const texts = records.map((r, i) => pretrainText(r, i, 4, 0.7));
    const direct = (t: string) => /\nA: The answer is \d+\.$/.test(t);
    const multi = records.map((r) => Number(r.meta?.steps) > 1);
    const share = texts.filter((t, i) => multi[i] && direct(t)).length / multi.filter(Boolean).length;
    expect(share).toBeGreaterThan(0.62);
    expect(share).toBeLessThan(0.78);
    expect(texts.filter((t, i) => !multi[i] && direct(t))).toEqual([]);
    // The pick depends on the record, not its position; 0 and 1 are exact.
    expect(pretrainText(records[5], 99, 4, 0.7) === texts[5] || !direct(texts[5])).toBe(true);
    expect(records.filter((r, i) => multi[i] && direct(pretrainText(r, i, 4, 1))).length).toBe(multi.filter(Boolean).length);
    expect(records.some((r, i) => direct(pretrainText(r, i, 4, 0)))).toBe(false);
  });

  it("writes one example in four in the reasoning format", () => {
    const records = generateSynthetic({ count: 8, seed: 5, minSteps: 2, maxSteps: 2, maxOperand: 9, maxValue: 30 });
    const texts = records.map((r, i) => pretrainText(r, i));
    expect(texts.filter((t) => t.includes("\\boxed{")).length).toBe(2);
    expect(texts[0]).toMatch(/^Q: .*\nA: \d+ [-+*/] \d+ = \d+, \d+ [-+*/] \d+ = \d+\. The answer is \d+\.$/s);
    expect(texts[3]).toContain(`\\boxed{${records[3].answer}}`);
  });

  it("builds the expression corpus: the chains of the train split plus every fact of the range, shuffled", () => {
    const o = { seed: 2, problems: 300, minSteps: 2, maxSteps: 3, maxOperand: 6, maxValue: 12, task: "expression" as const };
    const facts = expressionFacts({ maxOperand: 6, maxValue: 12 });
    const corpus = pretrainCorpus({ ...o, factCopies: 3 });
    expect(corpus).toHaveLength(300 + 3 * facts.length);
    const count = new Map<string, number>();
    for (const r of corpus) count.set(r.problem, (count.get(r.problem) ?? 0) + 1);
    for (const f of facts) expect(count.get(f.problem), f.problem).toBe(3);
    const chains = corpus.filter((r) => Number(r.meta?.steps) >= 2);
    expect(chains).toHaveLength(300);
    expect(chains.every((r) => r.meta?.split === "train" && /^\d+( [+-] \d+){2,3} = \?$/.test(r.problem))).toBe(true);
    // Shuffled (facts are not all at the end), and the same seed gives the same order.
    expect(corpus.slice(0, 300).some((r) => r.meta?.steps === 1)).toBe(true);
    expect(pretrainCorpus({ ...o, factCopies: 3 })).toEqual(corpus);
    expect(pretrainCorpus({ ...o, factCopies: 0 })).toEqual(generateSynthetic({ count: 300, seed: 1_000_005, split: "train", kind: "expression", minSteps: 2, maxSteps: 3, maxOperand: 6, maxValue: 12 }));
    expect(() => pretrainCorpus({ ...o, task: "words", factCopies: 2 })).toThrow(/--fact-copies needs --task expression/);
    expect(() => pretrainCorpus({ ...o, factCopies: 1.5 })).toThrow(/--fact-copies 1.5 must be a whole number/);
  });
});
