// The fused decode step: Decoder.step for one new token per row through dense f32 layers, five dispatches a layer
// (see @nr/kernels decode.ts for the kernels and the measurements behind them):
//
//   decodeQkv → attentionDecode → decodeResidual (o_proj) → decodeGateUp → decodeResidual (down_proj)
//
// instead of the thirteen of the general path (norm, three projections, rope, cache append, attention, o_proj,
// add + norm, gate, up, swiglu, down, add + norm). The result is the same computation: the tests compare both paths
// against the float64 reference.
//
// Taken when every projection is a plain DenseProjection over an f32 weight (no LoRA, NF4 or f16 base: those keep
// the general path), there is no per-head q/k norm (Qwen3), T = 1, B ≤ DECODE_MAX_ROWS and the adapter computes on
// the CPU, where per-dispatch cost dominates a decode step. On a GPU the kernels' one-invocation-per-row GEMV
// would read memory uncoalesced, so GPUs keep the tiled path. NR_DECODE_FUSED=0 turns the path off and =1 forces it
// on any adapter (benchmarks, tests).
import { embedding, rmsnorm, type Engine, type Tensor } from "@nr/autograd";
import { DECODE_MAX_ROWS, attentionDecode, decodeGateUp, decodeQkv, decodeResidual, isCpuAdapter, type Gpu, type GpuBuffer } from "@nr/kernels";
import { DenseProjection, type DecoderConfig, type DecoderLayer, type DecoderStep, type DecoderWeights, type Projection } from "./decoder.js";

/** A dense f32 projection's weight and bias buffers, or null when it is anything else (LoRA, NF4, f16, sharded). */
function denseBuffers(p: Projection): { w: GpuBuffer; b: GpuBuffer | null } | null {
  // exactly a DenseProjection: a subclass may add to the product (a LoRA wrapper, say)
  if (Object.getPrototypeOf(p) !== DenseProjection.prototype) return null;
  const d = p as DenseProjection;
  if (d.weight.dtype !== "f32") return null;
  const whole = (t: Tensor) => ("bytes" in (t.storage as object) && !("shards" in (t.storage as object)) ? (t.storage as GpuBuffer) : null);
  const w = whole(d.weight);
  if (!w) return null;
  if (!d.bias) return { w, b: null };
  const b = whole(d.bias);
  return b && d.bias.dtype === "f32" ? { w, b } : null;
}

interface FusedLayer {
  inputNorm: GpuBuffer;
  postNorm: GpuBuffer;
  q: GpuBuffer;
  k: GpuBuffer;
  v: GpuBuffer;
  bias: { q: GpuBuffer; k: GpuBuffer; v: GpuBuffer } | null;
  o: GpuBuffer;
  gate: GpuBuffer;
  up: GpuBuffer;
  down: GpuBuffer;
}

/** The layers' buffers for the fused path, or why it cannot run these weights. */
function fusedLayers(c: DecoderConfig, layers: readonly DecoderLayer[], gpu: Gpu): FusedLayer[] | string {
  if (c.qkNorm) return "per-head q/k norm";
  if (c.hiddenSize % 4 || c.intermediateSize % 4 || (c.numHeads * c.headDim) % 4) return "a width not a multiple of 4";
  const out: FusedLayer[] = [];
  for (const L of layers) {
    const [q, k, v, o, gate, up, down] = [L.q, L.k, L.v, L.o, L.gate, L.up, L.down].map(denseBuffers);
    if (!q || !k || !v || !o || !gate || !up || !down) return "a projection that is not a dense f32 weight";
    if (o.b || gate.b || up.b || down.b) return "a bias on o/gate/up/down";
    const biased = [q.b, k.b, v.b].filter(Boolean).length;
    if (biased !== 0 && biased !== 3) return "a bias on some of q/k/v only";
    const norm = (t: Tensor) => (t.dtype === "f32" && "bytes" in (t.storage as object) ? (t.storage as GpuBuffer) : null);
    const inputNorm = norm(L.inputNorm), postNorm = norm(L.postAttentionNorm);
    if (!inputNorm || !postNorm) return "a norm weight that is not f32";
    out.push({ inputNorm, postNorm, q: q.w, k: k.w, v: v.w, bias: biased ? { q: q.b!, k: k.b!, v: v.b! } : null, o: o.w, gate: gate.w, up: up.w, down: down.w });
  }
  if ((gpu.limits.maxStorageBuffersPerShaderStage ?? 8) < (out[0]?.bias ? 12 : 9)) return "too few storage bindings per stage";
  return out;
}

/** The fused-path plan of one decoder, built on first use (null when it does not apply to this model). */
export class FusedDecode {
  private plan: FusedLayer[] | string | undefined;
  /** The objects the plan was built from: a LoRA wrapper put in a layer's slot later must not be bypassed. */
  private planKey: object[] = [];

  constructor(
    private readonly engine: Engine,
    private readonly config: DecoderConfig,
    private readonly weights: DecoderWeights,
  ) {}

  /** True when `step` should take the fused path. */
  applies(gpu: Gpu, s: DecoderStep): boolean {
    const env = process.env.NR_DECODE_FUSED;
    if (env === "0" || s.T !== 1 || s.B > DECODE_MAX_ROWS) return false;
    if (env !== "1" && !isCpuAdapter(gpu)) return false;
    const key = this.weights.layers.flatMap((L) => [L.q, L.k, L.v, L.o, L.gate, L.up, L.down, L.inputNorm, L.postAttentionNorm]);
    if (this.plan === undefined || key.length !== this.planKey.length || key.some((o, i) => o !== this.planKey[i])) {
      this.plan = fusedLayers(this.config, this.weights.layers, gpu);
      this.planKey = key;
    }
    return typeof this.plan !== "string";
  }

  /** Decoder.step with T = 1 (checked by the caller): the hidden states after the final norm, [B, H]. */
  step(gpu: Gpu, s: DecoderStep): Tensor {
    const e = this.engine, c = this.config;
    const layers = this.plan as FusedLayer[];
    const { B, Tmax } = s;
    const D = c.headDim, Hq = c.numHeads, Hkv = c.numKvHeads, H = c.hiddenSize, I = c.intermediateSize;
    const buf = (t: Tensor) => t.storage as GpuBuffer;
    const ids = e.tensor(s.tokens as number[], [B], { dtype: "u32" });
    const pos = e.tensor(s.starts as number[], [B], { dtype: "u32" });
    const lens = e.tensor(s.starts.map((p) => p + 1), [B], { dtype: "u32" });
    // x: the residual stream, updated in place by the two residual GEMVs of every layer.
    const x = embedding(ids, this.weights.embed);
    const q = e.empty([B, Hq * D], "f32");
    const attn = e.empty([B, Hq * D], "f32");
    const act = e.empty([B, I], "f32");
    layers.forEach((L, li) => {
      const cache = s.caches[li];
      decodeQkv(gpu, {
        x: buf(x), norm: L.inputNorm, wq: L.q, wk: L.k, wv: L.v, ...(L.bias ? { bq: L.bias.q, bk: L.bias.k, bv: L.bias.v } : {}),
        positions: buf(pos), q: buf(q), kCache: cache.k, vCache: cache.v, M: B, H, Hq, Hkv, D, Tmax, eps: c.rmsNormEps, theta: c.ropeTheta,
      });
      attentionDecode(gpu, { q: buf(q), kCache: cache.k, vCache: cache.v, o: buf(attn), lens: buf(lens), B, Tq: 1, Tmax, Hq, Hkv, D });
      decodeResidual(gpu, { a: buf(attn), w: L.o, x: buf(x), M: B, N: H, K: Hq * D });
      decodeGateUp(gpu, { x: buf(x), norm: L.postNorm, wGate: L.gate, wUp: L.up, act: buf(act), M: B, H, I, eps: c.rmsNormEps });
      decodeResidual(gpu, { a: buf(act), w: L.down, x: buf(x), M: B, N: H, K: I });
    });
    return rmsnorm(x, this.weights.finalNorm, c.rmsNormEps);
  }
}
