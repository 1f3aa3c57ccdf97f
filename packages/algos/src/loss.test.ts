// policyLoss semantics: hand-computed values, micro-batch equivalence, clip metrics, IS correction, entropy terms.
import { describe, expect, it } from "vitest";
import { clippedSurrogate, countLossTokens, policyLoss, preset, stepNormalizers } from "./index.js";
import type { AggregationMode, PolicyBatch } from "./index.js";
import { rand, randomBatch, testSeed } from "./testutil.js";

const seed = testSeed();

describe("clipped surrogate", () => {
  const clip = { epsLow: 0.2, epsHigh: 0.28, dualClip: null, delta: null };
  it("takes the pessimistic branch and zeroes the gradient only where clipped", () => {
    // A > 0: capped at 1 + ε_high.
    expect(clippedSurrogate(1.5, 2, clip)).toMatchObject({ value: -2 * 1.28, grad: 0, highClipped: true });
    expect(clippedSurrogate(0.5, 2, clip)).toMatchObject({ value: -1, grad: -2, lowClipped: false });
    // A < 0: floored at 1 − ε_low.
    expect(clippedSurrogate(0.5, -2, clip)).toMatchObject({ value: 0.8 * 2, grad: 0, lowClipped: true });
    expect(clippedSurrogate(1.5, -2, clip)).toMatchObject({ value: 3, grad: 2, highClipped: false });
    expect(clippedSurrogate(1.1, 1, clip)).toMatchObject({ value: -1.1, grad: -1 });
  });
  it("dual clip caps the loss of negative advantages at −c·A", () => {
    const dual = { ...clip, dualClip: 3 };
    expect(clippedSurrogate(4, -1, dual)).toMatchObject({ value: 3, grad: 0, dualClipped: true });
    expect(clippedSurrogate(2.5, -1, dual)).toMatchObject({ value: 2.5, grad: 1, dualClipped: false });
    expect(clippedSurrogate(4, 1, dual)).toMatchObject({ value: -1.28, dualClipped: false });
  });
  it("two-sided clip δ caps the unclipped branch", () => {
    const two = { ...clip, delta: 1.6 };
    expect(clippedSurrogate(2, -1, two)).toMatchObject({ value: 1.6, grad: 0 });
    expect(clippedSurrogate(1.5, -1, two)).toMatchObject({ value: 1.5, grad: 1 });
  });
});

describe("aggregation modes (hand-computed)", () => {
  // Two sequences, on-policy; seq 0 has 3 valid tokens with A = 1, seq 1 has 1 valid token (+2 padding) with A = −2.
  const batch: PolicyBatch = {
    numSequences: 2,
    logp: [-1, -1, -1, -1, -1, -1],
    mask: [1, 1, 1, 1, 0, 0],
    advantages: [1, -2],
    meanLength: [2, 4],
  };
  const cases: [AggregationMode, number, number[]][] = [
    // loss = Σ a_t·(−A_t); gradient −a_t·A_t.
    ["seq-mean-token-mean", -(1 / 2) * 1 + (1 / 2) * 2, [-1 / 6, -1 / 6, -1 / 6, 1, 0, 0]],
    ["token-mean", (-3 + 2) / 4, [-1 / 4, -1 / 4, -1 / 4, 2 / 4, 0, 0]],
    ["token-mean-local", (-3 + 2) / 4, [-1 / 4, -1 / 4, -1 / 4, 2 / 4, 0, 0]],
    ["constant", (-3 + 2) / (2 * 10), [-1 / 20, -1 / 20, -1 / 20, 2 / 20, 0, 0]],
    ["mean-length", -3 / (2 * 2) + 2 / (2 * 4), [-1 / 4, -1 / 4, -1 / 4, 2 / 8, 0, 0]],
    ["seq-mean-token-sum", (-3 + 2) / 2, [-1 / 2, -1 / 2, -1 / 2, 1, 0, 0]],
  ];
  for (const [mode, loss, grad] of cases) {
    it(mode, () => {
      const cfg = preset("dr_grpo", { aggregation: { mode, maxLength: 10 } });
      const res = policyLoss(batch, cfg);
      expect(res.loss).toBeCloseTo(loss, 14);
      Array.from(res.dLogp).forEach((g, t) => expect(g).toBeCloseTo(grad[t], 14));
    });
  }
});

describe(`micro-batches with step normalisers reproduce the one-call loss (NR_SEED=${seed})`, () => {
  const modes: AggregationMode[] = ["seq-mean-token-mean", "token-mean", "constant", "mean-length", "seq-mean-token-sum"];
  for (const mode of modes) {
    it(mode, () => {
      const cfg = preset("dapo", { aggregation: { mode, maxLength: 64 }, overlong: { filter: true } });
      const R = rand(seed ^ 0xabc);
      const full = randomBatch(R, cfg, { groups: 3, groupSize: 4, T: 8, withSampling: false, deltaSigma: 0.4 });
      full.truncated = Array.from({ length: full.numSequences }, (_, i) => i % 5 === 2);
      const one = policyLoss(full, cfg);
      // Split into 3 micro-batches of 4 sequences.
      const T = 8;
      const parts = [0, 1, 2].map((k) => {
        const sl = <A extends ArrayLike<number>>(a: A | undefined) => (a ? Float64Array.from(Array.from(a).slice(k * 4 * T, (k + 1) * 4 * T)) : undefined);
        const ss = <A>(a: ArrayLike<A> | undefined) => (a ? Array.from(a).slice(k * 4, (k + 1) * 4) : undefined);
        return {
          numSequences: 4,
          logp: sl(full.logp)!,
          oldLogp: sl(full.oldLogp),
          refLogp: sl(full.refLogp),
          entropy: sl(full.entropy),
          mask: sl(full.mask)!,
          advantages: ss(full.advantages),
          meanLength: ss(full.meanLength),
          truncated: ss(full.truncated),
        } as PolicyBatch;
      });
      const norm = stepNormalizers(parts, cfg);
      expect(norm.tokensInStep).toBe(countLossTokens(full, cfg));
      expect(norm.sequencesInStep).toBe(12);
      let loss = 0;
      const grads: number[] = [];
      for (const p of parts) {
        const r = policyLoss({ ...p, tokensInStep: norm.tokensInStep, sequencesInStep: norm.sequencesInStep }, cfg);
        loss += r.loss;
        grads.push(...r.dLogp);
      }
      expect(Math.abs(loss - one.loss)).toBeLessThan(1e-12);
      grads.forEach((g, t) => expect(Math.abs(g - one.dLogp[t])).toBeLessThan(1e-12));
    });
  }
});

describe("metrics", () => {
  it("clip ratios, ratio stats, advantage stats", () => {
    const cfg = preset("dapo"); // 0.8 / 1.28
    const logRho = [Math.log(0.5), Math.log(1.5), Math.log(1.5), Math.log(1.0)];
    const batch: PolicyBatch = {
      numSequences: 4,
      logp: [0, 0, 0, 0].map((_, i) => -1 + logRho[i]),
      oldLogp: [-1, -1, -1, -1],
      mask: [1, 1, 1, 1],
      advantages: [-1, 1, -1, 1],
    };
    const m = policyLoss(batch, cfg).metrics;
    expect(m["clip_ratio/low_mean"]).toBe(0.25); // ρ = 0.5, A < 0
    expect(m["clip_ratio/high_mean"]).toBe(0.25); // ρ = 1.5, A > 0
    expect(m["clip_ratio/region_mean"]).toBe(0.5);
    expect(m["ratio/min"]).toBeCloseTo(0.5, 14);
    expect(m["ratio/max"]).toBeCloseTo(1.5, 14);
    expect(m["ratio/mean"]).toBeCloseTo(1.125, 14);
    expect(m["advantages/mean"]).toBe(0);
    expect(m["advantages/std"]).toBeCloseTo(Math.sqrt(4 / 3), 14);
    expect(m["tokens/valid"]).toBe(4);
  });

  it("GSPO's ratio is the geometric mean of token ratios", () => {
    const cfg = preset("gspo");
    const batch: PolicyBatch = {
      numSequences: 1,
      logp: [-1 + 2e-4, -1 - 1e-4, -1 + 5e-4, 0],
      oldLogp: [-1, -1, -1, 0],
      mask: [1, 1, 1, 0],
      advantages: [1],
    };
    const res = policyLoss(batch, cfg);
    const s = Math.exp((2e-4 - 1e-4 + 5e-4) / 3);
    expect(res.metrics["ratio/mean"]).toBeCloseTo(s, 14);
    // s = 1.0002 is inside [1 − 3e-4, 1 + 4e-4]: unclipped gradient A·s/n on every token (sign: loss = −J).
    expect(res.loss).toBeCloseTo(-s, 14);
    for (let t = 0; t < 3; t++) expect(res.dLogp[t]).toBeCloseTo(-s / 3, 14);
    expect(res.dLogp[3]).toBe(0);
    // Above 1 + 4e-4 with A > 0: clipped, no gradient.
    const far = policyLoss({ ...batch, logp: [-1 + 1e-3, -1 + 1e-3, -1 + 1e-3, 0] }, cfg);
    expect(far.metrics["clip_ratio/high_mean"]).toBe(1);
    expect(Array.from(far.dLogp)).toEqual([0, 0, 0, 0]);
  });

  it("KL metric and KL-in-loss term", () => {
    const cfg = preset("grpo"); // k3, β = 0.04, seq-mean-token-mean
    const batch: PolicyBatch = { numSequences: 1, logp: [-1, -2], refLogp: [-1.3, -2], mask: [1, 1], advantages: [0] };
    const res = policyLoss(batch, cfg);
    const k3 = Math.exp(-0.3) + 0.3 - 1;
    expect(res.metrics.kl).toBeCloseTo(k3 / 2, 14);
    expect(res.parts.kl).toBeCloseTo((0.04 * k3) / 2, 14);
    expect(res.dLogp[0]).toBeCloseTo((0.04 * (1 - Math.exp(-0.3))) / 2, 14);
    expect(res.dLogp[1]).toBe(0);
    // KL-in-reward placement: reported, not in the loss.
    const ppo = preset("ppo", { value: { coef: 0 } });
    const r2 = policyLoss({ ...batch, tokenAdvantages: [0, 0] }, ppo);
    expect(r2.parts.kl).toBe(0);
    expect(r2.metrics.kl).toBeCloseTo(0.3 / 2, 14); // k1
  });
});

describe("importance-sampling correction", () => {
  const base: PolicyBatch = {
    numSequences: 2,
    logp: [-1, -1, -1, -1],
    mask: [1, 1, 1, 1],
    advantages: [1, 1],
    // Sequence 0: old − sampling = 0.3 + 0.3 → ratio e^0.6 ≈ 1.82; sequence 1: 0.8 + 0.5 → e^1.3 ≈ 3.67 > cap 3.
    samplingLogp: [-1.3, -1.3, -1.8, -1.5],
  };
  it("sequence_mask drops sequences whose ratio exceeds the cap and weights the others", () => {
    const res = policyLoss(base, preset("dapo", { importanceSampling: { mode: "sequence_mask", cap: 3 } }));
    const w0 = Math.exp(0.6);
    expect(res.loss).toBeCloseTo((-w0 * 2) / 4, 14);
    expect(res.dLogp[2]).toBe(0);
    expect(res.metrics["sampling/importance_sampling_ratio/max"]).toBeCloseTo(w0, 14);
    expect(res.metrics["sampling/importance_sampling_ratio/min"]).toBe(0);
    expect(res.metrics["sampling/sampling_logp_difference/max"]).toBeCloseTo(0.8, 14);
  });
  it("token_truncate caps each token weight", () => {
    const res = policyLoss(base, preset("dapo", { importanceSampling: { mode: "token_truncate", cap: 1.5 } }));
    const w = [Math.exp(0.3), Math.exp(0.3), 1.5, 1.5];
    expect(res.loss).toBeCloseTo(-w.reduce((s, x) => s + x, 0) / 4, 14);
  });
  it("mode none or no samplingLogp: weight 1", () => {
    const a = policyLoss(base, preset("dapo", { importanceSampling: { mode: "none" } }));
    const b = policyLoss({ ...base, samplingLogp: undefined }, preset("dapo"));
    expect(a.loss).toBe(-1);
    expect(b.loss).toBe(-1);
  });
});

describe("entropy terms", () => {
  const H = [0.1, 0.5, 0.9, 1.3, 1.7, 2.1, 2.5, 2.9, 3.3, 3.7];
  const batch: PolicyBatch = {
    numSequences: 1,
    logp: H.map(() => -1),
    mask: H.map(() => 1),
    entropy: H,
    advantages: [1],
  };
  it("top-entropy mask keeps the policy loss on the top-ρ tokens only", () => {
    const res = policyLoss(batch, preset("dapo", { entropy: { topQuantile: 0.2 } }));
    // 80th percentile (linear) of the 10 values = 2.9 + 0.2·(3.3 − 2.9) = 2.98: tokens 3.3 and 3.7 kept.
    expect(res.metrics["tokens/entropy_kept_frac"]).toBe(0.2);
    expect(Array.from(res.dLogp).filter((g) => g !== 0).length).toBe(2);
    expect(res.loss).toBeCloseTo(-2 / 10, 14); // the normaliser still counts every valid token
  });
  it("fixed bonus: −c_H·mean(H) with dEntropy = −c_H/T", () => {
    const res = policyLoss(batch, preset("dapo", { entropy: { coef: 0.01 } }));
    const mean = H.reduce((s, x) => s + x, 0) / H.length;
    expect(res.parts.entropy).toBeCloseTo(-0.01 * mean, 14);
    expect(res.metrics.entropy).toBeCloseTo(mean, 14);
    res.dEntropy.forEach((g) => expect(g).toBeCloseTo(-0.001, 15));
  });
  it("adaptive bonus applies only below the target and uses the controller's coefficient", () => {
    const on = policyLoss({ ...batch, entropyCoef: 0.05 }, preset("dapo", { entropy: { adaptive: { enabled: true, target: 2.5 } } }));
    expect(on.parts.entropy).toBeLessThan(0);
    expect(on.metrics["coef/entropy"]).toBe(0.05);
    const off = policyLoss({ ...batch, entropyCoef: 0.05 }, preset("dapo", { entropy: { adaptive: { enabled: true, target: 1.0 } } }));
    expect(off.parts.entropy).toBe(0);
    expect(off.dEntropy.every((x) => x === 0)).toBe(true);
  });
});

describe("PPO value loss", () => {
  it("clipped value loss: ½·max((V−R)², (V_clip−R)²), clipfrac, explained variance", () => {
    const cfg = preset("ppo", { kl: { beta: 0 } }); // c_v = 0.1, ε_v = 0.2
    const batch: PolicyBatch = {
      numSequences: 1,
      logp: [-1, -1, -1],
      mask: [1, 1, 1],
      tokenAdvantages: [0, 0, 0],
      values: [0.0, 1.0, 0.5],
      oldValues: [0.5, 0.5, 0.5],
      returns: [0.0, 0.0, 1.0],
    };
    const res = policyLoss(batch, cfg);
    // t0: V=0 clipped to 0.3 → max(0, 0.09) = 0.09 (clipped wins, gradient 0).
    // t1: V=1 clipped to 0.7 → max(1, 0.49) = 1 (unclipped, gradient 2(V−R) = 2).
    // t2: V=0.5 in range → 0.25, gradient 2(0.5 − 1) = −1.
    const scale = (0.1 * 0.5) / 3;
    expect(res.parts.value).toBeCloseTo(scale * (0.09 + 1 + 0.25), 14);
    expect(Array.from(res.dValue!)).toEqual([0, scale * 2, scale * -1].map((x) => expect.closeTo(x, 14)));
    expect(res.metrics["value/clipfrac"]).toBeCloseTo(1 / 3, 14);
    const varR = ((0 - 1 / 3) ** 2 * 2 + (1 - 1 / 3) ** 2) / 2;
    const d = [0, -1, 0.5];
    const md = d.reduce((s, x) => s + x, 0) / 3;
    const varD = d.reduce((s, x) => s + (x - md) ** 2, 0) / 2;
    expect(res.metrics["value/explained_var"]).toBeCloseTo(1 - varD / varR, 14);
  });
});
