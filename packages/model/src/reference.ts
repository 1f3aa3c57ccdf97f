// Float64 CPU reference forward of the Qwen2/Qwen3/Llama decoder — the oracle the GPU model is tested against.
//
//   h = embed[ids]
//   per layer:  a = RMSNorm(h)·w_in
//               q = a·Wqᵀ (+bq), k = a·Wkᵀ (+bk), v = a·Wvᵀ (+bv)           (reshaped to heads)
//               Qwen3: q, k ← RMSNorm over head_dim with q_norm / k_norm
//               q, k ← RoPE rotate-half at each token's position id
//               o = softmax(q·kᵀ/√D + mask)·v  (GQA: query head h reads kv head ⌊h·Hkv/Hq⌋)
//               h = h + o·Woᵀ (+bo)
//               m = RMSNorm(h)·w_post;  h = h + (silu(m·Wgᵀ) ⊙ m·Wuᵀ)·Wdᵀ
//   logits = RMSNorm(h)·w_final · (lm_head or embed)ᵀ
//
// RMSNorm(x) = x / sqrt(mean(x²) + eps). Everything is float64 (weights are widened exactly), including the RoPE
// angle pos·θ^(−2i/D). Mask: query i attends key j iff j ≤ i and attention_mask[j] = 1; a query with no visible key
// (a left-padding position) gets a zero attention output, so logits at padded positions are defined but meaningless.
import { HF_NAMES, paramName, type ModelConfig, type ParamRole } from "./config.js";
import type { WeightMap } from "./checkpoint.js";

export type Ids2D = ReadonlyArray<ReadonlyArray<number>>;

export interface ForwardOptions {
  /** [B][T] 1 = real token, 0 = padding (left or right). Default: all ones. */
  attentionMask?: Ids2D;
  /**
   * [B][T] position of each token. Default: with a mask, cumsum(mask) − 1 (padding gets 1, as HF generate does);
   * without, 0..T−1.
   */
  positionIds?: Ids2D;
  /** Also return the residual stream: [0] the embeddings, [i + 1] after layer i (each [B, T, H]). */
  outputHiddenStates?: boolean;
}

export interface ForwardResult {
  /** [B, T, V] row-major. */
  logits: Float64Array;
  shape: [number, number, number];
  hiddenStates?: Float64Array[];
  /** The position ids used. */
  positionIds: number[][];
}

type Vec = Float32Array | Float64Array;

/** y[n, o] = Σ_i x[n, i]·W[o, i] (+ b[o]); W row-major [out, in]. */
export function linear(x: Float64Array, n: number, inDim: number, w: Vec, outDim: number, b?: Vec): Float64Array {
  if (w.length !== inDim * outDim) throw new Error(`linear: weight has ${w.length} values, expected ${outDim}×${inDim}`);
  const y = new Float64Array(n * outDim);
  for (let r = 0; r < n; r++) {
    const xo = r * inDim;
    for (let o = 0; o < outDim; o++) {
      const wo = o * inDim;
      let s = b ? b[o] : 0;
      for (let i = 0; i < inDim; i++) s += x[xo + i] * w[wo + i];
      y[r * outDim + o] = s;
    }
  }
  return y;
}

/** Row-wise RMSNorm over the last `dim` values: x / sqrt(mean(x²) + eps) · w. Works in place when out === x. */
export function rmsNorm(x: Float64Array, dim: number, w: Vec, eps: number, out: Float64Array = new Float64Array(x.length)): Float64Array {
  for (let r = 0; r < x.length / dim; r++) {
    const o = r * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[o + i] * x[o + i];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[o + i] = x[o + i] * inv * w[i];
  }
  return out;
}

export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** θ^(−2i/D) for i < D/2. */
export function ropeInvFreq(headDim: number, theta: number): Float64Array {
  const f = new Float64Array(headDim / 2);
  for (let i = 0; i < headDim / 2; i++) f[i] = Math.pow(theta, (-2 * i) / headDim);
  return f;
}

/**
 * Rotate-half RoPE in place on x [tokens, heads, D]: for i < D/2, (x_i, x_{i+D/2}) rotates by pos·invFreq_i.
 */
export function applyRope(x: Float64Array, tokens: number, heads: number, headDim: number, positions: ArrayLike<number>, invFreq: Float64Array): void {
  const half = headDim / 2;
  for (let t = 0; t < tokens; t++) {
    const pos = positions[t];
    for (let i = 0; i < half; i++) {
      const a = pos * invFreq[i];
      const c = Math.cos(a);
      const s = Math.sin(a);
      for (let h = 0; h < heads; h++) {
        const o = (t * heads + h) * headDim;
        const x1 = x[o + i];
        const x2 = x[o + i + half];
        x[o + i] = x1 * c - x2 * s;
        x[o + i + half] = x2 * c + x1 * s;
      }
    }
  }
}

/** Default position ids (see {@link ForwardOptions.positionIds}). */
export function defaultPositionIds(B: number, T: number, mask?: Ids2D): number[][] {
  const out: number[][] = [];
  for (let b = 0; b < B; b++) {
    const row: number[] = [];
    let c = 0;
    for (let t = 0; t < T; t++) {
      if (!mask) row.push(t);
      else {
        c += mask[b][t] ? 1 : 0;
        row.push(mask[b][t] ? c - 1 : 1);
      }
    }
    out.push(row);
  }
  return out;
}

/** The model a forward needs: its config and weights by HF name. */
export interface ReferenceModel {
  config: ModelConfig;
  weights: WeightMap;
}

/** Float64 logits [B, T, V] for token ids [B][T]. */
export function referenceForward(model: ReferenceModel, inputIds: Ids2D, opts: ForwardOptions = {}): ForwardResult {
  const c = model.config;
  const B = inputIds.length;
  const T = B > 0 ? inputIds[0].length : 0;
  for (const row of inputIds) if (row.length !== T) throw new Error("referenceForward: input rows differ in length");
  const mask = opts.attentionMask;
  if (mask && (mask.length !== B || mask.some((r) => r.length !== T))) throw new Error("referenceForward: attention mask shape differs from input ids");
  const pos = opts.positionIds ? opts.positionIds.map((r) => [...r]) : defaultPositionIds(B, T, mask);
  if (pos.length !== B || pos.some((r) => r.length !== T)) throw new Error("referenceForward: position ids shape differs from input ids");

  const W = (role: ParamRole, layer?: number): Vec => {
    const name = paramName(role, layer);
    const w = model.weights.get(name);
    if (!w) throw new Error(`referenceForward: missing weight ${name}`);
    return w;
  };
  const H = c.hiddenSize;
  const D = c.headDim;
  const Hq = c.numHeads;
  const Hkv = c.numKvHeads;
  const group = Hq / Hkv;
  const I = c.intermediateSize;
  const V = c.vocabSize;
  const N = B * T;
  const eps = c.rmsNormEps;
  const invFreq = ropeInvFreq(D, c.ropeTheta);
  const flatPos = pos.flat();
  const scale = 1 / Math.sqrt(D);

  // embeddings
  const emb = W("embed");
  const h = new Float64Array(N * H);
  for (let n = 0; n < N; n++) {
    const id = inputIds[Math.floor(n / T)][n % T];
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`referenceForward: token id ${id} out of range [0, ${V})`);
    for (let i = 0; i < H; i++) h[n * H + i] = emb[id * H + i];
  }
  const hidden: Float64Array[] | undefined = opts.outputHiddenStates ? [h.slice()] : undefined;

  for (let l = 0; l < c.numLayers; l++) {
    const a = rmsNorm(h, H, W("inputNorm", l), eps);
    const q = linear(a, N, H, W("q", l), Hq * D, c.qkvBias ? W("qBias", l) : undefined);
    const k = linear(a, N, H, W("k", l), Hkv * D, c.qkvBias ? W("kBias", l) : undefined);
    const v = linear(a, N, H, W("v", l), Hkv * D, c.qkvBias ? W("vBias", l) : undefined);
    if (c.qkNorm) {
      rmsNorm(q, D, W("qNorm", l), eps, q);
      rmsNorm(k, D, W("kNorm", l), eps, k);
    }
    applyRope(q, N, Hq, D, flatPos, invFreq);
    applyRope(k, N, Hkv, D, flatPos, invFreq);

    const attn = new Float64Array(N * Hq * D);
    const scores = new Float64Array(T);
    for (let b = 0; b < B; b++) {
      for (let hq = 0; hq < Hq; hq++) {
        const hk = Math.floor(hq / group);
        for (let i = 0; i < T; i++) {
          const qo = ((b * T + i) * Hq + hq) * D;
          let max = -Infinity;
          for (let j = 0; j <= i; j++) {
            if (mask && !mask[b][j]) {
              scores[j] = -Infinity;
              continue;
            }
            const ko = ((b * T + j) * Hkv + hk) * D;
            let s = 0;
            for (let d = 0; d < D; d++) s += q[qo + d] * k[ko + d];
            scores[j] = s * scale;
            if (scores[j] > max) max = scores[j];
          }
          if (max === -Infinity) continue; // no visible key: zero output
          let sum = 0;
          for (let j = 0; j <= i; j++) {
            scores[j] = scores[j] === -Infinity ? 0 : Math.exp(scores[j] - max);
            sum += scores[j];
          }
          for (let j = 0; j <= i; j++) {
            const p = scores[j] / sum;
            if (p === 0) continue;
            const vo = ((b * T + j) * Hkv + hk) * D;
            for (let d = 0; d < D; d++) attn[qo + d] += p * v[vo + d];
          }
        }
      }
    }
    const o = linear(attn, N, Hq * D, W("o", l), H, c.oBias ? W("oBias", l) : undefined);
    for (let i = 0; i < h.length; i++) h[i] += o[i];

    const m = rmsNorm(h, H, W("postAttnNorm", l), eps);
    const g = linear(m, N, H, W("gate", l), I);
    const u = linear(m, N, H, W("up", l), I);
    for (let i = 0; i < g.length; i++) g[i] = silu(g[i]) * u[i];
    const d = linear(g, N, I, W("down", l), H);
    for (let i = 0; i < h.length; i++) h[i] += d[i];
    hidden?.push(h.slice());
  }

  const f = rmsNorm(h, H, W("finalNorm"), eps);
  const head = c.tieWordEmbeddings ? emb : model.weights.get(HF_NAMES.lmHead);
  if (!head) throw new Error(`referenceForward: missing weight ${HF_NAMES.lmHead}`);
  const logits = linear(f, N, H, head, V);
  return { logits, shape: [B, T, V], hiddenStates: hidden, positionIds: pos };
}
