// PPO's critic (used when the algorithm's step plan says `critic`): its own LoRA adapter on the shared frozen base
// plus a linear value head on the final hidden state, trained by the same optimizer as the policy.
import { linear, type Tensor } from "@nr/autograd";
import type { Decoder, makeBatch } from "@nr/model";
import type { LoraConfig, LoraModel } from "@nr/lora";

export class Critic {
  readonly head: Tensor;
  readonly params: Tensor[];

  constructor(
    readonly lora: LoraModel,
    readonly decoder: Decoder,
    config: LoraConfig,
    readonly adapter = "critic",
  ) {
    const prev = lora.active;
    const adapterParams = lora.addAdapter(adapter, config); // addAdapter selects it: restore the previous choice
    lora.select(prev);
    const H = decoder.config.hiddenSize;
    // Zero-initialised head: V ≡ 0 at the start, so the first advantages are the plain returns.
    this.head = decoder.engine.tensor(new Float64Array(H), [1, H], { requiresGrad: true, name: "value_head.weight" });
    this.params = [...adapterParams, this.head];
  }

  /** V at every position of the batch, [B·T, 1] (position t = the state before token t + 1 is produced); `recompute`: activation recompute. */
  values(batch: ReturnType<typeof makeBatch>, recompute?: boolean): Tensor {
    return this.lora.withAdapter(this.adapter, () => linear(this.decoder.hidden(batch, { checkpoint: recompute }), this.head));
  }
}
