// Residual add fused with the RMSNorm that follows it (generation only: no backward).
//
//   x ← x + r          (the residual stream after a sub-layer, updated in place)
//   y = x · w / sqrt(mean_j(x²) + eps)
//
// A decoder layer ends its attention and its MLP with exactly this pair (x1 = x + attn; h = rmsnorm(x1)), and at
// batch 1 a decode step costs per dispatch, not per flop (a 4-layer step recorded ~80 dispatches for ~10 MFLOP), so
// one dispatch instead of two per pair. One workgroup per row, threads striding over the row (vec4 when H % 4 == 0),
// a tree reduction of Σx² in workgroup memory; each thread re-reads only the x values it wrote itself, so the second
// pass needs no barrier beyond the reduction's. In place because WebGPU forbids two writable bindings of one buffer.
import type { Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import { memoWgsl } from "./wgsl-cache.js";
import { FLAT_WG, foldGrid, requireBuffer, requireCount, rowWorkgroup, treeReduceWgsl, vecType, vecWidth } from "./elementwise.js";

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

export function addRmsNormWgsl(o: { WG: number; V: number }): string {
  const { WG, V } = o;
  const F = vecType("f32", V);
  return /* wgsl */ `
struct Params { rows: u32, H: u32, Hv: u32, eps: f32 }
@group(0) @binding(0) var<storage, read_write> X: array<${F}>;
@group(0) @binding(1) var<storage, read> R: array<${F}>;
@group(0) @binding(2) var<storage, read> W: array<${F}>;
@group(0) @binding(3) var<storage, read_write> Y: array<${F}>;
@group(0) @binding(4) var<uniform> u: Params;
var<workgroup> red: array<f32, ${WG}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = ${FLAT_WG};
  if (row >= u.rows) { return; }
  let base = row * u.Hv;
  var ss = ${F}(0.0);
  for (var j = lid; j < u.Hv; j += ${WG}u) {
    let s = X[base + j] + R[base + j];
    X[base + j] = s;
    ss = fma(s, s, ss);
  }
  red[lid] = ${V === 4 ? "dot(ss, vec4<f32>(1.0))" : "ss"};
${treeReduceWgsl(WG)}
  let rs = 1.0 / sqrt(red[0] / f32(u.H) + u.eps);
  for (var j = lid; j < u.Hv; j += ${WG}u) {
    Y[base + j] = X[base + j] * rs * W[j];
  }
}
`;
}

const addRmsNormText = memoWgsl(addRmsNormWgsl);

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
