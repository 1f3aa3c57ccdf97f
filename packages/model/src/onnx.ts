// Export of a Qwen2/Qwen3/Llama checkpoint to a standard ONNX graph (opset 17, default domain only), built with
// onnx-proto — usable by onnxruntime (any EP) and transformers.js-style runtimes, and an oracle independent of the
// float64 reference in reference.ts.
//
// Inputs:  input_ids [batch, seq] int64, attention_mask [batch, past + seq] int64 (1 = token, 0 = padding),
//          position_ids [batch, seq] int64,
//          with `kvCache`: past_key_values.{i}.key / .value [batch, kv_heads, past, head_dim] float32.
// Outputs: logits [batch, seq, vocab] float32,
//          with `kvCache`: present.{i}.key / .value [batch, kv_heads, past + seq, head_dim] float32 (past ++ new).
// These are the names, layouts and dtypes transformers.js v3 feeds a decoder-only model with past (its
// getCacheShapes / addPastKeyValues / getPastKeyValues): the first call gets past tensors of length 0, each later
// call the previous call's present tensors renamed. Without `kvCache` the graph computes the whole sequence.
//
// Ops: Gather (embedding), MatMul (+Add for biases) with weights stored transposed [in, out], RMSNorm as
// Mul/ReduceMean/Add/Sqrt/Div/Mul, RoPE from cos/sin of position_ids·inv_freq computed in the graph (float32, as HF),
// rotate-half through Split/Neg/Concat, GQA through Unsqueeze/Expand/Reshape of k and v, causal ∧ padding mask through
// Range/LessOrEqual/And/Where (masked scores get −1e9, so a fully padded row is finite), Softmax, SiLU as x·Sigmoid(x).
//
// dtype "f16" stores every weight as float16 and casts it to float32 in the graph (half the size; compute stays f32).
// Weights go inline, or — for large models (protobuf caps a file at 2 GiB) — into `<out>_data` as ONNX external data.
import { open, writeFile, type FileHandle } from "node:fs/promises";
import { basename } from "node:path";
import onnxProto from "onnx-proto";
import { HF_NAMES, paramName, parameterSpecs, type ModelConfig, type ParamRole } from "./config.js";
import { openCheckpoint, type WeightMap } from "./checkpoint.js";
import { f32ToF16 } from "./dtypes.js";
import { nf4DequantizeReference, nf4HostScales } from "@nr/kernels";
import { parseBnbNf4 } from "./bnb.js";
import { readBnbTensors } from "./load.js";
import type { TensorSource } from "./safetensors.js";

const { onnx } = onnxProto;

export type OnnxWeightDtype = "f32" | "f16";

export interface OnnxExportOptions {
  /** Weight storage: "f32" (default) or "f16" (cast to f32 in the graph). */
  dtype?: OnnxWeightDtype;
  /** Put weights in `<out>_data` (external data). "auto" (default): when they exceed 1 GiB. */
  externalData?: boolean | "auto";
  /** Start another external data file where one would pass this size (default just under 2 GiB). */
  externalDataChunkBytes?: number;
  /** Add the past_key_values inputs and present outputs (see the header). Default false. */
  kvCache?: boolean;
  /** Replaces a weight (by HF name) before it is written, e.g. to merge a LoRA adapter into it. */
  mapWeight?: WeightMapper;
}

/** Returns the values to export for parameter `name` given the stored ones (same length). */
export type WeightMapper = (name: string, values: Float32Array | Float64Array) => Float32Array | Float64Array | Promise<Float32Array | Float64Array>;

export interface OnnxExportResult {
  path: string;
  /** The (first) external data file, when one was written. */
  dataPath: string | null;
  /** Every external data file, in order (`<out>_data`, `<out>_data_1`, …). */
  dataPaths: string[];
  /** Bytes of weights written. */
  weightBytes: number;
}

/** Graph input / output names of the KV cache, as transformers.js names them. */
export const pastName = (layer: number, kind: "key" | "value") => `past_key_values.${layer}.${kind}`;
export const presentName = (layer: number, kind: "key" | "value") => `present.${layer}.${kind}`;

const ELEM = { FLOAT: 1, BOOL: 9, INT64: 7, FLOAT16: 10 } as const;
/** Opset of the default domain the graph uses. */
export const ONNX_OPSET = 17;
/** Value added to the attention scores of masked keys. */
export const MASK_VALUE = -1e9;

type Attr = number | number[] | string;

interface NodeSpec {
  opType: string;
  input: string[];
  output: string[];
  attribute: ReturnType<typeof attribute>[];
  name: string;
}

function attribute(name: string, v: Attr, forceFloat = false) {
  const A = onnx.AttributeProto.AttributeType;
  if (typeof v === "string") return { name, type: A.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: A.INTS, ints: v };
  return Number.isInteger(v) && !forceFloat ? { name, type: A.INT, i: v } : { name, type: A.FLOAT, f: v };
}

interface InitializerSink {
  add(name: string, elemType: number, dims: number[], bytes: Uint8Array): Promise<void>;
}

/** Collects graph nodes and initializers with unique names. */
class Graph {
  readonly nodes: NodeSpec[] = [];
  private n = 0;
  constructor(readonly sink: InitializerSink) {}

  private fresh(hint: string): string {
    return `${hint}_${this.n++}`;
  }

  op(opType: string, input: string[], attrs: Record<string, Attr> = {}, hint = opType.toLowerCase(), floatAttrs: string[] = []): string {
    const out = this.fresh(hint);
    this.nodes.push({
      opType,
      input,
      output: [out],
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v, floatAttrs.includes(k))),
      name: `${opType}_${this.nodes.length}`,
    });
    return out;
  }

  /** A node whose single output has a fixed name (a graph output). */
  named(opType: string, input: string[], output: string, attrs: Record<string, Attr> = {}): string {
    this.nodes.push({ opType, input, output: [output], attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)), name: `${opType}_${this.nodes.length}` });
    return output;
  }

  opMulti(opType: string, input: string[], outputs: number, attrs: Record<string, Attr> = {}): string[] {
    const outs = Array.from({ length: outputs }, () => this.fresh(opType.toLowerCase()));
    this.nodes.push({ opType, input, output: outs, attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)), name: `${opType}_${this.nodes.length}` });
    return outs;
  }

  async constant(name: string, elemType: number, dims: number[], data: ArrayBufferView): Promise<string> {
    await this.sink.add(name, elemType, dims, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return name;
  }

  async int64s(values: number[], hint: string): Promise<string> {
    return this.constant(this.fresh(hint), ELEM.INT64, [values.length], BigInt64Array.from(values.map(BigInt)));
  }

  async scalarF32(v: number, hint: string): Promise<string> {
    return this.constant(this.fresh(hint), ELEM.FLOAT, [], Float32Array.of(v));
  }
}

/** Provides the f32 values of a parameter by HF name. */
type WeightSource = (name: string) => Promise<Float32Array | Float64Array>;

function transpose(w: Float32Array | Float64Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = w[r * cols + c];
  return out;
}

async function buildGraph(cfg: ModelConfig, weights: WeightSource, g: Graph, dtype: OnnxWeightDtype, kvCache: boolean) {
  const H = cfg.hiddenSize;
  const D = cfg.headDim;
  const Hq = cfg.numHeads;
  const Hkv = cfg.numKvHeads;
  const G = Hq / Hkv;
  const I = cfg.intermediateSize;
  const V = cfg.vocabSize;

  /** A weight initializer (stored in `dtype`, cast to f32 in the graph when f16). */
  const weight = async (name: string, values: Float32Array, dims: number[]): Promise<string> => {
    if (dtype === "f32") return g.constant(name, ELEM.FLOAT, dims, values);
    await g.constant(name, ELEM.FLOAT16, dims, f32ToF16(values));
    return g.op("Cast", [name], { to: ELEM.FLOAT }, "w32");
  };
  const asF32 = (w: Float32Array | Float64Array) => (w instanceof Float32Array ? w : Float32Array.from(w));
  /** Linear weight [out, in] stored as [in, out] for MatMul. */
  const linearW = async (role: ParamRole, layer: number | undefined, out: number, inp: number) =>
    weight(`${paramName(role, layer)}.T`, transpose(await weights(paramName(role, layer)), out, inp), [inp, out]);
  const vecW = async (role: ParamRole, layer: number | undefined, n: number) => weight(paramName(role, layer), asF32(await weights(paramName(role, layer))), [n]);

  const eps = await g.scalarF32(cfg.rmsNormEps, "eps");
  const axisLast = await g.int64s([-1], "axis_last");
  const rmsNorm = (x: string, w: string) => {
    const ms = g.op("ReduceMean", [g.op("Mul", [x, x], {}, "sq")], { axes: [-1], keepdims: 1 }, "ms");
    const r = g.op("Sqrt", [g.op("Add", [ms, eps])], {}, "rms");
    return g.op("Mul", [g.op("Div", [x, r], {}, "normed"), w], {}, "rmsnorm");
  };

  // embeddings
  const embedName = HF_NAMES.embed;
  const embedValues = asF32(await weights(embedName));
  const embed = await weight(embedName, embedValues, [V, H]);
  let h = g.op("Gather", [embed, "input_ids"], { axis: 0 }, "embeds");

  // RoPE tables: angle = float(position_ids)[..., None] · inv_freq, duplicated for both halves → [B, T, 1, D]
  const invFreq = new Float32Array(D / 2);
  for (let i = 0; i < D / 2; i++) invFreq[i] = Math.pow(cfg.ropeTheta, (-2 * i) / D);
  const invFreqName = await g.constant("rope.inv_freq", ELEM.FLOAT, [D / 2], invFreq);
  const posF = g.op("Cast", ["position_ids"], { to: ELEM.FLOAT }, "pos_f");
  const ang = g.op("Mul", [g.op("Unsqueeze", [posF, axisLast]), invFreqName], {}, "angle");
  const ang2 = g.op("Concat", [ang, ang], { axis: -1 }, "angle2");
  const axis2 = await g.int64s([2], "axis2");
  const cos = g.op("Unsqueeze", [g.op("Cos", [ang2]), axis2], {}, "cos");
  const sin = g.op("Unsqueeze", [g.op("Sin", [ang2]), axis2], {}, "sin");
  const halves = await g.int64s([D / 2, D / 2], "halves");
  /** x [B, T, heads, D] → x·cos + rotate_half(x)·sin */
  const rope = (x: string) => {
    const [x1, x2] = g.opMulti("Split", [x, halves], 2, { axis: -1 });
    const rot = g.op("Concat", [g.op("Neg", [x2]), x1], { axis: -1 }, "rot");
    return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [rot, sin])], {}, "roped");
  };

  // attention bias [B, 1, T, L] over the L = past + T keys: 0 where key j ≤ past + query i (its absolute position)
  // and attention_mask[j] = 1, else MASK_VALUE. Without a cache past = L − T = 0.
  const one = await g.constant("const.one_i64_scalar", ELEM.INT64, [], BigInt64Array.of(1n));
  const zero = await g.constant("const.zero_i64", ELEM.INT64, [], BigInt64Array.of(0n));
  const seqLen = g.op("Gather", [g.op("Shape", ["input_ids"], {}, "ids_shape"), one], { axis: 0 }, "seq_len");
  const totalLen = g.op("Gather", [g.op("Shape", ["attention_mask"], {}, "mask_shape"), one], { axis: 0 }, "total_len");
  const pastLen = g.op("Sub", [totalLen, seqLen], {}, "past_len");
  const queryPos = g.op("Range", [pastLen, totalLen, one], {}, "query_pos");
  const rows = g.op("Unsqueeze", [queryPos, await g.int64s([1], "axis1")], {}, "rows");
  const cols = g.op("Unsqueeze", [g.op("Range", [zero, totalLen, one], {}, "key_pos"), await g.int64s([0], "axis0")], {}, "cols");
  const causal = g.op("LessOrEqual", [cols, rows], {}, "causal");
  const keyMask = g.op("Unsqueeze", [g.op("Cast", ["attention_mask"], { to: ELEM.BOOL }), await g.int64s([1, 2], "axes12")], {}, "key_mask");
  const allowed = g.op("And", [causal, keyMask], {}, "allowed");
  const attnBias = g.op("Where", [allowed, await g.scalarF32(0, "zero"), await g.scalarF32(MASK_VALUE, "masked")], {}, "attn_bias");

  const qShape = await g.int64s([0, 0, Hq, D], "q_shape");
  const kvShape = await g.int64s([0, 0, Hkv, D], "kv_shape");
  const mergedShape = await g.int64s([0, 0, Hq * D], "merged_shape");
  const gqaExpand = await g.int64s([1, 1, G, 1, 1], "gqa_expand");
  const gqaShape = await g.int64s([0, Hq, -1, D], "gqa_shape");
  const scale = await g.scalarF32(1 / Math.sqrt(D), "scale");
  /** [B, Hkv, T, D] → [B, Hq, T, D] (each kv head repeated G times, consecutive query heads share one). */
  const repeatKv = (x: string) => (G === 1 ? x : g.op("Reshape", [g.op("Expand", [g.op("Unsqueeze", [x, axis2]), gqaExpand]), gqaShape], {}, "kv_rep"));

  const proj = async (x: string, role: ParamRole, biasRole: ParamRole | null, layer: number, out: number, inp: number) => {
    let y = g.op("MatMul", [x, await linearW(role, layer, out, inp)], {}, role);
    if (biasRole) y = g.op("Add", [y, await vecW(biasRole, layer, out)], {}, `${role}_b`);
    return y;
  };

  for (let l = 0; l < cfg.numLayers; l++) {
    const a = rmsNorm(h, await vecW("inputNorm", l, H));
    let q = g.op("Reshape", [await proj(a, "q", cfg.qkvBias ? "qBias" : null, l, Hq * D, H), qShape], {}, "q4");
    let k = g.op("Reshape", [await proj(a, "k", cfg.qkvBias ? "kBias" : null, l, Hkv * D, H), kvShape], {}, "k4");
    const v = g.op("Reshape", [await proj(a, "v", cfg.qkvBias ? "vBias" : null, l, Hkv * D, H), kvShape], {}, "v4");
    if (cfg.qkNorm) {
      q = rmsNorm(q, await vecW("qNorm", l, D));
      k = rmsNorm(k, await vecW("kNorm", l, D));
    }
    q = g.op("Transpose", [rope(q)], { perm: [0, 2, 1, 3] }, "qt");
    // keys and values [B, Hkv, T, D]; with a cache, past ++ new is both what attention reads and `present`
    let kAll = g.op("Transpose", [rope(k)], { perm: [0, 2, 1, 3] }, "kt");
    let vAll = g.op("Transpose", [v], { perm: [0, 2, 1, 3] }, "vt");
    if (kvCache) {
      kAll = g.named("Concat", [pastName(l, "key"), kAll], presentName(l, "key"), { axis: 2 });
      vAll = g.named("Concat", [pastName(l, "value"), vAll], presentName(l, "value"), { axis: 2 });
    }
    const kt = repeatKv(kAll);
    const vt = repeatKv(vAll);
    const scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [kt], { perm: [0, 1, 3, 2] })]), scale]), attnBias], {}, "scores");
    const probs = g.op("Softmax", [scores], { axis: -1 }, "probs");
    const ctx = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [probs, vt])], { perm: [0, 2, 1, 3] }), mergedShape], {}, "ctx");
    h = g.op("Add", [h, await proj(ctx, "o", cfg.oBias ? "oBias" : null, l, H, Hq * D)], {}, "resid_attn");

    const m = rmsNorm(h, await vecW("postAttnNorm", l, H));
    const gate = await proj(m, "gate", null, l, I, H);
    const up = await proj(m, "up", null, l, I, H);
    const act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])], {}, "silu"), up], {}, "swiglu");
    h = g.op("Add", [h, await proj(act, "down", null, l, H, I)], {}, "resid_mlp");
  }

  const f = rmsNorm(h, await vecW("finalNorm", undefined, H));
  let headT: string;
  if (cfg.tieWordEmbeddings) headT = g.op("Transpose", [embed], { perm: [1, 0] }, "lm_head_t");
  else headT = await linearW("lmHead", undefined, V, H);
  const logits = g.op("MatMul", [f, headT], {}, "logits_mm");
  g.named("Identity", [logits], "logits");
}

/** Every cache tensor name in layer order (key, value), or none without a cache. */
const cacheNames = (cfg: ModelConfig, kvCache: boolean, name: typeof pastName) =>
  kvCache ? Array.from({ length: cfg.numLayers }, (_, l) => [name(l, "key"), name(l, "value")]).flat() : [];

interface StoredInit {
  name: string;
  dataType: number;
  dims: number[];
  rawData?: Uint8Array;
  externalData?: { key: string; value: string }[];
  dataLocation?: number;
}

function serialise(cfg: ModelConfig, g: Graph, inits: StoredInit[], kvCache: boolean): Uint8Array {
  const io = (name: string, elemType: number, dims: (number | string)[]) => ({
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) } } },
  });
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: "@nr/model",
    producerVersion: "0.1.0",
    opsetImport: [{ domain: "", version: ONNX_OPSET }],
    metadataProps: [
      { key: "model_type", value: cfg.architecture },
      { key: "config", value: JSON.stringify({ ...cfg, raw: undefined }) },
    ],
    graph: {
      name: `${cfg.architecture}_decoder`,
      node: g.nodes,
      input: [
        io("input_ids", ELEM.INT64, ["batch", "seq"]),
        io("attention_mask", ELEM.INT64, ["batch", kvCache ? "past_seq + seq" : "seq"]),
        io("position_ids", ELEM.INT64, ["batch", "seq"]),
        ...cacheNames(cfg, kvCache, pastName).map((n) => io(n, ELEM.FLOAT, ["batch", cfg.numKvHeads, "past_seq", cfg.headDim])),
      ],
      output: [io("logits", ELEM.FLOAT, ["batch", "seq", cfg.vocabSize]), ...cacheNames(cfg, kvCache, presentName).map((n) => io(n, ELEM.FLOAT, ["batch", cfg.numKvHeads, "past_seq + seq", cfg.headDim]))],
      initializer: inits,
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

/** Builds the ONNX model of in-memory weights (inline initializers). For small models; see {@link exportOnnx}. */
export async function buildOnnxModel(model: { config: ModelConfig; weights: WeightMap }, opts: { dtype?: OnnxWeightDtype; kvCache?: boolean } = {}): Promise<Uint8Array> {
  const inits: StoredInit[] = [];
  const g = new Graph({
    add: async (name, dataType, dims, bytes) => {
      inits.push({ name, dataType, dims, rawData: bytes.slice() });
    },
  });
  await buildGraph(
    model.config,
    async (name) => {
      const w = model.weights.get(name);
      if (!w) throw new Error(`buildOnnxModel: missing weight ${name}`);
      return w;
    },
    g,
    opts.dtype ?? "f32",
    opts.kvCache ?? false,
  );
  return serialise(model.config, g, inits, opts.kvCache ?? false);
}

/** A bitsandbytes NF4 weight stored in the checkpoint, dequantised on the host (the values the NF4 kernels compute with). */
async function readBnbDequantized(src: TensorSource, name: string): Promise<Float32Array> {
  const s = parseBnbNf4(await readBnbTensors(src, name), name);
  return nf4DequantizeReference(s.packed, nf4HostScales(s), s.shape[0] * s.shape[1], s.blocksize, s.quantMap);
}

/**
 * Streams weights into external data files `<out>_data`, `<out>_data_1`, … (the names transformers.js derives from
 * the ONNX file name), starting a new file where the next tensor would pass `chunkBytes` (browsers read each file into
 * one ArrayBuffer). Tensors are 64-byte aligned.
 */
class ExternalData {
  readonly paths: string[] = [];
  private handle: FileHandle | null = null;
  private offset = 0;
  constructor(
    private readonly outPath: string,
    private readonly chunkBytes: number,
  ) {}

  /** Writes `bytes`; returns the initializer's external-data entries. */
  async write(bytes: Uint8Array): Promise<{ key: string; value: string }[]> {
    this.offset = Math.ceil(this.offset / 64) * 64;
    if (!this.handle || (this.offset > 0 && this.offset + bytes.byteLength > this.chunkBytes)) {
      await this.handle?.close();
      this.paths.push(`${this.outPath}_data${this.paths.length ? `_${this.paths.length}` : ""}`);
      this.handle = await open(this.paths.at(-1)!, "w");
      this.offset = 0;
    }
    for (let done = 0; done < bytes.length; ) {
      const { bytesWritten } = await this.handle.write(bytes, done, bytes.length - done, this.offset + done);
      done += bytesWritten;
    }
    const at = this.offset;
    this.offset += bytes.byteLength;
    return [
      { key: "location", value: basename(this.paths.at(-1)!) },
      { key: "offset", value: String(at) },
      { key: "length", value: String(bytes.byteLength) },
    ];
  }

  close = async () => this.handle?.close();
}

/**
 * Exports a checkpoint folder (config.json + safetensors) to an ONNX file, reading one tensor at a time. Weights stored
 * as bitsandbytes NF4 are exported dequantised.
 * With external data the weights are streamed into `<outPath>_data` (more files past `externalDataChunkBytes`; see
 * ExternalData) and never held together in memory.
 */
export async function exportOnnx(modelDir: string, outPath: string, opts: OnnxExportOptions = {}): Promise<OnnxExportResult> {
  const ck = await openCheckpoint(modelDir);
  const dtype = opts.dtype ?? "f32";
  try {
    const elems = parameterSpecs(ck.config).reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
    const estBytes = elems * (dtype === "f16" ? 2 : 4);
    const external = opts.externalData === true || ((opts.externalData ?? "auto") === "auto" && estBytes > 1 << 30);
    const inits: StoredInit[] = [];
    let weightBytes = 0;
    const data = external ? new ExternalData(outPath, opts.externalDataChunkBytes ?? 2 ** 31 - 2 ** 20) : null;
    try {
      const g = new Graph({
        add: async (name, dataType, dims, bytes) => {
          weightBytes += bytes.byteLength;
          // small constants (shapes, scalars) stay inline; weights go to the data files
          if (!data || bytes.byteLength < 1024) inits.push({ name, dataType, dims, rawData: bytes.slice() });
          else inits.push({ name, dataType, dims, dataLocation: onnx.TensorProto.DataLocation.EXTERNAL, externalData: await data.write(bytes) });
        },
      });
      const read = async (name: string) => {
        const stored = ck.report.quantized.has(name) ? await readBnbDequantized(ck.tensors, name) : await ck.tensors.readF32(name);
        return opts.mapWeight ? opts.mapWeight(name, stored) : stored;
      };
      await buildGraph(ck.config, read, g, dtype, opts.kvCache ?? false);
      await writeFile(outPath, serialise(ck.config, g, inits, opts.kvCache ?? false));
    } finally {
      await data?.close();
    }
    return { path: outPath, dataPath: data?.paths[0] ?? null, dataPaths: data?.paths ?? [], weightBytes };
  } finally {
    await ck.tensors.close();
  }
}
