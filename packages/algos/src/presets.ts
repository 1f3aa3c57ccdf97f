// Presets (docs/algorithms.md §3) built from composable parts, deep-merged overrides and validation.
import type { AlgoConfig, AlgoName, AlgoOverrides } from "./types.js";

export const ALGO_NAMES: readonly AlgoName[] = ["grpo", "dr_grpo", "ppo", "gspo", "dapo", "grpo_lead", "lpro"];

// ---------------------------------------------------------------------------------------------------------------
// Schema: one entry per key, used to reject unknown keys and out-of-range values with a message naming the key
// and the allowed values.
type Spec =
  | { kind: "enum"; values: readonly string[] }
  | {
      kind: "number";
      min?: number;
      max?: number;
      minOpen?: boolean;
      maxOpen?: boolean;
      integer?: boolean;
      nullable?: boolean;
    }
  | { kind: "boolean" }
  | { kind: "object"; fields: Record<string, Spec> };

const num = (o: Omit<Extract<Spec, { kind: "number" }>, "kind"> = {}): Spec => ({ kind: "number", ...o });
const en = (...values: string[]): Spec => ({ kind: "enum", values });
const bool: Spec = { kind: "boolean" };
const obj = (fields: Record<string, Spec>): Spec => ({ kind: "object", fields });

const SCHEMA: Spec = obj({
  name: en(...ALGO_NAMES),
  reward: obj({ mapping: en("raw", "signed") }),
  advantage: obj({
    estimator: en("group", "gae", "lead", "lpro"),
    scale: en("group", "batch", "none"),
    std: en("bessel", "population"),
    eps: num({ min: 0 }),
    zeroStdTol: num({ min: 0 }),
  }),
  gae: obj({
    gamma: num({ min: 0, max: 1 }),
    lambda: num({ min: 0, max: 1 }),
    whiten: bool,
    whitenEps: num({ min: 0, minOpen: true }),
    missingEosPenalty: num({ nullable: true }),
  }),
  lead: obj({
    variant: en("paper", "simple"),
    alpha: num({ min: 0 }),
    A: num({ min: 0 }),
    B: num({ min: 0 }),
    x0: num(),
    k: num(),
    wrongReward: num(),
    unformattedReward: num(),
    lengthRewardMinTokens: num({ min: 0 }),
  }),
  lpro: obj({ lambda: num({ min: 0 }), formatWeight: num({ min: 0 }), gateLengthOnZeroStd: bool }),
  ratio: obj({ level: en("token", "sequence"), logRatioClamp: num({ min: 0, minOpen: true, nullable: true }) }),
  clip: obj({
    epsLow: num({ min: 0, max: 1, maxOpen: true }),
    epsHigh: num({ min: 0 }),
    dualClip: num({ min: 1, minOpen: true, nullable: true }),
    delta: num({ min: 1, minOpen: true, nullable: true }),
  }),
  aggregation: obj({
    mode: en("seq-mean-token-mean", "token-mean", "token-mean-local", "constant", "mean-length", "seq-mean-token-sum"),
    maxLength: num({ min: 1, integer: true }),
  }),
  kl: obj({
    placement: en("loss", "reward", "none"),
    estimator: en("k1", "k2", "k3"),
    beta: num({ min: 0 }),
    clampLogRatio: num({ min: 0, minOpen: true, nullable: true }),
    clampValue: num({ min: 0, minOpen: true, nullable: true }),
    adaptive: obj({ enabled: bool, target: num({ min: 0, minOpen: true }), horizon: num({ min: 0, minOpen: true }) }),
  }),
  entropy: obj({
    coef: num({ min: 0 }),
    topQuantile: num({ min: 0, max: 1, minOpen: true }),
    adaptive: obj({
      enabled: bool,
      target: num({ min: 0 }),
      delta: num({ min: 0 }),
      min: num({ min: 0 }),
      max: num({ min: 0 }),
    }),
  }),
  importanceSampling: obj({
    mode: en("none", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"),
    cap: num({ min: 0, minOpen: true }),
  }),
  value: obj({ coef: num({ min: 0 }), clip: num({ min: 0, minOpen: true, nullable: true }) }),
  overlong: obj({
    softPenalty: bool,
    maxLength: num({ min: 1, integer: true }),
    cacheLength: num({ min: 0, integer: true }),
    factor: num({ min: 0 }),
    filter: bool,
  }),
  dynamicSampling: obj({
    enabled: bool,
    metric: en("correct", "reward"),
    stdThreshold: num({ min: 0 }),
    maxRounds: num({ min: 1, integer: true }),
    onCapReached: en("partial", "error"),
  }),
});

function describe(spec: Spec): string {
  switch (spec.kind) {
    case "enum":
      return spec.values.map((v) => JSON.stringify(v)).join(" | ");
    case "boolean":
      return "true | false";
    case "object":
      return `an object with keys ${Object.keys(spec.fields).join(", ")}`;
    case "number": {
      const lo = spec.min === undefined ? "" : `${spec.minOpen ? ">" : "≥"} ${spec.min}`;
      const hi = spec.max === undefined ? "" : `${spec.maxOpen ? "<" : "≤"} ${spec.max}`;
      const range = [lo, hi].filter(Boolean).join(" and ");
      const base = `${spec.integer ? "an integer" : "a finite number"}${range ? " " + range : ""}`;
      return spec.nullable ? `null or ${base}` : base;
    }
  }
}

function checkValue(spec: Spec, value: unknown, path: string, errors: string[], partial: boolean): void {
  const bad = (): void => {
    errors.push(`${path} = ${fmt(value)} (allowed: ${describe(spec)})`);
  };
  switch (spec.kind) {
    case "enum":
      if (typeof value !== "string" || !spec.values.includes(value)) bad();
      return;
    case "boolean":
      if (typeof value !== "boolean") bad();
      return;
    case "number":
      if (value === null) {
        if (!spec.nullable) bad();
        return;
      }
      if (typeof value !== "number" || !Number.isFinite(value)) return bad();
      if (spec.integer && !Number.isInteger(value)) return bad();
      if (spec.min !== undefined && (spec.minOpen ? value <= spec.min : value < spec.min)) return bad();
      if (spec.max !== undefined && (spec.maxOpen ? value >= spec.max : value > spec.max)) return bad();
      return;
    case "object": {
      if (value === null || typeof value !== "object" || Array.isArray(value)) return bad();
      const rec = value as Record<string, unknown>;
      for (const key of Object.keys(rec)) {
        if (!(key in spec.fields)) {
          errors.push(`unknown key ${path ? path + "." : ""}${key} (allowed keys${path ? " of " + path : ""}: ${Object.keys(spec.fields).join(", ")})`);
        }
      }
      for (const [key, sub] of Object.entries(spec.fields)) {
        const p = path ? `${path}.${key}` : key;
        if (!(key in rec) || rec[key] === undefined) {
          if (!partial) errors.push(`${p} is missing (allowed: ${describe(sub)})`);
          continue;
        }
        checkValue(sub, rec[key], p, errors, partial);
      }
    }
  }
}

function fmt(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number" || typeof v === "boolean" || v === null || v === undefined) return String(v);
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

/**
 * Throws an Error listing every invalid key of a resolved config (names the key and the allowed values). `keyPrefix`
 * names where the config sits in a caller's own settings (e.g. "rl.algoConfig"): every key in the messages starts with it.
 */
export function validateConfig(config: AlgoConfig, keyPrefix = ""): AlgoConfig {
  const errors: string[] = [];
  checkValue(SCHEMA, config, keyPrefix, errors, false);
  if (errors.length === 0) crossChecks(config, errors, keyPrefix);
  if (errors.length > 0) {
    throw new Error(`@nr/algos: invalid config${config && typeof config === "object" && "name" in config ? ` for '${String(config.name)}'` : ""}:\n  - ${errors.join("\n  - ")}`);
  }
  return config;
}

// Configs that prepareConfig validated and froze: they cannot change afterwards, so policyLoss need not check them again.
const PREPARED = new WeakSet<object>();

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === "object") {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

/**
 * A validated, deep-frozen copy of `config`, validated once: hand it to every policyLoss call of a run and they
 * skip the schema walk (a config that did not come from here is validated on each call).
 */
export function prepareConfig(config: AlgoConfig, keyPrefix = ""): Readonly<AlgoConfig> {
  if (config && typeof config === "object" && PREPARED.has(config)) return config;
  const copy = deepFreeze(structuredClone(validateConfig(config, keyPrefix)));
  PREPARED.add(copy);
  return copy;
}

/** `config` itself once it is known valid: prepared configs as they are, any other after validateConfig. */
export function validatedConfig(config: AlgoConfig): AlgoConfig {
  return config && typeof config === "object" && PREPARED.has(config) ? config : validateConfig(config);
}

function crossChecks(c: AlgoConfig, errors: string[], keyPrefix: string): void {
  const before = errors.length;
  const est = c.advantage.estimator;
  if ((est === "lead" || est === "lpro") && c.advantage.scale !== "group") {
    errors.push(`advantage.scale = "${c.advantage.scale}" with advantage.estimator "${est}" (allowed: "group")`);
  }
  if (c.kl.placement === "reward" && est !== "gae") {
    errors.push(`kl.placement = "reward" needs per-token rewards, i.e. advantage.estimator "gae" (allowed for estimator "${est}": "loss" | "none")`);
  }
  if (c.overlong.cacheLength > c.overlong.maxLength) {
    errors.push(`overlong.cacheLength = ${c.overlong.cacheLength} exceeds overlong.maxLength = ${c.overlong.maxLength} (allowed: 0 ≤ cacheLength ≤ maxLength)`);
  }
  if (c.entropy.adaptive.min > c.entropy.adaptive.max) {
    errors.push(`entropy.adaptive.min = ${c.entropy.adaptive.min} > entropy.adaptive.max = ${c.entropy.adaptive.max} (allowed: min ≤ max)`);
  }
  if (c.lead.B < c.lead.A) {
    errors.push(`lead.B = ${c.lead.B} < lead.A = ${c.lead.A} (allowed: B ≥ A, w decreases from B to A)`);
  }
  // Each message starts with its key; the caller's prefix goes in front of it.
  if (keyPrefix) for (let i = before; i < errors.length; i++) errors[i] = `${keyPrefix}.${errors[i]}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Defaults

function base(name: AlgoName): AlgoConfig {
  return {
    name,
    reward: { mapping: "raw" },
    advantage: { estimator: "group", scale: "group", std: "bessel", eps: 1e-6, zeroStdTol: 1e-6 },
    gae: { gamma: 1.0, lambda: 0.95, whiten: true, whitenEps: 1e-8, missingEosPenalty: null },
    lead: {
      variant: "paper",
      alpha: 0.05,
      A: 0.4,
      B: 1.5,
      x0: 0.75,
      k: 10,
      wrongReward: -1,
      unformattedReward: 0,
      lengthRewardMinTokens: 0,
    },
    lpro: { lambda: 0.1, formatWeight: 0.1, gateLengthOnZeroStd: false },
    ratio: { level: "token", logRatioClamp: 20 },
    clip: { epsLow: 0.2, epsHigh: 0.2, dualClip: null, delta: null },
    aggregation: { mode: "seq-mean-token-mean", maxLength: 3000 },
    kl: {
      placement: "loss",
      estimator: "k3",
      beta: 0,
      clampLogRatio: 20,
      clampValue: 10,
      adaptive: { enabled: false, target: 0.1, horizon: 10000 },
    },
    entropy: { coef: 0, topQuantile: 1, adaptive: { enabled: false, target: 0.2, delta: 0.005, min: 0, max: 1 } },
    importanceSampling: { mode: "sequence_mask", cap: 3.0 },
    value: { coef: 0, clip: null },
    overlong: { softPenalty: false, maxLength: 20480, cacheLength: 4096, factor: 1, filter: false },
    dynamicSampling: { enabled: false, metric: "correct", stdThreshold: 1e-6, maxRounds: 10, onCapReached: "partial" },
  };
}

/** Per-preset differences from the common base (docs/algorithms.md §2–§4). */
const PRESET_DIFFS: Record<AlgoName, AlgoOverrides> = {
  // DeepSeekMath: group-normalised advantage, token ratio, clip 0.2, seq-mean-token-mean, k3 KL in loss β = 0.04.
  grpo: { kl: { placement: "loss", estimator: "k3", beta: 0.04 } },
  // Dr. GRPO: no σ scaling, constant normaliser N·L_max with L_max = 3000 (understand-r1-zero 1.5B recipe), β = 0.
  dr_grpo: { advantage: { scale: "none" }, aggregation: { mode: "constant", maxLength: 3000 } },
  // PPO: GAE(γ=1, λ=0.95) + whitening, clip 0.2 + dual-clip 3, token-mean, k1 KL in reward β = 0.05, c_v 0.1, ε_v 0.2.
  ppo: {
    advantage: { estimator: "gae" },
    gae: { gamma: 1.0, lambda: 0.95, whiten: true },
    clip: { epsLow: 0.2, epsHigh: 0.2, dualClip: 3.0 },
    aggregation: { mode: "token-mean" },
    kl: { placement: "reward", estimator: "k1", beta: 0.05 },
    value: { coef: 0.1, clip: 0.2 },
  },
  // GSPO: sequence (geometric-mean) ratio, clip 3e-4/4e-4, mean over sequences, β = 0, log-ratio clamp 10 (veRL).
  gspo: {
    ratio: { level: "sequence", logRatioClamp: 10 },
    clip: { epsLow: 3e-4, epsHigh: 4e-4 },
    aggregation: { mode: "seq-mean-token-mean" },
  },
  // DAPO: R = ±1, clip-higher 0.2/0.28, global token-mean, β = 0, dynamic sampling, soft overlong 20480/4096.
  dapo: {
    reward: { mapping: "signed" },
    clip: { epsLow: 0.2, epsHigh: 0.28 },
    aggregation: { mode: "token-mean" },
    overlong: { softPenalty: true, maxLength: 20480, cacheLength: 4096, factor: 1, filter: false },
    dynamicSampling: { enabled: true, metric: "correct", maxRounds: 10 },
  },
  // GRPO-LEAD (paper variant): exp(−αz) / −1 rewards, difficulty-weighted group advantage, GRPO objective, β = 0;
  // the reference drops all-same groups without refill (rejection_sample) → dynamic sampling with 1 round.
  grpo_lead: {
    advantage: { estimator: "lead" },
    dynamicSampling: { enabled: true, metric: "correct", maxRounds: 1 },
  },
  // LPRO: r = correct + 0.1·format, A = z(r) − 0.1·z(L), clip 0.2/0.28, global token-mean, β = 0.
  lpro: {
    advantage: { estimator: "lpro" },
    clip: { epsLow: 0.2, epsHigh: 0.28 },
    aggregation: { mode: "token-mean" },
  },
};

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

function deepMerge<T>(target: T, src: unknown): T {
  if (!isPlainObject(src)) return target;
  const out: Record<string, unknown> = { ...(target as Record<string, unknown>) };
  for (const [k, v] of Object.entries(src)) {
    if (v === undefined) continue;
    const cur = out[k];
    out[k] = isPlainObject(v) && isPlainObject(cur) ? deepMerge(cur, v) : v;
  }
  return out as T;
}

/**
 * Resolved, validated configuration of a preset with optional deep-partial overrides.
 * `preset("dapo", { overlong: { maxLength: 3072, cacheLength: 512 } })`. `keyPrefix`: see {@link validateConfig}.
 */
export function preset(name: AlgoName, overrides?: AlgoOverrides, keyPrefix = ""): AlgoConfig {
  if (!ALGO_NAMES.includes(name)) {
    throw new Error(`@nr/algos: unknown preset name = ${fmt(name)} (allowed: ${ALGO_NAMES.map((n) => `"${n}"`).join(" | ")})`);
  }
  if (overrides !== undefined && !isPlainObject(overrides)) {
    throw new Error(`@nr/algos: overrides for '${name}' must be an object (got ${fmt(overrides)})`);
  }
  if (overrides?.name !== undefined && overrides.name !== name) {
    throw new Error(`@nr/algos: ${keyPrefix || "overrides"}.name = "${String(overrides.name)}" conflicts with preset "${name}" (allowed: "${name}")`);
  }
  // Reject unknown keys / bad values in the overrides first, so the message points at what the caller wrote.
  const errors: string[] = [];
  if (overrides) checkValue(SCHEMA, overrides, keyPrefix, errors, true);
  if (errors.length > 0) throw new Error(`@nr/algos: invalid overrides for '${name}':\n  - ${errors.join("\n  - ")}`);

  let cfg = deepMerge(base(name), PRESET_DIFFS[name]);
  // The brief's "simple" GRPO-LEAD uses exp(−0.1·|z|): its own α default unless the caller sets α.
  if (overrides?.lead?.variant === "simple" && overrides.lead.alpha === undefined) {
    cfg = deepMerge(cfg, { lead: { alpha: 0.1 } });
  }
  cfg = deepMerge(cfg, overrides);
  cfg.name = name;
  return validateConfig(cfg, keyPrefix);
}

/** Resolve `config` for `algo`: a full config is validated as is, a partial one is merged onto the preset. */
export function resolveConfig(algo: AlgoName, config?: AlgoOverrides | AlgoConfig): AlgoConfig {
  return preset(algo, config as AlgoOverrides | undefined);
}
