// Advantage estimators: group-normalised (GRPO/GSPO/DAPO/Dr. GRPO), GRPO-LEAD, LPRO, and GAE (PPO).
import { klValueAndGrad } from "./kl.js";
import { resolveConfig, validateConfig } from "./presets.js";
import { correctness, leadWeight, scorableIndices, shapedRewards, checkGroup } from "./shaping.js";
import { allEqual, mean, std, zScores } from "./stats.js";
import type { AlgoConfig, AlgoName, AlgoOverrides, CompletionGroup, Metrics, NumArray } from "./types.js";

// ---------------------------------------------------------------------------------------------------------------
// Group estimators

interface GroupOutcome {
  advantages: Float64Array;
  shaped: Float64Array;
  zeroStd: boolean;
}

/** Advantages of one group under a resolved config (estimators group | lead | lpro). */
function groupOutcome(group: CompletionGroup, cfg: AlgoConfig, batchStd?: number): GroupOutcome {
  const G = group.rewards.length;
  const shaped = shapedRewards(group, cfg);
  const idx: number[] = [];
  for (let i = 0; i < G; i++) if (Number.isFinite(shaped[i])) idx.push(i);
  const Rv = idx.map((i) => shaped[i]);
  const { std: conv, eps, scale, zeroStdTol } = cfg.advantage;
  const sigma = std(Rv, conv);
  const zeroStd = allEqual(Rv) || sigma <= zeroStdTol;
  const A = new Float64Array(G);

  // Centred (and optionally σ-scaled) shaped reward over the scorable completions.
  let term: Float64Array;
  if (scale === "group") {
    term = zScores(Rv, conv, eps);
  } else {
    term = new Float64Array(Rv.length);
    if (!allEqual(Rv)) {
      const mu = mean(Rv);
      const denom = scale === "batch" ? (batchStd ?? sigma) + eps : 1;
      if (denom !== 0) for (let j = 0; j < Rv.length; j++) term[j] = (Rv[j] - mu) / denom;
    }
  }

  switch (cfg.advantage.estimator) {
    case "group":
      idx.forEach((i, j) => (A[i] = term[j]));
      break;
    case "lpro": {
      const gated = cfg.lpro.gateLengthOnZeroStd && zeroStd;
      const zL = gated ? new Float64Array(idx.length) : zScores(idx.map((i) => group.lengths[i]), conv, eps);
      idx.forEach((i, j) => (A[i] = term[j] - cfg.lpro.lambda * zL[j]));
      break;
    }
    case "lead": {
      const ok = correctness(group);
      const solved = idx.filter((i) => ok[i]).length;
      const rho = idx.length > 0 ? solved / idx.length : 0;
      if (cfg.lead.variant === "paper") {
        const wPos = leadWeight(rho, cfg.lead);
        const wNeg = leadWeight(1 - rho, cfg.lead);
        idx.forEach((i, j) => (A[i] = term[j] > 0 ? term[j] * wPos : term[j] * wNeg));
      } else {
        idx.forEach((i, j) => (A[i] = term[j] * (2 - rho)));
      }
      break;
    }
    case "gae":
      throw new Error(`@nr/algos: advantage.estimator "gae" gives per-token advantages: use computeAdvantages() or gae()`);
  }
  return { advantages: A, shaped, zeroStd };
}

/**
 * One advantage per completion of one prompt. `rewards` is the verifier's base reward; presets that shape the
 * reward themselves (grpo_lead, lpro) use `correct`, `formatOk` and `lengths`. NaN rewards are unscorable:
 * excluded from the group statistics, advantage 0. `config` may be a full config or deep-partial overrides of
 * the preset. PPO's advantages are per token: use `computeAdvantages` (or `gae`) for "ppo".
 */
export function groupAdvantages(
  algo: AlgoName,
  group: { rewards: number[]; lengths: number[]; correct?: boolean[]; formatOk?: boolean[]; truncated?: boolean[] },
  config?: AlgoOverrides | AlgoConfig,
): number[] {
  const cfg = resolveConfig(algo, config);
  if (cfg.advantage.estimator === "gae") {
    throw new Error(`groupAdvantages: preset "${algo}" uses advantage.estimator "gae" (per-token advantages); call computeAdvantages(groups, config) with per-token values, or gae()`);
  }
  return Array.from(groupOutcome(group, cfg).advantages);
}

// ---------------------------------------------------------------------------------------------------------------
// GAE

/**
 * Generalised advantage estimation over one sequence (V after the last token := 0):
 * δ_t = r_t + γ V_{t+1} − V_t, Â_t = δ_t + γλ Â_{t+1}, returns G_t = Â_t + V_t. No whitening.
 */
export function gae(rewards: NumArray, values: NumArray, gamma: number, lambda: number): { advantages: number[]; returns: number[] } {
  if (rewards.length !== values.length) {
    throw new Error(`gae: rewards has ${rewards.length} entries, values has ${values.length} (allowed: equal lengths)`);
  }
  checkUnit("gae: gamma", gamma);
  checkUnit("gae: lambda", lambda);
  const n = rewards.length;
  const adv = new Array<number>(n);
  const ret = new Array<number>(n);
  let next = 0;
  let lastAdv = 0;
  for (let t = n - 1; t >= 0; t--) {
    const delta = rewards[t] + gamma * next - values[t];
    lastAdv = delta + gamma * lambda * lastAdv;
    adv[t] = lastAdv;
    ret[t] = lastAdv + values[t];
    next = values[t];
  }
  return { advantages: adv, returns: ret };
}

function checkUnit(name: string, x: number): void {
  if (!(Number.isFinite(x) && x >= 0 && x <= 1)) throw new Error(`${name} = ${x} (allowed: a number in [0, 1])`);
}

/**
 * GAE over per-token arrays with a mask (padded [N][T] layout, or packed with `seqIds`). Masked positions are
 * skipped: the recursion links each valid token to the next valid token of its sequence (as veRL keeps
 * `nextvalues`/`lastgaelam` over masked positions). Masked positions get advantage 0 and return 0.
 */
export function gaeMasked(
  rewards: NumArray,
  values: NumArray,
  mask: NumArray,
  numSequences: number,
  gamma: number,
  lambda: number,
  seqIds?: ArrayLike<number>,
): { advantages: Float64Array; returns: Float64Array } {
  const M = mask.length;
  if (rewards.length !== M || values.length !== M) {
    throw new Error(`gaeMasked: rewards (${rewards.length}), values (${values.length}) and mask (${M}) must have equal lengths`);
  }
  checkUnit("gaeMasked: gamma", gamma);
  checkUnit("gaeMasked: lambda", lambda);
  const bySeq = tokensBySequence(M, numSequences, seqIds);
  const adv = new Float64Array(M);
  const ret = new Float64Array(M);
  for (const toks of bySeq) {
    let next = 0;
    let lastAdv = 0;
    for (let k = toks.length - 1; k >= 0; k--) {
      const t = toks[k];
      if (mask[t] === 0) continue;
      const delta = rewards[t] + gamma * next - values[t];
      lastAdv = delta + gamma * lambda * lastAdv;
      adv[t] = lastAdv;
      ret[t] = lastAdv + values[t];
      next = values[t];
    }
  }
  return { advantages: adv, returns: ret };
}

/** Token indices of each sequence, in order. Padded layout when `seqIds` is absent. */
export function tokensBySequence(M: number, numSequences: number, seqIds?: ArrayLike<number>): number[][] {
  if (!Number.isInteger(numSequences) || numSequences < 0) {
    throw new Error(`numSequences = ${numSequences} (allowed: an integer ≥ 0)`);
  }
  const out: number[][] = Array.from({ length: numSequences }, () => []);
  if (seqIds) {
    if (seqIds.length !== M) throw new Error(`seqIds has ${seqIds.length} entries, expected one per token (${M})`);
    for (let t = 0; t < M; t++) {
      const s = seqIds[t];
      if (!Number.isInteger(s) || s < 0 || s >= numSequences) {
        throw new Error(`seqIds[${t}] = ${s} (allowed: an integer in [0, numSequences = ${numSequences}))`);
      }
      out[s].push(t);
    }
  } else {
    if (numSequences === 0) {
      if (M !== 0) throw new Error(`numSequences = 0 but ${M} tokens were given`);
      return out;
    }
    if (M % numSequences !== 0) {
      throw new Error(`padded layout: ${M} tokens is not a multiple of numSequences = ${numSequences} (pass seqIds for a packed layout)`);
    }
    const T = M / numSequences;
    for (let s = 0; s < numSequences; s++) for (let j = 0; j < T; j++) out[s].push(s * T + j);
  }
  return out;
}

/**
 * Whitening over the valid tokens: (x − mean)/sqrt(var + eps) with Bessel variance (TRL/veRL `masked_whiten`);
 * var := 0 with fewer than 2 valid tokens. `shiftMean = false` keeps the mean. Masked positions are returned as 0.
 */
export function maskedWhiten(x: NumArray, mask: NumArray, eps = 1e-8, shiftMean = true): Float64Array {
  const vals: number[] = [];
  for (let t = 0; t < x.length; t++) if (mask[t] !== 0) vals.push(x[t]);
  const mu = mean(vals);
  const sd = std(vals, "bessel");
  const scale = 1 / Math.sqrt(sd * sd + eps);
  const out = new Float64Array(x.length);
  for (let t = 0; t < x.length; t++) {
    if (mask[t] === 0) continue;
    out[t] = shiftMean ? (x[t] - mu) * scale : (x[t] - mu) * scale + mu;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Batch API

export interface AdvantageResult {
  /** Per completion, groups concatenated in order. For GAE: the mean token advantage (for logging). */
  advantages: Float64Array;
  /** The reward each estimator normalised (shaped), per completion; NaN = unscorable. */
  rewards: Float64Array;
  /** Group index of each completion. */
  groupIndex: Int32Array;
  /** Mean completion length of each completion's group (for aggregation "mean-length"). */
  groupMeanLength: Float64Array;
  /** Whether each group's shaped rewards have (near) zero spread. */
  zeroStdGroups: boolean[];
  /** GAE only: per completion, per token (length = lengths[i]). */
  tokenAdvantages?: Float64Array[];
  /** GAE only: value targets per completion, per token. */
  returns?: Float64Array[];
  metrics: Metrics;
}

/**
 * Advantages of a batch of groups under a resolved config (from `preset()`).
 * Group estimators give one advantage per completion; `gae` gives per-token advantages and returns from
 * `values` (+ KL-in-reward from `oldLogp`/`refLogp` when kl.placement = "reward" and β > 0), whitened over the batch.
 * `opts.klCoef` overrides kl.beta (adaptive controller).
 */
export function computeAdvantages(groups: CompletionGroup[], config: AlgoConfig, opts: { klCoef?: number } = {}): AdvantageResult {
  const cfg = validateConfig(config);
  if (!Array.isArray(groups)) throw new Error("computeAdvantages: groups must be an array of completion groups");
  groups.forEach(checkGroup);
  const total = groups.reduce((s, g) => s + g.rewards.length, 0);
  const advantages = new Float64Array(total);
  const rewards = new Float64Array(total);
  const groupIndex = new Int32Array(total);
  const groupMeanLength = new Float64Array(total);
  const zeroStdGroups: boolean[] = [];
  const metrics: Metrics = {};

  let batchStd: number | undefined;
  if (cfg.advantage.scale === "batch" && cfg.advantage.estimator === "group") {
    const all: number[] = [];
    for (const g of groups) for (const r of shapedRewards(g, cfg)) if (Number.isFinite(r)) all.push(r);
    batchStd = std(all, cfg.advantage.std);
  }

  let off = 0;
  let tokenAdvantages: Float64Array[] | undefined;
  let returns: Float64Array[] | undefined;
  if (cfg.advantage.estimator === "gae") {
    const res = gaeGroups(groups, cfg, opts.klCoef ?? cfg.kl.beta, metrics);
    tokenAdvantages = res.tokenAdvantages;
    returns = res.returns;
  }

  let clipped = 0;
  let overlongSum = 0;
  groups.forEach((g, gi) => {
    const G = g.rewards.length;
    let shaped: Float64Array;
    let zero: boolean;
    if (cfg.advantage.estimator === "gae") {
      shaped = shapedRewards(g, cfg);
      const v = Array.from(shaped).filter(Number.isFinite);
      zero = allEqual(v) || std(v, cfg.advantage.std) <= cfg.advantage.zeroStdTol;
      for (let i = 0; i < G; i++) advantages[off + i] = mean(tokenAdvantages![off + i]);
    } else {
      const o = groupOutcome(g, cfg, batchStd);
      shaped = o.shaped;
      zero = o.zeroStd;
      advantages.set(o.advantages, off);
    }
    zeroStdGroups.push(zero);
    rewards.set(shaped, off);
    const sc = scorableIndices(g);
    const mL = mean(sc.map((i) => g.lengths[i]));
    for (let i = 0; i < G; i++) {
      groupIndex[off + i] = gi;
      groupMeanLength[off + i] = mL;
      if (g.truncated?.[i]) clipped++;
      if (cfg.overlong.softPenalty && Number.isFinite(g.lengths[i])) {
        const o = cfg.overlong;
        overlongSum += o.maxLength - o.cacheLength < g.lengths[i] ? 1 : 0;
      }
    }
    off += G;
  });

  const finite = Array.from(rewards).filter(Number.isFinite);
  const lengths = groups.flatMap((g) => g.lengths).filter(Number.isFinite);
  metrics["reward/mean"] = mean(finite);
  metrics["reward/std"] = std(finite, "bessel");
  metrics["frac_reward_zero_std"] = groups.length ? zeroStdGroups.filter(Boolean).length / groups.length : 0;
  const advVals = tokenAdvantages ? tokenAdvantages.flatMap((a) => Array.from(a)) : Array.from(advantages);
  metrics["advantages/mean"] = mean(advVals);
  metrics["advantages/std"] = std(advVals, "bessel");
  metrics["completions/mean_length"] = mean(lengths);
  metrics["completions/clipped_ratio"] = total ? clipped / total : 0;
  metrics["rewards/unscorable_frac"] = total ? (total - finite.length) / total : 0;
  if (cfg.overlong.softPenalty) metrics["overlong/in_buffer_frac"] = total ? overlongSum / total : 0;
  const result: AdvantageResult = { advantages, rewards, groupIndex, groupMeanLength, zeroStdGroups, metrics };
  if (tokenAdvantages) {
    result.tokenAdvantages = tokenAdvantages;
    result.returns = returns;
  }
  return result;
}

/**
 * Per-token rewards for PPO: r_t = −β·k(oldLogp_t, refLogp_t) on every generated token (when β > 0 and logps are
 * given), plus the sequence score at the last token.
 */
export function ppoTokenRewards(
  score: number,
  length: number,
  opts: { beta?: number; estimator?: AlgoConfig["kl"]["estimator"]; oldLogp?: NumArray; refLogp?: NumArray; clampLogRatio?: number | null; clampValue?: number | null } = {},
): Float64Array {
  const r = new Float64Array(length);
  const beta = opts.beta ?? 0;
  if (beta > 0) {
    if (!opts.oldLogp || !opts.refLogp) throw new Error("ppoTokenRewards: β > 0 needs oldLogp and refLogp");
    if (opts.oldLogp.length !== length || opts.refLogp.length !== length) {
      throw new Error(`ppoTokenRewards: oldLogp (${opts.oldLogp.length}) and refLogp (${opts.refLogp.length}) must have length ${length}`);
    }
    for (let t = 0; t < length; t++) {
      r[t] -= beta * klValueAndGrad(opts.estimator ?? "k1", opts.oldLogp[t], opts.refLogp[t], opts).value;
    }
  }
  if (length > 0) r[length - 1] += score;
  return r;
}

function gaeGroups(
  groups: CompletionGroup[],
  cfg: AlgoConfig,
  beta: number,
  metrics: Metrics,
): { tokenAdvantages: Float64Array[]; returns: Float64Array[] } {
  const useKl = cfg.kl.placement === "reward" && beta > 0;
  const tokenAdvantages: Float64Array[] = [];
  const returns: Float64Array[] = [];
  const scorableFlag: boolean[] = [];
  let klSum = 0;
  let klCount = 0;
  groups.forEach((g, gi) => {
    const shaped = shapedRewards(g, cfg);
    for (let i = 0; i < g.rewards.length; i++) {
      const n = g.lengths[i];
      if (!Number.isInteger(n)) throw new Error(`computeAdvantages (gae): groups[${gi}].lengths[${i}] = ${n} (allowed: an integer number of tokens)`);
      const V = g.values?.[i];
      if (!V) throw new Error(`computeAdvantages (gae): groups[${gi}].values[${i}] is missing (allowed: per-token values of length lengths[${i}] = ${n})`);
      if (V.length !== n) throw new Error(`computeAdvantages (gae): groups[${gi}].values[${i}] has ${V.length} entries (allowed: lengths[${i}] = ${n})`);
      if (!Number.isFinite(shaped[i])) {
        tokenAdvantages.push(new Float64Array(n));
        returns.push(Float64Array.from(V));
        scorableFlag.push(false);
        continue;
      }
      let score = shaped[i];
      if (cfg.gae.missingEosPenalty !== null && g.truncated?.[i]) score -= cfg.gae.missingEosPenalty;
      if (useKl && (!g.oldLogp?.[i] || !g.refLogp?.[i])) {
        throw new Error(`computeAdvantages (gae): kl.placement "reward" with β = ${beta} needs groups[${gi}].oldLogp[${i}] and refLogp[${i}] (or set kl.beta: 0)`);
      }
      const r = ppoTokenRewards(score, n, {
        beta: useKl ? beta : 0,
        estimator: cfg.kl.estimator,
        oldLogp: g.oldLogp?.[i],
        refLogp: g.refLogp?.[i],
        clampLogRatio: cfg.kl.clampLogRatio,
        clampValue: cfg.kl.clampValue,
      });
      if (useKl) {
        const clamps = { clampLogRatio: cfg.kl.clampLogRatio, clampValue: cfg.kl.clampValue };
        for (let t = 0; t < n; t++) klSum += klValueAndGrad(cfg.kl.estimator, g.oldLogp![i][t], g.refLogp![i][t], clamps).value;
        klCount += n;
      }
      const res = gae(r, V, cfg.gae.gamma, cfg.gae.lambda);
      tokenAdvantages.push(Float64Array.from(res.advantages));
      returns.push(Float64Array.from(res.returns));
      scorableFlag.push(true);
    }
  });
  if (cfg.gae.whiten) {
    const flat: number[] = [];
    tokenAdvantages.forEach((a, i) => {
      if (scorableFlag[i]) for (const x of a) flat.push(x);
    });
    const mu = mean(flat);
    const sd = std(flat, "bessel");
    const scale = 1 / Math.sqrt(sd * sd + cfg.gae.whitenEps);
    tokenAdvantages.forEach((a, i) => {
      if (!scorableFlag[i]) return;
      for (let t = 0; t < a.length; t++) a[t] = (a[t] - mu) * scale;
    });
  }
  if (useKl) metrics["kl_reward/mean"] = klCount ? klSum / klCount : 0;
  const rets = returns.flatMap((r) => Array.from(r));
  metrics["returns/mean"] = mean(rets);
  return { tokenAdvantages, returns };
}
