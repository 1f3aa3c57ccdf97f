// Matmul family: C[b] = alpha · op(A[b]) · op(B[b])  (+ C[b] when accumulating), f32 accumulation.
//
//   op(A) is [M,K]: A stored [M,K] row-major, or [K,M] when transA (Aᵀ·B, e.g. weight gradients).
//   op(B) is [K,N]: B stored [K,N] row-major, or [N,K] when transB (x·Wᵀ with nn.Linear's W[N,K]).
//   Operands f32 or f16 (with `shader-f16`); output f32 or f16. Batch b via workgroup_id.z with element
//   strides per operand (stride 0 broadcasts, e.g. one weight for every batch entry).
// Backward of C = A·Bᵀ (the linear layer): dA = dC·B, dB = dCᵀ·A — both are calls of this same function.
//
// Three kernels (`path`), picked per adapter and shape unless forced:
//  - "tiled" (GPUs): two-level tiling. A workgroup of 16×16 threads computes a BM×BN tile of C; each thread keeps a
//    TM×4 register tile (array<vec4<f32>,TM>). Per BK step, A and B tiles are staged in workgroup memory as f32
//    (transposes are resolved while staging so the inner loop is identical for all orientations), with zero fill
//    outside the matrix so shapes need not be multiples of the tile.
//  - "direct" (GPUs, x·Wᵀ with M ≤ 8, K % 4 == 0): register tile straight from memory, no workgroup memory (GEMV).
//  - "broadcast" (CPU adapters — lavapipe/llvmpipe, SwiftShader — with subgroups): made for how lavapipe runs WGSL.
//    It executes a subgroup of W = 8 invocations as one 8-wide SIMD vector, but every storage-buffer load is a
//    scalar loop over the 8 lanes with a bounds check per element (~10 instructions per value, read off its
//    GALLIVM_DEBUG=asm output), while arithmetic is one vector instruction for all lanes; workgroup memory costs
//    the same per-lane loop plus barriers. So the kernel minimises loads per FLOP: a workgroup is one subgroup;
//    lane l owns output columns l0 + l + j·W (j < TN) and the subgroup shares TM rows. Per K-block of W, each lane
//    loads ONE value of each shared row (row i, k0 + l) and `subgroupBroadcast` (an extract + splat, no memory)
//    hands value k0 + kk of row i to every lane; each lane loads its own columns' W values as vec4 when they are
//    contiguous along K. Rows ("broadcast operand") and lane columns ("lane operand") are C's rows/columns, or
//    columns/rows (computing Cᵀ = op(B)ᵀ·op(A)ᵀ) when that makes the lane operand contiguous along K.
//    Measured on lavapipe (2 cores): ≈2× the direct kernel at M = 512 (benchmarks/matmul).
//
// Split-K (all three kernels): when C has too few output tiles to fill the device, K is cut into S slices of kLen;
// workgroup z = b·S + s computes the slice-s partial product into a scratch buffer [batch·S, M, N] (f32), and a
// second kernel sums the S partials in a fixed order (deterministic, no atomics), applies alpha, adds C when
// accumulating and converts to the output dtype. See `chooseSplitK` for the heuristic; `splitK` forces S.
import { availableParallelism } from "node:os";
import type { Gpu } from "./runtime/device.js";
import { isCpuAdapter } from "./runtime/adapter.js";
import type { GpuBuffer } from "./runtime/pool.js";
import { memoWgsl } from "./wgsl-cache.js";

export type MatmulDtype = "f32" | "f16";
export type MatmulPath = "tiled" | "direct" | "broadcast";

export interface MatmulArgs {
  a: GpuBuffer;
  b: GpuBuffer;
  /** Output; must hold batch·M·N elements of outDtype. */
  c: GpuBuffer;
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  /** Number of independent products (default 1). */
  batch?: number;
  /** Element strides between batch entries (defaults: dense; 0 = broadcast). */
  strideA?: number;
  strideB?: number;
  strideC?: number;
  /** Operand dtype of a and b (default f32). */
  dtype?: MatmulDtype;
  outDtype?: MatmulDtype;
  alpha?: number;
  /** C += result instead of C = result (gradient accumulation). */
  accumulate?: boolean;
  /** Optional f32 [N] added to every row of C after alpha·A·B (nn.Linear's bias, fused into the store). */
  bias?: GpuBuffer;
  /**
   * Force a kernel: "tiled" (workgroup-memory tiles), "direct" (register tile, x·Wᵀ with K % 4 == 0 only) or
   * "broadcast" (subgroup-broadcast kernel for CPU adapters; needs the `subgroups` feature).
   */
  path?: MatmulPath;
  /** Number of K slices (1 = no split-K). Default: `chooseSplitK`. */
  splitK?: number;
}

interface TileConfig {
  TM: number; // rows per thread
  BK: number;
}

const WX = 16; // threads along N
const WY = 16; // threads along M
const TN = 4; // columns per thread (one vec4)

/** Uniform block shared by the three matmul kernels (48 bytes). kLen/slices describe the K split (1 slice: kLen = K). */
const PARAMS_WGSL = "struct Params { M: u32, N: u32, K: u32, strideA: u32, strideB: u32, strideC: u32, alpha: f32, kLen: u32, slices: u32, p0: u32, p1: u32, p2: u32 }";

/** Pick the register tile by M: tall tiles amortise B loads, short ones avoid wasted rows for small M. */
export function chooseMatmulTile(M: number): TileConfig {
  if (M <= 16) return { TM: 1, BK: 32 };
  if (M <= 48) return { TM: 2, BK: 16 };
  return { TM: 4, BK: 16 };
}

/** The store of one finished value `v` (f32 expression) at element (gm, gn): C = alpha·v (+C), or the raw partial when split. */
function storeWgsl(o: { split: boolean; accumulate: boolean; bias?: boolean; outDtype: MatmulDtype; gm: string; gn: string; v: string; batch: string }): string {
  if (o.split) return `{ C[wg.z * u.M * u.N + ${o.gm} * u.N + ${o.gn}] = ${o.v}; }`;
  return `{ let ci = ${o.batch} * u.strideC + ${o.gm} * u.N + ${o.gn}; var v = u.alpha * ${o.v};${o.accumulate ? " v += f32(C[ci]);" : ""}${o.bias ? ` v += BIAS[${o.gn}];` : ""} C[ci] = ${o.outDtype}(v); }`;
}

/** The bindings after A, B, C: the bias (when fused into this kernel's store) and the uniform block. */
function tailBindings(bias: boolean): string {
  return bias ? "@group(0) @binding(3) var<storage, read> BIAS: array<f32>;\n@group(0) @binding(4) var<uniform> u: Params;" : "@group(0) @binding(3) var<uniform> u: Params;";
}

export function matmulWgsl(opts: {
  transA: boolean;
  transB: boolean;
  dtype: MatmulDtype;
  outDtype: MatmulDtype;
  accumulate: boolean;
  bias?: boolean;
  tile: TileConfig;
  /** Write raw f32 partial sums of this workgroup's K slice to C = scratch [batch·slices, M, N]. */
  split?: boolean;
}): string {
  const { transA, transB, dtype, outDtype, accumulate } = opts;
  const split = opts.split ?? false;
  const { TM, BK } = opts.tile;
  const BM = TM * WY;
  const BN = TN * WX;
  const THREADS = WX * WY;
  const needF16 = dtype === "f16" || (!split && outDtype === "f16");
  const aLoads = (BM * BK) / THREADS;
  const bLoads = (BN * BK) / THREADS;
  // Index math for staging: choose the loop order that makes consecutive threads read consecutive addresses.
  const aStage = transA
    ? `let mm = idx % ${BM}u; let kk = idx / ${BM}u;` // A stored [K,M]
    : `let kk = idx % ${BK}u; let mm = idx / ${BK}u;`; // A stored [M,K]
  const aAddr = transA ? `aOff + gk * u.M + gm` : `aOff + gm * u.K + gk`;
  const bStage = transB
    ? `let kk = idx % ${BK}u; let nn = idx / ${BK}u;` // B stored [N,K]
    : `let nn = idx % ${BN}u; let kk = idx / ${BN}u;`; // B stored [K,N]
  const bAddr = transB ? `bOff + gn * u.K + gk` : `bOff + gk * u.N + gn`;
  return /* wgsl */ `
${needF16 ? "enable f16;" : ""}
${PARAMS_WGSL}
@group(0) @binding(0) var<storage, read> A: array<${dtype}>;
@group(0) @binding(1) var<storage, read> B: array<${dtype}>;
@group(0) @binding(2) var<storage, read_write> C: array<${split ? "f32" : outDtype}>;
${tailBindings(!split && !!opts.bias)}

var<workgroup> As: array<f32, ${BK * BM}>;   // [BK][BM]
var<workgroup> Bs: array<f32, ${BK * BN}>;   // [BK][BN]

@compute @workgroup_size(${WX}, ${WY}, 1)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) tid: u32) {
  let row0 = wg.y * ${BM}u;
  let col0 = wg.x * ${BN}u;
  let bz = wg.z / u.slices;
  let kb = (wg.z % u.slices) * u.kLen;
  let ke = min(u.K, kb + u.kLen);
  let aOff = bz * u.strideA;
  let bOff = bz * u.strideB;
  var acc: array<vec4<f32>, ${TM}>;
  for (var r = 0u; r < ${TM}u; r++) { acc[r] = vec4<f32>(0.0); }

  for (var k0 = kb; k0 < ke; k0 += ${BK}u) {
    for (var i = 0u; i < ${aLoads}u; i++) {
      let idx = tid + i * ${THREADS}u;
      ${aStage}
      let gm = row0 + mm; let gk = k0 + kk;
      var v = 0.0;
      if (gm < u.M && gk < ke) { v = f32(A[${aAddr}]); }
      As[kk * ${BM}u + mm] = v;
    }
    for (var i = 0u; i < ${bLoads}u; i++) {
      let idx = tid + i * ${THREADS}u;
      ${bStage}
      let gn = col0 + nn; let gk = k0 + kk;
      var v = 0.0;
      if (gn < u.N && gk < ke) { v = f32(B[${bAddr}]); }
      Bs[kk * ${BN}u + nn] = v;
    }
    workgroupBarrier();
    for (var k = 0u; k < ${BK}u; k++) {
      // Thread columns are lid.x + j·${WX}: neighbouring invocations read neighbouring words (no gathers).
      let bb = k * ${BN}u + lid.x;
      let bv = vec4<f32>(Bs[bb], Bs[bb + ${WX}u], Bs[bb + ${2 * WX}u], Bs[bb + ${3 * WX}u]);
      let ab = k * ${BM}u + lid.y * ${TM}u;
      for (var r = 0u; r < ${TM}u; r++) {
        acc[r] = fma(vec4<f32>(As[ab + r]), bv, acc[r]);
      }
    }
    workgroupBarrier();
  }

  for (var r = 0u; r < ${TM}u; r++) {
    let gm = row0 + lid.y * ${TM}u + r;
    if (gm >= u.M) { break; }
    for (var j = 0u; j < ${TN}u; j++) {
      let gn = col0 + lid.x + j * ${WX}u;
      if (gn < u.N) {
        ${storeWgsl({ split, accumulate, bias: opts.bias, outDtype, gm: "gm", gn: "gn", v: "acc[r][j]", batch: "bz" })}
      }
    }
  }
}
`;
}


/**
 * Direct register-tile kernel for C = A·Bᵀ with both operands contiguous along K (the nn.Linear forward), K % 4 == 0.
 * No workgroup memory and no barriers: each invocation reads vec4 runs of its TM rows of A and TN rows of B
 * straight from memory and keeps TM×TN dot-product accumulators. GPUs use it for M ≤ 8 (GEMV-shaped products).
 * With a K split, kLen is a multiple of 4.
 */
export function matmulDirectWgsl(opts: { dtype: MatmulDtype; outDtype: MatmulDtype; accumulate: boolean; bias?: boolean; TM: number; TN: number; WX: number; WY: number; split?: boolean }): string {
  const { dtype, outDtype, accumulate, TM, TN, WX: wx, WY: wy } = opts;
  const split = opts.split ?? false;
  const needF16 = dtype === "f16" || (!split && outDtype === "f16");
  return /* wgsl */ `
${needF16 ? "enable f16;" : ""}
${PARAMS_WGSL}
@group(0) @binding(0) var<storage, read> A: array<vec4<${dtype}>>;
@group(0) @binding(1) var<storage, read> B: array<vec4<${dtype}>>;
@group(0) @binding(2) var<storage, read_write> C: array<${split ? "f32" : outDtype}>;
${tailBindings(!split && !!opts.bias)}

@compute @workgroup_size(${wx}, ${wy}, 1)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let n0 = (wg.x * ${wx}u + lid.x) * ${TN}u;
  let m0 = (wg.y * ${wy}u + lid.y) * ${TM}u;
  if (n0 >= u.N || m0 >= u.M) { return; }
  let bz = wg.z / u.slices;
  let K4 = u.K / 4u;
  let kb = (wg.z % u.slices) * (u.kLen / 4u);
  let ke = min(K4, kb + u.kLen / 4u);
  var acc: array<array<f32, ${TN}>, ${TM}>;
  var rowA: array<u32, ${TM}>;
  var rowB: array<u32, ${TN}>;
  // Rows past the edge read a valid row (clamped) and are never stored.
  for (var i = 0u; i < ${TM}u; i++) { rowA[i] = bz * (u.strideA / 4u) + min(m0 + i, u.M - 1u) * K4; }
  for (var j = 0u; j < ${TN}u; j++) { rowB[j] = bz * (u.strideB / 4u) + min(n0 + j, u.N - 1u) * K4; }
  for (var k = kb; k < ke; k++) {
    var a: array<vec4<f32>, ${TM}>;
    for (var i = 0u; i < ${TM}u; i++) { a[i] = vec4<f32>(A[rowA[i] + k]); }
    for (var j = 0u; j < ${TN}u; j++) {
      let b = vec4<f32>(B[rowB[j] + k]);
      for (var i = 0u; i < ${TM}u; i++) { acc[i][j] += dot(a[i], b); }
    }
  }
  for (var i = 0u; i < ${TM}u; i++) {
    let m = m0 + i;
    if (m >= u.M) { break; }
    for (var j = 0u; j < ${TN}u; j++) {
      let n = n0 + j;
      if (n < u.N) {
        ${storeWgsl({ split, accumulate, bias: opts.bias, outDtype, gm: "m", gn: "n", v: "acc[i][j]", batch: "bz" })}
      }
    }
  }
}
`;
}

/** Shape of a broadcast-kernel launch (see the header): who is the lane operand, and the register tile. */
export interface BroadcastConfig {
  /** "n": lanes own columns of C (lane operand op(B)); "m": lanes own rows of C (lane operand op(A), computes Cᵀ). */
  lanesAlong: "n" | "m";
  /** Subgroup width = workgroup size = K-block. */
  W: number;
  /** Shared rows per subgroup. */
  TM: number;
  /** Lane columns per invocation (stride W). */
  TN: number;
  /** Lane operand read as vec4 along K (it is contiguous along K, K % 4 == 0, batch stride % 4 == 0). */
  vec4: boolean;
}

/** Choose the broadcast kernel's orientation and tile for a shape (measured on lavapipe, benchmarks/matmul). */
export function chooseBroadcastConfig(o: { M: number; N: number; K: number; transA: boolean; transB: boolean; W: number; strideA: number; strideB: number }): BroadcastConfig {
  // The lane operand should be contiguous along K: op(B) = B[n,k] when transB, op(A) = A[m,k] when not transA.
  const lanesAlong = o.transB || o.transA ? "n" : "m";
  const laneContiguous = lanesAlong === "n" ? o.transB : !o.transA;
  const laneStride = lanesAlong === "n" ? o.strideB : o.strideA;
  const vec4 = laneContiguous && o.K % 4 === 0 && laneStride % 4 === 0 && o.W % 4 === 0;
  const rows = lanesAlong === "n" ? o.M : o.N;
  const cols = lanesAlong === "n" ? o.N : o.M;
  // 16×4 measured best at Qwen shapes (vs 8×2, 16×2, 8×8, 32×2, 32×4). It unrolls 512 FMAs and takes seconds to JIT
  // on lavapipe, so small products (< 2²² multiply-adds, milliseconds of work) use at most 4×2.
  const small = o.M * o.N * o.K < 2 ** 22;
  const TM = Math.min(small ? 4 : 16, rows >= 16 ? 16 : rows >= 8 ? 8 : rows >= 4 ? 4 : rows >= 2 ? 2 : 1);
  const TN = Math.min(small ? 2 : 4, cols > 2 * o.W ? 4 : cols > o.W ? 2 : 1);
  return { lanesAlong, W: o.W, TM, TN, vec4 };
}

export function matmulBroadcastWgsl(opts: {
  transA: boolean;
  transB: boolean;
  dtype: MatmulDtype;
  outDtype: MatmulDtype;
  accumulate: boolean;
  bias?: boolean;
  cfg: BroadcastConfig;
  split?: boolean;
}): string {
  const { transA, transB, dtype, outDtype, accumulate } = opts;
  const { lanesAlong, W, TM, TN, vec4 } = opts.cfg;
  const split = opts.split ?? false;
  const needF16 = dtype === "f16" || (!split && outDtype === "f16");
  const alongN = lanesAlong === "n";
  // Broadcast operand Q[r, k] and lane operand P[l, k] as element indices (before the batch offset).
  const qIdx = (r: string, k: string) => (alongN ? (transA ? `${k} * u.M + ${r}` : `${r} * u.K + ${k}`) : transB ? `${r} * u.K + ${k}` : `${k} * u.N + ${r}`);
  const pIdx = (l: string, k: string) => (alongN ? (transB ? `${l} * u.K + ${k}` : `${k} * u.N + ${l}`) : transA ? `${k} * u.M + ${l}` : `${l} * u.K + ${k}`);
  const Q = alongN ? "A" : "B";
  const P = alongN ? "B" : "A";
  const rowsN = alongN ? "u.M" : "u.N";
  const colsN = alongN ? "u.N" : "u.M";
  const L: string[] = [];
  L.push(`let bz = wg.z / u.slices;`);
  L.push(`let kb = (wg.z % u.slices) * u.kLen;`);
  L.push(`let ke = min(u.K, kb + u.kLen);`);
  L.push(`let qOff = bz * u.stride${Q};`);
  L.push(`let pOff = bz * u.stride${P};`);
  L.push(`let rBase = wg.y * ${TM}u;`);
  L.push(`let lBase = wg.x * ${W * TN}u + sg;`);
  // Rows/columns past the edge read a clamped valid row/column and are never stored.
  for (let i = 0; i < TM; i++) L.push(`let r${i} = min(rBase + ${i}u, ${rowsN} - 1u);`);
  for (let j = 0; j < TN; j++) L.push(`let l${j} = min(lBase + ${j * W}u, ${colsN} - 1u);`);
  if (vec4) for (let j = 0; j < TN; j++) L.push(`let p${j}base = pOff / 4u + l${j} * (u.K / 4u);`);
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) L.push(`var c${i}_${j} = 0.0;`);
  L.push(`for (var k0 = kb; k0 < ke; k0 += ${W}u) {`);
  // One value of each shared row per lane: row i, column k0 + sg (zero past the slice end).
  L.push(`  let kq = k0 + sg; let qin = kq < ke; let kqc = min(kq, ke - 1u);`);
  for (let i = 0; i < TM; i++) L.push(`  let q${i} = select(0.0, f32(${Q}[qOff + ${qIdx(`r${i}`, "kqc")}]), qin);`);
  // This lane's own columns: W values each (vec4 runs when contiguous along K; kLen and K are multiples of 4 then).
  // Past the slice end the index is clamped to k = ke − 1 and not zeroed: its shared-row partner is zero there, and
  // the clamped value belongs to the same dot product (a select here measured ~1.5× slower on lavapipe).
  const pv: string[][] = [];
  for (let j = 0; j < TN; j++) {
    pv.push([]);
    if (vec4) {
      for (let v = 0; v < W / 4; v++) {
        L.push(`  let p${j}_${v} = vec4<f32>(${P}[p${j}base + min(k0 / 4u + ${v}u, ke / 4u - 1u)]);`);
        for (let c = 0; c < 4; c++) pv[j].push(`p${j}_${v}[${c}]`);
      }
    } else {
      for (let kk = 0; kk < W; kk++) {
        L.push(`  let p${j}_${kk} = f32(${P}[pOff + ${pIdx(`l${j}`, `min(k0 + ${kk}u, ke - 1u)`)}]);`);
        pv[j].push(`p${j}_${kk}`);
      }
    }
  }
  for (let kk = 0; kk < W; kk++) {
    for (let i = 0; i < TM; i++) {
      L.push(`  { let s = subgroupBroadcast(q${i}, ${kk}u);`);
      for (let j = 0; j < TN; j++) L.push(`    c${i}_${j} = fma(s, ${pv[j][kk]}, c${i}_${j});`);
      L.push(`  }`);
    }
  }
  L.push(`}`);
  for (let i = 0; i < TM; i++) {
    for (let j = 0; j < TN; j++) {
      const r = `rBase + ${i}u`;
      const l = `lBase + ${j * W}u`;
      const [gm, gn] = alongN ? [r, l] : [l, r];
      L.push(`if (${r} < ${rowsN} && ${l} < ${colsN}) ${storeWgsl({ split, accumulate, bias: opts.bias, outDtype, gm: `(${gm})`, gn: `(${gn})`, v: `c${i}_${j}`, batch: "bz" })}`);
    }
  }
  const elem = (operand: string) => (operand === P && vec4 ? `vec4<${dtype}>` : dtype);
  return /* wgsl */ `
${needF16 ? "enable f16;" : ""}
enable subgroups;
${PARAMS_WGSL}
@group(0) @binding(0) var<storage, read> A: array<${elem("A")}>;
@group(0) @binding(1) var<storage, read> B: array<${elem("B")}>;
@group(0) @binding(2) var<storage, read_write> C: array<${split ? "f32" : outDtype}>;
${tailBindings(!split && !!opts.bias)}

@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(subgroup_invocation_id) sg: u32) {
  ${L.join("\n  ")}
}
`;
}

/** Sum the K-slice partials: C[b] = alpha·Σ_s P[b·S + s] (+ C[b]), converted to the output dtype. */
export function matmulSplitReduceWgsl(opts: { outDtype: MatmulDtype; accumulate: boolean; bias?: boolean }): string {
  const { outDtype, accumulate } = opts;
  return /* wgsl */ `
${outDtype === "f16" ? "enable f16;" : ""}
struct RP { count: u32, slices: u32, strideC: u32, alpha: f32, N: u32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<storage, read> P: array<f32>;
@group(0) @binding(1) var<storage, read_write> C: array<${outDtype}>;
${opts.bias ? "@group(0) @binding(2) var<storage, read> BIAS: array<f32>;\n@group(0) @binding(3) var<uniform> u: RP;" : "@group(0) @binding(2) var<uniform> u: RP;"}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = g.y * nwg.x * 256u + g.x;
  if (i >= u.count) { return; }
  let base = g.z * u.slices * u.count + i;
  var s = 0.0;
  for (var t = 0u; t < u.slices; t++) { s += P[base + t * u.count]; }
  let ci = g.z * u.strideC + i;
  var v = u.alpha * s;
  ${accumulate ? "v += f32(C[ci]);" : ""}
  ${opts.bias ? "v += BIAS[i % u.N];" : ""}
  C[ci] = ${outDtype}(v);
}
`;
}


/** The adapter's smallest subgroup size (dawn.node exposes it on device.adapterInfo), or null when unknown. */
function subgroupMinSize(gpu: Gpu): number | null {
  const info = (gpu.device as unknown as { adapterInfo?: { subgroupMinSize?: number } }).adapterInfo;
  const s = info?.subgroupMinSize;
  return typeof s === "number" && s > 0 ? s : null;
}

/** Subgroup width the broadcast kernel uses on this device, or null when it cannot run here. */
export function broadcastWidth(gpu: Gpu): number | null {
  if (!gpu.hasSubgroups) return null;
  const s = subgroupMinSize(gpu) ?? 8;
  return s >= 4 && s <= 64 && Number.isInteger(Math.log2(s)) ? s : null;
}

/**
 * Split-K heuristic. Split only when the output tiles cannot fill the device, and never into slices shorter than
 * `minSlice` K-steps' worth of work:
 *   target workgroups = 256 on GPUs (≈2 per SM on a 132-SM H100; WebGPU does not expose the SM count),
 *                       4 × host threads on CPU adapters (lavapipe runs one workgroup per thread);
 *   no split when tiles ≥ target / 2 or K < 2·minSlice (minSlice = 128 on GPUs, 512 on CPU adapters, where a
 *   second pass over M·N costs relatively more);
 *   S = min(⌈target / tiles⌉, ⌊K / minSlice⌋, 32), then shrunk until the f32 partials (S·batch·M·N·4 bytes) fit in
 *   64 MiB and the binding limit; kLen = ⌈K/S⌉ rounded up to the kernel's K granule; S = ⌈K / kLen⌉.
 * Examples (GPU): M = 64 down_proj (N 1536, K 8960), tiled 64×64 tiles → 24 tiles → S = 11 slices of 816;
 * a LoRA weight gradient dA = dzᵀ·x (M = r = 16, N = 1536, K = 512 tokens) → 24 tiles → S = 4.
 */
export function chooseSplitK(o: { tiles: number; K: number; granule: number; cpu: boolean; outElems: number; batch: number; maxScratchBytes: number }): { slices: number; kLen: number } {
  const target = o.cpu ? 4 * availableParallelism() : 256;
  const minSlice = o.cpu ? 512 : 128;
  const none = { slices: 1, kLen: o.K };
  if (o.tiles >= target / 2 || o.K < 2 * minSlice) return none;
  let S = Math.min(Math.ceil(target / o.tiles), Math.floor(o.K / minSlice), 32);
  const cap = Math.min(64 * 2 ** 20, o.maxScratchBytes);
  while (S > 1 && S * o.batch * o.outElems * 4 > cap) S--;
  if (S <= 1) return none;
  return splitSlices(o.K, S, o.granule);
}

/** kLen = ⌈K/S⌉ rounded up to `granule`, and the slice count that covers K with it. */
function splitSlices(K: number, S: number, granule: number): { slices: number; kLen: number } {
  const kLen = Math.ceil(Math.ceil(K / S) / granule) * granule;
  return { slices: Math.ceil(K / kLen), kLen };
}

/** What `matmul` will record for a call: the kernel, its grid, and the K split (tests and benchmarks print it). */
export interface MatmulPlan {
  path: MatmulPath;
  /** Pipeline label (kernel + tile); "_sk" is appended for the split variant. */
  label: string;
  /** Workgroups along x and y (z = batch · slices). */
  grid: [number, number];
  slices: number;
  kLen: number;
  /** Bytes of f32 partials the split needs (0 without a split). */
  scratchBytes: number;
  /** WGSL of the main kernel (split = write raw partials). */
  wgsl: (split: boolean) => string;
}

// The generators as the launchers call them: each distinct text built once (see wgsl-cache.ts).
const tiledWgsl = memoWgsl(matmulWgsl);
const directWgsl = memoWgsl(matmulDirectWgsl);
const broadcastWgsl = memoWgsl(matmulBroadcastWgsl);
const splitReduceWgsl = memoWgsl(matmulSplitReduceWgsl);

/** Validate a call's shape/options and decide path, tile and split (no buffers needed). */
export function matmulPlan(gpu: Gpu, args: Omit<MatmulArgs, "a" | "b" | "c" | "bias"> & { bias?: unknown }): MatmulPlan {
  const { M, N, K } = args;
  const transA = args.transA ?? false;
  const transB = args.transB ?? false;
  const dtype = args.dtype ?? "f32";
  const outDtype = args.outDtype ?? "f32";
  const batch = args.batch ?? 1;
  const accumulate = args.accumulate ?? false;
  if (!(M > 0 && N > 0 && K > 0 && batch > 0) || ![M, N, K, batch].every(Number.isInteger)) {
    throw new Error(`matmul: M, N, K and batch must be positive integers (got M=${M} N=${N} K=${K} batch=${batch})`);
  }
  if ((dtype === "f16" || outDtype === "f16") && !gpu.hasF16) {
    throw new Error("matmul: f16 operands need the shader-f16 feature, which this adapter lacks; use dtype f32");
  }
  if (args.splitK !== undefined && !(Number.isInteger(args.splitK) && args.splitK >= 1)) {
    throw new Error(`matmul: splitK must be a positive integer (number of K slices; 1 = no split), got ${args.splitK}`);
  }
  const strideA = args.strideA ?? M * K;
  const strideB = args.strideB ?? K * N;
  const cpu = isCpuAdapter(gpu);
  const W = broadcastWidth(gpu);
  const directOk = !transA && transB && K % 4 === 0 && strideA % 4 === 0 && strideB % 4 === 0;
  const path: MatmulPath = args.path ?? (cpu && W ? "broadcast" : directOk && (cpu || M <= 8) ? "direct" : "tiled");
  if (path === "direct" && !directOk) {
    throw new Error(`matmul: path "direct" needs transB, no transA, K % 4 == 0 and batch strides % 4 == 0 (got transA=${transA} transB=${transB} K=${K}); use path "tiled"`);
  }
  if (path === "broadcast" && !W) {
    throw new Error("matmul: path \"broadcast\" needs the subgroups feature with a power-of-two subgroup size ≥ 4, which this adapter lacks; use path \"tiled\"");
  }

  // Kernel, workgroup grid (x, y) and K granule for the chosen path.
  const bias = args.bias !== undefined;
  const suffix = `${dtype}${transA ? "_tA" : ""}${transB ? "_tB" : ""}${outDtype === "f16" ? "_oh" : ""}${accumulate ? "_acc" : ""}${bias ? "_bias" : ""}`;
  let grid: [number, number];
  let granule: number;
  let wgsl: (split: boolean) => string;
  let label: string;
  if (path === "direct") {
    // M ≤ 8 (decode/GEMV): one row per invocation, 64 invocations along N. Otherwise an 8×4 register tile.
    const cfg = M <= 8 ? { TM: 1, TN: 4, WX: 64, WY: 1 } : { TM: 8, TN: 4, WX: 8, WY: 8 };
    label = `matmul_direct_${suffix}_tm${cfg.TM}`;
    wgsl = (split) => directWgsl({ dtype, outDtype, accumulate, bias, ...cfg, split });
    grid = [Math.ceil(N / (cfg.TN * cfg.WX)), Math.ceil(M / (cfg.TM * cfg.WY))];
    granule = 16;
  } else if (path === "broadcast") {
    const cfg = chooseBroadcastConfig({ M, N, K, transA, transB, W: W!, strideA, strideB });
    const rows = cfg.lanesAlong === "n" ? M : N;
    const cols = cfg.lanesAlong === "n" ? N : M;
    label = `matmul_bcast_${suffix}_${cfg.lanesAlong}${cfg.TM}x${cfg.TN}${cfg.vec4 ? "v" : ""}_w${cfg.W}`;
    wgsl = (split) => broadcastWgsl({ transA, transB, dtype, outDtype, accumulate, bias, cfg, split });
    grid = [Math.ceil(cols / (cfg.W * cfg.TN)), Math.ceil(rows / cfg.TM)];
    granule = cfg.W;
  } else {
    const tile = chooseMatmulTile(M);
    label = `matmul_${suffix}_tm${tile.TM}`;
    wgsl = (split) => tiledWgsl({ transA, transB, dtype, outDtype, accumulate, bias, tile, split });
    grid = [Math.ceil(N / (TN * WX)), Math.ceil(M / (tile.TM * WY))];
    granule = tile.BK;
  }
  const split = args.splitK !== undefined
    ? args.splitK > 1 ? splitSlices(K, args.splitK, granule) : { slices: 1, kLen: K }
    : chooseSplitK({ tiles: grid[0] * grid[1] * batch, K, granule, cpu, outElems: M * N, batch, maxScratchBytes: gpu.limits.maxStorageBufferBindingSize ?? 2 ** 27 });
  const scratchBytes = split.slices > 1 ? split.slices * batch * M * N * 4 : 0;
  const maxBinding = gpu.limits.maxStorageBufferBindingSize ?? 2 ** 27;
  if (scratchBytes > maxBinding) {
    throw new Error(`matmul: splitK=${args.splitK} needs ${scratchBytes} bytes of partial sums (slices·batch·M·N·4), over this adapter's maxStorageBufferBindingSize (${maxBinding}); use fewer slices or leave splitK unset`);
  }
  return { path, label, grid, ...split, scratchBytes, wgsl };
}

/** Record C = alpha·op(A)·op(B) (or C += …) on the GPU. */
export function matmul(gpu: Gpu, args: MatmulArgs): void {
  const plan = matmulPlan(gpu, args);
  const { M, N, K } = args;
  const dtype = args.dtype ?? "f32";
  const outDtype = args.outDtype ?? "f32";
  const batch = args.batch ?? 1;
  const accumulate = args.accumulate ?? false;
  const alpha = args.alpha ?? 1;
  const strideA = args.strideA ?? M * K;
  const strideB = args.strideB ?? K * N;
  const strideC = args.strideC ?? M * N;
  const esz = (d: MatmulDtype) => (d === "f16" ? 2 : 4);
  const need = (stride: number, one: number, dt: MatmulDtype) => (stride * (batch - 1) + one) * esz(dt);
  if (args.a.bytes < need(strideA, M * K, dtype)) throw new Error(`matmul: A holds ${args.a.bytes} bytes, needs ${need(strideA, M * K, dtype)} for M=${M} K=${K} batch=${batch}`);
  if (args.b.bytes < need(strideB, K * N, dtype)) throw new Error(`matmul: B holds ${args.b.bytes} bytes, needs ${need(strideB, K * N, dtype)} for K=${K} N=${N} batch=${batch}`);
  if (args.c.bytes < need(strideC, M * N, outDtype)) throw new Error(`matmul: C holds ${args.c.bytes} bytes, needs ${need(strideC, M * N, outDtype)} for M=${M} N=${N} batch=${batch}`);
  if (args.bias && args.bias.bytes < N * 4) throw new Error(`matmul: bias holds ${args.bias.bytes} bytes, needs ${N * 4} (f32 [N=${N}])`);
  const biasBuf = args.bias ? [args.bias] : [];

  const params = new ArrayBuffer(48);
  const u = new Uint32Array(params);
  u.set([M, N, K, strideA, strideB, strideC]);
  new Float32Array(params)[6] = alpha;
  u[7] = plan.kLen;
  u[8] = plan.slices;
  const [gx0, gy0] = plan.grid;
  if (plan.slices === 1) {
    gpu.dispatch(gpu.kernel(plan.label, plan.wgsl(false)), [args.a, args.b, args.c, ...biasBuf], [gx0, gy0, batch], params);
    return;
  }
  const S = plan.slices;
  const scratch = gpu.alloc(plan.scratchBytes, "matmul_splitk_partials");
  gpu.dispatch(gpu.kernel(`${plan.label}_sk`, plan.wgsl(true)), [args.a, args.b, scratch], [gx0, gy0, batch * S], params);
  const count = M * N;
  const groups = Math.ceil(count / 256);
  const gx = Math.min(groups, gpu.limits.maxComputeWorkgroupsPerDimension ?? 65535);
  const rp = new ArrayBuffer(32);
  new Uint32Array(rp).set([count, S, strideC, 0, N]);
  new Float32Array(rp)[3] = alpha;
  const reduce = gpu.kernel(`matmul_splitk_reduce_${outDtype}${accumulate ? "_acc" : ""}${args.bias ? "_bias" : ""}`, splitReduceWgsl({ outDtype, accumulate, bias: !!args.bias }));
  gpu.dispatch(reduce, [scratch, args.c, ...biasBuf], [gx, Math.ceil(groups / gx), batch], rp);
  gpu.release(scratch); // later commands that reuse this buffer run after ours
}

/** float64 CPU reference with the same argument conventions (tests and benchmarks). */
export function matmulReference(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  o: { M: number; N: number; K: number; transA?: boolean; transB?: boolean; batch?: number; strideA?: number; strideB?: number; alpha?: number },
): Float64Array {
  const { M, N, K } = o;
  const batch = o.batch ?? 1;
  const sA = o.strideA ?? M * K;
  const sB = o.strideB ?? K * N;
  const alpha = o.alpha ?? 1;
  const c = new Float64Array(batch * M * N);
  for (let z = 0; z < batch; z++) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) {
          const av = a[z * sA + (o.transA ? k * M + m : m * K + k)];
          const bv = b[z * sB + (o.transB ? n * K + k : k * N + n)];
          s += av * bv;
        }
        c[z * M * N + m * N + n] = alpha * s;
      }
    }
  }
  return c;
}
