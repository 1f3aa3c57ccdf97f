// Move adapters between a LoraModel (device tensors) and host copies (float64) for merging and arithmetic.
import type { LoraModel } from "./lora.js";
import { moduleKey, type HostAdapter } from "./merge.js";

export async function adapterToHost(model: LoraModel, name: string): Promise<HostAdapter> {
  const config = model.configs.get(name);
  if (!config) throw new Error(`lora: no adapter named "${name}"`);
  const modules: HostAdapter["modules"] = new Map();
  for (const p of model.projections) {
    const ad = p.adapters.get(name);
    if (!ad) continue;
    modules.set(moduleKey(p.layer, p.target), { layer: p.layer, target: p.target, A: await ad.weights.A.read(), B: await ad.weights.B.read(), inF: p.inFeatures, outF: p.outFeatures });
  }
  return { config, modules };
}

export function hostToAdapter(model: LoraModel, adapter: HostAdapter, name: string, opts: { trainable?: boolean } = {}) {
  model.configs.set(name, adapter.config);
  for (const p of model.projections) {
    const m = adapter.modules.get(moduleKey(p.layer, p.target));
    if (m) p.setAdapter(name, adapter.config, m.A, m.B, opts.trainable ?? false);
  }
}
