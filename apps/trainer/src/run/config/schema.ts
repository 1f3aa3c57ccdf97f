// The config schema (every key, its type and range, optional keys, either/or groups, defaults of optional objects),
// the messages it produces (key, value, allowed values, "did you mean"), and ConfigError.
import { BASE_DTYPES, BASE_QUANTS, LORA_TARGET_NAMES, LR_SCHEDULES, PROMPT_STYLES, RL_ALGOS } from "./types.js";
import { GENERATED_MODEL_DEFAULTS } from "./defaults.js";

export type Leaf =
  | { kind: "int"; min?: number; max?: number; doc?: string }
  | { kind: "number"; min?: number; max?: number; gt?: number; doc?: string }
  | { kind: "bool"; doc?: string }
  | { kind: "string"; doc?: string }
  | { kind: "enum"; values: readonly string[]; doc?: string }
  | { kind: "ints"; min?: number; doc?: string }
  | { kind: "strings"; values: readonly string[]; aliases?: Record<string, readonly string[]>; doc?: string }
  | { kind: "list"; doc?: string }
  /** A JSON object checked elsewhere (rl.algoConfig by @nr/algos); a second value deep-merges over the first. */
  | { kind: "json"; doc?: string };

export interface ObjNode {
  kind: "object";
  fields: Record<string, Node>;
  /** Fields that may be absent. */
  optional?: readonly string[];
  /** Groups of fields of which exactly one must be present (setting one by override removes the others). */
  oneOf?: readonly (readonly string[])[];
  /** Filled in under a present-but-partial optional object (e.g. `--output.wandb.project x`). */
  defaults?: Record<string, unknown>;
}
export type Node = Leaf | ObjNode;

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
      optional: ["dir", "generate", "adapter"],
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
        adapter: { kind: "string", doc: "a PEFT adapter folder (adapter_config.json + adapter_model.safetensors), e.g. runs/NAME/best" },
      },
    },
    data: {
      kind: "object",
      optional: ["skipBadRows"],
      fields: {
        source: str,
        trainSize: int(1),
        evalSize: int(1),
        difficulty: { kind: "object", optional: ["kind"], fields: { kind: en("words", "expression"), minSteps: int(1), maxSteps: int(1), maxOperand: int(1), maxValue: int(1) } },
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
      optional: ["epochs", "steps", "noThinkFraction", "maxExamples"],
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
        maxExamples: int(1),
      },
    },
    rl: {
      kind: "object",
      optional: ["rollout", "algoConfig"],
      fields: {
        enabled: bool,
        algo: en(...RL_ALGOS),
        algoConfig: { kind: "json", doc: 'a JSON object of @nr/algos settings merged over the rl.algo preset, e.g. {"lpro":{"lambda":0.1},"clip":{"epsHigh":0.28}}' },
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

export function nodeAt(path: string[]): Node | undefined {
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

export function unknownKeyMessage(key: string): string {
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

export function describe(leaf: Leaf): string {
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
    case "json":
      return leaf.doc ?? "a JSON object";
    case "strings":
      return `a list of ${[...leaf.values, ...Object.keys(leaf.aliases ?? {})].map((v) => `"${v}"`).join(" | ")}`;
  }
}

export const show = (v: unknown) => (typeof v === "string" ? `"${v}"` : JSON.stringify(v));

export const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

export function collectUnknown(v: Record<string, unknown>, node: ObjNode, key: string, problems: string[]) {
  for (const [k, x] of Object.entries(v)) {
    const sub = key ? `${key}.${k}` : k;
    const child = node.fields[k];
    if (!Object.hasOwn(node.fields, k)) problems.push(unknownKeyMessage(sub));
    else if (child.kind === "object" && isObj(x)) collectUnknown(x, child, sub, problems);
  }
}
