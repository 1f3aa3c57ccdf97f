import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGpu, f16BitsToF32, f32ToF16Bits, toF16Array, type Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import {
  NF4_CODE,
  codeThresholds,
  createDynamicMap,
  dequantizeNf4,
  dynamicMap,
  f32Bits,
  nearestCodeIndex,
  nf4DequantizeReference,
  nf4Matmul,
  nf4MatmulReference,
  nf4MemoryBytes,
  nf4MemoryFor,
  nf4QuantizeReference,
  quantizeNf4,
  releaseNf4,
  type Nf4ActDtype,
  type Nf4MatmulMode,
  type Nf4SourceDtype,
  type Nf4Weight,
} from "./nf4.js";
import { compare, describeReport, freshSeed, NAN_F16X2_BITS, NAN_F32_BITS, randInt, randn, rng } from "./testing.js";

// What is checked and how:
//  * The host reference (`nf4QuantizeReference`) emulates bitsandbytes' default backend in exact f32 (argmin over the
//    table, Math.fround(1/a)). It is pinned to real bitsandbytes semantics by golden values computed with torch 2.13
//    (hashes below) and by the six exact ties, whose codes torch.argmin chose.
//  * The GPU path uses a different algorithm (integer-division reciprocal, f32 decision thresholds); every code,
//    nibble order, absmax, double-quant byte, absmax2 and scale must match the reference bit for bit. The offset
//    (mean of absmax, see nf4.ts) must be within 4 ulp of the exact mean; the rest is compared given that offset.
//  * Known-code inputs check codes and packing against values the test chose, independently of any reference.
//  * Dequantisation error bound: |w − deq(w)| ≤ (½·maxgap(NF4) + 2⁻²²)·absmax + |scale − absmax| + 2⁻²⁴·scale, with
//    |scale − absmax| ≤ ½·maxgap(8-bit map)·absmax2 + 2⁻²¹·(absmax + |offset|) for double quantisation.
//  * Fused matmul vs float64 x·deq(W)ᵀ and dy·deq(W): |c − ref| ≤ 2e-5·Σ|a·w| (f32 accumulation of ≤ 512 terms,
//    ~10⁵× below a wrong index) + 2⁻¹⁰·|ref| when the output is f16.
const RTOL_ACCUM = 2e-5;
const RTOL_F16_OUT = 2 ** -10;

let gpu: Gpu;
const seed = freshSeed();
const rand = rng(seed);
const f32 = Math.fround;
const cvt = new Float32Array(1);
const cvtU = new Uint32Array(cvt.buffer);
const bitsF32 = (b: number) => ((cvtU[0] = b >>> 0), cvt[0]);

beforeAll(async () => {
  gpu = await createGpu();
  console.log(`nf4 tests on ${gpu.adapterName} (f16: ${gpu.hasF16}); seed ${seed} (NR_SEED=${seed} to replay)`);
});
afterAll(() => gpu?.destroy());

// ── helpers ───────────────────────────────────────────────────────────────────────────────────────────────────
function bf16Bits(x: number): number {
  const b = f32Bits(x);
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff; // round to nearest even
}
/** Round values to the dtype and return the exact values plus the array to upload. */
function asDtype(vals: ArrayLike<number>, dtype: Nf4SourceDtype): { exact: Float32Array; data: Float32Array | Uint16Array } {
  if (dtype === "f32") {
    const d = Float32Array.from(vals);
    return { exact: d, data: d };
  }
  const bits = dtype === "bf16" ? Uint16Array.from(vals, bf16Bits) : toF16Array(vals);
  return { exact: Float32Array.from(bits, (h) => (dtype === "bf16" ? bitsF32(h << 16) : f16BitsToF32(h))), data: bits };
}
function fromBits(bits: ArrayLike<number>, dtype: Nf4SourceDtype): { exact: Float32Array; data: Float32Array | Uint16Array } {
  if (dtype === "f32") {
    const d = new Float32Array(Uint32Array.from(bits).buffer);
    return { exact: d, data: d };
  }
  const b = Uint16Array.from(bits);
  return { exact: Float32Array.from(b, (h) => (dtype === "bf16" ? bitsF32(h << 16) : f16BitsToF32(h))), data: b };
}
function fnv64(bytes: Uint8Array): string {
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return h.toString(16).padStart(16, "0");
}
const bytesOfF32 = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
async function readBytes(buf: GpuBuffer, n: number): Promise<Uint8Array> {
  return new Uint8Array(await gpu.read(buf, Math.ceil(n / 4) * 4)).slice(0, n);
}
function firstMismatch(got: ArrayLike<number>, want: ArrayLike<number>): string | null {
  if (got.length !== want.length) return `length ${got.length} vs ${want.length}`;
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i]) && !(got[i] === 0 && want[i] === 0)) return `[${i}]: got ${got[i]}, want ${want[i]}`;
  }
  return null;
}
function expectSame(got: ArrayLike<number>, want: ArrayLike<number>, what: string) {
  const m = firstMismatch(got, want);
  expect(m, `${what}: ${m} (seed ${seed})`).toBeNull();
}
const prevF32 = (x: number) => bitsF32(x > 0 ? f32Bits(x) - 1 : x < 0 ? f32Bits(x) + 1 : 0x80000001);
const nextF32 = (x: number) => bitsF32(x > 0 ? f32Bits(x) + 1 : x < 0 ? f32Bits(x) - 1 : 1);

/** Everything a GPU quantisation produced, read back. */
async function readQuant(w: Nf4Weight) {
  const n = w.N * w.K;
  const packed = await readBytes(w.packed, Math.ceil(n / 2));
  const scales = await gpu.readF32(w.scales, w.blocks);
  if (!w.double) return { packed, scales, offset: null, qabsmax: null, absmax2: null };
  const offset = (await gpu.readF32(w.double.offset, 1))[0];
  const qabsmax = await readBytes(w.double.qabsmax, w.blocks);
  const absmax2 = await gpu.readF32(w.double.absmax2, Math.ceil(w.blocks / 256));
  return { packed, scales, offset, qabsmax, absmax2 };
}

function quantizeOnGpu(values: Float32Array | Uint16Array, dtype: Nf4SourceDtype, N: number, K: number, opts: { doubleQuant?: boolean; blocksize?: number } = {}) {
  const input = gpu.upload(values, "nf4_test_src");
  const w = quantizeNf4(gpu, { input, dtype, N, K, ...opts });
  gpu.release(input);
  return w;
}

/** GPU vs reference: codes/packing and (doubleQuant) the double-quant bytes, given the GPU's offset. */
async function checkQuantization(exact: Float32Array, w: Nf4Weight, what: string) {
  const got = await readQuant(w);
  const ref0 = nf4QuantizeReference(exact, { blocksize: w.blocksize, doubleQuant: w.double !== null });
  expectSame(got.packed, ref0.packed, `${what}: packed codes`);
  if (!w.double) {
    expectSame(got.scales, ref0.absmax, `${what}: absmax`);
    return { got, ref: ref0 };
  }
  let exactMean = 0;
  for (const a of ref0.absmax) exactMean += a;
  exactMean /= ref0.absmax.length;
  const ulp = Math.abs(nextF32(f32(exactMean)) - f32(exactMean));
  expect(Math.abs(got.offset! - exactMean), `${what}: offset ${got.offset} vs exact mean ${exactMean}`).toBeLessThanOrEqual(4 * ulp);
  const ref = nf4QuantizeReference(exact, { blocksize: w.blocksize, offset: got.offset! });
  expectSame(got.qabsmax!, ref.qabsmax!, `${what}: qabsmax`);
  expectSame(got.absmax2!, ref.absmax2!, `${what}: absmax2`);
  expectSame(got.scales, ref.scales, `${what}: scales`);
  return { got, ref };
}

// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════
describe("NF4 host tables and the bitsandbytes reference", () => {
  it("NF4 table: 16 sorted f32 values from −1 to 1 with 0 at code 7", () => {
    expect(NF4_CODE.length).toBe(16);
    for (let i = 1; i < 16; i++) expect(NF4_CODE[i]).toBeGreaterThan(NF4_CODE[i - 1]);
    expect([NF4_CODE[0], NF4_CODE[7], NF4_CODE[15]]).toEqual([-1, 0, 1]);
  });

  it("signed dynamic map: bnb's construction, bit for bit with torch 2.13 (x86 AVX2 and baseline builds)", () => {
    // FNV-1a-64 of the 256 little-endian f32 of `bitsandbytes.functional.create_dynamic_map(signed=True)` as printed by
    // torch 2.13.0+cpu with ATEN_CPU_CAPABILITY=avx2 and =default respectively.
    const avx2 = createDynamicMap();
    const scalar = createDynamicMap({ fusedLinspace: false });
    expect(fnv64(bytesOfF32(avx2))).toBe("d677f22a96665bc4");
    expect(fnv64(bytesOfF32(scalar))).toBe("619efdf6517c4850");
    expect(f32Bits(avx2[0]).toString(16)).toBe("bf7e3333"); // −0.99297 (the most negative entry)
    expect(f32Bits(scalar[1]).toString(16)).toBe("bf7a999a");
    // Structure: sorted, 127 negative, 0, 127 positive below 1, and 1.0.
    for (let i = 1; i < 256; i++) expect(avx2[i]).toBeGreaterThan(avx2[i - 1]);
    expect(avx2.filter((v) => v < 0).length).toBe(127);
    expect(avx2[127]).toBe(0);
    expect(avx2[255]).toBe(1);
    expect(dynamicMap()).toEqual(avx2);
  });

  it("decision thresholds reproduce the f32 argmin (dense around every threshold and at random)", () => {
    for (const code of [NF4_CODE, dynamicMap()]) {
      const t = codeThresholds(code);
      const count = (s: number) => {
        let c = 0;
        for (let j = 1; j < t.length; j++) if (s >= t[j]) c++;
        return c;
      };
      for (let j = 1; j < t.length; j++) {
        if (!Number.isFinite(t[j]) || t[j] === -1) continue;
        expect(nearestCodeIndex(t[j], code)).toBeGreaterThanOrEqual(j);
        expect(nearestCodeIndex(prevF32(t[j]), code)).toBeLessThan(j);
        let s = t[j];
        for (let k = 0; k < 12; k++) s = prevF32(s);
        for (let k = 0; k < 24; k++, s = nextF32(s)) expect(count(s)).toBe(nearestCodeIndex(s, code));
      }
      for (let i = 0; i < 4000; i++) {
        const s = f32(rand() * 2 - 1);
        expect(count(s)).toBe(nearestCodeIndex(s, code));
      }
    }
  });

  it("exact f32 ties go to the lower code (torch.argmin's choice for these six values)", () => {
    const ties = [0xbeeb8480, 0xbd3a7871, 0x3d22faff, 0x3e5067e0, 0x3ec753f9, 0x3f248daf].map(bitsF32);
    for (let i = 0; i < ties.length; i++) {
      const c = nearestCodeIndex(ties[i], NF4_CODE);
      expect(Math.abs(f32(ties[i] - NF4_CODE[c]))).toBe(Math.abs(f32(ties[i] - NF4_CODE[c + 1]))); // a real tie
    }
    expect(ties.map((x) => nearestCodeIndex(x, NF4_CODE))).toEqual([2, 6, 7, 9, 11, 13]);
  });

  it("golden values from bitsandbytes' default backend (torch 2.13) for bf16, f16 and f32 weights", () => {
    // Inputs: bit patterns from a 64-bit LCG (identical in Python and here), 700·64+37 elements (odd, partial block),
    // block 5 all zeros. Outputs hashed with FNV-1a-64; the offset is torch's f32 absmax.mean().
    const golden = {
      bf16: { first: [48113, 48519, 15422], packed: "2b476d5abd2019c3", absmax: "f73f0d41ca4e86ad", offset: 0x3df368cf, qabsmax: "7ec556a602e11f97", absmax2: "ec6afd5bad27ea12", scales: "03c2fa94b4700506" },
      f16: { first: [14750, 45481, 10677], packed: "9a44bdca938b1f11", absmax: "a35f1a68ef0050ed", offset: 0x3f754843, qabsmax: "1a9a675cbdcc28b2", absmax2: "009001627fb0a37c", scales: "5ef23bf7caa8f99e" },
      f32: { first: [3140411851, 996388427, 992989996], packed: "48426ac4fa76202b", absmax: "78eddf769a7fb082", offset: 0x3df3f1f5, qabsmax: "e2c54f6b3eba39e7", absmax2: "72806b7729274705", scales: "cf279183b1d14950" },
    };
    for (const [dtype, seedN] of [["bf16", 11], ["f16", 12], ["f32", 13]] as const) {
      const g = golden[dtype];
      const bits = lcgBits(700 * 64 + 37, seedN, dtype);
      expect(bits.slice(0, 3)).toEqual(g.first);
      const { exact } = fromBits(bits, dtype);
      const ref = nf4QuantizeReference(exact, { offset: bitsF32(g.offset) });
      expect(fnv64(ref.packed), `${dtype} packed`).toBe(g.packed);
      expect(fnv64(bytesOfF32(ref.absmax)), `${dtype} absmax`).toBe(g.absmax);
      expect(fnv64(ref.qabsmax!), `${dtype} qabsmax`).toBe(g.qabsmax);
      expect(fnv64(bytesOfF32(ref.absmax2!)), `${dtype} absmax2`).toBe(g.absmax2);
      expect(fnv64(bytesOfF32(ref.scales)), `${dtype} scales`).toBe(g.scales);
      // Our own mean (f64, rounded once) lands on torch's f32 mean here.
      expect(Math.abs(f32Bits(nf4QuantizeReference(exact).offset!) - g.offset)).toBeLessThanOrEqual(1);
    }
  });
});

/** The LCG bit generator of the golden test (the same integers in Python). */
function lcgBits(n: number, seed0: number, kind: Nf4SourceDtype): number[] {
  const mask = (1n << 64n) - 1n;
  let s = BigInt(seed0);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    s = (s * 6364136223846793005n + 1442695040888963407n) & mask;
    const r = Number(s >> 32n);
    const sign = (r >>> 31) & 1;
    if (kind === "bf16") out.push((sign << 15) | ((118 + ((r >>> 8) % 6)) << 7) | (r & 0x7f));
    else if (kind === "f16") out.push((sign << 15) | ((10 + ((r >>> 12) % 5)) << 10) | (r & 0x3ff));
    else out.push(((sign << 31) | ((118 + ((r >>> 24) % 6)) << 23) | (r & 0x7fffff)) >>> 0);
  }
  for (let i = 5 * 64; i < 6 * 64; i++) out[i] = 0;
  return out;
}

// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════
describe("quantizeNf4 on the GPU (bit for bit with bitsandbytes)", () => {
  it("weights with known codes: codes, even element in the high nibble, absmax (f32, bf16, f16)", async () => {
    const N = 6;
    const K = 160; // 960 elements = 15 blocks that straddle rows
    for (const dtype of ["f32", "bf16", "f16"] as const) {
      const n = N * K;
      const codes = new Uint8Array(n);
      const amax = new Float32Array(n / 64);
      const vals = new Float32Array(n);
      for (let b = 0; b < n / 64; b++) {
        amax[b] = asDtype([0.02 + 3 * rand()], dtype).exact[0];
        const pin = b * 64 + randInt(0, 63, rand);
        for (let f = b * 64; f < (b + 1) * 64; f++) {
          codes[f] = f === pin ? (rand() < 0.5 ? 0 : 15) : randInt(0, 15, rand);
          vals[f] = NF4_CODE[codes[f]] * amax[b];
        }
      }
      const { exact, data } = asDtype(vals, dtype);
      const w = quantizeOnGpu(data, dtype, N, K, { doubleQuant: false });
      const got = await readQuant(w);
      releaseNf4(gpu, w);
      const wantBytes = Uint8Array.from({ length: n / 2 }, (_, j) => (codes[2 * j] << 4) | codes[2 * j + 1]);
      expect(got.packed[0] >> 4, `${dtype}: element 0 is the high nibble`).toBe(codes[0]);
      expectSame(got.packed, wantBytes, `${dtype}: packed bytes of known codes`);
      expectSame(got.scales, amax, `${dtype}: absmax`);
      expectSame(got.packed, nf4QuantizeReference(exact, { doubleQuant: false }).packed, `${dtype}: reference agrees`);
    }
  });

  it("values at, just below and just above every bucket boundary, exact ties, a zero block, odd length", async () => {
    const t = codeThresholds(NF4_CODE);
    const ties = [0xbeeb8480, 0xbd3a7871, 0x3d22faff, 0x3e5067e0, 0x3ec753f9, 0x3f248daf].map(bitsF32);
    const targets: number[] = [-1, 1, 0, ...ties];
    for (let j = 1; j < 16; j++) targets.push(t[j], prevF32(t[j]), nextF32(t[j]));
    const blocks = 12;
    const n = blocks * 64 + 33;
    const vals = new Float32Array(n);
    const hits: Array<{ f: number; s: number }> = [];
    for (let b = 0; b < 10; b++) {
      const a = f32(0.01 + 10 * rand());
      const r = f32(1 / a);
      vals[b * 64] = rand() < 0.5 ? a : -a;
      for (let f = b * 64 + 1; f < (b + 1) * 64; f++) {
        const s = targets[randInt(0, targets.length - 1, rand)];
        // Find an f32 x with fl32(x · fl32(1/a)) == s exactly (search a few ulps around s·a).
        let x = f32(s * a);
        for (let d = 0, y = x; d < 16; d++) {
          if (f32(y * r) === s && Math.abs(y) <= a) {
            x = y;
            hits.push({ f, s });
            break;
          }
          y = d % 2 ? bitsF32(f32Bits(x) + (d + 1) / 2) : bitsF32(f32Bits(x) - (d + 2) / 2);
        }
        vals[f] = Math.abs(x) <= a ? x : 0;
      }
    }
    // block 10 all zeros; block 11 + the 33-element tail random
    for (let f = 11 * 64; f < n; f++) vals[f] = f32(randn(1, rand)[0]);
    const ref = nf4QuantizeReference(vals, { doubleQuant: false });
    const codeAt = (f: number) => (f & 1 ? ref.packed[f >> 1] & 15 : ref.packed[f >> 1] >> 4);
    expect(hits.length).toBeGreaterThan(200);
    for (const { f, s } of hits) {
      const j = t.findIndex((v) => v === s);
      if (j > 0) expect(codeAt(f)).toBe(j); // exactly at a threshold → the upper bucket
      const k = ties.indexOf(s);
      if (k >= 0) expect(codeAt(f)).toBe([2, 6, 7, 9, 11, 13][k]); // a tie → the lower code
    }
    for (let f = 640; f < 704; f++) expect(codeAt(f)).toBe(0); // bnb: 0·(1/0) = NaN → code 0
    expect(ref.packed[ref.packed.length - 1] & 15).toBe(7); // odd length: padded with the code of 0.0
    const w = quantizeOnGpu(vals, "f32", 1, n, { doubleQuant: false });
    const got = await readQuant(w);
    releaseNf4(gpu, w);
    expectSame(got.packed, ref.packed, "boundary codes");
    expectSame(got.scales, ref.absmax, "absmax incl. a zero block");
  });

  it("random weights at awkward sizes with double quantisation (f32 with a zero block, bf16, f16)", async () => {
    const cases: Array<{ dtype: Nf4SourceDtype; N: number; K: number }> = [
      { dtype: "f32", N: 37, K: 1003 }, // 580 blocks → 3 groups of 256, partial last block, odd length
      { dtype: "bf16", N: 300, K: 320 }, // 1500 blocks → 6 groups
      { dtype: "f16", N: 19, K: 77 }, // 23 blocks, one group
    ];
    for (const c of cases) {
      const v = randn(c.N * c.K, rand, 0.03);
      if (c.dtype === "f32") v.fill(0, 128, 192);
      const { exact, data } = asDtype(v, c.dtype);
      const w = quantizeOnGpu(data, c.dtype, c.N, c.K);
      await checkQuantization(exact, w, `${c.dtype} [${c.N}, ${c.K}]`);
      releaseNf4(gpu, w);
    }
  });

  it("a single block (absmax2 = 0: every qabsmax is 0 and the scale is the offset)", async () => {
    const v = randn(64, rand);
    const w = quantizeOnGpu(v, "f32", 2, 32);
    const { got } = await checkQuantization(v, w, "one block");
    releaseNf4(gpu, w);
    expect(got.absmax2![0]).toBe(0);
    expect(got.qabsmax![0]).toBe(0);
    expect(got.scales[0]).toBe(got.offset);
  });
});

// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════
describe("dequantizeNf4", () => {
  it("f32 output is bit-exact and within the stated error bound; f16 output within f16 rounding", async () => {
    const N = 45;
    const K = 250;
    const n = N * K;
    const v = randn(n, rand, 0.02);
    for (let i = 0; i < 40; i++) v[randInt(0, n - 1, rand)] *= 8; // outliers widen some blocks
    const w = quantizeOnGpu(v, "f32", N, K);
    const out = gpu.alloc(n * 4);
    gpu.fill32(out, NAN_F32_BITS);
    dequantizeNf4(gpu, w, out);
    const got = await gpu.readF32(out, n);
    const q = await readQuant(w);
    const want = nf4DequantizeReference(q.packed, q.scales, n);
    expectSame(got, want, "f32 dequantisation");

    const ref = nf4QuantizeReference(v, { offset: q.offset! });
    const gapNf4 = Math.max(...NF4_CODE.slice(1).map((c, i) => c - NF4_CODE[i]));
    const map = dynamicMap();
    const gapDyn = Math.max(...map.slice(1).map((c, i) => c - map[i]));
    for (let b = 0; b < w.blocks; b++) {
      const a = ref.absmax[b];
      const sErr = Math.abs(q.scales[b] - a);
      expect(sErr, `block ${b}: double-quant scale error`).toBeLessThanOrEqual(0.5 * gapDyn * q.absmax2![b >> 8] + 2 ** -21 * (a + Math.abs(q.offset!)));
      for (let f = b * 64; f < Math.min(n, (b + 1) * 64); f++) {
        const bound = (0.5 * gapNf4 + 2 ** -22) * a + sErr + 2 ** -24 * Math.abs(q.scales[b]);
        if (!(Math.abs(v[f] - got[f]) <= bound)) expect(Math.abs(v[f] - got[f]), `element ${f}`).toBeLessThanOrEqual(bound);
      }
    }

    if (gpu.hasF16) {
      const o16 = gpu.alloc(n * 2);
      gpu.fill32(o16, NAN_F16X2_BITS);
      dequantizeNf4(gpu, w, o16, { outDtype: "f16" });
      const h = await gpu.readF16(o16, n);
      const r = compare(h, want, Float64Array.from(want, (x) => RTOL_F16_OUT * Math.abs(x) + 2 ** -24));
      expect(r.ok, `f16 dequantisation: ${describeReport(r)} (seed ${seed})`).toBe(true);
      gpu.release(o16);
    }
    gpu.release(out);
    releaseNf4(gpu, w);
  });
});

// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════
interface MmCase {
  M: number;
  N: number;
  K: number;
  path?: "direct" | "tiled" | "gemv" | "broadcast";
  dtype?: Nf4ActDtype;
  outDtype?: Nf4ActDtype;
  alpha?: number;
  accumulate?: boolean;
}

const weights = new Map<string, { w: Nf4Weight; deq: Float32Array }>();
async function weightFor(N: number, K: number) {
  const key = `${N}x${K}`;
  const hit = weights.get(key);
  if (hit) return hit;
  const w = quantizeOnGpu(randn(N * K, rand, 0.05), "f32", N, K);
  const q = await readQuant(w);
  const entry = { w, deq: nf4DequantizeReference(q.packed, q.scales, N * K) }; // host decode of the GPU's bytes
  weights.set(key, entry);
  return entry;
}

async function checkMatmul(c: MmCase, mode: Nf4MatmulMode) {
  const dtype = c.dtype ?? "f32";
  const outDtype = c.outDtype ?? "f32";
  if ((dtype === "f16" || outDtype === "f16") && !gpu.hasF16) return;
  const { M, N, K } = c;
  const { w, deq } = await weightFor(N, K);
  const inCols = mode === "forward" ? K : N;
  const outCols = mode === "forward" ? N : K;
  let a = randn(M * inCols, rand);
  if (dtype === "f16") a = Float32Array.from(toF16Array(a), f16BitsToF32);
  const aBuf = gpu.upload(dtype === "f16" ? toF16Array(a) : a);
  const out = gpu.alloc(M * outCols * (outDtype === "f16" ? 2 : 4));
  const prior = c.accumulate ? randn(M * outCols, rand) : null;
  if (prior) gpu.write(out, outDtype === "f16" ? toF16Array(prior) : prior);
  else gpu.fill32(out, outDtype === "f16" ? NAN_F16X2_BITS : NAN_F32_BITS);
  nf4Matmul(gpu, { mode, a: aBuf, w, out, M, dtype, outDtype, alpha: c.alpha, accumulate: c.accumulate, path: c.path });
  const got = outDtype === "f16" ? await gpu.readF16(out, M * outCols) : await gpu.readF32(out, M * outCols);
  gpu.release(aBuf, out);

  const want = nf4MatmulReference(a, deq, { M, N, K, mode, alpha: c.alpha });
  const mag = nf4MatmulReference(Float64Array.from(a, Math.abs), Float64Array.from(deq, Math.abs), { M, N, K, mode, alpha: Math.abs(c.alpha ?? 1) });
  if (prior) {
    const p = outDtype === "f16" ? Float32Array.from(toF16Array(prior), f16BitsToF32) : prior;
    for (let i = 0; i < want.length; i++) {
      want[i] += p[i];
      mag[i] += Math.abs(p[i]);
    }
  }
  const bound = mag.map((m, i) => RTOL_ACCUM * m + (outDtype === "f16" ? RTOL_F16_OUT * Math.abs(want[i]) : 0) + 1e-30);
  const r = compare(got, want, bound);
  expect(r.ok, `${mode} ${JSON.stringify(c)}: ${describeReport(r)} (seed ${seed})`).toBe(true);
}

describe("nf4Matmul (fused dequant GEMM) vs float64 x·deq(W)ᵀ and dy·deq(W)", () => {
  afterAll(() => {
    for (const { w } of weights.values()) releaseNf4(gpu, w);
  });
  // Pipelines compile slowly on lavapipe (a TM=8 kernel: ~10 s cold), so the default set uses few register tiles:
  // direct TM 1 and 8 (CPU default), f16 through TM 1, tiled with TM 2 (M ≤ 32). NR_HEAVY=1 adds the GPU tiles for
  // M > 32 (TM 4), f16 through TM 8 and larger shapes.
  const heavy = process.env.NR_HEAVY === "1";
  const cases: MmCase[] = [
    { M: 1, N: 67, K: 128 }, // decode (GEMV)
    { M: 37, N: 131, K: 192 }, // awkward M and N
    { M: 5, N: 29, K: 64, alpha: -0.5, accumulate: true },
    { M: 30, N: 45, K: 256, path: "tiled" }, // partial tiles in every direction
    { M: 17, N: 70, K: 64, path: "tiled", alpha: 2, accumulate: true },
    { M: 1, N: 40, K: 128, dtype: "f16", outDtype: "f16" },
    { M: 1, N: 24, K: 64, dtype: "f16" },
    ...(heavy
      ? ([
          { M: 70, N: 45, K: 256, path: "tiled" },
          { M: 40, N: 70, K: 64, path: "tiled", alpha: 2, accumulate: true },
          { M: 33, N: 40, K: 128, dtype: "f16", outDtype: "f16" },
          { M: 9, N: 24, K: 64, dtype: "f16" },
          { M: 64, N: 256, K: 1536 },
          { M: 96, N: 200, K: 512, path: "tiled" },
        ] as MmCase[])
      : []),
  ];
  for (const c of cases) {
    it(`${JSON.stringify(c)} forward and inputGrad`, async () => {
      await checkMatmul(c, "forward");
      await checkMatmul(c, "inputGrad");
    });
  }

  it("the GPU decode kernel (gemv, forward only): M = 1 and 3, N not a multiple of its 8 columns, accumulate", async () => {
    await checkMatmul({ M: 1, N: 67, K: 128, path: "gemv" }, "forward");
    await checkMatmul({ M: 3, N: 29, K: 64, path: "gemv", accumulate: true, alpha: 0.25 }, "forward");
    const { w } = await weightFor(29, 64);
    const a = gpu.alloc(3 * 64 * 4);
    expect(() => nf4Matmul(gpu, { mode: "inputGrad", a, w, out: a, M: 3, path: "gemv" })).toThrow(/forward-only/);
    gpu.release(a);
  });

  // The CPU-adapter GEMV (gemv-cpu.ts, the default forward on lavapipe): K with and without whole
  // 64-blocks per row (per-group vs per-word scales) and a last group of fewer than 8 words, N not a multiple of the
  // lanes' columns, M = 1, 3, 8 and a multi-block M, alpha and accumulate (f16 operands: the default cases above).
  it("the CPU-adapter GEMV (broadcast, forward only): M = 1, 3, 8, 20, awkward K and N", async () => {
    if (!gpu.hasSubgroups) return; // needs the subgroups feature; nothing else picks it
    await checkMatmul({ M: 1, N: 67, K: 1544, path: "broadcast" }, "forward"); // 193 words: per-word scales, tail group
    await checkMatmul({ M: 3, N: 29, K: 192, path: "broadcast" }, "forward"); // whole blocks: one scale per group
    await checkMatmul({ M: 8, N: 131, K: 512, path: "broadcast", alpha: -0.5, accumulate: true }, "forward");
    await checkMatmul({ M: 20, N: 37, K: 128, path: "broadcast" }, "forward"); // row blocks of 16 and 4
    await checkMatmul({ M: 1, N: 67, K: 128, path: "direct" }, "forward"); // the kernel it replaced stays covered
    const { w } = await weightFor(29, 192);
    const a = gpu.alloc(3 * 192 * 4);
    expect(() => nf4Matmul(gpu, { mode: "inputGrad", a, w, out: a, M: 3, path: "broadcast" })).toThrow(/forward-only/);
    gpu.release(a);
  });

  it("4 fresh random shapes", async () => {
    for (let i = 0; i < 4; i++) {
      const tiled = rand() < 0.5;
      const c: MmCase = { M: tiled ? randInt(9, 32, rand) : randInt(1, 80, rand), N: randInt(1, 150, rand), K: 64 * randInt(1, 4, rand), path: tiled ? "tiled" : "direct" };
      if (c.M >= 2 && c.M <= 4) c.M = 5;
      await checkMatmul(c, rand() < 0.5 ? "forward" : "inputGrad");
    }
  });

  it("the float64 inputGrad reference is the gradient of the forward reference (central differences)", () => {
    const M = 2;
    const N = 3;
    const K = 8;
    const x = Float64Array.from(randn(M * K, rand));
    const w = Float64Array.from(randn(N * K, rand));
    const g = Float64Array.from(randn(M * N, rand));
    const loss = (xx: Float64Array) => nf4MatmulReference(xx, w, { M, N, K, mode: "forward" }).reduce((s, y, i) => s + y * g[i], 0);
    const dx = nf4MatmulReference(g, w, { M, N, K, mode: "inputGrad" });
    const h = 1e-6;
    for (let i = 0; i < M * K; i++) {
      const xp = x.slice();
      const xm = x.slice();
      xp[i] += h;
      xm[i] -= h;
      expect(Math.abs((loss(xp) - loss(xm)) / (2 * h) - dx[i])).toBeLessThan(1e-7);
    }
  });
});

// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════
describe("memory accounting and argument checks", () => {
  it("counts codes, scales and the double-quant state (Qwen2.5-1.5B gate_proj 8960×1536)", async () => {
    const m = nf4MemoryFor(8960, 1536);
    const blocks = (8960 * 1536) / 64;
    expect(m.codes).toBe((8960 * 1536) / 2);
    expect(m.scales).toBe(4 * blocks);
    expect(m.doubleQuant).toBe(blocks + 4 * Math.ceil(blocks / 256) + 4);
    expect(m.total).toBe(m.codes + m.scales + m.doubleQuant);
    expect(m.bitsPerParam).toBeCloseTo(4 + 0.5 + 0.125 + 32 / (64 * 256), 4);
    expect(m.checkpoint).toBe((8960 * 1536) / 2 + blocks + 4 * Math.ceil(blocks / 256) + 1024 + 64); // ≈ 4.127 bits
    const w = quantizeOnGpu(randn(37 * 1003, rand), "f32", 37, 1003);
    const mw = nf4MemoryBytes(w);
    expect(mw).toEqual(nf4MemoryFor(37, 1003));
    expect(w.packed.bytes + w.scales.bytes + w.double!.qabsmax.bytes + w.double!.absmax2.bytes + w.double!.offset.bytes).toBe(mw.total);
    releaseNf4(gpu, w);
  });

  it("rejects bad shapes and buffers with messages that name them", () => {
    const w = quantizeOnGpu(randn(8 * 12, rand), "f32", 8, 12, { doubleQuant: false });
    const a = gpu.alloc(4 * 12);
    const o = gpu.alloc(4 * 8);
    expect(() => nf4Matmul(gpu, { mode: "forward", a, w, out: o, M: 1 })).toThrow(/K=12 must be a multiple of 8/);
    releaseNf4(gpu, w);
    const w2 = quantizeOnGpu(randn(8 * 16, rand), "f32", 8, 16, { doubleQuant: false });
    expect(() => nf4Matmul(gpu, { mode: "forward", a, w: w2, out: o, M: 2 })).toThrow(/input holds 48 bytes, needs 128/);
    expect(() => nf4Matmul(gpu, { mode: "inputGrad", a, w: w2, out: o, M: 1 })).toThrow(/out holds 32 bytes, needs 64/);
    expect(() => quantizeNf4(gpu, { input: a, dtype: "f32", N: 8, K: 16 })).toThrow(/input holds 48 bytes, needs 512/);
    expect(() => quantizeNf4(gpu, { input: a, dtype: "f32", N: 1, K: 12, blocksize: 48 })).toThrow(/power of two/);
    releaseNf4(gpu, w2);
    gpu.release(a, o);
  });
});
