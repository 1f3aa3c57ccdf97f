// Attention family: causal attention with grouped-query heads (GQA), flash-style (online softmax over key blocks,
// never an [heads × T × T] score matrix), a key padding mask, a forward for prefill and for decode against a KV cache,
// the KV-cache append, and the backward (flash-attention-2 decomposition, P recomputed from Q, K and the stored
// per-row log-sum-exp).
//
// Layouts (row-major, what the q/k/v projections produce with no transpose):
//   q, o, dO, dq    [B, Tq, Hq, D]        (prefill: Tq = T)
//   k, v, dk, dv    [B, Tk, Hkv, D]       (prefill: Tk = T; decode: the cache, Tk = Tmax)
//   lse             [B, Hq, Tq] f32       natural-log log-sum-exp of the scaled scores of each query row;
//                                         −∞ for a row with no visible key (its output is 0)
//   kvValid         u32 [B, Tk]           optional key mask, one word per key: all-zero bits = padding (the key gets
//                                         no weight; u32 0, or f32 +0.0 so a 0/1 f32 mask works too), else valid
//   kvStart         u32 [B]               decode only, optional: cache positions < kvStart[b] are padding
//                                         (left-padded prompts in a rollout batch)
//   lens            u32 [B]               decode only: cache positions < lens[b] hold data (the new tokens included)
// Query head h reads kv head ⌊h / G⌋ with G = Hq / Hkv (HF's repeat_kv order). Scores are scale·q·k with
// scale = 1/√D unless given. Causality: query row i of sequence b sits at position qpos = i (prefill) or
// qpos = lens[b] − Tq + i (decode: the Tq new tokens are the last Tq cache entries, so Tq > 1 is chunked prefill),
// and key s is visible iff s ≤ qpos, s < lens[b] (decode), kvValid[b, s] ≠ 0 and s ≥ kvStart[b] (when given).
// A row that sees no key — e.g. a left-padding query row — gets o = 0, lse = −∞ and zero gradients, never NaN.
// Masked keys inside the visible range are multiplied by an exact 0, so their k/v must be finite (padding tokens'
// projections are); cache slots at or past lens[b] are never read.
//
// Dtypes: q/k/v/o (and dO/dq/dk/dv) f32, or f16 with shader-f16; scores, softmax statistics and every accumulator
// are f32. Any D ≤ 256 (vec4 loads when D % 4 == 0).
//
// Forward kernel (`attention_fwd`, also the decode kernel). A workgroup owns WG consecutive "rows" of one
// (sequence b, kv head hk), a row being a (query position t, head of the group g) pair in t-major order, so all
// invocations of a workgroup read the same K/V rows (uniform loads: broadcasts on a GPU, scalar loads on lavapipe's
// SIMD lanes) and the G query heads that share a kv head share its traffic. Each invocation keeps its scaled q row
// and its output row (D f32 each) and walks the keys [kBeg, kEnd) in blocks of KB (unrolled in the generated
// WGSL): KB dot products q·k, the block max, one rescale of the running output by exp2(m − m'), KB multiply-adds of
// v rows. Scores carry a log2(e) factor so the exponentials are exp2. kEnd is the workgroup's last query position
// + 1 (the causal bound), so the key loop is uniform and only the last block is partly masked. The key mask
// (none / kvValid / kvStart) and prefill vs decode are runtime modes of one pipeline. Memory: O(T·D) per head;
// nothing of size T² exists.
//
// Where the D-long per-invocation rows live (`regs`): private arrays on GPUs (registers); on CPU adapters a
// private column of a workgroup array, component-major so a SIMD batch touches consecutive words (no barriers,
// nothing shared). lavapipe builds dynamically indexed private arrays into huge code (minutes per pipeline at
// D = 128), and fully unrolled register rows spill; the workgroup columns build in ~1–2 s and ran 2× faster than
// the same columns in vec4-major order. Loop bounds over D are runtime values (params.DV) for the same reason, and
// one pipeline serves every D of a power-of-two bucket.
//
// Backward (three dispatches), with P = exp(S − lse), dP = dO·Vᵀ, Δ = rowsum(dO ∘ O), dS = P ∘ (dP − Δ):
//   dQ = scale·dS·K,   dK = scale·dSᵀ·Q,   dV = Pᵀ·dO    (dK/dV summed over the G query heads of each kv head)
//  1. `attention_bwd_stats`: per query row, Δ and lse·log2(e) into a scratch of vec2 f32 [B, Hq, T] (a fully
//     masked row gets +3e38, so its recomputed P underflows to exactly 0).
//  2. `attention_bwd_dq`: rows as in the forward; recompute the scores of a key block, P, dP, dS; dq += dS·k.
//  3. `attention_bwd_dkdv`: an invocation owns one key (kv head hk) and walks the (t, g) query rows t ≥ the
//     workgroup's first key, recomputing P and dS for all G heads: dk += dS·q, dv += P·dO. No atomics: every
//     output element has exactly one writer, so results are deterministic. P is recomputed twice (7 T²D-sized
//     products instead of FA2's 5) as the price of no atomics.
//
// On CPU adapters with subgroups the dq and dk/dv steps run attention-bwd-subgroup.ts instead where the head dim
// allows (same rule as the forward below): lanes own head dims, a workgroup keeps a block of 8 keys (dk/dv) or 8
// query rows (dq) in registers and loads each row of the other side once per block. `pnpm bench kernels --only
// attention` ("subgroup vs row backward" rows), Qwen2.5-1.5B heads, loaded shared 2-core machine, six runs: 4.7–10.8×
// the row kernels at T = 512, 3.5–9.3× at T = 128. The price is build time: unrolled over D, the D = 128 pipelines
// took 68 s (dq) and 120 s (dk/dv) to build with a cold Mesa shader cache on that machine, the row kernels ~2 s.
//
// Precision (asserted in attention.test.ts, η = 2⁻²⁴): with S = max over a row's visible keys of scale·Σ_i|q_i k_i|,
// n the visible keys, |o − o₆₄| ≤ η(4D + 8n + 64)(1 + S)·Σ_s p_s|v_s|, and the gradients are bounded by the same
// factor times magnitudes that propagate |·| through the backward (see `attentionBackwardReference`).
//
// On CPU adapters the forward (prefill and decode) runs attention-subgroup.ts instead where the head dim allows
// (D % 32 == 0 with lavapipe's 8-wide subgroups): tiles of 12 query rows × 16 keys spread over the lanes of one
// subgroup, each K/V row loaded once per tile. Measured on the shared 2-core machine at T = 512, Qwen2.5-1.5B heads,
// both kernels in the same run (`pnpm bench kernels --only attention`): 4.0–4.4× the row kernel below.
//
// Speed of the row kernels on lavapipe (2 cores, Qwen2.5-1.5B heads, T = 512, f32, quiet machine): forward ≈ 2.5–2.8
// GFLOP/s, backward ≈ 1.6 GFLOP/s counted as 2.5× the forward's flops (benchmarks/kernels/attention.ts). Not done: a GPU-tuned
// variant (several invocations per row or subgroup-matrix tiles instead of 2·D f32 of per-invocation state) and
// split-KV decode (flash-decoding) for long caches with few heads; the GPU path ("private" regs) is tested for
// correctness here on lavapipe only.
import type { Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import { FLAT_WG, foldGrid, isCpuAdapter, requireBuffer, requireCount, requireF16, vecType, type Dtype } from "./elementwise.js";
import { attentionForwardBindings, attentionSubgroupFits, attentionSubgroupWgsl } from "./attention-subgroup.js";
import { attentionBackwardSgDkDvWgsl, attentionBackwardSgDqWgsl } from "./attention-bwd-subgroup.js";
import { broadcastWidth } from "./matmul.js";
import { memoWgsl } from "./wgsl-cache.js";

export type AttentionDtype = Dtype;

/** Key-mask variant of the forward kernel. */
export type AttentionMaskMode = "none" | "valid" | "start";

const LOG2E = Math.LOG2E;
const MAX_D = 256;
const NEG_INF_BITS = 0xff800000;

export interface AttentionArgs extends AttentionTuning {
  /** q [B, T, Hq, D]. */
  q: GpuBuffer;
  /** k, v [B, T, Hkv, D]. */
  k: GpuBuffer;
  v: GpuBuffer;
  /** Output [B, T, Hq, D] (dtype as q). */
  o: GpuBuffer;
  /** Optional f32 [B, Hq, T]: the log-sum-exp per query row, needed by the backward. */
  lse?: GpuBuffer;
  /** Optional u32 [B, T]: 0 marks a padding key. */
  kvValid?: GpuBuffer;
  B: number;
  T: number;
  Hq: number;
  Hkv: number;
  D: number;
  /** Score scale (default 1/√D). */
  scale?: number;
  dtype?: AttentionDtype;
}

export interface AttentionDecodeArgs extends AttentionTuning {
  /** q for the Tq new tokens [B, Tq, Hq, D]. */
  q: GpuBuffer;
  /** The caches [B, Tmax, Hkv, D], already holding the new tokens' k/v (see kvCacheAppend). */
  kCache: GpuBuffer;
  vCache: GpuBuffer;
  /** Output [B, Tq, Hq, D]. */
  o: GpuBuffer;
  /** u32 [B]: valid cache length of each sequence, new tokens included (≥ Tq). */
  lens: GpuBuffer;
  /** Optional u32 [B]: cache positions < kvStart[b] are padding (left-padded prompts). */
  kvStart?: GpuBuffer;
  /** Optional u32 [B, Tmax]: 0 marks a padding cache position. (Give kvStart or kvValid, not both.) */
  kvValid?: GpuBuffer;
  /** Optional f32 [B, Hq, Tq]. */
  lse?: GpuBuffer;
  B: number;
  Tq: number;
  Tmax: number;
  Hq: number;
  Hkv: number;
  D: number;
  scale?: number;
  dtype?: AttentionDtype;
}

export interface AttentionBackwardArgs extends AttentionTuning {
  q: GpuBuffer;
  k: GpuBuffer;
  v: GpuBuffer;
  /** The forward's output and lse. */
  o: GpuBuffer;
  lse: GpuBuffer;
  /** Upstream gradient [B, T, Hq, D]. */
  dO: GpuBuffer;
  /** Outputs (written, not accumulated): dq [B, T, Hq, D], dk/dv [B, T, Hkv, D]. */
  dq: GpuBuffer;
  dk: GpuBuffer;
  dv: GpuBuffer;
  kvValid?: GpuBuffer;
  B: number;
  T: number;
  Hq: number;
  Hkv: number;
  D: number;
  scale?: number;
  dtype?: AttentionDtype;
  /** Optional scratch of ≥ 8·B·Hq·T bytes (Δ and lse per row); allocated from the pool when absent. */
  stats?: GpuBuffer;
}

export interface KvCacheAppendArgs {
  /** New rows [B, Tn, Hkv, D]. */
  k: GpuBuffer;
  v: GpuBuffer;
  /** Caches [B, Tmax, Hkv, D] (same dtype as k/v). */
  kCache: GpuBuffer;
  vCache: GpuBuffer;
  /** u32 [B]: cache position of each sequence's first new row. Rows that would land at ≥ Tmax are dropped. */
  positions: GpuBuffer;
  B: number;
  Tn: number;
  Tmax: number;
  Hkv: number;
  D: number;
  dtype?: AttentionDtype;
}

// ---------------------------------------------------------------------------------------------------------------
// WGSL generation

interface Vec {
  /** f32 compute type of one vector (vec4<f32> or f32). */
  F: string;
  /** storage element type. */
  S: string;
  /** dot product of two compute vectors. */
  dot: (a: string, b: string) => string;
}

function vec(dtype: Dtype, VW: number): Vec {
  return {
    F: vecType("f32", VW),
    S: vecType(dtype, VW),
    dot: VW === 4 ? (a, b) => `dot(${a}, ${b})` : (a, b) => `(${a} * ${b})`,
  };
}

/**
 * Vector width and register capacity for a head dim: vec4 when D % 4 == 0; the per-invocation arrays hold DVMAX
 * vectors (DV = D/VW rounded up to a power of two) and the loops run to the runtime DV. Runtime loop bounds are
 * deliberate: with constant bounds lavapipe's compiler unrolls them around the unrolled key block and a D=64
 * pipeline took two minutes to build; and one pipeline then serves every D of a bucket.
 */
export function attentionHeadLayout(D: number): { VW: number; DV: number; DVMAX: number } {
  const VW = D % 4 === 0 ? 4 : 1;
  const DV = D / VW;
  return { VW, DV, DVMAX: Math.max(2, 2 ** Math.ceil(Math.log2(DV))) };
}

/**
 * Where an invocation keeps its D-long rows (q, the output accumulator, …): "private" arrays (registers on a GPU), or
 * its own column of a workgroup array ("workgroup"; no barriers, nothing shared). lavapipe compiles dynamically
 * indexed private arrays into huge code (a D=128 pipeline took minutes to build) but indexes workgroup memory
 * cheaply, so CPU adapters use "workgroup".
 */
export type AttentionRegs = "private" | "workgroup";

function regHelpers(regs: AttentionRegs, F: string, DVMAX: number, WG: number, VW: number) {
  // "workgroup": component-major columns, word (d·VW + c)·WG + lid, so the invocations of a SIMD batch touch
  // consecutive words.
  const at = (n: string, c: number) => `${n}[(d * ${VW}u + ${c}u) * ${WG}u + lid]`;
  const comps = range(VW);
  return {
    R: (n: string) => (regs === "private" ? `${n}[d]` : VW === 1 ? at(n, 0) : `${F}(${comps.map((c) => at(n, c)).join(", ")})`),
    W: (n: string, e: string) => {
      if (regs === "private") return `${n}[d] = ${e};`;
      if (VW === 1) return `${at(n, 0)} = ${e};`;
      return `{ let w = ${e}; ${comps.map((c) => `${at(n, c)} = w[${c}];`).join(" ")} }`;
    },
    decl: (...names: string[]) =>
      names.map((n) => (regs === "private" ? `var<private> ${n}: array<${F}, ${DVMAX}>;` : `var<workgroup> ${n}: array<f32, ${DVMAX * VW * WG}>;`)).join("\n"),
  };
}

const header = (dtype: Dtype) => (dtype === "f16" ? "enable f16;\n" : "");
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

export interface AttentionForwardKernelOpts {
  dtype: Dtype;
  /** Vector width (4 or 1) and per-invocation capacity in vectors (see attentionHeadLayout). */
  VW: number;
  DVMAX: number;
  regs: AttentionRegs;
  WG: number;
  KB: number;
  lse: boolean;
}

/** Runtime modes of the forward kernel (params.mode): bit 0–1 the key mask, bit 2 decode (LENS is read). */
const MASK_MODE: Record<AttentionMaskMode, number> = { none: 0, valid: 1, start: 2 };
const DECODE_BIT = 4;

/**
 * The forward (prefill and decode) kernel. Bindings: Q, K, V, O, [LSE], LENS, MASK, params. The mask variant and
 * decode are runtime modes (one pipeline serves all, so fewer pipelines to build); unused LENS/MASK bindings get
 * any read-only buffer and are never read.
 */
export function attentionForwardWgsl(o: AttentionForwardKernelOpts): string {
  const { dtype, VW, DVMAX, WG, KB, lse } = o;
  const { F, S, dot } = vec(dtype, VW);
  const { R, W, decl } = regHelpers(o.regs, F, DVMAX, WG, VW);
  const J = range(KB);
  return /* wgsl */ `${header(dtype)}
${attentionForwardBindings(S, lse)}

const WG = ${WG}u;
const KB = ${KB}u;
const NEG = -3.0e38;
${decl("qv", "acc")}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.z;
  let hk = wid.y;
  let rows = u.Tq * u.G;
  let r0 = wid.x * WG;
  let r = r0 + lid;
  if (r >= rows) { return; }
  let t = r / u.G;
  let h = hk * u.G + r % u.G;
  let tHi = (min(r0 + WG, rows) - 1u) / u.G; // the workgroup's last query row
  let maskMode = u.mode & 3u;
  var len = u.Tk;
  var qOff = 0i;
  if ((u.mode & ${DECODE_BIT}u) != 0u) {
    let seqLen = LENS[b];
    len = min(seqLen, u.Tk);
    qOff = i32(seqLen) - i32(u.Tq);
  }
  let qpos = qOff + i32(t);
  let kEnd = u32(clamp(qOff + i32(tHi) + 1i, 0i, i32(len)));
  let kLast = max(kEnd, 1u) - 1u;
  var kBeg = 0u;
  if (maskMode == ${MASK_MODE.start}u) { kBeg = min(MASK[b], kEnd); }
  let checkMask = maskMode == ${MASK_MODE.valid}u;

  let qBase = ((b * u.Tq + t) * u.Hq + h) * u.DV;
  for (var d = 0u; d < u.DV; d++) {
    ${W("qv", `${F}(Q[qBase + d]) * u.scale2`)}
    ${W("acc", `${F}(0.0)`)}
  }
  var m = NEG;
  var l = 0.0;
  for (var blk = kBeg; blk < kEnd; blk += KB) {
${J.map((j) => `    let s${j} = blk + ${j}u;
    let o${j} = ((b * u.Tk + min(s${j}, kLast)) * u.Hkv + hk) * u.DV;`).join("\n")}
${J.map((j) => `    var a${j} = 0.0;`).join("\n")}
    for (var d = 0u; d < u.DV; d++) {
      let qd = ${R("qv")};
${J.map((j) => `      a${j} += ${dot("qd", `${F}(K[o${j} + d])`)};`).join("\n")}
    }
${J.map((j) => `    let ok${j} = s${j} < kEnd && i32(s${j}) <= qpos && (!checkMask || MASK[b * u.Tk + min(s${j}, kLast)] != 0u);
    let x${j} = select(NEG, a${j}, ok${j});`).join("\n")}
    let bm = ${J.slice(1).reduce((e, j) => `max(${e}, x${j})`, "x0")};
    if (bm > NEG) {
      let mn = max(m, bm);
      let alpha = exp2(m - mn);
${J.map((j) => `      let p${j} = select(0.0, exp2(x${j} - mn), ok${j});`).join("\n")}
      l = l * alpha + ${J.map((j) => `p${j}`).join(" + ")};
      for (var d = 0u; d < u.DV; d++) {
        var x = ${R("acc")} * alpha;
${J.map((j) => `        x += p${j} * ${F}(V[o${j} + d]);`).join("\n")}
        ${W("acc", `x`)}
      }
      m = mn;
    }
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var d = 0u; d < u.DV; d++) { O[qBase + d] = ${S}(${R("acc")} * inv); }
${lse ? `  LSE[(b * u.Hq + h) * u.Tq + t] = select(${NEG_INF_BITS}u, bitcast<u32>((m + log2(l)) * ${Math.LN2}), l > 0.0);` : ""}
}
`;
}

/** Backward step 1: per query row, vec2(lse·log2 e, Δ = Σ dO·O). DV is a runtime parameter (one pipeline per dtype/width). */
export function attentionBackwardStatsWgsl(o: { dtype: Dtype; VW: number }): string {
  const F = vecType("f32", o.VW);
  const S = vecType(o.dtype, o.VW);
  const dot = o.VW === 4 ? "dot(a, c)" : "(a * c)";
  return /* wgsl */ `${header(o.dtype)}
struct Params { T: u32, Hq: u32, rows: u32, DV: u32 }
@group(0) @binding(0) var<storage, read> O: array<${S}>;
@group(0) @binding(1) var<storage, read> DO: array<${S}>;
@group(0) @binding(2) var<storage, read> LSE: array<u32>;
@group(0) @binding(3) var<storage, read_write> STATS: array<vec2<f32>>;
@group(0) @binding(4) var<uniform> u: Params;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = ${FLAT_WG} * 64u + lid; // row of q's layout: (b·T + t)·Hq + h
  if (row >= u.rows) { return; }
  let base = row * u.DV;
  var delta = 0.0;
  for (var d = 0u; d < u.DV; d++) {
    let a = ${F}(DO[base + d]);
    let c = ${F}(O[base + d]);
    delta += ${dot};
  }
  let h = row % u.Hq;
  let bt = row / u.Hq;
  let t = bt % u.T;
  let b = bt / u.T;
  let li = (b * u.Hq + h) * u.T + t;
  let bits = LSE[li];
  let finite = (bits & 0x7f800000u) != 0x7f800000u;
  STATS[li] = vec2<f32>(select(3.0e38, bitcast<f32>(bits) * ${LOG2E}, finite), delta);
}
`;
}

/** Backward step 2: dq. Bindings: Q, K, V, DO, STATS, DQ, MASK (read when params.masked), params. */
export function attentionBackwardDqWgsl(o: { dtype: Dtype; VW: number; DVMAX: number; regs: AttentionRegs; WG: number; KB: number }): string {
  const { dtype, VW, DVMAX, WG, KB } = o;
  const { F, S, dot } = vec(dtype, VW);
  const { R, W, decl } = regHelpers(o.regs, F, DVMAX, WG, VW);
  const J = range(KB);
  return /* wgsl */ `${header(dtype)}
struct Params { T: u32, Hq: u32, Hkv: u32, G: u32, scale2: f32, scale: f32, DV: u32, masked: u32 }
@group(0) @binding(0) var<storage, read> Q: array<${S}>;
@group(0) @binding(1) var<storage, read> K: array<${S}>;
@group(0) @binding(2) var<storage, read> V: array<${S}>;
@group(0) @binding(3) var<storage, read> DO: array<${S}>;
@group(0) @binding(4) var<storage, read> STATS: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> DQ: array<${S}>;
@group(0) @binding(6) var<storage, read> MASK: array<u32>;
@group(0) @binding(7) var<uniform> u: Params;

const WG = ${WG}u;
const KB = ${KB}u;
${decl("qv", "gv", "dq")}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.z;
  let hk = wid.y;
  let rows = u.T * u.G;
  let r0 = wid.x * WG;
  let r = r0 + lid;
  if (r >= rows) { return; }
  let t = r / u.G;
  let h = hk * u.G + r % u.G;
  let kEnd = (min(r0 + WG, rows) - 1u) / u.G + 1u;
  let kLast = kEnd - 1u;
  let st = STATS[(b * u.Hq + h) * u.T + t];
  let qBase = ((b * u.T + t) * u.Hq + h) * u.DV;
  for (var d = 0u; d < u.DV; d++) {
    ${W("qv", `${F}(Q[qBase + d]) * u.scale2`)}
    ${W("gv", `${F}(DO[qBase + d])`)}
    ${W("dq", `${F}(0.0)`)}
  }
  for (var blk = 0u; blk < kEnd; blk += KB) {
${J.map((j) => `    let s${j} = blk + ${j}u;
    let o${j} = ((b * u.T + min(s${j}, kLast)) * u.Hkv + hk) * u.DV;
    var a${j} = 0.0;
    var g${j} = 0.0;`).join("\n")}
    for (var d = 0u; d < u.DV; d++) {
      let qd = ${R("qv")};
      let gd = ${R("gv")};
${J.map((j) => `      a${j} += ${dot("qd", `${F}(K[o${j} + d])`)};
      g${j} += ${dot("gd", `${F}(V[o${j} + d])`)};`).join("\n")}
    }
${J.map((j) => `    let ok${j} = s${j} <= t && (u.masked == 0u || MASK[b * u.T + min(s${j}, kLast)] != 0u);
    let p${j} = select(0.0, exp2(a${j} - st.x), ok${j});
    let ds${j} = p${j} * (g${j} - st.y);`).join("\n")}
    for (var d = 0u; d < u.DV; d++) {
      var x = ${R("dq")};
${J.map((j) => `      x += ds${j} * ${F}(K[o${j} + d]);`).join("\n")}
      ${W("dq", `x`)}
    }
  }
  for (var d = 0u; d < u.DV; d++) { DQ[qBase + d] = ${S}(${R("dq")} * u.scale); }
}
`;
}

/** Backward step 3: dk and dv. Bindings: Q, K, V, DO, STATS, DK, DVO, MASK (read when params.masked), params. */
export function attentionBackwardDkDvWgsl(o: { dtype: Dtype; VW: number; DVMAX: number; regs: AttentionRegs; WG: number; KB: number }): string {
  const { dtype, VW, DVMAX, WG, KB } = o;
  const { F, S, dot } = vec(dtype, VW);
  const { R, W, decl } = regHelpers(o.regs, F, DVMAX, WG, VW);
  const J = range(KB);
  return /* wgsl */ `${header(dtype)}
struct Params { T: u32, Hq: u32, Hkv: u32, G: u32, scale2: f32, scale: f32, DV: u32, masked: u32 }
@group(0) @binding(0) var<storage, read> Q: array<${S}>;
@group(0) @binding(1) var<storage, read> K: array<${S}>;
@group(0) @binding(2) var<storage, read> V: array<${S}>;
@group(0) @binding(3) var<storage, read> DO: array<${S}>;
@group(0) @binding(4) var<storage, read> STATS: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> DK: array<${S}>;
@group(0) @binding(6) var<storage, read_write> DVO: array<${S}>;
@group(0) @binding(7) var<storage, read> MASK: array<u32>;
@group(0) @binding(8) var<uniform> u: Params;

const WG = ${WG}u;
const KB = ${KB}u;
${decl("kv", "vv", "dk", "dv")}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.z;
  let hk = wid.y;
  let sMin = wid.x * WG;
  let s = sMin + lid; // this invocation's key
  if (s >= u.T) { return; }
  let keyOk = u.masked == 0u || MASK[b * u.T + s] != 0u;
  let kBase = ((b * u.T + s) * u.Hkv + hk) * u.DV;
  for (var d = 0u; d < u.DV; d++) {
    ${W("kv", `${F}(K[kBase + d]) * u.scale2`)}
    ${W("vv", `${F}(V[kBase + d])`)}
    ${W("dk", `${F}(0.0)`)}
    ${W("dv", `${F}(0.0)`)}
  }
  // Query rows (t, g) in t-major order, from the workgroup's first key on (causality: t ≥ s).
  let rEnd = u.T * u.G;
  let rLast = rEnd - 1u;
  for (var blk = sMin * u.G; blk < rEnd; blk += KB) {
${J.map((j) => `    let r${j} = min(blk + ${j}u, rLast);
    let t${j} = r${j} / u.G;
    let h${j} = hk * u.G + r${j} % u.G;
    let o${j} = ((b * u.T + t${j}) * u.Hq + h${j}) * u.DV;
    let st${j} = STATS[(b * u.Hq + h${j}) * u.T + t${j}];
    var a${j} = 0.0;
    var g${j} = 0.0;`).join("\n")}
    for (var d = 0u; d < u.DV; d++) {
      let kd = ${R("kv")};
      let vd = ${R("vv")};
${J.map((j) => `      a${j} += ${dot("kd", `${F}(Q[o${j} + d])`)};
      g${j} += ${dot("vd", `${F}(DO[o${j} + d])`)};`).join("\n")}
    }
${J.map((j) => `    let ok${j} = keyOk && blk + ${j}u < rEnd && t${j} >= s;
    let p${j} = select(0.0, exp2(a${j} - st${j}.x), ok${j});
    let ds${j} = p${j} * (g${j} - st${j}.y);`).join("\n")}
    for (var d = 0u; d < u.DV; d++) {
      var xk = ${R("dk")};
      var xv = ${R("dv")};
${J.map((j) => `      xk += ds${j} * ${F}(Q[o${j} + d]);
      xv += p${j} * ${F}(DO[o${j} + d]);`).join("\n")}
      ${W("dk", `xk`)}
      ${W("dv", `xv`)}
    }
  }
  for (var d = 0u; d < u.DV; d++) {
    DK[kBase + d] = ${S}(${R("dk")} * u.scale);
    DVO[kBase + d] = ${S}(${R("dv")});
  }
}
`;
}

/** KV-cache append: cache[b, positions[b] + i] = new[b, i] for k and v. */
export function kvCacheAppendWgsl(o: { dtype: Dtype; VW: number }): string {
  const S = vecType(o.dtype, o.VW);
  return /* wgsl */ `${header(o.dtype)}
struct Params { Tn: u32, Tmax: u32, rowVecs: u32, total: u32 }
@group(0) @binding(0) var<storage, read> KN: array<${S}>;
@group(0) @binding(1) var<storage, read> VN: array<${S}>;
@group(0) @binding(2) var<storage, read_write> KC: array<${S}>;
@group(0) @binding(3) var<storage, read_write> VC: array<${S}>;
@group(0) @binding(4) var<storage, read> POS: array<u32>;
@group(0) @binding(5) var<uniform> u: Params;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let idx = ${FLAT_WG} * 64u + lid;
  if (idx >= u.total) { return; }
  let perSeq = u.Tn * u.rowVecs;
  let b = idx / perSeq;
  let rem = idx % perSeq;
  let p = POS[b] + rem / u.rowVecs;
  if (p >= u.Tmax) { return; }
  let dst = (b * u.Tmax + p) * u.rowVecs + rem % u.rowVecs;
  KC[dst] = KN[idx];
  VC[dst] = VN[idx];
}
`;
}

// ---------------------------------------------------------------------------------------------------------------
// Launchers

/** Launcher tuning knobs (defaults by adapter); tests use them to reach every variant. */
export interface AttentionTuning {
  /** Rows (or keys) per workgroup, a power of two ≤ 256 (default 16 on CPU adapters, 64 on GPUs). */
  workgroupSize?: number;
  /** Where per-invocation rows live (default "workgroup" on CPU adapters, "private" on GPUs). */
  regs?: AttentionRegs;
  /** Keys (or query rows, in the dk/dv kernel) per unrolled block, 1–16 (default 4 on CPU adapters, 8 on GPUs). */
  keyBlock?: number;
  /**
   * Forward kernel: "rows" (one query row per invocation, below) or "subgroup" (attention-subgroup.ts: tiles over
   * the lanes of a subgroup; needs the subgroups feature and D % (4·subgroup size) == 0). Default: "subgroup" on CPU
   * adapters where it fits, else "rows".
   */
  forwardPath?: "rows" | "subgroup";
  /** Subgroup forward: query rows per workgroup (default 12) and keys per lane per block (default 2). */
  tileRows?: number;
  tileKeys?: number;
  /**
   * Backward kernels: "rows" (one query row or key per invocation, below) or "subgroup" (attention-bwd-subgroup.ts:
   * lanes own head dims; same requirements as the subgroup forward). Default: "subgroup" on CPU adapters where it
   * fits, else "rows".
   */
  backwardPath?: "rows" | "subgroup";
  /** Subgroup backward: keys per dK/dV workgroup (default 8) and query rows per dQ workgroup (default 8). */
  backwardKeys?: number;
  backwardRows?: number;
}

/**
 * The subgroup width when a subgroup kernel serves this call (`path` "subgroup", or by default on CPU adapters where
 * the head dim fits), else null; checks the kernel's block sizes.
 */
function subgroupWidth(gpu: Gpu, who: string, option: string, path: string | undefined, D: number, sizes: Record<string, number>): number | null {
  const W = broadcastWidth(gpu);
  const fits = W !== null && attentionSubgroupFits(D, W);
  if ((path ?? (isCpuAdapter(gpu) && fits ? "subgroup" : "rows")) === "rows") return null;
  if (!fits) throw new Error(`${who}: ${option} "subgroup" needs the subgroups feature and a head dim D divisible by 4 × the subgroup size (D=${D}, subgroup ${W ?? "unavailable"})`);
  for (const [k, v] of Object.entries(sizes)) {
    if (!(Number.isInteger(v) && v >= 1 && v <= 32)) throw new Error(`${who}: ${k} must be an integer in [1, 32] (got ${v})`);
  }
  return W;
}

/** The subgroup forward's launch shape when it serves this call, else null (see AttentionTuning.forwardPath). */
function subgroupForward(gpu: Gpu, who: string, t: AttentionTuning, D: number): { W: number; TM: number; TN: number } | null {
  const TM = t.tileRows ?? 12, TN = t.tileKeys ?? 2;
  const W = subgroupWidth(gpu, who, "forwardPath", t.forwardPath, D, { tileRows: TM, tileKeys: TN });
  return W === null ? null : { W, TM, TN };
}

/** The subgroup backward's launch shape when it serves this call, else null (see AttentionTuning.backwardPath). */
function subgroupBackward(gpu: Gpu, who: string, t: AttentionTuning, D: number): { W: number; KN: number; TM: number } | null {
  const KN = t.backwardKeys ?? 8, TM = t.backwardRows ?? 8;
  const W = subgroupWidth(gpu, who, "backwardPath", t.backwardPath, D, { backwardKeys: KN, backwardRows: TM });
  return W === null ? null : { W, KN, TM };
}

function pickTuning(gpu: Gpu, who: string, t: AttentionTuning, D: number, arrays: number): { WG: number; regs: AttentionRegs; KB: number } {
  const KB = t.keyBlock ?? (isCpuAdapter(gpu) ? 4 : 8);
  if (!(Number.isInteger(KB) && KB >= 1 && KB <= 16)) throw new Error(`${who}: keyBlock must be an integer in [1, 16] (got ${KB})`);
  const cpu = isCpuAdapter(gpu);
  const regs = t.regs ?? (cpu ? "workgroup" : "private");
  let WG = t.workgroupSize ?? (cpu ? 16 : 64);
  if (!(Number.isInteger(WG) && WG >= 1 && WG <= 256 && (WG & (WG - 1)) === 0)) {
    throw new Error(`${who}: workgroupSize must be a power of two in [1, 256] (got ${WG})`);
  }
  if (regs === "workgroup") {
    const { DVMAX, VW } = attentionHeadLayout(D);
    const perRow = arrays * DVMAX * VW * 4;
    const limit = gpu.limits.maxComputeWorkgroupStorageSize ?? 16384;
    if (t.workgroupSize === undefined) while (WG > 1 && WG * perRow > limit) WG /= 2;
    if (WG * perRow > limit) {
      throw new Error(`${who}: ${WG} rows × ${perRow} bytes of workgroup registers exceed maxComputeWorkgroupStorageSize=${limit}; use a smaller workgroupSize or regs "private"`);
    }
  }
  return { WG, regs, KB };
}

function checkHeads(who: string, B: number, Hq: number, Hkv: number, D: number) {
  requireCount(who, "B", B);
  requireCount(who, "Hq", Hq);
  requireCount(who, "Hkv", Hkv);
  requireCount(who, "D", D);
  if (Hq % Hkv !== 0) throw new Error(`${who}: Hq=${Hq} query heads are not a multiple of Hkv=${Hkv} key/value heads`);
  if (D > MAX_D) throw new Error(`${who}: head dim D=${D} is over the supported maximum ${MAX_D}`);
}

function checkScale(who: string, D: number, scale?: number): number {
  const s = scale ?? 1 / Math.sqrt(D);
  if (!(Number.isFinite(s) && s > 0)) throw new Error(`${who}: scale must be a positive finite number (got ${scale})`);
  return s;
}

function checkDispatch(gpu: Gpu, who: string, x: number, B: number) {
  const max = Math.min(65535, gpu.limits.maxComputeWorkgroupsPerDimension ?? 65535);
  if (x > max || B > max) throw new Error(`${who}: ${x} row blocks × batch ${B} exceed ${max} workgroups per dimension; split the batch or use a larger workgroupSize`);
}

// The forward and append generators as the launchers call them (decode calls them every step; see wgsl-cache.ts).
const subgroupFwdWgsl = memoWgsl(attentionSubgroupWgsl);
const rowsFwdWgsl = memoWgsl(attentionForwardWgsl);
const appendWgsl = memoWgsl(kvCacheAppendWgsl);
const sgDqWgsl = memoWgsl(attentionBackwardSgDqWgsl);
const sgDkDvWgsl = memoWgsl(attentionBackwardSgDkDvWgsl);

function recordForward(
  gpu: Gpu,
  who: string,
  a: {
    q: GpuBuffer; k: GpuBuffer; v: GpuBuffer; o: GpuBuffer; lse?: GpuBuffer; lens?: GpuBuffer; mask?: GpuBuffer; maskMode: AttentionMaskMode;
    B: number; Tq: number; Tk: number; Hq: number; Hkv: number; D: number; scale: number; dtype: Dtype; WG: number; regs: AttentionRegs; KB: number;
    sub: { W: number; TM: number; TN: number } | null;
  },
) {
  const { B, Tq, Tk, Hq, Hkv, D, dtype, WG, regs, KB, sub } = a;
  const G = Hq / Hkv;
  const decode = a.lens !== undefined;
  const { VW, DV, DVMAX } = attentionHeadLayout(D);
  const kernel = sub
    ? gpu.kernel(`attention_fwd_sg_${dtype}_d${D}_w${sub.W}_tm${sub.TM}_tn${sub.TN}${a.lse ? "_lse" : ""}`, subgroupFwdWgsl({ dtype, D, ...sub, lse: !!a.lse }))
    : gpu.kernel(`attention_fwd_${dtype}_v${VW}x${DVMAX}_${regs}${WG}_kb${KB}${a.lse ? "_lse" : ""}`, rowsFwdWgsl({ dtype, VW, DVMAX, regs, WG, KB, lse: !!a.lse }));
  const params = new ArrayBuffer(32);
  new Uint32Array(params).set([Tq, Tk, Hq, Hkv, G, 0, DV, MASK_MODE[a.maskMode] | (decode ? DECODE_BIT : 0)]);
  new Float32Array(params)[5] = a.scale * LOG2E;
  const bufs = [a.q, a.k, a.v, a.o];
  if (a.lse) bufs.push(a.lse);
  // Unused LENS/MASK slots take q (read-only, never read there).
  bufs.push(a.lens ?? a.q, a.mask ?? a.q);
  const x = Math.ceil((Tq * G) / (sub ? sub.TM : WG));
  checkDispatch(gpu, who, x, B);
  gpu.dispatch(kernel, bufs, [x, Hkv, B], params);
}

/** Record causal GQA attention over a prefill batch: o = softmax(scale·q·kᵀ + mask)·v, and lse when given. */
export function attention(gpu: Gpu, args: AttentionArgs): void {
  const who = "attention";
  const { B, T, Hq, Hkv, D } = args;
  const dtype = args.dtype ?? "f32";
  checkHeads(who, B, Hq, Hkv, D);
  requireCount(who, "T", T);
  requireF16(gpu, who, dtype);
  const scale = checkScale(who, D, args.scale);
  const qShape = `[B=${B}, T=${T}, Hq=${Hq}, D=${D}]`;
  const kShape = `[B=${B}, T=${T}, Hkv=${Hkv}, D=${D}]`;
  requireBuffer(gpu, who, "q", args.q, B * T * Hq * D, dtype, qShape);
  requireBuffer(gpu, who, "k", args.k, B * T * Hkv * D, dtype, kShape);
  requireBuffer(gpu, who, "v", args.v, B * T * Hkv * D, dtype, kShape);
  requireBuffer(gpu, who, "o", args.o, B * T * Hq * D, dtype, qShape);
  if (args.lse) requireBuffer(gpu, who, "lse", args.lse, B * Hq * T, "u32", `[B=${B}, Hq=${Hq}, T=${T}] f32`);
  if (args.kvValid) requireBuffer(gpu, who, "kvValid", args.kvValid, B * T, "u32", `[B=${B}, T=${T}]`);
  recordForward(gpu, who, {
    q: args.q, k: args.k, v: args.v, o: args.o, lse: args.lse, mask: args.kvValid, maskMode: args.kvValid ? "valid" : "none",
    B, Tq: T, Tk: T, Hq, Hkv, D, scale, dtype, ...pickTuning(gpu, who, args, D, 2), sub: subgroupForward(gpu, who, args, D),
  });
}

/**
 * Record attention of Tq new tokens against a KV cache (decode: Tq = 1; chunked prefill: Tq > 1). The cache must
 * already hold the new tokens' k/v at positions lens[b] − Tq … lens[b] − 1 (kvCacheAppend).
 */
export function attentionDecode(gpu: Gpu, args: AttentionDecodeArgs): void {
  const who = "attentionDecode";
  const { B, Tq, Tmax, Hq, Hkv, D } = args;
  const dtype = args.dtype ?? "f32";
  checkHeads(who, B, Hq, Hkv, D);
  requireCount(who, "Tq", Tq);
  requireCount(who, "Tmax", Tmax);
  if (Tq > Tmax) throw new Error(`${who}: Tq=${Tq} new tokens do not fit a cache of Tmax=${Tmax}`);
  if (args.kvStart && args.kvValid) throw new Error(`${who}: give kvStart or kvValid, not both`);
  requireF16(gpu, who, dtype);
  const scale = checkScale(who, D, args.scale);
  const qShape = `[B=${B}, Tq=${Tq}, Hq=${Hq}, D=${D}]`;
  const cShape = `[B=${B}, Tmax=${Tmax}, Hkv=${Hkv}, D=${D}]`;
  requireBuffer(gpu, who, "q", args.q, B * Tq * Hq * D, dtype, qShape);
  requireBuffer(gpu, who, "kCache", args.kCache, B * Tmax * Hkv * D, dtype, cShape);
  requireBuffer(gpu, who, "vCache", args.vCache, B * Tmax * Hkv * D, dtype, cShape);
  requireBuffer(gpu, who, "o", args.o, B * Tq * Hq * D, dtype, qShape);
  requireBuffer(gpu, who, "lens", args.lens, B, "u32", `[B=${B}]`);
  if (args.lse) requireBuffer(gpu, who, "lse", args.lse, B * Hq * Tq, "u32", `[B=${B}, Hq=${Hq}, Tq=${Tq}] f32`);
  if (args.kvStart) requireBuffer(gpu, who, "kvStart", args.kvStart, B, "u32", `[B=${B}]`);
  if (args.kvValid) requireBuffer(gpu, who, "kvValid", args.kvValid, B * Tmax, "u32", `[B=${B}, Tmax=${Tmax}]`);
  const maskMode: AttentionMaskMode = args.kvStart ? "start" : args.kvValid ? "valid" : "none";
  // The prefill's workgroup size, so decode shares its pipeline (idle lanes of a small Tq·G return at once).
  const tuned = pickTuning(gpu, who, args, D, 2);
  recordForward(gpu, who, {
    q: args.q, k: args.kCache, v: args.vCache, o: args.o, lse: args.lse, lens: args.lens, mask: args.kvStart ?? args.kvValid, maskMode,
    B, Tq, Tk: Tmax, Hq, Hkv, D, scale, dtype, ...tuned, sub: subgroupForward(gpu, who, args, D),
  });
}

/** Bytes of the backward's scratch (Δ and lse per query row). */
export function attentionBackwardScratchBytes(B: number, T: number, Hq: number): number {
  return 8 * B * Hq * T;
}

/** Record the backward: dq, dk, dv (written) from dO and the forward's o and lse. */
export function attentionBackward(gpu: Gpu, args: AttentionBackwardArgs): void {
  const who = "attentionBackward";
  const { B, T, Hq, Hkv, D } = args;
  const dtype = args.dtype ?? "f32";
  checkHeads(who, B, Hq, Hkv, D);
  requireCount(who, "T", T);
  requireF16(gpu, who, dtype);
  const scale = checkScale(who, D, args.scale);
  const qShape = `[B=${B}, T=${T}, Hq=${Hq}, D=${D}]`;
  const kShape = `[B=${B}, T=${T}, Hkv=${Hkv}, D=${D}]`;
  for (const [name, buf] of [["q", args.q], ["o", args.o], ["dO", args.dO], ["dq", args.dq]] as const) requireBuffer(gpu, who, name, buf, B * T * Hq * D, dtype, qShape);
  for (const [name, buf] of [["k", args.k], ["v", args.v], ["dk", args.dk], ["dv", args.dv]] as const) requireBuffer(gpu, who, name, buf, B * T * Hkv * D, dtype, kShape);
  requireBuffer(gpu, who, "lse", args.lse, B * Hq * T, "u32", `[B=${B}, Hq=${Hq}, T=${T}] f32`);
  if (args.kvValid) requireBuffer(gpu, who, "kvValid", args.kvValid, B * T, "u32", `[B=${B}, T=${T}]`);
  const statsBytes = attentionBackwardScratchBytes(B, T, Hq);
  if (args.stats && args.stats.bytes < statsBytes) throw new Error(`${who}: stats holds ${args.stats.bytes} bytes, needs ${statsBytes}`);
  const G = Hq / Hkv;
  const masked = !!args.kvValid;
  const stats = args.stats ?? gpu.alloc(statsBytes, "attention_bwd_stats");

  const { VW, DV, DVMAX } = attentionHeadLayout(D);
  const rows = B * T * Hq;
  const sp = new Uint32Array([T, Hq, rows, DV]);
  gpu.dispatch(gpu.kernel(`attention_bwd_stats_${dtype}_v${VW}`, attentionBackwardStatsWgsl({ dtype, VW })), [args.o, args.dO, args.lse, stats], foldGrid(gpu, Math.ceil(rows / 64)), sp);

  const params = new ArrayBuffer(32);
  new Uint32Array(params).set([T, Hq, Hkv, G, 0, 0, DV, masked ? 1 : 0]);
  new Float32Array(params).set([scale * LOG2E, scale], 4);
  const mask = args.kvValid ?? args.q; // unread when unmasked
  const sub = subgroupBackward(gpu, who, args, D);
  if (sub) {
    const tag = `${dtype}_d${D}_w${sub.W}`;
    const dqK = gpu.kernel(`attention_bwd_sg_dq_${tag}_tm${sub.TM}`, sgDqWgsl({ dtype, D, W: sub.W, N: sub.TM }));
    const xq = Math.ceil((T * G) / sub.TM);
    checkDispatch(gpu, who, xq, B);
    gpu.dispatch(dqK, [args.q, args.k, args.v, args.dO, stats, args.dq, mask], [xq, Hkv, B], params);
    const dkvK = gpu.kernel(`attention_bwd_sg_dkdv_${tag}_kn${sub.KN}`, sgDkDvWgsl({ dtype, D, W: sub.W, N: sub.KN }));
    gpu.dispatch(dkvK, [args.q, args.k, args.v, args.dO, stats, args.dk, args.dv, mask], [Math.ceil(T / sub.KN), Hkv, B], params);
    if (!args.stats) gpu.release(stats);
    return;
  }
  const tq = pickTuning(gpu, who, args, D, 3);
  const xq = Math.ceil((T * G) / tq.WG);
  checkDispatch(gpu, who, xq, B);
  const dqK = gpu.kernel(`attention_bwd_dq_${dtype}_v${VW}x${DVMAX}_${tq.regs}${tq.WG}_kb${tq.KB}`, attentionBackwardDqWgsl({ dtype, VW, DVMAX, ...tq }));
  gpu.dispatch(dqK, [args.q, args.k, args.v, args.dO, stats, args.dq, mask], [xq, Hkv, B], params);
  const tk = pickTuning(gpu, who, args, D, 4);
  const dkvK = gpu.kernel(`attention_bwd_dkdv_${dtype}_v${VW}x${DVMAX}_${tk.regs}${tk.WG}_kb${tk.KB}`, attentionBackwardDkDvWgsl({ dtype, VW, DVMAX, ...tk }));
  gpu.dispatch(dkvK, [args.q, args.k, args.v, args.dO, stats, args.dk, args.dv, mask], [Math.ceil(T / tk.WG), Hkv, B], params);
  // Safe to recycle now: later users of the buffer are recorded (and so run) after these dispatches.
  if (!args.stats) gpu.release(stats);
}

/** Record the KV-cache append: kCache[b, positions[b] + i] = k[b, i] (and v), i < Tn; rows past Tmax are dropped. */
export function kvCacheAppend(gpu: Gpu, args: KvCacheAppendArgs): void {
  const who = "kvCacheAppend";
  const { B, Tn, Tmax, Hkv, D } = args;
  const dtype = args.dtype ?? "f32";
  requireCount(who, "B", B);
  requireCount(who, "Tn", Tn);
  requireCount(who, "Tmax", Tmax);
  requireCount(who, "Hkv", Hkv);
  requireCount(who, "D", D);
  requireF16(gpu, who, dtype);
  const nShape = `[B=${B}, Tn=${Tn}, Hkv=${Hkv}, D=${D}]`;
  const cShape = `[B=${B}, Tmax=${Tmax}, Hkv=${Hkv}, D=${D}]`;
  requireBuffer(gpu, who, "k", args.k, B * Tn * Hkv * D, dtype, nShape);
  requireBuffer(gpu, who, "v", args.v, B * Tn * Hkv * D, dtype, nShape);
  requireBuffer(gpu, who, "kCache", args.kCache, B * Tmax * Hkv * D, dtype, cShape);
  requireBuffer(gpu, who, "vCache", args.vCache, B * Tmax * Hkv * D, dtype, cShape);
  requireBuffer(gpu, who, "positions", args.positions, B, "u32", `[B=${B}]`);
  const VW = (Hkv * D) % 4 === 0 ? 4 : 1;
  const rowVecs = (Hkv * D) / VW;
  const total = B * Tn * rowVecs;
  const kernel = gpu.kernel(`kv_cache_append_${dtype}_v${VW}`, appendWgsl({ dtype, VW }));
  gpu.dispatch(kernel, [args.k, args.v, args.kCache, args.vCache, args.positions], foldGrid(gpu, Math.ceil(total / 64)), new Uint32Array([Tn, Tmax, rowVecs, total]));
}

// ---------------------------------------------------------------------------------------------------------------
// float64 references

export interface AttentionRefOpts {
  B: number;
  /** Query rows per sequence. */
  Tq: number;
  /** Key rows per sequence (default Tq: prefill). */
  Tk?: number;
  Hq: number;
  Hkv: number;
  D: number;
  scale?: number;
  /** [B, Tk]: 0 = padding key. */
  kvValid?: ArrayLike<number>;
  /** [B]: keys < kvStart[b] are padding. */
  kvStart?: ArrayLike<number>;
  /** [B]: decode — keys < lens[b] exist and query row i sits at position lens[b] − Tq + i. */
  lens?: ArrayLike<number>;
}

/** Visible keys of query row i of sequence b (causal + masks), as the kernels define them. */
export function attentionVisibleKeys(o: AttentionRefOpts, b: number, i: number): number[] {
  const Tk = o.Tk ?? o.Tq;
  const len = o.lens ? Math.min(o.lens[b], Tk) : Tk;
  const qpos = (o.lens ? o.lens[b] - o.Tq : 0) + i;
  const start = o.kvStart ? o.kvStart[b] : 0;
  const keys: number[] = [];
  for (let s = start; s < len && s <= qpos; s++) if (!o.kvValid || o.kvValid[b * Tk + s] !== 0) keys.push(s);
  return keys;
}

export interface AttentionReferenceResult {
  o: Float64Array;
  /** [B, Hq, Tq]; −∞ for rows with no visible key. */
  lse: Float64Array;
  /** Σ_s p_s·|v_s| per output element (the scale of its rounding error). */
  oMag: Float64Array;
  /** Per row [B, Hq, Tq]: max over visible keys of scale·Σ_i |q_i·k_i| (0 for empty rows). */
  scoreMag: Float64Array;
  /** Per row [B, Hq, Tq]: number of visible keys. */
  nKeys: Float64Array;
}

/** float64 attention forward by the naive softmax, any masks (see AttentionRefOpts). */
export function attentionReference(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, opts: AttentionRefOpts): AttentionReferenceResult {
  const { B, Tq, Hq, Hkv, D } = opts;
  const Tk = opts.Tk ?? Tq;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const G = Hq / Hkv;
  const o = new Float64Array(B * Tq * Hq * D);
  const oMag = new Float64Array(o.length);
  const lse = new Float64Array(B * Hq * Tq);
  const scoreMag = new Float64Array(lse.length);
  const nKeys = new Float64Array(lse.length);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < Tq; i++) {
      const keys = attentionVisibleKeys(opts, b, i);
      for (let h = 0; h < Hq; h++) {
        const hk = Math.floor(h / G);
        const qb = ((b * Tq + i) * Hq + h) * D;
        const li = (b * Hq + h) * Tq + i;
        nKeys[li] = keys.length;
        if (keys.length === 0) {
          lse[li] = -Infinity;
          continue;
        }
        const sc = keys.map((s) => {
          const kb = ((b * Tk + s) * Hkv + hk) * D;
          let dot = 0;
          let mag = 0;
          for (let d = 0; d < D; d++) {
            dot += q[qb + d] * k[kb + d];
            mag += Math.abs(q[qb + d] * k[kb + d]);
          }
          scoreMag[li] = Math.max(scoreMag[li], mag * scale);
          return dot * scale;
        });
        const mx = Math.max(...sc);
        let sum = 0;
        for (const x of sc) sum += Math.exp(x - mx);
        lse[li] = mx + Math.log(sum);
        keys.forEach((s, j) => {
          const p = Math.exp(sc[j] - lse[li]);
          const vb = ((b * Tk + s) * Hkv + hk) * D;
          for (let d = 0; d < D; d++) {
            o[qb + d] += p * v[vb + d];
            oMag[qb + d] += p * Math.abs(v[vb + d]);
          }
        });
      }
    }
  }
  return { o, lse, oMag, scoreMag, nKeys };
}

export interface AttentionBackwardReferenceResult {
  dq: Float64Array;
  dk: Float64Array;
  dv: Float64Array;
  /**
   * Error scales: the same sums with every term replaced by its magnitude, where each dS term is
   * p·((1 + S + |lse|)·|dP − Δ| + Σ|dO·v| + Σ|dO·o|) — the first part carries P's relative error, the others dP's and Δ's.
   */
  dqMag: Float64Array;
  dkMag: Float64Array;
  dvMag: Float64Array;
}

/**
 * float64 backward (analytic): dS = P∘(dP − Δ), dq = scale·dS·k, dk = scale·dSᵀ·q, dv = Pᵀ·dO, summed over each kv
 * head's query heads. `out` replaces the forward output in Δ = Σ dO·o (to mirror a backward fed a rounded o).
 */
export function attentionBackwardReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dO: ArrayLike<number>,
  opts: AttentionRefOpts,
  out?: ArrayLike<number>,
): AttentionBackwardReferenceResult {
  const { B, Tq, Hq, Hkv, D } = opts;
  const Tk = opts.Tk ?? Tq;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const G = Hq / Hkv;
  const fwd = attentionReference(q, k, v, opts);
  const o = out ?? fwd.o;
  const dq = new Float64Array(B * Tq * Hq * D);
  const dk = new Float64Array(B * Tk * Hkv * D);
  const dv = new Float64Array(dk.length);
  const dqMag = new Float64Array(dq.length);
  const dkMag = new Float64Array(dk.length);
  const dvMag = new Float64Array(dk.length);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < Tq; i++) {
      const keys = attentionVisibleKeys(opts, b, i);
      for (let h = 0; h < Hq; h++) {
        const hk = Math.floor(h / G);
        const qb = ((b * Tq + i) * Hq + h) * D;
        const li = (b * Hq + h) * Tq + i;
        if (keys.length === 0) continue;
        let delta = 0;
        let deltaMag = 0;
        for (let d = 0; d < D; d++) {
          delta += dO[qb + d] * o[qb + d];
          deltaMag += Math.abs(dO[qb + d] * o[qb + d]);
        }
        const pErr = 1 + fwd.scoreMag[li] + Math.abs(fwd.lse[li]);
        for (const s of keys) {
          const kb = ((b * Tk + s) * Hkv + hk) * D;
          let dot = 0;
          let dp = 0;
          let dpMag = 0;
          for (let d = 0; d < D; d++) {
            dot += q[qb + d] * k[kb + d];
            dp += dO[qb + d] * v[kb + d];
            dpMag += Math.abs(dO[qb + d] * v[kb + d]);
          }
          const p = Math.exp(dot * scale - fwd.lse[li]);
          const ds = p * (dp - delta);
          const dsMag = p * (pErr * Math.abs(dp - delta) + dpMag + deltaMag);
          for (let d = 0; d < D; d++) {
            dv[kb + d] += p * dO[qb + d];
            dvMag[kb + d] += p * pErr * Math.abs(dO[qb + d]);
            dq[qb + d] += scale * ds * k[kb + d];
            dqMag[qb + d] += scale * dsMag * Math.abs(k[kb + d]);
            dk[kb + d] += scale * ds * q[qb + d];
            dkMag[kb + d] += scale * dsMag * Math.abs(q[qb + d]);
          }
        }
      }
    }
  }
  return { dq, dk, dv, dqMag, dkMag, dvMag };
}

/** float64 KV-cache append on host arrays (returns a new cache). */
export function kvCacheAppendReference(cache: ArrayLike<number>, rows: ArrayLike<number>, positions: ArrayLike<number>, o: { B: number; Tn: number; Tmax: number; Hkv: number; D: number }): Float64Array {
  const out = Float64Array.from(cache);
  const W = o.Hkv * o.D;
  for (let b = 0; b < o.B; b++) {
    for (let i = 0; i < o.Tn; i++) {
      const p = positions[b] + i;
      if (p >= o.Tmax) continue;
      for (let c = 0; c < W; c++) out[(b * o.Tmax + p) * W + c] = rows[(b * o.Tn + i) * W + c];
    }
  }
  return out;
}
