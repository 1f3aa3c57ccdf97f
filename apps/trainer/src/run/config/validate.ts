// Validation of a whole config: the schema, the cross-field rules (rules.ts), and the paths it names.
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import type { TrainConfig } from "./types.js";
import { CONFIG_SCHEMA, ConfigError, closest, describe, isObj, show, unknownKeyMessage, type Leaf, type ObjNode } from "./schema.js";
import { crossFieldProblems, modelDirContextProblems } from "./rules.js";
import { resolveModelDir } from "./presets.js";
import { startAdapterProblems } from "./start-adapter.js";


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
    case "json":
      return isObj(v) ? v : bad();
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
  problems.push(...crossFieldProblems(c));
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
    problems.push(...startAdapterProblems(c, cwd));
    const s = c.data.source;
    if (s !== "synthetic") {
      if (isPlaceholder(s)) problems.push(`data.source = ${show(s)} is a placeholder: set "synthetic" or a JSONL/Parquet path (--data.source PATH)`);
      else if (!existsSync(resolve(cwd, s))) problems.push(`data.source = ${show(s)} does not exist: expected "synthetic" or a JSONL/Parquet file or folder`);
    }
  }
  if (problems.length) throw new ConfigError(problems);
  return c;
}
