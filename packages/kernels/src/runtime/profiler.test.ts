import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGpu, type Gpu } from "./device.js";
import { axpy, axpyReference, mul } from "../blas1.js";
import { compare, describeReport, freshSeed, randn, rng } from "../testing.js";

let gpu: Gpu;
const seed = freshSeed();
const rand = rng(seed);
beforeAll(async () => (gpu = await createGpu()));
afterAll(() => gpu?.destroy());

describe(`GpuProfiler (seed ${seed})`, () => {
  it("times every dispatch of a sequence longer than one query set, and the results stay right", async (ctx) => {
    if (!gpu.hasTimestamps) return ctx.skip(); // the adapter has no timestamp-query: start() says so (tested below)
    // more dispatches than one query set holds (512 passes), in an awkward count, of two kernels
    const axpys = 600 + Math.floor(rand() * 77), muls = 1 + Math.floor(rand() * 40);
    const n = 1000 + Math.floor(rand() * 3000);
    const x = randn(n, rand), y0 = randn(n, rand), m = randn(n, rand);
    const xb = gpu.upload(x), yb = gpu.upload(y0), mb = gpu.upload(m), out = gpu.alloc(n * 4);
    expect(gpu.profiler.start()).toBe(true);
    for (let i = 0; i < axpys; i++) axpy(gpu, { x: xb, y: yb, n, alpha: 0.5 });
    for (let i = 0; i < muls; i++) mul(gpu, { a: yb, b: mb, out, n });
    const got = await gpu.readF32(out, n);
    const entries = await gpu.profiler.stop();
    expect(gpu.profiler.enabled).toBe(false);
    const byLabel = new Map(entries.map((e) => [e.label, e]));
    expect(byLabel.get("axpy_f32")?.calls).toBe(axpys);
    expect(byLabel.get("mul_f32")?.calls).toBe(muls);
    for (const e of entries) expect(e.totalMs, e.label).toBeGreaterThan(0);
    // largest first
    for (let i = 1; i < entries.length; i++) expect(entries[i - 1].totalMs).toBeGreaterThanOrEqual(entries[i].totalMs);
    // the early submits must not change what was computed: y = y0 + axpys · 0.5 x, out = y ⊙ m
    let y: Float64Array = Float64Array.from(y0);
    for (let i = 0; i < axpys; i++) y = axpyReference(Math.fround(0.5), x, y);
    const want = y.map((v, i) => v * m[i]);
    const bound = want.map((_, i) => 2 ** -22 * axpys * (Math.abs(x[i]) + Math.abs(y0[i]) + axpys * Math.abs(x[i])) * Math.abs(m[i]) + 1e-30);
    const r = compare(got, want, bound);
    gpu.release(xb, yb, mb, out);
    expect(r.ok, describeReport(r)).toBe(true);
  });

  it("start() reports whether the adapter can time passes", () => {
    expect(gpu.profiler.start()).toBe(gpu.hasTimestamps);
    return gpu.profiler.stop();
  });
});
