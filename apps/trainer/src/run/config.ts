// The training config, one concern per file under config/: types, the embedded default, the schema and its messages,
// validation (schema + cross-field rules + paths), presets, and dotted CLI overrides. resolveConfig puts them together.
export * from "./config/types.js";
export * from "./config/defaults.js";
export { CONFIG_SCHEMA, ConfigError, closest, configKeys } from "./config/schema.js";
export * from "./config/validate.js";
export * from "./config/presets.js";
export * from "./config/overrides.js";
export * from "./config/rules.js";
import type { TrainConfig } from "./config/types.js";
import { validateConfig, type ValidateOptions } from "./config/validate.js";
import { loadPreset, presetDir } from "./config/presets.js";
import { applyOverrides, type Override } from "./config/overrides.js";

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
