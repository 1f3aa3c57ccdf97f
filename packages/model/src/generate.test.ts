import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateModel, generateModelCli, initialValues, Rng } from "./generate.js";
import { loadModel, openCheckpoint, readBnbQuantState, validateCheckpoint } from "./checkpoint.js";
import { loadModelConfig, parameterSpecs } from "./config.js";
import { SafetensorsCheckpoint, writeSafetensors, type TensorToWrite } from "./safetensors.js";
import { ModelTokenizer } from "./tokenizer.js";
import { roundToBf16, roundToF16 } from "./dtypes.js";

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "nr-gen-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("generateModel", () => {
  it("writes a Qwen2 checkpoint in HF layout, sharded, loadable with its tokenizer", async () => {
    const dir = join(root, "qwen2");
    const g = await generateModel(dir, { architecture: "qwen2", hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2 }, { seed: 3, dtype: "bf16", shards: 3 });
    expect(g.files).toEqual([
      "config.json",
      "generation_config.json",
      "tokenizer.json",
      "tokenizer_config.json",
      "special_tokens_map.json",
      "model-00001-of-00003.safetensors",
      "model-00002-of-00003.safetensors",
      "model-00003-of-00003.safetensors",
      "model.safetensors.index.json",
    ]);
    for (const f of g.files) expect(existsSync(join(dir, f))).toBe(true);
    const cfg = await loadModelConfig(dir);
    expect(cfg).toMatchObject({ architecture: "qwen2", hiddenSize: 64, numKvHeads: 2, headDim: 16, intermediateSize: 128, torchDtype: "bfloat16", qkvBias: true });
    const tok = await ModelTokenizer.fromDir(dir);
    expect(cfg.vocabSize).toBe(Math.ceil(tok.size / 16) * 16);
    expect(cfg.eosTokenIds).toEqual([tok.eosTokenId]);
    expect(tok.stopTokenIds).toEqual([tok.eosTokenId, tok.padTokenId]);
    const gen = JSON.parse(await readFile(join(dir, "generation_config.json"), "utf8"));
    expect(gen.eos_token_id).toEqual([tok.eosTokenId, tok.padTokenId]);

    const ck = await openCheckpoint(dir);
    try {
      expect(ck.report.unexpected).toEqual([]);
      expect(ck.tensors.files.length).toBe(3);
      for (const p of parameterSpecs(cfg)) expect(ck.tensors.info(p.name)).toMatchObject({ dtype: "BF16", shape: p.shape });
      // stored values are the bf16 rounding of the seeded init
      const p = parameterSpecs(cfg).find((s) => s.name === "model.layers.1.self_attn.k_proj.bias")!;
      expect([...(await ck.tensors.readF32(p.name))]).toEqual([...initialValues(p, 3)].map(roundToBf16));
    } finally {
      await ck.tensors.close();
    }
  });

  it("is deterministic per (seed, tensor) whatever the sharding; other seeds differ", async () => {
    const cfg = { architecture: "llama" as const, hiddenSize: 32, numLayers: 1, numHeads: 2, tieWordEmbeddings: true };
    const a = await loadModel((await generateModel(join(root, "a"), cfg, { seed: 7, dtype: "f32", tokenizer: false, init: { std: 0.05 } })).dir);
    const b = await loadModel((await generateModel(join(root, "b"), { ...cfg, vocabSize: 256 }, { seed: 7, dtype: "f32", shards: 2, tokenizer: false, init: { std: 0.05 } })).dir);
    const c = await loadModel((await generateModel(join(root, "c"), { ...cfg, vocabSize: 256 }, { seed: 8, dtype: "f32", tokenizer: false, init: { std: 0.05 } })).dir);
    expect(a.config.vocabSize).toBe(256);
    expect(a.weights.has("lm_head.weight")).toBe(false);
    for (const [name, w] of a.weights) {
      expect(b.weights.get(name)).toEqual(w);
      expect(c.weights.get(name)).not.toEqual(w);
    }
    // the init has the requested statistics (norms 1 ± 0.1, weights N(0, 0.05))
    const q = [...a.weights.get("model.layers.0.self_attn.q_proj.weight")!];
    const mean = q.reduce((s, x) => s + x, 0) / q.length;
    const std = Math.sqrt(q.reduce((s, x) => s + (x - mean) ** 2, 0) / q.length);
    expect(Math.abs(mean)).toBeLessThan(0.01);
    expect(std).toBeGreaterThan(0.045);
    expect(std).toBeLessThan(0.055);
  });

  it("writes Qwen3 (tied, explicit head_dim) and Llama (attention bias) in f16, with the CLI", async () => {
    const q3 = await generateModel(join(root, "q3"), { architecture: "qwen3", hiddenSize: 48, numHeads: 4, numKvHeads: 1, headDim: 16, tieWordEmbeddings: true }, { dtype: "f16" });
    const m = await loadModel(q3.dir);
    expect(m.config).toMatchObject({ headDim: 16, qkNorm: true, qkvBias: false, tieWordEmbeddings: true, torchDtype: "float16" });
    const kn = parameterSpecs(m.config).find((p) => p.name === "model.layers.0.self_attn.k_norm.weight")!;
    expect([...m.weights.get(kn.name)!]).toEqual([...initialValues(kn, 0)].map(roundToF16));

    const cli = await generateModelCli(["--out", join(root, "cli"), "--arch", "llama", "--hidden", "32", "--heads", "4", "--kv-heads", "2", "--layers", "1", "--attention-bias", "--dtype", "f32", "--seed", "5", "--shards", "2"]);
    expect(cli.config).toMatchObject({ architecture: "llama", qkvBias: true, oBias: true, numKvHeads: 2, torchDtype: "float32" });
    const loaded = await loadModel(cli.dir);
    expect(loaded.weights.has("model.layers.0.self_attn.o_proj.bias")).toBe(true);
    await expect(generateModelCli(["--out", join(root, "x"), "--arch", "gpt2"])).rejects.toThrowError(/--arch must be one of qwen2, qwen3, llama/);
  });

  it("refuses a vocabulary smaller than the tokenizer", async () => {
    await expect(generateModel(join(root, "small"), { architecture: "qwen2", vocabSize: 100 })).rejects.toThrowError(/vocabSize 100 is smaller than the generated tokenizer's \d+ ids/);
  });
});

describe("checkpoint validation against config.json", () => {
  let dir: string;
  beforeAll(async () => {
    dir = (await generateModel(join(root, "v"), { architecture: "qwen2", hiddenSize: 32, numLayers: 2, numHeads: 2 }, { dtype: "f32", tokenizer: false })).dir;
  });

  /** Rewrites model.safetensors with `edit` applied to the tensor list. */
  async function rewrite(target: string, edit: (t: TensorToWrite[]) => TensorToWrite[]) {
    const src = await SafetensorsCheckpoint.open(dir);
    const tensors: TensorToWrite[] = [];
    for (const n of src.names()) {
      const i = src.info(n);
      tensors.push({ name: n, dtype: i.dtype, shape: i.shape, data: await src.readRaw(n) });
    }
    await src.close();
    await import("node:fs/promises").then((m) => m.mkdir(target, { recursive: true }));
    await writeFile(join(target, "config.json"), await readFile(join(dir, "config.json")));
    await writeSafetensors(join(target, "model.safetensors"), edit(tensors));
  }

  it("reports a missing tensor with its expected shape", async () => {
    const t = join(root, "missing");
    await rewrite(t, (ts) => ts.filter((x) => x.name !== "model.layers.1.mlp.down_proj.weight"));
    await expect(openCheckpoint(t)).rejects.toThrowError(/missing tensor model\.layers\.1\.mlp\.down_proj\.weight \(expected shape \[32, 64\]\)/);
  });

  it("reports a shape that disagrees with config.json, naming file, tensor and both shapes", async () => {
    const t = join(root, "shape");
    await rewrite(t, (ts) => ts.map((x) => (x.name === "model.layers.0.self_attn.q_proj.weight" ? { ...x, shape: [16, 64] } : x)));
    await expect(openCheckpoint(t)).rejects.toThrowError(/model\.safetensors: tensor model\.layers\.0\.self_attn\.q_proj\.weight has shape \[16, 64\] but config\.json implies \[32, 32\]/);
    // the same checkpoint under a config with another hidden size: every tensor is wrong, the report is capped
    const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    await writeFile(join(t, "config.json"), JSON.stringify({ ...cfg, hidden_size: 48, head_dim: 24 }));
    await expect(openCheckpoint(t)).rejects.toThrowError(/… and \d+ more/);
  });

  it("lists unexpected tensors without failing, and reads bitsandbytes NF4 weights' quant state", async () => {
    const t = join(root, "nf4");
    const name = "model.layers.0.mlp.up_proj.weight"; // [64, 32]
    const state = { quant_type: "nf4", blocksize: 64, dtype: "bfloat16", shape: [64, 32] };
    const rng = new Rng("nf4");
    await rewrite(t, (ts) => [
      ...ts.filter((x) => x.name !== name),
      { name, dtype: "U8" as const, shape: [1024, 1], data: Uint8Array.from({ length: 1024 }, () => rng.int(256)) },
      { name: `${name}.absmax`, dtype: "F32" as const, shape: [32], data: new Float32Array(32).fill(1) },
      { name: `${name}.quant_map`, dtype: "F32" as const, shape: [16], data: new Float32Array(16) },
      { name: `${name}.quant_state.bitsandbytes__nf4`, dtype: "U8" as const, ...packed(state) },
      { name: "model.layers.0.self_attn.rotary_emb.inv_freq", dtype: "F32" as const, shape: [8], data: new Float32Array(8) },
    ]);
    const ck = await SafetensorsCheckpoint.open(t);
    try {
      const cfg = await loadModelConfig(t);
      const report = await validateCheckpoint(ck, cfg);
      expect(report.unexpected).toEqual(["model.layers.0.self_attn.rotary_emb.inv_freq"]);
      expect(report.quantized.get(name)).toMatchObject({ quant_type: "nf4", blocksize: 64, shape: [64, 32] });
      expect(await readBnbQuantState(ck, "model.layers.0.mlp.gate_proj.weight")).toBeNull();
    } finally {
      await ck.close();
    }
    await expect(loadModel(t)).rejects.toThrowError(/4-bit \(bitsandbytes\) weights cannot be loaded as floats/);
    // a quant state whose shape disagrees with the config
    const t2 = join(root, "nf4bad");
    await rewrite(t2, (ts) => [
      ...ts.filter((x) => x.name !== name),
      { name, dtype: "U8" as const, shape: [1024, 1], data: new Uint8Array(1024) },
      { name: `${name}.quant_state.bitsandbytes__nf4`, dtype: "U8" as const, ...packed({ ...state, shape: [32, 64] }) },
    ]);
    await expect(openCheckpoint(t2)).rejects.toThrowError(/up_proj\.weight has shape \[32, 64\] \(4-bit\) but config\.json implies \[64, 32\]/);
  });

  it("rejects a float weight stored with an integer dtype", async () => {
    const t = join(root, "intdtype");
    await rewrite(t, (ts) => ts.map((x) => (x.name === "model.norm.weight" ? { ...x, dtype: "I32" as const } : x)));
    await expect(openCheckpoint(t)).rejects.toThrowError(/tensor model\.norm\.weight has dtype I32, expected a float type/);
  });
});

/** bitsandbytes packs its quant state dict as the UTF-8 bytes of its JSON in a U8 tensor. */
function packed(state: unknown): { shape: number[]; data: Uint8Array } {
  const bytes = new TextEncoder().encode(JSON.stringify(state));
  return { shape: [bytes.length], data: bytes };
}
