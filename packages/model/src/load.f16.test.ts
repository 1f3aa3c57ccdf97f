// The f16 base (`loadDecoder(…, { dtype: "f16" })`): logits against onnxruntime-node running the f16 ONNX export and
// against the float64 reference on the f16 weights (Qwen2 and Qwen3), input gradients against the float64 emulation
// on the CPU backend and the float64 model on the f16 weights, the halved weight memory on the buffer pool, bf16
// checkpoints, and the errors. Token rows are fresh random ones every run (seed printed; NR_SEED pins it).
import { gpuSuite } from "@nr/kernels/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { lmHeadLogits, type Gpu, type GpuBuffer } from "@nr/kernels";
import { CpuBackend, Engine, GpuBackend } from "@nr/autograd";
import { generateModel } from "./generate.js";
import { dequantizedCopy, loadDecoder } from "./load.js";
import { DenseProjection, F16Projection, makeBatch, type Decoder } from "./decoder.js";
import { loadModel, type WeightMap } from "./checkpoint.js";
import { paramName, type ModelConfigInit } from "./config.js";
import { referenceForward } from "./reference.js";
import { buildOnnxModel } from "./onnx.js";
import { roundToF16, toBf16Bits, bf16BitsToNumber } from "./dtypes.js";
import { encodeFloats, SafetensorsCheckpoint, writeSafetensorsCheckpoint, type TensorToWrite } from "./safetensors.js";

/**
 * Tolerances, from measurement (tiny models with weights ~N(0, 0.15), max |logit| ≈ 3–4.5; printed on every run;
 * 10 random draws of rows on lavapipe):
 *  - GPU f16 path vs ORT's f16-weight graph (f32 compute), and vs the float64 reference on the same f16 weights: the
 *    difference is the f16 rounding of the activations before each of the 14 projections (2⁻¹¹ relative per
 *    element); measured max abs 2.0–4.2·10⁻³, ≤ 1.1·10⁻³ of max |logit|. Bound 5·10⁻³·max|logit| (≥ 4.5× margin).
 *  - GPU f16 path vs its float64 CPU emulation (same f16 weights, activations rounded to f16 the same way): f32 vs
 *    float64 arithmetic, plus rounding flips — an activation within an f32 rounding of an f16 tie rounds the other
 *    way on one side and the one-ulp change propagates to later positions. Measured mean abs 1·10⁻⁷–9·10⁻⁵ against
 *    3.8–5.6·10⁻⁴ for GPU vs float64 (ratio ≤ 0.22), max up to 1.2·10⁻³. Bound: mean < 0.5 × the mean vs float64.
 *  - ORT f16 graph vs the float64 reference on f16 weights: 1.4–2.8·10⁻⁶ (as in onnx.test.ts); bound 2·10⁻⁵.
 */
const REL_TOL_VS_F32_COMPUTE = 5e-3;
const MEAN_RATIO_VS_EMULATION = 0.5;
const ABS_TOL_ORT_VS_REF = 2e-5;


const suite = gpuSuite("f16 base", { beforeAll, afterAll }, { tmpDir: true });
const { seed, rand } = suite;

// Awkward sizes: hidden 40 / 48, MLP 72 / 88, 5 heads of 8 with 1 KV head (Qwen2), head_dim 20 ≠ 48/4 (Qwen3), odd vocabularies.
const CONFIGS: [string, ModelConfigInit][] = [
  ["qwen2 (GQA 5/1, q/k/v bias, untied)", { architecture: "qwen2", hiddenSize: 40, intermediateSize: 72, numLayers: 2, numHeads: 5, numKvHeads: 1, headDim: 8, vocabSize: 97, tieWordEmbeddings: false }],
  ["qwen3 (q/k norm, head_dim 20, tied)", { architecture: "qwen3", hiddenSize: 48, intermediateSize: 88, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 20, vocabSize: 83, tieWordEmbeddings: true, ropeTheta: 1e6 }],
];
const SLOTS = ["q", "k", "v", "o", "gate", "up", "down"] as const;

/** Three fresh rows of random lengths (left-padded in the batch). */
function randomRows(V: number): number[][] {
  return Array.from({ length: 3 }, () => Array.from({ length: 3 + Math.floor(rand() * 10) }, () => Math.floor(rand() * V)));
}

/** HF-style padded inputs for ORT / the reference: ids (pad 0), mask, positions (cumsum(mask) − 1, padding 1). */
function padded(rows: number[][]) {
  const T = Math.max(...rows.map((r) => r.length));
  const ids = rows.map((r) => [...Array(T - r.length).fill(0), ...r]);
  const mask = rows.map((r) => [...Array(T - r.length).fill(0), ...r.map(() => 1)]);
  const pos = rows.map((r) => [...Array(T - r.length).fill(1), ...r.map((_, i) => i)]);
  return { ids, mask, pos, T };
}

/** Logits [B·T·V] of a decoder (GPU: the LM-head logits kernel over the stored head, output NaN-poisoned first). */
async function decoderLogits(d: Decoder, rows: number[][]): Promise<Float64Array> {
  const e = d.engine, c = d.config, V = c.vocabSize, H = c.hiddenSize;
  return e.scope(async () => {
    const b = makeBatch(e, rows, { leftPad: true });
    const h = e.noGrad(() => d.hidden(b));
    const M = b.B * b.T;
    if (e.backend instanceof GpuBackend) {
      const out = suite.gpu.alloc(M * V * 4, "logits");
      suite.gpu.fill32(out, 0x7fc00000);
      const W = d.weights.lmHead;
      lmHeadLogits(suite.gpu, { h: h.storage as GpuBuffer, w: W.storage as GpuBuffer, wDtype: W.dtype === "f16" ? "f16" : "f32", out, M, V, H });
      const z = Float64Array.from(await suite.gpu.readF32(out, M * V));
      suite.gpu.release(out);
      return z;
    }
    const hv = await h.read(), W = await d.weights.lmHead.read();
    const z = new Float64Array(M * V);
    for (let m = 0; m < M; m++) for (let v = 0; v < V; v++) {
      let acc = 0;
      for (let i = 0; i < H; i++) acc += hv[m * H + i] * W[v * H + i];
      z[m * V + v] = acc;
    }
    return z;
  });
}

async function runOrt(model: Uint8Array, x: ReturnType<typeof padded>, V: number): Promise<Float64Array> {
  const session = await ort.InferenceSession.create(model as never, { executionProviders: ["cpu"], logSeverityLevel: 3 });
  const B = x.ids.length;
  const i64 = (a: number[][]) => new ort.Tensor("int64", BigInt64Array.from(a.flat().map(BigInt)), [B, x.T]);
  const out = await session.run({ input_ids: i64(x.ids), attention_mask: i64(x.mask), position_ids: i64(x.pos) });
  expect(out.logits.dims).toEqual([B, x.T, V]);
  const data = Float64Array.from(out.logits.data as Float32Array);
  await session.release();
  return data;
}

/** Max |a − b| and max |b| over the real (unpadded) positions; non-finite values in a count as Infinity. */
function compare(a: Float64Array, b: Float64Array, mask: number[][], V: number) {
  let maxAbs = 0, maxRef = 0, sum = 0, count = 0;
  const T = mask[0].length;
  mask.forEach((row, bi) => row.forEach((m, t) => {
    if (!m) return;
    for (let v = 0; v < V; v++) {
      const i = (bi * T + t) * V + v;
      const d = Number.isFinite(a[i]) ? Math.abs(a[i] - b[i]) : Infinity;
      maxAbs = Math.max(maxAbs, d);
      sum += d;
      count++;
      maxRef = Math.max(maxRef, Math.abs(b[i]));
    }
  }));
  return { maxAbs, maxRef, meanAbs: sum / count };
}

describe("loadDecoder with dtype: f16", () => {
  for (const [label, cfg] of CONFIGS) {
    it(`${label}: logits match ORT on the f16 ONNX export and the float64 reference on the f16 weights`, async () => {
      const dir = join(suite.dir, cfg.architecture!);
      await generateModel(dir, cfg, { seed: 7, dtype: "bf16", tokenizer: false, init: { std: 0.15 } });
      const gpuDec = (await loadDecoder(new Engine(new GpuBackend(suite.gpu)), dir, { dtype: "f16" })).decoder;
      const cpuDec = (await loadDecoder(new Engine(new CpuBackend()), dir, { dtype: "f16" })).decoder;
      const m = await loadModel(dir);
      const V = m.config.vocabSize;
      const rounded: WeightMap = new Map([...m.weights].map(([n, w]) => [n, Float64Array.from(w, roundToF16)]));
      const rows = randomRows(V);
      const x = padded(rows);
      const g = await decoderLogits(gpuDec, rows);
      const emu = await decoderLogits(cpuDec, rows);
      const ortZ = await runOrt(await buildOnnxModel(m, { dtype: "f16" }), x, V);
      const ref = Float64Array.from(referenceForward({ config: m.config, weights: rounded }, x.ids, { attentionMask: x.mask, positionIds: x.pos }).logits);
      const vsOrt = compare(g, ortZ, x.mask, V);
      const vsRef = compare(g, ref, x.mask, V);
      const vsEmu = compare(g, emu, x.mask, V);
      const ortRef = compare(ortZ, ref, x.mask, V);
      const emuRef = compare(emu, ref, x.mask, V);
      console.log(`${label}, rows of ${rows.map((r) => r.length).join("/")} tokens: GPU f16 path vs ORT f16 ${vsOrt.maxAbs.toExponential(2)}, vs float64 on f16 weights ${vsRef.maxAbs.toExponential(2)} (max |logit| ${vsRef.maxRef.toFixed(2)}); vs its float64 emulation ${vsEmu.maxAbs.toExponential(2)} (mean ${vsEmu.meanAbs.toExponential(2)}, vs ${vsRef.meanAbs.toExponential(2)} against float64); emulation vs float64 ${emuRef.maxAbs.toExponential(2)}; ORT vs float64 ${ortRef.maxAbs.toExponential(2)}`);
      expect(vsRef.maxRef).toBeGreaterThan(1);
      expect(vsOrt.maxAbs).toBeLessThan(REL_TOL_VS_F32_COMPUTE * vsOrt.maxRef);
      expect(vsRef.maxAbs).toBeLessThan(REL_TOL_VS_F32_COMPUTE * vsRef.maxRef);
      expect(vsEmu.maxAbs).toBeLessThan(REL_TOL_VS_F32_COMPUTE * vsRef.maxRef);
      expect(vsEmu.meanAbs).toBeLessThan(MEAN_RATIO_VS_EMULATION * vsRef.meanAbs);
      expect(ortRef.maxAbs).toBeLessThan(ABS_TOL_ORT_VS_REF);
      // The activation rounding is really in the GPU path (an f32-compute bug would sit at the ORT/reference level).
      expect(vsRef.maxAbs).toBeGreaterThan(10 * ortRef.maxAbs);
      // Every weight of the GPU model is f16, projections included; the fused log-probs agree with ORT's logits.
      for (const L of gpuDec.weights.layers) for (const slot of SLOTS) expect((L[slot] as F16Projection).weight.dtype).toBe("f16");
      expect(gpuDec.weights.embed.dtype).toBe("f16");
      expect(gpuDec.weights.lmHead.dtype).toBe("f16");
      const e = gpuDec.engine;
      const lp = await e.scope(async () => {
        const b = makeBatch(e, rows, { leftPad: true });
        return { logp: await e.noGrad(() => gpuDec.forward(b)).logp.read(), targets: await b.targets.read(), mask: b.lossMask };
      });
      let worstLogp = 0;
      lp.mask.forEach((on, i) => {
        if (!on) return;
        const z = ortZ.subarray(i * V, (i + 1) * V);
        const mx = Math.max(...z);
        const lse = mx + Math.log(z.reduce((acc, v) => acc + Math.exp(v - mx), 0));
        worstLogp = Math.max(worstLogp, Math.abs(lp.logp[i] - (z[lp.targets[i]] - lse)));
      });
      expect(worstLogp).toBeLessThan(2 * REL_TOL_VS_F32_COMPUTE * vsOrt.maxRef);
    });
  }

  it("input gradients through every f16 projection match the float64 emulation and the float64 model on the f16 weights", async () => {
    const dir = join(suite.dir, "grad");
    await generateModel(dir, CONFIGS[0][1], { seed: 12, dtype: "bf16", tokenizer: false, init: { std: 0.2 } });
    const rows = randomRows(CONFIGS[0][1].vocabSize!);
    const run = async (d: Decoder) => {
      const e = d.engine;
      // the gradient reaches layer 0's input norm only through the input-gradient matmuls of every layer
      const norm = d.weights.layers[0].inputNorm;
      norm.requiresGrad = true;
      return e.scope(async () => {
        const b = makeBatch(e, rows, { leftPad: true });
        const res = d.forward(b, { temperature: 0.9 });
        d.backward(res, Array.from(b.lossMask, (m, i) => (m ? Math.sin(7 * i + seed) : 0)), Array.from(b.lossMask, (m, i) => (m ? 0.3 * Math.cos(i + seed) : 0)));
        const out = { logp: await res.logp.read(), dNorm: await norm.grad!.read(), mask: b.lossMask };
        norm.grad!.dispose();
        norm.grad = null;
        return out;
      });
    };
    const gpuDec = (await loadDecoder(new Engine(new GpuBackend(suite.gpu)), dir, { dtype: "f16" })).decoder;
    const g = await run(gpuDec);
    const emu = await run((await loadDecoder(new Engine(new CpuBackend()), dir, { dtype: "f16" })).decoder);
    const refDec = await dequantizedCopy(gpuDec, new Engine(new CpuBackend()));
    expect(refDec.weights.layers[0].q).toBeInstanceOf(DenseProjection);
    const ref = await run(refDec);
    const scale = Math.max(...Array.from(ref.dNorm, Math.abs));
    expect(scale).toBeGreaterThan(1e-3);
    const rel = (a: Float64Array) => Math.max(...Array.from(a, (v, i) => Math.abs(v - ref.dNorm[i]))) / scale;
    const relEmu = Math.max(...Array.from(g.dNorm, (v, i) => Math.abs(v - emu.dNorm[i]))) / scale;
    console.log(`input gradient (layer-0 norm) over the f16 base: GPU vs float64 emulation ${relEmu.toExponential(2)}, GPU vs float64 on f16 weights ${rel(g.dNorm).toExponential(2)}, emulation vs float64 ${rel(emu.dNorm).toExponential(2)} (relative to max |grad| ${scale.toExponential(2)})`);
    g.dNorm.forEach((v, i) => expect(Number.isFinite(v), `dNorm[${i}]`).toBe(true));
    // Relative to max |grad|, 4 draws: GPU vs its emulation 3·10⁻⁷–7·10⁻⁵ (f32 arithmetic and rare rounding flips);
    // GPU vs f32 compute on the same weights 0.9–2.0·10⁻³ (the activation rounding). Bounds 1·10⁻³ and 1·10⁻².
    expect(relEmu).toBeLessThan(1e-3);
    expect(rel(g.dNorm)).toBeLessThan(1e-2);
    expect(rel(g.dNorm)).toBeGreaterThan(relEmu); // the emulation is the closer reference
  });

  it("halves the device memory of the base weights (buffer pool)", async () => {
    const dir = join(suite.dir, "mem");
    const cfg: ModelConfigInit = { architecture: "qwen2", hiddenSize: 128, intermediateSize: 352, numLayers: 2, numHeads: 4, numKvHeads: 2, vocabSize: 512, tieWordEmbeddings: false };
    await generateModel(dir, cfg, { seed: 3, dtype: "bf16", tokenizer: false });
    const bytes: Record<string, number> = {};
    for (const dtype of ["f32", "f16"] as const) {
      await suite.gpu.sync();
      suite.gpu.pool.trim();
      const before = suite.gpu.pool.getStats().allocatedBytes;
      const e = new Engine(new GpuBackend(suite.gpu));
      const { decoder } = await loadDecoder(e, dir, { dtype });
      await suite.gpu.sync();
      bytes[dtype] = suite.gpu.pool.getStats().allocatedBytes - before;
      const W = decoder.weights;
      const big = [W.embed, W.lmHead, ...W.layers.flatMap((L) => SLOTS.map((s) => (L[s] as F16Projection | DenseProjection).weight))];
      bytes[`${dtype}-weights`] = big.reduce((acc, t) => acc + (t.storage as GpuBuffer).buffer.size, 0);
      for (const t of big) t.dispose();
      for (const L of W.layers) for (const t of [L.inputNorm, L.postAttentionNorm, ...SLOTS.map((s) => (L[s] as DenseProjection).bias)]) t?.dispose();
      W.finalNorm.dispose();
    }
    console.log(`base on the pool: f32 ${bytes.f32} B, f16 ${bytes.f16} B (ratio ${(bytes.f16 / bytes.f32).toFixed(3)}); linear + embedding + head: f32 ${bytes["f32-weights"]} B, f16 ${bytes["f16-weights"]} B`);
    expect(bytes["f16-weights"]).toBe(bytes["f32-weights"] / 2); // size classes scale exactly by 2 above 256 B
    expect(bytes.f16).toBeLessThan(0.52 * bytes.f32); // norms and biases (f32) are the rest
  });

  it("loads a bf16 checkpoint exactly (bf16 → f16), refuses values beyond the f16 range, a trainable f16 base, NF4 and bad dtypes", async () => {
    const dir = join(suite.dir, "bf16");
    const cfg = CONFIGS[1][1];
    await generateModel(dir, cfg, { seed: 21, dtype: "bf16", tokenizer: false, init: { std: 0.3 } });
    const { decoder } = await loadDecoder(new Engine(new GpuBackend(suite.gpu)), dir, { dtype: "f16" });
    const ck = await SafetensorsCheckpoint.open(dir);
    expect(ck.info(paramName("q", 0)).dtype).toBe("BF16");
    for (const [i, L] of decoder.weights.layers.entries())
      for (const slot of SLOTS) {
        const p = L[slot] as F16Projection;
        const want = await ck.readF32(paramName(slot, i));
        // bf16 has 8 significant bits: every value ≥ 2⁻¹⁴ in magnitude is an f16 value (these weights are N(0, 0.3))
        expect(Array.from(await p.weight.read()), `${paramName(slot, i)}`).toEqual(Array.from(want, roundToF16));
        expect(Array.from(want).filter((v) => v !== roundToF16(v)).length, "bf16 values that f16 cannot hold").toBeLessThan(want.length * 1e-3);
      }
    expect(Array.from(await decoder.weights.embed.read())).toEqual(Array.from(await ck.readF32(paramName("embed")), roundToF16));
    // A bf16 weight of 70000 (a bf16 value; f16 tops out at 65504) is an error naming the tensor, not a clamp.
    const tensors: TensorToWrite[] = [];
    const names = ck.names();
    for (const n of names) {
      const v = await ck.readF32(n);
      if (n === paramName("up", 1)) v[5] = 70000;
      tensors.push({ name: n, dtype: "BF16", shape: [...ck.info(n).shape], data: encodeFloats(v, "BF16") });
    }
    await ck.close();
    expect(bf16BitsToNumber(toBf16Bits(70000))).toBeGreaterThan(65504);
    const big = join(suite.dir, "big");
    await generateModel(big, cfg, { seed: 21, dtype: "bf16", tokenizer: false });
    await writeSafetensorsCheckpoint(big, tensors);
    const e = new Engine(new GpuBackend(suite.gpu));
    await expect(loadDecoder(e, big, { dtype: "f16" })).rejects.toThrow(/model\.layers\.1\.mlp\.up_proj\.weight holds 70\d+ at element 5, outside the f16 range/);
    expect((await loadDecoder(e, big)).decoder).toBeTruthy(); // f32 loads it
    await expect(loadDecoder(e, dir, { dtype: "f16", trainable: true })).rejects.toThrow(/an f16 base is frozen.*train LoRA adapters/);
    await expect(loadDecoder(e, dir, { dtype: "f16", quant: "nf4" })).rejects.toThrow(/cannot be combined with NF4/);
    await expect(loadDecoder(e, dir, { dtype: "bf16" as "f16" })).rejects.toThrow(/dtype must be "f32" or "f16"/);
    // An adapter without shader-f16 (the same device with the feature hidden) is refused up front.
    const noF16 = Object.create(suite.gpu, { hasF16: { value: false } }) as Gpu;
    await expect(loadDecoder(new Engine(new GpuBackend(noF16)), dir, { dtype: "f16" })).rejects.toThrow(/needs the shader-f16 feature/);
    // The frozen weights refuse a gradient in the op itself too.
    const w = (decoder.weights.layers[0].q as F16Projection).weight;
    w.requiresGrad = true;
    expect(() => decoder.weights.layers[0].q.forward(decoder.engine.zeros([2, cfg.hiddenSize!]))).toThrow(/frozen base/);
    w.requiresGrad = false;
  });
});
