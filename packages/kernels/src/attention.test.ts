import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGpu, type Gpu, toF16Array, f32ToF16Bits, f16BitsToF32 } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import {
  attention,
  attentionBackward,
  attentionBackwardReference,
  attentionDecode,
  attentionReference,
  kvCacheAppend,
  kvCacheAppendReference,
  type AttentionDtype,
  type AttentionRefOpts,
} from "./attention.js";
import { compare, describeReport, freshSeed, NAN_F16X2_BITS, NAN_F32_BITS, randInt, randn, rng, roundToF16 } from "./testing.js";

// Error bounds (η = 2⁻²⁴), per element, against the float64 reference on the same (f16-rounded) inputs:
//   rel = η·(4D + 8n + 64), n = the row's visible keys (for dk/dv: the sequence length T)
//   o:        rel·(1 + S)·Σ_s p_s|v_s|                 S = max_s scale·Σ_i|q_i k_si| of the row
//   lse:      rel·(1 + S + |lse|)                       (−∞ exactly for a row with no visible key)
//   dq/dk/dv: rel·(magnitude sums of attentionBackwardReference), which carry the (1 + S + |lse|) factor of P
// plus, for f16 outputs, the storage rounding 2⁻¹¹|ref| + 2⁻²⁴. Derivation: a score's f32 dot product is off by
// ≤ D·η·S (plus the scale·log2e rounding), which moves every softmax weight by that relative amount; exp2 adds a few
// ulp times (1 + |argument|); the sums over n keys add n·η; the backward's dP and Δ dot products add D·η of their
// magnitude sums. The bound is a worst case; errors seen are ~1–5 % of it (logged). A wrong head, row or key
// (including an off-by-one in causality or padding) moves outputs by O(1/n) of their magnitude: ≫ the bound.
const ETA = 2 ** -24;
const F16_REL = 2 ** -11;
const F16_ABS = 2 ** -24;

let gpu: Gpu;
const seed = freshSeed();
const rand = rng(seed);

beforeAll(async () => {
  gpu = await createGpu();
  console.log(`attention tests on ${gpu.adapterName} (f16: ${gpu.hasF16}); seed ${seed} (NR_SEED=${seed} to replay)`);
});
afterAll(() => {
  console.log(`attention: worst error/bound seen: ${JSON.stringify(worst)}`);
  gpu?.destroy();
});

const worst: Record<string, number> = {};
const f16 = (x: Float32Array) => roundToF16(x, f32ToF16Bits, f16BitsToF32);
const asDtype = (x: Float32Array, dt: AttentionDtype) => (dt === "f16" ? f16(x) : x);
const up = (x: Float32Array, dt: AttentionDtype) => (dt === "f16" ? gpu.upload(toF16Array(x)) : gpu.upload(x));
const poisoned = (count: number, dt: AttentionDtype | "u32", label = "out") => {
  const b = gpu.alloc(Math.max(4, Math.ceil((count * (dt === "f16" ? 2 : 4)) / 4) * 4), label);
  gpu.fill32(b, dt === "f16" ? NAN_F16X2_BITS : NAN_F32_BITS);
  return b;
};
const read = (b: GpuBuffer, count: number, dt: AttentionDtype) => (dt === "f16" ? gpu.readF16(b, count) : gpu.readF32(b, count));

function expectClose(what: string, got: ArrayLike<number>, want: ArrayLike<number>, bound: ArrayLike<number>) {
  const r = compare(got, want, bound);
  const key = `${what.split(" ")[0]}${what.includes('"f16"') ? "/f16" : ""}`;
  if (Number.isFinite(r.worst)) worst[key] = Math.max(worst[key] ?? 0, r.worst);
  expect(r.ok, `${what}: ${describeReport(r)} (seed ${seed})`).toBe(true);
}

const withF16 = (bound: Float64Array, want: ArrayLike<number>, dt: AttentionDtype) =>
  dt === "f16" ? bound.map((b, i) => b + F16_REL * Math.abs(want[i]) + F16_ABS) : bound;

/** Per-element forward bounds for o [B, Tq, Hq, D] and lse [B, Hq, Tq]. */
function forwardBounds(ref: ReturnType<typeof attentionReference>, o: { B: number; Tq: number; Hq: number; D: number }) {
  const { B, Tq, Hq, D } = o;
  const oB = new Float64Array(ref.o.length);
  const lB = new Float64Array(ref.lse.length);
  for (let b = 0; b < B; b++) for (let t = 0; t < Tq; t++) for (let h = 0; h < Hq; h++) {
    const li = (b * Hq + h) * Tq + t;
    const rel = ETA * (4 * D + 8 * ref.nKeys[li] + 64);
    lB[li] = rel * (1 + ref.scoreMag[li] + Math.abs(ref.lse[li]));
    const base = ((b * Tq + t) * Hq + h) * D;
    for (let d = 0; d < D; d++) oB[base + d] = rel * (1 + ref.scoreMag[li]) * ref.oMag[base + d] + 1e-30;
  }
  return { oB, lB };
}

function checkLse(what: string, got: Float32Array, want: Float64Array, bound: Float64Array) {
  const gotF = Array.from(got, (x, i) => (want[i] === -Infinity ? (x === -Infinity ? 0 : NaN) : x));
  const wantF = Array.from(want, (x) => (x === -Infinity ? 0 : x));
  expectClose(what, gotF, wantF, bound);
}

type MaskKind = "none" | "left" | "random";

interface Case {
  B: number;
  T: number;
  Hq: number;
  Hkv: number;
  D: number;
  mask: MaskKind;
  dtype?: AttentionDtype;
  scale?: number;
  /** Multiplies q (peakier softmax). */
  qScale?: number;
  wg?: number;
  regs?: "private" | "workgroup";
  kb?: number;
  /** Forward kernel and its subgroup tile (attention-subgroup.ts). */
  path?: "rows" | "subgroup";
  tm?: number;
  tn?: number;
  /** Backward kernels (attention-bwd-subgroup.ts or the row kernels) and the subgroup backward's blocks. */
  bpath?: "rows" | "subgroup";
  bk?: number;
  br?: number;
}

/** Left padding: sequence b has pads[b] leading padding tokens (one sequence fully padded when asked). */
function makeMask(kind: MaskKind, B: number, T: number, fullyPadded: boolean): Uint32Array | undefined {
  if (kind === "none") return undefined;
  const m = new Uint32Array(B * T);
  for (let b = 0; b < B; b++) {
    const pad = fullyPadded && b === B - 1 ? T : randInt(0, Math.max(0, T - 1), rand);
    for (let t = 0; t < T; t++) m[b * T + t] = kind === "left" ? (t >= pad ? 1 : 0) : rand() < 0.7 ? 1 : 0;
  }
  return m;
}

/** Forward then backward on the GPU (the backward fed the GPU's o and lse), both vs float64. */
async function checkPrefill(c: Case) {
  const dtype = c.dtype ?? "f32";
  if (dtype === "f16" && !gpu.hasF16) return;
  const { B, T, Hq, Hkv, D } = c;
  const tag = JSON.stringify(c);
  const q = asDtype(randn(B * T * Hq * D, rand, c.qScale ?? 1), dtype);
  const k = asDtype(randn(B * T * Hkv * D, rand), dtype);
  const v = asDtype(randn(B * T * Hkv * D, rand), dtype);
  const dO = asDtype(randn(B * T * Hq * D, rand), dtype);
  const mask = makeMask(c.mask, B, T, B > 1 && rand() < 0.5);
  const opts: AttentionRefOpts = { B, Tq: T, Hq, Hkv, D, scale: c.scale, kvValid: mask };
  const ref = attentionReference(q, k, v, opts);

  const qB = up(q, dtype), kB = up(k, dtype), vB = up(v, dtype), dOB = up(dO, dtype);
  const maskB = mask ? gpu.upload(mask) : undefined;
  const oB = poisoned(q.length, dtype, "o");
  const lseB = poisoned(B * Hq * T, "u32", "lse");
  attention(gpu, { q: qB, k: kB, v: vB, o: oB, lse: lseB, kvValid: maskB, B, T, Hq, Hkv, D, scale: c.scale, dtype, workgroupSize: c.wg, regs: c.regs, keyBlock: c.kb, forwardPath: c.path, tileRows: c.tm, tileKeys: c.tn });
  const o = await read(oB, q.length, dtype);
  const lse = await gpu.readF32(lseB, B * Hq * T);
  const fb = forwardBounds(ref, { B, Tq: T, Hq, D });
  expectClose(`o ${tag}`, o, ref.o, withF16(fb.oB, ref.o, dtype));
  checkLse(`lse ${tag}`, lse, ref.lse, fb.lB);

  const dqB = poisoned(q.length, dtype, "dq"), dkB = poisoned(k.length, dtype, "dk"), dvB = poisoned(v.length, dtype, "dv");
  attentionBackward(gpu, { q: qB, k: kB, v: vB, o: oB, lse: lseB, dO: dOB, dq: dqB, dk: dkB, dv: dvB, kvValid: maskB, B, T, Hq, Hkv, D, scale: c.scale, dtype, workgroupSize: c.wg, regs: c.regs, keyBlock: c.kb, backwardPath: c.bpath, backwardKeys: c.bk, backwardRows: c.br });
  const [dq, dk, dv] = [await read(dqB, q.length, dtype), await read(dkB, k.length, dtype), await read(dvB, v.length, dtype)];
  const bw = attentionBackwardReference(q, k, v, dO, opts, o);
  const relB = ETA * (4 * D + 8 * T + 64);
  const bnd = (mag: Float64Array, want: Float64Array) => withF16(mag.map((m) => relB * m + 1e-30), want, dtype);
  expectClose(`dq ${tag}`, dq, bw.dq, bnd(bw.dqMag, bw.dq));
  expectClose(`dk ${tag}`, dk, bw.dk, bnd(bw.dkMag, bw.dk));
  expectClose(`dv ${tag}`, dv, bw.dv, bnd(bw.dvMag, bw.dv));
  // Fully masked rows / padding keys: exactly zero, not merely small.
  for (let i = 0; i < ref.lse.length; i++) if (ref.lse[i] === -Infinity) {
    const h = Math.floor(i / T) % Hq, b = Math.floor(i / (T * Hq)), t = i % T;
    const base = ((b * T + t) * Hq + h) * D;
    for (let d = 0; d < D; d++) expect(o[base + d] === 0 && dq[base + d] === 0, `masked row ${i} not zero (seed ${seed})`).toBe(true);
  }
  if (mask) for (let bt = 0; bt < B * T; bt++) if (!mask[bt]) {
    for (let x = 0; x < Hkv * D; x++) expect(dk[bt * Hkv * D + x] === 0 && dv[bt * Hkv * D + x] === 0, `padding key ${bt} has a gradient (seed ${seed})`).toBe(true);
  }
  gpu.release(qB, kB, vB, dOB, maskB, oB, lseB, dqB, dkB, dvB);
}

describe("attention prefill forward + backward vs float64", () => {
  const cases: Case[] = [
    { B: 1, T: 1, Hq: 1, Hkv: 1, D: 8, mask: "none" }, // T = 1
    { B: 2, T: 1, Hq: 2, Hkv: 1, D: 8, mask: "left" },
    { B: 3, T: 29, Hq: 6, Hkv: 1, D: 8, mask: "left", qScale: 3 }, // GQA 6, T not a tile multiple, peaky softmax
    { B: 2, T: 23, Hq: 4, Hkv: 2, D: 8, mask: "random" }, // GQA 2, holes in the key mask
    { B: 2, T: 17, Hq: 3, Hkv: 3, D: 6, mask: "left", scale: 0.3 }, // GQA 1, scalar path (D % 4 ≠ 0), custom scale
    // Qwen2.5-1.5B heads (D = 128). Each new (dtype, head dim) builds 4 pipelines; cold, on the 2-core machine at load
    // ~16, the subgroup forward took 89 s, dq 68 s and dk/dv 120 s to build (Mesa caches them on disk after the first
    // run). A second D = 128 case and a D = 128 decode run with NR_HEAVY=1.
    { B: 2, T: 20, Hq: 12, Hkv: 2, D: 128, mask: "left" },
    ...(process.env.NR_HEAVY ? ([{ B: 1, T: 37, Hq: 12, Hkv: 2, D: 128, mask: "none" }] as Case[]) : []),
    // The GPU variant (per-invocation rows in registers, 64 rows per workgroup); key block 2 because lavapipe builds
    // dynamically indexed private arrays slowly (4× longer at the GPU default of 8).
    { B: 2, T: 19, Hq: 4, Hkv: 2, D: 8, mask: "left", wg: 64, regs: "private", kb: 2 },
    { B: 2, T: 21, Hq: 6, Hkv: 1, D: 64, mask: "left", dtype: "f16" }, // f16 storage, D = 64
    // The subgroup-tile forward (the CPU adapters' default where D % 32 == 0): tiles that straddle heads and
    // positions (TM not a multiple of G), key blocks cut by T and by the causal bound, holes, fully padded rows.
    { B: 3, T: 37, Hq: 6, Hkv: 2, D: 32, mask: "random", path: "subgroup", tm: 5, tn: 1 },
    { B: 2, T: 29, Hq: 12, Hkv: 2, D: 32, mask: "left", path: "subgroup", qScale: 3 },
    { B: 1, T: 3, Hq: 2, Hkv: 2, D: 32, mask: "none", path: "subgroup", scale: 0.7 },
    // The subgroup backward (the CPU adapters' default where D % 32 == 0) with blocks that straddle heads, positions
    // and T (5 keys, 3 rows), GQA 6, T = 1; and the row backward at a head dim the subgroup one could serve.
    { B: 2, T: 26, Hq: 6, Hkv: 1, D: 64, mask: "random", bpath: "subgroup", bk: 5, br: 3, qScale: 2 },
    { B: 2, T: 1, Hq: 6, Hkv: 1, D: 32, mask: "left", bpath: "subgroup" },
    { B: 1, T: 11, Hq: 4, Hkv: 2, D: 32, mask: "none", bpath: "rows", path: "rows" },
  ];
  // Head dims ≥ 64 build subgroup kernels unrolled over D (slow to build when the shader cache is cold, see above).
  for (const c of cases) it(JSON.stringify(c), () => checkPrefill(c), c.D >= 64 ? 600_000 : undefined);

  it("3 fresh random shapes", async () => {
    for (let i = 0; i < 3; i++) {
      const Hkv = randInt(1, 3, rand);
      const G = [1, 2, 6][randInt(0, 2, rand)];
      await checkPrefill({ B: randInt(1, 3, rand), T: randInt(1, 40, rand), Hq: Hkv * G, Hkv, D: rand() < 0.5 ? 8 : 6, mask: (["none", "left", "random"] as const)[randInt(0, 2, rand)] });
    }
  });
});

describe("attention decode against a KV cache", () => {
  interface DCase { B: number; Tq: number; Tmax: number; Hq: number; Hkv: number; D: number; mask: "none" | "start" | "valid"; dtype?: AttentionDtype; path?: "rows" | "subgroup"; tm?: number; tn?: number }
  async function checkDecode(c: DCase) {
    const dtype = c.dtype ?? "f32";
    if (dtype === "f16" && !gpu.hasF16) return;
    const { B, Tq, Tmax, Hq, Hkv, D } = c;
    const tag = JSON.stringify(c);
    const lens = Uint32Array.from({ length: B }, () => randInt(Tq, Tmax, rand));
    // Start/valid masks: left padding, sometimes covering the first new tokens too (their rows see nothing).
    const start = c.mask === "start" ? Uint32Array.from(lens, (l, b) => randInt(0, b === 0 ? l - 1 : l, rand)) : undefined; // sequence 0 sees ≥ 1 key
    const valid = c.mask === "valid" ? Uint32Array.from({ length: B * Tmax }, () => (rand() < 0.75 ? 1 : 0)) : undefined;
    const q = asDtype(randn(B * Tq * Hq * D, rand), dtype);
    const kc = asDtype(randn(B * Tmax * Hkv * D, rand), dtype);
    const vc = asDtype(randn(B * Tmax * Hkv * D, rand), dtype);
    // Slots past lens[b] hold NaN in the cache: they must never be read.
    const W = Hkv * D;
    for (let b = 0; b < B; b++) for (const x of [kc, vc]) x.fill(NaN, (b * Tmax + lens[b]) * W, (b + 1) * Tmax * W);
    const cacheK = up(kc, dtype), cacheV = up(vc, dtype);
    const qB = up(q, dtype);
    const lensB = gpu.upload(lens);
    const maskB = start ? gpu.upload(start) : valid ? gpu.upload(valid) : undefined;
    const oB = poisoned(q.length, dtype);
    const lseB = poisoned(B * Hq * Tq, "u32", "lse");
    attentionDecode(gpu, { q: qB, kCache: cacheK, vCache: cacheV, o: oB, lse: lseB, lens: lensB, kvStart: start ? maskB : undefined, kvValid: valid ? maskB : undefined, B, Tq, Tmax, Hq, Hkv, D, dtype, forwardPath: c.path, tileRows: c.tm, tileKeys: c.tn });
    const o = await read(oB, q.length, dtype);
    const ref = attentionReference(q, kc, vc, { B, Tq, Tk: Tmax, Hq, Hkv, D, lens, kvStart: start, kvValid: valid });
    const fb = forwardBounds(ref, { B, Tq, Hq, D });
    expectClose(`decode ${tag}`, o, ref.o, withF16(fb.oB, ref.o, dtype));
    checkLse(`decodeLse ${tag}`, await gpu.readF32(lseB, B * Hq * Tq), ref.lse, fb.lB);
    gpu.release(qB, cacheK, cacheV, lensB, maskB, oB, lseB);
  }
  const cases: DCase[] = [
    { B: 3, Tq: 1, Tmax: 41, Hq: 12, Hkv: 2, D: 8, mask: "start" },
    { B: 2, Tq: 3, Tmax: 30, Hq: 4, Hkv: 2, D: 8, mask: "start" }, // chunked prefill
    { B: 2, Tq: 1, Tmax: 25, Hq: 6, Hkv: 1, D: 8, mask: "valid" },
    { B: 2, Tq: 2, Tmax: 19, Hq: 2, Hkv: 2, D: 8, mask: "none" },
    ...(process.env.NR_HEAVY ? ([{ B: 1, Tq: 1, Tmax: 70, Hq: 12, Hkv: 2, D: 128, mask: "none" }] as DCase[]) : []),
    { B: 2, Tq: 1, Tmax: 33, Hq: 6, Hkv: 1, D: 64, mask: "start", dtype: "f16" },
    { B: 3, Tq: 1, Tmax: 45, Hq: 12, Hkv: 2, D: 32, mask: "start", path: "subgroup", tm: 5, tn: 1 },
    { B: 2, Tq: 3, Tmax: 30, Hq: 4, Hkv: 2, D: 32, mask: "valid", path: "subgroup" }, // chunked prefill
  ];
  for (const c of cases) it(JSON.stringify(c), () => checkDecode(c));

  it("the last row(s) of a prefill equal decode steps against the cache of the previous rows", async () => {
    // B sequences, left-padded; prefill over T tokens vs: append T − Tq rows into a cache, then append the last Tq
    // and decode them (Tq = 1: a decode step; Tq = 3: chunked prefill).
    const B = 2, T = 27, Hq = 6, Hkv = 2, D = 8, Tmax = 40;
    const q = randn(B * T * Hq * D, rand), k = randn(B * T * Hkv * D, rand), v = randn(B * T * Hkv * D, rand);
    const pads = [randInt(0, 10, rand), 0];
    const valid = Uint32Array.from({ length: B * T }, (_, i) => (i % T >= pads[Math.floor(i / T)] ? 1 : 0));
    const qB = gpu.upload(q), kB = gpu.upload(k), vB = gpu.upload(v), validB = gpu.upload(valid);
    const oP = poisoned(q.length, "f32");
    const lseP = poisoned(B * Hq * T, "u32");
    attention(gpu, { q: qB, k: kB, v: vB, o: oP, lse: lseP, kvValid: validB, B, T, Hq, Hkv, D });
    const prefill = await gpu.readF32(oP, q.length);
    const ref = attentionReference(q, k, v, { B, Tq: T, Hq, Hkv, D, kvValid: valid });
    const fb = forwardBounds(ref, { B, Tq: T, Hq, D });
    const W = Hkv * D;
    for (const Tq of [1, 3]) {
      const T0 = T - Tq;
      const kc = poisoned(B * Tmax * W, "f32", "kCache"), vc = poisoned(B * Tmax * W, "f32", "vCache");
      const rows = (x: Float32Array, from: number, n: number) => {
        const out = new Float32Array(B * n * W);
        for (let b = 0; b < B; b++) out.set(x.subarray((b * T + from) * W, (b * T + from + n) * W), b * n * W);
        return out;
      };
      const k0 = gpu.upload(rows(k, 0, T0)), v0 = gpu.upload(rows(v, 0, T0));
      const k1 = gpu.upload(rows(k, T0, Tq)), v1 = gpu.upload(rows(v, T0, Tq));
      const pos0 = gpu.upload(new Uint32Array(B)), pos1 = gpu.upload(new Uint32Array(B).fill(T0));
      kvCacheAppend(gpu, { k: k0, v: v0, kCache: kc, vCache: vc, positions: pos0, B, Tn: T0, Tmax, Hkv, D });
      kvCacheAppend(gpu, { k: k1, v: v1, kCache: kc, vCache: vc, positions: pos1, B, Tn: Tq, Tmax, Hkv, D });
      const qLast = new Float32Array(B * Tq * Hq * D);
      for (let b = 0; b < B; b++) qLast.set(q.subarray((b * T + T0) * Hq * D, (b + 1) * T * Hq * D), b * Tq * Hq * D);
      const qL = gpu.upload(qLast), lens = gpu.upload(new Uint32Array(B).fill(T)), start = gpu.upload(Uint32Array.from(pads));
      const oD = poisoned(qLast.length, "f32");
      const lseD = poisoned(B * Hq * Tq, "u32");
      attentionDecode(gpu, { q: qL, kCache: kc, vCache: vc, o: oD, lse: lseD, lens, kvStart: start, B, Tq, Tmax, Hq, Hkv, D });
      const dec = await gpu.readF32(oD, qLast.length);
      const want = new Float64Array(qLast.length), bound = new Float64Array(qLast.length), pre = new Float64Array(qLast.length);
      for (let b = 0; b < B; b++) for (let x = 0; x < Tq * Hq * D; x++) {
        const src = (b * T + T0) * Hq * D + x;
        want[b * Tq * Hq * D + x] = ref.o[src];
        bound[b * Tq * Hq * D + x] = fb.oB[src];
        pre[b * Tq * Hq * D + x] = prefill[src];
      }
      expectClose(`decodeVsRef Tq=${Tq}`, dec, want, bound);
      // Decode and prefill run the same key blocks in the same order: equal to 2× the reference bound.
      expectClose(`decodeVsPrefill Tq=${Tq}`, dec, pre, bound.map((x) => 2 * x));
      gpu.release(kc, vc, k0, v0, k1, v1, pos0, pos1, qL, lens, start, oD, lseD);
    }
    gpu.release(qB, kB, vB, validB, oP, lseP);
  });

  it("kvCacheAppend writes exactly the new rows at per-sequence positions and drops rows past Tmax", async () => {
    for (const [dtype, D] of [["f32", 8], ["f32", 3], ["f16", 4]] as const) {
      if (dtype === "f16" && !gpu.hasF16) continue;
      const B = 3, Tn = 4, Tmax = 9, Hkv = 2, W = Hkv * D;
      const positions = Uint32Array.from([0, randInt(1, 4, rand), Tmax - 2]); // the last sequence overflows by 2 rows
      const cache0 = asDtype(randn(B * Tmax * W, rand), dtype);
      const kn = asDtype(randn(B * Tn * W, rand), dtype), vn = asDtype(randn(B * Tn * W, rand), dtype);
      const kc = up(cache0, dtype), vc = up(cache0, dtype), kB = up(kn, dtype), vB = up(vn, dtype), pB = gpu.upload(positions);
      kvCacheAppend(gpu, { k: kB, v: vB, kCache: kc, vCache: vc, positions: pB, B, Tn, Tmax, Hkv, D, dtype });
      const o = { B, Tn, Tmax, Hkv, D };
      expect(Array.from(await read(kc, cache0.length, dtype))).toEqual(Array.from(kvCacheAppendReference(cache0, kn, positions, o)));
      expect(Array.from(await read(vc, cache0.length, dtype))).toEqual(Array.from(kvCacheAppendReference(cache0, vn, positions, o)));
      gpu.release(kc, vc, kB, vB, pB);
    }
  });
});

describe("attention float64 reference backward vs finite differences", () => {
  it("dq, dk, dv of L = Σ o·W (GQA 4:2, left padding with a fully padded row, random holes)", () => {
    const B = 2, T = 4, Hq = 4, Hkv = 2, D = 3;
    const kvValid = [0, 1, 1, 1, 1, 0, 1, 1]; // sequence 0: row 0 sees nothing; sequence 1: key 1 is a hole
    const opts: AttentionRefOpts = { B, Tq: T, Hq, Hkv, D, kvValid, scale: 0.7 };
    const q = Float64Array.from(randn(B * T * Hq * D, rand));
    const k = Float64Array.from(randn(B * T * Hkv * D, rand));
    const v = Float64Array.from(randn(B * T * Hkv * D, rand));
    const w = Float64Array.from(randn(B * T * Hq * D, rand));
    const loss = (qq: Float64Array, kk: Float64Array, vv: Float64Array) => attentionReference(qq, kk, vv, opts).o.reduce((s, x, i) => s + x * w[i], 0);
    const g = attentionBackwardReference(q, k, v, w, opts);
    const h = 1e-6;
    const fd = (x: Float64Array, i: number, f: (y: Float64Array) => number) => {
      const p = Float64Array.from(x), m = Float64Array.from(x);
      p[i] += h;
      m[i] -= h;
      return (f(p) - f(m)) / (2 * h);
    };
    for (let i = 0; i < q.length; i++) expect(Math.abs(fd(q, i, (y) => loss(y, k, v)) - g.dq[i])).toBeLessThan(1e-7);
    for (let i = 0; i < k.length; i++) expect(Math.abs(fd(k, i, (y) => loss(q, y, v)) - g.dk[i])).toBeLessThan(1e-7);
    for (let i = 0; i < v.length; i++) expect(Math.abs(fd(v, i, (y) => loss(q, k, y)) - g.dv[i])).toBeLessThan(1e-7);
    // The fully padded query row and the padding keys have exactly zero gradient.
    for (let h2 = 0; h2 < Hq; h2++) for (let d = 0; d < D; d++) expect(g.dq[h2 * D + d]).toBe(0);
    for (let x = 0; x < Hkv * D; x++) expect(g.dk[x] === 0 && g.dv[x] === 0 && g.dk[5 * Hkv * D + x] === 0).toBe(true);
  });
});

describe("attention argument checks", () => {
  it("rejects bad head ratios, short buffers, oversized D and f16 without the feature", () => {
    const a = gpu.alloc(4 * 64);
    const base = { q: a, k: a, v: a, o: a, B: 1, T: 2, Hq: 3, Hkv: 2, D: 4 };
    expect(() => attention(gpu, base)).toThrow(/not a multiple of Hkv=2/);
    expect(() => attention(gpu, { ...base, Hq: 4, T: 8 })).toThrow(/q holds 256 bytes, needs 512/);
    expect(() => attention(gpu, { ...base, Hq: 2, D: 300 })).toThrow(/D=300/);
    expect(() => attentionDecode(gpu, { q: a, kCache: a, vCache: a, o: a, lens: a, B: 1, Tq: 5, Tmax: 4, Hq: 1, Hkv: 1, D: 4 })).toThrow(/do not fit/);
    if (!gpu.hasF16) expect(() => attention(gpu, { ...base, Hq: 2, dtype: "f16" })).toThrow(/shader-f16/);
    gpu.release(a);
  });
});
