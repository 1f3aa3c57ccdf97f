// A checkpoint folder in HF layout: config.json + model.safetensors (or shards + index). Validates the tensors
// against the config (missing tensors, shape mismatches, non-float dtypes, bitsandbytes NF4 quant state) and loads
// weights for the float64 reference / ONNX export.
import { join } from "node:path";
import { loadModelConfig, parameterSpecs, type ModelConfig, type ParamSpec } from "./config.js";
import { SafetensorsCheckpoint, SafetensorsError, FLOAT_DTYPES, type TensorSource } from "./safetensors.js";

/** Companion tensors bitsandbytes stores next to a 4-bit weight `W`: `W.absmax`, `W.quant_map`, `W.quant_state.bitsandbytes__nf4`, … */
const BNB_SUFFIXES = [".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4"];

/** The parsed bitsandbytes quant state of a 4-bit weight (the JSON packed into `<name>.quant_state.bitsandbytes__*`). */
export interface BnbQuantState {
  quant_type: string;
  blocksize: number;
  shape: number[];
  dtype?: string;
  [k: string]: unknown;
}

/** Reads the bitsandbytes quant state stored for weight `name`, or null when the weight is not 4-bit quantised. */
export async function readBnbQuantState(src: TensorSource, name: string): Promise<BnbQuantState | null> {
  for (const kind of ["nf4", "fp4"]) {
    const key = `${name}.quant_state.bitsandbytes__${kind}`;
    if (!src.has(key)) continue;
    const bytes = await src.readRaw(key);
    let state: BnbQuantState;
    try {
      state = JSON.parse(new TextDecoder().decode(bytes));
    } catch (err) {
      throw new SafetensorsError(src.info(key).file, `bitsandbytes quant state is not JSON (${(err as Error).message})`, key);
    }
    state.quant_type ??= kind;
    if (!Array.isArray(state.shape)) throw new SafetensorsError(src.info(key).file, "bitsandbytes quant state has no shape", key);
    return state;
  }
  return null;
}

export interface CheckpointReport {
  /** Tensors in the checkpoint that the config does not use (e.g. rotary inv_freq buffers, a tied lm_head copy). */
  unexpected: string[];
  /** Weights stored as bitsandbytes 4-bit (name → quant state). */
  quantized: Map<string, BnbQuantState>;
}

/**
 * Checks every parameter of the config against the checkpoint. Throws one SafetensorsError listing all problems
 * (missing tensors, shape mismatches with config.json, integer dtypes where floats are expected).
 */
export async function validateCheckpoint(src: TensorSource, config: ModelConfig, label = "checkpoint"): Promise<CheckpointReport> {
  const problems: string[] = [];
  const quantized = new Map<string, BnbQuantState>();
  const expected = new Set<string>();
  for (const p of parameterSpecs(config)) {
    expected.add(p.name);
    if (!src.has(p.name)) {
      problems.push(`missing tensor ${p.name} (expected shape [${p.shape.join(", ")}])`);
      continue;
    }
    const info = src.info(p.name);
    if (info.dtype === "U8") {
      const q = await readBnbQuantState(src, p.name);
      if (!q) {
        problems.push(`${info.file}: tensor ${p.name} is U8 but has no bitsandbytes quant state`);
        continue;
      }
      for (const s of BNB_SUFFIXES) expected.add(p.name + s);
      if (!sameShape(q.shape, p.shape)) problems.push(`${info.file}: tensor ${p.name} has shape [${q.shape.join(", ")}] (4-bit) but config.json implies [${p.shape.join(", ")}]`);
      else if (info.numel * 2 !== p.shape.reduce((a, b) => a * b, 1)) problems.push(`${info.file}: tensor ${p.name} holds ${info.numel} bytes, not the ${p.shape.reduce((a, b) => a * b, 1) / 2} a 4-bit [${p.shape.join(", ")}] needs`);
      quantized.set(p.name, q);
      continue;
    }
    if (!FLOAT_DTYPES.includes(info.dtype)) {
      problems.push(`${info.file}: tensor ${p.name} has dtype ${info.dtype}, expected a float type`);
      continue;
    }
    if (!sameShape(info.shape, p.shape)) problems.push(`${info.file}: tensor ${p.name} has shape [${info.shape.join(", ")}] but config.json implies [${p.shape.join(", ")}]`);
  }
  if (problems.length > 0) {
    const shown = problems.slice(0, 20).join("\n  ");
    const more = problems.length > 20 ? `\n  … and ${problems.length - 20} more` : "";
    throw new SafetensorsError(label, `checkpoint does not match config.json (${config.architecture}, ${config.numLayers} layers):\n  ${shown}${more}`);
  }
  return { unexpected: src.names().filter((n) => !expected.has(n)), quantized };
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** A checkpoint opened and validated against its config.json. Close it when done. */
export interface OpenedCheckpoint {
  dir: string;
  config: ModelConfig;
  tensors: SafetensorsCheckpoint;
  report: CheckpointReport;
}

/** Opens `dir`/config.json and the safetensors next to it, and validates them together. */
export async function openCheckpoint(dir: string): Promise<OpenedCheckpoint> {
  const config = await loadModelConfig(join(dir, "config.json"));
  const tensors = await SafetensorsCheckpoint.open(dir);
  try {
    const report = await validateCheckpoint(tensors, config, tensors.path);
    return { dir, config, tensors, report };
  } catch (err) {
    await tensors.close();
    throw err;
  }
}

/** Weights by HF name (tied lm_head is not duplicated: use the embedding). */
export type WeightMap = Map<string, Float32Array | Float64Array>;

export interface LoadedModel {
  dir: string;
  config: ModelConfig;
  weights: WeightMap;
}

/** Loads all (float) weights of a checkpoint as f32 — for small models (reference, tests, export). */
export async function loadModel(dir: string): Promise<LoadedModel> {
  const ck = await openCheckpoint(dir);
  try {
    if (ck.report.quantized.size > 0) throw new SafetensorsError(ck.tensors.path, "4-bit (bitsandbytes) weights cannot be loaded as floats here; dequantise first");
    const weights: WeightMap = new Map();
    for (const p of parameterSpecs(ck.config)) weights.set(p.name, await ck.tensors.readF32(p.name));
    return { dir, config: ck.config, weights };
  } finally {
    await ck.tensors.close();
  }
}

/** The weight of a spec from a map, with a clear error when absent or of the wrong size. */
export function getWeight(weights: WeightMap, p: Pick<ParamSpec, "name" | "shape">): Float32Array | Float64Array {
  const w = weights.get(p.name);
  if (!w) throw new Error(`missing weight ${p.name}`);
  const n = p.shape.reduce((a, b) => a * b, 1);
  if (w.length !== n) throw new Error(`weight ${p.name} has ${w.length} values, expected ${n} for shape [${p.shape.join(", ")}]`);
  return w;
}
