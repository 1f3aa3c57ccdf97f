// Level-1 vector ops the autograd engine needs: y += alpha·x (gradient accumulation) and out = a ∘ b (masks).
import type { Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";

const WG = 256;

export function axpyWgsl(): string {
  return /* wgsl */ `
struct Params { n: u32, rowStride: u32, alpha: f32, pad: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> u: Params;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3u) {
  let i = g.y * u.rowStride + g.x;
  if (i < u.n) { y[i] = fma(u.alpha, x[i], y[i]); }
}
`;
}

/** Record y += alpha·x over n f32 elements. */
export function axpy(gpu: Gpu, args: { x: GpuBuffer; y: GpuBuffer; n: number; alpha?: number }): void {
  const { x, y, n } = args;
  if (!Number.isInteger(n) || n < 0) throw new Error(`axpy: n must be a non-negative integer (got ${n})`);
  if (x.bytes < n * 4 || y.bytes < n * 4) throw new Error(`axpy: x holds ${x.bytes} bytes and y ${y.bytes}, both need ${n * 4}`);
  if (n === 0) return;
  // Fold the grid into y so dispatch dims stay under maxComputeWorkgroupsPerDimension.
  const groups = Math.ceil(n / WG);
  const gx = Math.min(groups, 32768);
  const gy = Math.ceil(groups / gx);
  const params = new ArrayBuffer(16);
  new Uint32Array(params).set([n, gx * WG]);
  new Float32Array(params)[2] = args.alpha ?? 1;
  gpu.dispatch(gpu.kernel("axpy_f32", axpyWgsl()), [x, y], [gx, gy], params);
}

export function axpyReference(alpha: number, x: ArrayLike<number>, y: ArrayLike<number>): Float64Array {
  return Float64Array.from(y, (v, i) => v + alpha * x[i]);
}

export function mulWgsl(): string {
  return /* wgsl */ `
struct Params { n: u32, rowStride: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> u: Params;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3u) {
  let i = g.y * u.rowStride + g.x;
  if (i < u.n) { out[i] = a[i] * b[i]; }
}
`;
}

/** Record out = a ∘ b over n f32 elements (out may not alias a or b). */
export function mul(gpu: Gpu, args: { a: GpuBuffer; b: GpuBuffer; out: GpuBuffer; n: number }): void {
  const { a, b, out, n } = args;
  if (!Number.isInteger(n) || n < 0) throw new Error(`mul: n must be a non-negative integer (got ${n})`);
  if (a.bytes < n * 4 || b.bytes < n * 4 || out.bytes < n * 4) throw new Error(`mul: a, b and out must each hold ${n * 4} bytes`);
  if (out.buffer === a.buffer || out.buffer === b.buffer) throw new Error("mul: out aliases an input");
  if (n === 0) return;
  const groups = Math.ceil(n / WG);
  const gx = Math.min(groups, 32768);
  gpu.dispatch(gpu.kernel("mul_f32", mulWgsl()), [a, b, out], [gx, Math.ceil(groups / gx)], new Uint32Array([n, gx * WG, 0, 0]));
}
