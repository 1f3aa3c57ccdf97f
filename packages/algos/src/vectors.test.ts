// docs/algorithms.md §2.8 test vectors (G = 4, r = [1,0,0,1], L = [100,200,300,50]), all to 1e-6.
import { describe, expect, it } from "vitest";
import {
  gae,
  groupAdvantages,
  klEstimate,
  leadRewards,
  leadWeight,
  preset,
  softOverlongPenalty,
  zScores,
} from "./index.js";

const r = [1, 0, 0, 1];
const L = [100, 200, 300, 50];
const correct = r.map((x) => x === 1);
const TOL = 1e-6;

function expectClose(actual: ArrayLike<number>, expected: number[], tol = TOL): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    expect(Math.abs(actual[i] - expected[i]), `index ${i}: ${actual[i]} vs ${expected[i]}`).toBeLessThanOrEqual(tol);
  }
}

describe("§2.8 test vectors", () => {
  it("GRPO A (Bessel σ = 0.57735, ε = 1e-6) and ε = 1e-4", () => {
    expectClose(groupAdvantages("grpo", { rewards: r, lengths: L }), [0.866024, -0.866024, -0.866024, 0.866024]);
    expectClose(
      groupAdvantages("grpo", { rewards: r, lengths: L }, { advantage: { eps: 1e-4 } }),
      [0.865875, -0.865875, -0.865875, 0.865875],
    );
  });

  it("GSPO and DAPO use the same group-normalised advantage as GRPO", () => {
    expectClose(groupAdvantages("gspo", { rewards: r, lengths: L }), [0.866024, -0.866024, -0.866024, 0.866024]);
    // DAPO maps r ∈ {0,1} onto R = ±1: (R − μ)/(σ + ε) with σ = 1.1547; lengths far below the overlong buffer.
    expectClose(groupAdvantages("dapo", { rewards: r, lengths: L }), [0.866025, -0.866025, -0.866025, 0.866025]);
  });

  it("Dr. GRPO A", () => {
    expectClose(groupAdvantages("dr_grpo", { rewards: r, lengths: L }), [0.5, -0.5, -0.5, 0.5]);
  });

  it("LPRO z_L (Bessel, ε = 1e-6)", () => {
    expectClose(zScores(L, "bessel", 1e-6), [-0.563735, 0.338241, 1.240216, -1.014722]);
  });

  it("LPRO A (format all ok, Bessel)", () => {
    const g = { rewards: r, lengths: L, correct, formatOk: [true, true, true, true] };
    expectClose(groupAdvantages("lpro", g), [0.922397, -0.899848, -0.990045, 0.967496]);
  });

  it("LPRO A (population σ)", () => {
    const g = { rewards: r, lengths: L, correct, formatOk: [true, true, true, true] };
    expectClose(groupAdvantages("lpro", g, { advantage: { std: "population" } }), [1.065092, -1.039055, -1.143206, 1.117168]);
  });

  it("LPRO A, all-wrong group r = [0,0,0,0] (length-only signal)", () => {
    const g = { rewards: [0, 0, 0, 0], lengths: L, correct: [false, false, false, false], formatOk: [true, true, true, true] };
    expectClose(groupAdvantages("lpro", g), [0.056373, -0.033824, -0.124022, 0.101472]);
  });

  it("GRPO-LEAD rewards (α = 0.05)", () => {
    expectClose(leadRewards({ rewards: r, lengths: L, correct }, preset("grpo_lead")), [0.965262, -1, -1, 1.035988]);
  });

  it("GRPO-LEAD Ã, ρ = 0.5, w(0.5) = 1.416556", () => {
    const cfg = preset("grpo_lead");
    const R = leadRewards({ rewards: r, lengths: L, correct }, cfg);
    expectClose(zScores(R, "bessel", 1e-6), [0.835148, -0.865754, -0.865754, 0.89636]);
    expect(Math.abs(leadWeight(0.5, cfg.lead) - 1.416556)).toBeLessThanOrEqual(TOL);
    // Range quoted in §2.6: w(1) ≈ 0.483, w(0) ≈ 1.499, w(0.75) = 0.95.
    expect(leadWeight(1, cfg.lead)).toBeCloseTo(0.483, 3);
    expect(leadWeight(0, cfg.lead)).toBeCloseTo(1.499, 3);
    expect(leadWeight(0.75, cfg.lead)).toBeCloseTo(0.95, 10);
  });

  it("GRPO-LEAD A", () => {
    expectClose(groupAdvantages("grpo_lead", { rewards: r, lengths: L, correct }), [1.183034, -1.226389, -1.226389, 1.269744]);
    // Without `correct`, correctness is reward > 0 (reference code convention): same result.
    expectClose(groupAdvantages("grpo_lead", { rewards: r, lengths: L }), [1.183034, -1.226389, -1.226389, 1.269744]);
  });

  it("DAPO soft overlong (L_max = 3072, L_cache = 512)", () => {
    const lens = [2000, 2560, 2816, 3072, 3100];
    expectClose(
      lens.map((n) => softOverlongPenalty(n, 3072, 512)),
      [0, 0, -0.5, -1, -1],
    );
  });

  it("GAE r = [0,0,0,1], V = [.5,.6,.7,.8], γ = 1, λ = 0.95 (pre-whitening)", () => {
    const res = gae([0, 0, 0, 1], [0.5, 0.6, 0.7, 0.8], 1, 0.95);
    expectClose(res.advantages, [0.456725, 0.3755, 0.29, 0.2]);
    expectClose(res.returns, [0.956725, 0.9755, 0.99, 1.0]);
  });

  it("KL ℓ = −1.0, ℓ_ref = −1.3: k1 = 0.3, k2 = 0.045, k3 = 0.040818", () => {
    expect(Math.abs(klEstimate("k1", -1.0, -1.3) - 0.3)).toBeLessThanOrEqual(TOL);
    expect(Math.abs(klEstimate("k2", -1.0, -1.3) - 0.045)).toBeLessThanOrEqual(TOL);
    expect(Math.abs(klEstimate("k3", -1.0, -1.3) - 0.040818)).toBeLessThanOrEqual(TOL);
  });
});
