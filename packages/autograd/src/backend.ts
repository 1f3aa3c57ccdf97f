// The primitive set every backend implements. Ops (ops.ts) are written once against this interface, so the same
// forward/backward code runs on the GPU (kernels from @nr/kernels) and on the float64 CPU reference backend used by
// the gradchecks. Primitives write into caller-provided storage; `accumulate` variants add into it.
import type { Nf4HostState, Nf4MatmulMode, Nf4Weight } from "@nr/kernels";
import type { DType } from "./tensor.js";

/** Backend storage: a GPU buffer, or a Float64Array on the CPU backend. */
export type Storage = unknown;

export interface AttentionDims {
  B: number;
  T: number;
  Hq: number;
  Hkv: number;
  D: number;
  scale: number;
}

export interface Backend {
  readonly name: string;
  alloc(n: number, dtype: DType): Storage;
  upload(values: ArrayLike<number>, dtype: DType): Storage;
  /**
   * Storage for a [rows, cols] matrix (an embedding table / LM head) whose contents come later through `writeRows`.
   * The GPU backend splits it into row shards that each fit one storage binding when the whole would not.
   */
  allocRows(rows: number, cols: number, dtype: DType): Storage;
  /** Write host values into rows [row0, row0 + values.length / cols) of `allocRows` storage. */
  writeRows(s: Storage, row0: number, values: ArrayLike<number>, cols: number, dtype: DType): void;
  /** Storage for n elements of `dtype` laid out like `like` (the same row shards): gradients and optimizer moments. */
  allocLike(like: Storage, n: number, dtype: DType): Storage;
  read(s: Storage, n: number, dtype: DType): Promise<Float64Array>;
  free(s: Storage): void;
  fill(s: Storage, value: number, n: number): void;
  /** y += alpha·x over n elements. */
  axpy(alpha: number, x: Storage, y: Storage, n: number): void;
  /** out = a ∘ b (elementwise). */
  mul(a: Storage, b: Storage, out: Storage, n: number): void;
  /** out = a + b. */
  add(a: Storage, b: Storage, out: Storage, n: number): void;
  /**
   * C (+)= alpha·op(A)·op(B); shapes as in @nr/kernels matmul. `dtype`: the storage dtype of both A and B (default
   * f32; "f16" needs shader-f16 on the GPU); C is always f32 and the products accumulate in f32 (float64 on the CPU).
   */
  matmul(a: Storage, b: Storage, c: Storage, o: MatmulOptions): void;
  /**
   * The fused NF4 product over a frozen weight W [N, K]: forward out[M, N] (+)= a[M, K]·deq(W)ᵀ, inputGrad
   * out[M, K] (+)= a[M, N]·deq(W). deq is bitsandbytes' dequantisation (f32 code · f32 block scale).
   */
  nf4Matmul(a: Storage, w: Nf4Operand, out: Storage, o: { M: number; mode: Nf4MatmulMode; accumulate?: boolean }): void;
  /** out = x converted from one float dtype to the other (f32 → f16 rounds; on the CPU backend to the f16 value). */
  cast(x: Storage, out: Storage, n: number, from: FloatDType, to: FloatDType): void;
  /** dst[m, dstCol0 + j] (+)= src[m, srcCol0 + j] for j < cols, f32 [M, srcCols] and [M, dstCols] matrices. */
  copyColumns(src: Storage, dst: Storage, M: number, srcCols: number, dstCols: number, srcCol0: number, dstCol0: number, cols: number, accumulate: boolean): void;
  /** y[m, n] += bias[n]. */
  biasAdd(y: Storage, bias: Storage, M: number, N: number): void;
  /** dbias[n] += Σ_m dy[m, n]. */
  biasGrad(dy: Storage, dbias: Storage, M: number, N: number): void;
  rmsnorm(x: Storage, w: Storage, y: Storage, rstd: Storage, rows: number, H: number, eps: number): void;
  /** dx = ∂/∂x (written), dw += ∂/∂w (accumulated). */
  rmsnormBackward(dy: Storage, x: Storage, w: Storage, rstd: Storage, dx: Storage, dw: Storage, rows: number, H: number): void;
  /** Rotate-half RoPE on x [tokens, heads, D] by pos[tokens]; inverse rotates by −angle (the backward). */
  rope(x: Storage, pos: Storage, out: Storage, tokens: number, heads: number, D: number, theta: number, inverse: boolean): void;
  swiglu(gate: Storage, up: Storage, h: Storage, n: number): void;
  swigluBackward(dh: Storage, gate: Storage, up: Storage, dgate: Storage, dup: Storage, n: number): void;
  /** Causal GQA attention; keyValid [B, T] (1 = real token). o [B,T,Hq,D], lse [B,Hq,T]. */
  attention(q: Storage, k: Storage, v: Storage, keyValid: Storage, o: Storage, lse: Storage, d: AttentionDims): void;
  attentionBackward(dO: Storage, q: Storage, k: Storage, v: Storage, keyValid: Storage, o: Storage, lse: Storage, dq: Storage, dk: Storage, dv: Storage, d: AttentionDims): void;
  /** out[m, :] = table[ids[m], :] (table f32, or f16 widened exactly; out f32). */
  embedding(ids: Storage, table: Storage, out: Storage, M: number, H: number, tableDtype?: FloatDType): void;
  /** dtable[ids[m], :] += dy[m, :]. */
  embeddingBackward(ids: Storage, dy: Storage, dtable: Storage, M: number, H: number, V: number): void;
  /**
   * Per row m: z = h[m]·Wᵀ / T; logp[m] = z[target] − lse(z); entropy[m] = lse − Σ softmax(z)·z; lse stored.
   * Never materialises all [M, V] logits at once on the GPU.
   */
  lmHead(h: Storage, W: Storage, targets: Storage, logp: Storage, entropy: Storage, lse: Storage, M: number, H: number, V: number, temperature: number, wDtype?: FloatDType): void;
  /** dh = Σ_v (gLogp·(onehot − p) − gEnt·p·(z − Σp·z))_v · W[v] / T. W may be f16 (wDtype) only without dW. */
  lmHeadBackward(h: Storage, W: Storage, targets: Storage, lse: Storage, entropy: Storage, gLogp: Storage, gEnt: Storage, dh: Storage, M: number, H: number, V: number, temperature: number, dW?: Storage, wDtype?: FloatDType): void;
  /** Σ x² over n elements (host number; a sync point on the GPU). */
  sumSquares(x: Storage, n: number): Promise<number>;
  /** Σ over tensors of Σ x² with one read-back for all of them (the global grad norm of a step). */
  sumSquaresMany(xs: ReadonlyArray<readonly [Storage, number]>): Promise<number>;
  scale(x: Storage, alpha: number, n: number): void;
  /** One AdamW step over n f32 elements (PyTorch semantics, decoupled weight decay, bias correction). */
  adamw(p: Storage, g: Storage, m: Storage, v: Storage, n: number, h: AdamWStep): void;
}

/**
 * A frozen NF4 weight as a backend holds it: on the GPU its device form (@nr/kernels Nf4Weight: packed codes and
 * per-block f32 scales in buffers), on the float64 CPU backend its host (checkpoint) form (Nf4HostState).
 */
export type Nf4Operand = Nf4Weight | Nf4HostState;

/** [N, K] (out_features, in_features) of an NF4 weight in either form. */
export function nf4Shape(w: Nf4Operand): [number, number] {
  return "shape" in w ? [w.shape[0], w.shape[1]] : [w.N, w.K];
}

export type FloatDType = "f32" | "f16";

export interface MatmulOptions {
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  accumulate?: boolean;
  /** Storage dtype of A and B (default f32). */
  dtype?: FloatDType;
  /** Optional f32 [N] added to every row of C (a linear layer's bias, fused into the product's store). */
  bias?: Storage;
}

export interface AdamWStep {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step count, for bias correction. */
  step: number;
}
