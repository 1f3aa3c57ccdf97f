// Optimizer family: AdamW over a flat f32 parameter arena, global gradient norm and clip-by-norm with the norm kept
// on the GPU (no readback inside a step), and the small fill / scale / cast kernels a trainer needs.
//
//  adamW        PyTorch semantics (torch.optim.AdamW, decoupled weight decay, bias correction), per element:
//                 p ← p·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
//                 p ← p − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + eps)
//               params, grads, m, v: f32 [n]; t, lr, betas, eps, wd in a uniform (bias corrections computed on the
//               host in float64). Optional `gradScale`: a 1-element f32 buffer multiplied into g (e.g. 1/loss-scale);
//               clip with `clipByNorm` first.
//  gradNorm     ‖g‖₂ by a two-pass reduction (per-workgroup partial sums of squares, then one workgroup) into a
//               1-element f32 buffer that stays on the GPU.
//  clipByNorm   g ← g · min(1, maxNorm / (‖g‖ + 1e-6)) reading ‖g‖ from that buffer (torch.nn.utils.clip_grad_norm_).
//  fill / scale f32, u32 and f16 fill; in-place f32 scale.
//  casts        f32→f16 (round to nearest even, overflow → ±inf, NaN kept, f16 subnormals), f16→f32, bf16→f32 and
//               bf16→f16, all with integer bit arithmetic, so they are exact / bit-identical to the host
//               `f32ToF16Bits` and need no shader-f16. 16-bit tensors are packed two per u32 word, element 2i in the
//               low half; with an odd count the unused high half of the last word is preserved.
import { f32ToF16Bits, type Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";

const WG = 256;
const MAX_WG = 4096;

const elemGrid = (n: number): [number, number, number] => [Math.max(1, Math.min(Math.ceil(n / WG), MAX_WG)), 1, 1];

function checkCount(name: string, n: number) {
  if (!(Number.isInteger(n) && n > 0)) throw new Error(`${name}: count must be a positive integer (got ${n})`);
  if (n >= 2 ** 32) throw new Error(`${name}: count must be below 2^32 (got ${n})`);
}
function needBytes(name: string, what: string, buf: GpuBuffer | undefined, bytes: number) {
  if (buf && buf.bytes < bytes) throw new Error(`${name}: ${what} holds ${buf.bytes} bytes, needs ${bytes}`);
}

// ---------------------------------------------------------------------------------------------------------
// AdamW

export interface AdamWArgs {
  params: GpuBuffer;
  grads: GpuBuffer;
  m: GpuBuffer;
  v: GpuBuffer;
  /** Number of f32 elements. */
  n: number;
  /** 1-based step count (after this update). */
  step: number;
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Optional 1-element f32 buffer multiplied into every gradient. */
  gradScale?: GpuBuffer;
}

export function adamWWgsl(): string {
  return /* wgsl */ `
struct Params { n: u32, useScale: u32, p0: u32, p1: u32,
                lr: f32, beta1: f32, beta2: f32, eps: f32,
                decay: f32, stepSize: f32, bc2sqrt: f32, p2: f32 }
@group(0) @binding(0) var<storage, read_write> params: array<f32>;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> scale: array<f32>;
@group(0) @binding(5) var<uniform> u: Params;

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let gs = select(1.0, scale[0], u.useScale != 0u);
  for (var i = gid.x; i < u.n; i += nwg.x * ${WG}u) {
    let g = grads[i] * gs;
    let mi = u.beta1 * m[i] + (1.0 - u.beta1) * g;
    let vi = u.beta2 * v[i] + (1.0 - u.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    let p = params[i] * u.decay;
    params[i] = p - u.stepSize * mi / (sqrt(vi) / u.bc2sqrt + u.eps);
  }
}
`;
}

/** Record one AdamW step over the arena. */
export function adamW(gpu: Gpu, a: AdamWArgs): void {
  const name = "adamW";
  checkCount(name, a.n);
  if (!(Number.isInteger(a.step) && a.step >= 1)) throw new Error(`${name}: step must be an integer ≥ 1 (got ${a.step})`);
  const beta1 = a.beta1 ?? 0.9;
  const beta2 = a.beta2 ?? 0.999;
  const eps = a.eps ?? 1e-8;
  const wd = a.weightDecay ?? 0.01;
  if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1)) throw new Error(`${name}: betas must be in [0, 1) (got ${beta1}, ${beta2})`);
  if (!(a.lr >= 0 && eps >= 0 && wd >= 0) || ![a.lr, eps, wd].every(Number.isFinite)) throw new Error(`${name}: lr, eps and weightDecay must be finite and ≥ 0`);
  for (const [k, b] of [["params", a.params], ["grads", a.grads], ["m", a.m], ["v", a.v]] as const) needBytes(name, k, b, a.n * 4);
  needBytes(name, "gradScale", a.gradScale, 4);
  const bc1 = 1 - beta1 ** a.step;
  const bc2 = 1 - beta2 ** a.step;
  const p = new ArrayBuffer(48);
  const pu = new Uint32Array(p);
  const pf = new Float32Array(p);
  pu[0] = a.n;
  pu[1] = a.gradScale ? 1 : 0;
  pf.set([a.lr, beta1, beta2, eps, 1 - a.lr * wd, a.lr / bc1, Math.sqrt(bc2)], 4);
  const k = gpu.kernel("adamw", adamWWgsl());
  gpu.dispatch(k, [a.params, a.grads, a.m, a.v, a.gradScale ?? a.grads], elemGrid(a.n), p);
}

// ---------------------------------------------------------------------------------------------------------
// Gradient norm and clipping

export function sumSquaresWgsl(): string {
  return /* wgsl */ `
struct Params { n: u32, offset: u32, p0: u32, p1: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
@group(0) @binding(2) var<uniform> u: Params;
var<workgroup> r: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  var s = 0.0;
  for (var i = gid.x; i < u.n; i += nwg.x * ${WG}u) {
    let g = x[u.offset + i];
    s = fma(g, g, s);
  }
  r[lid] = s;
  for (var st = ${WG / 2}u; st > 0u; st >>= 1u) {
    workgroupBarrier();
    if (lid < st) { r[lid] += r[lid + st]; }
  }
  if (lid == 0u) { partial[wg.x] = r[0]; }
}
`;
}

export function normFinishWgsl(): string {
  return /* wgsl */ `
struct Params { parts: u32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> outv: array<f32>;
@group(0) @binding(2) var<uniform> u: Params;
var<workgroup> r: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var i = lid; i < u.parts; i += ${WG}u) { s += partial[i]; }
  r[lid] = s;
  for (var st = ${WG / 2}u; st > 0u; st >>= 1u) {
    workgroupBarrier();
    if (lid < st) { r[lid] += r[lid + st]; }
  }
  if (lid == 0u) { outv[0] = sqrt(r[0]); }
}
`;
}

/** Record out[0] = ‖grads[offset : offset+n]‖₂ (f32, stays on the GPU). */
export function gradNorm(gpu: Gpu, a: { grads: GpuBuffer; n: number; out: GpuBuffer; offset?: number }): void {
  const name = "gradNorm";
  checkCount(name, a.n);
  const offset = a.offset ?? 0;
  if (!(Number.isInteger(offset) && offset >= 0)) throw new Error(`${name}: offset must be a non-negative integer`);
  needBytes(name, "grads", a.grads, (offset + a.n) * 4);
  needBytes(name, "out", a.out, 4);
  const [parts] = elemGrid(a.n);
  const partial = gpu.alloc(parts * 4, "gradnorm_partials");
  gpu.dispatch(gpu.kernel("sum_squares", sumSquaresWgsl()), [a.grads, partial], [parts, 1, 1], new Uint32Array([a.n, offset, 0, 0]));
  gpu.dispatch(gpu.kernel("norm_finish", normFinishWgsl()), [partial, a.out], [1, 1, 1], new Uint32Array([parts, 0, 0, 0]));
  gpu.release(partial);
}

export function clipWgsl(): string {
  return /* wgsl */ `
struct Params { n: u32, p0: u32, maxNorm: f32, p1: u32 }
@group(0) @binding(0) var<storage, read_write> g: array<f32>;
@group(0) @binding(1) var<storage, read> norm: array<f32>;
@group(0) @binding(2) var<uniform> u: Params;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let c = min(1.0, u.maxNorm / (norm[0] + 1e-6));
  if (c >= 1.0) { return; }
  for (var i = gid.x; i < u.n; i += nwg.x * ${WG}u) { g[i] = g[i] * c; }
}
`;
}

/** Record grads ← grads · min(1, maxNorm / (norm[0] + 1e-6)), reading the norm computed on the GPU. */
export function clipByNorm(gpu: Gpu, a: { grads: GpuBuffer; n: number; norm: GpuBuffer; maxNorm: number }): void {
  const name = "clipByNorm";
  checkCount(name, a.n);
  if (!(a.maxNorm > 0) || !Number.isFinite(a.maxNorm)) throw new Error(`${name}: maxNorm must be positive and finite (got ${a.maxNorm})`);
  needBytes(name, "grads", a.grads, a.n * 4);
  needBytes(name, "norm", a.norm, 4);
  const p = new ArrayBuffer(16);
  new Uint32Array(p)[0] = a.n;
  new Float32Array(p)[2] = a.maxNorm;
  gpu.dispatch(gpu.kernel("clip_by_norm", clipWgsl()), [a.grads, a.norm], elemGrid(a.n), p);
}

/** gradNorm into `norm` then clipByNorm: the global-norm clip of a training step, no readback. */
export function clipGradNorm(gpu: Gpu, a: { grads: GpuBuffer; n: number; maxNorm: number; norm: GpuBuffer }): void {
  gradNorm(gpu, { grads: a.grads, n: a.n, out: a.norm });
  clipByNorm(gpu, a);
}

// ---------------------------------------------------------------------------------------------------------
// fill / scale

function fillWgsl() {
  return /* wgsl */ `
struct Params { words: u32, bits: u32, lastMask: u32, p0: u32 }
@group(0) @binding(0) var<storage, read_write> x: array<u32>;
@group(0) @binding(1) var<uniform> u: Params;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < u.words; i += nwg.x * ${WG}u) {
    // lastMask selects the bits of the final word that belong to the tensor (odd f16 counts keep the high half)
    if (i + 1u == u.words) { x[i] = (x[i] & ~u.lastMask) | (u.bits & u.lastMask); } else { x[i] = u.bits; }
  }
}
`;
}

/** Record buf[0:n] = value, as f32 (default), u32 (value taken as an integer) or f16 (packed; odd n keeps the pad half). */
export function fill(gpu: Gpu, a: { buf: GpuBuffer; n: number; value: number; dtype?: "f32" | "u32" | "f16" }): void {
  const name = "fill";
  checkCount(name, a.n);
  const dt = a.dtype ?? "f32";
  let bits: number;
  let words = a.n;
  let lastMask = 0xffffffff;
  if (dt === "f32") bits = new Uint32Array(Float32Array.of(a.value).buffer)[0];
  else if (dt === "u32") {
    if (!(Number.isInteger(a.value) && a.value >= 0 && a.value < 2 ** 32)) throw new Error(`${name}: a u32 fill value must be an integer in [0, 2^32)`);
    bits = a.value;
  } else {
    const h = f32ToF16Bits(a.value);
    bits = (h | (h << 16)) >>> 0;
    words = Math.ceil(a.n / 2);
    if (a.n % 2) lastMask = 0xffff;
  }
  needBytes(name, "buf", a.buf, words * 4);
  gpu.dispatch(gpu.kernel("fill_words", fillWgsl()), [a.buf], elemGrid(words), new Uint32Array([words, bits >>> 0, lastMask >>> 0, 0]));
}

function scaleWgsl() {
  return /* wgsl */ `
struct Params { n: u32, p0: u32, alpha: f32, p1: u32 }
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<uniform> u: Params;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < u.n; i += nwg.x * ${WG}u) { x[i] = x[i] * u.alpha; }
}
`;
}

/** Record buf[0:n] *= alpha (f32, in place). */
export function scale(gpu: Gpu, a: { buf: GpuBuffer; n: number; alpha: number }): void {
  checkCount("scale", a.n);
  needBytes("scale", "buf", a.buf, a.n * 4);
  const p = new ArrayBuffer(16);
  new Uint32Array(p)[0] = a.n;
  new Float32Array(p)[2] = a.alpha;
  gpu.dispatch(gpu.kernel("scale_f32", scaleWgsl()), [a.buf], elemGrid(a.n), p);
}

// ---------------------------------------------------------------------------------------------------------
// casts

const CAST_FNS = /* wgsl */ `
// f32 bits → f16 bits, round to nearest even (same algorithm as the host f32ToF16Bits).
fn f32ToF16(x: u32) -> u32 {
  let sign = (x >> 16u) & 0x8000u;
  let ex = (x >> 23u) & 0xffu;
  var mant = x & 0x7fffffu;
  if (ex == 0xffu) { return sign | 0x7c00u | select(0u, 0x200u, mant != 0u); }
  var e = i32(ex) - 112;
  if (e >= 31) { return sign | 0x7c00u; }
  if (e <= 0) {
    if (e < -10) { return sign; }
    mant = mant | 0x800000u;
    let sh = u32(14 - e);
    let half = 1u << (sh - 1u);
    var m = mant >> sh;
    let rest = mant & ((1u << sh) - 1u);
    if (rest > half || (rest == half && (m & 1u) != 0u)) { m += 1u; }
    return sign | m;
  }
  var m = mant >> 13u;
  let rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (m & 1u) != 0u)) {
    m += 1u;
    if (m == 0x400u) {
      m = 0u;
      e += 1;
      if (e >= 31) { return sign | 0x7c00u; }
    }
  }
  return sign | (u32(e) << 10u) | m;
}
// f16 bits → f32 bits (exact; subnormals normalised, NaN payload kept).
fn f16ToF32(h: u32) -> u32 {
  let sign = (h & 0x8000u) << 16u;
  let ex = (h >> 10u) & 0x1fu;
  let mant = h & 0x3ffu;
  if (ex == 0x1fu) { return sign | 0x7f800000u | (mant << 13u); }
  if (ex == 0u) {
    if (mant == 0u) { return sign; }
    var e = 113u;
    var m = mant;
    while ((m & 0x400u) == 0u) { m = m << 1u; e -= 1u; }
    return sign | (e << 23u) | ((m & 0x3ffu) << 13u);
  }
  return sign | ((ex + 112u) << 23u) | (mant << 13u);
}
`;

export type CastKind = "f32->f16" | "f16->f32" | "bf16->f32" | "bf16->f16";

export function castWgsl(kind: CastKind): string {
  const to16 = kind === "f32->f16" || kind === "bf16->f16";
  // per output word: one f32, or two packed 16-bit halves
  const conv = (src: string) =>
    kind === "f32->f16" ? `f32ToF16(${src})` : kind === "f16->f32" ? `f16ToF32(${src})` : kind === "bf16->f32" ? `(${src}) << 16u` : `f32ToF16((${src}) << 16u)`;
  const body = to16
    ? kind === "f32->f16"
      ? `  let lo = ${conv("src[2u * i]")};
    var hi = 0u;
    if (2u * i + 1u < u.n) { hi = ${conv("src[2u * i + 1u]")}; } else { hi = dst[i] >> 16u; }
    dst[i] = lo | (hi << 16u);`
      : `  let w = src[i];
    let lo = ${conv("w & 0xffffu")};
    var hi = 0u;
    if (2u * i + 1u < u.n) { hi = ${conv("w >> 16u")}; } else { hi = dst[i] >> 16u; }
    dst[i] = lo | (hi << 16u);`
    : `  let w = src[i / 2u];
    dst[i] = ${conv("select(w & 0xffffu, w >> 16u, (i & 1u) == 1u)")};`;
  return /* wgsl */ `
struct Params { n: u32, words: u32, p0: u32, p1: u32 }
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> u: Params;
${CAST_FNS}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < u.words; i += nwg.x * ${WG}u) {
  ${body}
  }
}
`;
}

/**
 * Record dst[0:n] = convert(src[0:n]). 16-bit sides are packed two per u32 (element 2i low); an odd count keeps the
 * high half of dst's last word.
 */
export function cast(gpu: Gpu, a: { src: GpuBuffer; dst: GpuBuffer; n: number; kind: CastKind }): void {
  const name = `cast ${a.kind}`;
  checkCount(name, a.n);
  const kinds: CastKind[] = ["f32->f16", "f16->f32", "bf16->f32", "bf16->f16"];
  if (!kinds.includes(a.kind)) throw new Error(`cast: unknown kind "${a.kind}" (use ${kinds.join(", ")})`);
  const src16 = a.kind !== "f32->f16";
  const dst16 = a.kind === "f32->f16" || a.kind === "bf16->f16";
  const w16 = Math.ceil(a.n / 2);
  needBytes(name, "src", a.src, src16 ? w16 * 4 : a.n * 4);
  needBytes(name, "dst", a.dst, dst16 ? w16 * 4 : a.n * 4);
  if (a.src.buffer === a.dst.buffer) throw new Error(`${name}: src and dst must be different buffers`);
  const words = dst16 ? w16 : a.n;
  const k = gpu.kernel(`cast_${a.kind.replace("->", "_to_")}`, castWgsl(a.kind));
  gpu.dispatch(k, [a.src, a.dst], elemGrid(words), new Uint32Array([a.n, words, 0, 0]));
}

// ---------------------------------------------------------------------------------------------------------
// float64 references

export interface AdamWState {
  params: Float64Array;
  m: Float64Array;
  v: Float64Array;
}

/** One float64 AdamW step (PyTorch semantics), in place on `s`. */
export function adamWReference(
  s: AdamWState,
  grads: ArrayLike<number>,
  o: { step: number; lr: number; beta1?: number; beta2?: number; eps?: number; weightDecay?: number; gradScale?: number },
): void {
  const b1 = o.beta1 ?? 0.9;
  const b2 = o.beta2 ?? 0.999;
  const eps = o.eps ?? 1e-8;
  const wd = o.weightDecay ?? 0.01;
  const gsc = o.gradScale ?? 1;
  const bc1 = 1 - b1 ** o.step;
  const bc2 = 1 - b2 ** o.step;
  for (let i = 0; i < s.params.length; i++) {
    const g = grads[i] * gsc;
    s.params[i] *= 1 - o.lr * wd;
    s.m[i] = b1 * s.m[i] + (1 - b1) * g;
    s.v[i] = b2 * s.v[i] + (1 - b2) * g * g;
    s.params[i] -= (o.lr / bc1) * (s.m[i] / (Math.sqrt(s.v[i]) / Math.sqrt(bc2) + eps));
  }
}

export function gradNormReference(g: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < g.length; i++) s += g[i] * g[i];
  return Math.sqrt(s);
}

/** bf16 bits → f32 value (exact). */
export function bf16BitsToF32(b: number): number {
  return new Float32Array(Uint32Array.of((b & 0xffff) << 16).buffer)[0];
}
