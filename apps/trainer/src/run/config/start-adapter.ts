// model.adapter: a PEFT LoRA adapter the policy starts from (an SFT run's best/ before an RL run, a recipe's stages).
// Checked before any GPU work: the folder, its adapter_config.json, and that its rank, alpha and target layers are the
// lora section's (the run trains that same adapter further, so they cannot differ).
import { existsSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import type { TrainConfig } from "./types.js";
import { show } from "./schema.js";

/** Problems with model.adapter (none when unset), each naming the key or file and the fix. */
export function startAdapterProblems(c: TrainConfig, cwd: string): string[] {
  const dir = c.model.adapter;
  if (dir === undefined) return [];
  const abs = resolve(cwd, dir);
  const file = join(abs, "adapter_config.json");
  if (!existsSync(abs) || !statSync(abs).isDirectory()) return [`model.adapter = ${show(dir)} does not exist (or is not a folder): set it to a PEFT adapter folder, e.g. runs/NAME/best`];
  if (!existsSync(file)) return [`model.adapter = ${show(dir)} has no adapter_config.json: point it at a PEFT adapter folder, e.g. runs/NAME/best`];
  let raw: { r?: unknown; lora_alpha?: unknown; target_modules?: unknown };
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    return [`${file}: not valid JSON (${(err as Error).message})`];
  }
  const problems: string[] = [];
  if (raw.r !== c.lora.r) problems.push(`lora.r = ${c.lora.r} differs from r = ${show(raw.r)} in ${file}: set --lora.r ${show(raw.r)}`);
  const alpha = raw.lora_alpha ?? raw.r;
  if (alpha !== c.lora.alpha) problems.push(`lora.alpha = ${c.lora.alpha} differs from lora_alpha = ${show(alpha)} in ${file}: set --lora.alpha ${show(alpha)}`);
  const targets = raw.target_modules === "all-linear" ? null : Array.isArray(raw.target_modules) ? [...raw.target_modules].map(String).sort() : undefined;
  const want = [...c.lora.targets].sort();
  if (targets === undefined) problems.push(`${file}: target_modules must be a list of module names or "all-linear"`);
  else if (targets === null ? want.length !== 7 : targets.join(",") !== want.join(",")) problems.push(`lora.targets = ${want.join(",")} differs from target_modules = ${show(raw.target_modules)} in ${file}: set --lora.targets ${targets === null ? "all-linear" : targets.join(",")}`);
  return problems;
}
