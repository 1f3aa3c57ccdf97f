import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGpu, type Gpu } from "./runtime/device.js";
import { addRmsNorm, addRmsNormReference } from "./residual-norm.js";
import { compare, describeReport, freshSeed, poisonedBuffer, randInt, randn, rng } from "./testing.js";

// Bounds (ε = 2⁻²⁴): s = x + r is one rounding, |s − ref| ≤ ε|s|. y: Σs² over a row is a chain of at most
// k = H + 8 f32 additions (serial per thread, vec4 sum, tree) → relative kε; 1/sqrt and the two products add a
// few ulp: |y − ref| ≤ (k + 8)ε·|s·r·w| (ref's magnitudes). A wrong row, column or statistic is off by O(|y|).
const EPS = 2 ** -24;

let gpu: Gpu;
const seed = freshSeed();
const rand = rng(seed);
beforeAll(async () => {
  gpu = await createGpu();
  console.log(`residual-norm tests; seed ${seed} (NR_SEED=${seed} to replay)`);
});
afterAll(() => gpu?.destroy());

async function check(rows: number, H: number) {
  const x = randn(rows * H, rand, 3), r = randn(rows * H, rand), w = randn(H, rand);
  const eps = 1e-6;
  const ref = addRmsNormReference(x, r, w, rows, H, eps);
  const xB = gpu.upload(x), rB = gpu.upload(r), wB = gpu.upload(w);
  const yB = poisonedBuffer(gpu, rows * H, "f32", "y");
  addRmsNorm(gpu, { x: xB, r: rB, w: wB, y: yB, rows, H, eps });
  const s = await gpu.readF32(xB, rows * H), y = await gpu.readF32(yB, rows * H);
  const k = H + 8;
  const rs = (i: number) => {
    let ss = 0;
    const row = Math.floor(i / H);
    for (let j = 0; j < H; j++) ss += ref.sum[row * H + j] ** 2;
    return 1 / Math.sqrt(ss / H + eps);
  };
  const tag = `rows=${rows} H=${H}`;
  const rs1 = compare(s, ref.sum, Array.from(ref.sum, (v) => EPS * Math.abs(v) + 1e-30));
  expect(rs1.ok, `sum ${tag}: ${describeReport(rs1)} (seed ${seed})`).toBe(true);
  const ry = compare(y, ref.y, Array.from(ref.y, (_, i) => (k + 8) * EPS * Math.abs(ref.sum[i] * rs(i) * w[i % H]) + 1e-30));
  expect(ry.ok, `y ${tag}: ${describeReport(ry)} (seed ${seed})`).toBe(true);
  gpu.release(xB, rB, wB, yB);
}

describe("addRmsNorm (residual add + RMSNorm in one dispatch) vs float64", () => {
  it("vec4 and scalar rows, awkward sizes", async () => {
    await check(5, 68); // vec4 lanes, rows not a multiple of anything
    await check(3, 37); // H % 4 ≠ 0: scalar path
    await check(1, 192); // a decode row
    await check(randInt(1, 9, rand), randInt(1, 300, rand)); // fresh random shape
  });

  it("rejects aliased and too-small buffers", () => {
    const a = gpu.alloc(64), b = gpu.alloc(64), w = gpu.alloc(16);
    expect(() => addRmsNorm(gpu, { x: a, r: b, w, y: a, rows: 1, H: 4, eps: 1e-6 })).toThrow(/distinct/);
    expect(() => addRmsNorm(gpu, { x: a, r: b, w, y: gpu.alloc(8), rows: 1, H: 16, eps: 1e-6 })).toThrow(/y/);
    gpu.release(a, b, w);
  });
});
