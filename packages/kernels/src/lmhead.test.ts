import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGpu, type Gpu, toF16Array, f32ToF16Bits, f16BitsToF32 } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import {
  crossEntropyMean,
  crossEntropyMeanBackward,
  crossEntropyMeanReference,
  lmHeadBackward,
  lmHeadBackwardPlan,
  lmHeadBackwardReference,
  lmHeadForward,
  lmHeadForwardPlan,
  lmHeadLogits,
  lmHeadLogitsReference,
  lmHeadReference,
  uploadLmHeadWeight,
  type LmDtype,
} from "./lmhead.js";
import { compare, describeReport, freshSeed, NAN_F32_BITS, randInt, randn, rng, roundToF16 } from "./testing.js";

// Error bounds (float64 reference on the same f16-rounded inputs, so only f32 arithmetic error is left):
//  δz[m]  = 2e-5 · max_v Σ_k |h_mk·W_vk| / T        f32 accumulation of a logit (as in matmul.test.ts)
//  lse    : δz + 1e-5·(1 + |lse|)                   (+ f32 exp/log/sum rounding)
//  logp   : 2δz + 1e-5·(1 + |logp|)
//  entropy: 2δz·(1 + Σ_v p_v|log p_v + H|) + 1e-5·(1 + H)     (|∂H/∂z_v| = p_v|log p_v + H|)
//  dh[m,k]: 1e-4·Σ_v |dl_mv·W_vk| + 2δz[m]·Σ_v q_mv|W_vk| + 1e-6, q_mv = (|g_l| + |g_e|(|log p_v| + H + 2))·p_v / T
//           (value rounding of dlogits, plus the logit error propagated through p)
//  dW[v,k]: 1e-4·Σ_m |dl_mv·h_mk| + 2Σ_m δz[m]·q_mv|h_mk| + 1e-6
// A wrong row/column index gives O(1) relative errors, far above these.
const RTOL_Z = 2e-5;

let gpu: Gpu;
const seed = freshSeed();
const rand = rng(seed);

beforeAll(async () => {
  gpu = await createGpu();
  console.log(`lmhead tests on ${gpu.adapterName} (f16: ${gpu.hasF16}); seed ${seed} (NR_SEED=${seed} to replay)`);
});
afterAll(() => gpu?.destroy());

interface Case {
  M: number;
  V: number;
  H: number;
  T?: number;
  dtype?: LmDtype; // h and W
  wDtype?: LmDtype;
  mask?: "random" | "tail" | null; // "tail": random in the first 32 rows, rows ≥ 32 all masked (whole row tiles)
  ignore?: boolean; // some targets = −100 (as u32)
  gLogp?: boolean;
  gEnt?: boolean;
  dw?: boolean;
  shardRows?: number;
  splits?: number;
  rowChunk?: number;
  vocabChunk?: number;
  splitK?: number;
  accumulate?: boolean;
}

function hostInputs(c: Case) {
  const { M, V, H } = c;
  const hD = c.dtype ?? "f32";
  const wD = c.wDtype ?? hD;
  let h = randn(M * H, rand);
  let w = randn(V * H, rand, 2 / Math.sqrt(H)); // logits ~ N(0, 4): peaked but not one-hot
  if (hD === "f16") h = roundToF16(h, f32ToF16Bits, f16BitsToF32);
  if (wD === "f16") w = roundToF16(w, f32ToF16Bits, f16BitsToF32);
  const targets = new Uint32Array(M);
  for (let m = 0; m < M; m++) targets[m] = c.ignore && rand() < 0.2 ? 0xffffff9c : randInt(0, V - 1, rand);
  let mask: Uint32Array | undefined;
  if (c.mask) {
    mask = new Uint32Array(M);
    for (let m = 0; m < M; m++) mask[m] = c.mask === "tail" && m >= 32 ? 0 : rand() < 0.75 ? 1 : 0;
    mask[0] = 0;
  }
  return { h, w, targets, mask, hD, wD };
}

function uploadAs(x: Float32Array, dt: LmDtype) {
  return dt === "f16" ? gpu.upload(toF16Array(x)) : gpu.upload(x);
}

function uploadW(w: Float32Array, c: Case, dt: LmDtype): { bufs: GpuBuffer[]; shardRows: number } {
  const rows = c.shardRows ?? c.V;
  const bufs: GpuBuffer[] = [];
  for (let v0 = 0; v0 < c.V; v0 += rows) bufs.push(uploadAs(w.subarray(v0 * c.H, Math.min(c.V, v0 + rows) * c.H), dt));
  return { bufs, shardRows: rows };
}

function poisoned(n: number) {
  const b = gpu.alloc(n * 4);
  gpu.fill32(b, NAN_F32_BITS);
  return b;
}

/** Per-row logit error bound δz[m] and the probabilities / log-probs of the reference. */
function zBounds(h: Float32Array, w: Float32Array, c: Case) {
  const { M, V, H } = c;
  const T = c.T ?? 1;
  const dz = new Float64Array(M);
  const absZ = lmHeadLogitsReference(Float64Array.from(h, Math.abs), Float64Array.from(w, Math.abs), { M, V, H, temperature: T });
  for (let m = 0; m < M; m++) {
    let mx = 0;
    for (let v = 0; v < V; v++) mx = Math.max(mx, absZ[m * V + v]);
    dz[m] = RTOL_Z * mx;
  }
  return dz;
}

async function check(c: Case) {
  const hD0 = c.dtype ?? "f32";
  const wD0 = c.wDtype ?? hD0;
  if ((hD0 === "f16" || wD0 === "f16") && !gpu.hasF16) return;
  const { M, V, H } = c;
  const T = c.T ?? 1;
  const { h, w, targets, mask, hD, wD } = hostInputs(c);
  const hBuf = uploadAs(h, hD);
  const { bufs: wBufs, shardRows } = uploadW(w, c, wD);
  const tBuf = gpu.upload(targets);
  const mBuf = mask ? gpu.upload(mask) : undefined;
  const logp = poisoned(M);
  const ent = poisoned(M);
  const lse = poisoned(M);
  const wArg = wBufs.length === 1 ? wBufs[0] : wBufs;
  lmHeadForward(gpu, { h: hBuf, w: wArg, wShardRows: shardRows, targets: tBuf, mask: mBuf, logp, entropy: ent, lse, M, V, H, temperature: T, hDtype: hD, wDtype: wD, splits: c.splits });
  const [gLp, gEn, gLse] = [await gpu.readF32(logp, M), await gpu.readF32(ent, M), await gpu.readF32(lse, M)];

  const ro = { M, V, H, temperature: T, mask };
  const ref = lmHeadReference(h, w, targets, ro);
  const z = lmHeadLogitsReference(h, w, ro);
  const dz = zBounds(h, w, c);
  const sensH = new Float64Array(M);
  for (let m = 0; m < M; m++) {
    for (let v = 0; v < V; v++) {
      const lp = z[m * V + v] - ref.lse[m];
      sensH[m] += Math.exp(lp) * Math.abs(lp + ref.entropy[m]);
    }
  }
  const tag = `${JSON.stringify(c)} (seed ${seed})`;
  let r = compare(gLse, ref.lse, Array.from(ref.lse, (x, m) => dz[m] + 1e-5 * (1 + Math.abs(x))));
  expect(r.ok, `lse ${tag}: ${describeReport(r)}`).toBe(true);
  r = compare(gLp, ref.logp, Array.from(ref.logp, (x, m) => 2 * dz[m] + 1e-5 * (1 + Math.abs(x))));
  expect(r.ok, `logp ${tag}: ${describeReport(r)}`).toBe(true);
  r = compare(gEn, ref.entropy, Array.from(ref.entropy, (x, m) => 2 * dz[m] * (1 + sensH[m]) + 1e-5 * (1 + x)));
  expect(r.ok, `entropy ${tag}: ${describeReport(r)}`).toBe(true);

  // Backward
  const useGl = c.gLogp ?? true;
  const useGe = c.gEnt ?? true;
  const gl = randn(M, rand);
  const ge = randn(M, rand);
  const glBuf = useGl ? gpu.upload(gl) : undefined;
  const geBuf = useGe ? gpu.upload(ge) : undefined;
  const prior = c.accumulate ? randn(M * H, rand) : null;
  const dhBuf = gpu.alloc(M * H * 4);
  if (prior) gpu.write(dhBuf, prior);
  else gpu.fill32(dhBuf, NAN_F32_BITS);
  const dwPrior = c.dw ? randn(V * H, rand) : null;
  const dwBufs = dwPrior ? uploadW(dwPrior, c, "f32").bufs : null;
  lmHeadBackward(gpu, {
    h: hBuf, w: wArg, wShardRows: shardRows, targets: tBuf, mask: mBuf, lse, entropy: ent, gLogp: glBuf, gEntropy: geBuf,
    dh: dhBuf, accumulate: c.accumulate, dw: dwBufs ? (dwBufs.length === 1 ? dwBufs[0] : dwBufs) : undefined,
    M, V, H, temperature: T, hDtype: hD, wDtype: wD, rowChunk: c.rowChunk, vocabChunk: c.vocabChunk, splitK: c.splitK,
  });
  const gotDh = await gpu.readF32(dhBuf, M * H);
  const bref = lmHeadBackwardReference(h, w, targets, useGl ? gl : null, useGe ? ge : null, ro);
  // q_mv: sensitivity of dlogits to the logit error
  const q = new Float64Array(M * V);
  for (let m = 0; m < M; m++) {
    if (mask && mask[m] === 0) continue;
    const a = useGl && targets[m] < V ? Math.abs(gl[m]) : 0;
    const b = useGe ? Math.abs(ge[m]) : 0;
    for (let v = 0; v < V; v++) {
      const lp = z[m * V + v] - ref.lse[m];
      q[m * V + v] = ((a + b * (Math.abs(lp) + ref.entropy[m] + 2)) * Math.exp(lp)) / T;
    }
  }
  const wantDh = Float64Array.from(bref.dh);
  const bDh = new Float64Array(M * H).fill(1e-6);
  for (let m = 0; m < M; m++) {
    for (let v = 0; v < V; v++) {
      const d = Math.abs(bref.dlogits[m * V + v]);
      const qq = 2 * dz[m] * q[m * V + v];
      for (let k = 0; k < H; k++) bDh[m * H + k] += (1e-4 * d + qq) * Math.abs(w[v * H + k]);
    }
  }
  if (prior) for (let i = 0; i < M * H; i++) wantDh[i] += prior[i];
  r = compare(gotDh, wantDh, bDh);
  expect(r.ok, `dh ${tag}: ${describeReport(r)}`).toBe(true);

  if (dwBufs && dwPrior) {
    const shardRowsW = shardRows;
    const got = new Float32Array(V * H);
    for (let s = 0; s < dwBufs.length; s++) {
      const rows = Math.min(shardRowsW, V - s * shardRowsW);
      got.set(await gpu.readF32(dwBufs[s], rows * H), s * shardRowsW * H);
    }
    const want = Float64Array.from(bref.dw, (x, i) => x + dwPrior[i]);
    const bDw = new Float64Array(V * H).fill(1e-6);
    for (let m = 0; m < M; m++) {
      for (let v = 0; v < V; v++) {
        const d = 1e-4 * Math.abs(bref.dlogits[m * V + v]) + 2 * dz[m] * q[m * V + v];
        if (d === 0) continue;
        for (let k = 0; k < H; k++) bDw[v * H + k] += d * Math.abs(h[m * H + k]);
      }
    }
    r = compare(got, want, bDw);
    expect(r.ok, `dW ${tag}: ${describeReport(r)}`).toBe(true);
  }
  gpu.release(hBuf, tBuf, mBuf, logp, ent, lse, glBuf, geBuf, dhBuf, ...wBufs, ...(dwBufs ?? []));
}

describe("lmHead forward + backward vs float64 reference", () => {
  it("M=61 (row tiles past 32 fully masked), V=517 in 3 shards, H=64, T=0.7, ignore targets, dW, split-K 3, small chunks", () =>
    check({ M: 61, V: 517, H: 64, T: 0.7, mask: "tail", ignore: true, dw: true, shardRows: 200, splits: 5, rowChunk: 29, vocabChunk: 97, splitK: 3 }));
  // The 8×4 tile used from 64 rows compiles slowly on lavapipe (15–30 s per kernel): only with NR_HEAVY=1.
  it.runIf(process.env.NR_HEAVY === "1")("8×4 tile: M=70 (rows ≥ 32 masked), V=517 in 3 shards, H=64, dW, split-K 2", () =>
    check({ M: 70, V: 517, H: 64, T: 0.9, mask: "tail", ignore: true, dw: true, shardRows: 200, splits: 3, splitK: 2 }));
  it("decode-sized M=3, V=301, H=13 (scalar path), T=1.3, g_logp only, dh accumulated, dW", () =>
    check({ M: 3, V: 301, H: 13, T: 1.3, gEnt: false, accumulate: true, dw: true }));
  it("f16 h and W: M=7, V=263, H=48, g_entropy only, random mask", () =>
    check({ M: 7, V: 263, H: 48, dtype: "f16", gLogp: false, mask: "random" }));
  it.runIf(process.env.NR_HEAVY === "1")("f16 h and W with the 4×4 and 8×4 tiles: M=19 and M=66, V=263, H=48, dW", async () => {
    await check({ M: 19, V: 263, H: 48, dtype: "f16", mask: "random", dw: true, splitK: 2 });
    await check({ M: 66, V: 263, H: 48, dtype: "f16", ignore: true });
  });
  it("f32 h with f16 W: M=5, V=1031, H=36, 2 shards", () => check({ M: 5, V: 1031, H: 36, dtype: "f32", wDtype: "f16", shardRows: 768 }));
  // CPU adapters: the forward stores one shard's logits for a block of rows (≤ 8 MiB): 1000 rows × 2100 columns
  // take two row blocks (a copy of h's rows per block); elsewhere an ordinary case.
  it("many rows over wide shards: M=1000, V=4100 in 2 shards, H=8, random mask, ignore targets", () =>
    check({ M: 1000, V: 4100, H: 8, T: 0.8, mask: "random", ignore: true, shardRows: 2100 }));
  it("3 fresh random shapes", async () => {
    for (let i = 0; i < 3; i++) {
      await check({
        M: randInt(9, 63, rand),
        V: randInt(1, 700, rand),
        H: 4 * randInt(1, 24, rand),
        T: 0.5 + rand(),
        mask: rand() < 0.5 ? "random" : null,
        ignore: rand() < 0.5,
        vocabChunk: rand() < 0.5 ? randInt(1, 300, rand) : undefined,
        splitK: randInt(1, 4, rand),
      });
    }
  });
});

describe("lmHead full logits (decode path)", () => {
  // On CPU adapters the default goes through matmul (one shard: straight into out; several: a scratch per shard
  // and a copy per row); an explicit tile forces the tile kernel, the default elsewhere.
  const cases = [
    { M: 2, V: 517, H: 64, T: 0.8, shardRows: 300 },
    { M: 1, V: 517, H: 64, T: 0.8, shardRows: 517 },
    { M: 1, V: 811, H: 36, T: 1.3, shardRows: 300 },
    { M: 5, V: 811, H: 36, T: 0.7, shardRows: 811 },
    { M: 7, V: 811, H: 44, T: 0.7, shardRows: 256 },
  ];
  for (const c of cases) {
    for (const forceTile of [false, true]) {
      it(`M=${c.M}, V=${c.V} in ${Math.ceil(c.V / c.shardRows)} shard(s), H=${c.H}, T=${c.T}${forceTile ? ", tile kernel" : ""} vs float64`, async () => {
        const { h, w } = hostInputs(c);
        const hBuf = gpu.upload(h);
        const { bufs, shardRows } = uploadW(w, c, "f32");
        const out = poisoned(c.M * c.V);
        const tile = forceTile ? { TM: 1, TN: 4, WX: 64, WY: 1 } : undefined;
        lmHeadLogits(gpu, { h: hBuf, w: bufs, wShardRows: shardRows, out, M: c.M, V: c.V, H: c.H, temperature: c.T, tile });
        const got = await gpu.readF32(out, c.M * c.V);
        const want = lmHeadLogitsReference(h, w, { ...c, temperature: c.T });
        const mag = lmHeadLogitsReference(Float64Array.from(h, Math.abs), Float64Array.from(w, Math.abs), { ...c, temperature: c.T });
        const r = compare(got, want, Array.from(mag, (x) => RTOL_Z * x + 1e-30));
        expect(r.ok, `logits: ${describeReport(r)} (seed ${seed})`).toBe(true);
        gpu.release(hBuf, out, ...bufs);
      });
    }
  }
});

describe("cross-entropy mean (SFT)", () => {
  for (const withMask of [false, true]) {
    it(`loss and its gradient, M=1000${withMask ? ", masked" : ""}`, async () => {
      const M = 1000;
      const logp = Float32Array.from(randn(M, rand), (x) => -Math.abs(x) * 3);
      const mask = withMask ? Uint32Array.from({ length: M }, () => (rand() < 0.6 ? 1 : 0)) : undefined;
      const lb = gpu.upload(logp);
      const mb = mask ? gpu.upload(mask) : undefined;
      const out = poisoned(1);
      const g = poisoned(M);
      crossEntropyMean(gpu, { logp: lb, out, M, mask: mb });
      crossEntropyMeanBackward(gpu, { gLogp: g, M, mask: mb, gOut: 0.5 });
      const loss = (await gpu.readF32(out, 1))[0];
      const want = crossEntropyMeanReference(logp, mask);
      // f32 sum of 1000 terms of magnitude ≤ ~12: relative 1e-5
      expect(Math.abs(loss - want), `loss ${loss} vs ${want} (seed ${seed})`).toBeLessThan(1e-5 * Math.abs(want) + 1e-6);
      const n = mask ? mask.reduce((a, b) => a + b, 0) : M;
      const wantG = Array.from({ length: M }, (_, i) => (!mask || mask[i] ? -0.5 / n : 0));
      const r = compare(await gpu.readF32(g, M), wantG, 1e-7 / n);
      expect(r.ok, describeReport(r)).toBe(true);
      gpu.release(lb, mb, out, g);
    });
  }
});

describe("float64 reference backward vs central finite differences of the reference forward", () => {
  for (const [gOn, eOn] of [[true, false], [false, true], [true, true]] as const) {
    it(`d/dh and d/dW of Σ g_l·logp + g_e·H (logp ${gOn}, entropy ${eOn}), T=0.6, masked row, ignored target`, () => {
      const o = { M: 3, V: 7, H: 5, temperature: 0.6, mask: [1, 0, 1] };
      const h = Float64Array.from(randn(o.M * o.H, rand));
      const w = Float64Array.from(randn(o.V * o.H, rand));
      const targets = [2, 4, 0xffffff9c];
      const gl = Float64Array.from(randn(o.M, rand));
      const ge = Float64Array.from(randn(o.M, rand));
      const loss = (hh: Float64Array, ww: Float64Array) => {
        const f = lmHeadReference(hh, ww, targets, o);
        let s = 0;
        for (let m = 0; m < o.M; m++) s += (gOn ? gl[m] * f.logp[m] : 0) + (eOn ? ge[m] * f.entropy[m] : 0);
        return s;
      };
      const b = lmHeadBackwardReference(h, w, targets, gOn ? gl : null, eOn ? ge : null, o);
      const eps = 1e-6;
      for (const [x, grad] of [[h, b.dh], [w, b.dw]] as const) {
        for (let i = 0; i < x.length; i++) {
          const x0 = x[i];
          x[i] = x0 + eps;
          const lp = loss(h, w);
          x[i] = x0 - eps;
          const lm = loss(h, w);
          x[i] = x0;
          const fd = (lp - lm) / (2 * eps);
          // central difference: O(eps²) truncation + O(1e-16/eps) rounding ≈ 1e-9
          expect(Math.abs(fd - grad[i]), `i=${i} fd ${fd} analytic ${grad[i]}`).toBeLessThan(1e-7 * (1 + Math.abs(fd)));
        }
      }
    });
  }
});

describe("lmHead plans and argument checks", () => {
  it("never allocates M×V logits at the Qwen2.5-1.5B shape (M=4096, V=151936, H=1536)", () => {
    const M = 4096;
    const V = 151936;
    const H = 1536;
    const naive = M * V * 4;
    const f = lmHeadForwardPlan(gpu, M, V, H, 43520);
    const b = lmHeadBackwardPlan(gpu, M, V, H, { shardRows: 43520 });
    expect(f.scratchBytes).toBeLessThan(naive / 100);
    expect(b.scratchBytes).toBeLessThanOrEqual(40 * 2 ** 20);
    expect(b.R * b.Vc).toBeLessThan(M * V);
  });
  it("uploadLmHeadWeight shards a weight over the binding limit", async () => {
    const V = 1000;
    const H = 8;
    const data = randn(V * H, rand);
    const { w, wShardRows } = uploadLmHeadWeight(gpu, data, V, H, { maxShardBytes: 256 * H * 4 });
    expect(wShardRows).toBe(256);
    expect(w.length).toBe(4);
    expect(Array.from(await gpu.readF32(w[3], (V - 768) * H))).toEqual(Array.from(data.subarray(768 * H)));
    gpu.release(...w);
  });
  it("rejects wrong shard counts, small buffers and bad temperatures with clear messages", () => {
    const h = gpu.alloc(4 * 8 * 4);
    const w = gpu.alloc(10 * 8 * 4);
    const t = gpu.alloc(16);
    const o = gpu.alloc(16);
    const base = { h, w, targets: t, logp: o, entropy: o, lse: o, M: 4, V: 10, H: 8 };
    expect(() => lmHeadForward(gpu, { ...base, w: [w, w] })).toThrow(/wShardRows/);
    expect(() => lmHeadForward(gpu, { ...base, w: [w, w], wShardRows: 3 })).toThrow(/needs 4 w shards/);
    expect(() => lmHeadForward(gpu, { ...base, V: 20 })).toThrow(/w shard 0 holds/);
    expect(() => lmHeadForward(gpu, { ...base, temperature: 0 })).toThrow(/temperature/);
    expect(() => lmHeadForward(gpu, { ...base, M: 8 })).toThrow(/h holds/);
    expect(() => lmHeadBackward(gpu, { ...base, dh: h })).toThrow(/gLogp, gEntropy/);
    gpu.release(h, w, t, o);
  });
});
