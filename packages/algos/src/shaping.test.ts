// Reward shaping, overlong filtering, dynamic sampling, controllers and preset defaults.
import { describe, expect, it } from "vitest";
import {
  ALGO_NAMES,
  adaptiveEntropyStep,
  adaptiveKlStep,
  dynamicSample,
  filterGroups,
  isInformativeGroup,
  klValueAndGrad,
  maskTruncated,
  policyLoss,
  preset,
  softOverlongPenalty,
} from "./index.js";
import type { CompletionGroup } from "./index.js";

describe("soft overlong penalty", () => {
  it("is linear inside the buffer, scaled by factor, and −1 past the budget", () => {
    expect(softOverlongPenalty(2688, 3072, 512)).toBeCloseTo(-0.25, 14);
    expect(softOverlongPenalty(2816, 3072, 512, 0.5)).toBeCloseTo(-0.25, 14);
    expect(softOverlongPenalty(3072, 3072, 0)).toBe(0);
    expect(softOverlongPenalty(3073, 3072, 0)).toBe(-1);
  });
  it("rejects invalid arguments by name", () => {
    expect(() => softOverlongPenalty(10, 100, 200)).toThrow(/cacheLength = 200/);
    expect(() => softOverlongPenalty(10, 0, 0)).toThrow(/maxLength = 0/);
    expect(() => softOverlongPenalty(NaN, 100, 10)).toThrow(/length = NaN/);
  });
});

describe("overlong filtering", () => {
  it("maskTruncated zeroes every token of truncated sequences (padded and packed)", () => {
    expect(Array.from(maskTruncated([1, 1, 0, 1, 1, 1], [false, true], 2))).toEqual([1, 1, 0, 0, 0, 0]);
    expect(Array.from(maskTruncated([1, 1, 1], [true, false], 2, [1, 0, 0]))).toEqual([1, 0, 0]);
  });
  it("policyLoss drops truncated sequences from the loss and the token count", () => {
    const cfg = preset("dapo", { overlong: { filter: true } });
    const b = { numSequences: 2, logp: [-1, -1, -1, -1], mask: [1, 1, 1, 1], advantages: [1, -1], truncated: [false, true] };
    const res = policyLoss(b, cfg);
    expect(res.loss).toBe(-1);
    expect(Array.from(res.dLogp)).toEqual([-0.5, -0.5, 0, 0]);
    expect(res.metrics["tokens/valid"]).toBe(2);
    // Without the filter flag the same batch trains on all four tokens.
    expect(policyLoss(b, preset("dapo")).metrics["tokens/valid"]).toBe(4);
  });
});

describe("dynamic sampling", () => {
  const mixed: CompletionGroup = { rewards: [1, 0, 1, 0], lengths: [1, 2, 3, 4] };
  const allRight: CompletionGroup = { rewards: [1, 1, 1, 1], lengths: [1, 2, 3, 4] };
  const noisy: CompletionGroup = { rewards: [0.5, 0.5, 0.5, 0.5 + 1e-9], lengths: [1, 2, 3, 4] };

  it("uses a std threshold, not == 0", () => {
    const cfg = preset("dapo", { dynamicSampling: { metric: "reward" } });
    expect(isInformativeGroup(mixed, cfg.dynamicSampling)).toBe(true);
    expect(isInformativeGroup(allRight, cfg.dynamicSampling)).toBe(false);
    // Spread 1e-9 is float noise for a shaped reward: dropped although std ≠ 0.
    expect(isInformativeGroup(noisy, cfg.dynamicSampling)).toBe(false);
    expect(isInformativeGroup({ rewards: [1], lengths: [3] }, cfg.dynamicSampling)).toBe(false);
    // Metric "correct" looks at correctness (reward > 0 when `correct` is absent).
    expect(isInformativeGroup({ rewards: [0.2, 0.9], lengths: [1, 1] }, { metric: "correct", stdThreshold: 1e-6 })).toBe(false);
    expect(isInformativeGroup({ rewards: [0.2, 0.9], lengths: [1, 1], correct: [false, true] }, { metric: "correct", stdThreshold: 1e-6 })).toBe(true);
  });

  it("filterGroups keeps informative groups only when enabled", () => {
    const on = filterGroups([mixed, allRight, mixed], preset("dapo"));
    expect(on.keptIndices).toEqual([0, 2]);
    expect(on.fracZeroStd).toBeCloseTo(1 / 3, 14);
    const off = filterGroups([mixed, allRight], preset("grpo"));
    expect(off.keptIndices).toEqual([0, 1]);
    expect(off.fracZeroStd).toBe(0.5);
  });

  it("refills round by round and truncates to exactly the target", async () => {
    const calls: number[] = [];
    const res = await dynamicSample(
      (_round, needed) => {
        calls.push(needed);
        return [mixed, allRight, mixed]; // 2 informative per round
      },
      5,
      preset("dapo"),
    );
    expect(calls).toEqual([5, 3, 1]);
    expect(res.groups.length).toBe(5);
    expect(res.complete).toBe(true);
    expect(res.rounds).toBe(3);
    expect(res.generated).toBe(9);
    expect(res.dropped).toBe(3);
  });

  it("stops at maxRounds: partial result or a clear error", async () => {
    const gen = async () => [allRight, mixed];
    const partial = await dynamicSample(gen, 4, preset("dapo", { dynamicSampling: { maxRounds: 2 } }));
    expect(partial).toMatchObject({ complete: false, rounds: 2 });
    expect(partial.groups.length).toBe(2);
    await expect(dynamicSample(gen, 4, preset("dapo", { dynamicSampling: { maxRounds: 2, onCapReached: "error" } }))).rejects.toThrow(
      /only 2\/4 informative groups after dynamicSampling.maxRounds = 2/,
    );
    // GRPO-LEAD's reference drops without refilling: one round.
    const lead = await dynamicSample(gen, 4, preset("grpo_lead"));
    expect(lead).toMatchObject({ rounds: 1, complete: false });
    // Disabled: one round, nothing dropped.
    const off = await dynamicSample(gen, 2, preset("grpo"));
    expect(off).toMatchObject({ rounds: 1, dropped: 0, complete: true });
  });
});

describe("controllers and KL estimators", () => {
  it("adaptive KL: β·(1 + clip(KL/target − 1, ±0.2)·n/horizon)", () => {
    expect(adaptiveKlStep(0.1, 0.2, 100, { target: 0.1, horizon: 10000 })).toBeCloseTo(0.1 * (1 + 0.2 * 0.01), 15);
    expect(adaptiveKlStep(0.1, 0.09, 100, { target: 0.1, horizon: 10000 })).toBeCloseTo(0.1 * (1 - 0.1 * 0.01), 15);
    expect(() => adaptiveKlStep(0.1, 0.1, 1, { target: 0, horizon: 1 })).toThrow(/target/);
  });
  it("adaptive entropy: ±delta within [min, max]", () => {
    const o = { target: 0.2, delta: 0.005, min: 0, max: 1 };
    expect(adaptiveEntropyStep(0.01, 0.1, o)).toBeCloseTo(0.015, 15);
    expect(adaptiveEntropyStep(0.002, 0.3, o)).toBe(0);
    expect(adaptiveEntropyStep(0.999, 0.1, o)).toBe(1);
  });
  it("KL estimator gradients and clamps", () => {
    expect(klValueAndGrad("k1", -1, -1.3).grad).toBe(1);
    expect(klValueAndGrad("k2", -1, -1.3).grad).toBeCloseTo(0.3, 15);
    expect(klValueAndGrad("k3", -1, -1.3).grad).toBeCloseTo(1 - Math.exp(-0.3), 15);
    expect(klValueAndGrad("k3", 0, -30, { clampLogRatio: 20 })).toEqual({ value: Math.expm1(-20) + 20, grad: 0 });
    expect(klValueAndGrad("k3", 0, 5, { clampValue: 10 })).toEqual({ value: 10, grad: 0 });
    expect(() => klValueAndGrad("k4" as never, 0, 0)).toThrow(/"k1" \| "k2" \| "k3"/);
  });
});

describe("preset defaults (docs/algorithms.md §3)", () => {
  it("every preset resolves and validates", () => {
    for (const n of ALGO_NAMES) expect(preset(n).name).toBe(n);
  });
  it("GRPO", () => {
    const c = preset("grpo");
    expect(c.advantage).toMatchObject({ estimator: "group", scale: "group", std: "bessel", eps: 1e-6 });
    expect(c.ratio.level).toBe("token");
    expect(c.clip).toEqual({ epsLow: 0.2, epsHigh: 0.2, dualClip: null, delta: null });
    expect(c.aggregation.mode).toBe("seq-mean-token-mean");
    expect(c.kl).toMatchObject({ placement: "loss", estimator: "k3", beta: 0.04 });
  });
  it("Dr. GRPO", () => {
    const c = preset("dr_grpo");
    expect(c.advantage.scale).toBe("none");
    expect(c.aggregation).toEqual({ mode: "constant", maxLength: 3000 });
    expect(c.kl.beta).toBe(0);
  });
  it("PPO", () => {
    const c = preset("ppo");
    expect(c.advantage.estimator).toBe("gae");
    expect(c.gae).toMatchObject({ gamma: 1, lambda: 0.95, whiten: true });
    expect(c.clip).toMatchObject({ epsLow: 0.2, epsHigh: 0.2, dualClip: 3 });
    expect(c.aggregation.mode).toBe("token-mean");
    expect(c.kl).toMatchObject({ placement: "reward", estimator: "k1", beta: 0.05 });
    expect(c.value).toEqual({ coef: 0.1, clip: 0.2 });
  });
  it("GSPO", () => {
    const c = preset("gspo");
    expect(c.ratio.level).toBe("sequence");
    expect(c.clip).toMatchObject({ epsLow: 3e-4, epsHigh: 4e-4 });
    expect(c.aggregation.mode).toBe("seq-mean-token-mean");
    expect(c.kl.beta).toBe(0);
  });
  it("DAPO", () => {
    const c = preset("dapo");
    expect(c.reward.mapping).toBe("signed");
    expect(c.clip).toMatchObject({ epsLow: 0.2, epsHigh: 0.28 });
    expect(c.aggregation.mode).toBe("token-mean");
    expect(c.kl.beta).toBe(0);
    expect(c.overlong).toMatchObject({ softPenalty: true, maxLength: 20480, cacheLength: 4096 });
    expect(c.dynamicSampling).toMatchObject({ enabled: true, metric: "correct" });
  });
  it("GRPO-LEAD", () => {
    const c = preset("grpo_lead");
    expect(c.advantage.estimator).toBe("lead");
    expect(c.lead).toMatchObject({ variant: "paper", alpha: 0.05, A: 0.4, B: 1.5, x0: 0.75, k: 10, lengthRewardMinTokens: 0 });
    expect(c.clip).toMatchObject({ epsLow: 0.2, epsHigh: 0.2 });
    expect(c.aggregation.mode).toBe("seq-mean-token-mean");
    expect(c.kl.beta).toBe(0);
  });
  it("LPRO", () => {
    const c = preset("lpro");
    expect(c.advantage.estimator).toBe("lpro");
    expect(c.lpro).toEqual({ lambda: 0.1, formatWeight: 0.1, gateLengthOnZeroStd: false });
    expect(c.clip).toMatchObject({ epsLow: 0.2, epsHigh: 0.28 });
    expect(c.aggregation.mode).toBe("token-mean");
    expect(c.kl.beta).toBe(0);
  });
  it("overrides deep-merge and do not leak between calls", () => {
    const a = preset("dapo", { overlong: { maxLength: 3072, cacheLength: 512 } });
    expect(a.overlong).toMatchObject({ softPenalty: true, maxLength: 3072, cacheLength: 512, factor: 1 });
    expect(preset("dapo").overlong.maxLength).toBe(20480);
    // A resolved config can be passed back as overrides unchanged.
    expect(preset("dapo", a)).toEqual(a);
  });
});
