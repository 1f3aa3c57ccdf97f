// `nr train --resume runs/NAME --key value`: which settings may change in the middle of a run. Step counts, eval and
// checkpoint cadence, the NaN guard and the logging sinks can (nothing already trained depends on them), and so can any
// key that makes the saved config fail validation (a run saved with a setting that later fails can be rescued without
// editing config.json by hand). Everything else is refused by name. Accepted changes are recorded in config.json
// under `resumes`, with the step they took effect at.
import { applyOverrides, ConfigError, configKeys, validateConfig, type Override, type TrainConfig, type ValidateOptions } from "./config.js";

/** Keys (and the keys under them) that may change on --resume. */
export const RESUME_SAFE_KEYS = ["description", "sft.steps", "sft.epochs", "rl.steps", "eval.every", "checkpoint.every", "checkpoint.keepLast", "guards.maxBadSteps", "output.wandb", "output.tensorboard", "data.skipBadRows", "rl.rollout.servers", "rl.rollout.timeoutS"] as const;

export interface ResumeChange {
  key: string;
  from: unknown;
  to: unknown;
}

/** One --resume that changed settings: the optimizer step it took effect at (the checkpoint's), when, and what. */
export interface ResumeRecord {
  step: number;
  at: string;
  changes: ResumeChange[];
}

const valueAt = (obj: unknown, key: string): unknown => key.split(".").reduce<unknown>((o, k) => (o !== null && typeof o === "object" ? (o as Record<string, unknown>)[k] : undefined), obj);
const covers = (parent: string, key: string) => key === parent || key.startsWith(`${parent}.`);

/** The config keys a list of validation problems names (a problem may name several, e.g. rl.lengthStages and rl.maxNewTokens). */
export function keysNamedIn(problems: readonly string[]): Set<string> {
  const keys = configKeys();
  const named = new Set<string>();
  for (const p of problems) for (const k of keys) if (new RegExp(`(^|[^\\w.])${k.replace(/\./g, "\\.")}(?![\\w]|\\.\\w)`).test(p)) named.add(k);
  return named;
}

/** The keys an override list changes (its own keys, plus either/or partners it removes, e.g. sft.epochs for sft.steps). */
function changedKeys(before: Record<string, unknown>, after: Record<string, unknown>, overrides: readonly Override[]): ResumeChange[] {
  const keys = new Set(overrides.map(([k]) => k));
  for (const k of [...keys]) {
    const parent = k.split(".").slice(0, -1).join(".");
    const siblings = valueAt(before, parent);
    if (siblings && typeof siblings === "object") for (const s of Object.keys(siblings)) if (valueAt(after, `${parent}.${s}`) === undefined) keys.add(`${parent}.${s}`);
  }
  return [...keys].map((key) => ({ key, from: valueAt(before, key), to: valueAt(after, key) })).filter((c) => JSON.stringify(c.from) !== JSON.stringify(c.to));
}

/**
 * The config to resume with: the saved one, with `overrides` applied when each is safe mid-run or fixes a validation
 * problem of the saved config; throws a ConfigError naming every refused key and every remaining problem.
 */
export function resumeConfig(saved: TrainConfig, overrides: readonly Override[], step: number, opts: ValidateOptions = {}): TrainConfig {
  const { resumes = [], ...plain } = saved as TrainConfig & { resumes?: ResumeRecord[] };
  let savedProblems: string[] = [];
  try {
    validateConfig(plain, opts);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    savedProblems = err.problems;
  }
  const fixable = keysNamedIn(savedProblems);
  const next = applyOverrides(plain as unknown as Record<string, unknown>, overrides);
  const changes = changedKeys(plain as unknown as Record<string, unknown>, next, overrides);
  const refused = changes.filter((c) => !RESUME_SAFE_KEYS.some((s) => covers(s, c.key)) && ![...fixable].some((f) => covers(f, c.key)));
  if (refused.length) {
    throw new ConfigError(
      refused.map((c) => `--${c.key} ${JSON.stringify(c.to)}: ${c.key} cannot change on --resume (the run so far was trained with ${JSON.stringify(c.from)}); keys that can: ${RESUME_SAFE_KEYS.join(", ")}, and keys the saved config fails validation on. Start a new run (--name NEW) to change it`),
      "--resume",
    );
  }
  let config: TrainConfig;
  try {
    config = validateConfig(next, opts);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const hint = savedProblems.length ? " (pass the fixed values with --resume, e.g. --rl.temperature 1; they are recorded in config.json)" : "";
    throw new ConfigError(err.problems.map((p) => `${p}${hint}`), "the run's config.json");
  }
  const history = changes.length ? [...resumes, { step, at: new Date().toISOString(), changes }] : resumes;
  return history.length ? ({ ...config, resumes: history } as TrainConfig) : config;
}
