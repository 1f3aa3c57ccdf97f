import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGpu, type Gpu, toF16Array, f32ToF16Bits, f16BitsToF32 } from "./runtime/device.js";
import { chooseSplitK, matmul, matmulPlan, matmulReference, type MatmulDtype, type MatmulPath } from "./matmul.js";
import { asDtype, compare, describeReport, freshSeed, NAN_F16X2_BITS, NAN_F32_BITS, randInt, randn, rng, roundToF16 } from "./testing.js";

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
  path?: MatmulPath;
  splitK?: number;
  /** Add a random f32 bias [N] to every row (fused into the store or the split-K reduction). */
  bias?: boolean;
}

async function check(c: Case) {
  const batch = c.batch ?? 1;
  const dtype = c.dtype ?? "f32";
  const outDtype = c.outDtype ?? "f32";
  if ((dtype === "f16" || outDtype === "f16") && !gpu.hasF16) return;
  if (c.path === "broadcast" && !gpu.hasSubgroups) return;
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
  // An f16 output accumulates onto f16 values: round the prior the same way the buffer stores it.
  const prior = c.accumulate ? asDtype(randn(batch * M * N, rand), outDtype) : null;
  if (prior) gpu.write(cBuf, outDtype === "f16" ? toF16Array(prior) : prior);
  else gpu.fill32(cBuf, outDtype === "f16" ? NAN_F16X2_BITS : NAN_F32_BITS);

  const strideB = c.broadcastB ? 0 : K * N;
  const args = { M, N, K, transA: c.transA, transB: c.transB, batch, strideB, dtype, outDtype, alpha: c.alpha, accumulate: c.accumulate, path: c.path, splitK: c.splitK };
  const plan = matmulPlan(gpu, args);
  if (c.path) expect(plan.path).toBe(c.path);
  if ((c.splitK ?? 1) > 1) expect(plan.slices, `${JSON.stringify(c)}: forced split`).toBeGreaterThan(1);
  if (plan.slices > 1) {
    // The pool hands the most recently released buffer of a size class out first: poison the split's scratch.
    const scratch = gpu.alloc(plan.scratchBytes, "poisoned_scratch");
    gpu.fill32(scratch, NAN_F32_BITS);
    gpu.release(scratch);
  }
  const bias = c.bias ? randn(N, rand) : null;
  const biasBuf = bias ? gpu.upload(bias) : undefined;
  matmul(gpu, { a: aBuf, b: bBuf, c: cBuf, ...args, bias: biasBuf });
  const got = outDtype === "f16" ? await gpu.readF16(cBuf, batch * M * N) : await gpu.readF32(cBuf, batch * M * N);

  const want = matmulReference(a, b, { M, N, K, transA: c.transA, transB: c.transB, batch, strideB, alpha: c.alpha });
  const absA = Float64Array.from(a, Math.abs);
  const absB = Float64Array.from(b, Math.abs);
  const mag = matmulReference(absA, absB, { M, N, K, transA: c.transA, transB: c.transB, batch, strideB, alpha: Math.abs(c.alpha ?? 1) });
  if (prior) for (let i = 0; i < want.length; i++) {
    want[i] += prior[i];
    mag[i] += Math.abs(prior[i]);
  }
  if (bias) for (let i = 0; i < want.length; i++) {
    want[i] += bias[i % N];
    mag[i] += Math.abs(bias[i % N]);
  }
  const bound = mag.map((m, i) => RTOL_ACCUM * m + (outDtype === "f16" ? RTOL_F16_OUT * Math.abs(want[i]) : 0) + 1e-30);
  const report = compare(got, want, bound);
  gpu.release(aBuf, bBuf, cBuf, biasBuf);
  expect(report.ok, `${JSON.stringify(c)} (${plan.label}, ${plan.slices} K slices of ${plan.kLen}): ${describeReport(report)} (seed ${seed})`).toBe(true);
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
    // The subgroup-broadcast kernel (CPU adapters' default): every orientation, lane operand vec4 and scalar,
    // tiles past the edge, batches, f16.
    { M: 37, N: 70, K: 96, transB: true, path: "broadcast" }, // lanes along N, vec4
    { M: 37, N: 70, K: 95, transB: true, path: "broadcast" }, // K % 4 ≠ 0: scalar lane loads
    { M: 45, N: 29, K: 61, path: "broadcast" }, // A·B: lanes along M (computes Cᵀ), vec4 needs K % 4
    { M: 45, N: 29, K: 64, path: "broadcast" },
    { M: 23, N: 41, K: 77, transA: true, path: "broadcast" }, // Aᵀ·B: scalar lanes
    { M: 9, N: 13, K: 50, transA: true, transB: true, path: "broadcast" },
    { M: 3, N: 150, K: 36, transB: true, path: "broadcast", batch: 2, accumulate: true, alpha: -1.5 },
    { M: 17, N: 33, K: 40, transB: true, path: "broadcast", batch: 3, broadcastB: true },
    { M: 1, N: 1, K: 3, path: "broadcast" },
    // ≥ 2²² multiply-adds: the 16×4 tiles used at Qwen shapes (forward x·Wᵀ, dX = dY·W, dW = dYᵀ·X), ragged edges.
    { M: 37, N: 70, K: 1700, transB: true, path: "broadcast" },
    { M: 70, N: 37, K: 1700, path: "broadcast" },
    { M: 37, N: 70, K: 1703, transA: true, path: "broadcast", accumulate: true },
    { M: 26, N: 35, K: 72, transB: true, path: "broadcast", dtype: "f16", outDtype: "f16" },
    { M: 30, N: 18, K: 41, path: "broadcast", dtype: "f16" },
    // Split-K on every kernel: skinny outputs with a long reduction (down_proj at small M; weight gradients where
    // K is the token count), slices that do not divide K, alpha/accumulate/f16 output applied once by the reduction.
    { M: 5, N: 40, K: 1000, transB: true, path: "tiled", splitK: 5 },
    { M: 5, N: 40, K: 1000, transB: true, path: "direct", splitK: 7 },
    { M: 5, N: 40, K: 1000, transB: true, path: "broadcast", splitK: 3 },
    { M: 19, N: 37, K: 777, transA: true, path: "tiled", splitK: 4, accumulate: true, alpha: 0.75 }, // dWᵀ-shaped
    { M: 19, N: 37, K: 777, transA: true, path: "broadcast", splitK: 4, accumulate: true, alpha: 0.75 },
    { M: 12, N: 21, K: 515, path: "broadcast", splitK: 6, batch: 2, broadcastB: true },
    { M: 12, N: 21, K: 515, path: "tiled", splitK: 2, batch: 3, alpha: -2 },
    { M: 8, N: 24, K: 640, transB: true, path: "direct", splitK: 4, dtype: "f16", outDtype: "f16", accumulate: true },
    { M: 6, N: 30, K: 600, transB: true, path: "broadcast", splitK: 5, dtype: "f16", outDtype: "f16" },
    { M: 4, N: 6, K: 2100, transB: true }, // default path; the heuristic splits this (checked below)
    // A fused bias (nn.Linear's, added after alpha and the accumulated prior) on every kernel, split or not.
    { M: 1, N: 67, K: 132, transB: true, bias: true }, // decode GEMV, the adapter's default path
    { M: 13, N: 37, K: 40, transB: true, path: "broadcast", bias: true, batch: 2, accumulate: true, alpha: 0.5 },
    { M: 29, N: 19, K: 48, path: "broadcast", bias: true }, // lanes along M
    { M: 21, N: 70, K: 36, transB: true, path: "direct", bias: true, dtype: "f16", outDtype: "f16" },
    { M: 19, N: 33, K: 47, transB: true, path: "tiled", bias: true },
    { M: 5, N: 40, K: 1000, transB: true, path: "broadcast", splitK: 3, bias: true, accumulate: true },
  ];
  for (const c of fixed) it(`fixed ${JSON.stringify(c)}`, () => check(c));

  it("8 fresh random shapes and layouts", async () => {
    for (let i = 0; i < 8; i++) {
      const c: Case = {
        M: randInt(1, 150, rand),
        N: randInt(1, 150, rand),
        K: randInt(1, 300, rand),
        transA: rand() < 0.5,
        transB: rand() < 0.5,
        batch: randInt(1, 3, rand),
        dtype: rand() < 0.3 ? "f16" : "f32",
        accumulate: rand() < 0.2,
        alpha: rand() < 0.3 ? randn(1, rand)[0] : undefined,
        path: (["tiled", "direct", "broadcast"] as const)[randInt(0, 2, rand)],
      };
      if (rand() < 0.4) c.K = randInt(300, 1500, rand); // long reduction, split into 2–6 slices
      if (c.K >= 300) c.splitK = randInt(2, 6, rand);
      if (c.path === "direct") {
        c.transA = false;
        c.transB = true;
        c.K = Math.max(4, c.K - (c.K % 4));
      }
      await check(c);
    }
  });
});

describe("split-K heuristic", () => {
  const base = { granule: 16, outElems: 64 * 1536, batch: 1, maxScratchBytes: 2 ** 27 };
  it("splits GPU products with few output tiles and a long K (documented examples)", () => {
    expect(chooseSplitK({ ...base, tiles: 24, K: 8960, cpu: false })).toEqual({ slices: 11, kLen: 816 }); // M=64 down_proj
    expect(chooseSplitK({ ...base, tiles: 24, K: 512, cpu: false, outElems: 16 * 1536 })).toEqual({ slices: 4, kLen: 128 }); // LoRA dA
  });
  it("does not split when the tiles already fill the device or K is short", () => {
    expect(chooseSplitK({ ...base, tiles: 576, K: 8960, cpu: false }).slices).toBe(1);
    expect(chooseSplitK({ ...base, tiles: 2, K: 200, cpu: false }).slices).toBe(1);
    expect(chooseSplitK({ ...base, tiles: 1000, K: 100000, cpu: true }).slices).toBe(1);
  });
  it("keeps the partials within the scratch cap and covers K exactly", () => {
    const s = chooseSplitK({ ...base, tiles: 1, K: 100000, cpu: false, outElems: 2 ** 22, maxScratchBytes: 2 ** 26 });
    expect(s.slices * 2 ** 22 * 4).toBeLessThanOrEqual(2 ** 26);
    expect(s.kLen % 16).toBe(0);
    expect((s.slices - 1) * s.kLen).toBeLessThan(100000);
    expect(s.slices * s.kLen).toBeGreaterThanOrEqual(100000);
  });
  it("is what matmul picks by default for a skinny product with a long K", () => {
    expect(matmulPlan(gpu, { M: 4, N: 6, K: 2100, transB: true }).slices).toBeGreaterThan(1);
    expect(matmulPlan(gpu, { M: 512, N: 1536, K: 1536, transB: true }).slices).toBe(1);
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
    expect(() => matmul(gpu, { a, b: a, c: a, M: 2, N: 2, K: 4, splitK: 0 })).toThrow(/splitK must be a positive integer/);
    expect(() => matmul(gpu, { a, b: a, c: a, M: 2, N: 2, K: 4, path: "direct" })).toThrow(/path "direct" needs transB/);
    expect(() => matmulPlan(gpu, { M: 8192, N: 8192, K: 65536, splitK: 32 })).toThrow(/partial sums .* maxStorageBufferBindingSize/);
    gpu.release(a);
  });
});
