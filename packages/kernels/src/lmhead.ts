// LM-head family: fused logits → tempered log-softmax → gather + entropy, chunked so that the [tokens × vocab]
// logits never exist for the whole batch; its backward (recomputing logits tiles); a full-logits path for a few
// rows (decode/sampling); and a masked mean cross-entropy on top of the per-token log-probs (SFT).
//
// Notation. h [M,H] hidden states (f32 or f16), W [V,H] the LM-head / tied embedding (f32 or f16; may be split
// over vocab into shards, see `uploadLmHeadWeight`), t [M] target ids (u32), T the temperature. Per row:
//   z = (h·Wᵀ)/T,   lse = log Σ_j e^{z_j},   p = e^{z − lse},
//   logp = z_t − lse,   entropy H = −Σ_j p_j log p_j = lse − Σ_j p_j z_j.
// A target ≥ V (e.g. −100 stored as u32, HF's ignore_index) gives logp 0 and no logp gradient. A row whose mask
// word is all-zero bits (u32 0, or f32 +0.0, so a 0/1 f32 mask works too) gives logp = entropy = lse = 0 and dh = 0.
//
// Forward (two dispatches per weight shard + one combine):
//  1. `lmhead_fwd`: a workgroup owns BM rows and a contiguous range ("split") of vocab tiles. Every invocation
//     computes a TM×TN register tile of logits per vocab tile (dot products along H read straight from h and W,
//     vec4 when H % 4 == 0) and folds it into its own online accumulator per row:
//        m = running max,  s = Σ e^{z−m},  u = Σ e^{z−m}(z − m)
//     (rescaling to a new max m': s' = s·e^{m−m'}, u' = (u + s(m − m'))·e^{m−m'}). Keeping u relative to the max
//     avoids the cancellation of lse − Σp·z for large logits: at the end H = log s − u/s and lse = m + log s.
//     The invocations of a row are merged through workgroup memory and one (m, s, u) partial per (row, split) is
//     written. The invocation that owns the target column stores z_t into `logp`.
//  2. `lmhead_fwd_combine`: one workgroup per row merges the partials of all splits and writes logp, entropy, lse.
//  Memory: partials M × splits × 16 B (splits ≈ 128 (CPU adapters) or 1024 workgroups / row tiles, per shard)
//  instead of M × V × 4 B of logits.
//
// Backward. With z = logits/T and p = softmax(z):
//   ∂logp/∂z_j = δ_jt − p_j
//   ∂H/∂z_j   = −p_j (log p_j + H) = −p_j (z_j − Σ_i p_i z_i)
//     (H = −Σ p_i log p_i, ∂p_i/∂z_j = p_i(δ_ij − p_j) ⇒ ∂H/∂z_j = −Σ_i p_i(δ_ij − p_j)(log p_i + 1)
//      = −p_j(log p_j + 1) + p_j Σ_i p_i(log p_i + 1) = −p_j(log p_j + 1) + p_j(1 − H) = −p_j(log p_j + H).)
//   dz_j = g_logp (δ_jt − p_j) − g_ent p_j (log p_j + H),  dlogits = dz / T,  dh = dlogits · W,  dW += dlogitsᵀ · h.
//  log p_j = z_j − lse is recomputed per tile from h, W and the stored lse (and H from the forward entropy); the
//  logits are never stored. Per (row chunk R, vocab chunk Vc) of a shard:
//  1. `lmhead_bwd_dlogits`: recompute z for R×Vc, write dlogits into a scratch [R × Vc] (f32).
//  2. `lmhead_bwd_dh`: dh[R,H] (+)= dlogits · W[chunk] (contraction over the chunk, optionally split-K into
//     partial slabs + `lmhead_bwd_reduce` on GPUs that need more workgroups), then
//  3. `lmhead_bwd_dw` (only when a trainable head asks for it): dW[chunk] += dlogitsᵀ · h[R].
//  Memory: R·Vc·4 B of scratch (default ≤ 32 MiB) + split-K slabs, never M × V.
import type { Gpu } from "./runtime/device.js";
import { isCpuAdapter } from "./runtime/adapter.js";
import { memoWgsl } from "./wgsl-cache.js";
import type { GpuBuffer } from "./runtime/pool.js";
import { broadcastWidth, matmul } from "./matmul.js";

export type LmDtype = "f32" | "f16";

/** Weight given as one buffer or as vocab shards of `wShardRows` rows each (the last may be shorter). */
export type LmHeadWeightArg = GpuBuffer | GpuBuffer[];

export interface Common {
  /** Hidden states [M, H], row-major. */
  h: GpuBuffer;
  /** LM-head weight [V, H] (nn.Linear layout / tied embedding), one buffer or vocab shards. */
  w: LmHeadWeightArg;
  M: number;
  V: number;
  H: number;
  /** Softmax temperature (logits are divided by it). Default 1. */
  temperature?: number;
  hDtype?: LmDtype;
  wDtype?: LmDtype;
  /** Rows per weight shard when `w` is an array (all shards but the last hold exactly this many). */
  wShardRows?: number;
  /** Register tile of the logits kernels (tuning; default `lmHeadTile(M)`). */
  tile?: LmHeadTileConfig;
}

export interface LmHeadForwardArgs extends Common {
  /** Target ids [M] u32. */
  targets: GpuBuffer;
  /** Optional row mask [M], one 32-bit word per row; all-zero bits = row ignored. */
  mask?: GpuBuffer;
  /** Outputs [M] f32: log p(target), entropy of the tempered distribution, log-sum-exp of z (for backward). */
  logp: GpuBuffer;
  entropy: GpuBuffer;
  lse: GpuBuffer;
  /** Vocab splits per shard (default: enough workgroups to fill the device). */
  splits?: number;
}

export interface LmHeadBackwardArgs extends Common {
  targets: GpuBuffer;
  mask?: GpuBuffer;
  /** Forward outputs [M] f32. */
  lse: GpuBuffer;
  entropy: GpuBuffer;
  /** Upstream gradients [M] f32 of logp and of entropy (at least one). */
  gLogp?: GpuBuffer;
  gEntropy?: GpuBuffer;
  /** Output dh [M, H] f32 (written, or accumulated with `accumulate`). */
  dh: GpuBuffer;
  accumulate?: boolean;
  /** Optional dW [V, H] f32, sharded like `w`; always accumulated (dW += …), so zero it first. */
  dw?: LmHeadWeightArg;
  /** Rows per chunk (default min(M, 256)). */
  rowChunk?: number;
  /** Vocab columns per chunk (default: fits `scratchBytes`). */
  vocabChunk?: number;
  /** Budget for the dlogits scratch (default 32 MiB). */
  scratchBytes?: number;
  /** Split-K factor of the dh contraction (default 1 on CPU adapters, enough workgroups on GPUs). */
  splitK?: number;
}

export interface LmHeadLogitsArgs extends Common {
  /** Output [M, V] f32: z = (h·Wᵀ)/T. Meant for a few rows (decode / sampling). */
  out: GpuBuffer;
}

// -------------------------------------------------------------------------------------------------------------
// Tiles

// The logits kernel runs once per decode step: its text is built once (see wgsl-cache.ts).
const logitsWgsl = memoWgsl((o: Parameters<typeof lmHeadTileWgsl>[0]) => lmHeadTileWgsl(o));

interface LmHeadTileConfig {
  TM: number; // rows per invocation
  TN: number; // vocab columns per invocation
  WX: number; // invocations along vocab
  WY: number; // invocations along rows
}

/**
 * Register tile by the number of rows: one row per invocation for decode-sized M (≤ 8), 4×4 for M < 64, 8×4 from
 * 64 rows. On lavapipe the 8×4 tile is ~2.5× faster at M = 64 (fewer gathers per FMA) but takes 15–30 s to
 * compile (the online-softmax exps are inlined TM·(TN+1) times) against 2–8 s for 4×4. Pass `tile` to override.
 */
export function lmHeadTile(M: number): LmHeadTileConfig {
  if (M <= 8) return { TM: 1, TN: 4, WX: 64, WY: 1 };
  return M < 64 ? { TM: 4, TN: 4, WX: 16, WY: 4 } : { TM: 8, TN: 4, WX: 8, WY: 8 };
}

/** Tile of the dh / dW contractions: TM output rows × TN vectors of VEC columns per invocation. */
const BWD_TILE = { TM: 8, TN: 2, WX: 8, WY: 8 };

/** Workgroups we try to have in flight per dispatch (CPU adapters: a few per core is plenty). */
const targetWorkgroups = (gpu: Gpu) => (isCpuAdapter(gpu) ? 128 : 1024);

// -------------------------------------------------------------------------------------------------------------
// WGSL pieces

function vecType(dt: LmDtype, VEC: number) {
  return VEC === 4 ? `vec4<${dt}>` : dt;
}
function header(...dts: LmDtype[]) {
  return dts.includes("f16") ? "enable f16;\n" : "";
}
const FV = (VEC: number) => (VEC === 4 ? "vec4<f32>" : "f32");
const DOT = (VEC: number) => (VEC === 4 ? "fn dotv(a: vec4<f32>, b: vec4<f32>) -> f32 { return dot(a, b); }" : "fn dotv(a: f32, b: f32) -> f32 { return a * b; }");

/**
 * Inner loop shared by the forward and the dlogits/logits kernels: acc[i][j] = Σ_k h[rowA[i]+k]·w[rowB[j]+k].
 * Accumulators are zeroed explicitly: on lavapipe (Dawn 0.6.2) a `var` declared inside a loop body kept its value
 * from the previous iteration instead of being re-zeroed, so never rely on implicit zero-initialisation.
 */
function dotTileLoop(t: LmHeadTileConfig, VEC: number) {
  return /* wgsl */ `
    var acc: array<array<f32, ${t.TN}>, ${t.TM}>;
    for (var i = 0u; i < ${t.TM}u; i++) { for (var j = 0u; j < ${t.TN}u; j++) { acc[i][j] = 0.0; } }
    for (var k = 0u; k < u.HV; k++) {
      var a: array<${FV(VEC)}, ${t.TM}>;
      for (var i = 0u; i < ${t.TM}u; i++) { a[i] = ${FV(VEC)}(hs[rowA[i] + k]); }
      for (var j = 0u; j < ${t.TN}u; j++) {
        let b = ${FV(VEC)}(ws[rowB[j] + k]);
        for (var i = 0u; i < ${t.TM}u; i++) { acc[i][j] += dotv(a[i], b); }
      }
    }`;
}

export function lmHeadForwardWgsl(o: { hDtype: LmDtype; wDtype: LmDtype; VEC: number; tile: LmHeadTileConfig }): string {
  const { TM, TN, WX, WY } = o.tile;
  const VEC = o.VEC;
  const R = WX * WY * TM;
  return /* wgsl */ `${header(o.hDtype, o.wDtype)}
struct Params { M: u32, V: u32, HV: u32, v0: u32, Vs: u32, tilesPerSplit: u32, splitBase: u32, nSplits: u32,
                invT: f32, useMask: u32, p0: u32, p1: u32 }
@group(0) @binding(0) var<storage, read> hs: array<${vecType(o.hDtype, VEC)}>;
@group(0) @binding(1) var<storage, read> ws: array<${vecType(o.wDtype, VEC)}>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read> mask: array<u32>;
@group(0) @binding(4) var<storage, read_write> logp: array<f32>;
@group(0) @binding(5) var<storage, read_write> partial: array<vec4<f32>>;
@group(0) @binding(6) var<uniform> u: Params;

const NEG: f32 = -3.0e38;   // finite "−∞": keeps 0·(m − m') well defined in the online rescaling
var<workgroup> redM: array<f32, ${R}>;
var<workgroup> redS: array<f32, ${R}>;
var<workgroup> redU: array<f32, ${R}>;
var<workgroup> anyA: atomic<u32>;
var<workgroup> anyP: u32;

${DOT(VEC)}

fn rowActive(m: u32) -> bool { return m < u.M && (u.useMask == 0u || mask[m] != 0u); }

@compute @workgroup_size(${WX}, ${WY}, 1)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let m0 = (wg.y * ${WY}u + lid.y) * ${TM}u;
  var rowA: array<u32, ${TM}>;
  var tgt: array<u32, ${TM}>;
  var mine = false;
  for (var i = 0u; i < ${TM}u; i++) {
    let mc = min(m0 + i, u.M - 1u);   // rows past the edge read a valid row and are never stored
    rowA[i] = mc * u.HV;
    tgt[i] = targets[mc];
    if (rowActive(m0 + i)) { mine = true; }
  }
  // Skip the whole tile when every row in it is masked (padding in RL batches).
  if (tid == 0u) { atomicStore(&anyA, 0u); }
  workgroupBarrier();
  if (mine) { atomicOr(&anyA, 1u); }
  workgroupBarrier();
  if (tid == 0u) { anyP = atomicLoad(&anyA); }
  if (workgroupUniformLoad(&anyP) == 0u) { return; }

  var mx: array<f32, ${TM}>;
  var se: array<f32, ${TM}>;
  var su: array<f32, ${TM}>;
  for (var i = 0u; i < ${TM}u; i++) { mx[i] = NEG; se[i] = 0.0; su[i] = 0.0; }
  let nTiles = (u.Vs + ${WX * TN - 1}u) / ${WX * TN}u;
  let t0 = wg.x * u.tilesPerSplit;
  let t1 = min(t0 + u.tilesPerSplit, nTiles);
  for (var t = t0; t < t1; t++) {
    let n0 = t * ${WX * TN}u + lid.x * ${TN}u;
    var rowB: array<u32, ${TN}>;
    for (var j = 0u; j < ${TN}u; j++) { rowB[j] = min(n0 + j, u.Vs - 1u) * u.HV; }
    ${dotTileLoop(o.tile, VEC)}
    for (var i = 0u; i < ${TM}u; i++) {
      var z: array<f32, ${TN}>;
      var tmax = NEG;
      for (var j = 0u; j < ${TN}u; j++) {
        let n = n0 + j;
        let zz = acc[i][j] * u.invT;
        z[j] = select(NEG, zz, n < u.Vs);
        tmax = max(tmax, z[j]);
        if (n < u.Vs && u.v0 + n == tgt[i] && m0 + i < u.M) { logp[m0 + i] = zz; }
      }
      let mn = max(mx[i], tmax);
      let sc = exp(mx[i] - mn);
      var s = se[i] * sc;
      var uu = (su[i] + se[i] * (mx[i] - mn)) * sc;
      for (var j = 0u; j < ${TN}u; j++) {
        if (n0 + j < u.Vs) {
          let d = z[j] - mn;
          let e = exp(d);
          s += e;
          uu += e * d;
        }
      }
      mx[i] = mn;
      se[i] = s;
      su[i] = uu;
    }
  }

  for (var i = 0u; i < ${TM}u; i++) {
    let r = (lid.y * ${TM}u + i) * ${WX}u + lid.x;
    redM[r] = mx[i];
    redS[r] = se[i];
    redU[r] = su[i];
  }
  workgroupBarrier();
  for (var i = lid.x; i < ${TM}u; i += ${WX}u) {
    let m = m0 + i;
    if (!rowActive(m)) { continue; }
    let base = (lid.y * ${TM}u + i) * ${WX}u;
    var M = NEG;
    for (var q = 0u; q < ${WX}u; q++) { M = max(M, redM[base + q]); }
    var S = 0.0;
    var U = 0.0;
    for (var q = 0u; q < ${WX}u; q++) {
      let mq = redM[base + q];
      let sc = exp(mq - M);
      S += redS[base + q] * sc;
      U += (redU[base + q] + redS[base + q] * (mq - M)) * sc;
    }
    partial[m * u.nSplits + u.splitBase + wg.x] = vec4<f32>(M, S, U, 0.0);
  }
}
`;
}

const COMBINE_WG = 64;
/** One subgroup on lavapipe: a barrier is a coroutine switch per invocation there. */
const PARTIALS_WG = 8;
/** Largest logits scratch of the CPU forward (rows × shard vocabulary × 4 B); more rows go in blocks. */
const CPU_LOGITS_SCRATCH = 8 * 2 ** 20;

export function lmHeadCombineWgsl(): string {
  return /* wgsl */ `
struct Params { M: u32, V: u32, nSplits: u32, useMask: u32 }
@group(0) @binding(0) var<storage, read> partial: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read> mask: array<u32>;
@group(0) @binding(3) var<storage, read_write> logp: array<f32>;
@group(0) @binding(4) var<storage, read_write> entropy: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<uniform> u: Params;

const NEG: f32 = -3.0e38;
var<workgroup> rM: array<f32, ${COMBINE_WG}>;
var<workgroup> rS: array<f32, ${COMBINE_WG}>;
var<workgroup> rU: array<f32, ${COMBINE_WG}>;

@compute @workgroup_size(${COMBINE_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let m = wg.x + wg.y * 65535u;
  if (m >= u.M) { return; }
  var M = NEG;
  var S = 0.0;
  var U = 0.0;
  for (var q = lid; q < u.nSplits; q += ${COMBINE_WG}u) {
    let p = partial[m * u.nSplits + q];
    let mn = max(M, p.x);
    let a = exp(M - mn);
    let b = exp(p.x - mn);
    U = (U + S * (M - mn)) * a + (p.z + p.y * (p.x - mn)) * b;
    S = S * a + p.y * b;
    M = mn;
  }
  rM[lid] = M;
  rS[lid] = S;
  rU[lid] = U;
  for (var stride = ${COMBINE_WG / 2}u; stride > 0u; stride /= 2u) {
    workgroupBarrier();
    if (lid < stride) {
      let m1 = rM[lid]; let s1 = rS[lid]; let u1 = rU[lid];
      let m2 = rM[lid + stride]; let s2 = rS[lid + stride]; let u2 = rU[lid + stride];
      let mn = max(m1, m2);
      let a = exp(m1 - mn);
      let b = exp(m2 - mn);
      rM[lid] = mn;
      rS[lid] = s1 * a + s2 * b;
      rU[lid] = (u1 + s1 * (m1 - mn)) * a + (u2 + s2 * (m2 - mn)) * b;
    }
  }
  if (lid == 0u) {
    let live = u.useMask == 0u || mask[m] != 0u;
    if (!live) {
      logp[m] = 0.0;
      entropy[m] = 0.0;
      lse[m] = 0.0;
    } else {
      let ls = log(rS[0]);
      let l = rM[0] + ls;
      lse[m] = l;
      entropy[m] = ls - rU[0] / rS[0];
      logp[m] = select(0.0, logp[m] - l, targets[m] < u.V);
    }
  }
}
`;
}

/**
 * Online-softmax partials of stored logits (the CPU forward, `forwardByMatmul`): workgroup (x, y) folds columns
 * [x·cols, (x+1)·cols) of logits row y (z = h·Wᵀ/T of one shard, [rows, Vs]) into one (m, s, u) partial — the same
 * accumulator as lmhead_fwd — and the lane holding the target column stores z_t into logp.
 */
export function lmHeadPartialsWgsl(): string {
  return /* wgsl */ `
struct Params { M: u32, Vs: u32, v0: u32, splitBase: u32, nSplits: u32, cols: u32, r0: u32, useMask: u32 }
@group(0) @binding(0) var<storage, read> z: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read> mask: array<u32>;
@group(0) @binding(3) var<storage, read_write> logp: array<f32>;
@group(0) @binding(4) var<storage, read_write> partial: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> u: Params;

const NEG: f32 = -3.0e38;
var<workgroup> rM: array<f32, ${PARTIALS_WG}>;
var<workgroup> rS: array<f32, ${PARTIALS_WG}>;
var<workgroup> rU: array<f32, ${PARTIALS_WG}>;

@compute @workgroup_size(${PARTIALS_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let m = u.r0 + wg.y;   // uniform per workgroup
  if (m >= u.M || (u.useMask != 0u && mask[m] == 0u)) { return; }
  let c0 = wg.x * u.cols;
  let c1 = min(c0 + u.cols, u.Vs);
  let row = wg.y * u.Vs;
  let t = targets[m];
  var mx = NEG;
  var se = 0.0;
  var su = 0.0;
  for (var c = c0 + lid; c < c1; c += ${PARTIALS_WG}u) {
    let zz = z[row + c];
    if (u.v0 + c == t) { logp[m] = zz; }
    let mn = max(mx, zz);
    let sc = exp(mx - mn);
    su = (su + se * (mx - mn)) * sc;
    se = se * sc;
    let d = zz - mn;
    let e = exp(d);
    se += e;
    su += e * d;
    mx = mn;
  }
  rM[lid] = mx;
  rS[lid] = se;
  rU[lid] = su;
  workgroupBarrier();
  if (lid == 0u) {
    var M = NEG;
    for (var q = 0u; q < ${PARTIALS_WG}u; q++) { M = max(M, rM[q]); }
    var S = 0.0;
    var U = 0.0;
    for (var q = 0u; q < ${PARTIALS_WG}u; q++) {
      let sc = exp(rM[q] - M);
      S += rS[q] * sc;
      U += (rU[q] + rS[q] * (rM[q] - M)) * sc;
    }
    partial[m * u.nSplits + u.splitBase + wg.x] = vec4<f32>(M, S, U, 0.0);
  }
}
`;
}

/** Packs the per-row backward inputs into one vec4 (lse, H, g_logp, g_ent) + one u32 (target, ~0 when masked). */
export function lmHeadPackWgsl(): string {
  return /* wgsl */ `
struct Params { M: u32, V: u32, useMask: u32, flags: u32 }
@group(0) @binding(0) var<storage, read> lse: array<f32>;
@group(0) @binding(1) var<storage, read> ent: array<f32>;
@group(0) @binding(2) var<storage, read> gl: array<f32>;
@group(0) @binding(3) var<storage, read> ge: array<f32>;
@group(0) @binding(4) var<storage, read> targets: array<u32>;
@group(0) @binding(5) var<storage, read> mask: array<u32>;
@group(0) @binding(6) var<storage, read_write> rowinfo: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> tinfo: array<u32>;
@group(0) @binding(8) var<uniform> u: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let m = gid.x + gid.y * ${65535 * 64}u;
  if (m >= u.M) { return; }
  let live = u.useMask == 0u || mask[m] != 0u;
  let t = targets[m];
  var g = select(0.0, gl[m], (u.flags & 1u) != 0u && t < u.V);
  let e = select(0.0, ge[m], (u.flags & 2u) != 0u);
  if (!live) {
    rowinfo[m] = vec4<f32>(0.0);
    tinfo[m] = 0xffffffffu;
  } else {
    rowinfo[m] = vec4<f32>(lse[m], ent[m], g, e);
    tinfo[m] = t;
  }
}
`;
}

/**
 * Logits tile kernels over a vocab chunk of one shard:
 *  mode "dlogits": out[(m − rowBase)·Vc + (n − c0)] = dz/T for rows [rowBase, rowBase+M) of the chunk,
 *  mode "logits":  out[m·V + v0 + n] = z.
 */
export function lmHeadTileWgsl(o: { hDtype: LmDtype; wDtype: LmDtype; VEC: number; tile: LmHeadTileConfig; mode: "dlogits" | "logits" }): string {
  const { TM, TN, WX, WY } = o.tile;
  const VEC = o.VEC;
  const dl = o.mode === "dlogits";
  return /* wgsl */ `${header(o.hDtype, o.wDtype)}
struct Params { M: u32, HV: u32, Vs: u32, c0: u32, Vc: u32, v0: u32, rowBase: u32, V: u32, invT: f32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<storage, read> hs: array<${vecType(o.hDtype, VEC)}>;
@group(0) @binding(1) var<storage, read> ws: array<${vecType(o.wDtype, VEC)}>;
@group(0) @binding(2) var<storage, read_write> outv: array<f32>;
${dl ? `@group(0) @binding(3) var<storage, read> rowinfo: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> tinfo: array<u32>;
@group(0) @binding(5) var<uniform> u: Params;` : "@group(0) @binding(3) var<uniform> u: Params;"}

${DOT(VEC)}

@compute @workgroup_size(${WX}, ${WY}, 1)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let c = (wg.x * ${WX}u + lid.x) * ${TN}u;        // column within the chunk
  let r0 = (wg.y * ${WY}u + lid.y) * ${TM}u;       // row within the chunk
  if (c >= u.Vc || r0 >= u.M) { return; }
  var rowA: array<u32, ${TM}>;
  var rowB: array<u32, ${TN}>;
  for (var i = 0u; i < ${TM}u; i++) { rowA[i] = (u.rowBase + min(r0 + i, u.M - 1u)) * u.HV; }
  for (var j = 0u; j < ${TN}u; j++) { rowB[j] = (u.c0 + min(c + j, u.Vc - 1u)) * u.HV; }
${dl ? `
  var info: array<vec4<f32>, ${TM}>;
  var tg: array<u32, ${TM}>;
  var anyRow = false;
  for (var i = 0u; i < ${TM}u; i++) {
    let m = u.rowBase + min(r0 + i, u.M - 1u);
    info[i] = rowinfo[m];
    tg[i] = tinfo[m];
    anyRow = anyRow || (r0 + i < u.M && tg[i] != 0xffffffffu);
  }
  if (!anyRow) {   // every row of this invocation is masked: its dlogits are 0
    for (var i = 0u; i < ${TM}u; i++) {
      if (r0 + i >= u.M) { break; }
      for (var j = 0u; j < ${TN}u; j++) { if (c + j < u.Vc) { outv[(r0 + i) * u.Vc + c + j] = 0.0; } }
    }
    return;
  }` : ""}
  ${dotTileLoop(o.tile, VEC)}
  for (var i = 0u; i < ${TM}u; i++) {
    let r = r0 + i;
    if (r >= u.M) { break; }
    for (var j = 0u; j < ${TN}u; j++) {
      let cj = c + j;
      if (cj >= u.Vc) { break; }
      let z = acc[i][j] * u.invT;
${dl ? `      var g = 0.0;
      if (tg[i] != 0xffffffffu) {
        let lp = z - info[i].x;                       // log p_j
        let p = exp(lp);
        g = -p * (info[i].z + info[i].w * (lp + info[i].y));
        if (u.v0 + u.c0 + cj == tg[i]) { g += info[i].z; }
      }
      outv[r * u.Vc + cj] = g * u.invT;` : `      outv[(u.rowBase + r) * u.V + u.v0 + u.c0 + cj] = z;`}
    }
  }
}
`;
}

/**
 * dh[rowBase + r, :] (+)= Σ_{k<Vc} dl[r·Vc + k] · W[c0 + k, :]   (split-K over z: partial slabs instead of dh).
 * Output columns are VEC-wide vectors (H % 4 == 0) or scalars.
 */
export function lmHeadDhWgsl(o: { wDtype: LmDtype; VEC: number }): string {
  const { TM, TN, WX, WY } = BWD_TILE;
  const VEC = o.VEC;
  return /* wgsl */ `${header(o.wDtype)}
struct Params { M: u32, HV: u32, c0: u32, Vc: u32, rowBase: u32, kPer: u32, accumulate: u32, slab: u32 }
@group(0) @binding(0) var<storage, read> dl: array<f32>;
@group(0) @binding(1) var<storage, read> ws: array<${vecType(o.wDtype, VEC)}>;
@group(0) @binding(2) var<storage, read_write> outv: array<${FV(VEC)}>;
@group(0) @binding(3) var<uniform> u: Params;

@compute @workgroup_size(${WX}, ${WY}, 1)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let n0 = (wg.x * ${WX}u + lid.x) * ${TN}u;       // first vector column
  let r0 = (wg.y * ${WY}u + lid.y) * ${TM}u;
  if (n0 >= u.HV || r0 >= u.M) { return; }
  let k0 = wg.z * u.kPer;
  let k1 = min(k0 + u.kPer, u.Vc);
  var acc: array<array<${FV(VEC)}, ${TN}>, ${TM}>;
  for (var i = 0u; i < ${TM}u; i++) { for (var j = 0u; j < ${TN}u; j++) { acc[i][j] = ${FV(VEC)}(0.0); } }
  var rowD: array<u32, ${TM}>;
  for (var i = 0u; i < ${TM}u; i++) { rowD[i] = min(r0 + i, u.M - 1u) * u.Vc; }
  var colW: array<u32, ${TN}>;
  for (var j = 0u; j < ${TN}u; j++) { colW[j] = min(n0 + j, u.HV - 1u); }
  for (var k = k0; k < k1; k++) {
    let wrow = (u.c0 + k) * u.HV;
    var b: array<${FV(VEC)}, ${TN}>;
    for (var j = 0u; j < ${TN}u; j++) { b[j] = ${FV(VEC)}(ws[wrow + colW[j]]); }
    for (var i = 0u; i < ${TM}u; i++) {
      let d = dl[rowD[i] + k];
      for (var j = 0u; j < ${TN}u; j++) { acc[i][j] = fma(${FV(VEC)}(d), b[j], acc[i][j]); }
    }
  }
  for (var i = 0u; i < ${TM}u; i++) {
    let r = r0 + i;
    if (r >= u.M) { break; }
    for (var j = 0u; j < ${TN}u; j++) {
      let n = n0 + j;
      if (n >= u.HV) { break; }
      if (u.slab != 0u) {
        outv[(wg.z * u.M + r) * u.HV + n] = acc[i][j];
      } else {
        let o = (u.rowBase + r) * u.HV + n;
        if (u.accumulate != 0u) { outv[o] = outv[o] + acc[i][j]; } else { outv[o] = acc[i][j]; }
      }
    }
  }
}
`;
}

/** dh[rowBase·H + i] = (accumulate ? dh : 0) + Σ_s slab[s·M·H + i]. */
export function lmHeadReduceWgsl(): string {
  return /* wgsl */ `
struct Params { n: u32, S: u32, base: u32, accumulate: u32 }
@group(0) @binding(0) var<storage, read> slab: array<f32>;
@group(0) @binding(1) var<storage, read_write> dh: array<f32>;
@group(0) @binding(2) var<uniform> u: Params;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < u.n; i += nwg.x * 256u) {
    var s = select(0.0, dh[u.base + i], u.accumulate != 0u);
    for (var q = 0u; q < u.S; q++) { s += slab[q * u.n + i]; }
    dh[u.base + i] = s;
  }
}
`;
}

/** dW[c0 + j, :] += Σ_{r<M} dl[r·Vc + j] · h[rowBase + r, :]. */
export function lmHeadDwWgsl(o: { hDtype: LmDtype; VEC: number }): string {
  const { TM, TN, WX, WY } = BWD_TILE;
  const VEC = o.VEC;
  return /* wgsl */ `${header(o.hDtype)}
struct Params { M: u32, HV: u32, c0: u32, Vc: u32, rowBase: u32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<storage, read> dl: array<f32>;
@group(0) @binding(1) var<storage, read> hs: array<${vecType(o.hDtype, VEC)}>;
@group(0) @binding(2) var<storage, read_write> dw: array<${FV(VEC)}>;
@group(0) @binding(3) var<uniform> u: Params;

@compute @workgroup_size(${WX}, ${WY}, 1)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let n0 = (wg.x * ${WX}u + lid.x) * ${TN}u;
  let j0 = (wg.y * ${WY}u + lid.y) * ${TM}u;       // vocab row within the chunk
  if (n0 >= u.HV || j0 >= u.Vc) { return; }
  var acc: array<array<${FV(VEC)}, ${TN}>, ${TM}>;
  for (var i = 0u; i < ${TM}u; i++) { for (var j = 0u; j < ${TN}u; j++) { acc[i][j] = ${FV(VEC)}(0.0); } }
  var colJ: array<u32, ${TM}>;
  for (var i = 0u; i < ${TM}u; i++) { colJ[i] = min(j0 + i, u.Vc - 1u); }
  var colH: array<u32, ${TN}>;
  for (var j = 0u; j < ${TN}u; j++) { colH[j] = min(n0 + j, u.HV - 1u); }
  for (var r = 0u; r < u.M; r++) {
    let hrow = (u.rowBase + r) * u.HV;
    var b: array<${FV(VEC)}, ${TN}>;
    for (var j = 0u; j < ${TN}u; j++) { b[j] = ${FV(VEC)}(hs[hrow + colH[j]]); }
    for (var i = 0u; i < ${TM}u; i++) {
      let d = dl[r * u.Vc + colJ[i]];
      for (var j = 0u; j < ${TN}u; j++) { acc[i][j] = fma(${FV(VEC)}(d), b[j], acc[i][j]); }
    }
  }
  for (var i = 0u; i < ${TM}u; i++) {
    let jj = j0 + i;
    if (jj >= u.Vc) { break; }
    for (var j = 0u; j < ${TN}u; j++) {
      let n = n0 + j;
      if (n >= u.HV) { break; }
      let o = (u.c0 + jj) * u.HV + n;
      dw[o] = dw[o] + acc[i][j];
    }
  }
}
`;
}

// -------------------------------------------------------------------------------------------------------------
// Argument checks and shards

const esz = (d: LmDtype) => (d === "f16" ? 2 : 4);

interface Shard {
  buf: GpuBuffer;
  v0: number;
  rows: number;
}

function checkCommon(gpu: Gpu, name: string, a: Common) {
  const { M, V, H } = a;
  if (![M, V, H].every((x) => Number.isInteger(x) && x > 0)) {
    throw new Error(`${name}: M, V and H must be positive integers (got M=${M} V=${V} H=${H})`);
  }
  const T = a.temperature ?? 1;
  if (!(T > 0) || !Number.isFinite(T)) throw new Error(`${name}: temperature must be a positive finite number (got ${T})`);
  const hD = a.hDtype ?? "f32";
  const wD = a.wDtype ?? "f32";
  if ((hD === "f16" || wD === "f16") && !gpu.hasF16) {
    throw new Error(`${name}: f16 operands need the shader-f16 feature, which this adapter lacks; use f32`);
  }
  if (a.tile) {
    const t = a.tile;
    if (![t.TM, t.TN, t.WX, t.WY].every((x) => Number.isInteger(x) && x > 0) || t.WX * t.WY > 256 || t.TM * t.TN > 64) {
      throw new Error(`${name}: tile ${JSON.stringify(t)} needs positive integers, WX·WY ≤ 256 and TM·TN ≤ 64`);
    }
  }
  if (a.h.bytes < M * H * esz(hD)) throw new Error(`${name}: h holds ${a.h.bytes} bytes, needs ${M * H * esz(hD)} for M=${M} H=${H} ${hD}`);
}

function shardsOf(gpu: Gpu, name: string, w: LmHeadWeightArg, V: number, H: number, dt: LmDtype, shardRows: number | undefined, what = "w"): Shard[] {
  const list = Array.isArray(w) ? w : [w];
  const rowsPer = list.length === 1 ? (shardRows ?? V) : shardRows;
  if (!rowsPer || !Number.isInteger(rowsPer) || rowsPer <= 0) {
    throw new Error(`${name}: ${what} is given as ${list.length} shards, so wShardRows (rows per shard) is required`);
  }
  const n = Math.ceil(V / rowsPer);
  if (n !== list.length) throw new Error(`${name}: V=${V} with wShardRows=${rowsPer} needs ${n} ${what} shards, got ${list.length}`);
  const maxBind = gpu.limits.maxStorageBufferBindingSize ?? Infinity;
  return list.map((buf, i) => {
    const v0 = i * rowsPer;
    const rows = Math.min(rowsPer, V - v0);
    const need = rows * H * esz(dt);
    if (buf.bytes < need) throw new Error(`${name}: ${what} shard ${i} holds ${buf.bytes} bytes, needs ${need} for ${rows} rows × H=${H}`);
    if (need > maxBind) {
      throw new Error(
        `${name}: ${what} shard ${i} is ${need} bytes, over this adapter's maxStorageBufferBindingSize (${maxBind}); ` +
          `split the weight over vocab (uploadLmHeadWeight does it)`,
      );
    }
    return { buf, v0, rows };
  });
}

function needBytes(name: string, what: string, buf: GpuBuffer | undefined, bytes: number) {
  if (buf && buf.bytes < bytes) throw new Error(`${name}: ${what} holds ${buf.bytes} bytes, needs ${bytes}`);
}

/**
 * Largest number of weight rows per shard that fits the binding limit (a multiple of 256 rows). `bytesPerValue`
 * is 2 for f16 weights and 4 for f32; pass 4 for f16 weights too when an f32 dW will be sharded the same way.
 */
export function lmHeadShardRows(gpu: Gpu, V: number, H: number, bytesPerValue = 4, maxShardBytes?: number): number {
  const limit = Math.min(maxShardBytes ?? Infinity, gpu.limits.maxStorageBufferBindingSize ?? Infinity, gpu.limits.maxBufferSize ?? Infinity);
  const rows = Math.floor(limit / (H * bytesPerValue));
  if (rows >= V) return V;
  const aligned = Math.floor(rows / 256) * 256;
  if (aligned <= 0) throw new Error(`lmHeadShardRows: 256 rows of H=${H} do not fit the binding limit ${limit}`);
  return aligned;
}

/**
 * Upload a [V, H] weight (f32 values, or f16 bits when `dtype` is f16) as vocab shards that each fit
 * maxStorageBufferBindingSize. Returns the arguments to pass as `w` / `wShardRows` / `wDtype`. With `withF32Grad`
 * the shards are sized so that an f32 dW sharded the same way fits too.
 */
export function uploadLmHeadWeight(
  gpu: Gpu,
  data: Float32Array | Uint16Array,
  V: number,
  H: number,
  opts: { maxShardBytes?: number; label?: string; withF32Grad?: boolean } = {},
): { w: GpuBuffer[]; wShardRows: number; wDtype: LmDtype } {
  const wDtype: LmDtype = data instanceof Uint16Array ? "f16" : "f32";
  if (data.length < V * H) throw new Error(`uploadLmHeadWeight: data has ${data.length} values, needs V·H = ${V * H}`);
  const rows = lmHeadShardRows(gpu, V, H, opts.withF32Grad ? 4 : esz(wDtype), opts.maxShardBytes);
  const w: GpuBuffer[] = [];
  for (let v0 = 0; v0 < V; v0 += rows) {
    const r = Math.min(rows, V - v0);
    w.push(gpu.upload(data.subarray(v0 * H, (v0 + r) * H), opts.label ?? "lm_head"));
  }
  return { w, wShardRows: rows, wDtype };
}

// -------------------------------------------------------------------------------------------------------------
// Launchers

const ceil = (a: number, b: number) => Math.ceil(a / b);
const tileName = (t: LmHeadTileConfig) => `t${t.TM}x${t.TN}_w${t.WX}x${t.WY}`;

function vecOf(H: number) {
  return H % 4 === 0 ? 4 : 1;
}

/** Whether the forward takes the CPU-adapter route (`forwardByMatmul`): same h and W dtype, no forced tile. */
function forwardByMatmulApplies(gpu: Gpu, hD: LmDtype, wD: LmDtype, tile?: LmHeadTileConfig): boolean {
  return !tile && hD === wD && isCpuAdapter(gpu) && broadcastWidth(gpu) !== null;
}

/** Row blocks of the CPU forward: as many rows as keep one shard's logits within CPU_LOGITS_SCRATCH. */
const cpuRowBlock = (M: number, shardRows: number) => Math.max(1, Math.min(M, 65535, Math.floor(CPU_LOGITS_SCRATCH / (shardRows * 4))));

/**
 * Vocab splits per shard and scratch bytes of the forward for these sizes (`cpuRoute`: the CPU-adapter route, whose
 * splits are column ranges of the stored logits and whose scratch adds those logits, one row block × one shard).
 */
export function lmHeadForwardPlan(gpu: Gpu, M: number, V: number, H: number, shardRows = V, splits?: number, tileArg?: LmHeadTileConfig, cpuRoute = forwardByMatmulApplies(gpu, "f32", "f32", tileArg)) {
  if (cpuRoute) {
    const rows = Math.min(shardRows, V);
    const shardSplits: number[] = [];
    for (let v0 = 0; v0 < V; v0 += shardRows) shardSplits.push(Math.max(1, Math.min(splits ?? 64, ceil(Math.min(shardRows, V - v0), 1024))));
    const nSplits = shardSplits.reduce((a, b) => a + b, 0);
    const rb = cpuRowBlock(M, rows);
    const hCopy = rb < M ? rb * H * 4 : 0;
    return { tile: lmHeadTile(M), rowTiles: 1, shardSplits, nSplits, scratchBytes: M * nSplits * 16 + rb * rows * 4 + hCopy };
  }
  const tile = tileArg ?? lmHeadTile(M);
  const colsPerTile = tile.WX * tile.TN;
  const rowTiles = ceil(M, tile.WY * tile.TM);
  const shardSplits: number[] = [];
  for (let v0 = 0; v0 < V; v0 += shardRows) {
    const tiles = ceil(Math.min(shardRows, V - v0), colsPerTile);
    shardSplits.push(Math.max(1, Math.min(tiles, splits ?? ceil(targetWorkgroups(gpu), rowTiles))));
  }
  const nSplits = shardSplits.reduce((a, b) => a + b, 0);
  return { tile, rowTiles, shardSplits, nSplits, scratchBytes: M * nSplits * 16 };
}

/** Record the fused forward: logp[target], entropy and lse per row of z = (h·Wᵀ)/T. */
export function lmHeadForward(gpu: Gpu, args: LmHeadForwardArgs): void {
  const name = "lmHeadForward";
  checkCommon(gpu, name, args);
  const { M, V, H } = args;
  const hD = args.hDtype ?? "f32";
  const wD = args.wDtype ?? "f32";
  const shards = shardsOf(gpu, name, args.w, V, H, wD, args.wShardRows);
  needBytes(name, "targets", args.targets, M * 4);
  needBytes(name, "mask", args.mask, M * 4);
  for (const [k, b] of [["logp", args.logp], ["entropy", args.entropy], ["lse", args.lse]] as const) needBytes(name, k, b, M * 4);
  if (args.splits !== undefined && !(Number.isInteger(args.splits) && args.splits > 0)) throw new Error(`${name}: splits must be a positive integer`);
  const VEC = vecOf(H);
  const cpuRoute = forwardByMatmulApplies(gpu, hD, wD, args.tile);
  const plan = lmHeadForwardPlan(gpu, M, V, H, shards.length > 1 ? shards[0].rows : V, args.splits, args.tile, cpuRoute);
  if (cpuRoute) {
    forwardByMatmul(gpu, args, shards, plan, hD);
    return;
  }
  if (plan.rowTiles > 65535) throw new Error(`${name}: M=${M} is too many rows for one call; split the batch`);
  const { tile } = plan;
  const invT = 1 / (args.temperature ?? 1);
  const partial = gpu.alloc(Math.max(16, plan.scratchBytes), "lmhead_partials");
  const fwd = gpu.kernel(`lmhead_fwd_${hD}_${wD}_v${VEC}_${tileName(tile)}`, lmHeadForwardWgsl({ hDtype: hD, wDtype: wD, VEC, tile }));
  const mask = args.mask ?? args.targets;
  let splitBase = 0;
  shards.forEach((s, i) => {
    const splits = plan.shardSplits[i];
    const tiles = ceil(s.rows, tile.WX * tile.TN);
    const params = new ArrayBuffer(48);
    const pu = new Uint32Array(params);
    pu.set([M, V, H / VEC, s.v0, s.rows, ceil(tiles, splits), splitBase, plan.nSplits]);
    new Float32Array(params)[8] = invT;
    pu[9] = args.mask ? 1 : 0;
    gpu.dispatch(fwd, [args.h, s.buf, args.targets, mask, args.logp, partial], [splits, plan.rowTiles, 1], params);
    splitBase += splits;
  });
  const comb = gpu.kernel("lmhead_fwd_combine", lmHeadCombineWgsl());
  gpu.dispatch(comb, [partial, args.targets, mask, args.logp, args.entropy, args.lse], [Math.min(M, 65535), ceil(M, 65535), 1], new Uint32Array([M, V, plan.nSplits, args.mask ? 1 : 0]));
  gpu.release(partial); // later commands that reuse this buffer run after ours
}

/**
 * The forward on CPU adapters: per shard (and block of rows), the tempered logits through matmul's subgroup-broadcast
 * kernel into a scratch, then one pass over them for the online-softmax partials (lmHeadPartialsWgsl) and the usual
 * combine. On lavapipe the broadcast matmul took ~2/3 of the fused tile kernel's CPU time at M = 64, V = 8192,
 * H = 1536 (its loads of h are broadcasts instead of per-lane loops); the extra pass reads M·V floats once.
 */
function forwardByMatmul(gpu: Gpu, args: LmHeadForwardArgs, shards: Shard[], plan: ReturnType<typeof lmHeadForwardPlan>, dtype: LmDtype): void {
  const { M, H } = args;
  const invT = 1 / (args.temperature ?? 1);
  const esz = dtype === "f16" ? 2 : 4;
  const partial = gpu.alloc(Math.max(16, M * plan.nSplits * 16), "lmhead_partials");
  const rb = cpuRowBlock(M, shards[0].rows);
  const z = gpu.alloc(rb * shards[0].rows * 4, "lmhead_logits_block");
  const hBlock = rb < M ? gpu.alloc(rb * H * esz, "lmhead_h_block") : args.h;
  const mask = args.mask ?? args.targets;
  const kPart = gpu.kernel("lmhead_fwd_partials", lmHeadPartialsWgsl());
  for (let r0 = 0; r0 < M; r0 += rb) {
    const rows = Math.min(rb, M - r0);
    if (hBlock !== args.h) gpu.copy(args.h, r0 * H * esz, hBlock, 0, rows * H * esz);
    let splitBase = 0;
    shards.forEach((s, i) => {
      matmul(gpu, { a: hBlock, b: s.buf, c: z, M: rows, N: s.rows, K: H, transB: true, alpha: invT, dtype, outDtype: "f32" });
      const splits = plan.shardSplits[i];
      const p = new Uint32Array([M, s.rows, s.v0, splitBase, plan.nSplits, ceil(s.rows, splits), r0, args.mask ? 1 : 0]);
      gpu.dispatch(kPart, [z, args.targets, mask, args.logp, partial], [splits, rows, 1], p);
      splitBase += splits;
    });
  }
  const comb = gpu.kernel("lmhead_fwd_combine", lmHeadCombineWgsl());
  gpu.dispatch(comb, [partial, args.targets, mask, args.logp, args.entropy, args.lse], [Math.min(M, 65535), ceil(M, 65535), 1], new Uint32Array([M, args.V, plan.nSplits, args.mask ? 1 : 0]));
  gpu.release(partial, z, hBlock === args.h ? null : hBlock);
}

/** Chunk sizes and scratch bytes of the backward. */
export function lmHeadBackwardPlan(
  gpu: Gpu,
  M: number,
  V: number,
  H: number,
  o: { shardRows?: number; rowChunk?: number; vocabChunk?: number; scratchBytes?: number; splitK?: number } = {},
) {
  const R = Math.min(M, o.rowChunk ?? 256);
  const shardRows = o.shardRows ?? V;
  const budget = o.scratchBytes ?? 32 * 2 ** 20;
  const maxBind = gpu.limits.maxStorageBufferBindingSize ?? Infinity;
  let Vc = o.vocabChunk ?? Math.max(256, Math.floor(Math.min(budget, maxBind) / (R * 4) / 256) * 256);
  Vc = Math.min(Vc, shardRows, V);
  const bw = BWD_TILE;
  const HV = H / vecOf(H);
  const tilesDh = ceil(HV, bw.WX * bw.TN) * ceil(R, bw.WY * bw.TM);
  const S = Math.max(1, Math.min(o.splitK ?? (isCpuAdapter(gpu) ? 1 : ceil(targetWorkgroups(gpu) / 4, tilesDh)), 64, Vc));
  return { R, Vc, S, scratchBytes: R * Vc * 4 + (S > 1 ? S * R * H * 4 : 0) + M * 20 };
}

/** Record the backward: dh (and optionally dW) from upstream gradients of logp and entropy. */
export function lmHeadBackward(gpu: Gpu, args: LmHeadBackwardArgs): void {
  const name = "lmHeadBackward";
  checkCommon(gpu, name, args);
  const { M, V, H } = args;
  const hD = args.hDtype ?? "f32";
  const wD = args.wDtype ?? "f32";
  const shards = shardsOf(gpu, name, args.w, V, H, wD, args.wShardRows);
  const dwShards = args.dw ? shardsOf(gpu, name, args.dw, V, H, "f32", args.wShardRows, "dw") : null;
  if (!args.gLogp && !args.gEntropy) throw new Error(`${name}: give gLogp, gEntropy or both`);
  for (const [k, b] of [["targets", args.targets], ["mask", args.mask], ["lse", args.lse], ["entropy", args.entropy], ["gLogp", args.gLogp], ["gEntropy", args.gEntropy]] as const) {
    needBytes(name, k, b, M * 4);
  }
  needBytes(name, "dh", args.dh, M * H * 4);
  for (const [k, v] of [["rowChunk", args.rowChunk], ["vocabChunk", args.vocabChunk], ["splitK", args.splitK]] as const) {
    if (v !== undefined && !(Number.isInteger(v) && v > 0)) throw new Error(`${name}: ${k} must be a positive integer (got ${v})`);
  }
  const VEC = vecOf(H);
  const HV = H / VEC;
  const invT = 1 / (args.temperature ?? 1);
  const plan = lmHeadBackwardPlan(gpu, M, V, H, { shardRows: shards[0].rows, rowChunk: args.rowChunk, vocabChunk: args.vocabChunk, scratchBytes: args.scratchBytes, splitK: args.splitK });
  const { R, Vc, S } = plan;

  // Per-row inputs packed once.
  const rowinfo = gpu.alloc(M * 16, "lmhead_rowinfo");
  const tinfo = gpu.alloc(M * 4, "lmhead_tinfo");
  const pack = gpu.kernel("lmhead_bwd_pack", lmHeadPackWgsl());
  const gl = args.gLogp ?? args.gEntropy!;
  const ge = args.gEntropy ?? args.gLogp!;
  const flags = (args.gLogp ? 1 : 0) | (args.gEntropy ? 2 : 0);
  const rowsWg = ceil(M, 64);
  gpu.dispatch(pack, [args.lse, args.entropy, gl, ge, args.targets, args.mask ?? args.targets, rowinfo, tinfo], [Math.min(rowsWg, 65535), ceil(rowsWg, 65535), 1], new Uint32Array([M, V, args.mask ? 1 : 0, flags]));

  const dlBuf = gpu.alloc(R * Vc * 4, "lmhead_dlogits");
  const slab = S > 1 ? gpu.alloc(S * R * H * 4, "lmhead_dh_slab") : null;
  const tile = args.tile ?? lmHeadTile(R);
  const kDl = gpu.kernel(`lmhead_bwd_dlogits_${hD}_${wD}_v${VEC}_${tileName(tile)}`, lmHeadTileWgsl({ hDtype: hD, wDtype: wD, VEC, tile, mode: "dlogits" }));
  const kDh = gpu.kernel(`lmhead_bwd_dh_${wD}_v${VEC}`, lmHeadDhWgsl({ wDtype: wD, VEC }));
  const kRed = S > 1 ? gpu.kernel("lmhead_bwd_reduce", lmHeadReduceWgsl()) : null;
  const kDw = dwShards ? gpu.kernel(`lmhead_bwd_dw_${hD}_v${VEC}`, lmHeadDwWgsl({ hDtype: hD, VEC })) : null;
  const bw = BWD_TILE;

  for (let r0 = 0; r0 < M; r0 += R) {
    const rows = Math.min(R, M - r0);
    let first = true;
    shards.forEach((s, si) => {
      for (let c0 = 0; c0 < s.rows; c0 += Vc) {
        const vc = Math.min(Vc, s.rows - c0);
        // 1. dlogits for rows [r0, r0+rows) × columns [c0, c0+vc) of this shard
        const p1 = new ArrayBuffer(48);
        const u1 = new Uint32Array(p1);
        u1.set([rows, HV, s.rows, c0, vc, s.v0, r0, V]);
        new Float32Array(p1)[8] = invT;
        gpu.dispatch(kDl, [args.h, s.buf, dlBuf, rowinfo, tinfo], [ceil(vc, tile.WX * tile.TN), ceil(rows, tile.WY * tile.TM), 1], p1);
        // 2. dh (+)= dlogits · W[chunk]
        const acc = first ? (args.accumulate ? 1 : 0) : 1;
        const kPer = ceil(vc, S);
        const wgDh: [number, number, number] = [ceil(HV, bw.WX * bw.TN), ceil(rows, bw.WY * bw.TM), S];
        gpu.dispatch(kDh, [dlBuf, s.buf, slab ?? args.dh], wgDh, new Uint32Array([rows, HV, c0, vc, r0, kPer, acc, slab ? 1 : 0]));
        if (slab && kRed) {
          const n = rows * H;
          gpu.dispatch(kRed, [slab, args.dh], [Math.min(ceil(n, 256), 1024), 1, 1], new Uint32Array([n, S, r0 * H, acc]));
        }
        // 3. dW[chunk] += dlogitsᵀ · h[rows]
        if (kDw && dwShards) {
          gpu.dispatch(kDw, [dlBuf, args.h, dwShards[si].buf], [ceil(HV, bw.WX * bw.TN), ceil(vc, bw.WY * bw.TM), 1], new Uint32Array([rows, HV, c0, vc, r0, 0, 0, 0]));
        }
        first = false;
      }
    });
  }
  gpu.release(rowinfo, tinfo, dlBuf, slab);
}

/** Record full tempered logits out[M, V] = (h·Wᵀ)/T (decode / sampling path; meant for a few rows). */
export function lmHeadLogits(gpu: Gpu, args: LmHeadLogitsArgs): void {
  const name = "lmHeadLogits";
  checkCommon(gpu, name, args);
  const { M, V, H } = args;
  const hD = args.hDtype ?? "f32";
  const wD = args.wDtype ?? "f32";
  const shards = shardsOf(gpu, name, args.w, V, H, wD, args.wShardRows);
  needBytes(name, "out", args.out, M * V * 4);
  if (!args.tile && hD === wD && isCpuAdapter(gpu) && broadcastWidth(gpu)) {
    logitsByMatmul(gpu, args, shards, hD);
    return;
  }
  const VEC = vecOf(H);
  const tile = args.tile ?? lmHeadTile(M);
  if (ceil(M, tile.WY * tile.TM) > 65535) throw new Error(`${name}: M=${M} is too many rows for one call`);
  const k = gpu.kernel(`lmhead_logits_${hD}_${wD}_v${VEC}_${tileName(tile)}`, logitsWgsl({ hDtype: hD, wDtype: wD, VEC, tile, mode: "logits" }));
  const invT = 1 / (args.temperature ?? 1);
  for (const s of shards) {
    for (let c0 = 0; c0 < s.rows; c0 += 65535 * tile.WX * tile.TN) {
      const vc = Math.min(65535 * tile.WX * tile.TN, s.rows - c0);
      const p = new ArrayBuffer(48);
      new Uint32Array(p).set([M, H / VEC, s.rows, c0, vc, s.v0, 0, V]);
      new Float32Array(p)[8] = invT;
      gpu.dispatch(k, [args.h, s.buf, args.out], [ceil(vc, tile.WX * tile.TN), ceil(M, tile.WY * tile.TM), 1], p);
    }
  }
}

/**
 * The logits on CPU adapters: matmul's subgroup-broadcast kernel (one x value per lane, broadcast to the others,
 * instead of every lane loading every h value — see matmul.ts) measured ~3× faster than the tile kernel at M = 4
 * and on par at M = 1 on lavapipe. A shard's rows of `out` are not contiguous when there are several shards and
 * M > 1, so each shard goes through a scratch [M, rows] and one copy per row.
 */
function logitsByMatmul(gpu: Gpu, args: LmHeadLogitsArgs, shards: Shard[], dtype: LmDtype): void {
  const { M, V, H } = args;
  const alpha = 1 / (args.temperature ?? 1);
  for (const s of shards) {
    if (shards.length === 1) {
      matmul(gpu, { a: args.h, b: s.buf, c: args.out, M, N: s.rows, K: H, transB: true, alpha, dtype, outDtype: "f32" });
      continue;
    }
    const tmp = gpu.alloc(M * s.rows * 4, "lmhead-logits-shard");
    matmul(gpu, { a: args.h, b: s.buf, c: tmp, M, N: s.rows, K: H, transB: true, alpha, dtype, outDtype: "f32" });
    for (let m = 0; m < M; m++) gpu.copy(tmp, m * s.rows * 4, args.out, (m * V + s.v0) * 4, s.rows * 4);
    gpu.release(tmp);
  }
}

// -------------------------------------------------------------------------------------------------------------
// Cross-entropy mean (SFT) on top of logp

const CE_WG = 256;

function ceWgsl(backward: boolean) {
  return /* wgsl */ `
struct Params { M: u32, useMask: u32, gOut: f32, p0: u32 }
@group(0) @binding(0) var<storage, read> ${backward ? "mask" : "logp"}: array<${backward ? "u32" : "f32"}>;
${backward ? "" : "@group(0) @binding(1) var<storage, read> mask: array<u32>;"}
@group(0) @binding(${backward ? 1 : 2}) var<storage, read_write> outv: array<f32>;
@group(0) @binding(${backward ? 2 : 3}) var<uniform> u: Params;
var<workgroup> rs: array<f32, ${CE_WG}>;
var<workgroup> rc: array<f32, ${CE_WG}>;
@compute @workgroup_size(${CE_WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  var c = 0.0;
  for (var i = lid; i < u.M; i += ${CE_WG}u) {
    if (u.useMask == 0u || mask[i] != 0u) {
      c += 1.0;
      ${backward ? "" : "s += logp[i];"}
    }
  }
  rs[lid] = s;
  rc[lid] = c;
  for (var stride = ${CE_WG / 2}u; stride > 0u; stride /= 2u) {
    workgroupBarrier();
    if (lid < stride) {
      rs[lid] += rs[lid + stride];
      rc[lid] += rc[lid + stride];
    }
  }
  workgroupBarrier();
  let n = max(rc[0], 1.0);
${backward
    ? `  for (var i = lid; i < u.M; i += ${CE_WG}u) {
    outv[i] = select(0.0, -u.gOut / n, u.useMask == 0u || mask[i] != 0u);
  }`
    : `  if (lid == 0u) { outv[0] = -rs[0] / n; }`}
}
`;
}

/** out[0] = −Σ_active logp / max(1, #active)  (mean token cross-entropy; one f32 that stays on the GPU). */
export function crossEntropyMean(gpu: Gpu, args: { logp: GpuBuffer; out: GpuBuffer; M: number; mask?: GpuBuffer }): void {
  const { M } = args;
  if (!(Number.isInteger(M) && M > 0)) throw new Error(`crossEntropyMean: M must be a positive integer (got ${M})`);
  needBytes("crossEntropyMean", "logp", args.logp, M * 4);
  needBytes("crossEntropyMean", "mask", args.mask, M * 4);
  needBytes("crossEntropyMean", "out", args.out, 4);
  const k = gpu.kernel("lmhead_ce_mean", ceWgsl(false));
  const p = new ArrayBuffer(16);
  new Uint32Array(p).set([M, args.mask ? 1 : 0]);
  gpu.dispatch(k, [args.logp, args.mask ?? args.logp, args.out], [1, 1, 1], p);
}

/** gLogp[i] = −gOut·active_i / max(1, #active): the gradient of crossEntropyMean, ready for lmHeadBackward. */
export function crossEntropyMeanBackward(gpu: Gpu, args: { gLogp: GpuBuffer; M: number; mask?: GpuBuffer; gOut?: number }): void {
  const { M } = args;
  if (!(Number.isInteger(M) && M > 0)) throw new Error(`crossEntropyMeanBackward: M must be a positive integer (got ${M})`);
  needBytes("crossEntropyMeanBackward", "gLogp", args.gLogp, M * 4);
  needBytes("crossEntropyMeanBackward", "mask", args.mask, M * 4);
  const k = gpu.kernel("lmhead_ce_mean_bwd", ceWgsl(true));
  const p = new ArrayBuffer(16);
  new Uint32Array(p).set([M, args.mask ? 1 : 0]);
  new Float32Array(p)[2] = args.gOut ?? 1;
  // Without a mask the mask binding is never read, but it may not alias the written output: bind a placeholder.
  const placeholder = args.mask ? null : gpu.alloc(4, "ce_no_mask");
  gpu.dispatch(k, [args.mask ?? placeholder!, args.gLogp], [1, 1, 1], p);
  gpu.release(placeholder);
}

// -------------------------------------------------------------------------------------------------------------
// float64 references

export interface LmHeadRefOpts {
  M: number;
  V: number;
  H: number;
  temperature?: number;
  mask?: ArrayLike<number>;
}

/** Tempered logits z[m, v] = (h·Wᵀ)[m, v]/T in float64. */
export function lmHeadLogitsReference(h: ArrayLike<number>, w: ArrayLike<number>, o: LmHeadRefOpts): Float64Array {
  const { M, V, H } = o;
  const invT = 1 / (o.temperature ?? 1);
  const z = new Float64Array(M * V);
  for (let m = 0; m < M; m++) {
    for (let v = 0; v < V; v++) {
      let s = 0;
      for (let k = 0; k < H; k++) s += h[m * H + k] * w[v * H + k];
      z[m * V + v] = s * invT;
    }
  }
  return z;
}

const active = (o: LmHeadRefOpts, m: number) => !o.mask || o.mask[m] !== 0;

/** float64 forward: {logp, entropy, lse} per row, with the kernel's mask / ignore-target conventions. */
export function lmHeadReference(h: ArrayLike<number>, w: ArrayLike<number>, targets: ArrayLike<number>, o: LmHeadRefOpts) {
  const { M, V } = o;
  const z = lmHeadLogitsReference(h, w, o);
  const logp = new Float64Array(M);
  const entropy = new Float64Array(M);
  const lse = new Float64Array(M);
  for (let m = 0; m < M; m++) {
    if (!active(o, m)) continue;
    let mx = -Infinity;
    for (let v = 0; v < V; v++) mx = Math.max(mx, z[m * V + v]);
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(z[m * V + v] - mx);
    const l = mx + Math.log(s);
    let H = 0;
    for (let v = 0; v < V; v++) {
      const lp = z[m * V + v] - l;
      H -= Math.exp(lp) * lp;
    }
    lse[m] = l;
    entropy[m] = H;
    const t = targets[m];
    logp[m] = t < V ? z[m * V + t] - l : 0;
  }
  return { logp, entropy, lse };
}

/**
 * float64 backward: dlogits (= dz/T), dh = dlogits·W and dW = dlogitsᵀ·h, from g_logp and g_ent (either may be
 * null), using ∂logp/∂z = onehot(t) − p and ∂H/∂z = −p∘(log p + H).
 */
export function lmHeadBackwardReference(
  h: ArrayLike<number>,
  w: ArrayLike<number>,
  targets: ArrayLike<number>,
  gLogp: ArrayLike<number> | null,
  gEnt: ArrayLike<number> | null,
  o: LmHeadRefOpts,
) {
  const { M, V, H } = o;
  const invT = 1 / (o.temperature ?? 1);
  const z = lmHeadLogitsReference(h, w, o);
  const { lse, entropy } = lmHeadReference(h, w, targets, o);
  const dlogits = new Float64Array(M * V);
  for (let m = 0; m < M; m++) {
    if (!active(o, m)) continue;
    const t = targets[m];
    const gl = gLogp && t < V ? gLogp[m] : 0;
    const ge = gEnt ? gEnt[m] : 0;
    for (let v = 0; v < V; v++) {
      const lp = z[m * V + v] - lse[m];
      const p = Math.exp(lp);
      let g = -gl * p - ge * p * (lp + entropy[m]);
      if (v === t) g += gl;
      dlogits[m * V + v] = g * invT;
    }
  }
  const dh = new Float64Array(M * H);
  const dw = new Float64Array(V * H);
  for (let m = 0; m < M; m++) {
    for (let v = 0; v < V; v++) {
      const d = dlogits[m * V + v];
      if (d === 0) continue;
      for (let k = 0; k < H; k++) {
        dh[m * H + k] += d * w[v * H + k];
        dw[v * H + k] += d * h[m * H + k];
      }
    }
  }
  return { dlogits, dh, dw };
}

/** float64 masked mean cross-entropy −Σ_active logp / max(1, #active). */
export function crossEntropyMeanReference(logp: ArrayLike<number>, mask?: ArrayLike<number>): number {
  let s = 0;
  let c = 0;
  for (let i = 0; i < logp.length; i++) {
    if (mask && mask[i] === 0) continue;
    s += logp[i];
    c++;
  }
  return -s / Math.max(1, c);
}
