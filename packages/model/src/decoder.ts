// The decoder (Qwen2 / Qwen3 / Llama), written once over @nr/autograd ops so it runs on the GPU backend and on the
// float64 CPU backend (gradchecks, small references). Reading order follows HF's modeling_qwen2.py:
//   embed → N × (RMSNorm → attention with RoPE, GQA, qkv bias (Qwen2) or per-head q/k RMSNorm (Qwen3) → residual
//             → RMSNorm → SwiGLU MLP → residual) → final RMSNorm → LM head (tied or untied)
// The LM head is fused with log-softmax, target gather and entropy: per-token outputs only, never [tokens × vocab].
//
// `step` is the same layer for generation: new tokens against a per-layer KV cache (prefill and decode alike), GPU only.
import type { ModelConfig } from "./config.js";
import { add, attention, embedding, linear, linearF16, lmHeadLogprob, rmsnorm, rope, swiglu, type Engine, type Tensor } from "@nr/autograd";
import { addRmsNorm, attentionDecode, kvCacheAppend, rope as ropeKernel, type Gpu, type GpuBuffer } from "@nr/kernels";

/** The fields of the HF config the decoder reads (see config.ts for their meaning). */
export type DecoderConfig = Pick<
  ModelConfig,
  "hiddenSize" | "intermediateSize" | "numLayers" | "numHeads" | "numKvHeads" | "headDim" | "vocabSize" | "rmsNormEps" | "ropeTheta" | "qkvBias" | "qkNorm" | "tieWordEmbeddings"
>;

/**
 * A projection y = f(x): dense here, the frozen NF4 base in load.ts (Nf4Projection), LoRA adapters in @nr/lora.
 * forward returns a fresh tensor, and a projection's backward never reads its output's values (LoRA adds its
 * low-rank term into that output in place).
 */
export interface Projection {
  forward(x: Tensor): Tensor;
  readonly outFeatures: number;
  readonly inFeatures: number;
}

/** A linear layer held as a weight [out, in] (and an optional bias); subclasses say how the product is taken. */
abstract class WeightProjection implements Projection {
  constructor(readonly weight: Tensor, readonly bias: Tensor | null = null) {}
  get outFeatures() {
    return this.weight.shape[0];
  }
  get inFeatures() {
    return this.weight.shape[1];
  }
  abstract forward(x: Tensor): Tensor;
}

export class DenseProjection extends WeightProjection {
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

/**
 * A frozen linear layer over an f16 weight (loadDecoder's `dtype: "f16"`): the input is cast to f16 right before the
 * matmul, products accumulate in f32, the output (and the bias) are f32 — see @nr/autograd linearF16. The backward
 * gives the input its gradient dy·W (f32) and the weight none.
 */
export class F16Projection extends WeightProjection {
  constructor(weight: Tensor, bias: Tensor | null = null) {
    if (weight.dtype !== "f16") throw new Error(`F16Projection: "${weight.name}" is ${weight.dtype}, expected an f16 weight`);
    super(weight, bias);
  }
  forward(x: Tensor): Tensor {
    return linearF16(x, this.weight, this.bias);
  }
}

export interface DecoderLayer {
  inputNorm: Tensor;
  q: Projection;
  k: Projection;
  v: Projection;
  o: Projection;
  qNorm?: Tensor;
  kNorm?: Tensor;
  postAttentionNorm: Tensor;
  gate: Projection;
  up: Projection;
  down: Projection;
}

export interface DecoderWeights {
  embed: Tensor;
  layers: DecoderLayer[];
  finalNorm: Tensor;
  /** [V, H]; the embedding itself when tied. */
  lmHead: Tensor;
}

export interface DecoderBatch {
  /** u32 [B·T] token ids. */
  ids: Tensor;
  /** u32 [B·T] position ids (left padding: positions count from each sequence's first real token). */
  positions: Tensor;
  /** u32 [B, T]: 1 for real tokens, 0 for padding (padding keys get no attention). */
  keyValid: Tensor;
  /** u32 [B·T]: the token whose log-prob is wanted at each position (usually ids shifted left). */
  targets: Tensor;
  B: number;
  T: number;
}

export interface DecoderForwardOptions {
  /** Logits are divided by this before the softmax (RL scores at the sampling temperature). */
  temperature?: number;
  /** Recompute each layer in backward instead of keeping its activations. */
  checkpoint?: boolean;
  /** Also return the final hidden states [B·T, H] (value heads). */
  returnHidden?: boolean;
}

/** One layer's KV cache on the GPU: k and v, f32 [rows, Tmax, Hkv, D]. */
export interface KvCache {
  k: GpuBuffer;
  v: GpuBuffer;
}

/** T new tokens for each of B cache rows (see Decoder.step). */
export interface DecoderStep {
  /** Token ids, [B·T] row-major. */
  tokens: readonly number[];
  /** Per row: the position of its first new token = the tokens its cache already holds. */
  starts: readonly number[];
  B: number;
  T: number;
  /** One cache per layer, each [B, Tmax, Hkv, D]. */
  caches: readonly KvCache[];
  Tmax: number;
}

export interface DecoderForwardResult {
  logp: Tensor;
  entropy: Tensor;
  hidden?: Tensor;
}

export class Decoder {
  constructor(
    readonly engine: Engine,
    readonly config: DecoderConfig,
    readonly weights: DecoderWeights,
  ) {
    const c = config;
    if (c.numHeads % c.numKvHeads !== 0) throw new Error(`decoder: num_attention_heads ${c.numHeads} is not a multiple of num_key_value_heads ${c.numKvHeads}`);
    if (weights.layers.length !== c.numLayers) throw new Error(`decoder: ${weights.layers.length} layers of weights, config says ${c.numLayers}`);
  }

  private layer(L: DecoderLayer, x: Tensor, b: DecoderBatch): Tensor {
    const e = this.engine, c = this.config;
    const { B, T } = b;
    const h = rmsnorm(x, L.inputNorm, c.rmsNormEps);
    let q = e.view(L.q.forward(h), [B, T, c.numHeads, c.headDim]);
    let k = e.view(L.k.forward(h), [B, T, c.numKvHeads, c.headDim]);
    const v = e.view(L.v.forward(h), [B, T, c.numKvHeads, c.headDim]);
    if (c.qkNorm) {
      q = rmsnorm(q, L.qNorm!, c.rmsNormEps);
      k = rmsnorm(k, L.kNorm!, c.rmsNormEps);
    }
    q = rope(q, b.positions, c.ropeTheta);
    k = rope(k, b.positions, c.ropeTheta);
    const a = e.view(attention(q, k, v, b.keyValid), [B * T, c.numHeads * c.headDim]);
    const x1 = add(x, L.o.forward(a));
    const h2 = rmsnorm(x1, L.postAttentionNorm, c.rmsNormEps);
    return add(x1, L.down.forward(swiglu(L.gate.forward(h2), L.up.forward(h2))));
  }

  /**
   * Generation: run the layers over T new tokens of each of B rows, appending their keys/values to the caches at
   * positions starts[b] … starts[b] + T − 1 and attending (causally) to everything the row's cache then holds.
   * A prompt's prefill is a step with starts = [0]; a decode step has T = 1. No tape (call under noGrad). GPU only.
   * Returns the hidden states after the final norm, [B·T, H].
   */
  step(s: DecoderStep): Tensor {
    const e = this.engine, c = this.config, W = this.weights;
    const gpu = (e.backend as unknown as { gpu?: Gpu }).gpu;
    if (!gpu) throw new Error("decoder.step: the KV cache lives on the GPU; use an engine with the GPU backend");
    const { B, T, Tmax } = s;
    const D = c.headDim, Hkv = c.numKvHeads, Hq = c.numHeads;
    if (s.tokens.length !== B * T || s.starts.length !== B) throw new Error(`decoder.step: ${s.tokens.length} tokens and ${s.starts.length} starts for B=${B} T=${T}`);
    if (s.caches.length !== c.numLayers) throw new Error(`decoder.step: ${s.caches.length} caches for ${c.numLayers} layers`);
    const over = s.starts.findIndex((p) => p + T > Tmax);
    if (over >= 0) throw new Error(`decoder.step: row ${over} would hold ${s.starts[over] + T} tokens, over the cache's Tmax=${Tmax}`);
    const ids = e.tensor(s.tokens as number[], [B * T], { dtype: "u32" });
    const pos = e.tensor(s.starts.flatMap((p) => Array.from({ length: T }, (_, t) => p + t)), [B * T], { dtype: "u32" });
    const appendAt = e.tensor(s.starts as number[], [B], { dtype: "u32" });
    const lens = e.tensor(s.starts.map((p) => p + T), [B], { dtype: "u32" });
    const buf = (t: Tensor) => t.storage as GpuBuffer;
    // x: the residual stream, updated in place; each sub-layer's residual add is fused with the norm after it.
    const x = embedding(ids, W.embed);
    const H = c.hiddenSize, rows = B * T;
    const addNorm = (r: Tensor, w: Tensor) => {
      const y = e.empty([rows, H], "f32");
      addRmsNorm(gpu, { x: buf(x), r: buf(r), w: buf(w), y: buf(y), rows, H, eps: c.rmsNormEps });
      return y;
    };
    let h = rmsnorm(x, W.layers[0]?.inputNorm ?? W.finalNorm, c.rmsNormEps);
    W.layers.forEach((L, li) => {
      let q = e.view(L.q.forward(h), [B, T, Hq, D]);
      let k = e.view(L.k.forward(h), [B, T, Hkv, D]);
      const v = e.view(L.v.forward(h), [B, T, Hkv, D]);
      if (c.qkNorm) {
        q = rmsnorm(q, L.qNorm!, c.rmsNormEps);
        k = rmsnorm(k, L.kNorm!, c.rmsNormEps);
      }
      // q and k rotated in place by one dispatch (the autograd op takes one tensor at a time).
      ropeKernel(gpu, { q: buf(q), k: buf(k), positions: buf(pos), tokens: rows, Hq, Hkv, D, theta: c.ropeTheta });
      const cache = s.caches[li];
      const o = e.empty([B, T, Hq, D], "f32");
      kvCacheAppend(gpu, { k: buf(k), v: buf(v), kCache: cache.k, vCache: cache.v, positions: buf(appendAt), B, Tn: T, Tmax, Hkv, D });
      attentionDecode(gpu, { q: buf(q), kCache: cache.k, vCache: cache.v, o: buf(o), lens: buf(lens), B, Tq: T, Tmax, Hq, Hkv, D });
      const h2 = addNorm(L.o.forward(e.view(o, [rows, Hq * D])), L.postAttentionNorm);
      const mlp = L.down.forward(swiglu(L.gate.forward(h2), L.up.forward(h2)));
      h = addNorm(mlp, W.layers[li + 1]?.inputNorm ?? W.finalNorm);
    });
    return h;
  }

  /** Hidden states after the final norm, [B·T, H]. */
  hidden(b: DecoderBatch, opts: DecoderForwardOptions = {}): Tensor {
    const e = this.engine;
    const W = this.weights;
    if (b.ids.size !== b.B * b.T) throw new Error(`decoder: ${b.ids.size} ids for B=${b.B} T=${b.T}`);
    let x = embedding(b.ids, W.embed);
    for (const L of W.layers) {
      const xin = x;
      x = opts.checkpoint
        ? e.checkpoint(() => [this.layer(L, xin, b)], "decoder-layer")[0]
        : this.layer(L, xin, b);
    }
    return rmsnorm(x, W.finalNorm, this.config.rmsNormEps);
  }

  /** Per-token log-probs of `targets` and entropies (and optionally the hidden states). */
  forward(b: DecoderBatch, opts: DecoderForwardOptions = {}): DecoderForwardResult {
    const hidden = this.hidden(b, opts);
    const { logp, entropy } = lmHeadLogprob(hidden, this.weights.lmHead, b.targets, opts.temperature ?? 1);
    return opts.returnHidden ? { logp, entropy, hidden } : { logp, entropy };
  }

  /** Back-propagate per-token upstream gradients (from @nr/algos' dLogp / dEntropy) into the trainable tensors. */
  backward(result: DecoderForwardResult, dLogp: ArrayLike<number> | Tensor, dEntropy?: ArrayLike<number> | Tensor, dHidden?: Tensor) {
    const seeds: Array<[Tensor, ArrayLike<number> | Tensor]> = [[result.logp, dLogp]];
    if (dEntropy) seeds.push([result.entropy, dEntropy]);
    if (dHidden && result.hidden) seeds.push([result.hidden, dHidden]);
    this.engine.backward(seeds);
  }
}

/** Build a batch from token-id rows (right- or left-padded with `pad`), next-token targets and position ids. */
export function makeBatch(e: Engine, rows: number[][], opts: { pad?: number; leftPad?: boolean } = {}): DecoderBatch & { lossMask: Float64Array } {
  const B = rows.length;
  const T = Math.max(...rows.map((r) => r.length));
  const pad = opts.pad ?? 0;
  const ids = new Array<number>(B * T).fill(pad);
  const pos = new Array<number>(B * T).fill(0);
  const valid = new Array<number>(B * T).fill(0);
  const targets = new Array<number>(B * T).fill(pad);
  const lossMask = new Float64Array(B * T);
  rows.forEach((r, b) => {
    const off = opts.leftPad ? T - r.length : 0;
    r.forEach((tok, i) => {
      const t = off + i;
      ids[b * T + t] = tok;
      pos[b * T + t] = i;
      valid[b * T + t] = 1;
      if (i + 1 < r.length) {
        targets[b * T + t] = r[i + 1];
        lossMask[b * T + t] = 1;
      }
    });
  });
  return {
    ids: e.tensor(ids, [B * T], { dtype: "u32", name: "ids" }),
    positions: e.tensor(pos, [B * T], { dtype: "u32", name: "positions" }),
    keyValid: e.tensor(valid, [B, T], { dtype: "u32", name: "keyValid" }),
    targets: e.tensor(targets, [B * T], { dtype: "u32", name: "targets" }),
    B,
    T,
    lossMask,
  };
}
