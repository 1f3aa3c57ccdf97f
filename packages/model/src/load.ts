// Build a Decoder on an autograd engine from a Hugging Face checkpoint directory. Tensors stream one at a time:
// read (bf16/f16/f32 → f32) from the safetensors file, upload, drop — the JS heap never holds the whole model.
//
// NF4 base (QLoRA): with `quant: "nf4"` the seven linear weights of every layer (q/k/v/o/gate/up/down) are uploaded
// in their stored dtype, quantised on the GPU exactly as bitsandbytes does (@nr/kernels quantizeNf4: blocks of 64,
// optional double quantisation of the block scales), and the full-precision upload is released and destroyed. The
// projection (`Nf4Projection`) runs the fused NF4 matmul: forward y = x·deq(W)ᵀ (+ bias), backward only the input
// gradient dx = dy·deq(W) — the base is frozen and has no gradient buffer. Biases, norms, the embedding and the LM
// head stay f32. Weights a checkpoint already stores in bitsandbytes' 4-bit format (U8 `weight` + `.absmax`,
// `.quant_map`, `.nested_*`, `.quant_state.bitsandbytes__nf4`) load as they are, whatever `quant` says.
// On the float64 CPU backend NF4 weights become frozen dense weights holding the exact dequantised values
// (bitsandbytes' default-backend arithmetic on the host): the reference for gradchecks.
//
// f16 base (`dtype: "f16"`, as transformers' `torch_dtype=torch.float16`): the seven linear weights of every layer,
// the embedding and the LM head are stored in f16 — half the bytes of f32 — converted on the host from the stored
// dtype (bf16 → f16 is exact for |w| ≥ 2⁻¹⁴ and loses low bits only below; f32 → f16 rounds to nearest even). A
// weight with a finite value beyond the f16 range (|w| > 65504, which would become ±Inf) is refused with an error
// naming the tensor and the value — nothing is clamped. Norms and biases stay f32. The projections (`F16Projection`,
// @nr/autograd linearF16) cast their input to f16 right before the matmul and accumulate in f32; the residual stream,
// norms, attention, softmax and every accumulator stay f32. The base is frozen (LoRA trains over it); the input
// gradient dy·W is computed in f32. Needs shader-f16 on the GPU. On the float64 CPU backend the same model is built
// with the f16 values held in float64 and the activations rounded to f16 before each projection: an emulation of the
// GPU path, the reference its tests compare against.
import { concatColumns, Engine, GpuBackend, nf4Linear, nf4Shape, Tensor, type Nf4Operand } from "@nr/autograd";
import {
  downloadNf4,
  nf4DequantizeReference,
  nf4HostScales,
  nf4QuantizeReference,
  quantizeNf4,
  releaseNf4,
  tableShardRows,
  type Gpu,
  type Nf4SourceDtype,
  type Nf4Weight,
} from "@nr/kernels";
import { loadBnbNf4, parseBnbNf4, type BnbTensor } from "./bnb.js";
import { openCheckpoint } from "./checkpoint.js";
import { paramName, type ModelConfig, type ParamRole } from "./config.js";
import { Decoder, DenseProjection, F16Projection, type DecoderLayer, type Projection } from "./decoder.js";
import { f16BitsToNumber, roundToF16 } from "./dtypes.js";
import type { TensorSource } from "./safetensors.js";

export type BaseQuant = "none" | "nf4";
/** Storage dtype of the frozen base's large weights (linear layers, embedding, LM head). */
export type BaseDtype = "f32" | "f16";

export interface LoadDecoderOptions {
  /** Make the base weights trainable (full fine-tuning); default frozen. Not allowed with an NF4 base. */
  trainable?: boolean;
  /**
   * "nf4": quantise the seven linear weights of every layer to bitsandbytes NF4 at load (GPU backend; frozen base
   * for LoRA / QLoRA). "none" (default): keep them f32. 4-bit weights stored in the checkpoint load as NF4 either way.
   */
  quant?: BaseQuant;
  /**
   * "f16": store the seven linear weights of every layer, the embedding and the LM head in f16 (frozen; activations
   * are cast to f16 before each projection, accumulation in f32). "f32" (default): f32. Not combinable with
   * `trainable` or with NF4 weights. See the header of load.ts.
   */
  dtype?: BaseDtype;
  /** NF4: double-quantise the block scales (bitsandbytes compress_statistics, the QLoRA default). Default true. */
  doubleQuant?: boolean;
  /** NF4 block size (bitsandbytes: 64). */
  blocksize?: number;
}

/**
 * A frozen NF4 linear layer y = x·deq(W)ᵀ (+ bias) over @nr/autograd's nf4Linear op. W is never materialised in full
 * precision on the GPU; backward adds dy·deq(W) into x's gradient and gives W (and the bias) none. On the WebGPU
 * backend W is the device form (Nf4Weight, the fused NF4 matmul); on the float64 CPU backend its host form
 * (Nf4HostState, dequantised exactly as bitsandbytes does) — the reference the GPU path is checked against.
 */
export class Nf4Projection<W extends Nf4Operand = Nf4Weight> implements Projection {
  constructor(
    readonly engine: Engine,
    readonly weight: W,
    readonly bias: Tensor | null = null,
    readonly name = "nf4",
  ) {
    const onGpu = engine.backend instanceof GpuBackend;
    if (onGpu === "shape" in weight) throw new Error(`${name}: an NF4 weight ${onGpu ? "in its host form needs the CPU backend; upload it (uploadNf4) for the WebGPU backend" : "in GPU buffers needs the WebGPU backend; download it (downloadNf4) for the CPU backend"}`);
    const [N, K] = nf4Shape(weight);
    if (K % 8 !== 0) throw new Error(`${name}: in_features ${K} is not a multiple of 8, which the fused NF4 matmul needs; load this model with quant: "none"`);
    if (bias && bias.size !== N) throw new Error(`${name}: bias has ${bias.size} elements, the weight has ${N} rows`);
    if (bias?.requiresGrad) throw new Error(`${name}: the bias of a frozen NF4 base cannot be trainable`);
  }

  get outFeatures() {
    return nf4Shape(this.weight)[0];
  }
  get inFeatures() {
    return nf4Shape(this.weight)[1];
  }

  forward(x: Tensor): Tensor {
    if (x.shape[x.shape.length - 1] !== this.inFeatures) throw new Error(`${this.name}: x has ${x.shape[x.shape.length - 1]} features but the NF4 weight is [${this.outFeatures}, ${this.inFeatures}]`);
    return nf4Linear(x, this.weight, this.bias);
  }

  private get gpu(): Gpu {
    return (this.engine.backend as GpuBackend).gpu;
  }

  /** The dequantised weight [N, K] (row-major f32), dequantised on the host exactly as bitsandbytes does. */
  async dequantize(): Promise<Float32Array> {
    const w: Nf4Operand = this.weight;
    const s = "shape" in w ? w : await downloadNf4(this.gpu, w);
    return nf4DequantizeReference(s.packed, nf4HostScales(s), this.outFeatures * this.inFeatures, s.blocksize, s.quantMap);
  }

  /** Release the device buffers (the projection is unusable afterwards). */
  dispose() {
    const w: Nf4Operand = this.weight;
    if (!("shape" in w)) releaseNf4(this.gpu, w);
    this.bias?.dispose();
  }
}

const LINEAR_ROLES = ["q", "k", "v", "o", "gate", "up", "down"] as const;
type LinearRole = (typeof LINEAR_ROLES)[number];
const BIAS_ROLE: Partial<Record<LinearRole, ParamRole>> = { q: "qBias", k: "kBias", v: "vBias", o: "oBias" };
/** Companion tensors of a bitsandbytes 4-bit weight. */
const BNB_SUFFIXES = [".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".quant_state.bitsandbytes__nf4"];

/** The tensors bitsandbytes stores for 4-bit weight `name`: the packed codes and those of its companions present. */
export async function readBnbTensors(src: TensorSource, name: string): Promise<Map<string, BnbTensor>> {
  const out = new Map<string, BnbTensor>();
  for (const key of [name, ...BNB_SUFFIXES.map((s) => name + s)]) {
    if (!src.has(key)) continue;
    const info = src.info(key);
    out.set(key, { dtype: info.dtype, shape: [...info.shape], bytes: await src.readRaw(key) });
  }
  return out;
}

/**
 * A frozen base linear layer held as row blocks of its weight — each block its own NF4 / f16 / f32 tensor within one
 * storage binding — for a weight too large for one (Qwen2.5-7B's 18,944 × 3,584 MLP in bf16 is 136 MB). Each block's
 * output is a column block of the layer's output (concatColumns); backward sends each block its columns, and every
 * block adds its input gradient into x's. A block is quantised as a tensor of its own (its own NF4 double-quant
 * offset), as bitsandbytes would quantise that block.
 */
export class RowBlockProjection implements Projection {
  constructor(
    readonly blocks: Projection[],
    readonly bias: Tensor | null = null,
    readonly name = "row-blocks",
  ) {
    if (blocks.some((b) => b.inFeatures !== blocks[0].inFeatures)) throw new Error(`${name}: row blocks with different in_features`);
  }
  get outFeatures() {
    return this.blocks.reduce((a, b) => a + b.outFeatures, 0);
  }
  get inFeatures() {
    return this.blocks[0].inFeatures;
  }
  forward(x: Tensor): Tensor {
    const y = concatColumns(this.blocks.map((b) => b.forward(x)));
    if (this.bias) y.engine.backend.biasAdd(y.storage, this.bias.storage, y.size / this.outFeatures, this.outFeatures);
    return y;
  }
}

type RowRange = { start: number; count: number };

/** Rows per block of a linear weight on this engine: all rows when its upload fits one binding. */
function blockRows(engine: Engine, info: { shape: readonly number[]; dtype: string }, quant: BaseQuant, dtype: BaseDtype): number {
  const [N, K] = info.shape;
  if (!(engine.backend instanceof GpuBackend)) return N;
  // NF4 quantises the stored bits (bf16/f16: 2 bytes; else f32); an unquantised base uploads f16 or f32
  const bytes = quant === "nf4" ? (info.dtype === "BF16" || info.dtype === "F16" ? 2 : 4) : dtype === "f16" ? 2 : 4;
  return tableShardRows(N, K, bytes, engine.backend.shardBytes);
}

/** A frozen f16 tensor of rows `range` of `name` (all by default): stored values rounded on the host (nearest even). */
async function readF16Tensor(engine: Engine, gpu: Gpu | null, src: TensorSource, name: string, range?: RowRange): Promise<Tensor> {
  const info = src.info(name);
  const rows = range ?? { start: 0, count: info.shape[0] };
  const cols = info.numel / info.shape[0];
  const bits = await src.readF16(name, { rows });
  for (let i = 0; i < bits.length; i++) {
    if ((bits[i] & 0x7c00) !== 0x7c00) continue;
    // ±Inf or NaN in f16: refuse when the stored value was finite (it overflowed the f16 range)
    const v = (await src.readF32(name, { rows: { start: rows.start + Math.floor(i / cols), count: 1 } }))[i % cols];
    if (Number.isFinite(v)) throw new Error(`${info.file}: ${name} holds ${v} at element ${rows.start * cols + i}, outside the f16 range (|w| ≤ 65504); load this model with dtype "f32"`);
  }
  const shape = [rows.count, ...info.shape.slice(1)];
  const label = range ? `${name}[${rows.start}:${rows.start + rows.count}]` : name;
  if (gpu) return engine.track(new Tensor(engine, shape, "f16", gpu.upload(bits, label), false, label));
  return engine.tensor(Float64Array.from(bits, f16BitsToNumber), shape, { dtype: "f16", name: label });
}

/** Rows `range` of a stored linear weight as NF4, quantised on the GPU from its stored bits. */
async function quantizeRows(gpu: Gpu, src: TensorSource, name: string, range: RowRange, o: { blocksize: number; doubleQuant: boolean }): Promise<Nf4Weight> {
  const info = src.info(name);
  const K = info.shape[1];
  const raw = info.dtype === "BF16" || info.dtype === "F16" || info.dtype === "F32";
  // Upload the stored bits: the quantiser widens bf16/f16 exactly on the GPU.
  const input = raw ? gpu.upload(await src.readRaw(name, { rows: range }), `${name}.full`) : gpu.upload(await src.readF32(name, { rows: range }), `${name}.full`);
  const dtype: Nf4SourceDtype = info.dtype === "BF16" ? "bf16" : info.dtype === "F16" ? "f16" : "f32";
  const w = quantizeNf4(gpu, { input, dtype: raw ? dtype : "f32", N: range.count, K, blocksize: o.blocksize, doubleQuant: o.doubleQuant, label: name });
  // Released now and reused only by work recorded later; destroyed by the trim at the end of loading.
  gpu.release(input);
  return w;
}

/** A frozen base projection on the GPU (NF4 quantised here, f16 or f32), as row blocks when it exceeds one binding. */
async function gpuProjection(engine: Engine, gpu: Gpu, src: TensorSource, name: string, bias: Tensor | null, o: { quant: BaseQuant; dtype: BaseDtype; blocksize: number; doubleQuant: boolean }): Promise<Projection> {
  const info = src.info(name);
  const [N, K] = info.shape;
  const per = blockRows(engine, info, o.quant, o.dtype);
  const block = async (range: RowRange, b: Tensor | null): Promise<Projection> => {
    const label = per < N ? `${name}[${range.start}:${range.start + range.count}]` : name;
    if (o.quant === "nf4") return new Nf4Projection(engine, await quantizeRows(gpu, src, name, range, o), b, label);
    if (o.dtype === "f16") return new F16Projection(await readF16Tensor(engine, gpu, src, name, per < N ? range : undefined), b);
    return new DenseProjection(engine.tensor(await src.readF32(name, { rows: range }), [range.count, K], { name: label }), b);
  };
  if (per >= N) return block({ start: 0, count: N }, bias);
  const blocks: Projection[] = [];
  for (let r0 = 0; r0 < N; r0 += per) blocks.push(await block({ start: r0, count: Math.min(per, N - r0) }, null));
  return new RowBlockProjection(blocks, bias, name);
}

/** Rows read from the checkpoint and uploaded at a time while a table streams in (an even count: f16 rows stay word-aligned). */
const TABLE_CHUNK_ROWS = 4096;

/**
 * The embedding table or LM head [V, H] as a row tensor (on the GPU split into row shards that each fit one storage
 * binding when the whole does not), streamed from the checkpoint in chunks of rows: the host never holds the whole
 * table. With dtype f16 a finite value beyond the f16 range is refused, naming the tensor.
 */
async function loadTable(engine: Engine, src: TensorSource, name: string, dtype: BaseDtype, trainable: boolean): Promise<Tensor> {
  const info = src.info(name); // throws naming the tensor when absent
  const [V, H] = info.shape;
  const t = engine.rowsTensor([V, H], { dtype: dtype === "f16" ? "f16" : "f32", requiresGrad: trainable, name });
  for (let r0 = 0; r0 < V; r0 += TABLE_CHUNK_ROWS) {
    const rows = { start: r0, count: Math.min(TABLE_CHUNK_ROWS, V - r0) };
    const values = await src.readF32(name, { rows });
    if (dtype === "f16") {
      for (let i = 0; i < values.length; i++) {
        if (Math.abs(values[i]) > 65504 && Number.isFinite(values[i]) && !Number.isFinite(roundToF16(values[i]))) {
          throw new Error(`${info.file}: ${name} holds ${values[i]} at element ${r0 * H + i}, outside the f16 range (|w| ≤ 65504); load this model with dtype "f32"`);
        }
      }
    }
    engine.writeRows(t, r0, values);
  }
  return t;
}

export async function loadDecoder(engine: Engine, dir: string, opts: LoadDecoderOptions = {}): Promise<{ decoder: Decoder; config: ModelConfig }> {
  const quant = opts.quant ?? "none";
  if (quant !== "none" && quant !== "nf4") throw new Error(`loadDecoder: quant must be "none" or "nf4" (got ${JSON.stringify(quant)})`);
  const ck = await openCheckpoint(dir);
  const c = ck.config;
  const gpu = engine.backend instanceof GpuBackend ? engine.backend.gpu : null;
  const anyNf4 = quant === "nf4" || ck.report.quantized.size > 0;
  const baseDtype = opts.dtype ?? "f32";
  try {
    if (baseDtype !== "f32" && baseDtype !== "f16") throw new Error(`loadDecoder: dtype must be "f32" or "f16" (got ${JSON.stringify(baseDtype)})`);
    if (anyNf4 && opts.trainable) throw new Error(`loadDecoder: an NF4 base is frozen; drop trainable (or load ${dir} with quant: "none") and train LoRA adapters on it`);
    if (baseDtype === "f16") {
      if (opts.trainable) throw new Error(`loadDecoder: an f16 base is frozen (its weights get no gradient); drop trainable and train LoRA adapters on it, or load ${dir} with dtype "f32" for full fine-tuning`);
      if (anyNf4) throw new Error(`loadDecoder: dtype "f16" cannot be combined with NF4 weights (${quant === "nf4" ? 'quant: "nf4"' : `4-bit tensors stored in ${dir}`}): the NF4 matmul takes f32 activations; load with dtype "f32"`);
      if (gpu && !gpu.hasF16) throw new Error(`loadDecoder: dtype "f16" needs the shader-f16 feature, which this adapter (${gpu.adapterName}) lacks; load with dtype "f32"`);
    }
    for (const [name, s] of ck.report.quantized) {
      if (s.quant_type !== "nf4") throw new Error(`${ck.tensors.path}: ${name} is bitsandbytes ${s.quant_type}; only nf4 4-bit weights are supported`);
    }
    const get = async (role: ParamRole, layer?: number): Promise<Tensor> => {
      const name = paramName(role, layer);
      const info = ck.tensors.info(name);
      if (!info) throw new Error(`${ck.tensors.path}: tensor ${name} is missing`);
      const data = await ck.tensors.readF32(name);
      return engine.tensor(data, [...info.shape], { requiresGrad: opts.trainable ?? false, name });
    };
    const maybe = async (role: ParamRole | undefined, layer: number, present: boolean) => (role && present ? get(role, layer) : null);
    const getF16 = (role: ParamRole, layer?: number) => readF16Tensor(engine, gpu, ck.tensors, paramName(role, layer));
    const getTable = (role: "embed" | "lmHead") => loadTable(engine, ck.tensors, paramName(role), baseDtype, opts.trainable ?? false);

    // One linear layer of the base: dense, or NF4 (quantised here, or as stored).
    const projection = async (role: LinearRole, layer: number): Promise<Projection> => {
      const name = paramName(role, layer);
      const biasRole = BIAS_ROLE[role];
      const bias = await maybe(biasRole, layer, role === "o" ? c.oBias : c.qkvBias);
      const stored4bit = ck.report.quantized.has(name);
      const info = ck.tensors.info(name);
      const blocksize = opts.blocksize ?? 64;
      const onGpu = { quant, dtype: baseDtype, blocksize, doubleQuant: opts.doubleQuant ?? true };
      // a frozen weight too large for one binding: row blocks on the GPU, whatever its dtype
      if (gpu && !stored4bit && !opts.trainable && blockRows(engine, info, quant, baseDtype) < info.shape[0]) return gpuProjection(engine, gpu, ck.tensors, name, bias, onGpu);
      if (!stored4bit && quant === "none") return baseDtype === "f16" ? new F16Projection(await getF16(role, layer), bias) : new DenseProjection(await get(role, layer), bias);
      if (!gpu) {
        // float64 reference: the exact dequantised values as a frozen dense weight.
        let values: Float32Array;
        let shape: number[];
        if (stored4bit) {
          const s = parseBnbNf4(await readBnbTensors(ck.tensors, name), name);
          values = nf4DequantizeReference(s.packed, nf4HostScales(s), s.shape[0] * s.shape[1], s.blocksize, s.quantMap);
          shape = [...s.shape];
        } else {
          const q = nf4QuantizeReference(await ck.tensors.readF32(name), { blocksize, doubleQuant: opts.doubleQuant ?? true });
          values = nf4DequantizeReference(q.packed, q.scales, info.numel, blocksize);
          shape = [...info.shape];
        }
        return new DenseProjection(engine.tensor(values, shape, { name }), bias);
      }
      if (stored4bit) return new Nf4Projection(engine, loadBnbNf4(gpu, await readBnbTensors(ck.tensors, name), name), bias, name);
      return gpuProjection(engine, gpu, ck.tensors, name, bias, onGpu);
    };

    const embed = await getTable("embed");
    const layers: DecoderLayer[] = [];
    for (let i = 0; i < c.numLayers; i++) {
      const inputNorm = await get("inputNorm", i);
      const [q, k, v, o] = [await projection("q", i), await projection("k", i), await projection("v", i), await projection("o", i)];
      const qNorm = c.qkNorm ? await get("qNorm", i) : undefined;
      const kNorm = c.qkNorm ? await get("kNorm", i) : undefined;
      const postAttentionNorm = await get("postAttnNorm", i);
      const [gate, up, down] = [await projection("gate", i), await projection("up", i), await projection("down", i)];
      layers.push({ inputNorm, q, k, v, o, qNorm, kNorm, postAttentionNorm, gate, up, down });
    }
    const finalNorm = await get("finalNorm");
    const lmHead = c.tieWordEmbeddings ? embed : await getTable("lmHead");
    if (gpu && anyNf4) {
      // Destroy the released full-precision uploads (and the quantiser's scratch) instead of keeping them pooled.
      await gpu.sync();
      gpu.pool.trim();
    }
    return { decoder: new Decoder(engine, c, { embed, layers, finalNorm, lmHead }), config: c };
  } finally {
    await ck.tensors.close();
  }
}

/**
 * A copy of a base decoder (dense, NF4 and/or f16 projections, no adapters) on another engine, every NF4 weight
 * replaced by its exact dequantised values and every f16 tensor by its values, as frozen dense f32 weights (no
 * activation rounding) — e.g. the float64 CPU reference of an NF4 model, or of an f16 model on its rounded weights.
 */
export async function dequantizedCopy(decoder: Decoder, engine: Engine): Promise<Decoder> {
  const copy = async (t: Tensor) => engine.tensor(await t.read(), [...t.shape], { name: t.name, dtype: t.dtype === "f16" ? "f32" : t.dtype });
  const proj = async (p: Projection): Promise<Projection> => {
    if (p instanceof RowBlockProjection) {
      // the blocks' weights stacked back into one [N, K] weight
      const values = new Float64Array(p.outFeatures * p.inFeatures);
      let at = 0;
      for (const blk of p.blocks) {
        const w = (await proj(blk)) as DenseProjection;
        const v = await w.weight.read();
        values.set(v, at);
        at += v.length;
        w.weight.dispose();
      }
      return new DenseProjection(engine.tensor(values, [p.outFeatures, p.inFeatures], { name: p.name }), p.bias && (await copy(p.bias)));
    }
    if (p instanceof F16Projection) return new DenseProjection(await copy(p.weight), p.bias && (await copy(p.bias)));
    if (p instanceof Nf4Projection) return new DenseProjection(engine.tensor(await p.dequantize(), [p.outFeatures, p.inFeatures], { name: p.name }), p.bias && (await copy(p.bias)));
    if (p instanceof DenseProjection) return new DenseProjection(await copy(p.weight), p.bias && (await copy(p.bias)));
    throw new Error("dequantizedCopy: projections must be dense, NF4, f16 or row blocks of those (copy the base before wrapping it with LoRA adapters)");
  };
  const W = decoder.weights;
  const embed = await copy(W.embed);
  const layers: DecoderLayer[] = [];
  for (const L of W.layers) {
    layers.push({
      inputNorm: await copy(L.inputNorm),
      q: await proj(L.q),
      k: await proj(L.k),
      v: await proj(L.v),
      o: await proj(L.o),
      qNorm: L.qNorm && (await copy(L.qNorm)),
      kNorm: L.kNorm && (await copy(L.kNorm)),
      postAttentionNorm: await copy(L.postAttentionNorm),
      gate: await proj(L.gate),
      up: await proj(L.up),
      down: await proj(L.down),
    });
  }
  const lmHead = W.lmHead === W.embed ? embed : await copy(W.lmHead);
  return new Decoder(engine, decoder.config, { embed, layers, finalNorm: await copy(W.finalNorm), lmHead });
}
