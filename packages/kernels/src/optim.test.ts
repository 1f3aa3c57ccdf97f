import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGpu, type Gpu, f32ToF16Bits, f16BitsToF32 } from "./runtime/device.js";
import {
  adamW,
  adamWReference,
  bf16BitsToF32,
  cast,
  clipByNorm,
  clipGradNorm,
  fill,
  gradNorm,
  gradNormReference,
  scale,
  type AdamWState,
} from "./optim.js";
import { compare, describeReport, freshSeed, NAN_F32_BITS, randInt, randn, rng } from "./testing.js";

let gpu: Gpu;
const seed = freshSeed();
const rand = rng(seed);
const tag = () => `(seed ${seed}, NR_SEED=${seed} to replay)`;

beforeAll(async () => {
  gpu = await createGpu();
  console.log(`optim tests on ${gpu.adapterName}; seed ${seed} (NR_SEED=${seed} to replay)`);
});
afterAll(() => gpu?.destroy());

function poisoned(words: number, bits = NAN_F32_BITS) {
  const b = gpu.alloc(words * 4);
  gpu.fill32(b, bits);
  return b;
}

describe("AdamW vs float64 AdamW over 6 steps", () => {
  for (const withScale of [false, true]) {
    it(`P=10007${withScale ? ", gradient scale from a GPU buffer" : ""}, lr 3e-3, wd 0.1, some zero gradients`, async () => {
      const P = 10007;
      const o = { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
      const p0 = randn(P, rand, 0.5);
      const s: AdamWState = { params: Float64Array.from(p0), m: new Float64Array(P), v: new Float64Array(P) };
      const pb = gpu.upload(p0);
      const mb = gpu.alloc(P * 4);
      const vb = gpu.alloc(P * 4);
      fill(gpu, { buf: mb, n: P, value: 0 });
      fill(gpu, { buf: vb, n: P, value: 0 });
      const gsc = 0.37;
      const sb = withScale ? gpu.upload(Float32Array.of(gsc)) : undefined;
      // Bounds per element. m is a sum of ± terms, so its f32 error is relative to |m|ₐ = the same recursion on |g|:
      //   |m − m_ref| ≤ 1e-6·|m|ₐ,  |v − v_ref| ≤ 1e-6·v (v has no cancellation).
      // Each step's update has f32 relative error ≲ 1e-6 plus the m error carried through m̂/(√v̂+eps); p itself
      // picks up ≲ 2 roundings of 2⁻²⁴·|p| per step. Summed over steps with ~10× margin:
      //   |p − p_ref| ≤ Σ_t (1e-5·|Δp_t| + 1e-5·(lr/bc1)·|m|ₐ/(√v̂+eps) + 2e-7·|p_t|) + 1e-12
      const bound = new Float64Array(P).fill(1e-12);
      const mAbs = new Float64Array(P);
      const gb = gpu.alloc(P * 4);
      for (let t = 1; t <= 6; t++) {
        const g = randn(P, rand);
        for (let i = 0; i < P; i += 13) g[i] = 0; // zero gradients: update comes from weight decay and momentum only
        if (t === 1) for (let i = 0; i < P; i += 97) g[i] = 0; // these never see a gradient until step 2
        gpu.write(gb, g);
        const before = Float64Array.from(s.params);
        adamWReference(s, g, { step: t, ...o, gradScale: withScale ? Math.fround(gsc) : 1 });
        const bc1 = 1 - o.beta1 ** t;
        const bc2 = 1 - o.beta2 ** t;
        for (let i = 0; i < P; i++) {
          mAbs[i] = o.beta1 * mAbs[i] + (1 - o.beta1) * Math.abs(g[i] * (withScale ? gsc : 1));
          const carried = ((o.lr / bc1) * mAbs[i]) / (Math.sqrt(s.v[i] / bc2) + o.eps);
          bound[i] += 1e-5 * Math.abs(s.params[i] - before[i]) + 1e-5 * carried + 2e-7 * Math.abs(s.params[i]);
        }
        adamW(gpu, { params: pb, grads: gb, m: mb, v: vb, n: P, step: t, ...o, gradScale: sb });
      }
      const got = await gpu.readF32(pb, P);
      const r = compare(got, s.params, bound);
      expect(r.ok, `params: ${describeReport(r)} ${tag()}`).toBe(true);
      const gm = await gpu.readF32(mb, P);
      const gv = await gpu.readF32(vb, P);
      let rm = compare(gm, s.m, Array.from(mAbs, (x) => 1e-6 * x + 1e-30));
      expect(rm.ok, `m: ${describeReport(rm)} ${tag()}`).toBe(true);
      rm = compare(gv, s.v, Array.from(s.v, (x) => 1e-6 * Math.abs(x) + 1e-30));
      expect(rm.ok, `v: ${describeReport(rm)} ${tag()}`).toBe(true);
      gpu.release(pb, mb, vb, gb, sb);
    });
  }
});

describe("global gradient norm and clipping (norm stays on the GPU)", () => {
  for (const n of [1, 257, 100003]) {
    it(`‖g‖ of n=${n} vs float64; offset sub-range`, async () => {
      const offset = n === 257 ? 5 : 0;
      const g = randn(n + offset, rand, 3);
      const gb = gpu.upload(g);
      const out = poisoned(1);
      gradNorm(gpu, { grads: gb, n, out, offset });
      const got = (await gpu.readF32(out, 1))[0];
      const want = gradNormReference(g.subarray(offset));
      // f32 sum of n squares in a tree: relative error ≲ log2(n)·2⁻²⁴ per term; 1e-5 is loose
      expect(Math.abs(got - want), `${got} vs ${want} ${tag()}`).toBeLessThan(1e-5 * want);
      gpu.release(gb, out);
    });
  }
  for (const maxNorm of [0.5, 1e6]) {
    it(`clipGradNorm with maxNorm ${maxNorm} (${maxNorm < 1 ? "scales" : "leaves grads unchanged"})`, async () => {
      const n = 4099;
      const g = randn(n, rand);
      const gb = gpu.upload(g);
      const norm = poisoned(1);
      clipGradNorm(gpu, { grads: gb, n, maxNorm, norm });
      const got = await gpu.readF32(gb, n);
      const nrm = gradNormReference(g);
      const c = Math.min(1, maxNorm / (nrm + 1e-6));
      if (c === 1) {
        expect(Array.from(got)).toEqual(Array.from(g));
      } else {
        // coefficient from an f32 norm (1e-5 relative) times one f32 multiply
        const r = compare(got, Array.from(g, (x) => x * c), Array.from(g, (x) => 2e-5 * Math.abs(x * c) + 1e-30));
        expect(r.ok, `${describeReport(r)} ${tag()}`).toBe(true);
        expect(Math.abs(gradNormReference(got) - maxNorm)).toBeLessThan(1e-4 * maxNorm);
      }
      gpu.release(gb, norm);
    });
  }
  it("clipByNorm with an already-computed norm buffer", async () => {
    const g = Float32Array.of(3, -4, 12);
    const gb = gpu.upload(g);
    const nb = gpu.upload(Float32Array.of(13));
    clipByNorm(gpu, { grads: gb, n: 3, norm: nb, maxNorm: 6.5 });
    const got = await gpu.readF32(gb, 3);
    const c = 6.5 / (13 + 1e-6);
    const r = compare(got, [3 * c, -4 * c, 12 * c], 1e-6);
    expect(r.ok, describeReport(r)).toBe(true);
    gpu.release(gb, nb);
  });
});

describe("fill and scale", () => {
  it("f32, u32 and odd-count f16 fills; the pad half of the last f16 word is kept", async () => {
    const n = 1001;
    const b = poisoned(n);
    fill(gpu, { buf: b, n: 999, value: -2.75 });
    let got = await gpu.readF32(b, n);
    expect(got.slice(0, 999).every((x) => x === -2.75)).toBe(true);
    expect(Number.isNaN(got[999]) && Number.isNaN(got[1000])).toBe(true); // past n: untouched
    fill(gpu, { buf: b, n, value: 0xdeadbeef, dtype: "u32" });
    expect((await gpu.readU32(b, n)).every((x) => x === 0xdeadbeef)).toBe(true);
    const h = poisoned(4, 0xabcdabcd);
    fill(gpu, { buf: h, n: 7, value: 0.1, dtype: "f16" });
    const words = await gpu.readU32(h, 4);
    const hb = f32ToF16Bits(0.1);
    expect(Array.from(words)).toEqual([0, 0, 0, 0].map((_, i) => (i < 3 ? (hb | (hb << 16)) >>> 0 : ((0xabcd << 16) | hb) >>> 0)));
    gpu.release(b, h);
  });
  it("scale in place, n=777", async () => {
    const x = randn(777, rand);
    const b = gpu.upload(x);
    scale(gpu, { buf: b, n: 777, alpha: -0.3 });
    const got = await gpu.readF32(b, 777);
    const r = compare(got, Array.from(x, (v) => v * -0.3), Array.from(x, (v) => 2 ** -23 * Math.abs(v * 0.3) + 1e-30));
    expect(r.ok, describeReport(r)).toBe(true);
    gpu.release(b);
  });
});

/** f32 values that exercise rounding: specials, the f16 overflow edge, ties, f16 subnormals, f32 subnormals. */
function castInputs(n: number): Float32Array {
  const special = [
    0, -0, 1, -1, Infinity, -Infinity, NaN, 65504, 65519.99, 65520, -65520, 1e10, 2 ** -14, 2 ** -24, 2 ** -25,
    2 ** -25 * 1.0001, 2 ** -26, 3 * 2 ** -25, 1e-40, -1e-45, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -11 + 2 ** -20, 2049, 2051,
    0.1, -0.3, 6.1e-5, 6.0e-5, 5.96e-8, 2 ** -15 * (1 + 2 ** -10),
  ];
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (i < special.length) x[i] = special[i];
    else {
      // random magnitudes across the whole f16 range and beyond, random bit patterns in the low mantissa
      x[i] = (rand() < 0.5 ? -1 : 1) * 2 ** (rand() * 50 - 30);
      const u = new Uint32Array(x.buffer, i * 4, 1);
      if (rand() < 0.3) u[0] = (u[0] & ~0x1fff) | 0x1000; // exact ties at the f16 rounding point
    }
  }
  return x;
}


describe("casts (bit-exact)", () => {
  for (const n of [4097, 1]) {
    it(`f32→f16 round-to-nearest-even equals host f32ToF16Bits, n=${n} (odd: pad half kept)`, async () => {
      const x = castInputs(n);
      const src = gpu.upload(x);
      const words = Math.ceil(n / 2);
      const dst = poisoned(words, 0x5a5a5a5a);
      cast(gpu, { src, dst, n, kind: "f32->f16" });
      const got = new Uint16Array((await gpu.readU32(dst, words)).buffer);
      let bad = -1;
      for (let i = 0; i < n && bad < 0; i++) if (got[i] !== f32ToF16Bits(x[i])) bad = i;
      expect(bad, bad >= 0 ? `x=${x[bad]} got 0x${got[bad].toString(16)} want 0x${f32ToF16Bits(x[bad]).toString(16)} ${tag()}` : "").toBe(-1);
      if (n % 2) expect(got[n]).toBe(0x5a5a);
      gpu.release(src, dst);
    });
  }
  it("f16→f32 is exact for all 65536 bit patterns", async () => {
    const n = 65536;
    const bits = Uint16Array.from({ length: n }, (_, i) => i);
    const src = gpu.upload(bits);
    const dst = poisoned(n);
    cast(gpu, { src, dst, n, kind: "f16->f32" });
    const got = await gpu.readF32(dst, n);
    let bad = -1;
    for (let i = 0; i < n && bad < 0; i++) {
      const want = f16BitsToF32(i);
      if (!(got[i] === want || (Number.isNaN(want) && Number.isNaN(got[i]))) || Object.is(want, -0) !== Object.is(got[i], -0)) bad = i;
    }
    expect(bad, `0x${bad.toString(16)}: got ${got[bad]}`).toBe(-1);
    gpu.release(src, dst);
  });
  it("bf16→f32 exact and bf16→f16 = f32ToF16Bits(bf16 value), odd n=30001", async () => {
    const n = 30001;
    const bits = Uint16Array.from({ length: n }, () => randInt(0, 0xffff, rand));
    bits[0] = 0x7f80; // +inf
    bits[1] = 0xff81; // NaN
    bits[2] = 0x8000; // -0
    bits[3] = 0x477f; // 65280: near the f16 max
    bits[4] = 0x4780; // 65536: overflows f16
    const src = gpu.upload(bits);
    const d32 = poisoned(n);
    const d16 = poisoned(Math.ceil(n / 2), 0x77777777);
    cast(gpu, { src, dst: d32, n, kind: "bf16->f32" });
    cast(gpu, { src, dst: d16, n, kind: "bf16->f16" });
    const g32 = await gpu.readU32(d32, n);
    const g16 = new Uint16Array((await gpu.readU32(d16, Math.ceil(n / 2))).buffer);
    let bad32 = -1;
    let bad16 = -1;
    for (let i = 0; i < n; i++) {
      if (bad32 < 0 && g32[i] !== ((bits[i] << 16) >>> 0)) bad32 = i;
      if (bad16 < 0 && g16[i] !== f32ToF16Bits(bf16BitsToF32(bits[i]))) bad16 = i;
    }
    expect(bad32, `bf16→f32 at ${bad32}`).toBe(-1);
    expect(bad16, `bf16→f16 at ${bad16}: bits 0x${bits[Math.max(0, bad16)].toString(16)} ${tag()}`).toBe(-1);
    expect(g16[n]).toBe(0x7777); // pad half of the last word
    gpu.release(src, d32, d16);
  });
  it("f32→f16→f32 round trip of f16-representable values is the identity", async () => {
    const n = 999;
    const x = Float32Array.from(randn(n, rand, 100), (v) => f16BitsToF32(f32ToF16Bits(v)));
    const src = gpu.upload(x);
    const mid = gpu.alloc(Math.ceil(n / 2) * 4);
    const back = poisoned(n);
    cast(gpu, { src, dst: mid, n, kind: "f32->f16" });
    cast(gpu, { src: mid, dst: back, n, kind: "f16->f32" });
    expect(Array.from(await gpu.readF32(back, n))).toEqual(Array.from(x));
    gpu.release(src, mid, back);
  });
});

describe("optim argument checks", () => {
  it("rejects bad counts, steps, betas and small buffers", () => {
    const b = gpu.alloc(64);
    expect(() => adamW(gpu, { params: b, grads: b, m: b, v: b, n: 100, step: 1, lr: 1e-3 })).toThrow(/params holds/);
    expect(() => adamW(gpu, { params: b, grads: b, m: b, v: b, n: 4, step: 0, lr: 1e-3 })).toThrow(/step/);
    expect(() => adamW(gpu, { params: b, grads: b, m: b, v: b, n: 4, step: 1, lr: 1e-3, beta2: 1 })).toThrow(/betas/);
    expect(() => gradNorm(gpu, { grads: b, n: 0, out: b })).toThrow(/count/);
    expect(() => cast(gpu, { src: b, dst: b, n: 4, kind: "f32->f16" })).toThrow(/different buffers/);
    expect(() => fill(gpu, { buf: b, n: 4, value: -1, dtype: "u32" })).toThrow(/u32 fill/);
    gpu.release(b);
  });
});
