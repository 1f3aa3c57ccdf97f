// Gradient checks: dLogp, dEntropy and dValue against central finite differences of `loss` in float64, for every
// preset and for the composable parts, on random batches with masked tokens, padded / fully padded sequences and an
// all-equal (zero-advantage) group.
//
// Kinks: clip boundaries (1−ε_low, 1+ε_high, δ, dual-clip c), the log-ratio and KL clamps, value-clip boundaries,
// the value max-branch tie, the adaptive-entropy gate and ties in the top-entropy quantile make the loss
// non-differentiable on a measure-zero set. Batches are re-drawn until every valid token lies at least MARGIN away
// from every kink (the FD step is H ≪ MARGIN), so no FD stencil straddles a kink.
import { describe, expect, it } from "vitest";
import { policyLoss, preset } from "./index.js";
import type { AlgoConfig, AlgoName, AlgoOverrides, PolicyBatch } from "./index.js";
import { centralDiff, rand, randomBatch, testSeed } from "./testutil.js";
import type { BatchOptions, Rand } from "./testutil.js";

const H = 1e-6;
const MARGIN = 1e-4;
const seed = testSeed();

type TestBatch = ReturnType<typeof randomBatch>;

function validTokens(b: PolicyBatch, cfg: AlgoConfig): boolean[] {
  const T = b.seqIds ? 0 : b.mask.length / b.numSequences;
  return Array.from(b.mask, (m, t) => {
    const s = b.seqIds ? b.seqIds[t] : Math.floor(t / T);
    return m === 1 && !(cfg.overlong.filter && b.truncated?.[s]);
  });
}

/** True when no valid token is within MARGIN of a kink of the loss. */
function kinkFree(b: TestBatch, cfg: AlgoConfig): boolean {
  const valid = validTokens(b, cfg);
  const near = (x: number, k: number | null) => k !== null && Math.abs(x - k) < MARGIN * Math.max(1, Math.abs(k));
  const kinks = [1 - cfg.clip.epsLow, 1 + cfg.clip.epsHigh, cfg.clip.delta, cfg.clip.dualClip];
  const old = b.oldLogp!;
  const lr = cfg.ratio.logRatioClamp;
  if (cfg.ratio.level === "token") {
    for (let t = 0; t < valid.length; t++) {
      if (!valid[t]) continue;
      const d = b.logp[t] - old[t];
      if (lr !== null && near(Math.abs(d), lr)) return false;
      const rho = Math.exp(d);
      if (kinks.some((k) => near(rho, k))) return false;
    }
  } else {
    const sums = new Map<number, { s: number; n: number }>();
    const T = b.logp.length / b.numSequences;
    for (let t = 0; t < valid.length; t++) {
      if (!valid[t]) continue;
      const s = b.seqIds ? b.seqIds[t] : Math.floor(t / T);
      const e = sums.get(s) ?? { s: 0, n: 0 };
      e.s += b.logp[t] - old[t];
      e.n++;
      sums.set(s, e);
    }
    for (const { s, n } of sums.values()) {
      // A token perturbation moves the mean log-ratio by H/n; MARGIN is far larger.
      if (lr !== null && near(Math.abs(s / n), lr)) return false;
      if (kinks.some((k) => near(Math.exp(s / n), k))) return false;
    }
  }
  if (cfg.kl.placement === "loss" && b.refLogp) {
    for (let t = 0; t < valid.length; t++) {
      if (!valid[t]) continue;
      const d = b.refLogp[t] - b.logp[t];
      if (near(Math.abs(d), cfg.kl.clampLogRatio)) return false;
      const k = cfg.kl.estimator === "k1" ? -d : cfg.kl.estimator === "k2" ? 0.5 * d * d : Math.expm1(d) - d;
      if (near(Math.abs(k), cfg.kl.clampValue)) return false;
    }
  }
  if (cfg.value.coef > 0 && cfg.value.clip !== null) {
    const eps = cfg.value.clip;
    for (let t = 0; t < valid.length; t++) {
      if (!valid[t]) continue;
      const v = b.values[t];
      const vo = b.oldValues![t];
      const R = b.returns![t];
      if (near(v, vo - eps) || near(v, vo + eps)) return false;
      const vc = Math.min(Math.max(v, vo - eps), vo + eps);
      if (vc !== v && near((v - R) ** 2, (vc - R) ** 2)) return false;
    }
  }
  const hs = b.entropy ? Array.from(b.entropy).filter((_, t) => valid[t]).sort((x, y) => x - y) : [];
  if (cfg.entropy.topQuantile < 1) {
    for (let i = 1; i < hs.length; i++) if (hs[i] - hs[i - 1] < MARGIN) return false;
  }
  if (cfg.entropy.adaptive.enabled && hs.length > 0) {
    const m = hs.reduce((x, y) => x + y, 0) / hs.length;
    if (near(m, cfg.entropy.adaptive.target)) return false;
  }
  return true;
}

function drawBatch(R: Rand, cfg: AlgoConfig, o: BatchOptions, extra?: (b: TestBatch) => void): TestBatch {
  // Narrow kink bands can exclude most draws (GSPO's sequence ratio with a 5e-4 log-ratio clamp: NR_SEED=609364668
  // found none in 200 tries, and finds one in 5000), and a draw costs microseconds: try many.
  for (let i = 0; i < 5000; i++) {
    const b = randomBatch(R, cfg, o);
    extra?.(b);
    if (kinkFree(b, cfg)) return b;
  }
  throw new Error("could not draw a kink-free batch");
}

interface CheckStats {
  checked: number;
  clipped: number;
}

/** Compares every analytic derivative with a central finite difference; returns how many were checked. */
function gradCheck(b: TestBatch, cfg: AlgoConfig): CheckStats {
  const res = policyLoss(b, cfg);
  const f = () => policyLoss(b, cfg).loss;
  let checked = 0;
  const M = b.logp.length;
  const cmp = (x: Float64Array, g: Float64Array | undefined, name: string) => {
    let worst = 0;
    let where = "";
    for (let t = 0; t < M; t++) {
      const an = g ? g[t] : 0;
      if (!Number.isFinite(x[t])) {
        // NaN padding: never read, so the analytic gradient must be exactly 0.
        expect(an, `${name}[${t}] on NaN padding`).toBe(0);
        continue;
      }
      const fd = centralDiff(f, x, t, H);
      // Relative excess over the tolerance 1e-8 + 1e-6·|analytic|.
      const excess = Math.abs(fd - an) / (1e-8 + 1e-6 * Math.abs(an));
      if (excess > worst) {
        worst = excess;
        where = `${name}[${t}]: fd ${fd} vs analytic ${an}`;
      }
      checked++;
    }
    expect(worst, `${where} (NR_SEED=${seed})`).toBeLessThanOrEqual(1);
  };
  cmp(b.logp, res.dLogp, "dLogp");
  const entropyUsed = cfg.entropy.coef > 0 || cfg.entropy.adaptive.enabled || cfg.entropy.topQuantile < 1 || b.entropyCoef !== undefined;
  if (entropyUsed) cmp(b.entropy, res.dEntropy, "dEntropy");
  else expect(res.dEntropy.every((x) => x === 0)).toBe(true);
  if (cfg.value.coef > 0) {
    expect(res.dValue).toBeDefined();
    cmp(b.values, res.dValue, "dValue");
  } else {
    expect(res.dValue).toBeUndefined();
  }
  for (const v of Object.values(res.metrics)) expect(Number.isFinite(v)).toBe(true);
  return { checked, clipped: res.metrics["clip_ratio/region_mean"] + res.metrics["clip_ratio/dual_mean"] };
}

interface Scenario {
  name: string;
  algo: AlgoName;
  overrides?: AlgoOverrides;
  opts?: BatchOptions;
  extra?: (b: TestBatch, R: Rand) => void;
  /** Expect some tokens to hit the clip (so both branches are exercised). */
  expectClipping?: boolean;
}

const BASE_OPTS: BatchOptions = { withSampling: true };
const GSPO_OPTS: BatchOptions = { withSampling: true, seqOffset: 1.2e-3 };

const presetScenarios: Scenario[] = (["grpo", "dr_grpo", "ppo", "dapo", "grpo_lead", "lpro"] as AlgoName[])
  .map((algo): Scenario => ({ name: `preset ${algo}`, algo, opts: BASE_OPTS, expectClipping: true }))
  .concat([{ name: "preset gspo", algo: "gspo", opts: GSPO_OPTS, expectClipping: true }]);

const variantScenarios: Scenario[] = [
  { name: "token-mean with a larger global tokensInStep", algo: "grpo", overrides: { aggregation: { mode: "token-mean" } }, extra: (b) => (b.tokensInStep = 500) },
  { name: "token-mean-local with gradAccumSteps 3", algo: "grpo", overrides: { aggregation: { mode: "token-mean-local" } }, extra: (b) => (b.gradAccumSteps = 3) },
  { name: "constant L_max = 16 with sequencesInStep 40", algo: "dr_grpo", overrides: { aggregation: { maxLength: 16 } }, extra: (b) => (b.sequencesInStep = 40) },
  { name: "mean-length (brief's Dr. GRPO)", algo: "dr_grpo", overrides: { aggregation: { mode: "mean-length" } } },
  { name: "seq-mean-token-sum", algo: "grpo", overrides: { aggregation: { mode: "seq-mean-token-sum" } } },
  { name: "KL k1 in loss", algo: "grpo", overrides: { kl: { estimator: "k1", beta: 0.1 } } },
  { name: "KL k2 in loss", algo: "grpo", overrides: { kl: { estimator: "k2", beta: 0.1 } } },
  { name: "KL k3 with active clamps", algo: "grpo", overrides: { kl: { estimator: "k3", beta: 0.3, clampLogRatio: 0.5, clampValue: 0.05 } } },
  { name: "entropy bonus + top-20% entropy mask", algo: "dapo", overrides: { entropy: { coef: 0.01, topQuantile: 0.2 } } },
  { name: "adaptive entropy (below target: bonus on)", algo: "grpo", overrides: { entropy: { coef: 0.01, adaptive: { enabled: true, target: 3 } } }, extra: (b) => (b.entropyCoef = 0.03) },
  { name: "adaptive entropy (above target: bonus off)", algo: "grpo", overrides: { entropy: { coef: 0.01, adaptive: { enabled: true, target: 0.5 } } } },
  { name: "IS token_truncate", algo: "grpo", overrides: { importanceSampling: { mode: "token_truncate", cap: 1.2 } }, opts: { withSampling: true, samplingSigma: 0.4 } },
  { name: "IS token_mask", algo: "lpro", overrides: { importanceSampling: { mode: "token_mask", cap: 1.2 } }, opts: { withSampling: true, samplingSigma: 0.4 } },
  { name: "IS sequence_truncate", algo: "dapo", overrides: { importanceSampling: { mode: "sequence_truncate", cap: 1.5 } }, opts: { withSampling: true, samplingSigma: 0.4 } },
  { name: "IS sequence_mask, sequence ratio", algo: "gspo", overrides: { importanceSampling: { mode: "sequence_mask", cap: 1.5 } }, opts: { ...GSPO_OPTS, samplingSigma: 0.4 } },
  { name: "dual clip c = 1.3", algo: "grpo", overrides: { clip: { dualClip: 1.3 } }, opts: { withSampling: true, deltaSigma: 0.5 }, expectClipping: true },
  { name: "two-sided clip δ = 1.25", algo: "dapo", overrides: { clip: { delta: 1.25 } }, opts: { withSampling: true, deltaSigma: 0.5 }, expectClipping: true },
  { name: "log-ratio clamp 0.4", algo: "grpo", overrides: { ratio: { logRatioClamp: 0.4 } }, opts: { withSampling: true, deltaSigma: 0.5 } },
  { name: "sequence ratio with log-ratio clamp", algo: "gspo", overrides: { ratio: { logRatioClamp: 5e-4 } }, opts: GSPO_OPTS },
  { name: "packed layout (seqIds)", algo: "grpo", opts: { withSampling: true, packed: true }, expectClipping: true },
  { name: "packed layout, sequence ratio", algo: "gspo", opts: { ...GSPO_OPTS, packed: true } },
  { name: "packed layout, global token-mean", algo: "dapo", opts: { withSampling: true, packed: true } },
  { name: "sequence ratio, per-token advantages (GSPO-token style A)", algo: "gspo", opts: { ...GSPO_OPTS, tokenAdvantages: true } },
  { name: "sequence ratio with token-mean aggregation", algo: "gspo", overrides: { aggregation: { mode: "token-mean" } }, opts: GSPO_OPTS },
  {
    name: "overlong filter masks truncated sequences",
    algo: "dapo",
    overrides: { overlong: { filter: true } },
    extra: (b, R) => (b.truncated = Array.from({ length: b.numSequences }, () => R.bool(0.3))),
  },
  { name: "PPO without value clipping", algo: "ppo", overrides: { value: { clip: null } } },
  { name: "PPO with KL in loss too", algo: "ppo", overrides: { kl: { placement: "loss", estimator: "k3", beta: 0.05 } } },
  { name: "NaN in padded positions", algo: "grpo", opts: { withSampling: true, nanPadding: true } },
  { name: "NaN in padded positions, PPO", algo: "ppo", opts: { withSampling: true, nanPadding: true } },
];

describe(`finite-difference gradient checks (NR_SEED=${seed})`, () => {
  for (const sc of [...presetScenarios, ...variantScenarios]) {
    it(sc.name, () => {
      const cfg = preset(sc.algo, sc.overrides);
      // Two batches per scenario, each from its own stream derived from the run seed.
      let clipped = 0;
      for (let k = 0; k < 2; k++) {
        const R = rand((seed ^ hash(sc.name + k)) >>> 0);
        const b = drawBatch(R, cfg, sc.opts ?? BASE_OPTS, sc.extra ? (bb) => sc.extra!(bb, R) : undefined);
        const st = gradCheck(b, cfg);
        expect(st.checked).toBeGreaterThan(40);
        clipped += st.clipped;
      }
      if (sc.expectClipping) expect(clipped).toBeGreaterThan(0);
    });
  }
});

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}
