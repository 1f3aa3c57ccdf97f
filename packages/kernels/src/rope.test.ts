import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGpu, type Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import { rope, ropeBackward, ropeBackwardReference, ropeErrorBound, ropeReference } from "./rope.js";
import type { Dtype } from "./elementwise.js";
import { compare, describeReport, freshSeed, randInt, randn, rng } from "./testing.js";
import { asDtype, poisonedBuffer, readAs, uploadAs } from "./testing.js";

// Error bound: `ropeErrorBound` (see rope.ts's header): per pair,
//   (|x_i| + |x_{i+D/2}|)·(a·(8 + 3·e)·2⁻²⁴ + 2⁻²⁰ + 4·2⁻²⁴),  a = pos·θ^(−2i/D), e = 2i/D·log2 θ,
// i.e. the float32 angle error, which grows linearly with the position, plus the sin/cos error after range
// reduction; f16 storage adds 2⁻¹¹|out| + 2⁻²⁴. Positions go up to 4096. A wrong pairing, head, token or frequency
// gives O(|x|) errors at any position > 0.
const F16_REL = 2 ** -11;
const F16_ABS = 2 ** -24;

let gpu: Gpu;
const seed = freshSeed();
const rand = rng(seed);

beforeAll(async () => {
  gpu = await createGpu();
  console.log(`rope tests on ${gpu.adapterName} (f16: ${gpu.hasF16}); seed ${seed} (NR_SEED=${seed} to replay)`);
});
afterAll(() => gpu?.destroy());

const up = (x: Float32Array, dt: Dtype) => uploadAs(gpu, x, dt);
const poisoned = (count: number, dt: Dtype, label = "out") => poisonedBuffer(gpu, count, dt, label);
const read = (b: GpuBuffer, count: number, dt: Dtype) => readAs(gpu, b, count, dt);

function expectClose(what: string, got: ArrayLike<number>, want: ArrayLike<number>, bound: number | ArrayLike<number>) {
  const r = compare(got, want, bound);
  expect(r.ok, `${what}: ${describeReport(r)} (seed ${seed})`).toBe(true);
}

interface Case {
  tokens: number;
  Hq: number;
  Hkv?: number;
  D: number;
  theta: number;
  positions?: number[];
  maxPos?: number;
  dtype?: Dtype;
  outOfPlace?: boolean;
  /** heads per invocation (lavapipe's default is all heads; GPUs use 1): exercise both. */
  hg?: number;
}

let worstSeen = 0; // largest (error / trig-free bound) seen, logged for the record

async function runOne(c: Case, inverse: boolean) {
  const { tokens, Hq, D, theta } = c;
  const dtype = c.dtype ?? "f32";
  if (dtype === "f16" && !gpu.hasF16) return;
  const Hkv = c.Hkv;
  const pos = Uint32Array.from(c.positions ?? Array.from({ length: tokens }, () => randInt(0, c.maxPos ?? 4096, rand)));
  const q = asDtype(randn(tokens * Hq * D, rand), dtype);
  const k = Hkv ? asDtype(randn(tokens * Hkv * D, rand), dtype) : null;
  const posBuf = gpu.upload(pos);
  const qBuf = up(q, dtype);
  const kBuf = k ? up(k, dtype) : undefined;
  const qOut = c.outOfPlace ? poisoned(q.length, dtype, "qOut") : undefined;
  const kOut = c.outOfPlace && k ? poisoned(k.length, dtype, "kOut") : undefined;
  const args = { q: qBuf, k: kBuf, positions: posBuf, qOut, kOut, tokens, Hq, Hkv, D, theta, dtype, headsPerInvocation: c.hg };
  if (inverse) ropeBackward(gpu, args);
  else rope(gpu, args);
  const tag = `${inverse ? "ropeBackward" : "rope"} ${JSON.stringify({ ...c, positions: undefined })}`;
  const check = async (name: string, buf: GpuBuffer, x: Float32Array, H: number) => {
    const got = await read(buf, x.length, dtype);
    const o = { tokens, H, D, theta };
    const want = inverse ? ropeBackwardReference(x, pos, o) : ropeReference(x, pos, o);
    const bound = ropeErrorBound(x, pos, o).map((b, i) => b + (dtype === "f16" ? F16_REL * Math.abs(want[i]) + F16_ABS : 0));
    expectClose(`${tag} ${name}`, got, want, bound);
    if (dtype === "f32") {
      const tight = ropeErrorBound(x, pos, { ...o, trigError: 0 });
      for (let i = 0; i < want.length; i++) worstSeen = Math.max(worstSeen, Math.abs(got[i] - want[i]) / (tight[i] || 1));
    }
  };
  await check("q", qOut ?? qBuf, q, Hq);
  if (k) await check("k", kOut ?? kBuf!, k, Hkv!);
  if (c.outOfPlace) {
    // The inputs must be untouched.
    expect(Array.from(await read(qBuf, q.length, dtype))).toEqual(Array.from(q));
  }
  gpu.release(posBuf, qBuf, kBuf, qOut, kOut);
}

describe("rope vs float64", () => {
  const cases: Case[] = [
    { tokens: 1, Hq: 1, D: 2, theta: 10000, positions: [7] },
    // B=2, T=5, left-padded: the first row's real tokens start at position 0 after 2 pad slots.
    { tokens: 10, Hq: 3, Hkv: 1, D: 8, theta: 10000, positions: [0, 0, 0, 1, 2, 0, 1, 2, 3, 4] },
    { tokens: 11, Hq: 5, Hkv: 3, D: 6, theta: 500 }, // odd half-dim, GQA with 3 kv heads
    { tokens: 9, Hq: 12, Hkv: 2, D: 128, theta: 10000 }, // Qwen2.5-1.5B heads, positions up to 4096
    { tokens: 7, Hq: 4, Hkv: 2, D: 128, theta: 1e6, positions: [4090, 4091, 4092, 4093, 4094, 4095, 4096], outOfPlace: true }, // Qwen3 theta
    { tokens: 5, Hq: 2, Hkv: 1, D: 64, theta: 10000, dtype: "f16" },
    { tokens: 3, Hq: 3, D: 32, theta: 1e4, dtype: "f16", outOfPlace: true },
    { tokens: 8, Hq: 12, Hkv: 2, D: 128, theta: 10000, hg: 1 }, // the GPU split: one head per invocation
    { tokens: 4, Hq: 3, Hkv: 2, D: 6, theta: 1e4, hg: 2, outOfPlace: true }, // ragged head groups (2, 2, 1)
  ];
  for (const c of cases) {
    it(`forward ${JSON.stringify(c)}`, () => runOne(c, false));
    it(`backward ${JSON.stringify(c)}`, () => runOne(c, true));
  }

  it("4 fresh random shapes", async () => {
    for (let i = 0; i < 4; i++) {
      const Hq = randInt(1, 12, rand);
      const hg = rand() < 0.5 ? randInt(1, 4, rand) : undefined;
      await runOne({ tokens: randInt(1, 40, rand), Hq, Hkv: rand() < 0.7 ? randInt(1, Hq, rand) : undefined, D: 2 * randInt(1, 80, rand), theta: 10 ** (2 + 5 * rand()), hg }, rand() < 0.5);
    }
  });

  it("rope then ropeBackward is the identity (to the stated bound)", async () => {
    const tokens = 6;
    const H = 2;
    const D = 128;
    const x = randn(tokens * H * D, rand);
    const pos = Uint32Array.from({ length: tokens }, () => randInt(0, 4096, rand));
    const xBuf = gpu.upload(x);
    const posBuf = gpu.upload(pos);
    rope(gpu, { q: xBuf, positions: posBuf, tokens, Hq: H, D, theta: 10000 });
    ropeBackward(gpu, { q: xBuf, positions: posBuf, tokens, Hq: H, D, theta: 10000 });
    const got = await gpu.readF32(xBuf, x.length);
    const bound = ropeErrorBound(x, pos, { tokens, H, D, theta: 10000 }).map((b) => 2 * b);
    expectClose("roundtrip", got, x, bound);
    gpu.release(xBuf, posBuf);
    console.log(`rope: worst f32 error / (angle + rounding part of the bound) seen = ${worstSeen.toFixed(3)} (the 2⁻²⁰ trig term is extra slack)`);
  });
});

describe("rope reference backward vs finite differences", () => {
  it("dx = R(−a)·dy", () => {
    const tokens = 3;
    const H = 2;
    const D = 6;
    const theta = 100;
    const pos = [0, 5, 31];
    const x = Float64Array.from(randn(tokens * H * D, rand));
    const dy = Float64Array.from(randn(tokens * H * D, rand));
    const loss = (xx: Float64Array) => ropeReference(xx, pos, { tokens, H, D, theta }).reduce((s, v, i) => s + v * dy[i], 0);
    const dx = ropeBackwardReference(dy, pos, { tokens, H, D, theta });
    const h = 1e-6;
    for (let i = 0; i < x.length; i++) {
      const xp = Float64Array.from(x);
      const xm = Float64Array.from(x);
      xp[i] += h;
      xm[i] -= h;
      expect(Math.abs((loss(xp) - loss(xm)) / (2 * h) - dx[i])).toBeLessThan(1e-7);
    }
  });
});

describe("rope argument checks", () => {
  it("rejects odd D, a short buffer, and a missing Hkv", () => {
    const q = gpu.alloc(4 * 16);
    const p = gpu.alloc(16);
    expect(() => rope(gpu, { q, positions: p, tokens: 2, Hq: 1, D: 7, theta: 1e4 })).toThrow(/even/);
    expect(() => rope(gpu, { q, positions: p, tokens: 3, Hq: 2, D: 4, theta: 1e4 })).toThrow(/q holds 64 bytes, needs 96/);
    expect(() => rope(gpu, { q, k: p, positions: p, tokens: 1, Hq: 1, D: 4, theta: 1e4 })).toThrow(/Hkv/);
    gpu.release(q, p);
  });
});
