// Element-wise and gather/scatter kernels of the decoder layer, forward and backward side by side:
//
//   add            y = a + b  (or in place a += b): the residual connection. Backward is the identity (no kernel).
//   swiglu         h = silu(gate)·up, gate/up [M, I] as two buffers or one fused [M, 2I] buffer (row m holds
//                  gate in columns [0, I) and up in [I, 2I)). Backward: dgate = dh·up·σ(g)(1 + g(1 − σ(g))),
//                  dup = dh·silu(g).
//   biasAdd        y[m, n] += bias[n] (in place, or into a separate output). Backward: biasGrad = column sums of dy.
//   columnSum      out[n] (+)= Σ_m x[m, n], deterministic and without float atomics: a column-parallel pass over
//                  row chunks writes partial sums [chunks, N], and a second pass of the same kernel sums the
//                  partials in chunk order. The summation order depends only on (M, N), never on scheduling.
//   embedding      out[m, :] = table[ids[m], :] (table f32 or f16 → f32 out). An id ≥ V is SKIPPED: its output
//                  row is written as zeros and nothing is read out of bounds. The table may be given as row
//                  shards (each its own buffer, `tableShardRows` rows each), so that a vocabulary-sized table
//                  never needs one binding over maxStorageBufferBindingSize: one dispatch per shard; the first
//                  writes every output row (zeros where the id is in no earlier shard's range or ≥ V), the later
//                  ones overwrite only the rows whose id falls in their range.
//   embeddingBackward  dTable[v, :] (+)= Σ_{m : ids[m] = v} dOut[m, :]. Sort-free and deterministic: one workgroup
//                  per token m; it first checks whether an earlier token has the same id (a parallel scan of
//                  ids[0..m)) and, if so, does nothing. Otherwise it owns row v: it writes (or adds) its own dOut row,
//                  then walks ids[m+1..M) (staged through workgroup memory) and adds the dOut row of every matching
//                  token, in token order, each thread always touching the same columns of row v. No two workgroups
//                  touch the same row, no float atomics, the sum order is token order.
//                  Cost: O(M²) id comparisons in total (cheap next to the M·H row traffic for M up to ~16k).
//                  Ids ≥ V are skipped (no write). Rows no token touches are not written at all. With a sharded
//                  dTable one dispatch per shard: a workgroup whose id lies outside the shard's rows returns at once.
//
// Dtypes: activations f32, or f16 where the adapter has shader-f16 (storage only: every kernel computes in f32).
// Vector width: each kernel has a vec4 variant (16-byte f32 / 8-byte f16 loads, a quarter of the invocations),
// used when the contiguous extent allows it (n, I, N or H a multiple of 4), and a scalar one otherwise. On lavapipe
// the vec4 variants are 3–4× faster; on GPUs they issue wide loads.
// Everything bounds-checks (we run with Dawn's disable_robustness); grids larger than 65535 workgroups are folded
// into the y dimension.
import type { Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import { isCpuAdapter } from "./runtime/adapter.js";

export type Dtype = "f32" | "f16";

// ---------------------------------------------------------------------------------------------------------------
// Shared launcher helpers (also used by norm.ts and rope.ts)

export const dtypeBytes = (d: Dtype) => (d === "f16" ? 2 : 4);

/** Throw a clear error when an f16 variant is asked for on an adapter without shader-f16. */
export function requireF16(gpu: Gpu, who: string, ...dtypes: Array<Dtype | undefined>) {
  if (dtypes.includes("f16") && !gpu.hasF16) {
    throw new Error(`${who}: f16 tensors need the shader-f16 feature, which this adapter (${gpu.adapterName}) lacks; use f32`);
  }
}

export function requireCount(who: string, name: string, n: number) {
  if (!(Number.isInteger(n) && n > 0)) throw new Error(`${who}: ${name} must be a positive integer (got ${n})`);
}

/** Check that `buf` holds `count` elements of `dtype` and fits in one storage binding. */
export function requireBuffer(gpu: Gpu, who: string, name: string, buf: GpuBuffer, count: number, dtype: Dtype | "u32", shape: string) {
  if (!buf || typeof buf.bytes !== "number") throw new Error(`${who}: ${name} is not a GPU buffer`);
  const need = count * (dtype === "f16" ? 2 : 4);
  if (buf.bytes < need) {
    throw new Error(`${who}: ${name} holds ${buf.bytes} bytes, needs ${need} (${count} × ${dtype} for ${shape})`);
  }
  const maxBinding = gpu.limits.maxStorageBufferBindingSize;
  if (maxBinding && need > maxBinding) {
    throw new Error(`${who}: ${name} needs ${need} bytes in one binding, over this adapter's maxStorageBufferBindingSize (${maxBinding})`);
  }
}

/** Fold `workgroups` into [x, y] with x ≤ the per-dimension limit; shaders index wg.y·num_workgroups.x + wg.x. */
export function foldGrid(gpu: Gpu, workgroups: number): [number, number] {
  const maxX = Math.min(65535, gpu.limits.maxComputeWorkgroupsPerDimension ?? 65535);
  if (workgroups <= maxX) return [workgroups, 1];
  const y = Math.ceil(workgroups / maxX);
  return [Math.ceil(workgroups / y), y];
}

/** WGSL: the flat workgroup index of a folded grid (needs `wid` = workgroup_id and `nwg` = num_workgroups). */
export const FLAT_WG = "(wid.y * nwg.x + wid.x)";

/**
 * Threads per workgroup for kernels that give one workgroup a whole row of `rowVecs` vectors (RMSNorm, the
 * embedding backward). CPU adapters run a workgroup's barriers as coroutine switches, so they get 8 threads (one
 * SIMD-8 batch on lavapipe; measured fastest there among 4–64); GPUs get enough threads for ~2–4 vectors each. `override` (tests, tuning) must be a power of two in [1, 256].
 */
export function rowWorkgroup(gpu: Gpu, rowVecs: number, override?: number): number {
  if (override !== undefined) {
    if (!(Number.isInteger(override) && override >= 1 && override <= 256 && (override & (override - 1)) === 0)) {
      throw new Error(`workgroupSize must be a power of two in [1, 256] (got ${override})`);
    }
    return override;
  }
  if (isCpuAdapter(gpu)) return 8;
  return rowVecs <= 64 ? 64 : rowVecs <= 512 ? 128 : 256;
}

/** WGSL: a tree reduction of red[0..WG) into red[0], barriers included (every thread may read red[0] after). */
export function treeReduceWgsl(WG: number, indent = "  "): string {
  const lines = [`${indent}workgroupBarrier();`];
  for (let s = WG / 2; s >= 1; s /= 2) {
    lines.push(`${indent}if (lid < ${s}u) { red[lid] = red[lid] + red[lid + ${s}u]; }`, `${indent}workgroupBarrier();`);
  }
  return lines.join("\n");
}

const f16Header = (...dtypes: Dtype[]) => (dtypes.includes("f16") ? "enable f16;\n" : "");

/** WGSL type of one element of width V (1 or 4) of a dtype. */
export const vecType = (dt: string, V: number) => (V === 4 ? `vec4<${dt}>` : dt);
/** Vector width for a contiguous extent: 4 when it divides, else 1. */
export const vecWidth = (extent: number) => (extent % 4 === 0 ? 4 : 1);

// CPU adapters favour small workgroups; rope, norm and attention import the test from here.
export { isCpuAdapter };

const WG1D = 256;

// ---------------------------------------------------------------------------------------------------------------
// Residual add

export interface AddArgs {
  a: GpuBuffer;
  b: GpuBuffer;
  /** Output; when omitted the sum is written into `a` (a += b). */
  out?: GpuBuffer;
  n: number;
  /** dtype of a and out (default f32: the residual stream). */
  dtype?: Dtype;
  /** dtype of b (default: dtype), e.g. an f16 attention/MLP output added into the f32 residual stream. */
  bDtype?: Dtype;
}

export function addWgsl(o: { dtype: Dtype; bDtype: Dtype; inPlace: boolean; V: number }): string {
  const { dtype, bDtype, inPlace, V } = o;
  const T = vecType(dtype, V);
  const F = vecType("f32", V);
  return /* wgsl */ `
${f16Header(dtype, bDtype)}
struct Params { n: u32, p0: u32, p1: u32, p2: u32 }
${inPlace
    ? `@group(0) @binding(0) var<storage, read_write> A: array<${T}>;
@group(0) @binding(1) var<storage, read> B: array<${vecType(bDtype, V)}>;
@group(0) @binding(2) var<uniform> u: Params;`
    : `@group(0) @binding(0) var<storage, read> A: array<${T}>;
@group(0) @binding(1) var<storage, read> B: array<${vecType(bDtype, V)}>;
@group(0) @binding(2) var<storage, read_write> Y: array<${T}>;
@group(0) @binding(3) var<uniform> u: Params;`}

// One invocation per ${V === 4 ? "vec4" : "element"}; u.n counts them.
@compute @workgroup_size(${WG1D})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = ${FLAT_WG} * ${WG1D}u + lid;
  if (i >= u.n) { return; }
  let v = ${F}(A[i]) + ${F}(B[i]);
  ${inPlace ? "A" : "Y"}[i] = ${T}(v);
}
`;
}

/** Record y = a + b (or a += b when `out` is omitted). */
export function add(gpu: Gpu, args: AddArgs): void {
  const who = "add";
  const dtype = args.dtype ?? "f32";
  const bDtype = args.bDtype ?? dtype;
  const { n } = args;
  requireCount(who, "n", n);
  requireF16(gpu, who, dtype, bDtype);
  requireBuffer(gpu, who, "a", args.a, n, dtype, `n=${n}`);
  requireBuffer(gpu, who, "b", args.b, n, bDtype, `n=${n}`);
  const inPlace = !args.out;
  if (args.out) requireBuffer(gpu, who, "out", args.out, n, dtype, `n=${n}`);
  if (args.out && (args.out.buffer === args.a.buffer || args.out.buffer === args.b.buffer)) {
    throw new Error(`${who}: out aliases an input; omit out for the in-place a += b`);
  }
  if (args.a.buffer === args.b.buffer) throw new Error(`${who}: a and b are the same buffer (WebGPU forbids a writable alias)`);
  const V = vecWidth(n);
  const label = `add_${dtype}_${bDtype}_v${V}${inPlace ? "_inplace" : ""}`;
  const kernel = gpu.kernel(label, addWgsl({ dtype, bDtype, inPlace, V }));
  const bufs = inPlace ? [args.a, args.b] : [args.a, args.b, args.out!];
  const nv = n / V;
  gpu.dispatch(kernel, bufs, foldGrid(gpu, Math.ceil(nv / WG1D)), new Uint32Array([nv, 0, 0, 0]));
}

export function addReference(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  const y = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) y[i] = a[i] + b[i];
  return y;
}

// ---------------------------------------------------------------------------------------------------------------
// SwiGLU

export interface SwigluArgs {
  /** gate [M, I]; or, without `up`, the fused [M, 2I] buffer holding gate|up per row. */
  gate: GpuBuffer;
  /** up [M, I]; omit when `gate` is the fused [M, 2I] buffer. */
  up?: GpuBuffer;
  /** Output h [M, I]. */
  h: GpuBuffer;
  M: number;
  I: number;
  /** dtype of gate/up (default f32). */
  dtype?: Dtype;
  /** dtype of h (default: dtype). */
  outDtype?: Dtype;
}

export interface SwigluBackwardArgs {
  dh: GpuBuffer;
  /** gate [M, I] or fused gate|up [M, 2I] (when `up` is omitted), as in the forward. */
  gate: GpuBuffer;
  up?: GpuBuffer;
  /** dgate [M, I] — or, in the fused layout, the [M, 2I] gradient dgate|dup. */
  dgate: GpuBuffer;
  /** dup [M, I]; omit in the fused layout. */
  dup?: GpuBuffer;
  M: number;
  I: number;
  /** dtype of gate/up (default f32). */
  dtype?: Dtype;
  /** dtype of dh, dgate and dup (default: dtype). */
  gradDtype?: Dtype;
}

// exp(-x) = inf for x ≪ 0 gives σ = 0 (no NaN); x ≫ 0 gives σ = 1.
const sigmoidWgsl = (V: number) => `fn sigmoid(x: ${vecType("f32", V)}) -> ${vecType("f32", V)} { return 1.0 / (1.0 + exp(-x)); }`;

function swigluLoad(fused: boolean, F: string) {
  return fused
    ? `let m = i / u.Iv; let gi = i + m * u.Iv; let g = ${F}(GU[gi]); let up = ${F}(GU[gi + u.Iv]);`
    : `let g = ${F}(G[i]); let up = ${F}(U[i]);`;
}

export function swigluWgsl(o: { dtype: Dtype; outDtype: Dtype; fused: boolean; V: number }): string {
  const { dtype, outDtype, fused, V } = o;
  const T = vecType(dtype, V);
  const O = vecType(outDtype, V);
  const inputs = fused
    ? `@group(0) @binding(0) var<storage, read> GU: array<${T}>;
@group(0) @binding(1) var<storage, read_write> Hs: array<${O}>;
@group(0) @binding(2) var<uniform> u: Params;`
    : `@group(0) @binding(0) var<storage, read> G: array<${T}>;
@group(0) @binding(1) var<storage, read> U: array<${T}>;
@group(0) @binding(2) var<storage, read_write> Hs: array<${O}>;
@group(0) @binding(3) var<uniform> u: Params;`;
  return /* wgsl */ `
${f16Header(dtype, outDtype)}
struct Params { M: u32, Iv: u32, n: u32, p0: u32 }
${inputs}
${sigmoidWgsl(V)}

// One invocation per ${V === 4 ? "vec4" : "element"} of h; Iv = I / ${V}.
@compute @workgroup_size(${WG1D})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = ${FLAT_WG} * ${WG1D}u + lid;
  if (i >= u.n) { return; }
  ${swigluLoad(fused, vecType("f32", V))}
  Hs[i] = ${O}(g * sigmoid(g) * up);
}
`;
}

export function swigluBackwardWgsl(o: { dtype: Dtype; gradDtype: Dtype; fused: boolean; V: number }): string {
  const { dtype, gradDtype, fused, V } = o;
  const T = vecType(dtype, V);
  const D = vecType(gradDtype, V);
  const F = vecType("f32", V);
  const bindings = fused
    ? `@group(0) @binding(0) var<storage, read> dH: array<${D}>;
@group(0) @binding(1) var<storage, read> GU: array<${T}>;
@group(0) @binding(2) var<storage, read_write> dGU: array<${D}>;
@group(0) @binding(3) var<uniform> u: Params;`
    : `@group(0) @binding(0) var<storage, read> dH: array<${D}>;
@group(0) @binding(1) var<storage, read> G: array<${T}>;
@group(0) @binding(2) var<storage, read> U: array<${T}>;
@group(0) @binding(3) var<storage, read_write> dG: array<${D}>;
@group(0) @binding(4) var<storage, read_write> dU: array<${D}>;
@group(0) @binding(5) var<uniform> u: Params;`;
  const store = fused
    ? `dGU[gi] = ${D}(dh * up * dsilu); dGU[gi + u.Iv] = ${D}(dh * g * s);`
    : `dG[i] = ${D}(dh * up * dsilu); dU[i] = ${D}(dh * g * s);`;
  return /* wgsl */ `
${f16Header(dtype, gradDtype)}
struct Params { M: u32, Iv: u32, n: u32, p0: u32 }
${bindings}
${sigmoidWgsl(V)}

@compute @workgroup_size(${WG1D})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = ${FLAT_WG} * ${WG1D}u + lid;
  if (i >= u.n) { return; }
  ${swigluLoad(fused, F)}
  let dh = ${F}(dH[i]);
  let s = sigmoid(g);
  let dsilu = s * (1.0 + g * (1.0 - s));
  ${store}
}
`;
}

function swigluChecks(who: string, M: number, I: number) {
  requireCount(who, "M", M);
  requireCount(who, "I", I);
  if (M * I * 2 > 2 ** 32 - 1) throw new Error(`${who}: M·2I = ${M * I * 2} overflows 32-bit indexing; split the rows`);
}

/** Record h = silu(gate)·up. */
export function swiglu(gpu: Gpu, args: SwigluArgs): void {
  const who = "swiglu";
  const { M, I } = args;
  const dtype = args.dtype ?? "f32";
  const outDtype = args.outDtype ?? dtype;
  const fused = !args.up;
  swigluChecks(who, M, I);
  requireF16(gpu, who, dtype, outDtype);
  const shape = `M=${M} I=${I}`;
  if (fused) requireBuffer(gpu, who, "gate (fused gate|up)", args.gate, 2 * M * I, dtype, shape);
  else {
    requireBuffer(gpu, who, "gate", args.gate, M * I, dtype, shape);
    requireBuffer(gpu, who, "up", args.up!, M * I, dtype, shape);
  }
  requireBuffer(gpu, who, "h", args.h, M * I, outDtype, shape);
  const V = vecWidth(I);
  const label = `swiglu_${dtype}_${outDtype}_v${V}${fused ? "_fused" : ""}`;
  const kernel = gpu.kernel(label, swigluWgsl({ dtype, outDtype, fused, V }));
  const nv = (M * I) / V;
  const bufs = fused ? [args.gate, args.h] : [args.gate, args.up!, args.h];
  gpu.dispatch(kernel, bufs, foldGrid(gpu, Math.ceil(nv / WG1D)), new Uint32Array([M, I / V, nv, 0]));
}

/** Record dgate, dup from dh (both outputs are overwritten). */
export function swigluBackward(gpu: Gpu, args: SwigluBackwardArgs): void {
  const who = "swigluBackward";
  const { M, I } = args;
  const dtype = args.dtype ?? "f32";
  const gradDtype = args.gradDtype ?? dtype;
  const fused = !args.up;
  swigluChecks(who, M, I);
  requireF16(gpu, who, dtype, gradDtype);
  if (fused !== !args.dup) throw new Error(`${who}: give both up and dup (separate layout) or neither (fused [M, 2I] layout)`);
  const shape = `M=${M} I=${I}`;
  requireBuffer(gpu, who, "dh", args.dh, M * I, gradDtype, shape);
  if (fused) {
    requireBuffer(gpu, who, "gate (fused gate|up)", args.gate, 2 * M * I, dtype, shape);
    requireBuffer(gpu, who, "dgate (fused dgate|dup)", args.dgate, 2 * M * I, gradDtype, shape);
  } else {
    requireBuffer(gpu, who, "gate", args.gate, M * I, dtype, shape);
    requireBuffer(gpu, who, "up", args.up!, M * I, dtype, shape);
    requireBuffer(gpu, who, "dgate", args.dgate, M * I, gradDtype, shape);
    requireBuffer(gpu, who, "dup", args.dup!, M * I, gradDtype, shape);
  }
  const V = vecWidth(I);
  const label = `swiglu_bwd_${dtype}_${gradDtype}_v${V}${fused ? "_fused" : ""}`;
  const kernel = gpu.kernel(label, swigluBackwardWgsl({ dtype, gradDtype, fused, V }));
  const nv = (M * I) / V;
  const bufs = fused ? [args.dh, args.gate, args.dgate] : [args.dh, args.gate, args.up!, args.dgate, args.dup!];
  gpu.dispatch(kernel, bufs, foldGrid(gpu, Math.ceil(nv / WG1D)), new Uint32Array([M, I / V, nv, 0]));
}

const sigmoid64 = (x: number) => 1 / (1 + Math.exp(-x));

export function swigluReference(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  const h = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) h[i] = gate[i] * sigmoid64(gate[i]) * up[i];
  return h;
}

export function swigluBackwardReference(dh: ArrayLike<number>, gate: ArrayLike<number>, up: ArrayLike<number>): { dgate: Float64Array; dup: Float64Array } {
  const n = gate.length;
  const dgate = new Float64Array(n);
  const dup = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    const s = sigmoid64(g);
    dgate[i] = dh[i] * up[i] * s * (1 + g * (1 - s));
    dup[i] = dh[i] * g * s;
  }
  return { dgate, dup };
}

// ---------------------------------------------------------------------------------------------------------------
// Bias add and its gradient (column sums)

export interface BiasAddArgs {
  /** y [M, N]; updated in place unless `out` is given. */
  y: GpuBuffer;
  bias: GpuBuffer;
  out?: GpuBuffer;
  M: number;
  N: number;
  /** dtype of y/out (default f32). */
  dtype?: Dtype;
  /** dtype of bias (default: dtype). */
  biasDtype?: Dtype;
}

export function biasAddWgsl(o: { dtype: Dtype; biasDtype: Dtype; inPlace: boolean; V: number }): string {
  const { dtype, biasDtype, inPlace, V } = o;
  const T = vecType(dtype, V);
  const F = vecType("f32", V);
  return /* wgsl */ `
${f16Header(dtype, biasDtype)}
struct Params { M: u32, Nv: u32, n: u32, p0: u32 }
${inPlace
    ? `@group(0) @binding(0) var<storage, read_write> Y: array<${T}>;
@group(0) @binding(1) var<storage, read> Bias: array<${vecType(biasDtype, V)}>;
@group(0) @binding(2) var<uniform> u: Params;`
    : `@group(0) @binding(0) var<storage, read> Y: array<${T}>;
@group(0) @binding(1) var<storage, read> Bias: array<${vecType(biasDtype, V)}>;
@group(0) @binding(2) var<storage, read_write> Out: array<${T}>;
@group(0) @binding(3) var<uniform> u: Params;`}

@compute @workgroup_size(${WG1D})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = ${FLAT_WG} * ${WG1D}u + lid;
  if (i >= u.n) { return; }
  let col = i % u.Nv;
  ${inPlace ? "Y" : "Out"}[i] = ${T}(${F}(Y[i]) + ${F}(Bias[col]));
}
`;
}

/** Record y[m, n] += bias[n] (or out = y + bias). */
export function biasAdd(gpu: Gpu, args: BiasAddArgs): void {
  const who = "biasAdd";
  const { M, N } = args;
  const dtype = args.dtype ?? "f32";
  const biasDtype = args.biasDtype ?? dtype;
  requireCount(who, "M", M);
  requireCount(who, "N", N);
  requireF16(gpu, who, dtype, biasDtype);
  const shape = `M=${M} N=${N}`;
  requireBuffer(gpu, who, "y", args.y, M * N, dtype, shape);
  requireBuffer(gpu, who, "bias", args.bias, N, biasDtype, shape);
  if (args.out) requireBuffer(gpu, who, "out", args.out, M * N, dtype, shape);
  if (args.out && (args.out.buffer === args.y.buffer || args.out.buffer === args.bias.buffer)) {
    throw new Error(`${who}: out aliases an input; omit out to add in place`);
  }
  if (args.y.buffer === args.bias.buffer) throw new Error(`${who}: y and bias are the same buffer`);
  const inPlace = !args.out;
  const V = vecWidth(N);
  const label = `bias_add_${dtype}_${biasDtype}_v${V}${inPlace ? "_inplace" : ""}`;
  const kernel = gpu.kernel(label, biasAddWgsl({ dtype, biasDtype, inPlace, V }));
  const nv = (M * N) / V;
  gpu.dispatch(kernel, inPlace ? [args.y, args.bias] : [args.y, args.bias, args.out!], foldGrid(gpu, Math.ceil(nv / WG1D)), new Uint32Array([M, N / V, nv, 0]));
}

export function biasAddReference(y: ArrayLike<number>, bias: ArrayLike<number>, M: number, N: number): Float64Array {
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) out[m * N + n] = y[m * N + n] + bias[n];
  return out;
}

export interface ColumnSumArgs {
  /** x [M, N]. */
  x: GpuBuffer;
  /** out [N] f32. */
  out: GpuBuffer;
  M: number;
  N: number;
  dtype?: Dtype;
  /** out += Σ instead of out = Σ (gradient accumulation). */
  accumulate?: boolean;
  /** Optional scratch for the partial sums (≥ columnSumScratchBytes(M, N) bytes); otherwise one is pooled. */
  scratch?: GpuBuffer;
}

const CS_COLS = 64; // column vectors per workgroup (one per x-lane)
const CS_LANES = 4; // row lanes per column inside a workgroup
/** Up to this many rows, the sum is a single pass; above, partials over row chunks then a second pass. */
const CS_DIRECT_MAX_ROWS = 128;

/** How columnSum splits M rows: `chunks` partial rows of `chunkRows` rows each (chunks = 1: a single pass). */
export function columnSumPlan(M: number, N: number): { chunks: number; chunkRows: number } {
  if (M <= CS_DIRECT_MAX_ROWS) return { chunks: 1, chunkRows: M };
  const colBlocks = Math.ceil(N / vecWidth(N) / CS_COLS);
  // Enough workgroups to fill a big GPU (~512), chunks of at least 32 rows, at most 128 partial rows.
  const want = Math.max(2, Math.min(128, Math.ceil(512 / colBlocks), Math.ceil(M / 32)));
  const chunkRows = Math.ceil(M / want);
  return { chunks: Math.ceil(M / chunkRows), chunkRows };
}

export function columnSumScratchBytes(M: number, N: number): number {
  const { chunks } = columnSumPlan(M, N);
  return chunks > 1 ? chunks * N * 4 : 0;
}

export function columnSumWgsl(o: { dtype: Dtype; final: boolean; accumulate: boolean; V: number }): string {
  const { dtype, final, accumulate, V } = o;
  const F = vecType("f32", V);
  const store = final
    ? `var v = t;${accumulate ? " v += Out[col];" : ""} Out[col] = v;`
    : `Out[wid.y * u.Nv + col] = t;`;
  return /* wgsl */ `
${f16Header(dtype)}
struct Params { M: u32, Nv: u32, chunkRows: u32, p0: u32 }
@group(0) @binding(0) var<storage, read> X: array<${vecType(dtype, V)}>;
@group(0) @binding(1) var<storage, read_write> Out: array<${F}>;
@group(0) @binding(2) var<uniform> u: Params;
var<workgroup> red: array<${F}, ${CS_COLS * CS_LANES}>;

// One workgroup: ${CS_COLS} column ${V === 4 ? "vec4s" : "s"} × ${CS_LANES} row lanes over one chunk of rows (wid.y).
// Fixed order ⇒ deterministic.
@compute @workgroup_size(${CS_COLS}, ${CS_LANES})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let col = wid.x * ${CS_COLS}u + lid.x;
  let r0 = wid.y * u.chunkRows;
  let r1 = min(r0 + u.chunkRows, u.M);
  var s = ${F}(0.0);
  if (col < u.Nv) {
    for (var r = r0 + lid.y; r < r1; r += ${CS_LANES}u) { s += ${F}(X[r * u.Nv + col]); }
  }
  red[lid.y * ${CS_COLS}u + lid.x] = s;
  workgroupBarrier();
  if (lid.y == 0u && col < u.Nv) {
    let t = (red[lid.x] + red[${CS_COLS}u + lid.x]) + (red[${2 * CS_COLS}u + lid.x] + red[${3 * CS_COLS}u + lid.x]);
    ${store}
  }
}
`;
}

/** Record out[n] (+)= Σ_m x[m, n] (deterministic, no float atomics). */
export function columnSum(gpu: Gpu, args: ColumnSumArgs): void {
  const who = "columnSum";
  const { M, N } = args;
  const dtype = args.dtype ?? "f32";
  const accumulate = args.accumulate ?? false;
  requireCount(who, "M", M);
  requireCount(who, "N", N);
  requireF16(gpu, who, dtype);
  const shape = `M=${M} N=${N}`;
  requireBuffer(gpu, who, "x", args.x, M * N, dtype, shape);
  requireBuffer(gpu, who, "out", args.out, N, "f32", shape);
  if (args.x.buffer === args.out.buffer) throw new Error(`${who}: out aliases x`);
  const V = vecWidth(N);
  const Nv = N / V;
  const colBlocks = Math.ceil(Nv / CS_COLS);
  if (colBlocks > 65535) throw new Error(`${who}: N=${N} is too wide (max ${65535 * CS_COLS * V} columns)`);
  const plan = columnSumPlan(M, N);
  const finalKernel = (dt: Dtype) =>
    gpu.kernel(`column_sum_${dt}_v${V}${accumulate ? "_acc" : ""}`, columnSumWgsl({ dtype: dt, final: true, accumulate, V }));
  if (plan.chunks === 1) {
    gpu.dispatch(finalKernel(dtype), [args.x, args.out], [colBlocks, 1], new Uint32Array([M, Nv, M, 0]));
    return;
  }
  if (args.scratch) requireBuffer(gpu, who, "scratch", args.scratch, plan.chunks * N, "f32", shape);
  const scratch = args.scratch ?? gpu.alloc(plan.chunks * N * 4, "column_sum_partials");
  const partialKernel = gpu.kernel(`column_sum_partial_${dtype}_v${V}`, columnSumWgsl({ dtype, final: false, accumulate: false, V }));
  gpu.dispatch(partialKernel, [args.x, scratch], [colBlocks, plan.chunks], new Uint32Array([M, Nv, plan.chunkRows, 0]));
  gpu.dispatch(finalKernel("f32"), [scratch, args.out], [colBlocks, 1], new Uint32Array([plan.chunks, Nv, plan.chunks, 0]));
  // Safe to hand back now: any later user of this buffer is recorded (or, for gpu.write, submitted) after us.
  if (!args.scratch) gpu.release(scratch);
}

/** Backward of biasAdd: dbias[n] (+)= Σ_m dy[m, n]. */
export function biasGrad(gpu: Gpu, args: { dy: GpuBuffer; dbias: GpuBuffer; M: number; N: number; dtype?: Dtype; accumulate?: boolean }): void {
  columnSum(gpu, { x: args.dy, out: args.dbias, M: args.M, N: args.N, dtype: args.dtype, accumulate: args.accumulate });
}

export function columnSumReference(x: ArrayLike<number>, M: number, N: number): Float64Array {
  const out = new Float64Array(N);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) out[n] += x[m * N + n];
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Column blocks: dst[m, dstCol0 + j] (+)= src[m, srcCol0 + j] for j < cols. A linear layer too large for one binding
// is held as row blocks of its weight (each its own buffer); their outputs are column blocks of the layer's output,
// put together (forward) and taken apart (backward) with this copy.

export interface CopyColumnsArgs {
  src: GpuBuffer;
  dst: GpuBuffer;
  M: number;
  /** Row lengths (elements) of src and dst. */
  srcCols: number;
  dstCols: number;
  srcCol0: number;
  dstCol0: number;
  /** Columns copied per row. */
  cols: number;
  /** dst += src instead of dst = src. */
  accumulate?: boolean;
}

export function copyColumnsWgsl(accumulate: boolean): string {
  return /* wgsl */ `
struct Params { M: u32, cols: u32, srcCols: u32, dstCols: u32, srcCol0: u32, dstCol0: u32, n: u32, p0: u32 }
@group(0) @binding(0) var<storage, read> Src: array<f32>;
@group(0) @binding(1) var<storage, read_write> Dst: array<f32>;
@group(0) @binding(2) var<uniform> u: Params;

@compute @workgroup_size(${WG1D})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = ${FLAT_WG} * ${WG1D}u + lid;
  if (i >= u.n) { return; }
  let m = i / u.cols;
  let j = i - m * u.cols;
  let d = m * u.dstCols + u.dstCol0 + j;
  Dst[d] = ${accumulate ? "Dst[d] + " : ""}Src[m * u.srcCols + u.srcCol0 + j];
}
`;
}

/** Record the copy (or accumulation) of a [M, cols] column block of f32 src into a column block of f32 dst. */
export function copyColumns(gpu: Gpu, a: CopyColumnsArgs): void {
  const who = "copyColumns";
  for (const [k, v] of Object.entries({ M: a.M, cols: a.cols, srcCols: a.srcCols, dstCols: a.dstCols })) requireCount(who, k, v);
  if (!(Number.isInteger(a.srcCol0) && a.srcCol0 >= 0 && a.srcCol0 + a.cols <= a.srcCols)) throw new Error(`${who}: columns [${a.srcCol0}, ${a.srcCol0 + a.cols}) are outside src's ${a.srcCols}`);
  if (!(Number.isInteger(a.dstCol0) && a.dstCol0 >= 0 && a.dstCol0 + a.cols <= a.dstCols)) throw new Error(`${who}: columns [${a.dstCol0}, ${a.dstCol0 + a.cols}) are outside dst's ${a.dstCols}`);
  requireBuffer(gpu, who, "src", a.src, a.M * a.srcCols, "f32", `[${a.M}, ${a.srcCols}]`);
  requireBuffer(gpu, who, "dst", a.dst, a.M * a.dstCols, "f32", `[${a.M}, ${a.dstCols}]`);
  if (a.src.buffer === a.dst.buffer) throw new Error(`${who}: src and dst are the same buffer`);
  const n = a.M * a.cols;
  const kernel = gpu.kernel(`copy_columns${a.accumulate ? "_acc" : ""}`, copyColumnsWgsl(a.accumulate ?? false));
  gpu.dispatch(kernel, [a.src, a.dst], foldGrid(gpu, Math.ceil(n / WG1D)), new Uint32Array([a.M, a.cols, a.srcCols, a.dstCols, a.srcCol0, a.dstCol0, n, 0]));
}

// ---------------------------------------------------------------------------------------------------------------
// Embedding gather and its scatter-add backward

export interface EmbeddingArgs {
  /** u32 token ids [M]. */
  ids: GpuBuffer;
  /** table [V, H]: one buffer, or row shards of `tableShardRows` rows each (the last may be shorter). */
  table: GpuBuffer | GpuBuffer[];
  /** Rows per table shard when `table` is an array. */
  tableShardRows?: number;
  /** out [M, H] f32. */
  out: GpuBuffer;
  M: number;
  V: number;
  H: number;
  /** dtype of the table (default f32). */
  dtype?: Dtype;
}

export interface EmbeddingBackwardArgs {
  ids: GpuBuffer;
  /** dOut [M, H] f32. */
  dOut: GpuBuffer;
  /** dTable [V, H] f32, one buffer or row shards of `tableShardRows` rows. Only rows some in-range id touches are written. */
  dTable: GpuBuffer | GpuBuffer[];
  /** Rows per dTable shard when `dTable` is an array. */
  tableShardRows?: number;
  M: number;
  V: number;
  H: number;
  /** dTable rows += sums (default) or = sums. Untouched rows are never written either way. */
  accumulate?: boolean;
  /** Threads per workgroup (power of two ≤ 256; default from `rowWorkgroup`). For tests and tuning. */
  workgroupSize?: number;
}

export function embeddingWgsl(o: { dtype: Dtype; VW: number }): string {
  const { dtype, VW } = o;
  return /* wgsl */ `
${f16Header(dtype)}
// V: rows of this shard, v0: the id of its first row; zeroOthers: write zeros for ids outside the shard (first shard).
struct Params { M: u32, Hv: u32, V: u32, n: u32, v0: u32, zeroOthers: u32, p0: u32, p1: u32 }
@group(0) @binding(0) var<storage, read> Ids: array<u32>;
@group(0) @binding(1) var<storage, read> Table: array<${vecType(dtype, VW)}>;
@group(0) @binding(2) var<storage, read_write> Out: array<${vecType("f32", VW)}>;
@group(0) @binding(3) var<uniform> u: Params;

@compute @workgroup_size(${WG1D})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = ${FLAT_WG} * ${WG1D}u + lid;
  if (i >= u.n) { return; }
  let m = i / u.Hv;
  let j = i - m * u.Hv;
  let id = Ids[m];
  // id - v0 wraps around for ids below the shard, so one comparison tests both ends of its range
  let r = id - u.v0;
  if (r < u.V) {
    Out[i] = ${vecType("f32", VW)}(Table[r * u.Hv + j]);
  } else if (u.zeroOthers != 0u) {
    Out[i] = ${vecType("f32", VW)}(0.0); // an id in no shard read so far (or ≥ V): zeros, no read
  }
}
`;
}

export function embeddingBackwardWgsl(o: { WG: number; VW: number; accumulate: boolean }): string {
  const { WG, VW, accumulate } = o;
  const F = vecType("f32", VW);
  return /* wgsl */ `
// V: rows of this dTable shard, v0: the id of its first row.
struct Params { M: u32, Hv: u32, V: u32, v0: u32 }
@group(0) @binding(0) var<storage, read> Ids: array<u32>;
@group(0) @binding(1) var<storage, read> dOut: array<${F}>;
@group(0) @binding(2) var<storage, read_write> dTable: array<${F}>;
@group(0) @binding(3) var<uniform> u: Params;
var<workgroup> seen: atomic<u32>;
var<workgroup> seenFlag: u32;
var<workgroup> tile: array<u32, ${WG}>;

// Workgroup m owns row ids[m] iff no earlier token has the same id; the owner adds every matching token's dOut row
// into row ids[m] in token order (see the file header). Thread lid always handles columns lid, lid + WG, …
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let m = ${FLAT_WG};
  if (m >= u.M) { return; }
  let id = Ids[m];
  if (id - u.v0 >= u.V) { return; } // id outside this shard (u32 wrap covers ids below v0), or ≥ V: skipped
  if (lid == 0u) { atomicStore(&seen, 0u); }
  workgroupBarrier();
  for (var k = lid; k < m; k += ${WG}u) {
    if (Ids[k] == id) { atomicStore(&seen, 1u); break; }
  }
  workgroupBarrier();
  if (lid == 0u) { seenFlag = atomicLoad(&seen); }
  if (workgroupUniformLoad(&seenFlag) != 0u) { return; }

  let ob = (id - u.v0) * u.Hv;
  let mb = m * u.Hv;
  for (var j = lid; j < u.Hv; j += ${WG}u) {
    dTable[ob + j] = ${accumulate ? "dTable[ob + j] + " : ""}dOut[mb + j];
  }
  for (var k0 = m + 1u; k0 < u.M; k0 += ${WG}u) {
    var t = 0xffffffffu;
    if (k0 + lid < u.M) { t = Ids[k0 + lid]; }
    tile[lid] = t;
    workgroupBarrier();
    let cnt = min(${WG}u, u.M - k0);
    for (var s = 0u; s < cnt; s++) {
      if (tile[s] == id) {
        let rb = (k0 + s) * u.Hv;
        for (var j = lid; j < u.Hv; j += ${WG}u) { dTable[ob + j] = dTable[ob + j] + dOut[rb + j]; }
      }
    }
    workgroupBarrier();
  }
}
`;
}

function embeddingChecks(who: string, M: number, V: number, H: number) {
  requireCount(who, "M", M);
  requireCount(who, "V", V);
  requireCount(who, "H", H);
  if (M * H > 2 ** 32 - 1) throw new Error(`${who}: M·H overflows 32-bit indexing (M=${M} H=${H})`);
}

/**
 * Rows per shard of a [rows, cols] table of `bytesPerValue`-byte values so that each shard fits `limitBytes` (the
 * binding limit): all rows when the whole table fits, else a multiple of 8 rows (of 2 when fewer than 8 fit), so
 * that every f16 shard starts on a 4-byte word. The single place the shard size is decided (the GPU backend's
 * allocation and @nr/lora's memory estimate both use it).
 */
export function tableShardRows(rows: number, cols: number, bytesPerValue: number, limitBytes: number): number {
  if (Math.ceil((rows * cols * bytesPerValue) / 4) * 4 <= limitBytes) return rows;
  const fit = Math.floor(limitBytes / (cols * bytesPerValue));
  const per = fit >= 8 ? fit - (fit % 8) : fit - (fit % 2);
  if (per < 2) throw new Error(`tableShardRows: two rows of ${cols} × ${bytesPerValue}-byte values do not fit a ${limitBytes}-byte storage binding`);
  return per;
}

/** One row shard of a [V, H] table: its buffer, the id of its first row and its row count. */
export interface TableShard {
  buf: GpuBuffer;
  v0: number;
  rows: number;
}

/**
 * The shards of a table given as one buffer or as an array of `shardRows`-row buffers, each checked to hold its
 * rows and to fit one binding (an error names the shard and says how to split).
 */
export function tableShards(gpu: Gpu, who: string, name: string, table: GpuBuffer | GpuBuffer[], shardRows: number | undefined, V: number, H: number, dtype: Dtype): TableShard[] {
  const list = Array.isArray(table) ? table : [table];
  const rowsPer = list.length === 1 && shardRows === undefined ? V : shardRows;
  if (rowsPer === undefined || !(Number.isInteger(rowsPer) && rowsPer > 0)) {
    throw new Error(`${who}: ${name} is given as ${list.length} shards, so tableShardRows (rows per shard) must be a positive integer (got ${shardRows})`);
  }
  const n = Math.ceil(V / rowsPer);
  if (n !== list.length) throw new Error(`${who}: V=${V} with tableShardRows=${rowsPer} needs ${n} ${name} shards, got ${list.length}`);
  if (rowsPer * H > 2 ** 32 - 1) throw new Error(`${who}: a ${name} shard of ${rowsPer} rows × H=${H} overflows 32-bit indexing; use smaller shards`);
  return list.map((buf, i) => {
    const v0 = i * rowsPer;
    const rows = Math.min(rowsPer, V - v0);
    const label = list.length === 1 ? name : `${name} shard ${i}`;
    const need = rows * H * dtypeBytes(dtype);
    const maxBinding = gpu.limits.maxStorageBufferBindingSize;
    if (maxBinding && need > maxBinding) {
      throw new Error(`${who}: ${label} needs ${need} bytes in one binding, over this adapter's maxStorageBufferBindingSize (${maxBinding}); pass the table as row shards of at most ${Math.floor(maxBinding / (H * dtypeBytes(dtype)))} rows (tableShardRows)`);
    }
    requireBuffer(gpu, who, label, buf, rows * H, dtype, `${rows} rows × H=${H}`);
    return { buf, v0, rows };
  });
}

/** Record out[m, :] = table[ids[m], :] (zeros for ids ≥ V); one dispatch per table shard. */
export function embedding(gpu: Gpu, args: EmbeddingArgs): void {
  const who = "embedding";
  const { M, V, H } = args;
  const dtype = args.dtype ?? "f32";
  embeddingChecks(who, M, V, H);
  requireF16(gpu, who, dtype);
  const shape = `M=${M} V=${V} H=${H}`;
  requireBuffer(gpu, who, "ids", args.ids, M, "u32", shape);
  requireBuffer(gpu, who, "out", args.out, M * H, "f32", shape);
  const shards = tableShards(gpu, who, "table", args.table, args.tableShardRows, V, H, dtype);
  if (shards.some((s) => s.buf.buffer === args.out.buffer) || args.out.buffer === args.ids.buffer) throw new Error(`${who}: out aliases an input`);
  const VW = vecWidth(H);
  const kernel = gpu.kernel(`embedding_${dtype}_v${VW}`, embeddingWgsl({ dtype, VW }));
  const nv = (M * H) / VW;
  shards.forEach((s, i) => {
    gpu.dispatch(kernel, [args.ids, s.buf, args.out], foldGrid(gpu, Math.ceil(nv / WG1D)), new Uint32Array([M, H / VW, s.rows, nv, s.v0, i === 0 ? 1 : 0, 0, 0]));
  });
}

/** Record dTable[v, :] (+)= Σ_{m: ids[m]=v} dOut[m, :] (deterministic, no float atomics; ids ≥ V skipped); one dispatch per shard. */
export function embeddingBackward(gpu: Gpu, args: EmbeddingBackwardArgs): void {
  const who = "embeddingBackward";
  const { M, V, H } = args;
  const accumulate = args.accumulate ?? true;
  embeddingChecks(who, M, V, H);
  const shape = `M=${M} V=${V} H=${H}`;
  requireBuffer(gpu, who, "ids", args.ids, M, "u32", shape);
  requireBuffer(gpu, who, "dOut", args.dOut, M * H, "f32", shape);
  const shards = tableShards(gpu, who, "dTable", args.dTable, args.tableShardRows, V, H, "f32");
  if (shards.some((s) => s.buf.buffer === args.dOut.buffer || s.buf.buffer === args.ids.buffer)) throw new Error(`${who}: dTable aliases an input`);
  const VW = vecWidth(H);
  const WG = rowWorkgroup(gpu, H / VW, args.workgroupSize);
  const kernel = gpu.kernel(`embedding_bwd_wg${WG}_v${VW}${accumulate ? "_acc" : ""}`, embeddingBackwardWgsl({ WG, VW, accumulate }));
  for (const s of shards) gpu.dispatch(kernel, [args.ids, args.dOut, s.buf], foldGrid(gpu, M), new Uint32Array([M, H / VW, s.rows, s.v0]));
}

export function embeddingReference(ids: ArrayLike<number>, table: ArrayLike<number>, V: number, H: number): Float64Array {
  const M = ids.length;
  const out = new Float64Array(M * H);
  for (let m = 0; m < M; m++) {
    const id = ids[m];
    if (id >= V) continue;
    for (let j = 0; j < H; j++) out[m * H + j] = table[id * H + j];
  }
  return out;
}

/** float64 dTable (all V rows; untouched rows 0) and the set of touched rows. */
export function embeddingBackwardReference(ids: ArrayLike<number>, dOut: ArrayLike<number>, V: number, H: number): { dTable: Float64Array; touched: Set<number> } {
  const dTable = new Float64Array(V * H);
  const touched = new Set<number>();
  for (let m = 0; m < ids.length; m++) {
    const id = ids[m];
    if (id >= V) continue;
    touched.add(id);
    for (let j = 0; j < H; j++) dTable[id * H + j] += dOut[m * H + j];
  }
  return { dTable, touched };
}
