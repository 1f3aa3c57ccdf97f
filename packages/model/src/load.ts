// Build a Decoder on an autograd engine from a Hugging Face checkpoint directory. Tensors stream one at a time:
// read (bf16/f16/f32 → f32) from the safetensors file, upload, drop — the JS heap never holds the whole model.
import type { Engine, Tensor } from "@nr/autograd";
import { openCheckpoint } from "./checkpoint.js";
import { paramName, type ModelConfig, type ParamRole } from "./config.js";
import { Decoder, DenseProjection, type DecoderLayer } from "./decoder.js";

export interface LoadDecoderOptions {
  /** Make the base weights trainable (full fine-tuning); default frozen. */
  trainable?: boolean;
}

export async function loadDecoder(engine: Engine, dir: string, opts: LoadDecoderOptions = {}): Promise<{ decoder: Decoder; config: ModelConfig }> {
  const ck = await openCheckpoint(dir);
  const c = ck.config;
  try {
    const get = async (role: ParamRole, layer?: number): Promise<Tensor> => {
      const name = paramName(role, layer);
      const info = ck.tensors.info(name);
      if (!info) throw new Error(`${ck.tensors.path}: tensor ${name} is missing`);
      const data = await ck.tensors.readF32(name);
      return engine.tensor(data, [...info.shape], { requiresGrad: opts.trainable ?? false, name });
    };
    const maybe = async (role: ParamRole, layer: number, present: boolean) => (present ? get(role, layer) : null);
    const embed = await get("embed");
    const layers: DecoderLayer[] = [];
    for (let i = 0; i < c.numLayers; i++) {
      layers.push({
        inputNorm: await get("inputNorm", i),
        q: new DenseProjection(await get("q", i), await maybe("qBias", i, c.qkvBias)),
        k: new DenseProjection(await get("k", i), await maybe("kBias", i, c.qkvBias)),
        v: new DenseProjection(await get("v", i), await maybe("vBias", i, c.qkvBias)),
        o: new DenseProjection(await get("o", i), await maybe("oBias", i, c.oBias)),
        qNorm: c.qkNorm ? await get("qNorm", i) : undefined,
        kNorm: c.qkNorm ? await get("kNorm", i) : undefined,
        postAttentionNorm: await get("postAttnNorm", i),
        gate: new DenseProjection(await get("gate", i)),
        up: new DenseProjection(await get("up", i)),
        down: new DenseProjection(await get("down", i)),
      });
    }
    const finalNorm = await get("finalNorm");
    const lmHead = c.tieWordEmbeddings ? embed : await get("lmHead");
    return { decoder: new Decoder(engine, c, { embed, layers, finalNorm, lmHead }), config: c };
  } finally {
    await ck.tensors.close();
  }
}
