// GEMV for CPU adapters (lavapipe/llvmpipe, SwiftShader) at decode-sized M (≤ 8 rows; more rows run as blocks of 8):
//   single: y[M,N] = α · x[M,K] · Wᵀ (+ y)                      (nf4Matmul's "broadcast" path, W NF4)
//   pair:   y[M,N] = silu(x·Wgᵀ) ⊙ (x·Wuᵀ)                      (the SwiGLU MLP's gate and up in one dispatch,
//                                                                  W f32 or NF4; `gemvSwigluCpu`)
// W is nn.Linear's [N, K]: f32 rows, or NF4 (packed u32 words of 8 codes + one f32 scale per block; nf4.ts and
// docs/kernels.md §2 give the format).
//
// Why kernels of their own: lavapipe runs a subgroup of 8 invocations as one 8-wide SIMD vector, but every
// storage-buffer load (and every dynamically indexed private array, such as a 16-entry code table) is a scalar loop
// over the lanes, while arithmetic is one vector instruction for all lanes (see matmul.ts, "broadcast"). So the
// kernel counts loads, not FLOPs:
//  - a workgroup is one subgroup of W lanes; lane l owns output columns n0 + l + j·W (j < TN);
//  - K is walked in "units" — one packed word (8 values) for NF4, one vec4 for f32. Per group of W units, each lane
//    loads the x values of ONE unit per row and `subgroupBroadcast` hands unit ww's values to every lane, so x costs
//    one load per row per W units instead of one per unit;
//  - each lane loads one unit per column per weight; NF4 codes are decoded with a select tree over the 4 bits (15
//    vector selects per code: an indexed 16-entry table is another per-lane scalar loop, measured ~2× slower at M = 1);
//  - NF4: when a block lines up with a group (blocksize = 8·W and K % blocksize == 0, bnb's 64 with W = 8) the block
//    scale is loaded once per column per group and multiplied into the group's partial sum; otherwise once per word.
// Units past K's end in the last group read a clamped valid unit and meet x values of 0.
// The pair saves the gate/up/SwiGLU chain two dispatches per layer; on a CPU adapter every dispatch wakes the
// driver's worker threads, which costs most when the machine is busy.
import type { Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import { wgslF32 as lit, type Nf4ActDtype, type Nf4Weight } from "./nf4.js";
import { broadcastWidth } from "./matmul.js";
import { isCpuAdapter } from "./runtime/adapter.js";
import { memoWgsl } from "./wgsl-cache.js";

export interface GemvCpuConfig {
  /** Rows held per workgroup (≥ M for one block). */
  TM: number;
  /** Columns per lane. */
  TN: number;
  /** Subgroup width = workgroup size. */
  W: number;
  /** NF4: one scale per column per group of W words (see the header). */
  groupScale: boolean;
}

/** WGSL expression: the code value of nibble expression `q` (u32 in 0..15) by a select tree over its bits. */
function selectTree(code: ArrayLike<number>, q: string): string {
  const level = (lo: number, n: number): string => {
    if (n === 1) return lit(code[lo]);
    const half = n / 2;
    return `select(${level(lo, half)}, ${level(lo + half, half)}, (${q} & ${half}u) != 0u)`;
  };
  return level(0, 16);
}

const SHIFT = [4, 0, 12, 8, 20, 16, 28, 24]; // element e of a word: byte e>>1, even element in the high nibble

interface GemvSource {
  dtype: Nf4ActDtype;
  outDtype: Nf4ActDtype;
  cfg: GemvCpuConfig;
  /** NF4 code table, or null for f32 weights. */
  code: ArrayLike<number> | null;
  pair: boolean;
}

/** Per-unit body: broadcast x, load + decode each weight's unit for each column, accumulate. */
function unitBody(o: GemvSource, ww: number, gs: number[], rows: number[], cols: number[]): string[] {
  const nf4 = o.code !== null;
  const { groupScale } = o.cfg;
  const L: string[] = [`  {`, `    let kw = min(kw0 + ${ww}u, u.KU - 1u);`];
  for (const i of rows) {
    L.push(`    let b${i}lo = subgroupBroadcast(x${i}lo, ${ww}u);`);
    if (nf4) L.push(`    let b${i}hi = subgroupBroadcast(x${i}hi, ${ww}u);`);
  }
  for (const g of gs) {
    for (const j of cols) {
      if (nf4) {
        const c = (e: number) => selectTree(o.code!, `((w${g}_${j} >> ${SHIFT[e]}u) & 15u)`);
        L.push(`    let w${g}_${j} = W${g}[n${j} * u.KU + kw];`);
        L.push(`    let c${g}_${j}lo = vec4<f32>(${[0, 1, 2, 3].map(c).join(", ")});`);
        L.push(`    let c${g}_${j}hi = vec4<f32>(${[4, 5, 6, 7].map(c).join(", ")});`);
        if (!groupScale) L.push(`    let s${g}_${j} = S${g}[(n${j} * u.K + kw * 8u) >> u.bsShift];`);
      } else {
        L.push(`    let c${g}_${j}lo = W${g}[n${j} * u.KU + kw];`);
      }
      for (const i of rows) {
        const d = nf4 ? `dot(b${i}lo, c${g}_${j}lo) + dot(b${i}hi, c${g}_${j}hi)` : `dot(b${i}lo, c${g}_${j}lo)`;
        const acc = `acc${g}_${i}_${j}`;
        L.push(nf4 && groupScale ? `    p${g}_${i}_${j} += ${d};` : nf4 ? `    ${acc} = fma(s${g}_${j}, ${d}, ${acc});` : `    ${acc} += ${d};`);
      }
    }
  }
  L.push(`  }`);
  return L;
}

function bindings(o: GemvSource, gs: number[]): string {
  const nf4 = o.code !== null;
  const B: string[] = [`@group(0) @binding(0) var<storage, read> A: array<vec4<${o.dtype}>>;`];
  let b = 1;
  for (const g of gs) {
    B.push(`@group(0) @binding(${b++}) var<storage, read> W${g}: array<${nf4 ? "u32" : "vec4<f32>"}>;`);
    if (nf4) B.push(`@group(0) @binding(${b++}) var<storage, read> S${g}: array<f32>;`);
  }
  B.push(`@group(0) @binding(${b++}) var<storage, read_write> C: array<${o.outDtype}>;`);
  B.push(`@group(0) @binding(${b}) var<uniform> u: Params;`);
  return B.join("\n");
}

export function gemvCpuWgsl(o: GemvSource): string {
  const { dtype, outDtype, pair } = o;
  const { TM, TN, W, groupScale } = o.cfg;
  const nf4 = o.code !== null;
  const f16 = dtype === "f16" || outDtype === "f16";
  const rows = [...Array(TM).keys()];
  const cols = [...Array(TN).keys()];
  const gs = pair ? [0, 1] : [0];
  const L: string[] = [];
  L.push(`let nBase = wg.x * ${W * TN}u + sg;`);
  L.push(`let m0 = wg.y * ${TM}u;`);
  for (const j of cols) L.push(`let n${j} = min(nBase + ${j * W}u, u.N - 1u);`);
  // x rows in vec4s; an NF4 unit is two of them.
  for (const i of rows) L.push(`let a${i} = min(m0 + ${i}u, u.M - 1u) * (u.K / 4u);`);
  for (const g of gs) for (const i of rows) for (const j of cols) L.push(`var acc${g}_${i}_${j} = 0.0;`);
  L.push(`for (var kw0 = 0u; kw0 < u.KU; kw0 += ${W}u) {`);
  // This lane's unit for the x loads; lanes past K's end load a clamped unit and zero it.
  L.push(`  let kx = kw0 + sg; let xin = kx < u.KU; let kxc = min(kx, u.KU - 1u);`);
  for (const i of rows) {
    if (nf4) {
      L.push(`  let x${i}lo = select(vec4<f32>(0.0), vec4<f32>(A[a${i} + 2u * kxc]), xin);`);
      L.push(`  let x${i}hi = select(vec4<f32>(0.0), vec4<f32>(A[a${i} + 2u * kxc + 1u]), xin);`);
    } else L.push(`  let x${i}lo = select(vec4<f32>(0.0), vec4<f32>(A[a${i} + kxc]), xin);`);
  }
  if (nf4 && groupScale) {
    for (const g of gs) for (const j of cols) L.push(`  let s${g}_${j} = S${g}[(n${j} * u.K + kw0 * 8u) >> u.bsShift];`);
    for (const g of gs) for (const i of rows) for (const j of cols) L.push(`  var p${g}_${i}_${j} = 0.0;`);
  }
  for (let ww = 0; ww < W; ww++) L.push(...unitBody(o, ww, gs, rows, cols));
  if (nf4 && groupScale) for (const g of gs) for (const i of rows) for (const j of cols) L.push(`  acc${g}_${i}_${j} = fma(s${g}_${j}, p${g}_${i}_${j}, acc${g}_${i}_${j});`);
  L.push(`}`);
  for (const i of rows) {
    for (const j of cols) {
      L.push(`if (m0 + ${i}u < u.M && nBase + ${j * W}u < u.N) {`);
      L.push(`  let ci = (m0 + ${i}u) * u.N + nBase + ${j * W}u;`);
      if (pair) {
        // silu(g)·u, as the swiglu kernel computes it
        L.push(`  let g = acc0_${i}_${j}; C[ci] = ${outDtype}(g / (1.0 + exp(-g)) * acc1_${i}_${j});`);
      } else L.push(`  var r = u.alpha * acc0_${i}_${j}; if (u.acc != 0u) { r += f32(C[ci]); } C[ci] = ${outDtype}(r);`);
      L.push(`}`);
    }
  }
  return /* wgsl */ `
${f16 ? "enable f16;" : ""}
enable subgroups;
struct Params { M: u32, N: u32, K: u32, KU: u32, bsShift: u32, alpha: f32, acc: u32, pad: u32 }
${bindings(o, gs)}
@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(subgroup_invocation_id) sg: u32) {
  ${L.join("\n  ")}
}
`;
}

/** The kernel text, built once per distinct option set (decode calls it every step: see wgsl-cache.ts). */
export const gemvCpuText = memoWgsl(gemvCpuWgsl);

/**
 * Tile by rows (measured on lavapipe by process CPU time, which the machine's other load disturbs less than wall
 * time): every row in one workgroup up to 8 (x is broadcast, each decoded unit serves all rows), 1 column per lane
 * up to 4 rows and 2 above.
 */
export function gemvCpuConfig(M: number, W: number, blocksize: number, K: number): GemvCpuConfig {
  return { TM: Math.min(M, 8), TN: M <= 4 ? 1 : 2, W, groupScale: blocksize === 8 * W && K % blocksize === 0 };
}

/** Uniform block of both kernels. */
export function gemvCpuParams(o: { M: number; N: number; K: number; unit: number; bsShift?: number; alpha?: number; accumulate?: boolean }): ArrayBuffer {
  const p = new ArrayBuffer(32);
  new Uint32Array(p).set([o.M, o.N, o.K, o.K / o.unit, o.bsShift ?? 0, 0, o.accumulate ? 1 : 0, 0]);
  new Float32Array(p)[5] = o.alpha ?? 1;
  return p;
}

/** The weights of a gate/up pair: f32 [N, K] buffers or NF4 weights (both the same kind). */
export type GemvPairWeights = { kind: "f32"; gate: GpuBuffer; up: GpuBuffer } | { kind: "nf4"; gate: Nf4Weight; up: Nf4Weight };

/** Two NF4 weights one pair kernel can decode: same blocksize and code table. */
export function sameNf4Format(a: Nf4Weight, b: Nf4Weight): boolean {
  return a.blocksize === b.blocksize && a.code.length === b.code.length && a.code.every((v, i) => Object.is(v, b.code[i]));
}

/** Whether `gemvSwigluCpu` is meant for this adapter: a CPU adapter with subgroups (GPUs keep matmul + swiglu). */
export function gemvSwigluCpuAvailable(gpu: Gpu): boolean {
  return isCpuAdapter(gpu) && broadcastWidth(gpu) !== null;
}

/**
 * out[M, N] = silu(x·Wgᵀ) ⊙ (x·Wuᵀ), x f32 [M, K], in one dispatch (CPU adapters with subgroups; see the header).
 * K % 4 == 0 (f32) or % 8 (NF4); NF4 weights must share blocksize and code table.
 */
export function gemvSwigluCpu(gpu: Gpu, args: { x: GpuBuffer; w: GemvPairWeights; out: GpuBuffer; M: number; N: number; K: number }): void {
  const { x, w, out, M, N, K } = args;
  const lanes = broadcastWidth(gpu);
  if (!lanes) throw new Error("gemvSwigluCpu: needs the subgroups feature (a CPU adapter such as lavapipe); use matmul + swiglu");
  const nf4 = w.kind === "nf4";
  const unit = nf4 ? 8 : 4;
  if (K % unit !== 0) throw new Error(`gemvSwigluCpu: K=${K} must be a multiple of ${unit} for ${w.kind} weights`);
  if (x.bytes < M * K * 4) throw new Error(`gemvSwigluCpu: x holds ${x.bytes} bytes, needs ${M * K * 4} for [${M}, ${K}] f32`);
  if (out.bytes < M * N * 4) throw new Error(`gemvSwigluCpu: out holds ${out.bytes} bytes, needs ${M * N * 4} for [${M}, ${N}] f32`);
  let bufs: GpuBuffer[];
  let cfg: GemvCpuConfig;
  let code: ArrayLike<number> | null = null;
  let bsShift = 0;
  if (w.kind === "nf4") {
    const { gate, up } = w;
    for (const [name, q] of [["gate", gate], ["up", up]] as const) {
      if (q.N !== N || q.K !== K) throw new Error(`gemvSwigluCpu: ${name} weight is [${q.N}, ${q.K}], expected [${N}, ${K}]`);
    }
    if (!sameNf4Format(gate, up)) throw new Error("gemvSwigluCpu: gate and up NF4 weights differ in blocksize or code table");
    cfg = gemvCpuConfig(M, lanes, gate.blocksize, K);
    code = gate.code;
    bsShift = Math.log2(gate.blocksize);
    bufs = [x, gate.packed, gate.scales, up.packed, up.scales, out];
  } else {
    for (const [name, b] of [["gate", w.gate], ["up", w.up]] as const) {
      if (b.bytes < N * K * 4) throw new Error(`gemvSwigluCpu: ${name} weight holds ${b.bytes} bytes, needs ${N * K * 4} for [${N}, ${K}] f32`);
    }
    cfg = gemvCpuConfig(M, lanes, 0, K);
    bufs = [x, w.gate, w.up, out];
  }
  const label = `gemv_swiglu_cpu_${w.kind}_tm${cfg.TM}_tn${cfg.TN}_w${cfg.W}${cfg.groupScale ? "_g" : ""}`;
  const kernel = gpu.kernel(label, gemvCpuText({ dtype: "f32", outDtype: "f32", cfg, code, pair: true }));
  gpu.dispatch(kernel, bufs, [Math.ceil(N / (cfg.W * cfg.TN)), Math.ceil(M / cfg.TM)], gemvCpuParams({ M, N, K, unit, bsShift }));
}
