// Memory report for LoRA training over a frozen (NF4, f16 or f32) base on the WebGPU backend: what each part costs
// in device bytes, as the buffer pool (@nr/kernels runtime/pool.ts) allocates them.
//
//  base        NF4: per linear weight the packed codes (4 bits), the f32 per-block scales the fused matmul reads and,
//              with double quantisation, the 8-bit absmax codes + per-256-block f32 + offset kept for saving
//              (nf4MemoryFor); f32 otherwise, or f16 with `dtype: "f16"` (quant "none" only, as loadDecoder).
//              Embedding and untied LM head are f32, or f16 with `dtype: "f16"`; norms and biases are always f32
//              (as loadDecoder uploads them). f16 buffers are whole 32-bit words (⌈n/2⌉·4 bytes). With `gpu`
//              given, a table larger than its binding limit is counted as the row shards the GPU backend makes
//              (@nr/kernels tableShardRows), and the LM-head scratch follows the sharded plans.
//  adapters    LoRA A [r, in] and B [out, r] in f32; their gradients (f32) and AdamW m and v (2 × f32).
//  activations the growth of the pool over one forward + backward of `tokens` tokens beyond the parameter
//              gradients: what the autograd tape keeps (every op output, and a gradient for every output that needs
//              one — the engine frees neither before the step's scope ends), the transient buffers of each backward,
//              and kernel scratch (LM-head, attention, RMSNorm). With checkpointing only each layer's output (and
//              its gradient) is kept and one layer at a time is recomputed.
// Every buffer is counted at its pool size class (sizes round up to quarter-octave steps, at least 256 bytes), and
// the activation peak is found by replaying the step's allocations and releases through the same size-class free
// lists the pool keeps (a released buffer is reused by a later request of its class; the pool never shrinks
// without a trim). The replay (StepReplay, one method per op) mirrors Decoder.layer / LoraProjection.forward /
// @nr/autograd ops: memory.test.ts checks it against the pool on the GPU. Tensor shapes come from the model's own
// parameter list (@nr/model parameterSpecs). Over an f16 base each projection (linearF16) also takes, in forward, an f16
// copy of its input right after its output and releases it at once, and in backward an f32 copy of its weight
// before the input gradient, released after it; the f16 embedding lookup and the fused LM head (f16 weight read in
// the kernels) allocate exactly what their f32 versions do.
import { lmHeadBackwardPlan, lmHeadForwardPlan, nf4MemoryFor, rmsNormBackwardRowsPerBlock, sizeClass, tableShardRows, attentionBackwardScratchBytes, columnSumScratchBytes, type Gpu } from "@nr/kernels";
import { parameterSpecs, type ModelConfig, type ParamRole } from "@nr/model";
import { LORA_TARGETS, loraParameterCount, resolveLoraConfig, type LoraConfig, type LoraTarget } from "./lora.js";

export interface MemoryShape {
  numLayers: number;
  hiddenSize: number;
  intermediateSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  tieWordEmbeddings: boolean;
  /** Qwen2: q/k/v biases (f32, kept full precision). Default false. */
  qkvBias?: boolean;
  oBias?: boolean;
  /** Qwen3: per-head q/k RMSNorm. Default false. */
  qkNorm?: boolean;
}

export interface MemoryOptions {
  /** Tokens in one micro-batch (B·T; every activation is proportional to it). */
  tokens: number;
  /** Gradient checkpointing per layer. */
  checkpoint: boolean;
  /** Base linear weights: "nf4" (default) or "none" (f32, or f16 with `dtype: "f16"`). */
  quant?: "nf4" | "none";
  /**
   * Storage dtype of the base's linear weights, embedding and LM head with quant "none" (loadDecoder's `dtype`):
   * "f32" (default) or "f16". Norms and biases stay f32. Not combinable with NF4.
   */
  dtype?: "f32" | "f16";
  doubleQuant?: boolean;
  blocksize?: number;
  /** The device: kernel scratch sizes follow its plans exactly. Without it a discrete GPU is assumed. */
  gpu?: Gpu;
}

export interface MemoryReport {
  /** Parameters of the seven linear weights of all layers. */
  baseLinearParams: number;
  /** All base parameters (linear + embedding/head + norms + biases). */
  baseParams: number;
  loraParams: number;
  /** loraParams / baseParams. */
  trainableFraction: number;
  /** Device bytes of the linear weights (NF4 codes + scales + double-quant state, f32 or f16). */
  baseLinearBytes: number;
  /** The same without the pool's size-class rounding (the tensors' own bytes). */
  baseLinearTensorBytes: number;
  /** baseLinearTensorBytes · 8 / baseLinearParams. */
  baseLinearBitsPerParam: number;
  /** The same NF4 weights in a bitsandbytes checkpoint (u8 absmax when double-quantised); f32/f16: 4/2 bytes each. */
  baseLinearCheckpointBytes: number;
  /** Embedding, untied LM head (f32, or f16 with dtype "f16"), norms and biases (f32). */
  baseOtherBytes: number;
  baseBytes: number;
  adapterBytes: number;
  gradientBytes: number;
  optimizerBytes: number;
  /** Peak growth over one forward + backward, parameter gradients excluded (see the header). */
  activationBytes: number;
  totalBytes: number;
}

/** [in, out] features of a layer's linear weight. */
interface ProjectionShape {
  inF: number;
  outF: number;
}

const TARGET_OF_ROLE: Partial<Record<ParamRole, LoraTarget>> = { q: "q_proj", k: "k_proj", v: "v_proj", o: "o_proj", gate: "gate_proj", up: "up_proj", down: "down_proj" };

/** The base's tensors, read from the model's own parameter list (@nr/model parameterSpecs). */
interface BaseShapes {
  /** Each projection's shape (the same in every layer). */
  projections: Record<LoraTarget, ProjectionShape>;
  /** Elements of the [V, H] tables: the embedding and, untied, the LM head. */
  tables: number[];
  /** Elements of the always-f32 tensors: norms and biases. */
  f32Tensors: number[];
}

function baseShapes(s: MemoryShape): BaseShapes {
  // parameterSpecs reads only the shape fields that MemoryShape holds.
  const specs = parameterSpecs(s as ModelConfig);
  const out: BaseShapes = { projections: {} as Record<LoraTarget, ProjectionShape>, tables: [], f32Tensors: [] };
  for (const p of specs) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    const t = TARGET_OF_ROLE[p.role];
    if (t) {
      if (p.layer === 0) out.projections[t] = { outF: p.shape[0], inF: p.shape[1] };
    } else if (p.role === "embed" || p.role === "lmHead") out.tables.push(n);
    else out.f32Tensors.push(n);
  }
  return out;
}

function projectionShapes(s: MemoryShape): Record<LoraTarget, ProjectionShape> {
  return baseShapes({ ...s, numLayers: 1 }).projections;
}

/** f32 tensor bytes as the GPU backend allocates them (at least 4), at the pool's size class. */
const f32Bytes = (n: number) => sizeClass(Math.max(4, n * 4));
/** f16 tensor bytes (whole 32-bit words, as GpuBackend.alloc and gpu.upload of f16 bits) at the pool's size class. */
const f16Bytes = (n: number) => sizeClass(Math.max(4, Math.ceil(n / 2) * 4));

/** Rows per shard of the [V, H] tables on this device (all V without a device: no sharding assumed). */
function tableRows(s: MemoryShape, bytesPerValue: number, gpu: Gpu | undefined): number {
  return gpu ? tableShardRows(s.vocabSize, s.hiddenSize, bytesPerValue, gpu.limits.maxStorageBufferBindingSize ?? Infinity) : s.vocabSize;
}

/** Pool bytes of one [V, H] table: one buffer, or its row shards (GpuBackend.allocRows). */
function tableBytesOf(s: MemoryShape, dtype: "f32" | "f16", gpu: Gpu | undefined): number {
  const per = tableRows(s, dtype === "f16" ? 2 : 4, gpu);
  const bytes = dtype === "f16" ? f16Bytes : f32Bytes;
  let total = 0;
  for (let v0 = 0; v0 < s.vocabSize; v0 += per) total += bytes(Math.min(per, s.vocabSize - v0) * s.hiddenSize);
  return total;
}

export function memoryReport(s: MemoryShape, lora: LoraConfig, o: MemoryOptions): MemoryReport {
  const c = resolveLoraConfig(lora);
  const dims = projectionShapes(s);
  const quant = o.quant ?? "nf4";
  const dtype = o.dtype ?? "f32";
  if (quant !== "nf4" && quant !== "none") throw new Error(`memoryReport: quant must be "nf4" or "none" (got ${JSON.stringify(quant)})`);
  if (dtype !== "f32" && dtype !== "f16") throw new Error(`memoryReport: dtype must be "f32" or "f16" (got ${JSON.stringify(dtype)})`);
  if (quant === "nf4" && dtype === "f16") throw new Error(`memoryReport: dtype "f16" cannot be combined with quant "nf4" (loadDecoder refuses it: the NF4 matmul takes f32 activations); use quant "none" for an f16 base`);
  const dq = o.doubleQuant ?? true;
  const tableBytes = dtype === "f16" ? f16Bytes : f32Bytes;

  let baseLinearParams = 0, baseLinearBytes = 0, baseLinearTensorBytes = 0, baseLinearCheckpointBytes = 0;
  let adapterBytes = 0, loraParams = 0;
  for (const t of LORA_TARGETS) {
    const { inF, outF } = dims[t];
    baseLinearParams += inF * outF;
    if (quant === "nf4") {
      const m = nf4MemoryFor(outF, inF, { blocksize: o.blocksize, doubleQuant: dq });
      const blocks = Math.ceil((inF * outF) / (o.blocksize ?? 64));
      const groups = Math.ceil(blocks / 256);
      baseLinearBytes += sizeClass(m.codes) + sizeClass(m.scales) + (dq ? sizeClass(Math.ceil(blocks / 4) * 4) + sizeClass(groups * 4) + sizeClass(4) : 0);
      baseLinearTensorBytes += m.total;
      baseLinearCheckpointBytes += m.checkpoint;
    } else {
      const bytesPer = dtype === "f16" ? 2 : 4;
      baseLinearBytes += tableBytes(inF * outF);
      baseLinearTensorBytes += inF * outF * bytesPer;
      baseLinearCheckpointBytes += inF * outF * bytesPer;
    }
    if (c.targets.includes(t)) {
      adapterBytes += f32Bytes(c.r * inF) + f32Bytes(outF * c.r);
      loraParams += c.r * (inF + outF);
    }
  }
  const L = s.numLayers;
  baseLinearParams *= L;
  baseLinearBytes *= L;
  baseLinearTensorBytes *= L;
  baseLinearCheckpointBytes *= L;
  adapterBytes *= L;
  loraParams *= L;
  if (loraParams !== loraParameterCount(s, c)) throw new Error("memoryReport: parameter count disagrees with loraParameterCount");

  const { tables, f32Tensors } = baseShapes(s);
  const baseOtherBytes = tables.length * tableBytesOf(s, dtype, o.gpu) + f32Tensors.reduce((a, n) => a + f32Bytes(n), 0);
  const otherParams = [...tables, ...f32Tensors].reduce((a, n) => a + n, 0);

  const step = replayStep(s, c.targets, c.r, c.dropout > 0, o);
  const gradientBytes = adapterBytes; // one f32 gradient per adapter tensor, same sizes
  const optimizerBytes = 2 * adapterBytes;
  const activationBytes = step - gradientBytes;
  const baseBytes = baseLinearBytes + baseOtherBytes;
  return {
    baseLinearParams,
    baseParams: baseLinearParams + otherParams,
    loraParams,
    trainableFraction: loraParams / (baseLinearParams + otherParams),
    baseLinearBytes,
    baseLinearTensorBytes,
    baseLinearBitsPerParam: (baseLinearTensorBytes * 8) / baseLinearParams,
    baseLinearCheckpointBytes,
    baseOtherBytes,
    baseBytes,
    adapterBytes,
    gradientBytes,
    optimizerBytes,
    activationBytes,
    totalBytes: baseBytes + adapterBytes + optimizerBytes + gradientBytes + activationBytes,
  };
}

// ─────────────────────────────────────────────────────────────────────────────────────────────────────────────
// Replay of one training step's allocations through a model of the buffer pool

/** Size-class free lists; `allocated` only grows (as BufferPool.allocatedBytes between trims). */
class PoolReplay {
  private free = new Map<number, number>();
  allocated = 0;
  acquire(bytes: number): number {
    const size = sizeClass(bytes);
    const n = this.free.get(size) ?? 0;
    if (n > 0) this.free.set(size, n - 1);
    else this.allocated += size;
    return size;
  }
  release(size: number) {
    this.free.set(size, (this.free.get(size) ?? 0) + 1);
  }
  /** A kernel's scratch buffers: acquired together, released together. */
  scratch(...bytes: number[]) {
    const held = bytes.filter((b) => b > 0).map((b) => this.acquire(b));
    for (const h of held) this.release(h);
  }
}

/** A tensor of the replay: its element count, whether it needs a gradient, its buffer (null for views), its grad. */
interface Rt {
  n: number;
  rg: boolean;
  buf: number | null;
  grad: number | null;
}

/** The slice of Engine the decoder step uses: tracked tensors, scopes, the tape, gradOf. */
class EngineReplay {
  tape: Array<() => void> = [];
  recording = true;
  private scopes: Rt[][] = [[]];
  constructor(readonly pool: PoolReplay) {}

  tensor(n: number, rg = false): Rt {
    const t: Rt = { n, rg, buf: this.pool.acquire(Math.max(4, n * 4)), grad: null };
    this.scopes[this.scopes.length - 1].push(t);
    return t;
  }
  view(t: Rt): Rt {
    const v: Rt = { n: t.n, rg: false, buf: null, grad: null };
    this.scopes[this.scopes.length - 1].push(v);
    if (this.recording && t.rg) {
      v.rg = true;
      this.record(() => v.grad !== null && this.gradOf(t));
    }
    return v;
  }
  gradOf(t: Rt) {
    t.grad ??= this.pool.acquire(Math.max(4, t.n * 4));
  }
  dispose(t: Rt) {
    if (t.buf !== null) this.pool.release(t.buf);
    if (t.grad !== null) this.pool.release(t.grad);
    t.buf = t.grad = null;
  }
  needs(...ts: Rt[]) {
    return this.recording && ts.some((t) => t.rg);
  }
  record(fn: () => void) {
    this.tape.push(fn);
  }
  scope<T>(fn: () => T, keep: (r: T) => Rt[]): T {
    this.scopes.push([]);
    const r = fn();
    const created = this.scopes.pop()!;
    const kept = new Set(keep(r));
    for (const t of created) if (kept.has(t)) this.scopes[this.scopes.length - 1].push(t);
    else this.dispose(t);
    return r;
  }
  /** Engine.backward: seed gradients (host arrays are uploaded, then freed), then the tape in reverse. */
  backward(seeds: Rt[], uploaded: boolean) {
    for (const t of seeds) {
      const up = uploaded ? this.pool.acquire(t.n * 4) : null;
      this.gradOf(t);
      if (up !== null) this.pool.release(up);
    }
    const tape = this.tape;
    this.tape = [];
    for (let i = tape.length - 1; i >= 0; i--) tape[i]();
  }
}

interface KernelScratch {
  lmHeadForward(M: number): number;
  lmHeadBackward(M: number): number[];
  rmsnormBackward(rows: number, H: number): number[];
}

function kernelScratch(s: MemoryShape, gpu: Gpu | undefined, tableBytesPerValue: number): KernelScratch {
  const V = s.vocabSize, H = s.hiddenSize;
  if (gpu) {
    const shardRows = tableRows(s, tableBytesPerValue, gpu);
    return {
      lmHeadForward: (M) => Math.max(16, lmHeadForwardPlan(gpu, M, V, H, shardRows).scratchBytes),
      lmHeadBackward: (M) => {
        const p = lmHeadBackwardPlan(gpu, M, V, H, { shardRows });
        return [M * 16, M * 4, p.R * p.Vc * 4, p.S > 1 ? p.S * p.R * H * 4 : 0];
      },
      rmsnormBackward: (rows, h) => {
        const blocks = Math.ceil(rows / rmsNormBackwardRowsPerBlock(gpu, rows));
        return [blocks * h * 4, columnSumScratchBytes(blocks, h)];
      },
    };
  }
  // A discrete GPU with the kernels' default plans: 1024 target workgroups, a 32 MiB LM-head scratch budget, no
  // split-K slab, RMSNorm partial sums over blocks of ⌈rows/256⌉ rows.
  return {
    lmHeadForward: (M) => M * 16 * Math.max(1, Math.ceil(1024 / Math.ceil(M / 32))),
    lmHeadBackward: (M) => {
      const R = Math.min(M, 256);
      const Vc = Math.min(V, Math.max(256, Math.floor(32 * 2 ** 20 / (R * 4) / 256) * 256));
      return [M * 16, M * 4, R * Vc * 4];
    },
    rmsnormBackward: (rows, h) => {
      const blocks = Math.ceil(rows / Math.max(1, Math.ceil(rows / 256)));
      return [blocks * h * 4, columnSumScratchBytes(blocks, h)];
    },
  };
}

/** Pool growth over one SFT-style step (forward, backward of logp + entropy seeds, on a trimmed pool). */
function replayStep(s: MemoryShape, targets: LoraTarget[], r: number, dropout: boolean, o: MemoryOptions): number {
  return new StepReplay(s, targets, r, dropout, o).run();
}

/** Parameters: frozen (no gradient) or LoRA (gradient on first use). Their own buffers are static (not replayed). */
const param = (n: number, rg: boolean): Rt => ({ n, rg, buf: null, grad: null });

/**
 * One training step's allocations, op by op as Decoder.layer, LoraProjection.forward and the @nr/autograd ops make
 * them: each method allocates the op's outputs and records what its backward allocates around the input gradients.
 */
class StepReplay {
  readonly pool = new PoolReplay();
  readonly e = new EngineReplay(this.pool);
  private readonly M: number;
  private readonly f16Base: boolean;
  private readonly ks: KernelScratch;
  private readonly dims: Record<LoraTarget, ProjectionShape>;
  private readonly adapters = new Map<string, { A: Rt; B: Rt }>();

  constructor(
    private readonly s: MemoryShape,
    private readonly targets: LoraTarget[],
    private readonly r: number,
    private readonly dropout: boolean,
    private readonly o: MemoryOptions,
  ) {
    this.M = o.tokens;
    this.f16Base = (o.dtype ?? "f32") === "f16";
    this.ks = kernelScratch(s, o.gpu, this.f16Base ? 2 : 4);
    this.dims = projectionShapes(s);
  }

  /** An op of two inputs with an `outN`-element output whose backward allocates only the inputs' gradients. */
  binary(a: Rt, b: Rt, outN: number): Rt {
    const e = this.e;
    const y = e.tensor(outN);
    if (e.needs(a, b)) {
      y.rg = true;
      e.record(() => {
        if (y.grad === null) return;
        if (a.rg) e.gradOf(a);
        if (b.rg) e.gradOf(b);
      });
    }
    return y;
  }

  /** y = x·Wᵀ: rows × N for W = [N, in]. */
  linear(x: Rt, W: Rt, N: number): Rt {
    return this.binary(x, W, (x.n / (W.n / N)) * N);
  }

  /** linearF16 over a frozen f16 weight: y, then the f16 input copy (released at once); backward w32 around dx. */
  linearF16(x: Rt, W: Rt, N: number): Rt {
    const { e, pool } = this;
    const y = e.tensor((x.n / (W.n / N)) * N);
    pool.release(pool.acquire(Math.max(4, Math.ceil(x.n / 2) * 4))); // x16
    if (e.needs(x)) {
      y.rg = true;
      e.record(() => {
        if (y.grad === null || !x.rg) return;
        const w32 = pool.acquire(W.n * 4);
        e.gradOf(x);
        pool.release(w32);
      });
    }
    return y;
  }

  add(a: Rt, b: Rt): Rt {
    return this.binary(a, b, a.n);
  }

  /** An op with one differentiable input whose backward allocates `temps` (element counts) around gradOf(x). */
  unary(x: Rt, outN: number, extra: number[], temps: number[], scratch: () => number[] = () => []): Rt {
    const { e, pool } = this;
    const y = e.tensor(outN);
    for (const n of extra) e.tensor(n);
    if (e.needs(x)) {
      y.rg = true;
      e.record(() => {
        if (y.grad === null) return;
        const held = temps.map((n) => e.tensor(n));
        pool.scratch(...scratch());
        e.gradOf(x);
        for (const t of held) e.dispose(t);
      });
    }
    return y;
  }

  rmsnorm(x: Rt, width: number): Rt {
    return this.unary(x, x.n, [x.n / width], [x.n, width], () => this.ks.rmsnormBackward(x.n / width, width));
  }

  rope(x: Rt): Rt {
    return this.unary(x, x.n, [], [x.n]);
  }

  /** The frozen base projection, plus (for a LoRA target) dropout and addLowRankInPlace on its output. */
  projection(layer: number, t: LoraTarget, x: Rt): Rt {
    const { inF, outF } = this.dims[t];
    const W = param(inF * outF, false);
    const base = this.f16Base ? this.linearF16(x, W, outF) : this.linear(x, W, outF); // output + dx only
    if (!this.targets.includes(t)) return base;
    const key = `${layer}.${t}`;
    if (!this.adapters.has(key)) this.adapters.set(key, { A: param(this.r * inF, true), B: param(outF * this.r, true) });
    const { A, B } = this.adapters.get(key)!;
    const xin = this.dropout ? this.dropoutOf(x) : x;
    // addLowRankInPlace: y += s·h·Bᵀ in place on the base output; backward dh and dB.
    const e = this.e;
    const h = this.linear(xin, A, this.r);
    if (!e.needs(h, B)) return base;
    base.rg = true;
    e.record(() => {
      if (base.grad === null) return;
      if (h.rg) e.gradOf(h);
      e.gradOf(B);
    });
    return base;
  }

  /** Dropout: the uploaded keep mask and the masked input; backward a temporary around dx. */
  dropoutOf(x: Rt): Rt {
    const e = this.e;
    e.tensor(x.n); // the keep mask, uploaded
    const xin = e.tensor(x.n);
    if (e.needs(x)) {
      xin.rg = true;
      e.record(() => {
        if (xin.grad === null) return;
        const tmp = e.tensor(x.n);
        e.gradOf(x);
        e.dispose(tmp);
      });
    }
    return xin;
  }

  /** Attention: o and lse; backward dq, dk, dv + stats scratch, then the input gradients. */
  attention(qq: Rt, kk: Rt, vv: Rt): Rt {
    const { e, pool, s, M } = this;
    const att = e.tensor(M * s.numHeads * s.headDim);
    e.tensor(M * s.numHeads);
    if (e.needs(qq, kk, vv)) {
      att.rg = true;
      e.record(() => {
        if (att.grad === null) return;
        const held = [e.tensor(qq.n), e.tensor(kk.n), e.tensor(vv.n)];
        pool.scratch(attentionBackwardScratchBytes(1, M, s.numHeads));
        for (const t of [qq, kk, vv]) if (t.rg) e.gradOf(t);
        for (const t of held) e.dispose(t);
      });
    }
    return att;
  }

  /** SwiGLU silu(g)·u; backward holds dg and du while it writes the input gradients. */
  swiglu(g: Rt, u: Rt): Rt {
    const e = this.e;
    const sw = e.tensor(this.M * this.s.intermediateSize);
    if (e.needs(g, u)) {
      sw.rg = true;
      e.record(() => {
        if (sw.grad === null) return;
        const held = [e.tensor(g.n), e.tensor(u.n)];
        if (g.rg) e.gradOf(g);
        if (u.rg) e.gradOf(u);
        for (const t of held) e.dispose(t);
      });
    }
    return sw;
  }

  layer(i: number, x: Rt): Rt {
    const { e, s } = this;
    const h = this.rmsnorm(x, s.hiddenSize);
    let qq = e.view(this.projection(i, "q_proj", h));
    let kk = e.view(this.projection(i, "k_proj", h));
    const vv = e.view(this.projection(i, "v_proj", h));
    if (s.qkNorm) {
      qq = this.rmsnorm(qq, s.headDim);
      kk = this.rmsnorm(kk, s.headDim);
    }
    const att = this.attention(this.rope(qq), this.rope(kk), vv);
    const x1 = this.add(x, this.projection(i, "o_proj", e.view(att)));
    const h2 = this.rmsnorm(x1, s.hiddenSize);
    const sw = this.swiglu(this.projection(i, "gate_proj", h2), this.projection(i, "up_proj", h2));
    return this.add(x1, this.projection(i, "down_proj", sw));
  }

  // Engine.checkpoint: run without recording and keep only the outputs; in backward recompute with recording and
  // back-propagate the saved output gradient, freeing the recomputation.
  checkpointed(i: number, xin: Rt): Rt {
    const e = this.e;
    const saved = e.recording;
    e.recording = false;
    const out = e.scope(() => this.layer(i, xin), (y) => [y]);
    e.recording = saved;
    out.rg = true;
    e.record(() => {
      const outer = e.tape;
      e.tape = [];
      e.scope(() => {
        const again = this.layer(i, xin);
        if (out.grad !== null && again.rg) e.backward([again], false);
        return null;
      }, () => []);
      e.tape = outer;
    });
    return out;
  }

  /** Fused LM head: logp, entropy, lse (+ forward scratch); backward dh + scratch, then the hidden gradient. */
  lmHead(hidden: Rt): Rt[] {
    const { e, pool, M, ks } = this;
    const logp = e.tensor(M), entropy = e.tensor(M);
    e.tensor(M);
    pool.scratch(ks.lmHeadForward(M));
    if (e.needs(hidden)) {
      logp.rg = entropy.rg = true;
      e.record(() => {
        const dh = e.tensor(hidden.n);
        pool.scratch(...ks.lmHeadBackward(M));
        e.gradOf(hidden);
        e.dispose(dh);
      });
    }
    return [logp, entropy];
  }

  run(): number {
    const { e, s, M } = this;
    e.scope(() => {
      for (let j = 0; j < 4; j++) e.tensor(M); // ids, positions, keyValid, targets (u32)
      let x = e.tensor(M * s.hiddenSize); // embedding (frozen f32 or f16 table: no gradient, no scratch)
      for (let i = 0; i < s.numLayers; i++) x = this.o.checkpoint ? this.checkpointed(i, x) : this.layer(i, x);
      e.backward(this.lmHead(this.rmsnorm(x, s.hiddenSize)), true);
      return null;
    }, () => []);
    return this.pool.allocated;
  }
}
