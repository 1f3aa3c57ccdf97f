import { describe, expect, it } from "vitest";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AdamW, CpuBackend, Engine } from "@nr/autograd";
import { generateModel, loadDecoder, makeBatch, SafetensorsFile, type Decoder } from "@nr/model";
import { LoraModel, loraParameterCount } from "./lora.js";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, loadPeftAdapter, peftKey, savePeftAdapter } from "./peft.js";
import { combineAdapters, deltaWeight, mergeToCheckpoint, moduleKey } from "./merge.js";
import { adapterToHost, hostToAdapter } from "./host.js";
import { memoryReport } from "./memory.js";
import { maskedLogps, nllStep } from "./testing.js";

const CONFIG = { architecture: "qwen2" as const, hiddenSize: 16, intermediateSize: 24, numLayers: 2, numHeads: 4, numKvHeads: 2, vocabSize: 40, tieWordEmbeddings: true };
const ROWS = [[3, 7, 1, 9, 12], [5, 2, 30]];

async function withModel(fn: (dir: string) => Promise<void>, std = 0.02) {
  const dir = await mkdtemp(join(tmpdir(), "nr-lora-"));
  try {
    await generateModel(join(dir, "base"), CONFIG, { seed: 3, dtype: "f32", tokenizer: false, init: { std } });
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const logps = (dec: Decoder) => maskedLogps(dec, ROWS);

/** Give B random values so the adapter changes the output (PEFT init has B = 0). */
async function randomiseB(model: LoraModel, name: string, seed: number) {
  let s = seed;
  const r = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0), s / 2 ** 32 - 0.5);
  for (const p of model.projections) {
    const ad = p.adapters.get(name);
    if (ad) p.setAdapter(name, ad.config, await ad.weights.A.read(), Array.from({ length: ad.weights.B.size }, () => 0.3 * r()), true);
  }
}

describe("LoRA over a frozen base (float64 CPU backend)", () => {
  it("with B = 0 the output equals the base exactly; the base gets no gradient buffer", () =>
    withModel(async (dir) => {
      const e = new Engine(new CpuBackend());
      const { decoder } = await loadDecoder(e, join(dir, "base"));
      const base = await logps(decoder);
      const lora = new LoraModel(decoder);
      const params = lora.addAdapter("policy", { r: 4, alpha: 8, seed: 1 });
      const withAdapter = await logps(decoder);
      expect(Array.from(withAdapter.logp)).toEqual(Array.from(base.logp));
      expect(params.every((p) => p.requiresGrad)).toBe(true);
      expect(decoder.weights.embed.requiresGrad).toBe(false);
      expect(lora.parameterCount("policy")).toBe(loraParameterCount({ ...CONFIG, headDim: 4 }, { r: 4, alpha: 8 }));
    }));

  it("base + LoRA equals the merged full-precision checkpoint; select(null) gives the base back", () =>
    withModel(async (dir) => {
      const e = new Engine(new CpuBackend());
      const { decoder } = await loadDecoder(e, join(dir, "base"));
      const base = await logps(decoder);
      const lora = new LoraModel(decoder);
      lora.addAdapter("policy", { r: 3, alpha: 6, seed: 2, targets: ["q_proj", "v_proj", "down_proj"] });
      await randomiseB(lora, "policy", 9);
      const adapted = await logps(decoder);
      await mergeToCheckpoint(join(dir, "base"), await adapterToHost(lora, "policy"), join(dir, "merged"));
      const e2 = new Engine(new CpuBackend());
      const merged = await logps((await loadDecoder(e2, join(dir, "merged"))).decoder);
      adapted.logp.forEach((v, i) => adapted.mask[i] && expect(merged.logp[i]).toBeCloseTo(v, 6)); // merged weights stored as f32
      expect(adapted.logp.some((v, i) => adapted.mask[i] && Math.abs(v - base.logp[i]) > 1e-4)).toBe(true);
      lora.select(null);
      expect(Array.from((await logps(decoder)).logp)).toEqual(Array.from(base.logp));
    }));

  it("LoRA gradients match finite differences", () =>
    withModel(async (dir) => {
      const e = new Engine(new CpuBackend());
      const { decoder } = await loadDecoder(e, join(dir, "base"));
      const lora = new LoraModel(decoder);
      const params = lora.addAdapter("policy", { r: 2, alpha: 4, seed: 5, targets: ["k_proj", "o_proj", "up_proj"] });
      await randomiseB(lora, "policy", 4);
      const trainable = lora.parameters("policy");
      const coef = [0.7, -1.2, 0.4, 2, -0.5, 1.1, 0.3, -0.8, 0.9, 1.5];
      const loss = () => e.scope(async () => {
        const b = makeBatch(e, ROWS, { leftPad: true });
        const { logp } = e.noGrad(() => decoder.forward(b));
        const v = await logp.read();
        return v.reduce((s, x, i) => s + (b.lossMask[i] ? coef[i] * x : 0), 0);
      });
      await e.scope(async () => {
        const b = makeBatch(e, ROWS, { leftPad: true });
        const res = decoder.forward(b);
        decoder.backward(res, Array.from(b.lossMask, (m, i) => (m ? coef[i] : 0)));
      });
      void params;
      for (const p of trainable) {
        const g = await p.grad!.read();
        const data = p.storage as Float64Array;
        for (const i of [0, Math.floor(p.size / 2), p.size - 1]) {
          const keep = data[i];
          data[i] = keep + 1e-6;
          const up = await loss();
          data[i] = keep - 1e-6;
          const down = await loss();
          data[i] = keep;
          expect(Math.abs((up - down) / 2e-6 - g[i]), `${p.name}[${i}]`).toBeLessThan(1e-6 * Math.max(1, Math.abs(g[i])));
        }
      }
    }));

  it("dropout with gradient checkpointing: the recompute draws the same masks (grads equal checkpointing off)", () =>
    withModel(async (dir) => {
      const grads: Float64Array[][] = [];
      for (const checkpoint of [false, true]) {
        const e = new Engine(new CpuBackend());
        const { decoder } = await loadDecoder(e, join(dir, "base"));
        const lora = new LoraModel(decoder);
        const params = lora.addAdapter("policy", { r: 4, alpha: 8, dropout: 0.3, seed: 5 });
        await randomiseB(lora, "policy", 9);
        lora.setTraining(true);
        const state = lora.dropoutState();
        await e.scope(async () => {
          const b = makeBatch(e, ROWS, { leftPad: true });
          const res = decoder.forward(b, { checkpoint });
          decoder.backward(res, Array.from(b.lossMask, (m) => -m));
        });
        // The stream moved on exactly as far as one forward's masks, recompute or not.
        expect(lora.dropoutState()).not.toEqual(state);
        grads.push(await Promise.all(lora.parameters("policy").map((p) => p.grad!.read())));
        void params;
      }
      grads[0].forEach((g, i) => g.forEach((v, j) => expect(Math.abs(grads[1][i][j] - v)).toBeLessThan(1e-12)));
    }));

  it("a short SFT run lowers the loss and changes only adapter tensors", () =>
    withModel(async (dir) => {
      const e = new Engine(new CpuBackend());
      const { decoder } = await loadDecoder(e, join(dir, "base"));
      const baseBefore = Float64Array.from(decoder.weights.embed.storage as Float64Array);
      const qBefore = Float64Array.from((decoder.weights.layers[0].q as unknown as { weight: { storage: Float64Array } }).weight.storage);
      const lora = new LoraModel(decoder);
      const opt = new AdamW(lora.addAdapter("sft", { r: 8, alpha: 16, seed: 7 }), { lr: 0.1 });
      const step = () => nllStep(decoder, opt, ROWS, 0.1);
      const first = await step();
      let last = first;
      for (let i = 0; i < 30; i++) { last = await step(); if (process.env.NR_DEBUG) console.log(i, last); }
      expect(last).toBeLessThan(first * 0.6);
      expect(Array.from(decoder.weights.embed.storage as Float64Array)).toEqual(Array.from(baseBefore));
      const q = decoder.weights.layers[0].q as unknown as { base: { weight: { storage: Float64Array } } };
      expect(Array.from(q.base.weight.storage)).toEqual(Array.from(qBefore));
    }, 0.5)); // a frozen head at HF's 0.02 init caps how far logits can move; 0.5 gives the adapters room
});

describe("PEFT format", () => {
  it("writes PEFT's keys, shapes and config fields, and reads them back identically", () =>
    withModel(async (dir) => {
      const e = new Engine(new CpuBackend());
      const { decoder } = await loadDecoder(e, join(dir, "base"));
      const lora = new LoraModel(decoder);
      lora.addAdapter("policy", { r: 4, alpha: 16, dropout: 0.05, seed: 3 });
      await randomiseB(lora, "policy", 11);
      const out = join(dir, "adapter");
      await savePeftAdapter(lora, "policy", out, { baseModel: "Qwen/Qwen2.5-Math-1.5B-Instruct" });
      const cfg = JSON.parse(await readFile(join(out, ADAPTER_CONFIG), "utf8"));
      // The fields PEFT's LoraConfig writes for this setup (peft/tuners/lora/config.py).
      expect(cfg).toMatchObject({ peft_type: "LORA", task_type: "CAUSAL_LM", r: 4, lora_alpha: 16, lora_dropout: 0.05, bias: "none", base_model_name_or_path: "Qwen/Qwen2.5-Math-1.5B-Instruct", use_rslora: false, fan_in_fan_out: false });
      expect([...cfg.target_modules].sort()).toEqual(["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]);
      const f = await SafetensorsFile.open(join(out, ADAPTER_WEIGHTS));
      const names = f.names().sort();
      expect(names).toHaveLength(2 * 7 * 2);
      expect(names).toContain("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight");
      expect(names).toContain("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
      expect([...f.info(peftKey(0, "q_proj", "A")).shape]).toEqual([4, 16]);
      expect([...f.info(peftKey(0, "k_proj", "B")).shape]).toEqual([8, 4]);
      expect([...f.info(peftKey(1, "down_proj", "A")).shape]).toEqual([4, 24]);
      await f.close();
      const before = await logps(decoder);
      const e2 = new Engine(new CpuBackend());
      const { decoder: d2 } = await loadDecoder(e2, join(dir, "base"));
      const lora2 = new LoraModel(d2);
      await loadPeftAdapter(lora2, out, "policy");
      lora2.select("policy");
      const after = await logps(d2);
      before.logp.forEach((v, i) => before.mask[i] && expect(after.logp[i]).toBeCloseTo(v, 6)); // f32 on disk
    }));

  it("rejects unsupported PEFT configs with the reason", () =>
    withModel(async (dir) => {
      const { writeFile, mkdir } = await import("node:fs/promises");
      const bad = join(dir, "bad");
      await mkdir(bad);
      await writeFile(join(bad, ADAPTER_CONFIG), JSON.stringify({ peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["c_attn"] }));
      const e = new Engine(new CpuBackend());
      const lora = new LoraModel((await loadDecoder(e, join(dir, "base"))).decoder);
      await expect(loadPeftAdapter(lora, bad, "x")).rejects.toThrow(/c_attn.*not LoRA targets/);
    }));
});

describe("adapter arithmetic", () => {
  it("concat is exact and SVD at full rank is exact; SVD at lower rank is the best approximation", () =>
    withModel(async (dir) => {
      const e = new Engine(new CpuBackend());
      const lora = new LoraModel((await loadDecoder(e, join(dir, "base"))).decoder);
      lora.addAdapter("a", { r: 2, alpha: 4, seed: 1, targets: ["q_proj"] });
      lora.addAdapter("b", { r: 3, alpha: 3, seed: 2, targets: ["q_proj"] });
      await randomiseB(lora, "a", 5);
      await randomiseB(lora, "b", 6);
      const A = await adapterToHost(lora, "a"), B = await adapterToHost(lora, "b");
      const key = moduleKey(0, "q_proj");
      const want = (() => {
        const da = deltaWeight(A.modules.get(key)!, 2, 2), db = deltaWeight(B.modules.get(key)!, 3, 1);
        return da.map((v, i) => 0.5 * v - 1.5 * db[i]);
      })();
      for (const opts of [{ method: "concat" as const }, { method: "svd" as const, rank: 5 }]) {
        const c = combineAdapters([{ adapter: A, weight: 0.5 }, { adapter: B, weight: -1.5 }], opts);
        const got = deltaWeight(c.modules.get(key)!, c.config.r, c.config.alpha / c.config.r);
        got.forEach((v, i) => expect(v).toBeCloseTo(want[i], 10));
        hostToAdapter(lora, c, `combined-${opts.method}`);
      }
      const low = combineAdapters([{ adapter: A, weight: 0.5 }, { adapter: B, weight: -1.5 }], { method: "svd", rank: 2 });
      const approx = deltaWeight(low.modules.get(key)!, 2, 1);
      const err = Math.sqrt(approx.reduce((s, v, i) => s + (v - want[i]) ** 2, 0));
      const norm = Math.sqrt(want.reduce((s, v) => s + v * v, 0));
      expect(err).toBeGreaterThan(0);
      expect(err).toBeLessThan(norm);
      expect(() => combineAdapters([{ adapter: A, weight: 1 }, { adapter: B, weight: 1 }], { method: "svd", rank: 9 })).toThrow(/rank must be in 1..5/);
    }));
});

describe("sizes", () => {
  it("Qwen2.5-1.5B with r = 16 on all linears: ≈ 18.5 M trainable parameters (1.2 %)", () => {
    const qwen = { numLayers: 28, hiddenSize: 1536, intermediateSize: 8960, numHeads: 12, numKvHeads: 2, headDim: 128, vocabSize: 151936, tieWordEmbeddings: true };
    const n = loraParameterCount(qwen, { r: 16, alpha: 32 });
    expect(n).toBe(18_464_768);
    const rep = memoryReport({ ...qwen, qkvBias: true }, { r: 16, alpha: 32 }, { tokens: 2048, checkpoint: true });
    expect(rep.loraParams).toBe(n);
    expect(rep.baseParams).toBe(1_543_714_304); // Qwen2.5-1.5B: 1.54 B with the tied embedding
    expect(rep.trainableFraction).toBeCloseTo(0.012, 3);
    // NF4 with double quantisation: 4.127 bits per weight in a bitsandbytes checkpoint; on the device the f32
    // per-block scales the fused matmul reads add 0.5 bit; the pool's size classes round each buffer up (≤ 19 %).
    expect(rep.baseLinearCheckpointBytes / 2 ** 30).toBeGreaterThan(0.6);
    expect(rep.baseLinearCheckpointBytes / 2 ** 30).toBeLessThan(0.7);
    expect(rep.baseLinearBitsPerParam).toBeGreaterThan(4.6);
    expect(rep.baseLinearBitsPerParam).toBeLessThan(4.7);
    expect(rep.baseLinearBytes).toBeGreaterThanOrEqual(rep.baseLinearTensorBytes);
    expect(rep.baseLinearBytes).toBeLessThan(rep.baseLinearTensorBytes * 1.19);
    console.log(`Qwen2.5-1.5B, r = 16 on all linears, 2048 tokens, checkpointing: ${(n / 1e6).toFixed(2)} M trainable (${(100 * rep.trainableFraction).toFixed(2)} %); ` +
      Object.entries(rep).filter(([k]) => k.endsWith("Bytes")).map(([k, v]) => `${k} ${(v / 2 ** 20).toFixed(1)} MiB`).join(", "));
  });
});
