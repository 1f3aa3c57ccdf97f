// `nr export` checked with the real client: the committed models/nr-tiny-math + a random non-zero LoRA adapter is
// exported, loaded by @huggingface/transformers v3 (AutoModelForCausalLM on onnxruntime-node, its KV cache) and
// decoded greedily, batched with left padding; its completions must equal `nr generate --adapter` (the adapter
// unmerged over the base, on WebGPU) token for token. The f16 export's logits must stay within F16_LOGIT_REL_TOL (relative to the largest
// logit) of the f32 export's on the same sequences.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { exportTransformersJs, loadModelConfig } from "@nr/model";
import { LORA_TARGETS, moduleKey, resolveLoraConfig, TARGET_ROLE, writeHostAdapter, type HostAdapter } from "@nr/lora";
import { freshSeed, rng } from "@nr/kernels/testing";
import { paramName, parameterSpecs } from "@nr/model";
import { runExport } from "./export.js";
import { runGenerate, type GeneratedLine, type GenerateArgs } from "./generate.js";

const MODEL = resolve(__dirname, "../../../../models/nr-tiny-math");
const NEW_TOKENS = 40;
/**
 * f16 weights (compute in f32) vs f32 weights, max |Δlogit| over every position of the greedy sequences, relative to
 * the largest |logit|: f16 keeps 11 significant bits (relative rounding ≤ 4.9·10⁻⁴ per weight), and the error grows
 * with the logits' scale. Measured on this model with random adapters: 1.1·10⁻² to 1.28·10⁻¹ absolute (max |logit|
 * 16–17.5, i.e. up to 0.75 %); 2 % of the largest logit leaves a 2.6× margin over the worst seen.
 */
const F16_LOGIT_REL_TOL = 0.02;
const quiet = { log: () => {}, err: () => {} };

let root: string;
let adapterDir: string;
const seed = freshSeed();

/** A random adapter on every linear layer: A ~ U(±0.5), B ~ U(±0.03) (non-zero B, so it changes the model). */
async function randomAdapter(): Promise<HostAdapter> {
  const config = await loadModelConfig(MODEL);
  const rand = rng(seed);
  const lora = resolveLoraConfig({ r: 8, alpha: 16, targets: [...LORA_TARGETS] });
  const shapes = new Map(parameterSpecs(config).map((p) => [p.name, p.shape]));
  const modules: HostAdapter["modules"] = new Map();
  for (let layer = 0; layer < config.numLayers; layer++)
    for (const target of LORA_TARGETS) {
      const [outF, inF] = shapes.get(paramName(TARGET_ROLE[target], layer))!;
      const A = Float64Array.from({ length: lora.r * inF }, () => (rand() * 2 - 1) * 0.5);
      const B = Float64Array.from({ length: outF * lora.r }, () => (rand() * 2 - 1) * 0.03);
      modules.set(moduleKey(layer, target), { layer, target, A, B, inF, outF });
    }
  return { config: lora, modules };
}

const gen = (o: Partial<GenerateArgs>): GenerateArgs => ({ model: MODEL, data: "synthetic", n: 8, samples: 1, temperature: 0, topP: 1, maxNewTokens: NEW_TOKENS, seed: 0, batchSize: 16, promptFormat: "qa", skipBadRows: false, quiet: true, ...o });

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "nr-export-"));
  adapterDir = join(root, "adapter");
  await writeHostAdapter(await randomAdapter(), adapterDir, MODEL);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

type Tjs = typeof import("@huggingface/transformers");

/** Greedy ids of the new tokens per prompt (cut before the first end token, as nr generate counts), batched with left padding. */
async function tjsGreedy(tjs: Tjs, dir: string, prompts: string[]) {
  const tokenizer = await tjs.AutoTokenizer.from_pretrained(dir);
  tokenizer.padding_side = "left";
  const model = await tjs.AutoModelForCausalLM.from_pretrained(dir);
  const inputs = tokenizer(prompts, { padding: true });
  const out = (await model.generate({ ...inputs, max_new_tokens: NEW_TOKENS, do_sample: false })) as import("@huggingface/transformers").Tensor;
  const width = inputs.input_ids.dims[1];
  const eos = new Set([605, 603]);
  const rows = (out.tolist() as bigint[][]).map((r) => {
    const ids = r.slice(width).map(Number);
    const end = ids.findIndex((t) => eos.has(t));
    return end < 0 ? ids : ids.slice(0, end);
  });
  const texts = rows.map((ids) => ids.length === 0 ? "" : tokenizer.decode(ids, { skip_special_tokens: true }));
  return { rows, texts, model, tokenizer, inputs };
}

/** transformers.js's greedy completions from `dir` equal nr generate's `lines` (same prompts), text and token count. */
async function expectSameAsGenerate(tjs: Tjs, dir: string, lines: GeneratedLine[]) {
  const t = await tjsGreedy(tjs, dir, lines.map((l) => l.prompt));
  for (let i = 0; i < lines.length; i++) {
    expect({ i, text: t.texts[i], tokens: t.rows[i].length }).toEqual({ i, text: lines[i].completion, tokens: lines[i].tokens });
  }
  return t;
}

describe("nr export → transformers.js v3 (onnxruntime-node), KV cache", () => {
  it("f32: greedy completions equal nr generate --adapter token for token; f16 logits within tolerance", async () => {
    console.log(`export test: adapter seed ${seed} (replay with NR_SEED=${seed})`);
    const tjs = await import("@huggingface/transformers");
    const ours = await runGenerate(gen({ adapter: adapterDir }), quiet);
    const bare = await runGenerate(gen({}), quiet);
    // the adapter must matter, or the comparison could not see a merge that was skipped
    expect(ours.map((l) => l.completion)).not.toEqual(bare.map((l) => l.completion));

    const f32Dir = join(root, "f32");
    await runExport({ model: MODEL, adapter: adapterDir, out: f32Dir, dtype: "f32", overwrite: false }, quiet);
    expect(readdirSync(join(f32Dir, "onnx"))).toEqual(["model.onnx"]);
    expect(JSON.parse(readFileSync(join(f32Dir, "config.json"), "utf8"))["transformers.js_config"]).toMatchObject({ dtype: "fp32" });

    const prompts = ours.map((l) => l.prompt);
    const t = await expectSameAsGenerate(tjs, f32Dir, ours);
    console.log(`transformers.js greedy = nr generate --adapter on ${prompts.length} prompts (${ours.reduce((a, l) => a + l.tokens, 0)} tokens); first: ${JSON.stringify(ours[0].completion)}`);

    // f16: same sequences through both exports, one forward each (no cache), logits compared
    const f16Dir = join(root, "f16");
    const r16 = await runExport({ model: MODEL, adapter: adapterDir, out: f16Dir, dtype: "f16", overwrite: false }, quiet);
    expect(readdirSync(join(f16Dir, "onnx"))).toEqual(["model_fp16.onnx"]);
    const t16 = await tjsGreedy(tjs, f16Dir, prompts);
    const full = t.tokenizer(prompts.map((p, i) => p + t.texts[i]), { padding: true });
    const l32 = ((await t.model(full)) as { logits: import("@huggingface/transformers").Tensor }).logits;
    const l16 = ((await t16.model(full)) as { logits: import("@huggingface/transformers").Tensor }).logits;
    const a = l32.data as Float32Array;
    const b = l16.data as Float32Array;
    const mask = full.attention_mask.data as BigInt64Array;
    const V = l32.dims[2];
    let maxDiff = 0;
    let maxAbs = 0;
    for (let p = 0; p < mask.length; p++) {
      if (!mask[p]) continue;
      for (let v = 0; v < V; v++) {
        maxDiff = Math.max(maxDiff, Math.abs(a[p * V + v] - b[p * V + v]));
        maxAbs = Math.max(maxAbs, Math.abs(a[p * V + v]));
      }
    }
    const same = t16.rows.filter((r, i) => r.join() === t.rows[i].join()).length;
    console.log(`f16 export (${(r16.weightBytes / 1024).toFixed(0)} KiB of weights): max |Δlogit| vs f32 ${maxDiff.toExponential(2)} (max |logit| ${maxAbs.toFixed(2)}); greedy sequences identical: ${same}/${prompts.length}`);
    expect(maxAbs).toBeGreaterThan(1);
    expect(maxDiff).toBeGreaterThan(0); // the f16 rounding is really there
    expect(maxDiff).toBeLessThan(F16_LOGIT_REL_TOL * maxAbs);
  }, 300_000);

  it("an NF4 base (--quant nf4): the export equals nr generate --quant nf4 --adapter", async () => {
    const tjs = await import("@huggingface/transformers");
    const nf4 = await runGenerate(gen({ adapter: adapterDir, quant: "nf4" }), quiet);
    const dir = join(root, "nf4");
    await runExport({ model: MODEL, adapter: adapterDir, out: dir, dtype: "f32", quant: "nf4", overwrite: false }, quiet);
    await expectSameAsGenerate(tjs, dir, nf4);
    // and the dequantised base really is in the file: it differs from the full-precision export
    const full = join(root, "full-for-nf4");
    await runExport({ model: MODEL, adapter: adapterDir, out: full, dtype: "f32", overwrite: false }, quiet);
    expect(readFileSync(join(dir, "onnx", "model.onnx")).equals(readFileSync(join(full, "onnx", "model.onnx")))).toBe(false);
  }, 300_000);

  it("external data in one file and in chunks: named in the config, and transformers.js generates from both", async () => {
    const tjs = await import("@huggingface/transformers");
    const want = await runGenerate(gen({}), quiet);
    const one = join(root, "external");
    await exportTransformersJs(MODEL, one, { externalData: true });
    expect(readdirSync(join(one, "onnx")).sort()).toEqual(["model.onnx", "model.onnx_data"]);
    expect(JSON.parse(readFileSync(join(one, "config.json"), "utf8"))["transformers.js_config"]).toMatchObject({ use_external_data_format: true });
    await expectSameAsGenerate(tjs, one, want);
    // 100 KiB chunks (the default is just under 2 GiB): the 152 KiB embedding gets a file of its own
    const chunked = join(root, "chunked");
    const r = await exportTransformersJs(MODEL, chunked, { externalData: true, externalDataChunkBytes: 100 << 10 });
    const n = r.dataPaths.length;
    expect(n).toBeGreaterThan(3);
    expect(readdirSync(join(chunked, "onnx")).sort()).toEqual(["model.onnx", "model.onnx_data", ...Array.from({ length: n - 1 }, (_, i) => `model.onnx_data_${i + 1}`)].sort());
    expect(JSON.parse(readFileSync(join(chunked, "config.json"), "utf8"))["transformers.js_config"]).toMatchObject({ use_external_data_format: n });
    await expectSameAsGenerate(tjs, chunked, want);
  }, 300_000);
});

describe("nr export: bad input fails before any work, naming what to fix", () => {
  it("a non-empty --out folder is refused and left as it was", async () => {
    const out = join(root, "busy");
    mkdirSync(out);
    writeFileSync(join(out, "keep.txt"), "mine");
    await expect(runExport({ model: MODEL, out, dtype: "f32", overwrite: false }, quiet)).rejects.toThrow(/not empty.*--overwrite/);
    expect(readdirSync(out)).toEqual(["keep.txt"]);
  });

  it("--out naming an .onnx file (the old usage) says that --out is the folder", async () => {
    await expect(runExport({ model: MODEL, out: "m/onnx/model.onnx", dtype: "f32", overwrite: false }, quiet)).rejects.toThrow(/--out names the model folder.*pass e\.g\. --out m$/);
  });

  it("a missing --model folder and an adapter of another shape are named", async () => {
    await expect(runExport({ model: join(root, "nope"), out: join(root, "o1"), dtype: "f32", overwrite: false }, quiet)).rejects.toThrow(/--model .*nope: no such folder/);
    const wrong = await randomAdapter();
    const m = wrong.modules.get(moduleKey(1, "k_proj"))!;
    wrong.modules.set(moduleKey(1, "k_proj"), { ...m, inF: m.inF + 1, A: new Float64Array(wrong.config.r * (m.inF + 1)) });
    const dir = join(root, "wrong-adapter");
    await writeHostAdapter(wrong, dir);
    await expect(runExport({ model: MODEL, adapter: dir, out: join(root, "o2"), dtype: "f32", overwrite: false }, quiet)).rejects.toThrow(/--adapter .*adapter_model\.safetensors: .*layers\.1\.self_attn\.k_proj\.lora_A\.weight has \d+ values, expected \[8, 64\]/);
  });
});
