// RMSNorm (Llama/Qwen2 style, with weight), forward and backward.
//
//   forward   r = 1 / sqrt(mean_j(x²) + eps)          (per row, f32; optionally stored for the backward)
//             y = x · r · w                            over rows of length H
//   backward  g = dy · w
//             dx = r · g − x · r³ · (Σ_j g_j x_j) / H  (dx may accumulate: the residual stream's gradient adds up)
//             dw = Σ_rows dy · x · r                   (may accumulate across micro-batches)
//
// Kernels. Forward: one workgroup per row; its threads stride over the row (vec4 loads when H % 4 == 0), a
// fixed-shape tree reduction in workgroup memory gives Σx² (no subgroups needed; deterministic), then the threads
// stride again to write y (the second read of x hits cache on GPUs). Backward: one workgroup per block of RB
// consecutive rows; per row the same reduction gives Σ g·x, then dx is written. dw without float atomics: each
// thread owns the same columns in every row of its block, so it accumulates dy·x·r for those columns straight into
// the block's partial row (a [blocks, H] scratch, first row "=", later rows "+="); `columnSum` then sums the
// partial rows over blocks in a fixed order. Workgroup size from `rowWorkgroup` (8 on CPU adapters, whose
// barriers are expensive; 64–256 on GPUs).
//
// Dtypes: x f32 (the residual stream) or f16 (e.g. per-head q/k norm of Qwen3 on f16 activations); y f32 or f16;
// w f32; the statistics (sum of squares, r) are f32 always; dy f32 or f16; dx f32 or f16; dw f32.
import type { Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import {
  columnSum, FLAT_WG, foldGrid, isCpuAdapter, requireBuffer, requireCount, requireF16, rowWorkgroup, treeReduceWgsl, vecType, vecWidth,
  type Dtype,
} from "./elementwise.js";

export interface RmsNormArgs {
  /** x [rows, H]. */
  x: GpuBuffer;
  /** w [H] f32. */
  w: GpuBuffer;
  /** y [rows, H]; must not alias x. */
  y: GpuBuffer;
  /** Optional per-row 1/rms [rows] f32, for the backward. */
  rstd?: GpuBuffer;
  rows: number;
  H: number;
  /** Qwen2.5: 1e-6. */
  eps: number;
  xDtype?: Dtype;
  outDtype?: Dtype;
  /** Threads per workgroup (power of two ≤ 256; default from `rowWorkgroup`). For tests and tuning. */
  workgroupSize?: number;
}

export interface RmsNormBackwardArgs {
  dy: GpuBuffer;
  x: GpuBuffer;
  w: GpuBuffer;
  /** The rstd the forward stored. */
  rstd: GpuBuffer;
  /** dx [rows, H]. */
  dx: GpuBuffer;
  /** dw [H] f32. */
  dw: GpuBuffer;
  rows: number;
  H: number;
  xDtype?: Dtype;
  dyDtype?: Dtype;
  dxDtype?: Dtype;
  /** dx += … instead of dx = … (default false). */
  accumulateDx?: boolean;
  /** dw += … instead of dw = … (default false). */
  accumulateDw?: boolean;
  /** Threads per workgroup (power of two ≤ 256; default from `rowWorkgroup`). For tests and tuning. */
  workgroupSize?: number;
}

const f16Header = (...d: Dtype[]) => (d.includes("f16") ? "enable f16;\n" : "");
const sumOf = (V: number, e: string) => (V === 4 ? `dot(${e}, vec4<f32>(1.0))` : e);

/**
 * The forward kernel. `residual` (f32 x only; residual-norm.ts): x ← x + R first, in place, and the norm is of the
 * sum; bindings X (read_write), R, W, Y, [Rstd], u instead of X, W, Y, [Rstd], u.
 */
export function rmsNormWgsl(o: { WG: number; V: number; xDtype: Dtype; outDtype: Dtype; withRstd: boolean; residual?: boolean }): string {
  const { WG, V, xDtype, outDtype, withRstd } = o;
  const F = vecType("f32", V);
  const res = o.residual ?? false;
  const binds = [
    `var<storage, ${res ? "read_write" : "read"}> X: array<${vecType(xDtype, V)}>;`,
    ...(res ? [`var<storage, read> R: array<${F}>;`] : []),
    `var<storage, read> W: array<${F}>;`,
    `var<storage, read_write> Y: array<${vecType(outDtype, V)}>;`,
    ...(withRstd ? ["var<storage, read_write> Rstd: array<f32>;"] : []),
    "var<uniform> u: Params;",
  ];
  return /* wgsl */ `
${f16Header(xDtype, outDtype)}
struct Params { rows: u32, H: u32, Hv: u32, eps: f32 }
${binds.map((b, i) => `@group(0) @binding(${i}) ${b}`).join("\n")}
var<workgroup> red: array<f32, ${WG}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = ${FLAT_WG};
  if (row >= u.rows) { return; }
  let base = row * u.Hv;
  var ss = ${F}(0.0);
  for (var j = lid; j < u.Hv; j += ${WG}u) {
    let v = ${F}(X[base + j])${res ? " + R[base + j];\n    X[base + j] = v" : ""};
    ss = fma(v, v, ss);
  }
  red[lid] = ${sumOf(V, "ss")};
${treeReduceWgsl(WG)}
  let r = 1.0 / sqrt(red[0] / f32(u.H) + u.eps);
  ${withRstd ? "if (lid == 0u) { Rstd[row] = r; }" : ""}
  for (var j = lid; j < u.Hv; j += ${WG}u) {
    Y[base + j] = ${vecType(outDtype, V)}(${F}(X[base + j]) * r * W[j]);
  }
}
`;
}

export function rmsNormBackwardWgsl(o: { WG: number; V: number; xDtype: Dtype; dyDtype: Dtype; dxDtype: Dtype; accumulateDx: boolean }): string {
  const { WG, V, xDtype, dyDtype, dxDtype, accumulateDx } = o;
  const F = vecType("f32", V);
  return /* wgsl */ `
${f16Header(xDtype, dyDtype, dxDtype)}
struct Params { rows: u32, H: u32, Hv: u32, rowsPerBlock: u32 }
@group(0) @binding(0) var<storage, read> dY: array<${vecType(dyDtype, V)}>;
@group(0) @binding(1) var<storage, read> X: array<${vecType(xDtype, V)}>;
@group(0) @binding(2) var<storage, read> W: array<${F}>;
@group(0) @binding(3) var<storage, read> Rstd: array<f32>;
@group(0) @binding(4) var<storage, read_write> dX: array<${vecType(dxDtype, V)}>;
@group(0) @binding(5) var<storage, read_write> dWPartial: array<${F}>;
@group(0) @binding(6) var<uniform> u: Params;
var<workgroup> red: array<f32, ${WG}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let block = ${FLAT_WG};
  let r0 = block * u.rowsPerBlock;
  if (r0 >= u.rows) { return; }
  let r1 = min(r0 + u.rowsPerBlock, u.rows);
  let invH = 1.0 / f32(u.H);
  let pb = block * u.Hv;
  for (var row = r0; row < r1; row++) {
    let base = row * u.Hv;
    let r = Rstd[row];
    var d = ${F}(0.0);
    for (var j = lid; j < u.Hv; j += ${WG}u) {
      d = fma(${F}(dY[base + j]) * W[j], ${F}(X[base + j]), d);
    }
    red[lid] = ${sumOf(V, "d")};
${treeReduceWgsl(WG, "    ")}
    // Ordered so every intermediate stays near the result's scale (r³ alone underflows f32 for |x| ≳ 1e13).
    let coef = (((red[0] * r) * invH) * r) * r;
    workgroupBarrier(); // everyone has read red[0] before the next row overwrites it
    let first = row == r0;
    for (var j = lid; j < u.Hv; j += ${WG}u) {
      let xv = ${F}(X[base + j]);
      let dv = ${F}(dY[base + j]);
      var v = r * dv * W[j] - coef * xv;
      ${accumulateDx ? `v += ${F}(dX[base + j]);` : ""}
      dX[base + j] = ${vecType(dxDtype, V)}(v);
      let pw = dv * (xv * r);
      if (first) { dWPartial[pb + j] = pw; } else { dWPartial[pb + j] = dWPartial[pb + j] + pw; }
    }
  }
}
`;
}

function commonChecks(who: string, rows: number, H: number) {
  requireCount(who, "rows", rows);
  requireCount(who, "H", H);
  if (rows * H > 2 ** 32 - 1) throw new Error(`${who}: rows·H = ${rows * H} overflows 32-bit indexing; split the rows`);
}

/** Record y = rmsnorm(x)·w (and rstd when given). */
export function rmsNorm(gpu: Gpu, args: RmsNormArgs): void {
  const who = "rmsNorm";
  const { rows, H, eps } = args;
  const xDtype = args.xDtype ?? "f32";
  const outDtype = args.outDtype ?? "f32";
  commonChecks(who, rows, H);
  if (!(eps >= 0 && Number.isFinite(eps))) throw new Error(`${who}: eps must be a finite number ≥ 0 (got ${eps})`);
  requireF16(gpu, who, xDtype, outDtype);
  const shape = `rows=${rows} H=${H}`;
  requireBuffer(gpu, who, "x", args.x, rows * H, xDtype, shape);
  requireBuffer(gpu, who, "w", args.w, H, "f32", shape);
  requireBuffer(gpu, who, "y", args.y, rows * H, outDtype, shape);
  if (args.rstd) requireBuffer(gpu, who, "rstd", args.rstd, rows, "f32", shape);
  if (args.y.buffer === args.x.buffer) throw new Error(`${who}: y must not alias x`);
  const V = vecWidth(H);
  const WG = rowWorkgroup(gpu, H / V, args.workgroupSize);
  const withRstd = !!args.rstd;
  const label = `rmsnorm_${xDtype}_${outDtype}_wg${WG}_v${V}${withRstd ? "_rstd" : ""}`;
  const kernel = gpu.kernel(label, rmsNormWgsl({ WG, V, xDtype, outDtype, withRstd }));
  const params = new ArrayBuffer(16);
  new Uint32Array(params).set([rows, H, H / V]);
  new Float32Array(params)[3] = eps;
  const bufs = withRstd ? [args.x, args.w, args.y, args.rstd!] : [args.x, args.w, args.y];
  gpu.dispatch(kernel, bufs, foldGrid(gpu, rows), params);
}

/**
 * Rows per backward workgroup: enough blocks to fill the device (~256 on a GPU, 16 on a CPU adapter), few enough
 * partial rows for dw.
 */
export function rmsNormBackwardRowsPerBlock(gpu: Gpu, rows: number): number {
  return Math.max(1, Math.ceil(rows / (isCpuAdapter(gpu) ? 16 : 256)));
}

/** Record dx (=, or +=) and dw (=, or +=) of y = rmsnorm(x)·w. */
export function rmsNormBackward(gpu: Gpu, args: RmsNormBackwardArgs): void {
  const who = "rmsNormBackward";
  const { rows, H } = args;
  const xDtype = args.xDtype ?? "f32";
  const dyDtype = args.dyDtype ?? "f32";
  const dxDtype = args.dxDtype ?? "f32";
  const accumulateDx = args.accumulateDx ?? false;
  commonChecks(who, rows, H);
  requireF16(gpu, who, xDtype, dyDtype, dxDtype);
  const shape = `rows=${rows} H=${H}`;
  requireBuffer(gpu, who, "dy", args.dy, rows * H, dyDtype, shape);
  requireBuffer(gpu, who, "x", args.x, rows * H, xDtype, shape);
  requireBuffer(gpu, who, "w", args.w, H, "f32", shape);
  requireBuffer(gpu, who, "rstd", args.rstd, rows, "f32", shape);
  requireBuffer(gpu, who, "dx", args.dx, rows * H, dxDtype, shape);
  requireBuffer(gpu, who, "dw", args.dw, H, "f32", shape);
  const ins = [args.dy, args.x, args.w, args.rstd].map((b) => b.buffer);
  if (ins.includes(args.dx.buffer) || ins.includes(args.dw.buffer) || args.dx.buffer === args.dw.buffer) {
    throw new Error(`${who}: dx and dw must be distinct from each other and from the inputs`);
  }
  const V = vecWidth(H);
  const WG = rowWorkgroup(gpu, H / V, args.workgroupSize);
  const rowsPerBlock = rmsNormBackwardRowsPerBlock(gpu, rows);
  const blocks = Math.ceil(rows / rowsPerBlock);
  const partial = gpu.alloc(blocks * H * 4, "rmsnorm_dw_partials");
  const label = `rmsnorm_bwd_${xDtype}_${dyDtype}_${dxDtype}_wg${WG}_v${V}${accumulateDx ? "_acc" : ""}`;
  const kernel = gpu.kernel(label, rmsNormBackwardWgsl({ WG, V, xDtype, dyDtype, dxDtype, accumulateDx }));
  gpu.dispatch(kernel, [args.dy, args.x, args.w, args.rstd, args.dx, partial], foldGrid(gpu, blocks), new Uint32Array([rows, H, H / V, rowsPerBlock]));
  columnSum(gpu, { x: partial, out: args.dw, M: blocks, N: H, accumulate: args.accumulateDw ?? false });
  // Safe to hand back now: any later user of this buffer is recorded (or, for gpu.write, submitted) after us.
  gpu.release(partial);
}

/** float64 reference: y and the per-row rstd. */
export function rmsNormReference(x: ArrayLike<number>, w: ArrayLike<number>, rows: number, H: number, eps: number): { y: Float64Array; rstd: Float64Array } {
  const y = new Float64Array(rows * H);
  const rstd = new Float64Array(rows);
  for (let m = 0; m < rows; m++) {
    let ss = 0;
    for (let j = 0; j < H; j++) ss += x[m * H + j] * x[m * H + j];
    const r = 1 / Math.sqrt(ss / H + eps);
    rstd[m] = r;
    for (let j = 0; j < H; j++) y[m * H + j] = x[m * H + j] * r * w[j];
  }
  return { y, rstd };
}

/** float64 reference backward (recomputes rstd from x in float64). */
export function rmsNormBackwardReference(
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  rows: number,
  H: number,
  eps: number,
): { dx: Float64Array; dw: Float64Array } {
  const { rstd } = rmsNormReference(x, w, rows, H, eps);
  const dx = new Float64Array(rows * H);
  const dw = new Float64Array(H);
  for (let m = 0; m < rows; m++) {
    const r = rstd[m];
    let dotp = 0;
    for (let j = 0; j < H; j++) dotp += dy[m * H + j] * w[j] * x[m * H + j];
    const coef = (r * r * r * dotp) / H;
    for (let j = 0; j < H; j++) {
      const i = m * H + j;
      dx[i] = r * dy[i] * w[j] - coef * x[i];
      dw[j] += dy[i] * x[i] * r;
    }
  }
  return { dx, dw };
}
