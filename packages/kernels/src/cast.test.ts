// f32 ↔ f16 cast kernel against the host conversion (round to nearest even): random values over the f16 range at
// awkward lengths (scalar and vec4 variants), overflow to ±Inf, subnormals, NaN-poisoned outputs.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGpu, f16BitsToF32, f32ToF16Bits, toF16Array, type Gpu } from "./index.js";
import { cast, castReference } from "./cast.js";
import { freshSeed, poisonedBuffer, randn, rng } from "./testing.js";

let gpu: Gpu;
const seed = freshSeed();
const rand = rng(seed);

beforeAll(async () => {
  gpu = await createGpu();
  console.log(`cast tests on ${gpu.adapterName} (f16: ${gpu.hasF16}); seed ${seed} (NR_SEED=${seed} to replay)`);
});
afterAll(() => gpu?.destroy());

/** The two f16 values around x (equal when x is representable); WGSL may return either. */
function neighbours(x: number): [number, number] {
  const r = f16BitsToF32(f32ToF16Bits(x));
  if (r === x || !Number.isFinite(r)) return [r, r];
  const bits = f32ToF16Bits(x);
  // the other neighbour is one f16 step toward x from r
  const other = f16BitsToF32((r < x) === (x > 0) ? bits + 1 : bits - 1);
  return [r, other];
}

/** Values spread over the f16 range: normal, small (subnormal results), zero, and a few of each sign. */
function values(n: number): Float32Array {
  const x = randn(n, rand);
  for (let i = 0; i < n; i++) {
    const k = rand();
    if (k < 0.25) x[i] *= 2 ** Math.floor(rand() * 30 - 15); // 2⁻¹⁵ … 2¹⁴
    else if (k < 0.3) x[i] *= 2 ** -20; // f16 subnormal results
    else if (k < 0.32) x[i] = 0;
  }
  return x;
}

describe("cast f32 ↔ f16", () => {
  for (const n of [1, 3, 4, 257, 1000, 4099]) {
    it(`f32 → f16 → f32 round trip, n = ${n} (${n % 4 === 0 ? "vec4" : "scalar"} kernel)`, async () => {
      if (!gpu.hasF16) return console.log("skipped: no shader-f16");
      const x = values(n);
      const xb = gpu.upload(x);
      const h = poisonedBuffer(gpu, n, "f16", "h");
      const back = poisonedBuffer(gpu, n, "f32", "back");
      cast(gpu, { x: xb, out: h, n, from: "f32", to: "f16" });
      cast(gpu, { x: h, out: back, n, from: "f16", to: "f32" });
      const got16 = await gpu.readF16(h, n);
      const got32 = await gpu.readF32(back, n);
      const ref = castReference(x, "f16");
      let nearestEven = 0;
      for (let i = 0; i < n; i++) {
        const [a, b] = neighbours(x[i]);
        const g = got16[i];
        const subnormal = Math.abs(x[i]) < 2 ** -14;
        const ok = g === a || g === b || (subnormal && g === 0);
        expect(ok, `[${i}] cast(${x[i]}) = ${g}, want ${a} or ${b} (seed ${seed})`).toBe(true);
        if (g === ref[i]) nearestEven++;
        // widening is exact
        expect(got32[i], `widen [${i}]`).toBe(g);
      }
      console.log(`n=${n}: ${nearestEven}/${n} results are the round-to-nearest-even value`);
      for (const b of [xb, h, back]) gpu.release(b);
    });
  }

  it("overflow becomes ±Inf (as tensor.half()), the largest f16 stays finite", async () => {
    if (!gpu.hasF16) return console.log("skipped: no shader-f16");
    const x = Float32Array.from([65504, -65504, 65536, -70000, 1e6, -3e38, 1.5, -0]);
    const xb = gpu.upload(x);
    const h = poisonedBuffer(gpu, x.length, "f16", "h");
    cast(gpu, { x: xb, out: h, n: x.length, from: "f32", to: "f16" });
    const got = Array.from(await gpu.readF16(h, x.length));
    expect(got).toEqual([65504, -65504, Infinity, -Infinity, Infinity, -Infinity, 1.5, -0]);
    gpu.release(xb);
    gpu.release(h);
  });

  it("f16 → f32 is exact for every f16 bit pattern except NaNs", async () => {
    if (!gpu.hasF16) return console.log("skipped: no shader-f16");
    const bits = Uint16Array.from({ length: 65536 }, (_, i) => i).filter((b) => (b & 0x7c00) !== 0x7c00 || (b & 0x3ff) === 0);
    const n = bits.length;
    const hb = gpu.upload(bits);
    const out = poisonedBuffer(gpu, n, "f32", "out");
    cast(gpu, { x: hb, out, n, from: "f16", to: "f32" });
    const got = await gpu.readF32(out, n);
    let bad = 0;
    // lavapipe may flush f16 subnormals when widening: count them separately, everything else must be exact
    let flushed = 0;
    for (let i = 0; i < n; i++) {
      const want = f16BitsToF32(bits[i]);
      if (Object.is(got[i], want)) continue;
      if ((bits[i] & 0x7c00) === 0 && got[i] === 0) flushed++;
      else bad++;
    }
    console.log(`f16 → f32 over ${n} bit patterns: ${flushed} subnormals flushed`);
    expect(bad).toBe(0);
    gpu.release(hb);
    gpu.release(out);
  });

  it("refuses same dtypes, short buffers and aliasing with the reason", () => {
    if (!gpu.hasF16) return;
    const a = gpu.upload(new Float32Array(8));
    const b = gpu.upload(toF16Array(new Float32Array(4)));
    expect(() => cast(gpu, { x: a, out: a, n: 8, from: "f32", to: "f32" })).toThrow(/both f32/);
    expect(() => cast(gpu, { x: a, out: b, n: 8, from: "f32", to: "f16" })).toThrow(/out/);
    gpu.release(a);
    gpu.release(b);
  });
});
