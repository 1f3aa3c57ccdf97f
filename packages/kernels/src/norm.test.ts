import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGpu, type Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import { rmsNorm, rmsNormBackward, rmsNormBackwardReference, rmsNormBackwardRowsPerBlock, rmsNormReference } from "./norm.js";
import { columnSumPlan, rowWorkgroup, vecWidth, type Dtype } from "./elementwise.js";
import { compare, describeReport, freshSeed, randInt, randn, rng } from "./testing.js";
import { asDtype, poisonedBuffer, readAs, uploadAs } from "./testing.js";
import { addRmsNorm, addRmsNormReference } from "./residual-norm.js";

// Error bounds (ε = 2⁻²⁴). Let k = ⌈H/(V·WG)⌉ + log2(WG) + 3: the longest chain of f32 additions in a row
// reduction (a thread's serial fma run over its vectors, the vec4 horizontal sum, the tree).
//  forward: Σx² is within kε relative; 1/sqrt adds ≤ 2 ulp, so r is within (k/2 + 3)ε and y = x·r·w within
//    (k/2 + 5)ε. We assert (k + 8)ε: |y − ref| ≤ (k + 8)ε·|x·r·w| (+ 2⁻¹¹|y| + 2⁻²⁴ for f16 outputs) and
//    |rstd − ref| ≤ (k + 8)ε·rstd.
//  backward: dx = r·g − x·r³·Σ(g·x)/H cancels, so its bound is relative to the magnitude
//    mag = r·|g| + r³·|x|·Σ|g·x|/H: |dx − ref| ≤ (2k + 16)ε·mag (r³ carries 3× r's error, the dot product k more);
//    dw = Σ_rows dy·x·r: |dw − ref| ≤ (k + 8 + rowsPerBlock + chunkRows + chunks)ε·Σ_rows|dy·x·r| (r's error, the
//    sequential per-block partials, then columnSum's fixed-order passes). f16 dx adds 2⁻¹¹|dx| + 2⁻²⁴.
// A wrong index, a missing row or the wrong statistic gives errors of O(|y|) — 10⁵× these bounds.
const EPS = 2 ** -24;
const F16_REL = 2 ** -11;
const F16_ABS = 2 ** -24;

let gpu: Gpu;
const seed = freshSeed();
const rand = rng(seed);

beforeAll(async () => {
  gpu = await createGpu();
  console.log(`norm tests on ${gpu.adapterName} (f16: ${gpu.hasF16}); seed ${seed} (NR_SEED=${seed} to replay)`);
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

interface Case {
  rows: number;
  H: number;
  eps?: number;
  xDtype?: Dtype;
  outDtype?: Dtype;
  dxDtype?: Dtype;
  /** Row scale: tiny/huge rows check the statistics stay in f32 range handling. */
  scale?: number;
  accumulate?: boolean;
  /** Workgroup size override (lavapipe's default is 8; GPUs use 64–256: exercise those here too). */
  wg?: number;
}

async function check(c: Case) {
  const { rows, H } = c;
  const eps = c.eps ?? 1e-6;
  const xDtype = c.xDtype ?? "f32";
  const outDtype = c.outDtype ?? "f32";
  const dxDtype = c.dxDtype ?? "f32";
  const dyDtype = outDtype;
  if (skipF16(xDtype, outDtype, dxDtype)) return;
  const tag = JSON.stringify(c);
  const x = asDtype(randn(rows * H, rand, c.scale ?? 1), xDtype);
  // Per-row scale variation so the rows' statistics differ (a wrong row index is caught).
  for (let m = 0; m < rows; m++) {
    const s = 0.25 + 2 * rand();
    for (let j = 0; j < H; j++) x[m * H + j] *= s;
  }
  const xr = asDtype(x, xDtype);
  const w = randn(H, rand, 0.5).map((v) => 1 + v);
  const xBuf = up(xr, xDtype);
  const wBuf = gpu.upload(w);
  const yBuf = poisoned(rows * H, outDtype, "y");
  const rBuf = poisoned(rows, "f32", "rstd");
  rmsNorm(gpu, { x: xBuf, w: wBuf, y: yBuf, rstd: rBuf, rows, H, eps, xDtype, outDtype, workgroupSize: c.wg });
  const WG = rowWorkgroup(gpu, H / vecWidth(H), c.wg);
  const k = Math.ceil(H / (vecWidth(H) * WG)) + Math.log2(WG) + 3;
  const y = await read(yBuf, rows * H, outDtype);
  const rstd = await gpu.readF32(rBuf, rows);
  const ref = rmsNormReference(xr, w, rows, H, eps);
  const fo = outDtype === "f16";
  expectClose(`rmsNorm y ${tag}`, y, ref.y, ref.y.map((v) => (k + 8) * EPS * Math.abs(v) + (fo ? F16_REL * Math.abs(v) + F16_ABS : 0) + 1e-37));
  expectClose(`rmsNorm rstd ${tag}`, rstd, ref.rstd, ref.rstd.map((r) => (k + 8) * EPS * r));

  // Backward from the GPU's rstd.
  const dy = asDtype(randn(rows * H, rand), dyDtype);
  const dyBuf = up(dy, dyDtype);
  const prior = c.accumulate ? asDtype(randn(rows * H, rand), dxDtype) : null;
  const priorW = c.accumulate ? randn(H, rand) : null;
  const dxBuf = prior ? up(prior, dxDtype) : poisoned(rows * H, dxDtype, "dx");
  const dwBuf = priorW ? gpu.upload(priorW) : poisoned(H, "f32", "dw");
  rmsNormBackward(gpu, {
    dy: dyBuf, x: xBuf, w: wBuf, rstd: rBuf, dx: dxBuf, dw: dwBuf, rows, H, xDtype, dyDtype, dxDtype,
    accumulateDx: c.accumulate, accumulateDw: c.accumulate, workgroupSize: c.wg,
  });
  const dx = await read(dxBuf, rows * H, dxDtype);
  const dw = await gpu.readF32(dwBuf, H);
  const want = rmsNormBackwardReference(dy, xr, w, rows, H, eps);
  const mag = new Float64Array(rows * H);
  const dwMag = new Float64Array(H);
  for (let m = 0; m < rows; m++) {
    const r = ref.rstd[m];
    let s = 0;
    for (let j = 0; j < H; j++) s += Math.abs(dy[m * H + j] * w[j] * xr[m * H + j]);
    for (let j = 0; j < H; j++) {
      const i = m * H + j;
      mag[i] = r * Math.abs(dy[i] * w[j]) + (r * r * r * Math.abs(xr[i]) * s) / H;
      dwMag[j] += Math.abs(dy[i] * xr[i] * r);
    }
  }
  if (prior) for (let i = 0; i < rows * H; i++) {
    want.dx[i] += prior[i];
    mag[i] += Math.abs(prior[i]);
  }
  if (priorW) for (let j = 0; j < H; j++) {
    want.dw[j] += priorW[j];
    dwMag[j] += Math.abs(priorW[j]);
  }
  const fdx = dxDtype === "f16";
  expectClose(`rmsNormBackward dx ${tag}`, dx, want.dx, Float64Array.from(mag, (m, i) => (2 * k + 16) * EPS * m + (fdx ? F16_REL * Math.abs(want.dx[i]) + F16_ABS : 0) + 1e-37));
  const rpb = rmsNormBackwardRowsPerBlock(gpu, rows);
  const blocks = Math.ceil(rows / rpb);
  const plan = columnSumPlan(blocks, H);
  const kdw = k + 8 + rpb + plan.chunkRows + plan.chunks;
  expectClose(`rmsNormBackward dw ${tag}`, dw, want.dw, Float64Array.from(dwMag, (m) => kdw * EPS * m + 1e-37));
  gpu.release(xBuf, wBuf, yBuf, rBuf, dyBuf, dxBuf, dwBuf);
}

describe("rmsNorm forward + backward vs float64", () => {
  const fixed: Case[] = [
    { rows: 1, H: 1 },
    { rows: 3, H: 2, eps: 0.5 }, // eps that matters
    { rows: 7, H: 129 }, // WG 64, 3 columns per thread, ragged
    { rows: 37, H: 1536 }, // Qwen2.5-1.5B hidden, WG 256 × 6
    { rows: 11, H: 1536, outDtype: "f16", accumulate: true }, // f16 normalized activations, accumulated grads
    { rows: 19, H: 128, xDtype: "f16", outDtype: "f16", dxDtype: "f16" }, // Qwen3 per-head q/k norm (head dim 128)
    { rows: 600, H: 129, accumulate: true }, // several rows per backward block; dw partials through two passes
    { rows: 5, H: 1000, scale: 1e-18 }, // tiny rows: eps dominates
    { rows: 4, H: 1536, scale: 1e15 }, // big rows: x² sums to ~1e33, still finite in f32
    // The GPU workgroup sizes (lavapipe defaults to 8).
    { rows: 9, H: 1536, wg: 256 },
    { rows: 300, H: 1536, wg: 128, accumulate: true },
    { rows: 20, H: 129, wg: 64, outDtype: "f16" },
    { rows: 6, H: 36, wg: 1 },
  ];
  for (const c of fixed) it(JSON.stringify(c), () => check(c));

  it("6 fresh random shapes", async () => {
    for (let i = 0; i < 6; i++) {
      // H from buckets already compiled above (keeps the test fast); rows fresh.
      const H = [1, 7, 100, 129, 1536, 1000][randInt(0, 5, rand)];
      await check({ rows: randInt(1, 300, rand), H, accumulate: rand() < 0.3 });
    }
  });
});

describe("rmsNorm reference backward vs finite differences of the reference forward", () => {
  it("dx and dw", () => {
    const rows = 3;
    const H = 5;
    const eps = 1e-3;
    const x = Float64Array.from(randn(rows * H, rand));
    const w = Float64Array.from(randn(H, rand));
    const dy = Float64Array.from(randn(rows * H, rand));
    const loss = (xx: Float64Array, ww: Float64Array) => {
      const { y } = rmsNormReference(xx, ww, rows, H, eps);
      let s = 0;
      for (let i = 0; i < y.length; i++) s += dy[i] * y[i];
      return s;
    };
    const h = 1e-6;
    const { dx, dw } = rmsNormBackwardReference(dy, x, w, rows, H, eps);
    for (let i = 0; i < x.length; i++) {
      const xp = Float64Array.from(x);
      const xm = Float64Array.from(x);
      xp[i] += h;
      xm[i] -= h;
      expect(Math.abs((loss(xp, w) - loss(xm, w)) / (2 * h) - dx[i])).toBeLessThan(1e-7);
    }
    for (let j = 0; j < H; j++) {
      const wp = Float64Array.from(w);
      const wm = Float64Array.from(w);
      wp[j] += h;
      wm[j] -= h;
      expect(Math.abs((loss(x, wp) - loss(x, wm)) / (2 * h) - dw[j])).toBeLessThan(1e-7);
    }
  });
});

describe("rmsNorm argument checks", () => {
  it("rejects short buffers and aliasing", () => {
    const x = gpu.alloc(4 * 10);
    const w = gpu.alloc(4 * 5);
    const y = gpu.alloc(4 * 10);
    expect(() => rmsNorm(gpu, { x, w, y, rows: 3, H: 5, eps: 1e-6 })).toThrow(/x holds 40 bytes, needs 60/);
    expect(() => rmsNorm(gpu, { x, w, y: x, rows: 2, H: 5, eps: 1e-6 })).toThrow(/alias/);
    expect(() => rmsNorm(gpu, { x, w, y, rows: 2, H: 5, eps: -1 })).toThrow(/eps/);
    gpu.release(x, w, y);
  });
});

// addRmsNorm (residual-norm.ts: the forward's residual mode, x ← x + r, then y = rmsnorm(x)·w). Bounds: the sum is one
// rounding, |x − ref| ≤ ε|x|; y as the forward above with k = H + 8 (a serial chain at most H long plus the tree):
// |y − ref| ≤ (k + 8)ε·|x·r·w|. A wrong row, column or statistic is off by O(|y|).
describe("addRmsNorm (residual add + RMSNorm in one dispatch) vs float64", () => {
  async function checkResidual(rows: number, H: number) {
    const x = randn(rows * H, rand, 3), r = randn(rows * H, rand), w = randn(H, rand);
    const eps = 1e-6;
    const ref = addRmsNormReference(x, r, w, rows, H, eps);
    const xB = gpu.upload(x), rB = gpu.upload(r), wB = gpu.upload(w);
    const yB = poisoned(rows * H, "f32", "y");
    addRmsNorm(gpu, { x: xB, r: rB, w: wB, y: yB, rows, H, eps });
    const s = await gpu.readF32(xB, rows * H), y = await gpu.readF32(yB, rows * H);
    const rstd = (row: number) => 1 / Math.sqrt(ref.sum.subarray(row * H, (row + 1) * H).reduce((a, v) => a + v * v, 0) / H + eps);
    const tag = `rows=${rows} H=${H}`;
    expectClose(`sum ${tag}`, s, ref.sum, Array.from(ref.sum, (v) => EPS * Math.abs(v) + 1e-30));
    expectClose(`y ${tag}`, y, ref.y, Array.from(ref.y, (_, i) => (H + 16) * EPS * Math.abs(ref.sum[i] * rstd(Math.floor(i / H)) * w[i % H]) + 1e-30));
    gpu.release(xB, rB, wB, yB);
  }

  it("vec4 and scalar rows, awkward sizes, a fresh random shape", async () => {
    await checkResidual(5, 68); // vec4 lanes
    await checkResidual(3, 37); // H % 4 ≠ 0: scalar path
    await checkResidual(1, 192); // a decode row
    await checkResidual(randInt(1, 9, rand), randInt(1, 300, rand));
  });

  it("rejects aliased and too-small buffers", () => {
    const a = gpu.alloc(64), b = gpu.alloc(64), w = gpu.alloc(16);
    expect(() => addRmsNorm(gpu, { x: a, r: b, w, y: a, rows: 1, H: 4, eps: 1e-6 })).toThrow(/distinct/);
    expect(() => addRmsNorm(gpu, { x: a, r: b, w, y: gpu.alloc(8), rows: 1, H: 16, eps: 1e-6 })).toThrow(/y/);
    gpu.release(a, b, w);
  });
});
