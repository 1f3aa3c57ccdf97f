import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGpu, type Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import {
  add,
  addReference,
  biasAdd,
  biasAddReference,
  biasGrad,
  columnSum,
  columnSumPlan,
  columnSumReference,
  copyColumns,
  embedding,
  embeddingBackward,
  embeddingBackwardReference,
  embeddingReference,
  swiglu,
  swigluBackward,
  swigluBackwardReference,
  swigluReference,
  type Dtype,
} from "./elementwise.js";
import { compare, describeReport, freshSeed, randInt, randn, rng } from "./testing.js";
import { asDtype, poisonedBuffer, readAs, uploadAs } from "./testing.js";

// Error bounds (ε = 2⁻²⁴, one f32 rounding; f16 storage rounding 2⁻¹¹ relative + 2⁻²⁴ absolute for subnormals):
//  add:        |y − ref| ≤ 2ε·|ref| (one rounding of the sum; inputs already exact in their dtype) + f16 output rounding.
//  swiglu:     WGSL's exp is accurate to (3 + 2|x|) ulp, so σ(g) carries ≤ (6 + 2|g|)ε relative error and
//              h = g·σ(g)·up ≤ (16 + 4|g|)ε·|h| — the bound used; + 2⁻¹¹|h| for f16 outputs.
//  swiglu bwd: dgate = dh·up·σ(1 + g(1−σ)) can cancel near g ≈ −1.28, so its bound is relative to the magnitude
//              |dh·up·σ|·(1 + |g|(1−σ)) instead of |dgate|: (16 + 4|g|)ε·that; dup like h.
//  columnSum:  a sum of M terms in f32 in a fixed order (sequential runs of ≤ chunkRows/4 + chunks + 2 terms):
//              |err| ≤ (chunkRows/4 + chunks + 4)·ε·Σ|x|.
//  embedding:  exact (a copy; f16 tables are widened exactly).
//  embedding bwd: a sum of the duplicates of one id in token order: ≤ (count + 1)·ε·Σ|dOut|.
// Every one of these is orders of magnitude below the O(1) error a wrong index or a missing write produces.
const EPS = 2 ** -24;
const F16_REL = 2 ** -11;
/** f16 subnormal spacing: the absolute rounding error floor of an f16 output. */
const F16_ABS = 2 ** -24;

let gpu: Gpu;
const seed = freshSeed();
const rand = rng(seed);

beforeAll(async () => {
  gpu = await createGpu();
  console.log(`elementwise tests on ${gpu.adapterName} (f16: ${gpu.hasF16}); seed ${seed} (NR_SEED=${seed} to replay)`);
});
afterAll(() => gpu?.destroy());

const up = (x: Float32Array, dt: Dtype) => uploadAs(gpu, x, dt);
const poisoned = (count: number, dt: Dtype, label = "out") => poisonedBuffer(gpu, count, dt, label);
const read = (b: GpuBuffer, count: number, dt: Dtype) => readAs(gpu, b, count, dt);
const skipF16 = (...dts: Dtype[]) => dts.includes("f16") && !gpu.hasF16;

function expectClose(what: string, got: ArrayLike<number>, want: ArrayLike<number>, bound: number | ArrayLike<number>) {
  const r = compare(got, want, bound);
  expect(r.ok, `${what}: ${describeReport(r)} (seed ${seed})`).toBe(true);
}

/** Central finite difference of a float64 scalar function along every coordinate of x. */
function finiteDiff(f: (x: Float64Array) => number, x: Float64Array, h = 1e-6): Float64Array {
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const xp = Float64Array.from(x);
    const xm = Float64Array.from(x);
    xp[i] += h;
    xm[i] -= h;
    g[i] = (f(xp) - f(xm)) / (2 * h);
  }
  return g;
}
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};
const randn64 = (n: number) => Float64Array.from(randn(n, rand));

describe("add (residual)", () => {
  const cases: Array<{ n: number; dtype?: Dtype; bDtype?: Dtype; inPlace?: boolean }> = [
    { n: 1 },
    { n: 4099 }, // prime
    { n: 1537, inPlace: true },
    { n: 777, bDtype: "f16", inPlace: true }, // f16 block output into the f32 residual stream
    { n: 257, dtype: "f16" },
    // vec4 variants (n a multiple of 4)
    { n: 1536, inPlace: true },
    { n: 4100, bDtype: "f16", inPlace: true },
    { n: 256, dtype: "f16" },
    { n: 12 },
  ];
  for (const c of cases) {
    it(JSON.stringify(c), async () => {
      const dtype = c.dtype ?? "f32";
      const bDtype = c.bDtype ?? dtype;
      if (skipF16(dtype, bDtype)) return;
      const a = asDtype(randn(c.n, rand), dtype);
      const b = asDtype(randn(c.n, rand), bDtype);
      const aBuf = up(a, dtype);
      const bBuf = up(b, bDtype);
      const out = c.inPlace ? undefined : poisoned(c.n, dtype);
      add(gpu, { a: aBuf, b: bBuf, out, n: c.n, dtype, bDtype });
      const got = await read(out ?? aBuf, c.n, dtype);
      const want = addReference(a, b);
      expectClose(`add ${JSON.stringify(c)}`, got, want, want.map((w) => 2 * EPS * Math.abs(w) + (dtype === "f16" ? F16_REL * Math.abs(w) + F16_ABS : 0)));
      gpu.release(aBuf, bBuf, out);
    });
  }
  it("rejects a short buffer and an aliased output", () => {
    const a = gpu.alloc(16);
    const b = gpu.alloc(16);
    expect(() => add(gpu, { a, b, n: 5 })).toThrow(/a holds 16 bytes, needs 20/);
    expect(() => add(gpu, { a, b, out: a, n: 4 })).toThrow(/aliases/);
    gpu.release(a, b);
  });
});

describe("swiglu", () => {
  const cases: Array<{ M: number; I: number; fused?: boolean; dtype?: Dtype; outDtype?: Dtype }> = [
    { M: 1, I: 1 },
    { M: 7, I: 131 },
    { M: 5, I: 97, fused: true },
    { M: 3, I: 1120, fused: true, dtype: "f16" }, // Qwen2.5-1.5B MLP width / 8
    { M: 9, I: 61, dtype: "f16", outDtype: "f16" },
    // vec4 variants (I a multiple of 4)
    { M: 6, I: 1120 },
    { M: 4, I: 64, fused: true },
    { M: 5, I: 96, dtype: "f16", outDtype: "f16" },
    { M: 1, I: 4, fused: true, dtype: "f16", outDtype: "f16" },
  ];
  for (const c of cases) {
    it(`forward and backward ${JSON.stringify(c)}`, async () => {
      const { M, I } = c;
      const dtype = c.dtype ?? "f32";
      const outDtype = c.outDtype ?? "f32";
      if (skipF16(dtype, outDtype)) return;
      const n = M * I;
      // Spread gate over ±12 (σ saturates at both ends) and a few exact extremes.
      const g = asDtype(randn(n, rand, 3), dtype);
      if (n > 4) {
        g[0] = -100;
        g[1] = 100;
        g[2] = 0;
      }
      const u = asDtype(randn(n, rand), dtype);
      const dh = asDtype(randn(n, rand), outDtype);
      let gBuf: GpuBuffer;
      let uBuf: GpuBuffer | undefined;
      if (c.fused) {
        const gu = new Float32Array(2 * n);
        for (let m = 0; m < M; m++) {
          gu.set(g.subarray(m * I, (m + 1) * I), m * 2 * I);
          gu.set(u.subarray(m * I, (m + 1) * I), m * 2 * I + I);
        }
        gBuf = up(gu, dtype);
      } else {
        gBuf = up(g, dtype);
        uBuf = up(u, dtype);
      }
      const hBuf = poisoned(n, outDtype, "h");
      swiglu(gpu, { gate: gBuf, up: uBuf, h: hBuf, M, I, dtype, outDtype });
      const h = await read(hBuf, n, outDtype);
      const wantH = swigluReference(g, u);
      const boundH = wantH.map((w, i) => (16 + 4 * Math.abs(g[i])) * EPS * Math.abs(w) + (outDtype === "f16" ? F16_REL * Math.abs(w) + F16_ABS : 0) + 1e-30);
      expectClose(`swiglu ${JSON.stringify(c)}`, h, wantH, boundH);

      // Backward, gradients in outDtype.
      const dhBuf = up(dh, outDtype);
      const dgBuf = poisoned((c.fused ? 2 : 1) * n, outDtype, "dgate");
      const duBuf = c.fused ? undefined : poisoned(n, outDtype, "dup");
      swigluBackward(gpu, { dh: dhBuf, gate: gBuf, up: uBuf, dgate: dgBuf, dup: duBuf, M, I, dtype, gradDtype: outDtype });
      let dg: Float32Array;
      let du: Float32Array;
      if (c.fused) {
        const both = await read(dgBuf, 2 * n, outDtype);
        dg = new Float32Array(n);
        du = new Float32Array(n);
        for (let m = 0; m < M; m++) {
          dg.set(both.subarray(m * 2 * I, m * 2 * I + I), m * I);
          du.set(both.subarray(m * 2 * I + I, (m + 1) * 2 * I), m * I);
        }
      } else {
        dg = await read(dgBuf, n, outDtype);
        du = await read(duBuf!, n, outDtype);
      }
      const want = swigluBackwardReference(dh, g, u);
      const s = (x: number) => 1 / (1 + Math.exp(-x));
      const fo = outDtype === "f16" ? F16_REL : 0;
      const fa = outDtype === "f16" ? F16_ABS : 0;
      const bG = want.dgate.map((w, i) => {
        const mag = Math.abs(dh[i] * u[i] * s(g[i])) * (1 + Math.abs(g[i]) * (1 - s(g[i])));
        return (16 + 4 * Math.abs(g[i])) * EPS * mag + fo * Math.abs(w) + fa + 1e-30;
      });
      const bU = want.dup.map((w, i) => (16 + 4 * Math.abs(g[i])) * EPS * Math.abs(w) + fo * Math.abs(w) + fa + 1e-30);
      expectClose(`swiglu dgate ${JSON.stringify(c)}`, dg, want.dgate, bG);
      expectClose(`swiglu dup ${JSON.stringify(c)}`, du, want.dup, bU);
      gpu.release(gBuf, uBuf, hBuf, dhBuf, dgBuf, duBuf);
    });
  }

  it("reference backward matches a central finite difference of the reference forward", () => {
    const n = 9;
    const g = randn64(n).map((x) => 2 * x);
    const u = randn64(n);
    const dh = randn64(n);
    const { dgate, dup } = swigluBackwardReference(dh, g, u);
    const fdG = finiteDiff((x) => dot(dh, swigluReference(x, u)), g);
    const fdU = finiteDiff((x) => dot(dh, swigluReference(g, x)), u);
    expectClose("fd dgate", dgate, fdG, 1e-7);
    expectClose("fd dup", dup, fdU, 1e-7);
  });
});

describe("bias add and bias gradient (column sums)", () => {
  const cases: Array<{ M: number; N: number; dtype?: Dtype; biasDtype?: Dtype; inPlace?: boolean }> = [
    { M: 1, N: 1 },
    { M: 13, N: 257, inPlace: true }, // Qwen k/v proj width 256 + 1
    { M: 6, N: 70, dtype: "f16", biasDtype: "f16", inPlace: true },
    // vec4 variants (N a multiple of 4)
    { M: 9, N: 256, inPlace: true }, // Qwen2.5-1.5B k/v proj width
    { M: 3, N: 72, dtype: "f16", biasDtype: "f32" },
    { M: 2, N: 8 },
  ];
  for (const c of cases) {
    it(`biasAdd ${JSON.stringify(c)}`, async () => {
      const dtype = c.dtype ?? "f32";
      const biasDtype = c.biasDtype ?? dtype;
      if (skipF16(dtype, biasDtype)) return;
      const { M, N } = c;
      const y = asDtype(randn(M * N, rand), dtype);
      const bias = asDtype(randn(N, rand), biasDtype);
      const yBuf = up(y, dtype);
      const bBuf = up(bias, biasDtype);
      const out = c.inPlace ? undefined : poisoned(M * N, dtype);
      biasAdd(gpu, { y: yBuf, bias: bBuf, out, M, N, dtype, biasDtype });
      const got = await read(out ?? yBuf, M * N, dtype);
      const want = biasAddReference(y, bias, M, N);
      expectClose(`biasAdd ${JSON.stringify(c)}`, got, want, want.map((w) => 2 * EPS * Math.abs(w) + (dtype === "f16" ? F16_REL * Math.abs(w) + F16_ABS : 0)));
      gpu.release(yBuf, bBuf, out);
    });
  }

  const sums: Array<{ M: number; N: number; dtype?: Dtype; accumulate?: boolean }> = [
    { M: 1, N: 1 },
    { M: 37, N: 65 }, // single pass
    { M: 129, N: 3 }, // just past the single-pass limit: two passes
    { M: 1000, N: 257, accumulate: true }, // many chunks
    { M: 300, N: 131, dtype: "f16" },
    // vec4 variants (N a multiple of 4)
    { M: 40, N: 64, dtype: "f16" },
    { M: 500, N: 260, accumulate: true },
    { M: 3000, N: 1536 }, // Qwen2.5-1.5B q/o bias, many chunks
  ];
  for (const c of sums) {
    it(`columnSum / biasGrad ${JSON.stringify(c)}`, async () => {
      const dtype = c.dtype ?? "f32";
      if (skipF16(dtype)) return;
      const { M, N } = c;
      const x = asDtype(randn(M * N, rand), dtype);
      const xBuf = up(x, dtype);
      const prior = c.accumulate ? randn(N, rand) : null;
      const outBuf = prior ? gpu.upload(prior) : poisoned(N, "f32");
      if (c.accumulate) columnSum(gpu, { x: xBuf, out: outBuf, M, N, dtype, accumulate: true });
      else biasGrad(gpu, { dy: xBuf, dbias: outBuf, M, N, dtype });
      const got = await gpu.readF32(outBuf, N);
      const want = columnSumReference(x, M, N);
      const abs = columnSumReference(Float64Array.from(x, Math.abs), M, N);
      if (prior) for (let n = 0; n < N; n++) {
        want[n] += prior[n];
        abs[n] += Math.abs(prior[n]);
      }
      const plan = columnSumPlan(M, N);
      const k = plan.chunkRows / 4 + plan.chunks + 4;
      expectClose(`columnSum ${JSON.stringify(c)}`, got, want, abs.map((a) => k * EPS * a + 1e-30));
      gpu.release(xBuf, outBuf);
    });
  }

  it("is deterministic (bitwise equal on a repeat)", async () => {
    const M = 700;
    const N = 99;
    const xBuf = gpu.upload(randn(M * N, rand));
    const o1 = poisoned(N, "f32");
    const o2 = poisoned(N, "f32");
    biasGrad(gpu, { dy: xBuf, dbias: o1, M, N });
    biasGrad(gpu, { dy: xBuf, dbias: o2, M, N });
    expect(Array.from(await gpu.readU32(o1, N))).toEqual(Array.from(await gpu.readU32(o2, N)));
    gpu.release(xBuf, o1, o2);
  });

  it("reference bias gradient matches a finite difference of Σ dy·(y + bias)", () => {
    const M = 4;
    const N = 5;
    const y = randn64(M * N);
    const bias = randn64(N);
    const dy = randn64(M * N);
    const fd = finiteDiff((b) => dot(dy, biasAddReference(y, b, M, N)), bias);
    expectClose("fd dbias", columnSumReference(dy, M, N), fd, 1e-7);
  });
});

describe("embedding gather and scatter-add backward", () => {
  // wg: the backward's workgroup size (lavapipe picks 8 by default; GPUs 64–256): each is exercised here.
  const cases: Array<{ M: number; V: number; H: number; dtype?: Dtype; dup?: boolean; wg?: number }> = [
    { M: 1, V: 1, H: 1 },
    { M: 29, V: 11, H: 67, dup: true }, // many duplicate ids, scalar
    { M: 300, V: 1000, H: 192, dup: true }, // > several id tiles of tokens, vec4
    { M: 130, V: 40, H: 36, dup: true, wg: 128 },
    { M: 70, V: 20, H: 13, dup: true, wg: 64 },
    { M: 17, V: 50, H: 600, dtype: "f16", wg: 256 },
    { M: 5, V: 7, H: 8, dtype: "f16", dup: true },
  ];
  for (const c of cases) {
    it(JSON.stringify(c), async () => {
      const dtype = c.dtype ?? "f32";
      if (skipF16(dtype)) return;
      const { M, V, H } = c;
      const ids = new Uint32Array(M);
      for (let m = 0; m < M; m++) ids[m] = c.dup ? randInt(0, Math.min(V - 1, 9), rand) : randInt(0, V - 1, rand);
      // Out-of-range ids: V, and the largest u32.
      if (M > 3) {
        ids[1] = V;
        ids[M - 1] = 0xffffffff;
      }
      const table = asDtype(randn(V * H, rand), dtype);
      const idsBuf = gpu.upload(ids);
      const tBuf = up(table, dtype);
      const outBuf = poisoned(M * H, "f32");
      embedding(gpu, { ids: idsBuf, table: tBuf, out: outBuf, M, V, H, dtype });
      const got = await gpu.readF32(outBuf, M * H);
      expectClose(`embedding ${JSON.stringify(c)}`, got, embeddingReference(ids, table, V, H), 0);

      // Backward: poison dTable and overwrite (accumulate: false) — touched rows must match, the others stay NaN.
      const dOut = randn(M * H, rand);
      const dOutBuf = gpu.upload(dOut);
      const dtBuf = poisoned(V * H, "f32", "dTable");
      embeddingBackward(gpu, { ids: idsBuf, dOut: dOutBuf, dTable: dtBuf, M, V, H, accumulate: false, workgroupSize: c.wg });
      const dt = await gpu.readF32(dtBuf, V * H);
      const ref = embeddingBackwardReference(ids, dOut, V, H);
      const absRef = embeddingBackwardReference(ids, Float32Array.from(dOut, Math.abs), V, H).dTable;
      const counts = new Map<number, number>();
      for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
      let stray = 0;
      for (let v = 0; v < V; v++) {
        const rowGot = dt.subarray(v * H, (v + 1) * H);
        if (ref.touched.has(v)) {
          const k = (counts.get(v)! + 1) * EPS;
          expectClose(`embeddingBackward row ${v}`, rowGot, ref.dTable.subarray(v * H, (v + 1) * H), Array.from(absRef.subarray(v * H, (v + 1) * H), (a) => k * a));
        } else if (rowGot.some((x) => !Number.isNaN(x))) stray++;
      }
      expect(stray, `rows written that no token touches (seed ${seed})`).toBe(0);

      // Accumulate into a prior dTable; then repeat and compare bitwise (deterministic).
      const prior = randn(V * H, rand);
      gpu.write(dtBuf, prior);
      embeddingBackward(gpu, { ids: idsBuf, dOut: dOutBuf, dTable: dtBuf, M, V, H, workgroupSize: c.wg });
      const acc1 = await gpu.readF32(dtBuf, V * H);
      const wantAcc = Float64Array.from(prior, (p, i) => p + ref.dTable[i]);
      expectClose(`embeddingBackward accumulate ${JSON.stringify(c)}`, acc1, wantAcc, Float64Array.from(absRef, (a, i) => 2 * EPS * (Math.abs(prior[i]) + a) + (M + 1) * EPS * a));
      gpu.write(dtBuf, prior);
      embeddingBackward(gpu, { ids: idsBuf, dOut: dOutBuf, dTable: dtBuf, M, V, H, workgroupSize: c.wg });
      const acc2 = await gpu.readF32(dtBuf, V * H);
      expect(Buffer.from(acc2.buffer).equals(Buffer.from(acc1.buffer)), "embeddingBackward is not deterministic").toBe(true);
      gpu.release(idsBuf, tBuf, outBuf, dOutBuf, dtBuf);
    });
  }

  // Row-sharded tables (each shard its own buffer): awkward shard sizes, ids in every shard, at shard edges and
  // out of range; gather exact, scatter within the bound of the unsharded case, untouched rows never written.
  const shardCases: Array<{ M: number; V: number; H: number; rows: number; dtype?: Dtype; wg?: number }> = [
    { M: 1, V: 5, H: 3, rows: 2 },
    { M: 97, V: 53, H: 20, rows: 7 }, // 8 shards, the last of 4 rows, vec4
    { M: 64, V: 300, H: 13, rows: 128, wg: 32 }, // scalar rows, 3 shards
    { M: 40, V: 61, H: 24, rows: 30, dtype: "f16" },
  ];
  for (const c of shardCases) {
    it(`sharded ${JSON.stringify(c)}`, async () => {
      const dtype = c.dtype ?? "f32";
      if (skipF16(dtype)) return;
      const { M, V, H, rows } = c;
      const ids = new Uint32Array(M);
      for (let m = 0; m < M; m++) ids[m] = randInt(0, V - 1, rand);
      // shard edges (first/last row of a shard), and out-of-range ids
      const edges = [0, rows - 1, rows, V - 1].filter((v) => v < V);
      edges.forEach((v, i) => i + 2 < M && (ids[i + 2] = v));
      if (M > 8) [ids[0], ids[M - 1]] = [V, 0xffffffff];
      const table = asDtype(randn(V * H, rand), dtype);
      const shards: GpuBuffer[] = [];
      const dShards: GpuBuffer[] = [];
      for (let v0 = 0; v0 < V; v0 += rows) {
        const r = Math.min(rows, V - v0);
        shards.push(up(table.subarray(v0 * H, (v0 + r) * H), dtype));
        dShards.push(poisoned(r * H, "f32", "dTable"));
      }
      const idsBuf = gpu.upload(ids);
      const outBuf = poisoned(M * H, "f32");
      embedding(gpu, { ids: idsBuf, table: shards, tableShardRows: rows, out: outBuf, M, V, H, dtype });
      expectClose(`sharded embedding ${JSON.stringify(c)}`, await gpu.readF32(outBuf, M * H), embeddingReference(ids, table, V, H), 0);

      const dOut = randn(M * H, rand);
      const dOutBuf = gpu.upload(dOut);
      embeddingBackward(gpu, { ids: idsBuf, dOut: dOutBuf, dTable: dShards, tableShardRows: rows, M, V, H, accumulate: false, workgroupSize: c.wg });
      const dt = new Float32Array(V * H);
      for (let i = 0; i < dShards.length; i++) dt.set(await gpu.readF32(dShards[i], Math.min(rows, V - i * rows) * H), i * rows * H);
      const ref = embeddingBackwardReference(ids, dOut, V, H);
      const absRef = embeddingBackwardReference(ids, Float32Array.from(dOut, Math.abs), V, H).dTable;
      let stray = 0;
      for (let v = 0; v < V; v++) {
        const rowGot = dt.subarray(v * H, (v + 1) * H);
        if (!ref.touched.has(v)) {
          if (rowGot.some((x) => !Number.isNaN(x))) stray++;
          continue;
        }
        const k = (M + 1) * EPS;
        expectClose(`sharded embeddingBackward row ${v}`, rowGot, ref.dTable.subarray(v * H, (v + 1) * H), Array.from(absRef.subarray(v * H, (v + 1) * H), (a) => k * a));
      }
      expect(stray, `rows written that no token touches (seed ${seed})`).toBe(0);
      gpu.release(idsBuf, outBuf, dOutBuf, ...shards, ...dShards);
    });
  }

  it("a table over the binding limit is refused with the fix named; its shards are accepted", async () => {
    const limits = gpu.limits as Record<string, number>;
    const real = limits.maxStorageBufferBindingSize;
    const [M, V, H] = [4, 40, 8];
    const ids = gpu.upload(new Uint32Array([0, 39, 20, 7]));
    const whole = gpu.upload(randn(V * H, rand));
    const out = gpu.alloc(M * H * 4);
    try {
      limits.maxStorageBufferBindingSize = 512; // 16 rows of 8 f32
      expect(() => embedding(gpu, { ids, table: whole, out, M, V, H })).toThrow(/table needs 1280 bytes in one binding, over .*maxStorageBufferBindingSize \(512\).*row shards/);
      expect(() => embedding(gpu, { ids, table: [whole, whole], tableShardRows: 16, out, M, V, H })).toThrow(/needs 3 table shards, got 2/);
      expect(() => embedding(gpu, { ids, table: [whole, whole], tableShardRows: 20, out, M, V, H })).toThrow(/table shard 0 needs 640 bytes .*at most 16 rows/);
      const values = await gpu.readF32(whole, V * H);
      const shards = [0, 16, 32].map((v0) => gpu.upload(values.subarray(v0 * H, Math.min(V, v0 + 16) * H)));
      embedding(gpu, { ids, table: shards, tableShardRows: 16, out, M, V, H });
      limits.maxStorageBufferBindingSize = real;
      expectClose("embedding over 512-byte shards", await gpu.readF32(out, M * H), embeddingReference([0, 39, 20, 7], values, V, H), 0);
      gpu.release(...shards);
    } finally {
      limits.maxStorageBufferBindingSize = real;
      gpu.release(ids, whole, out);
    }
  });

  it("reference backward matches a finite difference of Σ dOut·gather(table)", () => {
    const V = 4;
    const H = 3;
    const ids = [2, 0, 2, 9, 2, 1];
    const table = randn64(V * H);
    const dOut = randn64(ids.length * H);
    const fd = finiteDiff((t) => dot(dOut, embeddingReference(ids, t, V, H)), table);
    expectClose("fd dTable", embeddingBackwardReference(ids, dOut, V, H).dTable, fd, 1e-7);
  });

  it("rejects a table buffer that is too small", () => {
    const ids = gpu.alloc(16);
    const t = gpu.alloc(64);
    const o = gpu.alloc(64);
    expect(() => embedding(gpu, { ids, table: t, out: o, M: 4, V: 5, H: 4 })).toThrow(/table holds/);
    gpu.release(ids, t, o);
  });
});

describe("copyColumns (column blocks of a row-blocked linear layer)", () => {
  for (const c of [{ M: 1, srcCols: 1, dstCols: 3, srcCol0: 0, dstCol0: 2, cols: 1 }, { M: 37, srcCols: 13, dstCols: 50, srcCol0: 2, dstCol0: 29, cols: 11 }, { M: 300, srcCols: 96, dstCols: 96, srcCol0: 0, dstCol0: 0, cols: 96 }]) {
    it(JSON.stringify(c), async () => {
      const { M, srcCols, dstCols, srcCol0, dstCol0, cols } = c;
      const src = randn(M * srcCols, rand);
      const prior = randn(M * dstCols, rand);
      const srcBuf = gpu.upload(src);
      const dst = gpu.upload(prior);
      copyColumns(gpu, { src: srcBuf, dst, M, srcCols, dstCols, srcCol0, dstCol0, cols });
      const copied = await gpu.readF32(dst, M * dstCols);
      copyColumns(gpu, { src: srcBuf, dst, M, srcCols, dstCols, srcCol0, dstCol0, cols, accumulate: true });
      const summed = await gpu.readF32(dst, M * dstCols);
      for (let m = 0; m < M; m++) {
        for (let j = 0; j < dstCols; j++) {
          const i = m * dstCols + j;
          const inBlock = j >= dstCol0 && j < dstCol0 + cols;
          const s = src[m * srcCols + srcCol0 + j - dstCol0];
          expect(copied[i], `copy [${m}, ${j}] (seed ${seed})`).toBe(inBlock ? s : prior[i]);
          expect(summed[i], `accumulate [${m}, ${j}] (seed ${seed})`).toBe(inBlock ? Math.fround(s + s) : prior[i]);
        }
      }
      gpu.release(srcBuf, dst);
    });
  }
  it("refuses columns outside either matrix", () => {
    const b = gpu.alloc(64), d = gpu.alloc(64);
    expect(() => copyColumns(gpu, { src: b, dst: d, M: 2, srcCols: 4, dstCols: 8, srcCol0: 1, dstCol0: 0, cols: 4 })).toThrow(/columns \[1, 5\) are outside src's 4/);
    expect(() => copyColumns(gpu, { src: b, dst: d, M: 2, srcCols: 4, dstCols: 8, srcCol0: 0, dstCol0: 6, cols: 4 })).toThrow(/outside dst's 8/);
    gpu.release(b, d);
  });
});
