// PEFT's on-disk format: adapter_config.json + adapter_model.safetensors with keys
//   base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight   [r, in]
//   base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.weight   [out, r]
// (mlp.{gate,up,down}_proj for the MLP). An adapter written by PEFT loads here and one written here loads in PEFT.
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { SafetensorsFile, encodeFloats, writeSafetensors, type TensorToWrite } from "@nr/model";
import { LORA_TARGETS, resolveLoraConfig, type LoraModel, type LoraTarget, type ResolvedLoraConfig } from "./lora.js";

export const ADAPTER_CONFIG = "adapter_config.json";
export const ADAPTER_WEIGHTS = "adapter_model.safetensors";

const MODULE_PATH: Record<LoraTarget, string> = {
  q_proj: "self_attn.q_proj",
  k_proj: "self_attn.k_proj",
  v_proj: "self_attn.v_proj",
  o_proj: "self_attn.o_proj",
  gate_proj: "mlp.gate_proj",
  up_proj: "mlp.up_proj",
  down_proj: "mlp.down_proj",
};

export function peftKey(layer: number, target: LoraTarget, which: "A" | "B"): string {
  return `base_model.model.model.layers.${layer}.${MODULE_PATH[target]}.lora_${which}.weight`;
}

export interface PeftAdapterConfig {
  peft_type: "LORA";
  task_type: "CAUSAL_LM";
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: string[];
  bias: "none";
  base_model_name_or_path: string;
  use_rslora: boolean;
  fan_in_fan_out: false;
  inference_mode: boolean;
  init_lora_weights: true;
  modules_to_save: null;
  layers_to_transform: null;
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
  revision: null;
}

export function peftConfig(c: ResolvedLoraConfig, baseModel: string): PeftAdapterConfig {
  return {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    r: c.r,
    lora_alpha: c.alpha,
    lora_dropout: c.dropout,
    target_modules: [...c.targets],
    bias: "none",
    base_model_name_or_path: baseModel,
    use_rslora: c.rslora,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    modules_to_save: null,
    layers_to_transform: null,
    rank_pattern: {},
    alpha_pattern: {},
    revision: null,
  };
}

/** Write adapter `name` in PEFT's layout (f32 tensors), atomically (temp files, then rename). */
export async function savePeftAdapter(model: LoraModel, name: string, dir: string, opts: { baseModel?: string } = {}) {
  const c = model.configs.get(name);
  if (!c) throw new Error(`savePeftAdapter: no adapter named "${name}"`);
  await mkdir(dir, { recursive: true });
  const tensors: TensorToWrite[] = [];
  for (const p of model.projections) {
    const ad = p.adapters.get(name);
    if (!ad) continue;
    for (const which of ["A", "B"] as const) {
      const t = which === "A" ? ad.weights.A : ad.weights.B;
      tensors.push({ name: peftKey(p.layer, p.target, which), dtype: "F32", shape: [...t.shape], data: async () => encodeFloats(await t.read(), "F32") });
    }
  }
  const tmpW = join(dir, `${ADAPTER_WEIGHTS}.tmp`);
  const tmpC = join(dir, `${ADAPTER_CONFIG}.tmp`);
  await writeSafetensors(tmpW, tensors, { format: "pt" });
  await writeFile(tmpC, JSON.stringify(peftConfig(c, opts.baseModel ?? ""), null, 2) + "\n");
  await rename(tmpW, join(dir, ADAPTER_WEIGHTS));
  await rename(tmpC, join(dir, ADAPTER_CONFIG));
}

/** Read a PEFT adapter_config.json into our config, with clear errors for what we do not support. */
export async function readPeftConfig(dir: string): Promise<ResolvedLoraConfig> {
  const path = join(dir, ADAPTER_CONFIG);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    throw new Error(`${path}: cannot read the adapter config (${(e as Error).message})`);
  }
  if (raw.peft_type !== "LORA") throw new Error(`${path}: peft_type is ${JSON.stringify(raw.peft_type)}, only "LORA" is supported`);
  if (raw.bias !== undefined && raw.bias !== "none") throw new Error(`${path}: bias "${raw.bias}" is not supported (only "none")`);
  if (raw.fan_in_fan_out) throw new Error(`${path}: fan_in_fan_out adapters (GPT-2 Conv1D) are not supported`);
  for (const k of ["rank_pattern", "alpha_pattern"]) {
    const v = raw[k] as Record<string, unknown> | undefined;
    if (v && Object.keys(v).length) throw new Error(`${path}: ${k} (per-module ranks) is not supported`);
  }
  let targets = raw.target_modules as string[] | string;
  if (targets === "all-linear") targets = [...LORA_TARGETS];
  if (!Array.isArray(targets)) throw new Error(`${path}: target_modules must be a list of module names or "all-linear"`);
  const unknown = targets.filter((t) => !LORA_TARGETS.includes(t as LoraTarget));
  if (unknown.length) throw new Error(`${path}: target_modules ${JSON.stringify(unknown)} are not LoRA targets here (allowed: ${LORA_TARGETS.join(", ")})`);
  return resolveLoraConfig({
    r: Number(raw.r),
    alpha: Number(raw.lora_alpha ?? raw.r),
    targets: targets as LoraTarget[],
    dropout: Number(raw.lora_dropout ?? 0),
    rslora: Boolean(raw.use_rslora),
  });
}

/** A PEFT adapter read into host memory and checked against a model's projections, not yet on the GPU. */
export interface PeftAdapterData {
  config: ResolvedLoraConfig;
  /** Per wrapped projection (index into LoraModel.projections) that the adapter targets: its A and B values. */
  tensors: { projection: number; A: Float32Array; B: Float32Array }[];
}

/**
 * Read a PEFT adapter directory and check every expected tensor's presence and size against `model`'s projections.
 * Touches no GPU state, so a bad file leaves every loaded adapter as it was.
 */
export async function readPeftAdapter(model: LoraModel, dir: string): Promise<PeftAdapterData> {
  const config = await readPeftConfig(dir);
  const path = join(dir, ADAPTER_WEIGHTS);
  const file = await SafetensorsFile.open(path);
  try {
    const have = new Set(file.names());
    // PEFT also writes keys with the adapter name (…lora_A.default.weight) in some versions' in-memory state; the
    // saved file uses the plain form. Accept both.
    const find = (key: string) => (have.has(key) ? key : have.has(key.replace(/\.weight$/, ".default.weight")) ? key.replace(/\.weight$/, ".default.weight") : null);
    const tensors: PeftAdapterData["tensors"] = [];
    for (const [i, p] of model.projections.entries()) {
      if (!config.targets.includes(p.target)) continue;
      const ka = find(peftKey(p.layer, p.target, "A"));
      const kb = find(peftKey(p.layer, p.target, "B"));
      if (!ka || !kb) throw new Error(`${path}: missing ${!ka ? peftKey(p.layer, p.target, "A") : peftKey(p.layer, p.target, "B")}`);
      const A = await file.readF32(ka);
      const B = await file.readF32(kb);
      if (A.length !== config.r * p.inFeatures) throw new Error(`${path}: ${ka} has ${A.length} values, expected [${config.r}, ${p.inFeatures}]`);
      if (B.length !== p.outFeatures * config.r) throw new Error(`${path}: ${kb} has ${B.length} values, expected [${p.outFeatures}, ${config.r}]`);
      tensors.push({ projection: i, A, B });
    }
    return { config, tensors };
  } finally {
    await file.close();
  }
}

/** Put adapter data read by {@link readPeftAdapter} on the GPU as adapter `name` (replacing one of that name). */
export function applyPeftAdapter(model: LoraModel, data: PeftAdapterData, name: string, opts: { trainable?: boolean } = {}) {
  model.configs.set(name, data.config);
  for (const t of data.tensors) model.projections[t.projection].setAdapter(name, data.config, t.A, t.B, opts.trainable ?? false);
}

/** Load a PEFT adapter directory as adapter `name` (trainable or frozen). Every expected tensor must be present. */
export async function loadPeftAdapter(model: LoraModel, dir: string, name: string, opts: { trainable?: boolean } = {}) {
  const data = await readPeftAdapter(model, dir);
  applyPeftAdapter(model, data, name, opts);
  return data.config;
}
