// Fused decode kernels: one generated token per row (M ≤ 8 rows) through a dense f32 layer in five dispatches instead
// of thirteen. Decoder.step takes this path on CPU adapters (packages/model/src/decode-fused.ts).
//
// Why: on lavapipe a decode step of a small model is mostly fixed cost, not arithmetic. Measured on the 2-core
// machine (Mesa 25.0 lavapipe): 54 near-empty dispatches in one submit take 2.6–4.4 ms to run and wait for, about as
// long as streaming all 18 MB of weights of the rollout bench's model at lavapipe's ~8 GB/s; each dispatch hands
// work to llvmpipe's thread pool and waits for it. So every kernel here does a whole sub-layer:
//
//   decodeQkv      x → RMSNorm → q, k, v projections (+ bias) → RoPE on q and k → k, v written into the KV cache
//   (attention)    attentionDecode, unchanged
//   decodeResidual x += W · a                      (o_proj after attention, down_proj after the MLP)
//   decodeGateUp   x → RMSNorm → silu(W_gate · h) ⊙ (W_up · h)
//
// The RMSNorm is folded into the GEMV: W·(w ⊙ x / rms(x)) = (W·(w ⊙ x)) / rms(x), so each invocation runs down
// x once (the x loads are the same address for every invocation of the workgroup, which llvmpipe loads once), sums
// x² on the way and scales its dot products at the end. No pass writes the normalised h.
//
// GEMV layout: W is nn.Linear's [N, K] row-major; an invocation owns R output rows and walks K in vec4s, one vec4
// of each of its rows per step, for all M token rows at once (M is compiled in: accumulators stay in registers).
// decodeQkv's invocation owns the rotation pair (i, i + D/2) of one head, so RoPE needs no other invocation; a
// workgroup is one head (D/2 invocations), so which weight it reads is uniform per workgroup.
//
// Precision: f32 throughout. Against the unfused path (rmsnorm, then the matmul) only the order of the roundings
// differs: the norm's scale multiplies the finished dot product instead of each input. RoPE uses rope.ts's angle
// and reduction (same constants), so q and k match the rope kernel's bound.
import type { Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import { requireBuffer, requireCount } from "./elementwise.js";
import { ROPE_REDUCTION_CONSTS } from "./rope.js";
import { memoWgsl } from "./wgsl-cache.js";

/** The most token rows one fused dispatch takes (its accumulators are registers: M × rows per invocation). */
export const DECODE_MAX_ROWS = 8;

const range = (n: number) => [...Array(n).keys()];

/** Sum of squares of each token row of X (rows `M`, K4 vec4s each): `ss${m}` in the caller's scope. */
function sumSquaresWgsl(M: number): string {
  const L = range(M).map((m) => `var ss${m} = 0.0;`);
  L.push(`for (var k = 0u; k < u.K4; k++) {`);
  for (const m of range(M)) L.push(`  let x${m} = X[${m}u * u.K4 + k]; ss${m} = fma(x${m}.x, x${m}.x, fma(x${m}.y, x${m}.y, fma(x${m}.z, x${m}.z, fma(x${m}.w, x${m}.w, ss${m}))));`);
  L.push(`}`);
  for (const m of range(M)) L.push(`let inv${m} = inverseSqrt(ss${m} / f32(u.K4 * 4u) + u.eps);`);
  return L.join("\n  ");
}

/**
 * The dot products of weight rows `rows` (WGSL expressions, row indices into `w`) with every token row of `src`
 * (optionally times the norm weight NW): accumulators `acc${j}_${m}` (vec4) declared by the caller.
 */
function dotLoopWgsl(w: string, src: string, rows: string[], M: number, norm: boolean): string {
  const L = [`for (var k = 0u; k < u.K4; k++) {`];
  rows.forEach((r, j) => L.push(`  let w${j} = ${w}[(${r}) * u.K4 + k];`));
  if (norm) L.push(`  let nw = NW[k];`);
  for (const m of range(M)) {
    L.push(`  let x${m} = ${src}[${m}u * u.K4 + k]${norm ? " * nw" : ""};`);
    rows.forEach((_, j) => L.push(`  acc${j}_${m} = fma(w${j}, x${m}, acc${j}_${m});`));
  }
  L.push(`}`);
  return L.join("\n    ");
}

const hsum = (v: string) => `(${v}.x + ${v}.y + ${v}.z + ${v}.w)`;
const accDecls = (rows: number, M: number) => range(rows).flatMap((j) => range(M).map((m) => `var acc${j}_${m} = vec4<f32>(0.0);`)).join("\n  ");

export function decodeQkvWgsl(o: { M: number; bias: boolean; half: number }): string {
  const { M, bias, half } = o;
  const rows = ["r1", "r2"];
  const branch = (w: string) => dotLoopWgsl(w, "X", rows, M, true);
  const out: string[] = [];
  for (const m of range(M)) {
    out.push(`{`);
    out.push(`  var y1 = ${hsum(`acc0_${m}`)} * inv${m};`);
    out.push(`  var y2 = ${hsum(`acc1_${m}`)} * inv${m};`);
    if (bias) out.push(`  if (hh < u.Hq) { y1 += BQ[r1]; y2 += BQ[r2]; } else if (hh < u.Hq + u.Hkv) { y1 += BK[r1]; y2 += BK[r2]; } else { y1 += BV[r1]; y2 += BV[r2]; }`);
    out.push(`  let pos = POS[${m}u];`);
    out.push(`  if (hh < u.Hq + u.Hkv) {`);
    out.push(`    let a = f32(pos) * exp2(f32(i) * u.expScale);`);
    out.push(`    let kk = round(a * INV_2PI);`);
    out.push(`    let r = fma(-kk, C2, fma(-kk, C1, a));`);
    out.push(`    let c = cos(r); let s = sin(r);`);
    out.push(`    let z1 = y1 * c - y2 * s; y2 = y2 * c + y1 * s; y1 = z1;`);
    out.push(`  }`);
    out.push(`  if (hh < u.Hq) { let o = ${m}u * u.Hq * u.D; Q[o + r1] = y1; Q[o + r2] = y2; }`);
    out.push(`  else {`);
    out.push(`    let o = (${m}u * u.Tmax + pos) * u.Hkv * u.D;`);
    out.push(`    if (hh < u.Hq + u.Hkv) { KC[o + r1] = y1; KC[o + r2] = y2; } else { VC[o + r1] = y1; VC[o + r2] = y2; }`);
    out.push(`  }`);
    out.push(`}`);
  }
  const biasDecl = bias
    ? `@group(0) @binding(9) var<storage, read> BQ: array<f32>;
@group(0) @binding(10) var<storage, read> BK: array<f32>;
@group(0) @binding(11) var<storage, read> BV: array<f32>;
@group(0) @binding(12) var<uniform> u: Params;`
    : `@group(0) @binding(9) var<uniform> u: Params;`;
  return /* wgsl */ `
struct Params { K4: u32, Hq: u32, Hkv: u32, D: u32, Tmax: u32, eps: f32, expScale: f32, pad: u32 }
@group(0) @binding(0) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> NW: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> WQ: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> WK: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> WV: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> POS: array<u32>;
@group(0) @binding(6) var<storage, read_write> Q: array<f32>;
@group(0) @binding(7) var<storage, read_write> KC: array<f32>;
@group(0) @binding(8) var<storage, read_write> VC: array<f32>;
${biasDecl}
${ROPE_REDUCTION_CONSTS}

// Workgroup hh = one head (q heads, then k heads, then v heads); invocation i = its rotation pair (i, i + D/2).
@compute @workgroup_size(${half})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) i: u32) {
  let hh = wid.x;
  ${sumSquaresWgsl(M)}
  ${accDecls(2, M)}
  var head = hh;
  if (hh >= u.Hq) { head = (hh - u.Hq) % u.Hkv; }
  let r1 = head * u.D + i;
  let r2 = r1 + u.D / 2u;
  if (hh < u.Hq) {
    ${branch("WQ")}
  } else if (hh < u.Hq + u.Hkv) {
    ${branch("WK")}
  } else {
    ${branch("WV")}
  }
  ${out.join("\n  ")}
}
`;
}

export function decodeGateUpWgsl(o: { M: number; R: number; WG: number }): string {
  const { M, R, WG } = o;
  // rows j < R of the gate, then the same rows of up: accumulators acc{j} (gate) and acc{R+j} (up)
  const rowExpr = range(R).map((j) => `n${j}`);
  const L: string[] = [];
  L.push(...range(R).map((j) => `let n${j} = min(nb + ${j}u, u.N - 1u);`));
  L.push(accDecls(2 * R, M));
  const loop = [`for (var k = 0u; k < u.K4; k++) {`, `  let nw = NW[k];`];
  rowExpr.forEach((r, j) => loop.push(`  let g${j} = WG_[${r} * u.K4 + k]; let p${j} = WU[${r} * u.K4 + k];`));
  for (const m of range(M)) {
    loop.push(`  let x${m} = X[${m}u * u.K4 + k] * nw;`);
    range(R).forEach((j) => loop.push(`  acc${j}_${m} = fma(g${j}, x${m}, acc${j}_${m}); acc${R + j}_${m} = fma(p${j}, x${m}, acc${R + j}_${m});`));
  }
  loop.push(`}`);
  L.push(loop.join("\n  "));
  for (const j of range(R)) {
    L.push(`if (nb + ${j}u < u.N) {`);
    for (const m of range(M)) {
      L.push(`  { let g = ${hsum(`acc${j}_${m}`)} * inv${m}; let p = ${hsum(`acc${R + j}_${m}`)} * inv${m};`);
      L.push(`    ACT[${m}u * u.N + nb + ${j}u] = g / (1.0 + exp(-g)) * p; }`);
    }
    L.push(`}`);
  }
  return /* wgsl */ `
struct Params { K4: u32, N: u32, eps: f32, pad: u32 }
@group(0) @binding(0) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> NW: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> WG_: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> WU: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> ACT: array<f32>;
@group(0) @binding(5) var<uniform> u: Params;

// Invocation g owns rows nb … nb + ${R - 1} of the gate and of up.
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let nb = gid.x * ${R}u;
  ${sumSquaresWgsl(M)}
  ${L.join("\n  ")}
}
`;
}

export function decodeResidualWgsl(o: { M: number; R: number; WG: number }): string {
  const { M, R, WG } = o;
  const L: string[] = [];
  L.push(...range(R).map((j) => `let n${j} = min(nb + ${j}u, u.N - 1u);`));
  L.push(accDecls(R, M));
  L.push(dotLoopWgsl("W", "A", range(R).map((j) => `n${j}`), M, false));
  for (const j of range(R)) {
    L.push(`if (nb + ${j}u < u.N) {`);
    for (const m of range(M)) L.push(`  X[${m}u * u.N + nb + ${j}u] += ${hsum(`acc${j}_${m}`)};`);
    L.push(`}`);
  }
  return /* wgsl */ `
struct Params { K4: u32, N: u32 }
@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> W: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> X: array<f32>;
@group(0) @binding(3) var<uniform> u: Params;

// Invocation g owns output rows nb … nb + ${R - 1}: x[m, n] += W[n, :] · a[m, :].
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let nb = gid.x * ${R}u;
  ${L.join("\n  ")}
}
`;
}

const qkvText = memoWgsl(decodeQkvWgsl);
const gateUpText = memoWgsl(decodeGateUpWgsl);
const residualText = memoWgsl(decodeResidualWgsl);

/** Rows per invocation and workgroup size of the plain GEMVs (measured on lavapipe, see the header). */
export interface DecodeTile {
  R: number;
  WG: number;
}
const DEFAULT_TILE: DecodeTile = { R: 2, WG: 64 };

function checkRows(who: string, M: number) {
  requireCount(who, "M", M);
  if (M > DECODE_MAX_ROWS) throw new Error(`${who}: M=${M} token rows, at most ${DECODE_MAX_ROWS} per fused dispatch`);
}

function checkK(who: string, name: string, K: number) {
  requireCount(who, name, K);
  if (K % 4 !== 0) throw new Error(`${who}: ${name}=${K} must be a multiple of 4 (vec4 loads)`);
}

export interface DecodeQkvArgs {
  /** f32 [M, H]: the residual stream (read only). */
  x: GpuBuffer;
  /** f32 [H]: the input RMSNorm's weight. */
  norm: GpuBuffer;
  /** f32 [Hq·D, H], [Hkv·D, H], [Hkv·D, H]. */
  wq: GpuBuffer;
  wk: GpuBuffer;
  wv: GpuBuffer;
  /** Optional biases (Qwen2): all three or none. */
  bq?: GpuBuffer;
  bk?: GpuBuffer;
  bv?: GpuBuffer;
  /** u32 [M]: each row's position = where its new key/value goes in the cache. */
  positions: GpuBuffer;
  /** f32 [M, Hq·D] (written): the rotated queries. */
  q: GpuBuffer;
  /** f32 [M, Tmax, Hkv, D] (written at each row's position). */
  kCache: GpuBuffer;
  vCache: GpuBuffer;
  M: number;
  H: number;
  Hq: number;
  Hkv: number;
  D: number;
  Tmax: number;
  eps: number;
  theta: number;
}

/** Record x → RMSNorm → q/k/v (+ bias) → RoPE → q, and k/v into the cache at each row's position. */
export function decodeQkv(gpu: Gpu, a: DecodeQkvArgs): void {
  const who = "decodeQkv";
  const { M, H, Hq, Hkv, D, Tmax } = a;
  checkRows(who, M);
  checkK(who, "H", H);
  for (const [n, v] of [["Hq", Hq], ["Hkv", Hkv], ["D", D], ["Tmax", Tmax]] as const) requireCount(who, n, v);
  if (D % 2 !== 0 || D / 2 > 256) throw new Error(`${who}: head dim D=${D} must be even and at most 512`);
  if (Hq % Hkv !== 0) throw new Error(`${who}: Hq=${Hq} is not a multiple of Hkv=${Hkv}`);
  const bias = !!a.bq;
  if (bias !== !!a.bk || bias !== !!a.bv) throw new Error(`${who}: give all three biases (bq, bk, bv) or none`);
  const f = (name: string, buf: GpuBuffer, n: number, shape: string) => requireBuffer(gpu, who, name, buf, n, "f32", shape);
  f("x", a.x, M * H, `[M=${M}, H=${H}]`);
  f("norm", a.norm, H, `[H=${H}]`);
  f("wq", a.wq, Hq * D * H, `[${Hq * D}, ${H}]`);
  f("wk", a.wk, Hkv * D * H, `[${Hkv * D}, ${H}]`);
  f("wv", a.wv, Hkv * D * H, `[${Hkv * D}, ${H}]`);
  if (bias) {
    f("bq", a.bq!, Hq * D, `[${Hq * D}]`);
    f("bk", a.bk!, Hkv * D, `[${Hkv * D}]`);
    f("bv", a.bv!, Hkv * D, `[${Hkv * D}]`);
  }
  requireBuffer(gpu, who, "positions", a.positions, M, "u32", `[M=${M}]`);
  f("q", a.q, M * Hq * D, `[M=${M}, ${Hq * D}]`);
  f("kCache", a.kCache, M * Tmax * Hkv * D, `[M=${M}, Tmax=${Tmax}, Hkv=${Hkv}, D=${D}]`);
  f("vCache", a.vCache, M * Tmax * Hkv * D, `[M=${M}, Tmax=${Tmax}, Hkv=${Hkv}, D=${D}]`);
  const kernel = gpu.kernel(`decode_qkv_m${M}${bias ? "_bias" : ""}_d${D}`, qkvText({ M, bias, half: D / 2 }));
  const p = new ArrayBuffer(32);
  new Uint32Array(p).set([H / 4, Hq, Hkv, D, Tmax]);
  new Float32Array(p).set([a.eps, (-2 * Math.log2(a.theta)) / D], 5);
  const bufs = [a.x, a.norm, a.wq, a.wk, a.wv, a.positions, a.q, a.kCache, a.vCache, ...(bias ? [a.bq!, a.bk!, a.bv!] : [])];
  gpu.dispatch(kernel, bufs, [Hq + 2 * Hkv], p);
}

export interface DecodeGateUpArgs {
  /** f32 [M, H]: the residual stream. */
  x: GpuBuffer;
  /** f32 [H]: the post-attention RMSNorm's weight. */
  norm: GpuBuffer;
  /** f32 [I, H] each. */
  wGate: GpuBuffer;
  wUp: GpuBuffer;
  /** f32 [M, I] (written): silu(gate) ⊙ up. */
  act: GpuBuffer;
  M: number;
  H: number;
  I: number;
  eps: number;
  tile?: DecodeTile;
}

/** Record x → RMSNorm → silu(W_gate·h) ⊙ (W_up·h). */
export function decodeGateUp(gpu: Gpu, a: DecodeGateUpArgs): void {
  const who = "decodeGateUp";
  const { M, H, I } = a;
  checkRows(who, M);
  checkK(who, "H", H);
  requireCount(who, "I", I);
  const f = (name: string, buf: GpuBuffer, n: number, shape: string) => requireBuffer(gpu, who, name, buf, n, "f32", shape);
  f("x", a.x, M * H, `[M=${M}, H=${H}]`);
  f("norm", a.norm, H, `[H=${H}]`);
  f("wGate", a.wGate, I * H, `[I=${I}, H=${H}]`);
  f("wUp", a.wUp, I * H, `[I=${I}, H=${H}]`);
  f("act", a.act, M * I, `[M=${M}, I=${I}]`);
  const { R, WG } = a.tile ?? DEFAULT_TILE;
  const kernel = gpu.kernel(`decode_gate_up_m${M}_r${R}_wg${WG}`, gateUpText({ M, R, WG }));
  const p = new ArrayBuffer(16);
  new Uint32Array(p).set([H / 4, I]);
  new Float32Array(p)[2] = a.eps;
  gpu.dispatch(kernel, [a.x, a.norm, a.wGate, a.wUp, a.act], [Math.ceil(I / (R * WG))], p);
}

export interface DecodeResidualArgs {
  /** f32 [M, K]: the sub-layer's input (attention output, or the MLP's activation). */
  a: GpuBuffer;
  /** f32 [N, K]. */
  w: GpuBuffer;
  /** f32 [M, N]: the residual stream, updated in place. */
  x: GpuBuffer;
  M: number;
  N: number;
  K: number;
  tile?: DecodeTile;
}

/** Record x += a · Wᵀ. */
export function decodeResidual(gpu: Gpu, a: DecodeResidualArgs): void {
  const who = "decodeResidual";
  const { M, N, K } = a;
  checkRows(who, M);
  checkK(who, "K", K);
  requireCount(who, "N", N);
  const f = (name: string, buf: GpuBuffer, n: number, shape: string) => requireBuffer(gpu, who, name, buf, n, "f32", shape);
  f("a", a.a, M * K, `[M=${M}, K=${K}]`);
  f("w", a.w, N * K, `[N=${N}, K=${K}]`);
  f("x", a.x, M * N, `[M=${M}, N=${N}]`);
  const { R, WG } = a.tile ?? DEFAULT_TILE;
  const kernel = gpu.kernel(`decode_residual_m${M}_r${R}_wg${WG}`, residualText({ M, R, WG }));
  gpu.dispatch(kernel, [a.a, a.w, a.x], [Math.ceil(N / (R * WG))], new Uint32Array([K / 4, N]));
}
