import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGpu, type Gpu } from "./runtime/device.js";
import { axpy, axpyReference, mul } from "./blas1.js";
import { compare, describeReport, freshSeed, randn, rng } from "./testing.js";

let gpu: Gpu;
const seed = freshSeed();
const rand = rng(seed);
beforeAll(async () => (gpu = await createGpu()));
afterAll(() => gpu?.destroy());

describe(`axpy (seed ${seed})`, () => {
  for (const n of [1, 255, 257, 70_001]) {
    it(`n = ${n}`, async () => {
      const x = randn(n, rand), y = randn(n + 3, rand); // y longer: elements past n must stay untouched
      const alpha = Math.fround(rand() * 4 - 2); // the kernel receives alpha as f32
      const xb = gpu.upload(x), yb = gpu.upload(y);
      axpy(gpu, { x: xb, y: yb, n, alpha });
      const got = await gpu.readF32(yb, n + 3);
      const want = Float64Array.from([...axpyReference(alpha, x, y.subarray(0, n)), ...y.subarray(n)]);
      // one fma in f32: |error| ≤ 2⁻²⁴·(|alpha·x| + |y|) per element, ×2 for margin
      const bound = want.map((_, i) => 2 ** -23 * (Math.abs(alpha * (x[i] ?? 0)) + Math.abs(y[i])) + 1e-30);
      const r = compare(got, want, bound);
      gpu.release(xb, yb);
      expect(r.ok, describeReport(r)).toBe(true);
    });
  }
  it("rejects short buffers", () => {
    const b = gpu.alloc(16);
    expect(() => axpy(gpu, { x: b, y: b, n: 100 })).toThrow(/need 400/);
    gpu.release(b);
  });
});

describe(`mul (seed ${seed})`, () => {
  it("out = a ∘ b, exact in f32, odd length", async () => {
    const n = 1001;
    const a = randn(n, rand), b = randn(n, rand);
    const ab = gpu.upload(a), bb = gpu.upload(b), out = gpu.alloc(n * 4);
    gpu.fill32(out, 0x7fc00000);
    mul(gpu, { a: ab, b: bb, out, n });
    const got = await gpu.readF32(out, n);
    gpu.release(ab, bb, out);
    for (let i = 0; i < n; i++) expect(got[i]).toBe(Math.fround(a[i] * b[i])); // one rounding: exact match
  });
});
