// RMSNorm (Llama/Qwen2 style, with weight), forward and backward.
//
//   forward   r = 1 / sqrt(mean_j(x²) + eps)          (per row, f32; optionally stored for the backward)
//             y = x · r · w                            over rows of length H
//   backward  g = dy · w
//             dx = r · g − x · r³ · (Σ_j g_j x_j) / H  (dx may accumulate: the residual stream's gradient adds up)
//             dw = Σ_rows dy · x · r                   (may accumulate across micro-batches)
//
// Kernels. One workgroup per row (forward) or per block of RB consecutive rows (backward); WG threads each own CPT
// columns j = lid + c·WG kept in registers (WG/CPT from `rowLayout(H)`: compile-time constants, one pipeline per
// distinct H bucket), so x is read once. The row reductions are fixed-shape tree reductions in workgroup memory
// (no subgroups needed, deterministic). dw without float atomics: the backward workgroup of a row block adds
// dy·x·r of its RB rows into registers and writes one partial row [H] to a scratch [blocks, H]; `columnSum` then
// sums the partials over blocks in a fixed order (two more deterministic passes at most).
//
// Dtypes: x f32 (the residual stream) or f16 (e.g. per-head q/k norm of Qwen3 on f16 activations); y f32 or f16;
// w f32; the statistics (sum of squares, r) are f32 always; dy f32 or f16; dx f32 or f16; dw f32.
import type { Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import { columnSum, FLAT_WG, foldGrid, requireBuffer, requireCount, requireF16, rowLayout, type Dtype } from "./elementwise.js";

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
}

const f16Header = (...d: Dtype[]) => (d.includes("f16") ? "enable f16;\n" : "");

/** WGSL: tree-reduce `red[0..WG)` into red[0] (callers barrier before reading red[0] — included here). */
function treeReduce(WG: number): string {
  const steps: string[] = [];
  for (let s = WG / 2; s >= 1; s /= 2) {
    steps.push(`  if (lid < ${s}u) { red[lid] = red[lid] + red[lid + ${s}u]; }\n  workgroupBarrier();`);
  }
  return `  workgroupBarrier();\n${steps.join("\n")}`;
}

export function rmsNormWgsl(o: { WG: number; CPT: number; xDtype: Dtype; outDtype: Dtype; withRstd: boolean }): string {
  const { WG, CPT, xDtype, outDtype, withRstd } = o;
  return /* wgsl */ `
${f16Header(xDtype, outDtype)}
struct Params { rows: u32, H: u32, eps: f32, p0: u32 }
@group(0) @binding(0) var<storage, read> X: array<${xDtype}>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<${outDtype}>;
${withRstd ? `@group(0) @binding(3) var<storage, read_write> Rstd: array<f32>;
@group(0) @binding(4) var<uniform> u: Params;` : `@group(0) @binding(3) var<uniform> u: Params;`}
var<workgroup> red: array<f32, ${WG}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = ${FLAT_WG};
  if (row >= u.rows) { return; }
  let base = row * u.H;
  var xs: array<f32, ${CPT}>;
  var ss = 0.0;
  for (var c = 0u; c < ${CPT}u; c++) {
    let j = lid + c * ${WG}u;
    var v = 0.0;
    if (j < u.H) { v = f32(X[base + j]); }
    xs[c] = v;
    ss = fma(v, v, ss);
  }
  red[lid] = ss;
${treeReduce(WG)}
  let r = 1.0 / sqrt(red[0] / f32(u.H) + u.eps);
  ${withRstd ? "if (lid == 0u) { Rstd[row] = r; }" : ""}
  for (var c = 0u; c < ${CPT}u; c++) {
    let j = lid + c * ${WG}u;
    if (j < u.H) { Y[base + j] = ${outDtype}(xs[c] * r * W[j]); }
  }
}
`;
}

export function rmsNormBackwardWgsl(o: { WG: number; CPT: number; xDtype: Dtype; dyDtype: Dtype; dxDtype: Dtype; accumulateDx: boolean }): string {
  const { WG, CPT, xDtype, dyDtype, dxDtype, accumulateDx } = o;
  return /* wgsl */ `
${f16Header(xDtype, dyDtype, dxDtype)}
struct Params { rows: u32, H: u32, rowsPerBlock: u32, p0: u32 }
@group(0) @binding(0) var<storage, read> dY: array<${dyDtype}>;
@group(0) @binding(1) var<storage, read> X: array<${xDtype}>;
@group(0) @binding(2) var<storage, read> W: array<f32>;
@group(0) @binding(3) var<storage, read> Rstd: array<f32>;
@group(0) @binding(4) var<storage, read_write> dX: array<${dxDtype}>;
@group(0) @binding(5) var<storage, read_write> dWPartial: array<f32>;
@group(0) @binding(6) var<uniform> u: Params;
var<workgroup> red: array<f32, ${WG}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let block = ${FLAT_WG};
  let r0 = block * u.rowsPerBlock;
  if (r0 >= u.rows) { return; }
  let r1 = min(r0 + u.rowsPerBlock, u.rows);
  let invH = 1.0 / f32(u.H);
  var ws: array<f32, ${CPT}>;
  var dwAcc: array<f32, ${CPT}>;
  for (var c = 0u; c < ${CPT}u; c++) {
    let j = lid + c * ${WG}u;
    var v = 0.0;
    if (j < u.H) { v = W[j]; }
    ws[c] = v;
    dwAcc[c] = 0.0;
  }
  for (var row = r0; row < r1; row++) {
    let base = row * u.H;
    let r = Rstd[row];
    var xs: array<f32, ${CPT}>;
    var dys: array<f32, ${CPT}>;
    var dotp = 0.0;
    for (var c = 0u; c < ${CPT}u; c++) {
      let j = lid + c * ${WG}u;
      var xv = 0.0;
      var dv = 0.0;
      if (j < u.H) { xv = f32(X[base + j]); dv = f32(dY[base + j]); }
      xs[c] = xv;
      dys[c] = dv;
      dotp = fma(dv * ws[c], xv, dotp);
      dwAcc[c] = fma(dv, xv * r, dwAcc[c]);
    }
    red[lid] = dotp;
${treeReduce(WG)}
    // Ordered so every intermediate stays near the result's scale (r³ alone underflows f32 for |x| ≳ 1e13).
    let coef = (((red[0] * r) * invH) * r) * r;
    workgroupBarrier(); // everyone has read red[0] before the next row overwrites it
    for (var c = 0u; c < ${CPT}u; c++) {
      let j = lid + c * ${WG}u;
      if (j < u.H) {
        var v = r * dys[c] * ws[c] - coef * xs[c];
        ${accumulateDx ? "v += f32(dX[base + j]);" : ""}
        dX[base + j] = ${dxDtype}(v);
      }
    }
  }
  let pb = block * u.H;
  for (var c = 0u; c < ${CPT}u; c++) {
    let j = lid + c * ${WG}u;
    if (j < u.H) { dWPartial[pb + j] = dwAcc[c]; }
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
  const { WG, CPT } = rowLayout(H, who);
  const withRstd = !!args.rstd;
  const label = `rmsnorm_${xDtype}_${outDtype}_wg${WG}_c${CPT}${withRstd ? "_rstd" : ""}`;
  const kernel = gpu.kernel(label, rmsNormWgsl({ WG, CPT, xDtype, outDtype, withRstd }));
  const params = new ArrayBuffer(16);
  new Uint32Array(params).set([rows, H]);
  new Float32Array(params)[2] = eps;
  const bufs = withRstd ? [args.x, args.w, args.y, args.rstd!] : [args.x, args.w, args.y];
  gpu.dispatch(kernel, bufs, foldGrid(gpu, rows), params);
}

/** Rows per backward workgroup: enough blocks (~256) to fill a big GPU, few enough partial rows for dw. */
export function rmsNormBackwardRowsPerBlock(rows: number): number {
  return Math.max(1, Math.ceil(rows / 256));
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
  const { WG, CPT } = rowLayout(H, who);
  const rowsPerBlock = rmsNormBackwardRowsPerBlock(rows);
  const blocks = Math.ceil(rows / rowsPerBlock);
  const partial = gpu.alloc(blocks * H * 4, "rmsnorm_dw_partials");
  const label = `rmsnorm_bwd_${xDtype}_${dyDtype}_${dxDtype}_wg${WG}_c${CPT}${accumulateDx ? "_acc" : ""}`;
  const kernel = gpu.kernel(label, rmsNormBackwardWgsl({ WG, CPT, xDtype, dyDtype, dxDtype, accumulateDx }));
  gpu.dispatch(kernel, [args.dy, args.x, args.w, args.rstd, args.dx, partial], foldGrid(gpu, blocks), new Uint32Array([rows, H, rowsPerBlock, 0]));
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
