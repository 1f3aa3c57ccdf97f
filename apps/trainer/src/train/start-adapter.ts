// The trainable policy adapter: freshly initialised (PEFT init), or with model.adapter the weights of a saved PEFT
// adapter (checked against the model's projections before anything on the GPU changes).
import { applyPeftAdapter, readPeftAdapter, type LoraConfig, type LoraModel } from "@nr/lora";
import type { Tensor } from "@nr/autograd";

/** Adds adapter "policy" (selected) and returns its trainable tensors in LoraModel.parameters order. */
export async function addPolicyAdapter(lora: LoraModel, cfg: LoraConfig, startDir: string | undefined, log: (l: string) => void): Promise<Tensor[]> {
  const fresh = lora.addAdapter("policy", cfg);
  if (startDir === undefined) return fresh;
  const data = await readPeftAdapter(lora, startDir);
  // The run's own config (dropout, seed) stays; rank, alpha and targets were checked equal to the file's.
  applyPeftAdapter(lora, { ...data, config: lora.configs.get("policy")! }, "policy", { trainable: true });
  lora.select("policy");
  log(`policy adapter starts from ${startDir}`);
  return lora.parameters("policy");
}
