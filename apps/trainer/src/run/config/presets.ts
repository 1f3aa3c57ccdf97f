// Presets: configs/train/<name>.json (or a path), partial JSON merged over the embedded default; and where a
// config's model.dir points.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULT_CONFIG } from "./defaults.js";
import { CONFIG_SCHEMA, ConfigError, closest, collectUnknown, isObj } from "./schema.js";
import { applyOverrides, flattenOverrides } from "./overrides.js";

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
  // A run's config.json used as a preset: its `resumes` history (run/resume.ts) is not a setting of the new run.
  delete json.resumes;
  const problems: string[] = [];
  collectUnknown(json, CONFIG_SCHEMA, "", problems);
  if (problems.length) throw new ConfigError(problems, file);
  // Merged as typed overrides: either/or keys and optional-object defaults behave exactly as on the command line.
  return applyOverrides(structuredClone(DEFAULT_CONFIG) as unknown as Record<string, unknown>, flattenOverrides(json), { typed: true });
}

