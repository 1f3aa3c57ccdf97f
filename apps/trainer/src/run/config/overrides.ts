// Dotted overrides (`--rl.algo lpro --rl.G 4`): picked out of argv, coerced to the schema's types, deep-set into a
// config with either/or keys and optional-object defaults handled.
import { CONFIG_SCHEMA, ConfigError, collectUnknown, describe, isObj, nodeAt, show, unknownKeyMessage, type Leaf, type ObjNode } from "./schema.js";

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
    case "json": {
      let v: unknown;
      try {
        v = JSON.parse(s);
      } catch (err) {
        throw new ConfigError([`--${key} ${show(raw)} is not JSON (${(err as Error).message}): expected ${describe(leaf)}`]);
      }
      return isObj(v) ? v : fail();
    }
    case "list":
    case "strings":
      return s.replace(/^\[|\]$/g, "").split(",").map((x) => x.trim().replace(/^"|"$/g, "")).filter(Boolean);
  }
}

/**
 * Deep-set overrides into a (partial) config: each key must be a schema key (else a ConfigError suggesting the closest),
 * each raw string is coerced to the key's type. Setting one of an either/or pair (model.dir | model.generate,
 * sft.epochs | sft.steps) removes the other. `null`, "null" or "none" on an optional key removes it. `typed`: values
 * come from JSON (a preset) and are kept as they are, for validation to judge.
 */
export function applyOverrides(config: Record<string, unknown>, overrides: readonly Override[] | Record<string, unknown>, o: { typed?: boolean } = {}): Record<string, unknown> {
  const list: Override[] = Array.isArray(overrides) ? [...(overrides as Override[])] : Object.entries(overrides);
  const out = structuredClone(config);
  const problems: string[] = [];
  for (const [dotted, value0] of list) {
    const [key, raw] = intoJsonSetting(dotted, value0);
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
      } else value = o.typed ? raw : coerce(node, key, raw);
      for (const group of parentNode.oneOf ?? []) if (group.includes(last)) for (const g of group) if (g !== last) delete target[g];
      // A JSON setting given twice (a preset's, then the command line's) keeps what the second does not name.
      target[last] = node.kind === "json" && isObj(target[last]) && isObj(value) ? mergeJson(target[last], value) : value;
    } catch (err) {
      if (err instanceof ConfigError) problems.push(...err.problems);
      else throw err;
    }
  }
  if (problems.length) throw new ConfigError(problems);
  return out;
}

/**
 * A key below a JSON setting (`rl.algoConfig.clip.epsHigh 0.28`) becomes the setting with a one-key object
 * ({clip: {epsHigh: 0.28}}), merged over what is there; a CLI string is read as JSON when it is (numbers, true, null).
 */
function intoJsonSetting(key: string, raw: unknown): Override {
  const path = key.split(".");
  for (let i = 1; i < path.length; i++) {
    if (nodeAt(path.slice(0, i))?.kind !== "json") continue;
    let value = raw;
    if (typeof raw === "string") {
      try {
        value = JSON.parse(raw);
      } catch {
        value = raw;
      }
    }
    for (const k of path.slice(i).reverse()) value = { [k]: value };
    return [path.slice(0, i).join("."), value];
  }
  return [key, raw];
}

/** `over` deep-merged into a copy of `base` (objects merge key by key; anything else replaces). */
function mergeJson(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out = structuredClone(base);
  for (const [k, v] of Object.entries(over)) out[k] = isObj(v) && isObj(out[k]) ? mergeJson(out[k] as Record<string, unknown>, v) : v;
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
    // An empty object stays one override, so that it still selects its side of an either/or pair.
    if (isObj(v) && Object.keys(v).length > 0 && nodeAt(key.split("."))?.kind === "object") out.push(...flattenOverrides(v, key));
    else out.push([key, v]);
  }
  return out;
}
