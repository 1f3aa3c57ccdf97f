// Dynamic sampling (DAPO group filter with refill; GRPO-LEAD rejection sampling = one round).
import { std } from "./stats.js";
import { correctness, scorableIndices } from "./shaping.js";
import type { AlgoConfig, CompletionGroup } from "./types.js";

type DynCfg = AlgoConfig["dynamicSampling"];

/**
 * True when a group carries a learning signal: the standard deviation (Bessel) of its metric over scorable
 * completions exceeds `stdThreshold` — a threshold, not `== 0`, so float noise in shaped/continuous rewards does not
 * let a degenerate group through. Groups with fewer than 2 scorable completions are never informative.
 */
export function isInformativeGroup(group: CompletionGroup, opts: Pick<DynCfg, "metric" | "stdThreshold">): boolean {
  const idx = scorableIndices(group);
  if (idx.length < 2) return false;
  let values: number[];
  if (opts.metric === "correct") {
    const ok = correctness(group);
    values = idx.map((i) => (ok[i] ? 1 : 0));
  } else {
    values = idx.map((i) => group.rewards[i]);
  }
  return std(values, "bessel") > opts.stdThreshold;
}

export interface GroupFilterResult<G> {
  kept: G[];
  keptIndices: number[];
  dropped: number;
  /** Fraction of groups without signal (TRL `frac_reward_zero_std` on the filter metric). */
  fracZeroStd: number;
}

/** Keeps the informative groups (or all of them when dynamic sampling is disabled). */
export function filterGroups<G extends CompletionGroup>(groups: G[], config: AlgoConfig): GroupFilterResult<G> {
  const keptIndices: number[] = [];
  let zero = 0;
  groups.forEach((g, i) => {
    const info = isInformativeGroup(g, config.dynamicSampling);
    if (!info) zero++;
    if (info || !config.dynamicSampling.enabled) keptIndices.push(i);
  });
  return {
    kept: keptIndices.map((i) => groups[i]),
    keptIndices,
    dropped: groups.length - keptIndices.length,
    fracZeroStd: groups.length ? zero / groups.length : 0,
  };
}

export interface DynamicSampleResult<G> {
  /** Exactly `targetGroups` groups when `complete`, fewer otherwise. */
  groups: G[];
  complete: boolean;
  rounds: number;
  generated: number;
  dropped: number;
}

/**
 * DAPO dynamic sampling: call `generateRound(round, stillNeeded)` (which samples and scores a batch of groups),
 * keep informative groups, repeat until `targetGroups` are collected (then truncate to exactly that many) or
 * `dynamicSampling.maxRounds` rounds have run. At the cap, `onCapReached: "partial"` returns what was collected with
 * `complete: false`; `"error"` throws. A round that returns no group ends sampling (the prompt source ran out), with
 * the same outcome as the cap. With dynamic sampling disabled, one round is run and nothing is filtered.
 */
export async function dynamicSample<G extends CompletionGroup>(
  generateRound: (round: number, stillNeeded: number) => G[] | Promise<G[]>,
  targetGroups: number,
  config: AlgoConfig,
): Promise<DynamicSampleResult<G>> {
  if (!Number.isInteger(targetGroups) || targetGroups < 1) {
    throw new Error(`dynamicSample: targetGroups = ${targetGroups} (allowed: an integer ≥ 1)`);
  }
  const ds = config.dynamicSampling;
  const maxRounds = ds.enabled ? ds.maxRounds : 1;
  const kept: G[] = [];
  let generated = 0;
  let dropped = 0;
  let rounds = 0;
  while (kept.length < targetGroups && rounds < maxRounds) {
    const batch = await generateRound(rounds, targetGroups - kept.length);
    rounds++;
    if (batch.length === 0) break; // the caller's prompt source has run out
    generated += batch.length;
    const f = filterGroups(batch, config);
    dropped += f.dropped;
    kept.push(...f.kept);
  }
  const complete = kept.length >= targetGroups;
  if (!complete && ds.enabled && ds.onCapReached === "error") {
    throw new Error(
      `dynamicSample: only ${kept.length}/${targetGroups} informative groups after ` +
        (rounds < maxRounds ? `${rounds} rounds, when the prompt source ran out ` : `dynamicSampling.maxRounds = ${ds.maxRounds} rounds `) +
        `(${dropped} of ${generated} groups had std ≤ ${ds.stdThreshold}); raise maxRounds or use onCapReached: "partial"`,
    );
  }
  return { groups: kept.slice(0, targetGroups), complete, rounds, generated, dropped };
}
