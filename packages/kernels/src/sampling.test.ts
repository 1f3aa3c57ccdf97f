import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGpu, type Gpu } from "./runtime/device.js";
import {
  philox4x32,
  philoxFill,
  repetitionPenalty,
  repetitionPenaltyReference,
  sampleReference,
  sampleTokens,
  samplingDistributionReference,
  samplingUniform,
  SAMPLING_STREAM,
  type SamplingParams,
} from "./sampling.js";
import { compare, describeReport, freshSeed, NAN_F32_BITS, randInt, randn, rng } from "./testing.js";

let gpu: Gpu;
const seed = freshSeed();
const rand = rng(seed);
const tag = () => `(seed ${seed}, NR_SEED=${seed} to replay)`;

beforeAll(async () => {
  gpu = await createGpu();
  console.log(`sampling tests on ${gpu.adapterName}; seed ${seed} (NR_SEED=${seed} to replay)`);
});
afterAll(() => gpu?.destroy());

function poisonedU32(n: number) {
  const b = gpu.alloc(n * 4);
  gpu.fill32(b, 0xdeadbeef);
  return b;
}
function poisonedF32(n: number) {
  const b = gpu.alloc(n * 4);
  gpu.fill32(b, NAN_F32_BITS);
  return b;
}

async function runSampler(logits: Float32Array, B: number, V: number, p: SamplingParams, rngSeed: number, step: number, seqIds?: Uint32Array) {
  const lb = gpu.upload(logits);
  const sb = seqIds ? gpu.upload(seqIds) : undefined;
  const ids = poisonedU32(B);
  const logp = poisonedF32(B);
  sampleTokens(gpu, { logits: lb, B, V, ids, logp, seed: rngSeed, step, seqIds: sb, ...p });
  const out = { ids: await gpu.readU32(ids, B), logp: await gpu.readF32(logp, B) };
  gpu.release(lb, sb, ids, logp);
  return out;
}

describe("Philox-4x32-10", () => {
  it("host implementation matches the Random123 known-answer vectors", () => {
    const hex = (a: Uint32Array) => Array.from(a, (x) => x.toString(16).padStart(8, "0")).join(" ");
    expect(hex(philox4x32([0, 0, 0, 0], [0, 0]))).toBe("6627e8d5 e169c58d bc57ac4c 9b00dbd8");
    expect(hex(philox4x32([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff]))).toBe("408f276d 41c83b0e a20bc7c6 6d5451fd");
    expect(hex(philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]))).toBe("d16cfe09 94fdcceb 5001e420 24126ea1");
  });
  it("GPU blocks equal the host reference bit for bit (1001 counters, 48-bit seed)", async () => {
    const n = 1001;
    const s = Math.floor(rand() * 2 ** 48);
    const counter: [number, number, number] = [randInt(0, 2 ** 31, rand), SAMPLING_STREAM, randInt(0, 9, rand)];
    const base = randInt(0, 2 ** 30, rand);
    const out = poisonedU32(n * 4);
    philoxFill(gpu, { out, n, seed: s, counter, base });
    const got = await gpu.readU32(out, n * 4);
    const key = [s % 2 ** 32, Math.floor(s / 2 ** 32)];
    let bad = -1;
    for (let i = 0; i < n && bad < 0; i++) {
      const want = philox4x32([base + i, ...counter], key);
      for (let j = 0; j < 4; j++) if (got[i * 4 + j] !== want[j]) bad = i;
    }
    expect(bad, `first mismatching counter ${bad} ${tag()}`).toBe(-1);
    gpu.release(out);
  });
});

describe("greedy", () => {
  it("equals the CPU argmax (ties → lowest id), V=151936, B=4", async () => {
    const V = 151936;
    const B = 4;
    const logits = randn(B * V, rand, 3);
    const want: number[] = [];
    for (let b = 0; b < B; b++) {
      // plant a tie for the maximum at two random ids
      const i1 = randInt(0, V - 1, rand);
      const i2 = randInt(0, V - 1, rand);
      logits[b * V + i1] = 50;
      logits[b * V + i2] = 50;
      if (b === 3) logits.fill(-1e30, b * V, (b + 1) * V); // all equal: id 0
      let best = 0;
      for (let i = 1; i < V; i++) if (logits[b * V + i] > logits[b * V + best]) best = i;
      want.push(best);
    }
    const { ids, logp } = await runSampler(logits, B, V, { temperature: 0 }, 1, 0);
    expect(Array.from(ids), tag()).toEqual(want);
    expect(Array.from(logp)).toEqual([0, 0, 0, 0]);
  });
});

describe("reproducibility", () => {
  it("same seed → same ids and log-probs; a row's draw does not depend on the other rows of the batch", async () => {
    const V = 5000;
    const B = 6;
    const logits = randn(B * V, rand, 2);
    const seqIds = Uint32Array.from({ length: B }, () => randInt(0, 1e6, rand));
    const p = { temperature: 0.9, topK: 400, topP: 0.95 };
    const s = randInt(0, 2 ** 31, rand);
    const a = await runSampler(logits, B, V, p, s, 17, seqIds);
    const b = await runSampler(logits, B, V, p, s, 17, seqIds);
    expect(Array.from(b.ids)).toEqual(Array.from(a.ids));
    expect(Array.from(b.logp)).toEqual(Array.from(a.logp));
    // row 4 alone, and rows (4, 1) reversed
    const one = await runSampler(logits.slice(4 * V, 5 * V), 1, V, p, s, 17, seqIds.slice(4, 5));
    expect(one.ids[0]).toBe(a.ids[4]);
    expect(one.logp[0]).toBe(a.logp[4]);
    const pair = new Float32Array(2 * V);
    pair.set(logits.subarray(4 * V, 5 * V));
    pair.set(logits.subarray(1 * V, 2 * V), V);
    const two = await runSampler(pair, 2, V, p, s, 17, Uint32Array.of(seqIds[4], seqIds[1]));
    expect([two.ids[0], two.ids[1]]).toEqual([a.ids[4], a.ids[1]]);
    // a different step draws differently somewhere
    const c = await runSampler(logits, B, V, { temperature: 5 }, s, 18, seqIds);
    const d = await runSampler(logits, B, V, { temperature: 5 }, s, 19, seqIds);
    expect(Array.from(c.ids)).not.toEqual(Array.from(d.ids));
  });
});

describe("full vocabulary (V=151936) vs the float64 sampler with the same Philox uniform", () => {
  const cases: SamplingParams[] = [
    { temperature: 0.8, topK: 50 },
    { temperature: 1, topP: 0.9 },
    { temperature: 0.7, topK: 2000, topP: 0.95, minP: 0.01 },
    { temperature: 1.2, minP: 0.05 },
  ];
  for (const p of cases) {
    it(JSON.stringify(p), async () => {
      const V = 151936;
      const B = 3;
      const logits = randn(B * V, rand, 3);
      const seqIds = Uint32Array.from({ length: B }, () => randInt(0, 2 ** 31, rand));
      const s = randInt(0, 2 ** 31, rand);
      const step = randInt(0, 1000, rand);
      const got = await runSampler(logits, B, V, p, s, step, seqIds);
      for (let b = 0; b < B; b++) {
        const u = samplingUniform(s, seqIds[b], step);
        const ref = sampleReference(logits.subarray(b * V, (b + 1) * V), p, u);
        expect(ref.probs[got.ids[b]], `row ${b}: sampled id ${got.ids[b]} is outside the kept set ${tag()}`).toBeGreaterThan(0);
        // The kernel sums in f32: the ids agree unless u is within ~1e-5 of a cumulative-probability boundary.
        let c = 0;
        let nearBoundary = false;
        for (let i = 0; i < V; i++) {
          if (ref.probs[i] === 0) continue;
          c += ref.probs[i];
          if (Math.abs(c - u) < 1e-5) nearBoundary = true;
        }
        if (!nearBoundary) expect(got.ids[b], `row ${b} u=${u} ${tag()}`).toBe(ref.id);
        // log-prob of the sampled id under the sampling distribution: f32 exp/log/sum over ≤ 151936 terms
        const want = Math.log(ref.probs[got.ids[b]]);
        expect(Math.abs(got.logp[b] - want), `row ${b} logp ${got.logp[b]} vs ${want} ${tag()}`).toBeLessThan(2e-4 * (1 + Math.abs(want)));
      }
    });
  }
});

/** Upper quantile of χ²(df) at z standard deviations (Wilson–Hilferty). */
function chiSquareCritical(df: number, z: number) {
  const a = 2 / (9 * df);
  return df * (1 - a + z * Math.sqrt(a)) ** 3;
}

describe("empirical distribution of 4096 draws (identical rows, different counters) vs float64", () => {
  const cases: SamplingParams[] = [
    { temperature: 0.9 },
    { temperature: 1.1, topK: 7 },
    { temperature: 0.8, topP: 0.8 },
    { temperature: 1, topK: 20, topP: 0.9, minP: 0.08 },
  ];
  for (const p of cases) {
    it(JSON.stringify(p), async () => {
      const V = 40;
      const B = 4096;
      // Draw a row whose top-p / min-p boundaries are not within 1e-3 of a cumulative mass (f32 vs f64 ambiguity).
      let row = randn(V, rand, 1.5);
      for (let tries = 0; tries < 100; tries++) {
        row = randn(V, rand, 1.5);
        const z = Array.from(row, (x) => x / (p.temperature ?? 1)).sort((a, b) => b - a);
        const e = z.map((x) => Math.exp(x - z[0]));
        const k = p.topK && p.topK < V ? p.topK : V;
        const Zk = e.slice(0, k).reduce((a, b) => a + b, 0);
        let c = 0;
        let ok = true;
        for (let i = 0; i < k; i++) {
          c += e[i] / Zk;
          if (p.topP && Math.abs(c - p.topP) < 1e-3) ok = false;
          if (p.minP && Math.abs(e[i] - p.minP) < 1e-3) ok = false;
        }
        if (ok) break;
      }
      const logits = new Float32Array(B * V);
      for (let b = 0; b < B; b++) logits.set(row, b * V);
      const seqIds = Uint32Array.from({ length: B }, (_, i) => i * 7919 + 13);
      const s = randInt(0, 2 ** 31, rand);
      const got = await runSampler(logits, B, V, p, s, 3, seqIds);
      const probs = samplingDistributionReference(row, p);
      const counts = new Float64Array(V);
      for (let b = 0; b < B; b++) {
        const id = got.ids[b];
        expect(id < V && probs[id] > 0, `row ${b}: id ${id} has probability 0 ${tag()}`).toBe(true);
        counts[id]++;
        // log-prob returned = log of the float64 sampling probability (f32 sums over 40 terms)
        expect(Math.abs(got.logp[b] - Math.log(probs[id])), `logp of id ${id} ${tag()}`).toBeLessThan(1e-5);
      }
      // χ² over kept ids, pooling bins with expected count < 5
      let chi = 0;
      let df = -1;
      let poolE = 0;
      let poolO = 0;
      for (let i = 0; i < V; i++) {
        if (probs[i] === 0) continue;
        const E = probs[i] * B;
        if (E < 5) {
          poolE += E;
          poolO += counts[i];
          continue;
        }
        chi += (counts[i] - E) ** 2 / E;
        df++;
      }
      if (poolE > 0) {
        chi += (poolO - poolE) ** 2 / Math.max(poolE, 1e-9);
        df++;
      }
      if (df < 1) return; // a single kept id: already checked that every draw hit it
      // z = 5: a correct sampler fails with probability ≈ 3e-7
      const crit = chiSquareCritical(df, 5);
      expect(chi, `χ²=${chi.toFixed(1)} df=${df} crit=${crit.toFixed(1)} ${tag()}`).toBeLessThan(crit);
    });
  }
});

describe("repetition penalty (HF semantics)", () => {
  it("B=3, V=1000, history with repeats and an empty row; penalised once per distinct id", async () => {
    const B = 3;
    const V = 1000;
    const L = 60;
    const penalty = 1.3;
    const logits = randn(B * V, rand, 2);
    logits[5] = 0; // zero stays zero
    const tokens = new Uint32Array(B * L);
    const lengths = Uint32Array.of(L, 17, 0);
    for (let i = 0; i < B * L; i++) tokens[i] = randInt(0, 40, rand); // many repeats
    tokens[0] = 5;
    tokens[1] = V + 3; // out of range: ignored
    const lb = gpu.upload(logits);
    const tb = gpu.upload(tokens);
    const nb = gpu.upload(lengths);
    repetitionPenalty(gpu, { logits: lb, B, V, tokens: tb, lengths: nb, L, penalty });
    const got = await gpu.readF32(lb, B * V);
    const want = new Float64Array(B * V);
    for (let b = 0; b < B; b++) {
      want.set(repetitionPenaltyReference(logits.subarray(b * V, (b + 1) * V), tokens.subarray(b * L, b * L + lengths[b]), penalty), b * V);
    }
    // one f32 multiply or divide (WGSL division: ≤ 2.5 ulp)
    const r = compare(got, want, Array.from(want, (x) => 3 * 2 ** -24 * Math.abs(x)));
    expect(r.ok, `${describeReport(r)} ${tag()}`).toBe(true);
    expect(got[2 * V + 3]).toBe(logits[2 * V + 3]); // the empty row is untouched
    gpu.release(lb, tb, nb);
  });
});

describe("sampling argument checks", () => {
  it("rejects bad parameters and small buffers", () => {
    const l = gpu.alloc(64);
    const base = { logits: l, B: 2, V: 8, ids: l, logp: l, seed: 1, step: 0 };
    expect(() => sampleTokens(gpu, { ...base, topP: 0 })).toThrow(/topP/);
    expect(() => sampleTokens(gpu, { ...base, temperature: -1 })).toThrow(/temperature/);
    expect(() => sampleTokens(gpu, { ...base, topK: 1.5 })).toThrow(/topK/);
    expect(() => sampleTokens(gpu, { ...base, V: 100 })).toThrow(/logits holds/);
    expect(() => sampleTokens(gpu, { ...base, seed: -1 })).toThrow(/seed/);
    gpu.release(l);
  });
});
