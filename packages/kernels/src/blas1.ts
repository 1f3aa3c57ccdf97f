// Level-1 vector ops the autograd engine needs for gradient accumulation: y += alpha·x (f32).
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
