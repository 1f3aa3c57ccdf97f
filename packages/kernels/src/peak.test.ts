import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGpu, type Gpu } from "./runtime/device.js";
import { COPY_WGSL, fractionOfPeak, measurePeakBandwidth, measurePeakFlops, msPerCall, peakFmaWgsl, type AdapterPeak } from "./peak.js";
import { freshSeed, randInt, rng } from "./testing.js";

let gpu: Gpu;
const seed = freshSeed();
const rand = rng(seed);

beforeAll(async () => {
  gpu = await createGpu();
  console.log(`peak tests on ${gpu.adapterName}; seed ${seed} (NR_SEED=${seed} to replay)`);
});
afterAll(() => gpu?.destroy());

describe("peak microbenchmark kernels do the work they are credited with", () => {
  it("the FMA-chain kernel runs iters × unroll dependent FMAs per chain (float64 replay of every chain)", async () => {
    const chains = 3;
    const unroll = randInt(1, 4, rand);
    const wg = 64;
    const steps = randInt(20, 90, rand);
    const x = 0.9 + 0.09 * rand();
    const y = rand() - 0.5;
    const n = 2 * wg;
    const out = gpu.alloc(n * 16);
    const params = new ArrayBuffer(16);
    new Uint32Array(params)[0] = steps;
    new Float32Array(params).set([Math.fround(x), Math.fround(y)], 1);
    gpu.dispatch(gpu.kernel("peak_fma_test", peakFmaWgsl(chains, wg, unroll)), [out], [2, 1], params);
    const got = await gpu.readF32(out, 4 * n);
    gpu.release(out);
    const fx = Math.fround(x);
    const fy = Math.fround(y);
    let worst = 0;
    for (let id = 0; id < n; id++) {
      let sum = 0;
      for (let c = 0; c < chains; c++) {
        let a = Math.fround(Math.fround((id & 255) * 1e-3) + c);
        for (let s = 0; s < steps * unroll; s++) a = a * fx + fy;
        sum += a;
      }
      for (let lane = 0; lane < 4; lane++) worst = Math.max(worst, Math.abs(got[4 * id + lane] - sum) / (1 + Math.abs(sum)));
    }
    // One f32 rounding per FMA (two without fusion), contracting chain: ≤ ~steps·unroll·2⁻²³ relative.
    expect(worst, `steps ${steps} × ${unroll}, x ${fx}, y ${fy} (seed ${seed})`).toBeLessThan(1e-4);
  });

  it("the copy kernel copies every vec4 and nothing past n", async () => {
    const n = randInt(300, 2000, rand);
    const src = gpu.upload(Float32Array.from({ length: 4 * (n + 8) }, () => rand()));
    const dst = gpu.alloc(16 * (n + 8));
    gpu.fill32(dst, 0x7fc00000);
    gpu.dispatch(gpu.kernel("peak_copy_test", COPY_WGSL), [src, dst], [Math.ceil(n / 256), 1], new Uint32Array([n, 0, 0, 0]));
    const want = await gpu.readF32(src, 4 * (n + 8));
    const got = await gpu.readF32(dst, 4 * (n + 8));
    gpu.release(src, dst);
    expect(Array.from(got.subarray(0, 4 * n))).toEqual(Array.from(want.subarray(0, 4 * n)));
    expect(got.subarray(4 * n).every(Number.isNaN)).toBe(true);
  });

  it("msPerCall records one warm-up call, then samples × calls, and orders best ≤ median", async () => {
    const out = gpu.alloc(16);
    let recorded = 0;
    const calls = randInt(2, 6, rand);
    const samples = randInt(1, 5, rand);
    const t = await msPerCall(gpu, () => (recorded++, gpu.fill32(out, recorded)), calls, samples);
    gpu.release(out);
    expect(recorded).toBe(1 + calls * samples);
    expect(t.best).toBeGreaterThan(0);
    expect(t.best).toBeLessThanOrEqual(t.median);
  });

  it("measures finite positive peaks", async () => {
    const f = await measurePeakFlops(gpu, { cpu: true, minMs: 5, iters: 1 });
    const b = await measurePeakBandwidth(gpu, { cpu: true, bytes: 2 ** 20, iters: 1 });
    expect(f.gflops).toBeGreaterThan(0);
    expect(Number.isFinite(f.gflops)).toBe(true);
    expect(b.gbps).toBe(Math.max(b.shaderCopyGBps, b.bufferCopyGBps));
    expect(b.gbps).toBeGreaterThan(0);
  });
});

describe("fraction of peak (roofline)", () => {
  const peak: AdapterPeak = {
    gflops: 100,
    gbps: 10,
    ridge: 10,
    flopsDetail: { gflops: 100, config: "", ms: 1, flops: 1 },
    bandwidthDetail: { gbps: 10, shaderCopyGBps: 10, bufferCopyGBps: 5, bytes: 1 },
  };
  it("divides GFLOP/s by peak GFLOP/s above the ridge point", () => {
    // 2e9 FLOP, 1e8 bytes (20 FLOP/byte) in 40 ms: 50 GFLOP/s of 100.
    expect(fractionOfPeak({ flops: 2e9, bytes: 1e8, ms: 40 }, peak)).toEqual({ bound: "compute", fraction: 0.5, achieved: 50, unit: "GFLOP/s" });
  });
  it("divides GB/s by peak GB/s below it", () => {
    // 1e8 FLOP, 1e8 bytes (1 FLOP/byte) in 20 ms: 5 GB/s of 10.
    expect(fractionOfPeak({ flops: 1e8, bytes: 1e8, ms: 20 }, peak)).toEqual({ bound: "memory", fraction: 0.5, achieved: 5, unit: "GB/s" });
  });
});
