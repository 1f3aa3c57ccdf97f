// A PEFT adapter read straight into host memory (no GPU), and the merged weight W + s·B·A it gives a base
// parameter: what `nr export` needs to write base + adapter as one model, one tensor at a time. And the way back:
// a host adapter written in PEFT's layout.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { encodeFloats, paramName, parameterSpecs, SafetensorsFile, writeSafetensors, type ModelConfig, type ParamRole, type TensorToWrite } from "@nr/model";
import { LORA_TARGETS, loraScale, type LoraTarget } from "./lora.js";
import { deltaWeight, moduleKey, type HostAdapter } from "./merge.js";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, peftConfig, peftKey, readPeftConfig } from "./peft.js";

export const TARGET_ROLE: Record<LoraTarget, ParamRole> = { q_proj: "q", k_proj: "k", v_proj: "v", o_proj: "o", gate_proj: "gate", up_proj: "up", down_proj: "down" };

/** Reads PEFT adapter `dir` for a model of `config`, checking every A [r, in] and B [out, r] against its shapes. */
export async function readPeftAdapterToHost(dir: string, config: ModelConfig): Promise<HostAdapter> {
  const c = await readPeftConfig(dir);
  const path = join(dir, ADAPTER_WEIGHTS);
  const file = await SafetensorsFile.open(path);
  const shapes = new Map(parameterSpecs(config).map((p) => [p.name, p.shape]));
  try {
    const modules: HostAdapter["modules"] = new Map();
    for (let layer = 0; layer < config.numLayers; layer++) {
      for (const target of c.targets) {
        const [outF, inF] = shapes.get(paramName(TARGET_ROLE[target], layer))!;
        const read = async (which: "A" | "B", n: number, dims: string) => {
          const key = [peftKey(layer, target, which), peftKey(layer, target, which).replace(/\.weight$/, ".default.weight")].find((k) => file.has(k));
          if (!key) throw new Error(`${path}: missing ${peftKey(layer, target, which)} (is this adapter for this model?)`);
          const v = await file.readF32(key);
          if (v.length !== n) throw new Error(`${path}: ${key} has ${v.length} values, expected ${dims} for this model`);
          return Float64Array.from(v);
        };
        const A = await read("A", c.r * inF, `[${c.r}, ${inF}]`);
        const B = await read("B", outF * c.r, `[${outF}, ${c.r}]`);
        modules.set(moduleKey(layer, target), { layer, target, A, B, inF, outF });
      }
    }
    return { config: c, modules };
  } finally {
    await file.close();
  }
}

/** The adapter's module for base parameter `name` (a targeted linear weight), if any. */
function moduleOf(adapter: HostAdapter, name: string) {
  const m = /^model\.layers\.(\d+)\./.exec(name);
  if (!m) return undefined;
  const layer = Number(m[1]);
  const target = LORA_TARGETS.find((t) => name === paramName(TARGET_ROLE[t], layer));
  return target ? adapter.modules.get(moduleKey(layer, target)) : undefined;
}

/** W + s·B·A (float64) for a parameter the adapter targets; other parameters are returned unchanged. */
export function mergedWeight(adapter: HostAdapter, name: string, w: Float32Array | Float64Array): Float32Array | Float64Array {
  const m = moduleOf(adapter, name);
  if (!m) return w;
  const d = deltaWeight(m, adapter.config.r, loraScale(adapter.config));
  const merged = new Float64Array(w.length);
  for (let i = 0; i < w.length; i++) merged[i] = w[i] + d[i];
  return merged;
}

/** Writes a host adapter in PEFT's layout (adapter_config.json + f32 adapter_model.safetensors). */
export async function writeHostAdapter(adapter: HostAdapter, dir: string, baseModel = ""): Promise<void> {
  const tensors: TensorToWrite[] = [];
  for (const m of adapter.modules.values()) {
    tensors.push({ name: peftKey(m.layer, m.target, "A"), dtype: "F32", shape: [adapter.config.r, m.inF], data: () => encodeFloats(m.A, "F32") });
    tensors.push({ name: peftKey(m.layer, m.target, "B"), dtype: "F32", shape: [m.outF, adapter.config.r], data: () => encodeFloats(m.B, "F32") });
  }
  await mkdir(dir, { recursive: true });
  await writeSafetensors(join(dir, ADAPTER_WEIGHTS), tensors, { format: "pt" });
  await writeFile(join(dir, ADAPTER_CONFIG), JSON.stringify(peftConfig(adapter.config, baseModel), null, 2) + "\n");
}
