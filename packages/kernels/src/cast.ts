// Dtype conversion between f32 and f16 buffers: out[i] = to(x[i]).
//
//   f32 → f16  WGSL's conversion: one of the two neighbouring f16 values (WGSL leaves the choice to the
//              implementation; lavapipe rounds to nearest even, see cast.test.ts). |x| ≥ 65536 becomes ±Inf (WGSL
//              requires it; values in (65504, 65536) may become ±65504 or ±Inf), f16 subnormal results may be flushed
//              to ±0, values below 2⁻²⁵ in magnitude become ±0. As PyTorch's `tensor.half()`, an overflowing
//              activation turns into ±Inf and shows up downstream (NaN/Inf loss) — it is never clamped silently.
//   f16 → f32  exact widening.
// Used by the f16 weight path of the model: activations are cast to f16 right before a matmul with f16 weights
// (@nr/autograd linearF16), and f16 weights are widened to f32 for the input-gradient product.
import type { Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import { FLAT_WG, foldGrid, requireBuffer, requireCount, requireF16, vecType, vecWidth, type Dtype } from "./elementwise.js";
import { f16BitsToF32, f32ToF16Bits } from "./runtime/device.js";

const WG = 256;

export interface CastArgs {
  x: GpuBuffer;
  out: GpuBuffer;
  n: number;
  from: Dtype;
  to: Dtype;
}

export function castWgsl(o: { from: Dtype; to: Dtype; V: number }): string {
  const { from, to, V } = o;
  return /* wgsl */ `
enable f16;
struct Params { n: u32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<storage, read> X: array<${vecType(from, V)}>;
@group(0) @binding(1) var<storage, read_write> Y: array<${vecType(to, V)}>;
@group(0) @binding(2) var<uniform> u: Params;

// One invocation per ${V === 4 ? "vec4" : "element"}; u.n counts them.
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = ${FLAT_WG} * ${WG}u + lid;
  if (i >= u.n) { return; }
  Y[i] = ${vecType(to, V)}(X[i]);
}
`;
}

/** Record out = cast(x) over n elements (f32 ↔ f16; needs shader-f16). */
export function cast(gpu: Gpu, args: CastArgs): void {
  const who = "cast";
  const { n, from, to } = args;
  requireCount(who, "n", n);
  if (from === to) throw new Error(`${who}: from and to are both ${from}; copy the buffer instead`);
  requireF16(gpu, who, from, to);
  requireBuffer(gpu, who, "x", args.x, n, from, `n=${n}`);
  requireBuffer(gpu, who, "out", args.out, n, to, `n=${n}`);
  if (args.x.buffer === args.out.buffer) throw new Error(`${who}: out aliases x (the dtypes differ in size; cast into another buffer)`);
  // vec4 needs n % 4 == 0: a vec4<f16> is 8 bytes, so the f16 side stays aligned.
  const V = vecWidth(n);
  const kernel = gpu.kernel(`cast_${from}_${to}_v${V}`, castWgsl({ from, to, V }));
  const nv = n / V;
  gpu.dispatch(kernel, [args.x, args.out], foldGrid(gpu, Math.ceil(nv / WG)), new Uint32Array([nv, 0, 0, 0]));
}

/** Host reference: round-to-nearest-even f32 → f16 (values are first taken as f32), or exact widening. */
export function castReference(x: ArrayLike<number>, to: Dtype): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = to === "f16" ? f16BitsToF32(f32ToF16Bits(x[i])) : Math.fround(x[i]);
  return out;
}
