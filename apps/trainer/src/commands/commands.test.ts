// nr eval / generate / curate on a tiny generated Qwen2 model, on the GPU (lavapipe on a CPU-only machine).
// Independent references: a LoRA adapter must generate exactly what the float64 host merge W + s·B·A of the same
// adapter generates without one; eval's verdicts must agree with @nr/rewards verify() run here on generate's text.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateModel, writeSafetensors, encodeFloats, type TensorToWrite } from "@nr/model";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, LORA_TARGETS, mergeToCheckpoint, moduleKey, peftConfig, peftKey, resolveLoraConfig, type HostAdapter } from "@nr/lora";
import { verify } from "@nr/rewards";
import { generateSynthetic } from "@nr/data";
import { runEval, type EvalArgs } from "./eval.js";
import { runGenerate, type GenerateArgs } from "./generate.js";
import { runCurate, type CurateArgs } from "./curate.js";
import { makePrompter, resolveModelPaths, runConfigOfAdapter } from "./common.js";
import { DEFAULT_CONFIG, GENERATED_MODEL_DEFAULTS } from "../run/config.js";

const H = 32, HEADS = 2, KV = 1, I = 64, D = H / HEADS;
let root: string;
let base: string;
let adapter: string;
let merged: string;
const quiet = { log: () => {}, err: () => {} };

/** A random PEFT adapter (nonzero B, so it changes the model), written without the GPU; and its host copy. */
async function writeRandomAdapter(dir: string, seed: number): Promise<HostAdapter> {
  let s = seed >>> 0;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
  const config = resolveLoraConfig({ r: 4, alpha: 8, targets: [...LORA_TARGETS] });
  const dims: Record<string, [number, number]> = { q_proj: [H, HEADS * D], k_proj: [H, KV * D], v_proj: [H, KV * D], o_proj: [HEADS * D, H], gate_proj: [H, I], up_proj: [H, I], down_proj: [I, H] };
  const modules: HostAdapter["modules"] = new Map();
  const tensors: TensorToWrite[] = [];
  for (const target of LORA_TARGETS) {
    const [inF, outF] = dims[target];
    const A = Float64Array.from({ length: config.r * inF }, () => 0.4 * rand());
    const B = Float64Array.from({ length: outF * config.r }, () => 0.4 * rand());
    modules.set(moduleKey(0, target), { layer: 0, target, A, B, inF, outF });
    tensors.push({ name: peftKey(0, target, "A"), dtype: "F32", shape: [config.r, inF], data: () => encodeFloats(A, "F32") });
    tensors.push({ name: peftKey(0, target, "B"), dtype: "F32", shape: [outF, config.r], data: () => encodeFloats(B, "F32") });
  }
  mkdirSync(dir, { recursive: true });
  await writeSafetensors(join(dir, ADAPTER_WEIGHTS), tensors);
  writeFileSync(join(dir, ADAPTER_CONFIG), JSON.stringify(peftConfig(config, base)));
  return { config, modules };
}

const gen = (o: Partial<GenerateArgs>): GenerateArgs => ({ model: base, samples: 1, temperature: 0, topP: 1, maxNewTokens: 12, seed: 0, batchSize: 16, promptFormat: "qa", skipBadRows: false, quiet: true, ...o });
const ev = (o: Partial<EvalArgs>): EvalArgs => ({ model: base, data: "synthetic", n: 4, samples: 1, temperature: 0, topP: 1, maxNewTokens: 12, seed: 0, batchSize: 16, promptFormat: "qa", out: join(root, "eval.json"), skipBadRows: false, progress: false, ...o });

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "nr-cmd-"));
  base = join(root, "base");
  await generateModel(base, { architecture: "qwen2", hiddenSize: H, intermediateSize: I, numLayers: 1, numHeads: HEADS, numKvHeads: KV, tieWordEmbeddings: true }, { seed: 3, dtype: "f32", init: { std: 0.3 } });
  adapter = join(root, "adapter");
  const host = await writeRandomAdapter(adapter, 11);
  merged = join(root, "merged");
  await mergeToCheckpoint(base, host, merged);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("nr generate", () => {
  it("with --adapter generates what the host-merged checkpoint generates, and differs from the bare base", async () => {
    const prompt = ["Ann has 3 apples.", "Ben buys 12 pens and gives 5 away. How many pens are left?"];
    const withAdapter = await runGenerate(gen({ adapter, prompt, promptFormat: "raw" }), quiet);
    const viaMerge = await runGenerate(gen({ model: merged, prompt, promptFormat: "raw" }), quiet);
    const bare = await runGenerate(gen({ prompt, promptFormat: "raw" }), quiet);
    expect(withAdapter.map((l) => l.prompt)).toEqual(prompt);
    expect(withAdapter.map((l) => l.completion)).toEqual(viaMerge.map((l) => l.completion));
    expect(withAdapter.map((l) => l.completion)).not.toEqual(bare.map((l) => l.completion));
    for (const l of withAdapter) expect(l.tokens === 12 ? "length" : "eos").toBe(l.finish_reason);
  });

  it("writes JSONL (samples × prompts) and prints each completion", async () => {
    const out = join(root, "gen.jsonl");
    const printed: string[] = [];
    const lines = await runGenerate(gen({ data: "synthetic", n: 3, samples: 2, temperature: 0.9, out, quiet: false }), { log: (l) => printed.push(l), err: () => {} });
    const file = readFileSync(out, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(file).toHaveLength(6);
    expect(file).toEqual(JSON.parse(JSON.stringify(lines)));
    expect(file.map((l) => l.sample)).toEqual([0, 1, 0, 1, 0, 1]);
    const syn = generateSynthetic({ count: 3, seed: 0, split: "heldout", ...DEFAULT_CONFIG.data.difficulty });
    expect(file.filter((l) => l.sample === 0).map((l) => l.prompt)).toEqual(syn.map((r) => `Q: ${r.problem}\nA: `));
    expect(file.filter((l) => l.sample === 0).map((l) => l.gold)).toEqual(syn.map((r) => r.answer));
    expect(printed).toHaveLength(6);
    expect(printed[0]).toContain(lines[0].completion);
  });

  it("bad input: nothing to generate, both sources, a missing model, an adapter folder without adapter_config.json", async () => {
    await expect(runGenerate(gen({}), quiet)).rejects.toThrow(/pass --prompt TEXT .* or --data/);
    await expect(runGenerate(gen({ prompt: ["x"], data: "synthetic" }), quiet)).rejects.toThrow(/either --prompt or --data/);
    await expect(runGenerate(gen({ model: join(root, "nope"), prompt: ["x"] }), quiet)).rejects.toThrow(/--model .*nope: no such folder/);
    await expect(runGenerate(gen({ adapter: root, prompt: ["x"] }), quiet)).rejects.toThrow(/--adapter .*: no adapter_config.json there/);
  });
});

describe("nr eval", () => {
  it("greedy pass@1 agrees with verify() on generate's completions (gold = the model's own answer for half the problems)", async () => {
    const syn = generateSynthetic({ count: 6, seed: 5, split: "heldout", maxSteps: 1 });
    const completions = await runGenerate(gen({ adapter, prompt: syn.map((r) => r.problem) }), quiet);
    // Even problems: gold = what the verifier extracts from the model's greedy completion (so they must count as
    // correct); odd ones: an answer the 12-token completions cannot contain.
    const rows = syn.map((r, i) => ({ id: r.id, problem: r.problem, answer: i % 2 === 0 ? verify(completions[i].completion, "0").predicted! : "424242" }));
    for (const r of rows) expect(typeof r.answer).toBe("string");
    const data = join(root, "half.jsonl");
    writeFileSync(data, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
    const details = join(root, "details.jsonl");
    const rep = await runEval(ev({ adapter, data, n: 6, details }), quiet);
    expect(rep.summary.problems).toBe(6);
    expect(rep.summary.greedyPass1).toBeCloseTo(0.5, 12);
    const per = readFileSync(details, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(per.map((p) => p.greedy.text)).toEqual(completions.map((c) => c.completion));
    expect(per.map((p) => p.greedy.correct)).toEqual([true, false, true, false, true, false]);
    for (const p of per) expect(p.greedy.correct).toBe(verify(p.greedy.text, p.gold).correct);
    // The JSON summary on disk.
    const onDisk = JSON.parse(readFileSync(join(root, "eval.json"), "utf8"));
    expect(onDisk.summary.greedyPass1).toBe(rep.summary.greedyPass1);
    expect(onDisk.adapter).toBe(adapter);
    expect(onDisk.promptFormat).toBe("qa");
  });

  it("--samples > 1 adds avg@n, pass@k and maj@k; at temperature 0 it is refused", async () => {
    const rep = await runEval(ev({ samples: 3, temperature: 0.9, n: 2 }), quiet);
    expect(rep.summary.samples).toBe(3);
    expect(rep.summary.avgAtN).toBeGreaterThanOrEqual(0);
    expect(Object.keys(rep.summary.passAtK)).toEqual(["1", "2", "3"]);
    expect(Object.keys(rep.summary.majAtK)).toEqual(["3"]);
    await expect(runEval(ev({ samples: 4 }), quiet)).rejects.toThrow(/--samples 4 at --temperature 0 .*pass a sampling temperature/);
  });

  it("--repetition-stop reaches the generator: recorded in the report, counted, never a longer completion", async () => {
    const on = await runEval(ev({ n: 3, maxNewTokens: 64, repetitionStop: true, details: join(root, "rep-on.jsonl") }), quiet);
    const off = await runEval(ev({ n: 3, maxNewTokens: 64, details: join(root, "rep-off.jsonl") }), quiet);
    expect(on.options.repetitionStop).toBe(true);
    expect(off.options.repetitionStop).toBe(false);
    expect(on.summary.finishReasons.repetition).toBeGreaterThanOrEqual(0);
    const lens = (f: string) => readFileSync(join(root, f), "utf8").trim().split("\n").map((l) => JSON.parse(l).greedy);
    lens("rep-on.jsonl").forEach((g, i) => {
      const free = lens("rep-off.jsonl")[i];
      if (g.finishReason === "repetition") expect(free.text.startsWith(g.text) && g.length < free.length).toBe(true);
      else expect(g).toEqual(free);
    });
  });

  it("bad data: a missing file, and a malformed JSONL line named by file:line (or skipped with --skip-bad-rows)", async () => {
    await expect(runEval(ev({ data: join(root, "missing.jsonl") }), quiet)).rejects.toThrow(/--data .*missing\.jsonl: no such file/);
    const bad = join(root, "bad.jsonl");
    writeFileSync(bad, `{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": "4"}\n{"question": "3+3?", "answer": 6\n{"question": "4+4?", "answer": "8"}\n`);
    await expect(runEval(ev({ data: bad }), quiet)).rejects.toThrow(new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}:3: malformed JSON[\\s\\S]*--skip-bad-rows`));
    const warned: string[] = [];
    const rep = await runEval(ev({ data: bad, skipBadRows: true }), { log: () => {}, err: (l) => warned.push(l) });
    expect(rep.summary.problems).toBe(3);
    expect(warned.join("\n")).toMatch(/bad\.jsonl:3: malformed JSON/);
    await expect(runEval(ev({ n: 0 }), quiet)).rejects.toThrow(/--n 0: expected an integer >= 1/);
  });
});

describe("prompt formats", () => {
  it("auto follows the nr-train run an adapter comes from (its data.prompt), else the chat template", async () => {
    const runDir = join(root, "runs", "r1");
    const step = join(runDir, "checkpoints", "step-3");
    mkdirSync(step, { recursive: true });
    const cfg = (data: object, model: object) => writeFileSync(join(runDir, "config.json"), JSON.stringify({ ...DEFAULT_CONFIG, data: { ...DEFAULT_CONFIG.data, ...data }, model }));
    const fmt = async () => (await makePrompter("auto", { modelDir: base, runConfig: runConfigOfAdapter(step) })).format;
    cfg({ prompt: "auto" }, { generate: GENERATED_MODEL_DEFAULTS });
    expect(await fmt()).toBe("qa");
    cfg({ prompt: "auto" }, { dir: base });
    expect(await fmt()).toBe("chat");
    cfg({ prompt: "qa" }, { dir: base });
    expect(await fmt()).toBe("qa");
    expect(runConfigOfAdapter(adapter)).toBeNull(); // not inside <run>/checkpoints/
    const chat = await makePrompter("auto", { modelDir: base, runConfig: null });
    expect(chat.format).toBe("chat");
    expect(chat.build("What is 2 + 3?")).toMatch(/<\|im_start\|>user\nWhat is 2 \+ 3\?<\|im_end\|>\n<\|im_start\|>assistant\n$/);
    expect((await makePrompter("qa", { modelDir: base, runConfig: null })).build("x")).toBe("Q: x\nA: ");
    expect((await makePrompter("raw", { modelDir: base, runConfig: null })).build("x")).toBe("x");
    // A base made by nr pretrain (PRETRAIN.md beside its weights) was trained on Q:/A: texts only: auto is qa there.
    const pretrained = join(root, "pretrained");
    mkdirSync(pretrained, { recursive: true });
    for (const f of readdirSync(base)) copyFileSync(join(base, f), join(pretrained, f));
    writeFileSync(join(pretrained, "PRETRAIN.md"), "# made by nr pretrain\n");
    expect(await makePrompter("auto", { modelDir: pretrained, runConfig: null })).toMatchObject({ format: "qa", describe: expect.stringContaining("nr pretrain") });
    expect((await makePrompter("chat", { modelDir: pretrained, runConfig: null })).format).toBe("chat");
  });
});

describe("adapters of an nr-train run", () => {
  it("best/ and checkpoints/step-N[/adapter] find the run's config; a checkpoint folder resolves to its adapter/", async () => {
    const runDir = join(root, "runs", "r2");
    const bestDir = join(runDir, "best");
    const stepDir = join(runDir, "checkpoints", "step-7");
    await writeRandomAdapter(bestDir, 12);
    await writeRandomAdapter(join(stepDir, "adapter"), 13);
    const runCfg = { ...DEFAULT_CONFIG, name: "r2", data: { ...DEFAULT_CONFIG.data, prompt: "qa", difficulty: { ...DEFAULT_CONFIG.data.difficulty, maxSteps: 2 } } };
    writeFileSync(join(runDir, "config.json"), JSON.stringify(runCfg));
    for (const a of [bestDir, stepDir, join(stepDir, "adapter")]) {
      const paths = resolveModelPaths({ model: base, adapter: a });
      expect(paths.runConfig?.name).toBe("r2");
      expect(paths.runConfig?.data.difficulty.maxSteps).toBe(2);
      expect(paths.adapterDir).toBe(a === bestDir ? bestDir : join(stepDir, "adapter"));
    }
    // An HF checkpoint's config.json beside a folder named best/ is not a run config.
    const hf = join(root, "hf");
    await writeRandomAdapter(join(hf, "best"), 14);
    writeFileSync(join(hf, "config.json"), JSON.stringify({ architectures: ["Qwen2ForCausalLM"], hidden_size: 8 }));
    expect(runConfigOfAdapter(join(hf, "best"))).toBeNull();
    expect(() => resolveModelPaths({ model: base, adapter: join(runDir, "checkpoints") })).toThrow(/--adapter .*no adapter_config\.json there/);
  });
});

describe("NF4 base", () => {
  it("--quant nf4 loads the base as 4-bit NormalFloat; an adapter from a QLoRA run gets it by default", async () => {
    const runDir = join(root, "runs", "qlora");
    const step = join(runDir, "checkpoints", "step-1");
    mkdirSync(step, { recursive: true });
    for (const f of ["adapter_config.json", "adapter_model.safetensors"]) writeFileSync(join(step, f), readFileSync(join(adapter, f)));
    writeFileSync(join(runDir, "config.json"), JSON.stringify({ ...DEFAULT_CONFIG, data: { ...DEFAULT_CONFIG.data, prompt: "auto" }, model: { dir: base, quant: "nf4", doubleQuant: true } }));
    const byRun = await runEval(ev({ adapter: step, n: 2, promptFormat: "auto", out: join(root, "nf4.json") }), quiet);
    expect(byRun.quant).toBe("nf4");
    expect(byRun.promptFormat).toBe("chat"); // that run's data.prompt "auto" with model.dir → chat
    const forced = await runEval(ev({ adapter: step, n: 2, quant: "none", out: join(root, "f32.json") }), quiet);
    expect(forced.quant).toBe("none");
    const lines = await runGenerate(gen({ quant: "nf4", prompt: ["Ann has 3 apples."] }), quiet);
    expect(lines).toHaveLength(1);
  });
});

describe("nr curate", () => {
  it("answer check, exact and near dedup, contamination; report lists each removal", async () => {
    const data = join(root, "train.jsonl");
    const evalFile = join(root, "test.jsonl");
    const rows = [
      { question: "Ann has 3 apples and buys 4 more. How many apples does she have now?", answer: "7" },
      { question: "Ann has 3 apples and buys 4 more.  How many apples does she have now?", answer: "7" }, // exact dup (whitespace)
      { question: "Ben has 10 pens and gives away 4 of them. How many pens does Ben have left?", answer: "6" },
      { question: "Ben had 10 pens and gave away 4 of them. How many pens did Ben have left?", answer: "6" }, // near dup
      { question: "Cal reads 5 books a week for 6 weeks. How many books does Cal read in total?", answer: "30" },
      { question: "What is the answer?", answer: "\\frac{1}{" }, // unparsable gold
      { question: "Eve buys 7 cards, each costing 3 coins, and pays with a 50 coin note. What change does Eve get back?", answer: "29" },
    ];
    writeFileSync(data, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
    writeFileSync(evalFile, JSON.stringify({ question: "Eve buys 7 cards, each costing 3 coins, and pays with a 50 coin note. What change does Eve get back?", answer: "29" }) + "\n");
    const out = join(root, "curated.jsonl");
    const args: CurateArgs = { data, out, skipBadRows: false, answerCheck: true, dedup: true, nearDedup: true, embedder: "hash", nearThreshold: 0.8, sameAnswer: false, evalSet: [evalFile], ngram: 8, ngramThreshold: 0.5, samples: 8, minPass: 2, maxPass: 5, temperature: 1, maxNewTokens: 16, promptFormat: "qa", seed: 0, progress: false };
    const printed: string[] = [];
    const rep = await runCurate(args, { log: (l) => printed.push(l), err: () => {} });
    expect(rep.steps.map((s) => s.step)).toEqual(["answer-check", "exact-dedup", "near-dedup", "contamination"]);
    const removed = (step: string) => rep.steps.find((s) => s.step === step)!.removed.map((r) => r.id);
    expect(removed("answer-check")).toEqual(["train:6"]);
    expect(removed("exact-dedup")).toEqual(["train:2"]);
    expect(removed("near-dedup")).toEqual(["train:4"]);
    expect(removed("contamination")).toEqual(["train:7"]);
    const kept = readFileSync(out, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(kept.map((r) => r.id)).toEqual(["train:1", "train:3", "train:5"]);
    expect(rep.kept).toBe(3);
    expect(JSON.parse(readFileSync(join(root, "curated.report.json"), "utf8")).steps).toHaveLength(4);
    expect(printed.join("\n")).toContain("kept 3 of 7");
  });

  it("the difficulty filter samples the model on the GPU and keeps the [min-pass, max-pass] zone", async () => {
    const syn = generateSynthetic({ count: 4, seed: 9, maxSteps: 1 });
    // gold = the greedy answer: at temperature 0 every one of the samples is correct (pass count = samples).
    const completions = await runGenerate(gen({ prompt: syn.map((r) => r.problem) }), quiet);
    const rows = syn.map((r, i) => ({ question: r.problem, answer: i < 2 ? verify(completions[i].completion, "0").predicted! : "424242" }));
    const data = join(root, "zone.jsonl");
    writeFileSync(data, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
    const out = join(root, "zone-out.jsonl");
    const rep = await runCurate({ data, out, skipBadRows: false, answerCheck: false, dedup: false, nearDedup: false, embedder: "hash", nearThreshold: 0.9, sameAnswer: false, ngram: 8, ngramThreshold: 0.5, model: base, samples: 2, minPass: 1, maxPass: 2, temperature: 0, maxNewTokens: 12, promptFormat: "qa", seed: 0, progress: false }, quiet);
    expect(rep.difficulty!.histogram).toEqual([2, 0, 2]);
    expect(Object.values(rep.difficulty!.passCounts)).toEqual([2, 2, 0, 0]);
    expect(readFileSync(out, "utf8").trim().split("\n").map((l) => JSON.parse(l).id)).toEqual(["zone:1", "zone:2"]);
  });

  it("bad input: unknown embedder folder, impossible pass range, --adapter without --model", async () => {
    const data = join(root, "train.jsonl");
    const a: CurateArgs = { data, out: join(root, "x.jsonl"), skipBadRows: false, answerCheck: true, dedup: true, nearDedup: true, embedder: join(root, "no-encoder"), nearThreshold: 0.9, sameAnswer: false, ngram: 8, ngramThreshold: 0.5, samples: 4, minPass: 3, maxPass: 2, temperature: 1, maxNewTokens: 8, promptFormat: "qa", seed: 0 };
    await expect(runCurate(a, quiet)).rejects.toThrow(/--embedder .*no-encoder: expected "hash" or a folder with model.onnx/);
    await expect(runCurate({ ...a, nearDedup: false, model: base }, quiet)).rejects.toThrow(/--min-pass <= --max-pass <= --samples/);
    await expect(runCurate({ ...a, nearDedup: false, adapter }, quiet)).rejects.toThrow(/--adapter needs --model/);
  });
});
