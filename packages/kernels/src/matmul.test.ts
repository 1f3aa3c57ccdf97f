import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGpu, type Gpu, toF16Array, f32ToF16Bits, f16BitsToF32 } from "./runtime/device.js";
import { matmul, matmulReference, type MatmulDtype } from "./matmul.js";
import { compare, describeReport, freshSeed, NAN_F16X2_BITS, NAN_F32_BITS, randInt, randn, rng, roundToF16 } from "./testing.js";

// Error bound per element: |c − ref| ≤ rtol·Σ_k|a_ik·b_kj| (+ the f16 output rounding of 2⁻¹¹·|ref|).
// f32 accumulation of K products has a worst-case relative error ≈ K·2⁻²⁴ of Σ|ab|; in practice ~√K·2⁻²⁴.
// rtol 2e-5 admits that for every K used here and is ~10⁵× below what a wrong index produces.
const RTOL_ACCUM = 2e-5;
const RTOL_F16_OUT = 2 ** -11;

let gpu: Gpu;
const seed = freshSeed();
const rand = rng(seed);

beforeAll(async () => {
  gpu = await createGpu();
  console.log(`matmul tests on ${gpu.adapterName} (f16: ${gpu.hasF16}); seed ${seed} (NR_SEED=${seed} to replay)`);
});
afterAll(() => gpu?.destroy());

interface Case {
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  batch?: number;
  broadcastB?: boolean;
  dtype?: MatmulDtype;
  outDtype?: MatmulDtype;
  alpha?: number;
  accumulate?: boolean;
  path?: "tiled" | "direct";
}

async function check(c: Case) {
  const batch = c.batch ?? 1;
  const dtype = c.dtype ?? "f32";
  const outDtype = c.outDtype ?? "f32";
  if ((dtype === "f16" || outDtype === "f16") && !gpu.hasF16) return;
  const { M, N, K } = c;
  let a = randn(batch * M * K, rand);
  const bCount = (c.broadcastB ? 1 : batch) * K * N;
  let b = randn(bCount, rand);
  if (dtype === "f16") {
    a = roundToF16(a, f32ToF16Bits, f16BitsToF32);
    b = roundToF16(b, f32ToF16Bits, f16BitsToF32);
  }
  const up = (x: Float32Array) => (dtype === "f16" ? gpu.upload(toF16Array(x)) : gpu.upload(x));
  const aBuf = up(a);
  const bBuf = up(b);
  const outBytes = batch * M * N * (outDtype === "f16" ? 2 : 4);
  const cBuf = gpu.alloc(outBytes, "C");
  const prior = c.accumulate ? randn(batch * M * N, rand) : null;
  if (prior) gpu.write(cBuf, prior);
  else gpu.fill32(cBuf, outDtype === "f16" ? NAN_F16X2_BITS : NAN_F32_BITS);

  const strideB = c.broadcastB ? 0 : K * N;
  matmul(gpu, { a: aBuf, b: bBuf, c: cBuf, M, N, K, transA: c.transA, transB: c.transB, batch, strideB, dtype, outDtype, alpha: c.alpha, accumulate: c.accumulate, path: c.path });
  const got = outDtype === "f16" ? await gpu.readF16(cBuf, batch * M * N) : await gpu.readF32(cBuf, batch * M * N);

  const want = matmulReference(a, b, { M, N, K, transA: c.transA, transB: c.transB, batch, strideB, alpha: c.alpha });
  const absA = Float64Array.from(a, Math.abs);
  const absB = Float64Array.from(b, Math.abs);
  const mag = matmulReference(absA, absB, { M, N, K, transA: c.transA, transB: c.transB, batch, strideB, alpha: Math.abs(c.alpha ?? 1) });
  if (prior) for (let i = 0; i < want.length; i++) {
    want[i] += prior[i];
    mag[i] += Math.abs(prior[i]);
  }
  const bound = mag.map((m, i) => RTOL_ACCUM * m + (outDtype === "f16" ? RTOL_F16_OUT * Math.abs(want[i]) : 0) + 1e-30);
  const report = compare(got, want, bound);
  gpu.release(aBuf, bBuf, cBuf);
  expect(report.ok, `${JSON.stringify(c)}: ${describeReport(report)} (seed ${seed})`).toBe(true);
}

describe("matmul vs float64 reference", () => {
  const fixed: Case[] = [
    { M: 1, N: 1, K: 1 },
    { M: 1, N: 67, K: 129 }, // 1×K row vector (decode)
    { M: 37, N: 1, K: 53 }, // M×1
    { M: 7, N: 13, K: 17 }, // primes below the tile
    { M: 67, N: 131, K: 97 }, // primes above the tile
    { M: 128, N: 128, K: 64 }, // exact tiles
    // Qwen2.5-1.5B shapes scaled down 8× (hidden 1536→192, kv 256→32, mlp 8960→1120)
    { M: 24, N: 192, K: 192, transB: true }, // q/o proj
    { M: 24, N: 32, K: 192, transB: true }, // k/v proj
    { M: 40, N: 1120, K: 192, transB: true }, // gate/up
    { M: 40, N: 192, K: 1120, transB: true }, // down
    { M: 40, N: 192, K: 1120 }, // dX = dY·W (input gradient of down)
    { M: 192, N: 1120, K: 40, transA: true }, // dW = dYᵀ·X
    { M: 19, N: 23, K: 29, transA: true, transB: true },
    { M: 5, N: 33, K: 31, batch: 3 },
    { M: 17, N: 20, K: 9, batch: 4, broadcastB: true, transB: true }, // one weight for all batch entries
    { M: 21, N: 35, K: 70, alpha: -0.37 },
    { M: 18, N: 22, K: 26, accumulate: true, alpha: 0.5 },
    { M: 33, N: 65, K: 47, dtype: "f16" },
    { M: 70, N: 40, K: 150, dtype: "f16", transB: true, outDtype: "f16" },
    { M: 9, N: 130, K: 64, dtype: "f16", transA: true },
    // Both kernels of the x·Wᵀ path, forced (the default picks by adapter and M).
    { M: 24, N: 192, K: 192, transB: true, path: "tiled" },
    { M: 40, N: 97, K: 132, transB: true, path: "direct" },
    { M: 3, N: 261, K: 68, transB: true, path: "direct" }, // GEMV-shaped (M ≤ 8)
    { M: 13, N: 31, K: 36, transB: true, path: "direct", batch: 2, accumulate: true, alpha: 2 },
    { M: 20, N: 45, K: 64, transB: true, path: "direct", dtype: "f16", outDtype: "f16" },
  ];
  for (const c of fixed) it(`fixed ${JSON.stringify(c)}`, () => check(c));

  it("12 fresh random shapes and layouts", async () => {
    for (let i = 0; i < 12; i++) {
      const c: Case = {
        M: randInt(1, 150, rand),
        N: randInt(1, 150, rand),
        K: randInt(1, 300, rand),
        transA: rand() < 0.5,
        transB: rand() < 0.5,
        batch: randInt(1, 3, rand),
        dtype: rand() < 0.3 ? "f16" : "f32",
        accumulate: rand() < 0.2,
        path: rand() < 0.5 ? "tiled" : "direct",
      };
      if (c.transB && rand() < 0.5) c.K = Math.max(4, c.K - (c.K % 4)); // reach the direct kernel
      await check(c);
    }
  });
});

describe("matmul argument checks", () => {
  it("rejects a too-small output buffer with a message naming the shape", () => {
    const a = gpu.alloc(4 * 4 * 4);
    const b = gpu.alloc(4 * 4 * 4);
    const c = gpu.alloc(8);
    expect(() => matmul(gpu, { a, b, c, M: 4, N: 4, K: 4 })).toThrow(/C holds .* M=4 N=4/);
    gpu.release(a, b, c);
  });
  it("rejects non-integer sizes", () => {
    const a = gpu.alloc(64);
    expect(() => matmul(gpu, { a, b: a, c: a, M: 0, N: 4, K: 4 })).toThrow(/positive integers/);
    gpu.release(a);
  });
});
