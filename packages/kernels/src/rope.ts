// Rotary position embedding (RoPE), rotate-half convention of HF Llama/Qwen2/Qwen3: for each head vector of
// dimension D and each i < D/2, the pair (x_i, x_{i+D/2}) rotates by the angle a = pos · θ^(−2i/D):
//
//   out_i       = x_i · cos a − x_{i+D/2} · sin a
//   out_{i+D/2} = x_{i+D/2} · cos a + x_i · sin a
//
// q is [tokens, Hq, D] and k [tokens, Hkv, D] with tokens = B·T flattened; `positions` (u32 [tokens]) gives each
// token its own position, so left-padded batches and packed sequences work. One dispatch rotates q and k
// (in place, or into qOut/kOut). Backward: the rotation is orthogonal, so dx = R(−a)·dy — the same kernel with the
// sine negated (`ropeBackward`).
//
// Kernel: one invocation per (token, group of HG heads, V consecutive pairs), V = 4 when D/2 % 4 == 0 (vec4 loads
// of x_i.. and x_{i+D/2}..), else 1. It computes the V angles once and rotates them in each of its heads (q's heads
// first, then k's). HG = all heads on CPU adapters (the trig is the expensive part there), 1 on GPUs (parallelism).
//
// Precision (documented bound, asserted in rope.test.ts). Everything is f32, computed on the fly:
//   invFreq_i = exp2(i · (−2·log2 θ / D))   (the constant in float64 on the host, rounded once to f32)
//   a         = f32(pos) · invFreq_i        (as HF computes it: inv_freq and the angle in float32)
//   cos/sin   of a after an explicit Cody–Waite reduction to [−π, π] (k = round(a/2π); a − k·C1 − k·C2 with
//             C1 = 6.28125 exact in 8 bits, so k·C1 is exact for k < 2¹⁵, i.e. |a| < ~2·10⁵), so the result does
//             not depend on how a driver's sin/cos treats large arguments.
//   The angle's relative error is ≤ (8 + 3·e)·2⁻²⁴ with e = 2i/D·log2 θ (exp2 is good to 3 + 2|e| ulp in WGSL,
//   the exponent's rounding adds e·ln2 ulp, the product one more). At i = 0 that is ≈ pos·5·10⁻⁷ rad: 2·10⁻³ rad
//   at position 4096 — the same float32 angle error HF's reference implementation has; it grows linearly with
//   position. Output error vs float64: ≤ (|x_i| + |x_{i+D/2}|)·(angle error + ε_trig + 4·2⁻²⁴), ε_trig = 2⁻²⁰
//   (measured on lavapipe; NVIDIA's sin/cos hardware is good to 2⁻²¹·⁴ on [−π, π]; WGSL itself only promises 2⁻¹¹).
// Not covered: rope_scaling variants (linear/dynamic NTK/YaRN/Llama-3 frequency scaling) and partial rotary dims.
import type { Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import { FLAT_WG, foldGrid, isCpuAdapter, requireBuffer, requireCount, requireF16, vecType, vecWidth, type Dtype } from "./elementwise.js";

export interface RopeArgs {
  /** q [tokens, Hq, D] (for the backward: dq). Rotated in place unless qOut is given. */
  q: GpuBuffer;
  /** Optional k [tokens, Hkv, D] (for the backward: dk). */
  k?: GpuBuffer;
  /** u32 [tokens]: the position of each token. */
  positions: GpuBuffer;
  /** Out-of-place outputs: give qOut (and kOut when k is given) to leave q/k untouched. */
  qOut?: GpuBuffer;
  kOut?: GpuBuffer;
  tokens: number;
  Hq: number;
  /** Heads of k (required with k). */
  Hkv?: number;
  /** Head dimension (even). */
  D: number;
  /** rope_theta from the config: 10000 (Qwen2.5), 1e6 (Qwen3), … */
  theta: number;
  dtype?: Dtype;
  /** Heads each invocation rotates (default: all on CPU adapters, 1 on GPUs). For tests and tuning. */
  headsPerInvocation?: number;
}

const WG = 256;
const TWO_PI_C1 = 6.28125; // 201/32: exact in 8 bits
const TWO_PI_C2 = 2 * Math.PI - TWO_PI_C1;

export function ropeWgsl(o: { dtype: Dtype; hasK: boolean; inPlace: boolean; V: number }): string {
  const { dtype, hasK, inPlace, V } = o;
  const T = vecType(dtype, V);
  const F = vecType("f32", V);
  const b: string[] = [`@group(0) @binding(0) var<storage, read> Pos: array<u32>;`];
  let n = 1;
  const decl = (name: string, rw: boolean) => b.push(`@group(0) @binding(${n++}) var<storage, ${rw ? "read_write" : "read"}> ${name}: array<${T}>;`);
  if (inPlace) {
    decl("Q", true);
    if (hasK) decl("K", true);
  } else {
    decl("Qi", false);
    if (hasK) decl("Ki", false);
    decl("Q", true);
    if (hasK) decl("K", true);
  }
  b.push(`@group(0) @binding(${n}) var<uniform> u: Params;`);
  const src = (t: string) => (inPlace ? t : `${t}i`);
  const rotate = (t: string) => `
      let x1 = ${F}(${src(t)}[base]);
      let x2 = ${F}(${src(t)}[base + u.halfV]);
      ${t}[base] = ${T}(x1 * c - x2 * s);
      ${t}[base + u.halfV] = ${T}(x2 * c + x1 * s);`;
  const iv = V === 4 ? `vec4<f32>(f32(i0)) + vec4<f32>(0.0, 1.0, 2.0, 3.0)` : `f32(i0)`;
  return /* wgsl */ `
${dtype === "f16" ? "enable f16;" : ""}
struct Params { total: u32, nHG: u32, HG: u32, halfV: u32, Dv: u32, Hq: u32, Hkv: u32, p0: u32, expScale: f32, sinSign: f32, p1: u32, p2: u32 }
${b.join("\n")}

const INV_2PI: f32 = ${(1 / (2 * Math.PI)).toPrecision(17)};
const C1: f32 = ${TWO_PI_C1};
const C2: f32 = ${TWO_PI_C2.toPrecision(17)};

// One invocation per (token, head group, ${V} pair${V > 1 ? "s" : ""}); heads [0, Hq) are q's, [Hq, Hq + Hkv) k's.
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let idx = ${FLAT_WG} * ${WG}u + lid;
  if (idx >= u.total) { return; }
  let gi = idx % u.halfV;
  let rest = idx / u.halfV;
  let hg = rest % u.nHG;
  let t = rest / u.nHG;
  let i0 = gi * ${V}u;
  let a = f32(Pos[t]) * exp2((${iv}) * u.expScale);
  let kk = round(a * INV_2PI);
  let r = fma(-kk, ${F}(C2), fma(-kk, ${F}(C1), a));
  let c = cos(r);
  let s = u.sinSign * sin(r);
  let h0 = hg * u.HG;
  let h1 = min(h0 + u.HG, u.Hq + u.Hkv);
  for (var h = h0; h < h1; h++) {
    if (h < u.Hq) {
      let base = (t * u.Hq + h) * u.Dv + gi;${rotate("Q")}
    }${hasK ? ` else {
      let base = (t * u.Hkv + (h - u.Hq)) * u.Dv + gi;${rotate("K")}
    }` : ""}
  }
}
`;
}

function record(gpu: Gpu, args: RopeArgs, inverse: boolean) {
  const who = inverse ? "ropeBackward" : "rope";
  const { tokens, Hq, D, theta } = args;
  const dtype = args.dtype ?? "f32";
  const hasK = !!args.k;
  const Hkv = hasK ? args.Hkv : 0;
  requireCount(who, "tokens", tokens);
  requireCount(who, "Hq", Hq);
  requireCount(who, "D", D);
  if (hasK) requireCount(who, "Hkv (needed with k)", Hkv!);
  if (D % 2 !== 0) throw new Error(`${who}: head dim D must be even (got ${D})`);
  if (!(theta > 0 && Number.isFinite(theta))) throw new Error(`${who}: theta must be a positive number (got ${theta})`);
  requireF16(gpu, who, dtype);
  const inPlace = !args.qOut;
  if (inPlace && args.kOut) throw new Error(`${who}: kOut given without qOut; give both for out-of-place`);
  if (!inPlace && hasK && !args.kOut) throw new Error(`${who}: qOut given without kOut; give both for out-of-place with k`);
  const shape = `tokens=${tokens} Hq=${Hq} Hkv=${Hkv} D=${D}`;
  const nqEl = tokens * Hq * D;
  const nkEl = tokens * (Hkv ?? 0) * D;
  if (nqEl > 2 ** 32 - 1 || nkEl > 2 ** 32 - 1) throw new Error(`${who}: ${shape} overflows 32-bit indexing; split the tokens`);
  requireBuffer(gpu, who, "positions", args.positions, tokens, "u32", shape);
  requireBuffer(gpu, who, "q", args.q, nqEl, dtype, shape);
  if (hasK) requireBuffer(gpu, who, "k", args.k!, nkEl, dtype, shape);
  if (!inPlace) {
    requireBuffer(gpu, who, "qOut", args.qOut!, nqEl, dtype, shape);
    if (hasK) requireBuffer(gpu, who, "kOut", args.kOut!, nkEl, dtype, shape);
    const ins = [args.q.buffer, args.k?.buffer];
    if (ins.includes(args.qOut!.buffer) || (args.kOut && ins.includes(args.kOut.buffer))) {
      throw new Error(`${who}: qOut/kOut alias an input; omit them to rotate in place`);
    }
  }
  if (hasK && args.k!.buffer === args.q.buffer) throw new Error(`${who}: q and k are the same buffer`);
  const half = D / 2;
  const V = vecWidth(half);
  const Htot = Hq + (Hkv ?? 0);
  const HG = args.headsPerInvocation ?? (isCpuAdapter(gpu) ? Htot : 1);
  if (!(Number.isInteger(HG) && HG >= 1)) throw new Error(`${who}: headsPerInvocation must be a positive integer (got ${HG})`);
  const nHG = Math.ceil(Htot / HG);
  const total = tokens * nHG * (half / V);
  if (total > 2 ** 32 - 1) throw new Error(`${who}: ${shape} overflows 32-bit indexing; split the tokens`);
  const label = `rope_${dtype}${hasK ? "_qk" : "_q"}_v${V}${inPlace ? "_inplace" : ""}`;
  const kernel = gpu.kernel(label, ropeWgsl({ dtype, hasK, inPlace, V }));
  const params = new ArrayBuffer(48);
  new Uint32Array(params).set([total, nHG, HG, half / V, D / V, Hq, Hkv ?? 0, 0]);
  new Float32Array(params).set([(-2 * Math.log2(theta)) / D, inverse ? -1 : 1], 8);
  const bufs = inPlace
    ? [args.positions, args.q, ...(hasK ? [args.k!] : [])]
    : [args.positions, args.q, ...(hasK ? [args.k!] : []), args.qOut!, ...(hasK ? [args.kOut!] : [])];
  gpu.dispatch(kernel, bufs, foldGrid(gpu, Math.ceil(total / WG)), params);
}

/** Record the RoPE rotation of q (and k), in place or into qOut/kOut. */
export function rope(gpu: Gpu, args: RopeArgs): void {
  record(gpu, args, false);
}

/** Record the backward: pass dq (and dk) in the q/k slots; they rotate by −angle (in place or into qOut/kOut). */
export function ropeBackward(gpu: Gpu, args: RopeArgs): void {
  record(gpu, args, true);
}

/** float64 reference for one tensor [tokens, H, D]; `inverse` rotates by −angle (= the backward). */
export function ropeReference(
  x: ArrayLike<number>,
  positions: ArrayLike<number>,
  o: { tokens: number; H: number; D: number; theta: number; inverse?: boolean },
): Float64Array {
  const { tokens, H, D, theta } = o;
  const half = D / 2;
  const sign = o.inverse ? -1 : 1;
  const out = new Float64Array(tokens * H * D);
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < H; h++) {
      const base = (t * H + h) * D;
      for (let i = 0; i < half; i++) {
        const a = positions[t] * Math.pow(theta, (-2 * i) / D);
        const c = Math.cos(a);
        const s = sign * Math.sin(a);
        const x1 = x[base + i];
        const x2 = x[base + i + half];
        out[base + i] = x1 * c - x2 * s;
        out[base + i + half] = x2 * c + x1 * s;
      }
    }
  }
  return out;
}

/** float64 reference backward: dx = R(−a)·dy. */
export function ropeBackwardReference(
  dy: ArrayLike<number>,
  positions: ArrayLike<number>,
  o: { tokens: number; H: number; D: number; theta: number },
): Float64Array {
  return ropeReference(dy, positions, { ...o, inverse: true });
}

/** The per-element error bound stated in the header, for x [tokens, H, D] at the given positions. */
export function ropeErrorBound(
  x: ArrayLike<number>,
  positions: ArrayLike<number>,
  o: { tokens: number; H: number; D: number; theta: number; trigError?: number },
): Float64Array {
  const { tokens, H, D, theta } = o;
  const half = D / 2;
  const eps = 2 ** -24;
  const trig = o.trigError ?? 2 ** -20;
  const out = new Float64Array(tokens * H * D);
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < H; h++) {
      const base = (t * H + h) * D;
      for (let i = 0; i < half; i++) {
        const e = ((2 * i) / D) * Math.log2(theta);
        const a = positions[t] * Math.pow(theta, (-2 * i) / D);
        const b = (Math.abs(x[base + i]) + Math.abs(x[base + i + half])) * (a * (8 + 3 * e) * eps + trig + 4 * eps);
        out[base + i] = b;
        out[base + i + half] = b;
      }
    }
  }
  return out;
}
