// Sampling family: next-token selection on the GPU over logits [B, V] (V up to 151936), so that only the sampled
// ids and their log-probs come back to the host.
//
//  - `sampleTokens`: temperature, top-k, top-p (nucleus), min-p, greedy; a seeded counter-based RNG
//    (Philox-4x32-10) keyed by (seed) with counter (sequence id, step, SAMPLING_STREAM, 0), so a row's draw
//    depends only on its logits, the seed, its sequence id and the step — not on the batch it is in.
//    Output per row: the sampled id (u32) and its log-prob under the *sampling* distribution (after temperature
//    and the top-k / top-p / min-p renormalisation); greedy rows get log-prob 0 (a point mass).
//  - `repetitionPenalty`: HF semantics in place on the logits: for every distinct id seen in the row's token
//    history, a logit x becomes x / penalty if x > 0 and x · penalty otherwise.
//  - `philoxFill`: raw Philox-4x32-10 blocks (tests compare them bit for bit with `philox4x32`; also usable for
//    dropout masks and the like).
//
// Semantics (HF warper order: temperature → top-k → top-p → min-p), with z = logits / T:
//  top-k: keep z ≥ the k-th largest z (ties at the boundary are all kept, as HF's `scores < topk[-1]` test);
//  top-p: over the top-k survivors renormalised, keep a token iff the probability mass of the tokens with a
//         strictly larger z is < top_p (so the top token is always kept; ties at the boundary are kept together);
//  min-p: keep p ≥ min_p · p_max, i.e. e^{z − max z} ≥ min_p.
// Kernel (one workgroup per row, WG = 256 invocations, 64 for V ≤ 4096):
//  1. max / argmax (ties → lowest id) by a workgroup reduction; greedy rows stop here.
//  2. top-k threshold = the exact k-th largest order key (f32 bits mapped to a monotone u32) by an MSB-first
//     radix select: 4 passes, each a 256-bin histogram in workgroup atomics over the keys that match the prefix.
//  3. top-p threshold: binary search on the u32 key space for the smallest key x with
//        Σ_{key_i > x, kept by top-k} e^{z_i − M}  <  top_p · Σ_{kept by top-k} e^{z_i − M}
//     (≤ 32 rounds, each a full-row pass + workgroup sum; the predicate is monotone in x, and x = max key always
//     satisfies it). Exact up to f32 summation: a token whose cumulative-mass boundary lies within ~1e-6 of top_p
//     may fall on either side.
//  4. inverse CDF in index order: each invocation owns a contiguous run of ids and sums its kept e^{z−M}; an
//     exclusive scan over invocations gives run offsets; u·total (u from Philox) lands in exactly one run, whose
//     owner walks it to the id. log-prob = z_id − M − log(total).
import type { Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";

/** Third counter word of every sampling draw (keeps sampling streams apart from other uses of the same seed). */
export const SAMPLING_STREAM = 0x53414d50; // "SAMP"

export interface SamplingParams {
  /** Softmax temperature; 0 (or `greedy`) selects argmax. Default 1. */
  temperature?: number;
  /** Keep the k most likely tokens (0 = off). */
  topK?: number;
  /** Nucleus mass in (0, 1] (1 = off). */
  topP?: number;
  /** Keep tokens with p ≥ minP · p_max, minP in [0, 1] (0 = off). */
  minP?: number;
  greedy?: boolean;
}

export interface SampleArgs extends SamplingParams {
  /** Logits [B, V] f32 (not modified). */
  logits: GpuBuffer;
  B: number;
  V: number;
  /** Outputs [B]: sampled ids (u32) and their log-probs under the sampling distribution (f32). */
  ids: GpuBuffer;
  logp: GpuBuffer;
  /** RNG seed (a non-negative integer below 2^53; split into two 32-bit key words). */
  seed: number;
  /** Counter word 2: the decode step (a non-negative integer below 2^32). */
  step: number;
  /** Optional per-row sequence ids [B] u32 (counter word 1); default: the row index. */
  seqIds?: GpuBuffer;
}

// ---------------------------------------------------------------------------------------------------------
// Philox-4x32-10 (Salmon et al., SC'11), shared WGSL + host implementations

const PHILOX_M0 = 0xd2511f53;
const PHILOX_M1 = 0xcd9e8d57;
const PHILOX_W0 = 0x9e3779b9;
const PHILOX_W1 = 0xbb67ae85;

const PHILOX_WGSL = /* wgsl */ `
// 32×32 → 64-bit product as (hi, lo) from 16-bit halves (WGSL has no 64-bit integers).
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
  let a0 = a & 0xffffu; let a1 = a >> 16u;
  let b0 = b & 0xffffu; let b1 = b >> 16u;
  let p00 = a0 * b0; let p01 = a0 * b1; let p10 = a1 * b0; let p11 = a1 * b1;
  let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
  return vec2<u32>(p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u), a * b);
}
fn philox(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = ctr;
  var k = key;
  for (var r = 0u; r < 10u; r++) {
    let p = mulhilo(${PHILOX_M0}u, c.x);
    let q = mulhilo(${PHILOX_M1}u, c.z);
    c = vec4<u32>(q.x ^ c.y ^ k.x, q.y, p.x ^ c.w ^ k.y, p.y);
    k += vec2<u32>(${PHILOX_W0}u, ${PHILOX_W1}u);
  }
  return c;
}
// Uniform in [0, 1) from the top 24 bits (exact in f32).
fn u01(x: u32) -> f32 { return f32(x >> 8u) * ${2 ** -24}; }
`;

function mulhilo(a: number, b: number): [number, number] {
  const a0 = a & 0xffff;
  const a1 = a >>> 16;
  const b0 = b & 0xffff;
  const b1 = b >>> 16;
  const p00 = a0 * b0;
  const p01 = a0 * b1;
  const p10 = a1 * b0;
  const p11 = a1 * b1;
  const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  const hi = (p11 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16)) >>> 0;
  return [hi, Math.imul(a, b) >>> 0];
}

/** Host Philox-4x32-10: four u32 outputs for counter ctr[4] and key[2] (bit-identical to the WGSL). */
export function philox4x32(ctr: ArrayLike<number>, key: ArrayLike<number>): Uint32Array {
  let c0 = ctr[0] >>> 0, c1 = ctr[1] >>> 0, c2 = ctr[2] >>> 0, c3 = ctr[3] >>> 0;
  let k0 = key[0] >>> 0, k1 = key[1] >>> 0;
  for (let r = 0; r < 10; r++) {
    const [phi, plo] = mulhilo(PHILOX_M0, c0);
    const [qhi, qlo] = mulhilo(PHILOX_M1, c2);
    const n0 = (qhi ^ c1 ^ k0) >>> 0;
    const n2 = (phi ^ c3 ^ k1) >>> 0;
    c0 = n0;
    c1 = qlo;
    c2 = n2;
    c3 = plo;
    k0 = (k0 + PHILOX_W0) >>> 0;
    k1 = (k1 + PHILOX_W1) >>> 0;
  }
  return Uint32Array.of(c0, c1, c2, c3);
}

function seedWords(seed: number): [number, number] {
  if (!(Number.isSafeInteger(seed) && seed >= 0)) throw new Error(`sampling: seed must be a non-negative safe integer (got ${seed})`);
  return [seed % 2 ** 32 >>> 0, Math.floor(seed / 2 ** 32) >>> 0];
}

/** The uniform in [0, 1) that `sampleTokens` draws for (seed, sequence id, step). */
export function samplingUniform(seed: number, seqId: number, step: number): number {
  const x = philox4x32([seqId, step, SAMPLING_STREAM, 0], seedWords(seed))[0];
  return (x >>> 8) * 2 ** -24;
}

// ---------------------------------------------------------------------------------------------------------
// WGSL

export function philoxFillWgsl(): string {
  return /* wgsl */ `
struct Params { n: u32, c1: u32, c2: u32, c3: u32, k0: u32, k1: u32, base: u32, p0: u32 }
@group(0) @binding(0) var<storage, read_write> outv: array<vec4<u32>>;
@group(0) @binding(1) var<uniform> u: Params;
${PHILOX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < u.n; i += nwg.x * 64u) {
    outv[i] = philox(vec4<u32>(u.base + i, u.c1, u.c2, u.c3), vec2<u32>(u.k0, u.k1));
  }
}
`;
}

export function sampleWgsl(WG: number): string {
  return /* wgsl */ `
struct Params { V: u32, B: u32, k0: u32, k1: u32, step: u32, useSeq: u32, topK: u32, greedy: u32,
                invT: f32, topP: f32, minP: f32, p0: u32 }
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> seqIds: array<u32>;
@group(0) @binding(2) var<storage, read_write> outIds: array<u32>;
@group(0) @binding(3) var<storage, read_write> outLogp: array<f32>;
@group(0) @binding(4) var<uniform> u: Params;
${PHILOX_WGSL}

var<workgroup> rf: array<f32, ${WG}>;
var<workgroup> ri: array<u32, ${WG}>;
var<workgroup> ex: array<f32, ${WG + 1}>;
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> bF: f32;
var<workgroup> bU: u32;
var<workgroup> bU2: u32;

// Order-preserving map f32 → u32 (−0 folded onto +0): a < b ⇔ key(a) < key(b).
fn keyOf(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  if (b == 0x80000000u) { return 0x80000000u; }
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn sumAll(lid: u32, v: f32) -> f32 {
  rf[lid] = v;
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (lid < s) { rf[lid] += rf[lid + s]; }
  }
  if (lid == 0u) { bF = rf[0]; }
  return workgroupUniformLoad(&bF);
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wg.x + wg.y * 65535u;
  if (row >= u.B) { return; }
  let base = row * u.V;

  // 1. max and argmax of the raw logits (ties → lowest id: each invocation scans ids in increasing order)
  var bv = 0.0;   // unused until the first id sets it (bi is the sentinel)
  var bi = 0xffffffffu;
  for (var i = lid; i < u.V; i += ${WG}u) {
    let x = logits[base + i];
    if (x > bv || bi == 0xffffffffu) { bv = x; bi = i; }
  }
  rf[lid] = bv;
  ri[lid] = bi;
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (lid < s) {
      let v2 = rf[lid + s]; let i2 = ri[lid + s];
      if (i2 != 0xffffffffu && (ri[lid] == 0xffffffffu || v2 > rf[lid] || (v2 == rf[lid] && i2 < ri[lid]))) {
        rf[lid] = v2;
        ri[lid] = i2;
      }
    }
  }
  if (lid == 0u) { bU = ri[0]; bF = rf[0]; }
  let am = workgroupUniformLoad(&bU);
  let xmax = workgroupUniformLoad(&bF);
  if (u.greedy != 0u) {
    if (lid == 0u) { outIds[row] = am; outLogp[row] = 0.0; }
    return;
  }
  let M = xmax * u.invT;   // = z of the argmax, ≥ every z (rounding is monotone)

  // 2. top-k: exact k-th largest key by radix select
  var thr = 0u;
  if (u.topK > 0u && u.topK < u.V) {
    var prefix = 0u;
    var kRem = u.topK;
    for (var ps = 0u; ps < 4u; ps++) {
      let shift = 24u - 8u * ps;
      let hiMask = select(0xffffffffu << (shift + 8u), 0u, ps == 0u);
      for (var b = lid; b < 256u; b += ${WG}u) { atomicStore(&hist[b], 0u); }
      workgroupBarrier();
      for (var i = lid; i < u.V; i += ${WG}u) {
        let k = keyOf(logits[base + i] * u.invT);
        if ((k & hiMask) == prefix) { atomicAdd(&hist[(k >> shift) & 0xffu], 1u); }
      }
      workgroupBarrier();
      if (lid == 0u) {
        var cum = 0u;
        var sel = 0u;
        for (var b = 255i; b >= 0i; b--) {
          let hb = atomicLoad(&hist[u32(b)]);
          if (cum + hb >= kRem) { sel = u32(b); break; }
          cum += hb;
        }
        bU = prefix | (sel << shift);
        bU2 = kRem - cum;
      }
      prefix = workgroupUniformLoad(&bU);
      kRem = workgroupUniformLoad(&bU2);
    }
    thr = prefix;
  }

  // 3. top-p: smallest key x with mass(key > x) < topP · mass(top-k survivors)
  if (u.topP < 1.0) {
    var zk = 0.0;
    for (var i = lid; i < u.V; i += ${WG}u) {
      let z = logits[base + i] * u.invT;
      if (keyOf(z) >= thr) { zk += exp(z - M); }
    }
    let goal = u.topP * sumAll(lid, zk);
    var lo = thr;
    var hi = keyOf(M);
    while (lo < hi) {
      let mid = lo + (hi - lo) / 2u;
      var s = 0.0;
      for (var i = lid; i < u.V; i += ${WG}u) {
        let z = logits[base + i] * u.invT;
        let k = keyOf(z);
        if (k > mid && k >= thr) { s += exp(z - M); }
      }
      if (sumAll(lid, s) < goal) { hi = mid; } else { lo = mid + 1u; }
    }
    thr = lo;
  }

  // 4. inverse CDF in index order over contiguous runs of ids
  let run = (u.V + ${WG - 1}u) / ${WG}u;
  let i0 = min(lid * run, u.V);
  let i1 = min(i0 + run, u.V);
  var part = 0.0;
  var last = 0xffffffffu;
  for (var i = i0; i < i1; i++) {
    let z = logits[base + i] * u.invT;
    let e = exp(z - M);
    if (keyOf(z) >= thr && e >= u.minP) { part += e; last = i; }
  }
  rf[lid] = part;
  workgroupBarrier();
  if (lid == 0u) {
    var c = 0.0;
    var lastT = 0u;
    for (var t = 0u; t < ${WG}u; t++) {
      ex[t] = c;
      if (rf[t] > 0.0) { lastT = t; }
      c += rf[t];
    }
    ex[${WG}u] = c;
    bU = lastT;
  }
  let lastT = workgroupUniformLoad(&bU);
  let total = ex[${WG}u];
  let seq = select(row, seqIds[row], u.useSeq != 0u);
  let r = u01(philox(vec4<u32>(seq, u.step, ${SAMPLING_STREAM}u, 0u), vec2<u32>(u.k0, u.k1)).x);
  let goal = r * total;
  let lo = ex[lid];
  let mine = part > 0.0 && ((goal >= lo && goal < ex[lid + 1u]) || (goal >= total && lid == lastT));
  if (mine) {
    let tl = goal - lo;
    var c = 0.0;
    var pick = last;
    for (var i = i0; i < i1; i++) {
      let z = logits[base + i] * u.invT;
      let e = exp(z - M);
      if (keyOf(z) >= thr && e >= u.minP) {
        c += e;
        if (c > tl) { pick = i; break; }
      }
    }
    outIds[row] = pick;
    outLogp[row] = (logits[base + pick] * u.invT - M) - log(total);
  }
}
`;
}

export function repetitionPenaltyWgsl(WG = 256): string {
  return /* wgsl */ `
struct Params { V: u32, B: u32, L: u32, W: u32, penalty: f32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read> lengths: array<u32>;
@group(0) @binding(3) var<storage, read_write> seen: array<atomic<u32>>;
@group(0) @binding(4) var<uniform> u: Params;

// One workgroup per row. A bitset over the vocabulary (in scratch memory, zeroed here) marks the ids of the
// row's history; an id is penalised by the single invocation that clears its bit, so repeated ids count once.
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wg.x + wg.y * 65535u;
  if (row >= u.B) { return; }
  let bits = row * u.W;
  for (var w = lid; w < u.W; w += ${WG}u) { atomicStore(&seen[bits + w], 0u); }
  storageBarrier();
  let n = min(lengths[row], u.L);
  for (var i = lid; i < n; i += ${WG}u) {
    let id = tokens[row * u.L + i];
    if (id < u.V) { atomicOr(&seen[bits + id / 32u], 1u << (id % 32u)); }
  }
  storageBarrier();
  for (var i = lid; i < n; i += ${WG}u) {
    let id = tokens[row * u.L + i];
    if (id < u.V) {
      let bit = 1u << (id % 32u);
      let old = atomicAnd(&seen[bits + id / 32u], ~bit);
      if ((old & bit) != 0u) {
        let x = logits[row * u.V + id];
        logits[row * u.V + id] = select(x * u.penalty, x / u.penalty, x > 0.0);
      }
    }
  }
}
`;
}

// ---------------------------------------------------------------------------------------------------------
// Launchers

function checkInt(name: string, what: string, v: number, min: number) {
  if (!(Number.isInteger(v) && v >= min)) throw new Error(`${name}: ${what} must be an integer ≥ ${min} (got ${v})`);
}

function needBytes(name: string, what: string, buf: GpuBuffer | undefined, bytes: number) {
  if (buf && buf.bytes < bytes) throw new Error(`${name}: ${what} holds ${buf.bytes} bytes, needs ${bytes}`);
}

const grid = (n: number): [number, number, number] => [Math.min(n, 65535), Math.ceil(n / 65535), 1];

/** Workgroup size of the sampler for a vocabulary size. */
export function sampleWorkgroupSize(V: number): number {
  return V <= 4096 ? 64 : 256;
}

/** Record sampling of one token per row; only `ids` and `logp` are written. */
export function sampleTokens(gpu: Gpu, a: SampleArgs): void {
  const name = "sampleTokens";
  const { B, V } = a;
  checkInt(name, "B", B, 1);
  checkInt(name, "V", V, 1);
  checkInt(name, "step", a.step, 0);
  if (a.step >= 2 ** 32) throw new Error(`${name}: step must be below 2^32`);
  const T = a.temperature ?? 1;
  const topK = a.topK ?? 0;
  const topP = a.topP ?? 1;
  const minP = a.minP ?? 0;
  if (!(T >= 0) || !Number.isFinite(T)) throw new Error(`${name}: temperature must be ≥ 0 and finite (got ${T})`);
  checkInt(name, "topK", topK, 0);
  if (!(topP > 0 && topP <= 1)) throw new Error(`${name}: topP must be in (0, 1] (got ${topP})`);
  if (!(minP >= 0 && minP <= 1)) throw new Error(`${name}: minP must be in [0, 1] (got ${minP})`);
  needBytes(name, "logits", a.logits, B * V * 4);
  needBytes(name, "ids", a.ids, B * 4);
  needBytes(name, "logp", a.logp, B * 4);
  needBytes(name, "seqIds", a.seqIds, B * 4);
  const [k0, k1] = seedWords(a.seed);
  const greedy = a.greedy || T === 0;
  const WG = sampleWorkgroupSize(V);
  const kernel = gpu.kernel(`sample_wg${WG}`, sampleWgsl(WG));
  const p = new ArrayBuffer(48);
  const pu = new Uint32Array(p);
  const pf = new Float32Array(p);
  pu.set([V, B, k0, k1, a.step, a.seqIds ? 1 : 0, topK, greedy ? 1 : 0]);
  pf[8] = greedy ? 1 : 1 / T;
  pf[9] = topP;
  pf[10] = minP;
  // Without seqIds the binding is a read-only placeholder (the row index is used instead).
  gpu.dispatch(kernel, [a.logits, a.seqIds ?? a.logits, a.ids, a.logp], grid(B), p);
}

/**
 * Record HF repetition penalty in place on logits [B, V]: each distinct id among tokens[b, 0:lengths[b]]
 * (tokens [B, L] u32, row-major; ids ≥ V ignored) gets x / penalty if x > 0, else x · penalty.
 */
export function repetitionPenalty(gpu: Gpu, a: { logits: GpuBuffer; B: number; V: number; tokens: GpuBuffer; lengths: GpuBuffer; L: number; penalty: number }): void {
  const name = "repetitionPenalty";
  checkInt(name, "B", a.B, 1);
  checkInt(name, "V", a.V, 1);
  checkInt(name, "L", a.L, 1);
  if (!(a.penalty > 0) || !Number.isFinite(a.penalty)) throw new Error(`${name}: penalty must be positive (got ${a.penalty})`);
  needBytes(name, "logits", a.logits, a.B * a.V * 4);
  needBytes(name, "tokens", a.tokens, a.B * a.L * 4);
  needBytes(name, "lengths", a.lengths, a.B * 4);
  const W = Math.ceil(a.V / 32);
  const seen = gpu.alloc(a.B * W * 4, "rep_penalty_bits");
  const kernel = gpu.kernel("repetition_penalty", repetitionPenaltyWgsl());
  const p = new ArrayBuffer(32);
  new Uint32Array(p).set([a.V, a.B, a.L, W]);
  new Float32Array(p)[4] = a.penalty;
  gpu.dispatch(kernel, [a.logits, a.tokens, a.lengths, seen], grid(a.B), p);
  gpu.release(seen);
}

/** Record out[i] = Philox-4x32-10(counter (base + i, c1, c2, c3), key = seed words) for i < n (4 u32 each). */
export function philoxFill(gpu: Gpu, a: { out: GpuBuffer; n: number; seed: number; counter?: [number, number, number]; base?: number }): void {
  checkInt("philoxFill", "n", a.n, 1);
  needBytes("philoxFill", "out", a.out, a.n * 16);
  const [k0, k1] = seedWords(a.seed);
  const [c1, c2, c3] = a.counter ?? [0, 0, 0];
  const kernel = gpu.kernel("philox_fill", philoxFillWgsl());
  gpu.dispatch(kernel, [a.out], [Math.min(Math.ceil(a.n / 64), 4096), 1, 1], new Uint32Array([a.n, c1, c2, c3, k0, k1, a.base ?? 0, 0]));
}

// ---------------------------------------------------------------------------------------------------------
// float64 references

/** The sampling distribution of one row (float64; removed tokens get exactly 0). Greedy → one-hot argmax. */
export function samplingDistributionReference(logits: ArrayLike<number>, p: SamplingParams): Float64Array {
  const V = logits.length;
  const out = new Float64Array(V);
  const T = p.temperature ?? 1;
  if (p.greedy || T === 0) {
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    out[best] = 1;
    return out;
  }
  const z = Float64Array.from(logits, (x) => x / T);
  let M = -Infinity;
  for (const v of z) M = Math.max(M, v);
  const keep = new Uint8Array(V).fill(1);
  const topK = p.topK ?? 0;
  if (topK > 0 && topK < V) {
    const kth = [...z].sort((a, b) => b - a)[topK - 1];
    for (let i = 0; i < V; i++) if (z[i] < kth) keep[i] = 0;
  }
  const topP = p.topP ?? 1;
  if (topP < 1) {
    let Zk = 0;
    for (let i = 0; i < V; i++) if (keep[i]) Zk += Math.exp(z[i] - M);
    // mass strictly above each value, ties grouped
    const order = [...Array(V).keys()].filter((i) => keep[i]).sort((a, b) => z[b] - z[a]);
    let above = 0;
    let g = 0;
    while (g < order.length) {
      let e = g;
      let groupMass = 0;
      while (e < order.length && z[order[e]] === z[order[g]]) groupMass += Math.exp(z[order[e++]] - M) / Zk;
      if (!(above < topP)) for (let q = g; q < e; q++) keep[order[q]] = 0;
      above += groupMass;
      g = e;
    }
  }
  const minP = p.minP ?? 0;
  let Z = 0;
  for (let i = 0; i < V; i++) {
    if (keep[i] && Math.exp(z[i] - M) < minP) keep[i] = 0;
    if (keep[i]) Z += Math.exp(z[i] - M);
  }
  for (let i = 0; i < V; i++) out[i] = keep[i] ? Math.exp(z[i] - M) / Z : 0;
  return out;
}

/** float64 sampler with the kernel's inverse-CDF-in-index-order rule for a given uniform u ∈ [0, 1). */
export function sampleReference(logits: ArrayLike<number>, p: SamplingParams, u: number): { id: number; logp: number; probs: Float64Array } {
  const probs = samplingDistributionReference(logits, p);
  if (p.greedy || p.temperature === 0) return { id: probs.indexOf(1), logp: 0, probs };
  let c = 0;
  let last = -1;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue;
    c += probs[i];
    last = i;
    if (c > u) return { id: i, logp: Math.log(probs[i]), probs };
  }
  return { id: last, logp: Math.log(probs[last]), probs };
}

/** HF repetition penalty on one row (float64). */
export function repetitionPenaltyReference(logits: ArrayLike<number>, history: ArrayLike<number>, penalty: number): Float64Array {
  const out = Float64Array.from(logits);
  const seen = new Set<number>();
  for (let i = 0; i < history.length; i++) if (history[i] < out.length) seen.add(history[i]);
  for (const id of seen) out[id] = out[id] > 0 ? out[id] / penalty : out[id] * penalty;
  return out;
}
