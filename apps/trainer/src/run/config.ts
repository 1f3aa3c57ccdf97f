// The training config: TS types, the embedded default (= configs/train/default.json), a schema that validates a
// config with messages naming the key and its allowed values, JSON presets from configs/train/<name>.json, and
// dotted CLI overrides (`--rl.algo lpro --rl.G 4`) coerced to the schema's types, with "did you mean" suggestions.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { modelDirContextProblems, samplingProblems } from "./rules.js";

// ---------------------------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------------------------

export const RL_ALGOS = ["grpo", "dr_grpo", "ppo", "gspo", "dapo", "grpo_lead", "lpro"] as const;
export type RlAlgo = (typeof RL_ALGOS)[number];
export const LR_SCHEDULES = ["constant", "linear", "cosine"] as const;
export type LrSchedule = (typeof LR_SCHEDULES)[number];
export const LORA_TARGET_NAMES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
export type LoraTargetName = (typeof LORA_TARGET_NAMES)[number];
export const BASE_QUANTS = ["none", "nf4"] as const;
export type BaseQuant = (typeof BASE_QUANTS)[number];
export const BASE_DTYPES = ["f32", "f16"] as const;
export type BaseDtype = (typeof BASE_DTYPES)[number];

/** Shape of the small Qwen2-architecture model the project generates when no checkpoint is given. */
export interface GeneratedModelConfig {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
}

/** Exactly one of `dir` (an HF checkpoint folder) or `generate` (make a small model). */
export interface ModelConfig {
  dir?: string;
  generate?: GeneratedModelConfig;
  /** Storage of the frozen base's linear weights: "nf4" (4-bit NormalFloat, QLoRA) or "none" (model.dtype). */
  quant: BaseQuant;
  /** Storage of an unquantised frozen base (linears, embedding, LM head): "f32", or "f16" (half the memory; needs shader-f16). */
  dtype: BaseDtype;
  /** NF4 only: quantise the absmax scales too (bitsandbytes `bnb_4bit_use_double_quant`). */
  doubleQuant: boolean;
}

/** Synthetic-task difficulty (ignored for a dataset path). */
export interface DifficultyConfig {
  minSteps: number;
  maxSteps: number;
  maxOperand: number;
  maxValue: number;
}

export interface DataConfig {
  /** "synthetic" (the project's math task) or a path to a JSONL/Parquet dataset (file or folder). */
  source: string;
  trainSize: number;
  evalSize: number;
  difficulty: DifficultyConfig;
  /** Prompt format: "qa" (`Q: … A: `, for the small generated models), "chat" (the tokenizer's chat template with
   * the chain-of-thought system prompt, for instruct checkpoints), or "auto" (chat for model.dir, qa otherwise). */
  prompt: PromptStyle;
  /** Skip malformed dataset rows (counted in the log) instead of stopping at the first with `file:line: reason`. Default false. */
  skipBadRows?: boolean;
}

export const PROMPT_STYLES = ["auto", "qa", "chat"] as const;
export type PromptStyle = (typeof PROMPT_STYLES)[number];

export interface LoraSection {
  r: number;
  alpha: number;
  dropout: number;
  /** Projection names; "all-linear" in a preset or override expands to all seven. */
  targets: LoraTargetName[];
}

export interface SftConfig {
  enabled: boolean;
  lr: number;
  batchSize: number;
  /** Exactly one of `epochs` (passes over data.trainSize examples) or `steps` (optimizer steps). */
  epochs?: number;
  steps?: number;
  /** Warm-up optimizer steps (linear from 0). */
  warmup: number;
  schedule: LrSchedule;
  gradAccum: number;
  /** Activation checkpointing per decoder layer. */
  checkpointing: boolean;
  maxSeqLen: number;
  /**
   * Share of SFT examples (0..1, picked by a seeded hash of the record id) whose target skips the worked solution:
   * an empty `<think>\n\n</think>` then the boxed answer, the "non-thinking" half of a hybrid-thinking cold start.
   * Default 0 (every example shows its work).
   */
  noThinkFraction?: number;
}

export interface RlConfig {
  enabled: boolean;
  algo: RlAlgo;
  /** Completions per prompt. */
  G: number;
  temperature: number;
  topP: number;
  maxNewTokens: number;
  ppoEpochs: number;
  miniBatches: number;
  lr: number;
  clipGradNorm: number;
  steps: number;
  promptsPerStep: number;
  /** DAPO-style: drop groups whose rewards are all equal (no signal) and refill. */
  dynamicSampling: boolean;
  /** Curriculum of max_new_tokens: stage k of n covers steps [k·steps/n, (k+1)·steps/n); [] = maxNewTokens throughout. */
  lengthStages: number[];
  /** Also advance to the next length stage early when a step's truncation rate exceeds this (0 = by step count only). */
  lengthStageTruncation: number;
  /** Completions per forward/backward pass (gradient accumulation inside a minibatch); 0 = the whole minibatch. */
  microBatchRows: number;
  /** Generate on OpenAI-compatible servers (vLLM, nr serve) instead of this GPU (apps/trainer/src/train/remote-rollout.ts). */
  rollout?: RolloutConfig;
}

export interface RolloutConfig {
  /** Base URLs of the servers, e.g. http://10.0.0.2:8000/v1 (each must load LoRA adapters at runtime). */
  servers: string[];
  /** Where each step's adapter is written for the servers to read (default: <run>/rollout-adapter). */
  adapterDir?: string;
  /** Bearer key for the servers (else NR_API_KEY); never written into the run folder. */
  apiKey?: string;
  /** Seconds a server may take to answer one request before its share goes to another server. */
  timeoutS: number;
  /** Truncated importance sampling: weight each token's policy gradient by min(π_trainer/π_sampler, cap); 0 = off. */
  tisCap: number;
}

export interface GuardConfig {
  /** Consecutive non-finite (skipped) steps before rolling back to the last good state. */
  maxBadSteps: number;
}

export interface EvalConfig {
  /** Evaluate every N RL steps (0 = only before and after). */
  every: number;
  n: number;
  temperature: number;
  maxNewTokens: number;
  /** Also sample this many completions per problem at `sampleTemperature` and report avg@n and pass@n (0 = greedy only). */
  samples: number;
  sampleTemperature: number;
}

export interface CheckpointConfig {
  /** Save every N optimizer steps (0 = only at the end). */
  every: number;
  keepLast: number;
}

export interface WandbConfig {
  project: string;
  /** W&B user or team (default: the API key's default entity). */
  entity?: string;
  baseUrl: string;
}

export interface OutputConfig {
  /** Parent folder of run folders: runs are written to `<dir>/<name>/`. */
  dir: string;
  wandb?: WandbConfig;
  /** Also write TensorBoard event files to `<run>/tensorboard/`. */
  tensorboard?: boolean;
}

export interface TrainConfig {
  name: string;
  description?: string;
  seed: number;
  model: ModelConfig;
  data: DataConfig;
  lora: LoraSection;
  sft: SftConfig;
  rl: RlConfig;
  eval: EvalConfig;
  checkpoint: CheckpointConfig;
  guards: GuardConfig;
  output: OutputConfig;
}

/** Shape filled in when a config asks for a generated model (`--model.generate.hidden 32` …) without all fields. */
export const GENERATED_MODEL_DEFAULTS: GeneratedModelConfig = { hidden: 64, layers: 3, heads: 4, kvHeads: 2, intermediate: 192 };

/** The embedded default (identical to configs/train/default.json; a test keeps them equal). */
export const DEFAULT_CONFIG: TrainConfig = {
  name: "default",
  description: "Embedded default: the committed tiny Qwen2-architecture model (models/nr-tiny-math, made by nr pretrain), the synthetic math task, a hybrid-thinking SFT cold start (3 in 4 targets without reasoning) then Dr. GRPO; minutes on a CPU.",
  seed: 0,
  model: { dir: "models/nr-tiny-math", quant: "none", dtype: "f32", doubleQuant: false },
  data: { source: "synthetic", trainSize: 2000, evalSize: 100, difficulty: { minSteps: 1, maxSteps: 1, maxOperand: 12, maxValue: 40 }, prompt: "qa" },
  lora: { r: 16, alpha: 32, dropout: 0, targets: [...LORA_TARGET_NAMES] },
  sft: { enabled: true, lr: 5e-4, batchSize: 16, steps: 40, warmup: 5, schedule: "cosine", gradAccum: 1, checkpointing: false, maxSeqLen: 160, noThinkFraction: 0.75 },
  rl: {
    enabled: true,
    algo: "dr_grpo",
    G: 8,
    temperature: 1.0,
    topP: 1.0,
    maxNewTokens: 40,
    ppoEpochs: 1,
    miniBatches: 1,
    lr: 2e-4,
    clipGradNorm: 1.0,
    steps: 30,
    promptsPerStep: 8,
    dynamicSampling: false,
    lengthStages: [],
    lengthStageTruncation: 0,
    microBatchRows: 0,
  },
  eval: { every: 15, n: 100, temperature: 0, maxNewTokens: 40, samples: 8, sampleTemperature: 1 },
  checkpoint: { every: 10, keepLast: 2 },
  guards: { maxBadSteps: 3 },
  output: { dir: "runs" },
};

// ---------------------------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------------------------

type Leaf =
  | { kind: "int"; min?: number; max?: number; doc?: string }
  | { kind: "number"; min?: number; max?: number; gt?: number; doc?: string }
  | { kind: "bool"; doc?: string }
  | { kind: "string"; doc?: string }
  | { kind: "enum"; values: readonly string[]; doc?: string }
  | { kind: "ints"; min?: number; doc?: string }
  | { kind: "strings"; values: readonly string[]; aliases?: Record<string, readonly string[]>; doc?: string }
  | { kind: "list"; doc?: string };

interface ObjNode {
  kind: "object";
  fields: Record<string, Node>;
  /** Fields that may be absent. */
  optional?: readonly string[];
  /** Groups of fields of which exactly one must be present (setting one by override removes the others). */
  oneOf?: readonly (readonly string[])[];
  /** Filled in under a present-but-partial optional object (e.g. `--output.wandb.project x`). */
  defaults?: Record<string, unknown>;
}
type Node = Leaf | ObjNode;

const int = (min?: number, max?: number): Leaf => ({ kind: "int", min, max });
const num = (o: { min?: number; max?: number; gt?: number } = {}): Leaf => ({ kind: "number", ...o });
const bool: Leaf = { kind: "bool" };
const str: Leaf = { kind: "string" };
const en = (...values: string[]): Leaf => ({ kind: "enum", values });

export const CONFIG_SCHEMA: ObjNode = {
  kind: "object",
  optional: ["description"],
  fields: {
    name: { kind: "string", doc: 'a plain folder name for runs/<name>: letters, digits, ".", "_" or "-" (not empty, no / or \\)' },
    description: str,
    seed: int(0),
    model: {
      kind: "object",
      optional: ["dir", "generate"],
      oneOf: [["dir", "generate"]],
      fields: {
        dir: str,
        generate: {
          kind: "object",
          defaults: { ...GENERATED_MODEL_DEFAULTS },
          fields: { hidden: int(8), layers: int(1), heads: int(1), kvHeads: int(1), intermediate: int(1) },
        },
        quant: en(...BASE_QUANTS),
        dtype: en(...BASE_DTYPES),
        doubleQuant: bool,
      },
    },
    data: {
      kind: "object",
      optional: ["skipBadRows"],
      fields: {
        source: str,
        trainSize: int(1),
        evalSize: int(1),
        difficulty: { kind: "object", fields: { minSteps: int(1), maxSteps: int(1), maxOperand: int(1), maxValue: int(1) } },
        prompt: en(...PROMPT_STYLES),
        skipBadRows: bool,
      },
    },
    lora: {
      kind: "object",
      fields: {
        r: int(1),
        alpha: num({ gt: 0 }),
        dropout: num({ min: 0, max: 0.99 }),
        targets: { kind: "strings", values: LORA_TARGET_NAMES, aliases: { "all-linear": LORA_TARGET_NAMES } },
      },
    },
    sft: {
      kind: "object",
      optional: ["epochs", "steps", "noThinkFraction"],
      oneOf: [["epochs", "steps"]],
      fields: {
        enabled: bool,
        lr: num({ gt: 0, max: 1 }),
        batchSize: int(1),
        epochs: num({ gt: 0 }),
        steps: int(1),
        warmup: int(0),
        schedule: en(...LR_SCHEDULES),
        gradAccum: int(1),
        checkpointing: bool,
        maxSeqLen: int(8),
        noThinkFraction: num({ min: 0, max: 1 }),
      },
    },
    rl: {
      kind: "object",
      optional: ["rollout"],
      fields: {
        enabled: bool,
        algo: en(...RL_ALGOS),
        G: int(1),
        temperature: num({ min: 0 }),
        topP: num({ gt: 0, max: 1 }),
        maxNewTokens: int(1),
        ppoEpochs: int(1),
        miniBatches: int(1),
        lr: num({ gt: 0, max: 1 }),
        clipGradNorm: num({ gt: 0 }),
        steps: int(0),
        promptsPerStep: int(1),
        dynamicSampling: bool,
        lengthStages: { kind: "ints", min: 1 },
        lengthStageTruncation: num({ min: 0, max: 1 }),
        microBatchRows: int(0),
        rollout: {
          kind: "object",
          optional: ["adapterDir", "apiKey"],
          defaults: { timeoutS: 600, tisCap: 0 },
          fields: { servers: { kind: "list", doc: "a list of server URLs, e.g. http://127.0.0.1:8000/v1,http://127.0.0.1:8001/v1" }, adapterDir: str, apiKey: str, timeoutS: num({ gt: 0 }), tisCap: num({ min: 0 }) },
        },
      },
    },
    eval: { kind: "object", fields: { every: int(0), n: int(1), temperature: num({ min: 0 }), maxNewTokens: int(1), samples: int(0), sampleTemperature: num({ min: 0 }) } },
    checkpoint: { kind: "object", fields: { every: int(0), keepLast: int(1) } },
    guards: { kind: "object", fields: { maxBadSteps: int(1) } },
    output: {
      kind: "object",
      optional: ["wandb", "tensorboard"],
      fields: {
        dir: str,
        wandb: { kind: "object", optional: ["entity"], defaults: { project: "nano-reasoner", baseUrl: "https://api.wandb.ai" }, fields: { project: str, entity: str, baseUrl: str } },
        tensorboard: bool,
      },
    },
  },
};

// ---------------------------------------------------------------------------------------------------------------
// Errors and suggestions
// ---------------------------------------------------------------------------------------------------------------

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[], context?: string) {
    const head = context ? `${context}: ` : "";
    super(problems.length === 1 ? head + problems[0] : `${head}${problems.length} config problems:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

function levenshtein(a: string, b: string): number {
  const m = a.length;
  const n = b.length;
  let prev = Array.from({ length: n + 1 }, (_, j) => j);
  for (let i = 1; i <= m; i++) {
    const cur = [i];
    for (let j = 1; j <= n; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[n];
}

/** The candidate closest to `word` (case-insensitive edit distance; also matches on the last path segment), if close enough. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  const w = word.toLowerCase();
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const cl = c.toLowerCase();
    const last = cl.slice(cl.lastIndexOf(".") + 1);
    const wl = w.slice(w.lastIndexOf(".") + 1);
    const d = Math.min(levenshtein(w, cl), cl.includes(".") && wl === last ? 1 : Infinity, cl.endsWith(`.${w}`) ? 1 : Infinity);
    if (d < bestD) [best, bestD] = [c, d];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(w.length / 3)) ? best : undefined;
}

function nodeAt(path: string[]): Node | undefined {
  let node: Node = CONFIG_SCHEMA;
  for (const p of path) {
    if (node.kind !== "object" || !Object.hasOwn(node.fields, p)) return undefined;
    node = node.fields[p];
  }
  return node;
}

/** Every settable dotted key (leaves and objects), e.g. `rl.G`, `model.generate.hidden`. */
export function configKeys(): string[] {
  const out: string[] = [];
  const walk = (n: ObjNode, prefix: string) => {
    for (const [k, child] of Object.entries(n.fields)) {
      const key = prefix ? `${prefix}.${k}` : k;
      out.push(key);
      if (child.kind === "object") walk(child, key);
    }
  };
  walk(CONFIG_SCHEMA, "");
  return out;
}

function unknownKeyMessage(key: string): string {
  const parts = key.split(".");
  // Suggest among siblings first, then among all keys.
  const parent = parts.slice(0, -1);
  const parentNode = nodeAt(parent);
  let hint: string | undefined;
  if (parentNode?.kind === "object") {
    const sib = closest(parts[parts.length - 1], Object.keys(parentNode.fields));
    if (sib) hint = [...parent, sib].join(".");
  }
  hint ??= closest(key, configKeys());
  const where = parentNode?.kind === "object" ? ` (valid keys${parent.length ? ` in ${parent.join(".")}` : ""}: ${Object.keys(parentNode.fields).join(", ")})` : "";
  return `unknown config key "${key}"${hint ? `; did you mean "${hint}"?` : ""}${where}`;
}

function describe(leaf: Leaf): string {
  switch (leaf.kind) {
    case "int":
      return `an integer${leaf.min !== undefined ? ` >= ${leaf.min}` : ""}${leaf.max !== undefined ? ` <= ${leaf.max}` : ""}`;
    case "number": {
      const lo = leaf.gt !== undefined ? ` > ${leaf.gt}` : leaf.min !== undefined ? ` >= ${leaf.min}` : "";
      return `a number${lo}${leaf.max !== undefined ? `${lo ? " and" : ""} <= ${leaf.max}` : ""}`;
    }
    case "bool":
      return "true | false";
    case "string":
      return leaf.doc ?? "a non-empty string";
    case "enum":
      return leaf.values.map((v) => `"${v}"`).join(" | ");
    case "ints":
      return `a list of integers${leaf.min !== undefined ? ` >= ${leaf.min}` : ""} (e.g. 128,256)`;
    case "list":
      return leaf.doc ?? "a list of strings";
    case "strings":
      return `a list of ${[...leaf.values, ...Object.keys(leaf.aliases ?? {})].map((v) => `"${v}"`).join(" | ")}`;
  }
}

const show = (v: unknown) => (typeof v === "string" ? `"${v}"` : JSON.stringify(v));

// ---------------------------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------------------------

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

function checkLeaf(leaf: Leaf, key: string, v: unknown, problems: string[]): unknown {
  const bad = () => {
    problems.push(`${key} = ${show(v)} is not allowed: expected ${describe(leaf)}`);
    return v;
  };
  switch (leaf.kind) {
    case "int":
    case "number": {
      if (typeof v !== "number" || !Number.isFinite(v)) return bad();
      if (leaf.kind === "int" && !Number.isInteger(v)) return bad();
      if (leaf.min !== undefined && v < leaf.min) return bad();
      if (leaf.max !== undefined && v > leaf.max) return bad();
      if (leaf.kind === "number" && leaf.gt !== undefined && v <= leaf.gt) return bad();
      return v;
    }
    case "bool":
      return typeof v === "boolean" ? v : bad();
    case "string":
      return typeof v === "string" && v.length > 0 ? v : bad();
    case "enum":
      if (typeof v === "string" && leaf.values.includes(v)) return v;
      if (typeof v === "string") {
        const hint = closest(v, leaf.values);
        problems.push(`${key} = ${show(v)} is not allowed: expected ${describe(leaf)}${hint ? `; did you mean "${hint}"?` : ""}`);
        return v;
      }
      return bad();
    case "ints":
      if (!Array.isArray(v) || v.some((x) => typeof x !== "number" || !Number.isInteger(x) || (leaf.min !== undefined && x < leaf.min))) return bad();
      return v;
    case "list": {
      const items = typeof v === "string" ? [v] : v;
      return Array.isArray(items) && items.length > 0 && items.every((x) => typeof x === "string" && x.length > 0) ? items : bad();
    }
    case "strings": {
      if (!Array.isArray(v) && typeof v !== "string") return bad();
      const items = typeof v === "string" ? [v] : v;
      const out: string[] = [];
      for (const x of items) {
        if (typeof x === "string" && leaf.aliases && Object.hasOwn(leaf.aliases, x)) out.push(...leaf.aliases[x]);
        else if (typeof x === "string" && leaf.values.includes(x)) out.push(x);
        else {
          const hint = typeof x === "string" ? closest(x, [...leaf.values, ...Object.keys(leaf.aliases ?? {})]) : undefined;
          problems.push(`${key} contains ${show(x)}, which is not allowed: expected ${describe(leaf)}${hint ? `; did you mean "${hint}"?` : ""}`);
        }
      }
      if (items.length === 0) problems.push(`${key} is empty: expected ${describe(leaf)}`);
      return [...new Set(out)];
    }
  }
}

function checkObject(node: ObjNode, key: string, v: unknown, problems: string[]): Record<string, unknown> {
  if (!isObj(v)) {
    problems.push(`${key || "config"} must be an object with keys ${Object.keys(node.fields).join(", ")} (got ${show(v)})`);
    return {};
  }
  const src = node.defaults ? { ...node.defaults, ...v } : v;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(src)) {
    if (!Object.hasOwn(node.fields, k)) problems.push(unknownKeyMessage(key ? `${key}.${k}` : k));
  }
  for (const [k, child] of Object.entries(node.fields)) {
    const sub = key ? `${key}.${k}` : k;
    const val = src[k];
    if (val === undefined || val === null) {
      if (!node.optional?.includes(k)) problems.push(`${sub} is missing: expected ${child.kind === "object" ? `an object with keys ${Object.keys(child.fields).join(", ")}` : describe(child)}`);
      continue;
    }
    out[k] = child.kind === "object" ? checkObject(child, sub, val, problems) : checkLeaf(child, sub, val, problems);
  }
  for (const group of node.oneOf ?? []) {
    const present = group.filter((g) => src[g] !== undefined && src[g] !== null);
    const names = group.map((g) => (key ? `${key}.${g}` : g));
    if (present.length !== 1) problems.push(`${present.length === 0 ? "set one of" : "set only one of"} ${names.join(" | ")}${present.length > 1 ? ` (both are set)` : ""}`);
  }
  return out;
}

export interface ValidateOptions {
  /** Check that model.dir and a data path exist (default true). */
  checkPaths?: boolean;
  /** Base for relative paths (default process.cwd()). */
  cwd?: string;
}

const isPlaceholder = (s: string) => /^<.*>$/.test(s.trim());

/**
 * Validate a full config and return the normalised copy ("all-linear" expanded, optional-object defaults filled).
 * Throws a ConfigError listing every problem, each naming its key and the allowed values.
 */
export function validateConfig(config: unknown, opts: ValidateOptions = {}): TrainConfig {
  const problems: string[] = [];
  const c = checkObject(CONFIG_SCHEMA, "", config, problems) as unknown as TrainConfig;
  if (problems.length) throw new ConfigError(problems);
  // Cross-field rules.
  const g = c.model.generate;
  if (g) {
    if (g.hidden % g.heads !== 0) problems.push(`model.generate.hidden = ${g.hidden} must be divisible by model.generate.heads = ${g.heads}`);
    else if ((g.hidden / g.heads) % 2 !== 0) problems.push(`model.generate.hidden / heads = ${g.hidden / g.heads} must be even (RoPE rotates pairs)`);
    if (g.heads % g.kvHeads !== 0) problems.push(`model.generate.heads = ${g.heads} must be a multiple of model.generate.kvHeads = ${g.kvHeads}`);
  }
  if (c.model.dtype === "f16" && c.model.quant === "nf4") problems.push(`model.dtype = "f16" needs model.quant = "none" (an NF4 base keeps its own 4-bit storage)`);
  if (c.model.doubleQuant && c.model.quant !== "nf4") problems.push(`model.doubleQuant = true needs model.quant = "nf4" (got "${c.model.quant}")`);
  if (c.data.difficulty.minSteps > c.data.difficulty.maxSteps) problems.push(`data.difficulty.minSteps = ${c.data.difficulty.minSteps} must be <= data.difficulty.maxSteps = ${c.data.difficulty.maxSteps}`);
  if (c.rl.G < 2 && c.rl.algo !== "ppo") problems.push(`rl.G = ${c.rl.G} is too small for rl.algo = "${c.rl.algo}": group-relative advantages need rl.G >= 2 (only "ppo" works with 1)`);
  const rollouts = c.rl.G * c.rl.promptsPerStep;
  if (c.rl.miniBatches > rollouts) problems.push(`rl.miniBatches = ${c.rl.miniBatches} exceeds the ${rollouts} completions per step (rl.G × rl.promptsPerStep)`);
  const st = c.rl.lengthStages;
  for (let i = 0; i < st.length; i++) {
    if (i > 0 && st[i] <= st[i - 1]) problems.push(`rl.lengthStages must increase (got ${st.join(",")})`);
    if (st[i] > c.rl.maxNewTokens) problems.push(`rl.lengthStages[${i}] = ${st[i]} exceeds rl.maxNewTokens = ${c.rl.maxNewTokens}`);
  }
  if (!c.sft.enabled && !c.rl.enabled) problems.push(`sft.enabled and rl.enabled are both false: nothing to train`);
  for (const url of c.rl.rollout?.servers ?? []) if (!/^https?:\/\/[^/\s]+/.test(url)) problems.push(`rl.rollout.servers: ${show(url)} is not an http(s) URL (e.g. http://127.0.0.1:8000/v1)`);
  if (c.rl.rollout && c.rl.rollout.tisCap > 0 && c.rl.rollout.tisCap < 1) problems.push(`rl.rollout.tisCap = ${c.rl.rollout.tisCap} must be 0 (off) or >= 1 (a cap below 1 would shrink every token's weight)`);
  if (!/^[\w.-]+$/.test(c.name) || c.name === "." || c.name === "..") problems.push(`name = ${show(c.name)} is not allowed: expected ${describe(CONFIG_SCHEMA.fields.name as Leaf)}`);
  problems.push(...samplingProblems(c));
  if (opts.checkPaths ?? true) {
    const cwd = opts.cwd ?? process.cwd();
    const dir = c.model.dir;
    if (dir !== undefined) {
      if (isPlaceholder(dir)) problems.push(`model.dir = ${show(dir)} is a placeholder: set it to a downloaded HF checkpoint folder (--model.dir DIR)`);
      else {
        const abs = resolveModelDir(dir, cwd);
        if (!existsSync(abs) || !statSync(abs).isDirectory()) problems.push(`model.dir = ${show(dir)} does not exist (or is not a folder): set it to a downloaded HF checkpoint folder (--model.dir DIR)`);
        else if (!existsSync(join(abs, "config.json"))) problems.push(`model.dir = ${show(dir)} has no config.json: point it at an HF checkpoint folder`);
        else problems.push(...modelDirContextProblems(c, abs));
      }
    }
    const s = c.data.source;
    if (s !== "synthetic") {
      if (isPlaceholder(s)) problems.push(`data.source = ${show(s)} is a placeholder: set "synthetic" or a JSONL/Parquet path (--data.source PATH)`);
      else if (!existsSync(resolve(cwd, s))) problems.push(`data.source = ${show(s)} does not exist: expected "synthetic" or a JSONL/Parquet file or folder`);
    }
  }
  if (problems.length) throw new ConfigError(problems);
  return c;
}

// ---------------------------------------------------------------------------------------------------------------
// Presets
// ---------------------------------------------------------------------------------------------------------------

/** The repository's configs/train folder, found by walking up from this module and from cwd; undefined if absent. */
export function presetDir(): string | undefined {
  const starts = [dirname(fileURLToPath(import.meta.url)), process.cwd()];
  for (const start of starts) {
    let d = start;
    for (;;) {
      const cand = join(d, "configs", "train");
      if (existsSync(cand) && statSync(cand).isDirectory()) return cand;
      const up = dirname(d);
      if (up === d) break;
      d = up;
    }
  }
  return undefined;
}

/**
 * Where a config's model.dir points: absolute as is; relative to `cwd` when it exists there; otherwise relative to the
 * repository root (the folder holding configs/), so the embedded default's committed `models/nr-tiny-math` is found
 * from any working directory inside the checkout.
 */
export function resolveModelDir(dir: string, cwd = process.cwd()): string {
  const here = resolve(cwd, dir);
  if (isAbsolute(dir) || existsSync(here)) return here;
  const presets = presetDir();
  const fromRepo = presets ? resolve(dirname(dirname(presets)), dir) : here;
  return existsSync(fromRepo) ? fromRepo : here;
}

export function listPresets(dir = presetDir()): string[] {
  if (!dir || !existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5)).sort();
}

function deepMerge(base: unknown, over: unknown): unknown {
  if (!isObj(base) || !isObj(over)) return structuredClone(over);
  const out: Record<string, unknown> = structuredClone(base);
  for (const [k, v] of Object.entries(over)) out[k] = k in out ? deepMerge(out[k], v) : structuredClone(v);
  return out;
}

/** Clear the other members of a oneOf group when a preset/override sets one of them. */
function applyOneOf(base: Record<string, unknown>, over: Record<string, unknown>, node: ObjNode): Record<string, unknown> {
  const out = { ...base };
  for (const group of node.oneOf ?? []) {
    const set = group.filter((g) => over[g] !== undefined && over[g] !== null);
    if (set.length === 1) for (const g of group) if (g !== set[0]) delete out[g];
  }
  for (const [k, child] of Object.entries(node.fields)) {
    if (child.kind === "object" && isObj(out[k]) && isObj(over[k])) out[k] = applyOneOf(out[k] as Record<string, unknown>, over[k] as Record<string, unknown>, child);
  }
  return out;
}

/**
 * Load a preset: a name in configs/train (`default`, `qwen2.5-math-1.5b-dr-grpo`) or a path to a JSON file. The file
 * may be partial: it is merged over DEFAULT_CONFIG (setting `model.dir` drops the default `model.generate`, and so on
 * for other either/or keys). Unknown keys are errors. Not validated yet (overrides may still fix it).
 */
export function loadPreset(nameOrPath: string, dir = presetDir()): Record<string, unknown> {
  let file: string;
  if (nameOrPath.endsWith(".json") || nameOrPath.includes("/") || isAbsolute(nameOrPath)) file = resolve(nameOrPath);
  else {
    const names = listPresets(dir);
    if (!dir || !names.includes(nameOrPath)) {
      if (nameOrPath === "default") return structuredClone(DEFAULT_CONFIG) as unknown as Record<string, unknown>;
      const hint = closest(nameOrPath, names);
      throw new ConfigError([`unknown preset "${nameOrPath}"${hint ? `; did you mean "${hint}"?` : ""} (available: ${names.join(", ") || "none found"}${dir ? ` in ${dir}` : ""}; or pass a path to a .json file)`]);
    }
    file = join(dir, `${nameOrPath}.json`);
  }
  if (!existsSync(file)) throw new ConfigError([`preset file ${file} does not exist`]);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new ConfigError([`${file} is not valid JSON: ${(err as Error).message}`]);
  }
  if (!isObj(json)) throw new ConfigError([`${file} must hold a JSON object`]);
  const problems: string[] = [];
  collectUnknown(json, CONFIG_SCHEMA, "", problems);
  if (problems.length) throw new ConfigError(problems, file);
  const base = applyOneOf(structuredClone(DEFAULT_CONFIG) as unknown as Record<string, unknown>, json, CONFIG_SCHEMA);
  return deepMerge(base, json) as Record<string, unknown>;
}

function collectUnknown(v: Record<string, unknown>, node: ObjNode, key: string, problems: string[]) {
  for (const [k, x] of Object.entries(v)) {
    const sub = key ? `${key}.${k}` : k;
    const child = node.fields[k];
    if (!Object.hasOwn(node.fields, k)) problems.push(unknownKeyMessage(sub));
    else if (child.kind === "object" && isObj(x)) collectUnknown(x, child, sub, problems);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Overrides
// ---------------------------------------------------------------------------------------------------------------

/** A dotted key and its raw value (a CLI string, or an already-typed value). `null` removes an optional key. */
export type Override = [key: string, value: unknown];

function coerce(leaf: Leaf, key: string, raw: unknown): unknown {
  if (typeof raw !== "string") return raw; // typed values (from JSON or yargs) are checked by validation
  const s = raw.trim();
  const fail = (): never => {
    throw new ConfigError([`--${key} ${show(raw)} is not allowed: expected ${describe(leaf)}`]);
  };
  switch (leaf.kind) {
    case "int":
    case "number": {
      const n = s === "" ? NaN : Number(s.replace(/_/g, ""));
      if (!Number.isFinite(n) || (leaf.kind === "int" && !Number.isInteger(n))) fail();
      return n;
    }
    case "bool": {
      const t = s.toLowerCase();
      if (["true", "1", "yes", "on"].includes(t)) return true;
      if (["false", "0", "no", "off"].includes(t)) return false;
      return fail();
    }
    case "string":
    case "enum":
      return s;
    case "ints": {
      if (s === "" || s === "[]") return [];
      const parts = s.replace(/^\[|\]$/g, "").split(",").map((x) => x.trim());
      const nums = parts.map(Number);
      if (nums.some((n) => !Number.isInteger(n))) fail();
      return nums;
    }
    case "list":
    case "strings":
      return s.replace(/^\[|\]$/g, "").split(",").map((x) => x.trim().replace(/^"|"$/g, "")).filter(Boolean);
  }
}

/**
 * Deep-set overrides into a (partial) config: each key must be a schema key (else a ConfigError suggesting the closest),
 * each raw string is coerced to the key's type. Setting one of an either/or pair (model.dir | model.generate,
 * sft.epochs | sft.steps) removes the other. `null`, "null" or "none" on an optional key removes it.
 */
export function applyOverrides(config: Record<string, unknown>, overrides: readonly Override[] | Record<string, unknown>): Record<string, unknown> {
  const list: Override[] = Array.isArray(overrides) ? [...(overrides as Override[])] : Object.entries(overrides);
  const out = structuredClone(config);
  const problems: string[] = [];
  for (const [key, raw] of list) {
    const path = key.split(".");
    const node = nodeAt(path);
    if (!node || path.some((p) => p === "")) {
      problems.push(unknownKeyMessage(key));
      continue;
    }
    // Walk/create parents; check the last step's optionality and either/or groups.
    let target = out;
    let parentNode: ObjNode = CONFIG_SCHEMA;
    for (let i = 0; i < path.length - 1; i++) {
      const p = path[i];
      const childNode = parentNode.fields[p] as ObjNode;
      if (!isObj(target[p])) {
        for (const group of parentNode.oneOf ?? []) if (group.includes(p)) for (const g of group) if (g !== p) delete target[g];
        target[p] = structuredClone(childNode.defaults ?? {});
      }
      target = target[p] as Record<string, unknown>;
      parentNode = childNode;
    }
    const last = path[path.length - 1];
    const removable = parentNode.optional?.includes(last);
    if (removable && (raw === null || (typeof raw === "string" && ["null", "none"].includes(raw.trim().toLowerCase())))) {
      delete target[last];
      continue;
    }
    try {
      let value: unknown;
      if (node.kind === "object") {
        if (typeof raw === "string") {
          try {
            value = JSON.parse(raw);
          } catch {
            throw new ConfigError([`--${key} needs a JSON object or its sub-keys (${Object.keys(node.fields).map((k) => `--${key}.${k}`).join(", ")})`]);
          }
        } else value = raw;
        if (!isObj(value)) throw new ConfigError([`--${key} must be an object with keys ${Object.keys(node.fields).join(", ")}`]);
        const unk: string[] = [];
        collectUnknown(value, node, key, unk);
        if (unk.length) throw new ConfigError(unk);
      } else value = coerce(node, key, raw);
      for (const group of parentNode.oneOf ?? []) if (group.includes(last)) for (const g of group) if (g !== last) delete target[g];
      target[last] = value;
    } catch (err) {
      if (err instanceof ConfigError) problems.push(...err.problems);
      else throw err;
    }
  }
  if (problems.length) throw new ConfigError(problems);
  return out;
}

/** Short flags for the most used keys: `--model DIR`, `--data PATH`, `--algo NAME`. */
export const CONFIG_ALIASES: Readonly<Record<string, string>> = { model: "model.dir", data: "data.source", algo: "rl.algo" };

/**
 * Pick dotted overrides out of argv: `--rl.algo lpro`, `--rl.G=4`, `--sft.checkpointing` (boolean true),
 * `--no-sft.enabled` (false). A flag is taken when it contains a dot or names a top-level scalar key
 * (`--name`, `--seed`) or an alias in {@link CONFIG_ALIASES}. Everything else is returned untouched in `rest`, in order, for the CLI's own parser.
 */
export function parseOverrides(argv: readonly string[]): { overrides: Override[]; rest: string[] } {
  const overrides: Override[] = [];
  const rest: string[] = [];
  const topScalars = Object.entries(CONFIG_SCHEMA.fields).filter(([, n]) => n.kind !== "object").map(([k]) => k);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--(no-)?([A-Za-z_][\w-]*(?:\.[\w-]+)*)(?:=(.*))?$/s.exec(a);
    if (!m || (!m[2].includes(".") && !topScalars.includes(m[2]) && !Object.hasOwn(CONFIG_ALIASES, m[2]))) {
      rest.push(a);
      continue;
    }
    const [, neg, flag, eq] = m;
    const key = Object.hasOwn(CONFIG_ALIASES, flag) ? CONFIG_ALIASES[flag] : flag;
    const node = nodeAt(key.split("."));
    if (neg) {
      overrides.push([key, eq ?? "false"]);
      continue;
    }
    if (eq !== undefined) overrides.push([key, eq]);
    else if (node?.kind === "bool" && (i + 1 >= argv.length || argv[i + 1].startsWith("--") || !/^(true|false|1|0|yes|no|on|off)$/i.test(argv[i + 1]))) overrides.push([key, "true"]);
    else if (i + 1 < argv.length && !(argv[i + 1].startsWith("--") && node?.kind !== "int" && node?.kind !== "number")) overrides.push([key, argv[++i]]);
    else throw new ConfigError([`--${key} needs a value${node && node.kind !== "object" ? ` (${describe(node)})` : ""}`]);
  }
  return { overrides, rest };
}

/** Flatten a nested object (e.g. what yargs makes of `--rl.G 4`) into dotted overrides. Arrays are leaves. */
export function flattenOverrides(obj: Record<string, unknown>, prefix = ""): Override[] {
  const out: Override[] = [];
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (isObj(v) && nodeAt(key.split("."))?.kind === "object") out.push(...flattenOverrides(v, key));
    else out.push([key, v]);
  }
  return out;
}

export interface ResolveOptions extends ValidateOptions {
  /** Preset name or JSON path (default "default"). */
  preset?: string;
  overrides?: readonly Override[] | Record<string, unknown>;
  /** Folder of presets (default: the repo's configs/train). */
  presetDir?: string;
}

/** Preset → overrides → validated, normalised TrainConfig. */
export function resolveConfig(opts: ResolveOptions = {}): TrainConfig {
  const base = loadPreset(opts.preset ?? "default", opts.presetDir ?? presetDir());
  const merged = opts.overrides ? applyOverrides(base, opts.overrides) : base;
  return validateConfig(merged, opts);
}

/** Total SFT optimizer steps for a config (steps, or ceil(epochs·trainSize / (batchSize·gradAccum))). */
export function sftTotalSteps(c: TrainConfig): number {
  if (!c.sft.enabled) return 0;
  if (c.sft.steps !== undefined) return c.sft.steps;
  return Math.ceil(((c.sft.epochs ?? 1) * c.data.trainSize) / (c.sft.batchSize * c.sft.gradAccum));
}

/** max_new_tokens at RL step `step` (0-based) under rl.lengthStages. */
export function rlMaxNewTokensAt(c: TrainConfig, step: number): number {
  const st = c.rl.lengthStages;
  if (st.length === 0 || c.rl.steps === 0) return c.rl.maxNewTokens;
  const k = Math.min(st.length - 1, Math.floor((step * st.length) / c.rl.steps));
  return st[Math.max(0, k)];
}

/** Learning-rate multiplier at optimizer step `step` (0-based) of `total`: linear warm-up, then the schedule. */
export function lrFactor(schedule: LrSchedule, step: number, total: number, warmup: number): number {
  if (warmup > 0 && step < warmup) return (step + 1) / warmup;
  const span = Math.max(1, total - warmup);
  const p = Math.min(1, Math.max(0, (step - warmup) / span));
  if (schedule === "linear") return 1 - p;
  if (schedule === "cosine") return 0.5 * (1 + Math.cos(Math.PI * p));
  return 1;
}
