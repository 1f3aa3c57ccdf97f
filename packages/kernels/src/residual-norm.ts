// Residual add fused with the RMSNorm that follows it (generation only: no backward).
//
//   x ← x + r          (the residual stream after a sub-layer, updated in place)
//   y = x · w / sqrt(mean_j(x²) + eps)
//
// A decoder layer ends its attention and its MLP with exactly this pair (x1 = x + attn; h = rmsnorm(x1)), and at
// batch 1 a decode step costs per dispatch, not per flop (a 4-layer step recorded ~80 dispatches for ~10 MFLOP), so
// one dispatch instead of two per pair. The kernel is norm.ts's RMSNorm forward in its `residual` mode: its first pass
// over the row adds R into x and writes x back, and each thread re-reads only the x values it wrote itself, so the
// second pass needs no barrier beyond the reduction's. In place because WebGPU forbids two writable bindings of one
// buffer.
import type { Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import { memoWgsl } from "./wgsl-cache.js";
import { foldGrid, requireBuffer, requireCount, rowWorkgroup, vecWidth } from "./elementwise.js";
import { rmsNormWgsl } from "./norm.js";

export interface AddRmsNormArgs {
  /** Residual stream x [rows, H] f32: x ← x + r. */
  x: GpuBuffer;
  /** Sub-layer output r [rows, H] f32. */
  r: GpuBuffer;
  /** Norm weight [H] f32. */
  w: GpuBuffer;
  /** y = rmsnorm(x + r)·w [rows, H] f32. */
  y: GpuBuffer;
  rows: number;
  H: number;
  eps: number;
}

const addRmsNormText = memoWgsl((o: { WG: number; V: number }) => rmsNormWgsl({ ...o, xDtype: "f32", outDtype: "f32", withRstd: false, residual: true }));

/** Record x ← x + r and y = rmsnorm(x)·w in one dispatch. */
export function addRmsNorm(gpu: Gpu, a: AddRmsNormArgs): void {
  const who = "addRmsNorm";
  const { rows, H, eps } = a;
  requireCount(who, "rows", rows);
  requireCount(who, "H", H);
  if (!(eps >= 0 && Number.isFinite(eps))) throw new Error(`${who}: eps must be a finite number ≥ 0 (got ${eps})`);
  const shape = `rows=${rows} H=${H}`;
  for (const [name, buf] of [["x", a.x], ["r", a.r], ["y", a.y]] as const) requireBuffer(gpu, who, name, buf, rows * H, "f32", shape);
  requireBuffer(gpu, who, "w", a.w, H, "f32", shape);
  if (new Set([a.x.buffer, a.r.buffer, a.y.buffer]).size < 3) throw new Error(`${who}: x, r and y must be distinct buffers`);
  const V = vecWidth(H);
  const WG = rowWorkgroup(gpu, H / V);
  const params = new ArrayBuffer(16);
  new Uint32Array(params).set([rows, H, H / V]);
  new Float32Array(params)[3] = eps;
  gpu.dispatch(gpu.kernel(`add_rmsnorm_wg${WG}_v${V}`, addRmsNormText({ WG, V })), [a.x, a.r, a.w, a.y], foldGrid(gpu, rows), params);
}

/** float64 reference: { sum: x + r, y }. */
export function addRmsNormReference(x: ArrayLike<number>, r: ArrayLike<number>, w: ArrayLike<number>, rows: number, H: number, eps: number): { sum: Float64Array; y: Float64Array } {
  const sum = Float64Array.from(x, (v, i) => v + r[i]);
  const y = new Float64Array(sum.length);
  for (let i = 0; i < rows; i++) {
    let ss = 0;
    for (let j = 0; j < H; j++) ss += sum[i * H + j] ** 2;
    const rs = 1 / Math.sqrt(ss / H + eps);
    for (let j = 0; j < H; j++) y[i * H + j] = sum[i * H + j] * rs * w[j];
  }
  return { sum, y };
}
