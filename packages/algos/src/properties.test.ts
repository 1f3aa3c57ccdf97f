// Property tests: on-policy reduction to REINFORCE, zero-advantage groups, degenerate sizes, invalid configs.
import { describe, expect, it } from "vitest";
import { ALGO_NAMES, groupAdvantages, policyLoss, preset } from "./index.js";
import type { AlgoConfig, AlgoName, PolicyBatch } from "./index.js";
import { rand, randomBatch, testSeed } from "./testutil.js";

const seed = testSeed();

/**
 * Independent REINFORCE-with-baseline reference: on-policy (ρ ≡ 1) the clipped objective's value is −Σ a_t A_t and
 * its gradient is −a_t A_t per token (token ratio) or −(Σ_{t∈i} a_t A_t)/n_i per token of sequence i (sequence ratio,
 * ∂s_i/∂ℓ_t = s_i/n_i). a_t = aggregation weight, written out here from docs/algorithms.md §1.2.
 */
function reinforce(b: PolicyBatch, cfg: AlgoConfig): { loss: number; grad: Float64Array } {
  const M = b.logp.length;
  const N = b.numSequences;
  const T = b.seqIds ? 0 : M / N;
  const seqOf = (t: number) => (b.seqIds ? b.seqIds[t] : Math.floor(t / T));
  const n = new Float64Array(N);
  let local = 0;
  for (let t = 0; t < M; t++) if (b.mask[t] === 1) (n[seqOf(t)]++, local++);
  const S = b.sequencesInStep ?? N;
  const tokens = b.tokensInStep ?? local;
  const a = (t: number): number => {
    const s = seqOf(t);
    switch (cfg.aggregation.mode) {
      case "seq-mean-token-mean":
        return 1 / (S * n[s]);
      case "token-mean":
        return 1 / tokens;
      case "token-mean-local":
        return 1 / (local * (b.gradAccumSteps ?? 1));
      case "constant":
        return 1 / (S * cfg.aggregation.maxLength);
      case "mean-length":
        return 1 / (S * b.meanLength![s]);
      case "seq-mean-token-sum":
        return 1 / S;
    }
  };
  const A = (t: number) => (b.tokenAdvantages ? b.tokenAdvantages[t] : b.advantages![seqOf(t)]);
  let loss = 0;
  const grad = new Float64Array(M);
  const seqSum = new Float64Array(N);
  for (let t = 0; t < M; t++) {
    if (b.mask[t] !== 1) continue;
    loss -= a(t) * A(t);
    seqSum[seqOf(t)] -= a(t) * A(t);
    if (cfg.ratio.level === "token") grad[t] = -a(t) * A(t);
  }
  if (cfg.ratio.level === "sequence") for (let t = 0; t < M; t++) if (b.mask[t] === 1) grad[t] = seqSum[seqOf(t)] / n[seqOf(t)];
  return { loss, grad };
}

function maxAbsDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
  return m;
}

describe(`on-policy (logp = oldLogp): clipped variants equal REINFORCE (NR_SEED=${seed})`, () => {
  for (const algo of ALGO_NAMES) {
    it(algo, () => {
      // Policy term only (β = 0, no value loss, no IS weights), so the reference is the bare REINFORCE form.
      const cfg = preset(algo, { kl: { beta: 0 }, value: { coef: 0 }, importanceSampling: { mode: "none" } });
      const unclipped = preset(algo, {
        kl: { beta: 0 },
        value: { coef: 0 },
        importanceSampling: { mode: "none" },
        clip: { epsLow: 0.999999, epsHigh: 1e9, dualClip: null, delta: null },
      });
      const R = rand(seed ^ 0x5eed);
      const b = randomBatch(R, cfg, { packed: algo === "dapo" });
      if (cfg.aggregation.mode === "constant" || cfg.aggregation.mode === "seq-mean-token-mean") b.sequencesInStep = b.numSequences + 3;
      if (cfg.aggregation.mode === "token-mean") b.tokensInStep = 1000;
      b.oldLogp = Float64Array.from(b.logp);
      const ref = reinforce(b, cfg);
      const clipped = policyLoss(b, cfg);
      const plain = policyLoss(b, unclipped);
      const noOld = policyLoss({ ...b, oldLogp: undefined }, cfg);
      for (const res of [clipped, plain, noOld]) {
        expect(Math.abs(res.loss - ref.loss)).toBeLessThan(1e-12);
        expect(maxAbsDiff(res.dLogp, ref.grad)).toBeLessThan(1e-12);
        expect(res.metrics["clip_ratio/region_mean"]).toBe(0);
        expect(res.metrics["ratio/min"]).toBe(1);
        expect(res.metrics["ratio/max"]).toBe(1);
      }
      // REINFORCE-with-baseline has a non-trivial gradient here (mixed groups), so the comparison is not vacuous.
      expect(maxAbsDiff(ref.grad, new Float64Array(ref.grad.length))).toBeGreaterThan(1e-7);
    });
  }
});

describe("zero-spread groups", () => {
  const L8 = [120, 80, 300, 55, 200, 64, 90, 150];
  for (const algo of ["grpo", "dapo", "gspo", "dr_grpo"] as AlgoName[]) {
    it(`${algo}: all-correct and all-wrong groups give exactly zero advantage`, () => {
      for (const r of [1, 0, 0.1, 0.7]) {
        const a = groupAdvantages(algo, { rewards: L8.map(() => r), lengths: L8 });
        expect(a).toEqual(L8.map(() => 0));
      }
    });
  }

  it("dapo: inside the overlong buffer the soft penalty breaks the tie (documented)", () => {
    const a = groupAdvantages("dapo", { rewards: [1, 1, 1, 1], lengths: [100, 2900, 3000, 3050] }, { overlong: { maxLength: 3072, cacheLength: 512 } });
    expect(a[0]).toBeGreaterThan(0);
    expect(a[3]).toBeLessThan(0);
  });

  it("lpro: zero-spread groups keep the length-only signal unless gated", () => {
    const L = [100, 200, 300, 50];
    const fmt = [true, true, true, true];
    const allRight = groupAdvantages("lpro", { rewards: [1, 1, 1, 1], lengths: L, correct: [true, true, true, true], formatOk: fmt });
    const allWrong = groupAdvantages("lpro", { rewards: [0, 0, 0, 0], lengths: L, correct: [false, false, false, false], formatOk: fmt });
    // Identical (only −λ·z_L remains), shorter completions get positive advantage.
    expect(maxAbsDiff(allRight, allWrong)).toBe(0);
    expect(allWrong[3]).toBeGreaterThan(0);
    expect(allWrong[2]).toBeLessThan(0);
    const gated = groupAdvantages("lpro", { rewards: [0, 0, 0, 0], lengths: L, correct: [false, false, false, false], formatOk: fmt }, { lpro: { gateLengthOnZeroStd: true } });
    expect(gated).toEqual([0, 0, 0, 0]);
    // The gate leaves mixed groups untouched.
    const mixed = { rewards: [1, 0, 0, 1], lengths: L, correct: [true, false, false, true], formatOk: fmt };
    expect(groupAdvantages("lpro", mixed, { lpro: { gateLengthOnZeroStd: true } })).toEqual(groupAdvantages("lpro", mixed));
  });

  it("grpo_lead: all-wrong → zero; all-correct → brevity pressure weighted w(1) / w(0)", () => {
    const L = [100, 200, 300, 50];
    expect(groupAdvantages("grpo_lead", { rewards: [0, 0, 0, 0], lengths: L })).toEqual([0, 0, 0, 0]);
    const cfg = preset("grpo_lead");
    const a = groupAdvantages("grpo_lead", { rewards: [1, 1, 1, 1], lengths: L });
    // R = exp(−α z) over the correct lengths; Ã = z-score of R; ρ = 1 → positive Ã × w(1), negative Ã × w(0).
    const mu = 162.5;
    const sd = Math.sqrt(L.reduce((s, x) => s + (x - mu) ** 2, 0) / 3);
    const R = L.map((x) => Math.exp(-0.05 * ((x - mu) / (sd + 1e-6))));
    const muR = R.reduce((s, x) => s + x, 0) / 4;
    const sdR = Math.sqrt(R.reduce((s, x) => s + (x - muR) ** 2, 0) / 3);
    const wPos = cfg.lead.A + (cfg.lead.B - cfg.lead.A) / (1 + Math.exp(cfg.lead.k * (1 - cfg.lead.x0)));
    const wNeg = cfg.lead.A + (cfg.lead.B - cfg.lead.A) / (1 + Math.exp(cfg.lead.k * (0 - cfg.lead.x0)));
    const expected = R.map((x) => {
      const z = (x - muR) / (sdR + 1e-6);
      return z > 0 ? z * wPos : z * wNeg;
    });
    expect(maxAbsDiff(a, expected)).toBeLessThan(1e-12);
    expect(a[3]).toBeGreaterThan(0); // shortest
    expect(a[2]).toBeLessThan(0); // longest
  });
});

describe("degenerate sizes never give NaN", () => {
  const groupPresets = ALGO_NAMES.filter((n) => n !== "ppo");
  it("G = 1 gives a zero advantage for every group preset", () => {
    for (const algo of groupPresets) {
      for (const r of [0, 1]) {
        const a = groupAdvantages(algo, { rewards: [r], lengths: [37], correct: [r === 1], formatOk: [true] });
        expect(a, algo).toEqual([0]);
      }
    }
  });

  it("σ = 0 with ε = 0 gives zeros, not NaN", () => {
    for (const algo of groupPresets) {
      const a = groupAdvantages(algo, { rewards: [1, 1, 1], lengths: [10, 10, 10] }, { advantage: { eps: 0 } });
      expect(a, algo).toEqual([0, 0, 0]);
    }
  });

  it("empty group gives an empty array", () => {
    for (const algo of groupPresets) expect(groupAdvantages(algo, { rewards: [], lengths: [] })).toEqual([]);
  });

  it("unscorable (NaN) rewards are excluded from the statistics and get advantage 0", () => {
    const a = groupAdvantages("grpo", { rewards: [1, NaN, 0, 1, 0], lengths: [10, 20, 30, 40, 50] });
    const b = groupAdvantages("grpo", { rewards: [1, 0, 1, 0], lengths: [10, 30, 40, 50] });
    expect(a[1]).toBe(0);
    expect([a[0], a[2], a[3], a[4]]).toEqual(b);
  });

  it("empty masks, zero sequences and fully padded batches give loss 0 and zero gradients", () => {
    for (const algo of ALGO_NAMES) {
      const cfg = preset(algo);
      const b = randomBatch(rand(seed), cfg, { withSampling: true, nanPadding: true });
      b.mask.fill(0);
      const res = policyLoss(b, cfg);
      expect(res.loss, algo).toBe(0);
      expect(res.dLogp.every((x) => x === 0)).toBe(true);
      expect(res.dEntropy.every((x) => x === 0)).toBe(true);
      if (res.dValue) expect(res.dValue.every((x) => x === 0)).toBe(true);
      for (const [k, v] of Object.entries(res.metrics)) expect(Number.isFinite(v), `${algo} ${k}`).toBe(true);
      const empty = policyLoss({ numSequences: 0, logp: [], mask: [], advantages: [], refLogp: [], values: [], returns: [] }, cfg);
      expect(empty.loss).toBe(0);
      expect(empty.dLogp.length).toBe(0);
    }
  });
});

describe("invalid configs and batches give clear errors", () => {
  const throwsWith = (fn: () => unknown, ...parts: string[]) => {
    let msg = "";
    try {
      fn();
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg, "expected an error").not.toBe("");
    for (const p of parts) expect(msg).toContain(p);
  };

  it("config keys", () => {
    throwsWith(() => preset("nope" as AlgoName), "preset name", '"grpo"', '"lpro"');
    throwsWith(() => preset("grpo", { clip: { epsLow: -0.1 } }), "clip.epsLow = -0.1", "allowed: a finite number ≥ 0 and < 1");
    throwsWith(() => preset("grpo", { clip: { epsLow: 1 } }), "clip.epsLow = 1");
    throwsWith(() => preset("grpo", { aggregation: { mode: "sum" as never } }), 'aggregation.mode = "sum"', '"seq-mean-token-mean" | "token-mean"');
    throwsWith(() => preset("grpo", { clip: { epsHi: 0.3 } as never }), "unknown key clip.epsHi", "epsLow, epsHigh, dualClip, delta");
    throwsWith(() => preset("grpo", { klBeta: 0.1 } as never), "unknown key klBeta");
    throwsWith(() => preset("ppo", { clip: { dualClip: 0.5 } }), "clip.dualClip = 0.5", "null or a finite number > 1");
    throwsWith(() => preset("dapo", { overlong: { maxLength: 100, cacheLength: 512 } }), "overlong.cacheLength = 512", "cacheLength ≤ maxLength");
    throwsWith(() => preset("grpo", { kl: { placement: "reward" } }), 'kl.placement = "reward"', '"loss" | "none"');
    throwsWith(() => preset("lpro", { advantage: { scale: "none" } }), 'advantage.scale = "none"', '"group"');
    throwsWith(() => preset("grpo", { entropy: { topQuantile: 0 } }), "entropy.topQuantile = 0");
    throwsWith(() => preset("grpo", { dynamicSampling: { maxRounds: 0 } }), "dynamicSampling.maxRounds = 0", "an integer ≥ 1");
    throwsWith(() => preset("grpo", { name: "ppo" }), 'overrides.name = "ppo"');
    throwsWith(() => groupAdvantages("ppo", { rewards: [1], lengths: [1] }), "per-token", "computeAdvantages");
    throwsWith(() => groupAdvantages("grpo", { rewards: [1, 0], lengths: [1] }), "group.lengths has 1 entries");
  });

  it("batch fields", () => {
    const cfg = preset("grpo");
    const base = { numSequences: 1, logp: [-1, -2], oldLogp: [-1, -2], refLogp: [-1, -2], mask: [1, 1], advantages: [1] };
    throwsWith(() => policyLoss({ ...base, refLogp: undefined }, cfg), "needs batch.refLogp", "kl.beta");
    throwsWith(() => policyLoss({ ...base, mask: [1, 0.5] }, cfg), "batch.mask[1] = 0.5", "0 | 1");
    throwsWith(() => policyLoss({ ...base, advantages: undefined }, cfg), "batch.advantages");
    throwsWith(() => policyLoss({ ...base, advantages: [NaN] }, cfg), "batch.advantages at token 0 = NaN");
    throwsWith(() => policyLoss({ ...base, tokensInStep: 1 }, cfg), "batch.tokensInStep = 1");
    throwsWith(() => policyLoss({ ...base, numSequences: 3, advantages: [1, 1, 1] }, cfg), "not a multiple of numSequences = 3");
    throwsWith(() => policyLoss({ ...base, seqIds: [0, 2] }, cfg), "seqIds[1] = 2");
    throwsWith(() => policyLoss({ ...base, oldLogp: [-1] }, cfg), "batch.oldLogp has 1 entries");
    throwsWith(() => policyLoss(base, preset("dr_grpo", { aggregation: { mode: "mean-length" } })), "batch.meanLength");
    throwsWith(() => policyLoss({ ...base, tokenAdvantages: [1, 1] }, preset("ppo")), "value.coef = 0.1", "batch.values");
    throwsWith(() => policyLoss(base, preset("grpo", { entropy: { coef: 0.1 } })), "needs batch.entropy");
    throwsWith(() => policyLoss(base, { ...cfg, clip: { ...cfg.clip, epsHigh: -1 } }), "clip.epsHigh = -1");
  });
});
