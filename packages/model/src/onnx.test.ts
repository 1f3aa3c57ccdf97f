// ONNX export checked against the float64 reference through onnxruntime-node (CPU EP): an oracle that shares no code
// with reference.ts beyond the weights.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import onnxProto from "onnx-proto";
import { generateModel } from "./generate.js";
import { loadModel, type LoadedModel, type WeightMap } from "./checkpoint.js";
import { parameterSpecs, toHfConfig, type ModelConfigInit } from "./config.js";
import { dynamicMap, NF4_CODE, nf4DequantizeReference, nf4QuantizeReference } from "@nr/kernels";
import { bnbNf4Tensors } from "./bnb.js";
import { encodeFloats, writeSafetensorsCheckpoint, type SafetensorsDtype, type TensorToWrite } from "./safetensors.js";
import { referenceForward } from "./reference.js";
import { buildOnnxModel, exportOnnx, ONNX_OPSET } from "./onnx.js";
import { roundToF16 } from "./dtypes.js";

const { onnx } = onnxProto;

/**
 * Tolerances (float32 graph vs float64 reference, tiny models with weights ~N(0, 0.15), max |logit| ≈ 4.4–4.8):
 * measured max abs error 3.4–3.7·10⁻⁶ (relative to max |logit| 7–9·10⁻⁷), so 2·10⁻⁵ absolute and 1·10⁻⁵ relative
 * leave a 5–10× margin.
 */
const ABS_TOL = 2e-5;
const REL_TOL = 1e-5;

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "nr-onnx-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

// two rows, the second left-padded by 3
const IDS = [
  [12, 40, 77, 3, 150, 201, 9, 64, 33],
  [0, 0, 0, 88, 19, 250, 5, 120, 71],
];
const MASK = [
  [1, 1, 1, 1, 1, 1, 1, 1, 1],
  [0, 0, 0, 1, 1, 1, 1, 1, 1],
];

async function runOrt(model: Uint8Array | string, ids: number[][], mask: number[][], pos: number[][], V: number): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(model as never, { executionProviders: ["cpu"], logSeverityLevel: 3 });
  const B = ids.length;
  const T = ids[0].length;
  const i64 = (a: number[][]) => new ort.Tensor("int64", BigInt64Array.from(a.flat().map(BigInt)), [B, T]);
  const out = await session.run({ input_ids: i64(ids), attention_mask: i64(mask), position_ids: i64(pos) });
  expect(out.logits.dims).toEqual([B, T, V]);
  const data = out.logits.data as Float32Array;
  await session.release();
  return data;
}

/** Max abs error and max |reference| over the non-padded positions. */
function compare(ref: Float64Array, got: Float32Array, mask: number[][], V: number): { maxAbs: number; maxRef: number; rel: number } {
  let maxAbs = 0;
  let maxRef = 0;
  const T = mask[0].length;
  for (let b = 0; b < mask.length; b++)
    for (let t = 0; t < T; t++) {
      if (!mask[b][t]) continue;
      for (let v = 0; v < V; v++) {
        const i = (b * T + t) * V + v;
        maxAbs = Math.max(maxAbs, Math.abs(got[i] - ref[i]));
        maxRef = Math.max(maxRef, Math.abs(ref[i]));
      }
    }
  return { maxAbs, maxRef, rel: maxAbs / maxRef };
}

const CONFIGS: [string, ModelConfigInit][] = [
  ["qwen2 (GQA 4/2, q/k/v bias, untied)", { architecture: "qwen2", hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, vocabSize: 300 }],
  ["qwen3 (q/k norm, head_dim 24 ≠ 64/4, tied)", { architecture: "qwen3", hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 24, tieWordEmbeddings: true, vocabSize: 300, ropeTheta: 1e6 }],
  ["llama (MHA, attention bias, untied)", { architecture: "llama", hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 4, attentionBias: true, vocabSize: 300 }],
];

describe("ONNX export vs float64 reference (onnxruntime-node CPU)", () => {
  const loaded: LoadedModel[] = [];

  CONFIGS.forEach(([label, cfg], k) => {
    it(`${label}: f32 weights, left padding`, async () => {
      const g = await generateModel(join(root, `m${k}`), cfg, { seed: 100 + k, dtype: "f32", init: { std: 0.15 } });
      const m = await loadModel(g.dir);
      loaded[k] = m;
      const ref = referenceForward(m, IDS, { attentionMask: MASK });
      const got = await runOrt(await buildOnnxModel(m), IDS, MASK, ref.positionIds, m.config.vocabSize);
      const err = compare(ref.logits, got, MASK, m.config.vocabSize);
      console.log(`ORT f32 vs float64 reference, ${label}: max abs ${err.maxAbs.toExponential(2)}, max |logit| ${err.maxRef.toFixed(3)}, rel ${err.rel.toExponential(2)}`);
      expect(err.maxRef).toBeGreaterThan(0.5);
      expect(err.maxAbs).toBeLessThan(ABS_TOL);
      expect(err.rel).toBeLessThan(REL_TOL);
    });

    it(`${label}: f16 weights match the reference on f16-rounded weights`, async () => {
      const m = loaded[k];
      const rounded: WeightMap = new Map([...m.weights].map(([n, w]) => [n, Float64Array.from(w, roundToF16)]));
      const ref16 = referenceForward({ config: m.config, weights: rounded }, IDS, { attentionMask: MASK });
      const ref32 = referenceForward(m, IDS, { attentionMask: MASK });
      const bytes = await buildOnnxModel(m, { dtype: "f16" });
      const got = await runOrt(bytes, IDS, MASK, ref16.positionIds, m.config.vocabSize);
      const err = compare(ref16.logits, got, MASK, m.config.vocabSize);
      const vsF32 = compare(ref32.logits, got, MASK, m.config.vocabSize);
      console.log(`ORT f16-weights vs float64 reference on f16 weights, ${label}: max abs ${err.maxAbs.toExponential(2)} (vs f32 weights: ${vsF32.maxAbs.toExponential(2)})`);
      expect(err.maxAbs).toBeLessThan(ABS_TOL);
      expect(vsF32.maxAbs).toBeGreaterThan(10 * err.maxAbs); // the f16 rounding is really in the graph
      expect(bytes.length).toBeLessThan((await buildOnnxModel(m)).length * 0.6);
    });
  });

  it("KV-cache graph: a prefill then one token at a time (left padding) gives the reference's logits at every position", async () => {
    // qwen3 config: q/k norm and head_dim ≠ hidden/heads, so the cache shapes use head_dim
    const m = loaded[1] ?? (await loadModel((await generateModel(join(root, "kv"), CONFIGS[1][1], { seed: 7, init: { std: 0.15 } })).dir));
    const { numLayers: L, numKvHeads: Hkv, headDim: D, vocabSize: V } = m.config;
    const ref = referenceForward(m, IDS, { attentionMask: MASK });
    const session = await ort.InferenceSession.create(await buildOnnxModel(m, { kvCache: true }), { executionProviders: ["cpu"], logSeverityLevel: 3 });
    const B = IDS.length;
    const T = IDS[0].length;
    const i64 = (rows: number[][]) => new ort.Tensor("int64", BigInt64Array.from(rows.flat().map(BigInt)), [rows.length, rows[0].length]);
    let past: Record<string, ort.Tensor> = {};
    for (let l = 0; l < L; l++) for (const kind of ["key", "value"]) past[`past_key_values.${l}.${kind}`] = new ort.Tensor("float32", new Float32Array(0), [B, Hkv, 0, D]);
    let worst = 0;
    // chunks: 5 prompt tokens, then 1 token per call
    for (let start = 0; start < T; ) {
      const end = start === 0 ? 5 : start + 1;
      const cols = (a: number[][], from: number, to: number) => a.map((r) => r.slice(from, to));
      const out = await session.run({ input_ids: i64(cols(IDS, start, end)), attention_mask: i64(cols(MASK, 0, end)), position_ids: i64(cols(ref.positionIds, start, end)), ...past });
      expect(out.logits.dims).toEqual([B, end - start, V]);
      const got = out.logits.data as Float32Array;
      for (let b = 0; b < B; b++)
        for (let t = start; t < end; t++) {
          if (!MASK[b][t]) continue;
          for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(got[(b * (end - start) + t - start) * V + v] - ref.logits[(b * T + t) * V + v]));
        }
      past = {};
      for (let l = 0; l < L; l++)
        for (const kind of ["key", "value"]) {
          const present = out[`present.${l}.${kind}`];
          expect(present.dims).toEqual([B, Hkv, end, D]);
          past[`past_key_values.${l}.${kind}`] = present;
        }
      start = end;
    }
    await session.release();
    console.log(`ORT KV-cache graph (prefill 5, then 1 token per call) vs float64 reference: max abs ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(ABS_TOL);
  });

  it("exportOnnx streams a sharded bf16 checkpoint to external data; ORT loads it from disk", async () => {
    const g = await generateModel(join(root, "bf16"), CONFIGS[0][1], { seed: 5, dtype: "bf16", shards: 2, init: { std: 0.15 } });
    const m = await loadModel(g.dir);
    const ref = referenceForward(m, IDS, { attentionMask: MASK });
    const out = join(root, "bf16.onnx");
    const res = await exportOnnx(g.dir, out, { externalData: true });
    expect(res.dataPath).toBe(`${out}_data`);
    expect((await stat(out)).size).toBeLessThan(64 << 10); // graph only
    expect((await stat(res.dataPath!)).size).toBeGreaterThan(m.config.vocabSize * m.config.hiddenSize * 4);
    const got = await runOrt(out, IDS, MASK, ref.positionIds, m.config.vocabSize);
    const err = compare(ref.logits, got, MASK, m.config.vocabSize);
    expect(err.maxAbs).toBeLessThan(ABS_TOL);
    // inline f16 export from the same folder
    const inline = await exportOnnx(g.dir, join(root, "bf16-f16.onnx"), { dtype: "f16" });
    expect(inline.dataPath).toBeNull();
    const got16 = await runOrt(inline.path, IDS, MASK, ref.positionIds, m.config.vocabSize);
    // bf16 values of this magnitude are exact in f16: same numbers as the f32 export
    expect(compare(ref.logits, got16, MASK, m.config.vocabSize).maxAbs).toBeLessThan(ABS_TOL);
  });

  it("a bitsandbytes NF4 checkpoint exports its dequantised weights (= reference on host-dequantised weights)", async () => {
    const cfg = CONFIGS[0][1];
    const src = await generateModel(join(root, "bnb-src"), cfg, { seed: 9, dtype: "f32", tokenizer: false, init: { std: 0.15 } });
    const m = await loadModel(src.dir);
    // quantise every per-layer linear weight on the host as bitsandbytes does (double quant), store it in bnb's layout
    const dequant: WeightMap = new Map(m.weights);
    const tensors: TensorToWrite[] = [];
    for (const spec of parameterSpecs(m.config)) {
      const w = Float32Array.from(m.weights.get(spec.name)!);
      if (spec.kind !== "linear" || spec.layer === null) {
        tensors.push({ name: spec.name, dtype: "F32", shape: spec.shape, data: encodeFloats(w, "F32") });
        continue;
      }
      const q = nf4QuantizeReference(w, { blocksize: 64, doubleQuant: true });
      dequant.set(spec.name, nf4DequantizeReference(q.packed, q.scales, w.length, 64));
      const state = { shape: spec.shape as [number, number], blocksize: 64, dtype: "float32", packed: q.packed, quantMap: NF4_CODE, absmax: null, nested: { qabsmax: q.qabsmax!, absmax2: q.absmax2!, quantMap: dynamicMap(), blocksize: 256, offset: q.offset!, dtype: "float32" } };
      for (const [name, t] of Object.entries(bnbNf4Tensors(state, spec.name))) tensors.push({ name, dtype: t.dtype as SafetensorsDtype, shape: t.shape, data: t.bytes });
    }
    const bnbDir = join(root, "bnb-nf4");
    await mkdir(bnbDir, { recursive: true });
    await writeSafetensorsCheckpoint(bnbDir, tensors);
    await writeFile(join(bnbDir, "config.json"), JSON.stringify({ ...toHfConfig(m.config), quantization_config: { load_in_4bit: true, bnb_4bit_quant_type: "nf4", bnb_4bit_use_double_quant: true } }));

    const out = join(root, "bnb-nf4.onnx");
    await exportOnnx(bnbDir, out);
    const ref = referenceForward({ config: m.config, weights: dequant }, IDS, { attentionMask: MASK });
    const got = await runOrt(out, IDS, MASK, ref.positionIds, m.config.vocabSize);
    const err = compare(ref.logits, got, MASK, m.config.vocabSize);
    const vsFull = compare(referenceForward(m, IDS, { attentionMask: MASK }).logits, got, MASK, m.config.vocabSize);
    console.log(`bnb NF4 checkpoint → ONNX vs float64 reference on the dequantised weights: max abs ${err.maxAbs.toExponential(2)} (vs the unquantised weights: ${vsFull.maxAbs.toExponential(2)})`);
    expect(err.maxAbs).toBeLessThan(ABS_TOL);
    expect(vsFull.maxAbs).toBeGreaterThan(100 * ABS_TOL); // the NF4 rounding is really in the graph
  });

  it("uses only standard opset-17 ops with the documented inputs and output", async () => {
    const bytes = await buildOnnxModel(loaded[1] ?? (await loadModel((await generateModel(join(root, "ops"), CONFIGS[1][1], { init: { std: 0.15 } })).dir)));
    const model = onnx.ModelProto.decode(bytes);
    expect(model.opsetImport.map((o) => [o.domain ?? "", Number(o.version)])).toEqual([["", ONNX_OPSET]]);
    const ops = new Set(model.graph!.node!.map((n) => n.opType!));
    for (const n of model.graph!.node!) expect(n.domain ?? "").toBe("");
    const allowed = ["Gather", "MatMul", "Add", "Sub", "Mul", "Div", "Sqrt", "ReduceMean", "Cast", "Unsqueeze", "Concat", "Cos", "Sin", "Split", "Neg", "Reshape", "Transpose", "Expand", "Shape", "Range", "LessOrEqual", "And", "Where", "Softmax", "Sigmoid", "Identity"];
    expect([...ops].filter((o) => !allowed.includes(o))).toEqual([]);
    expect(model.graph!.input!.map((i) => i.name)).toEqual(["input_ids", "attention_mask", "position_ids"]);
    expect(model.graph!.output!.map((o) => o.name)).toEqual(["logits"]);
  });
});
