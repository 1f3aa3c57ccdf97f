// Advantage estimators beyond the §2.8 vectors: batch API, GAE path (KL-in-reward, whitening), masked GAE, variants.
import { describe, expect, it } from "vitest";
import {
  computeAdvantages,
  gae,
  gaeMasked,
  groupAdvantages,
  klEstimate,
  maskedWhiten,
  preset,
  std,
} from "./index.js";
import type { CompletionGroup } from "./index.js";

describe("computeAdvantages (group estimators)", () => {
  const groups: CompletionGroup[] = [
    { rewards: [1, 0, 0, 1], lengths: [100, 200, 300, 50] },
    { rewards: [1, 1, 1, 1], lengths: [10, 20, 30, 40], truncated: [false, false, false, true] },
    { rewards: [0, 1], lengths: [5, 7] },
  ];
  it("concatenates per-group advantages and reports batch metrics", () => {
    const cfg = preset("grpo");
    const res = computeAdvantages(groups, cfg);
    const expected = groups.flatMap((g) => groupAdvantages("grpo", g));
    expect(Array.from(res.advantages)).toEqual(expected);
    expect(Array.from(res.groupIndex)).toEqual([0, 0, 0, 0, 1, 1, 1, 1, 2, 2]);
    expect(Array.from(res.groupMeanLength)).toEqual([162.5, 162.5, 162.5, 162.5, 25, 25, 25, 25, 6, 6]);
    expect(res.zeroStdGroups).toEqual([false, true, false]);
    expect(res.metrics["frac_reward_zero_std"]).toBeCloseTo(1 / 3, 14);
    expect(res.metrics["completions/clipped_ratio"]).toBeCloseTo(0.1, 14);
    expect(res.metrics["reward/mean"]).toBeCloseTo(0.7, 14);
  });

  it("scale 'batch': group mean, batch σ (TRL scale_rewards='batch')", () => {
    const cfg = preset("grpo", { advantage: { scale: "batch" } });
    const res = computeAdvantages(groups, cfg);
    const all = groups.flatMap((g) => g.rewards);
    const s = std(all, "bessel");
    expect(res.advantages[0]).toBeCloseTo(0.5 / (s + 1e-6), 12);
    expect(res.advantages[8]).toBeCloseTo(-0.5 / (s + 1e-6), 12);
    expect(res.advantages[4]).toBe(0);
  });

  it("DAPO: ±1 mapping plus soft overlong penalty inside the buffer", () => {
    const cfg = preset("dapo", { overlong: { maxLength: 3072, cacheLength: 512 } });
    const res = computeAdvantages([{ rewards: [1, 1, 0, 0], lengths: [1000, 2816, 1000, 3072] }], cfg);
    expect(Array.from(res.rewards)).toEqual([1, 0.5, -1, -2]);
    const z = [1, 0.5, -1, -2];
    const mu = -0.375;
    const sd = Math.sqrt(z.reduce((s, x) => s + (x - mu) ** 2, 0) / 3);
    res.advantages.forEach((a, i) => expect(a).toBeCloseTo((z[i] - mu) / (sd + 1e-6), 12));
  });
});

describe("GRPO-LEAD options", () => {
  const L = [100, 200, 300, 50];
  it("simple variant: r·exp(−0.1|z|) for correct answers and weight (2 − pass rate)", () => {
    const cfg = preset("grpo_lead", { lead: { variant: "simple" } });
    expect(cfg.lead.alpha).toBe(0.1);
    const a = groupAdvantages("grpo_lead", { rewards: [1, 0, 0, 1], lengths: L }, cfg);
    // z over correct lengths {100, 50}: ±0.7071 → both correct get exp(−0.07071); wrong stay 0.
    const Rc = Math.exp(-0.1 * Math.SQRT1_2 / (1 + 1e-6 / 35.35533905932738));
    const R = [Rc, 0, 0, Rc];
    const mu = Rc / 2;
    const sd = Math.sqrt(R.reduce((s, x) => s + (x - mu) ** 2, 0) / 3);
    a.forEach((x, i) => expect(x).toBeCloseTo(((R[i] - mu) / (sd + 1e-6)) * 1.5, 9));
  });

  it("unformatted wrong answers get 0 instead of −1 (paper variant)", () => {
    const cfg = preset("grpo_lead");
    const res = computeAdvantages([{ rewards: [1, 0, 0, 1], lengths: L, formatOk: [true, false, true, true] }], cfg);
    expect(res.rewards[1]).toBe(0);
    expect(res.rewards[2]).toBe(-1);
  });

  it("lengthRewardMinTokens gates the length reward on the 3 shortest lengths (reference code: 4000)", () => {
    const g = { rewards: [1, 0, 0, 1], lengths: L };
    const gated = computeAdvantages([g], preset("grpo_lead", { lead: { lengthRewardMinTokens: 4000 } }));
    expect(Array.from(gated.rewards)).toEqual([1, -1, -1, 1]);
    const open = computeAdvantages([g], preset("grpo_lead", { lead: { lengthRewardMinTokens: 100 } }));
    expect(open.rewards[0]).toBeCloseTo(0.965262, 6);
  });
});

describe("LPRO options", () => {
  it("format bonus changes the reward, not advantages of identical format", () => {
    const L = [100, 200, 300, 50];
    const res = computeAdvantages(
      [{ rewards: [1, 0, 0, 1], lengths: L, correct: [true, false, false, true], formatOk: [true, false, true, true] }],
      preset("lpro"),
    );
    expect(Array.from(res.rewards)).toEqual([1.1, 0, 0.1, 1.1]);
  });
});

describe("GAE", () => {
  it("gae: γ = 1, λ = 1 gives Â_t = R − V_t (Monte-Carlo)", () => {
    const res = gae([0, 0, 2], [0.5, 1, 1.5], 1, 1);
    expect(res.advantages).toEqual([1.5, 1, 0.5]);
    expect(res.returns).toEqual([2, 2, 2]);
  });

  it("gaeMasked skips masked positions and matches gae on the compacted sequence", () => {
    const r = [0, 9, 0, 1, 0, 0, 0, 0];
    const v = [0.5, 9, 0.6, 0.7, 0.1, 0.2, 0.3, 9];
    const m = [1, 0, 1, 1, 1, 1, 1, 0];
    const res = gaeMasked(r, v, m, 2, 0.99, 0.9);
    const a = gae([0, 0, 1], [0.5, 0.6, 0.7], 0.99, 0.9);
    const b = gae([0, 0, 0], [0.1, 0.2, 0.3], 0.99, 0.9);
    const exp = [a.advantages[0], 0, a.advantages[1], a.advantages[2], ...b.advantages, 0];
    res.advantages.forEach((x, i) => expect(x).toBeCloseTo(exp[i], 14));
    expect(res.returns[1]).toBe(0);
    expect(res.returns[0]).toBeCloseTo(a.returns[0], 14);
  });

  it("maskedWhiten: zero mean, unit (Bessel) std over valid tokens, masked → 0", () => {
    const w = maskedWhiten([1, 2, 100, 3, 4], [1, 1, 0, 1, 1]);
    const vals = [w[0], w[1], w[3], w[4]];
    expect(vals.reduce((s, x) => s + x, 0)).toBeCloseTo(0, 12);
    expect(std(vals, "bessel")).toBeCloseTo(1, 6);
    expect(w[2]).toBe(0);
    expect(Array.from(maskedWhiten([5], [1]))).toEqual([0]);
  });

  it("computeAdvantages (ppo): per-token KL in reward, score at EOS, GAE, whitening", () => {
    const cfg = preset("ppo"); // k1 in reward, β = 0.05, γ = 1, λ = 0.95, whiten
    const old = [[-1, -2, -0.5], [-0.3]];
    const ref = [[-1.2, -2, -0.4], [-0.3]];
    const values = [[0.1, 0.2, 0.3], [0.4]];
    const res = computeAdvantages([{ rewards: [1, 0], lengths: [3, 1], values, oldLogp: old, refLogp: ref, truncated: [false, true] }], cfg);
    const tokR0 = old[0].map((o, t) => -0.05 * klEstimate("k1", o, ref[0][t]));
    tokR0[2] += 1;
    const g0 = gae(tokR0, values[0], 1, 0.95);
    const g1 = gae([0], values[1], 1, 0.95);
    const raw = [...g0.advantages, ...g1.advantages];
    const mu = raw.reduce((s, x) => s + x, 0) / raw.length;
    const sd = std(raw, "bessel");
    const flat = res.tokenAdvantages!.flatMap((a) => Array.from(a));
    flat.forEach((x, i) => expect(x).toBeCloseTo((raw[i] - mu) / Math.sqrt(sd * sd + 1e-8), 12));
    // Returns are pre-whitening Â + V.
    res.returns![0].forEach((x, i) => expect(x).toBeCloseTo(g0.returns[i], 14));
    expect(res.metrics["kl_reward/mean"]).toBeCloseTo((0.2 + 0 - 0.1 + 0) / 4, 14);
    // Missing-EOS penalty applies to truncated completions only.
    const pen = computeAdvantages(
      [{ rewards: [1, 0], lengths: [3, 1], values, oldLogp: old, refLogp: ref, truncated: [false, true] }],
      preset("ppo", { gae: { missingEosPenalty: 1, whiten: false } }),
    );
    expect(pen.returns![1][0]).toBeCloseTo(-1, 14);
  });

  it("computeAdvantages (ppo) errors clearly without values or ref logps", () => {
    expect(() => computeAdvantages([{ rewards: [1], lengths: [2] }], preset("ppo"))).toThrow(/values\[0\] is missing/);
    expect(() => computeAdvantages([{ rewards: [1], lengths: [2], values: [[0, 0]] }], preset("ppo"))).toThrow(/needs groups\[0\]\.oldLogp\[0\] and refLogp\[0\]/);
    const noKl = computeAdvantages([{ rewards: [1], lengths: [2], values: [[0, 0]] }], preset("ppo", { kl: { beta: 0 }, gae: { whiten: false } }));
    // r = [0, 1], V = 0: Â_1 = 1, Â_0 = γλ·Â_1 = 0.95.
    expect(Array.from(noKl.tokenAdvantages![0])).toEqual([expect.closeTo(0.95, 14), expect.closeTo(1, 14)]);
  });
});
