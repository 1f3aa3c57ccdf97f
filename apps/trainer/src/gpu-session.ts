// The GPU session every model-facing command works in (nr train, eval, generate, curate, serve): one device, an
// engine over it, the decoder of a checkpoint folder (NF4 / f16 / f32 base), its tokenizer, a generator over both,
// and the LoRA wrapper when a command asks for one. `close()` destroys the device. The GPU packages are imported
// when a session opens, not when the CLI starts (`nr --help` stays fast).
import type { Gpu } from "@nr/kernels";
import type { Engine } from "@nr/autograd";
import type { Decoder, LoadDecoderOptions, ModelConfig, ModelTokenizer } from "@nr/model";
import type { LoraModel } from "@nr/lora";
import type { WebGpuGenerator } from "@nr/rollout";

export interface GpuSessionOptions extends Pick<LoadDecoderOptions, "quant" | "doubleQuant" | "dtype"> {
  /** HF checkpoint folder (config.json, *.safetensors, tokenizer.json). */
  modelDir: string;
  /** The tokenizer when the caller has loaded it already (else it is loaded from modelDir). */
  tokenizer?: ModelTokenizer;
  /** Context window of the generator (default: the generator's). */
  contextLength?: number;
  /** Checks that need the adapter's limits but must fail before the weights load (e.g. the KV cache's binding). */
  beforeLoad?: (gpu: Gpu, model: ModelConfig) => void;
}

export interface GpuSession {
  gpu: Gpu;
  engine: Engine;
  decoder: Decoder;
  tokenizer: ModelTokenizer;
  generator: WebGpuGenerator;
  /** The LoRA wrapper over the decoder, made on first use (one per session: adapters are named inside it). */
  lora(): LoraModel;
  /** Whether lora() has been called. */
  readonly hasLora: boolean;
  close(): void;
}

/** Open a device and load `modelDir` onto it; on failure the device is destroyed before the error is rethrown. */
export async function openGpuSession(o: GpuSessionOptions): Promise<GpuSession> {
  const [{ createGpu }, { Engine, GpuBackend }, { loadDecoder, loadModelConfig, loadTokenizer }, { LoraModel }, { WebGpuGenerator }] = await Promise.all([
    import("@nr/kernels"),
    import("@nr/autograd"),
    import("@nr/model"),
    import("@nr/lora"),
    import("@nr/rollout"),
  ]);
  const gpu = await createGpu();
  try {
    if (o.beforeLoad) o.beforeLoad(gpu, await loadModelConfig(o.modelDir));
    const engine = new Engine(new GpuBackend(gpu));
    const { decoder } = await loadDecoder(engine, o.modelDir, { quant: o.quant, doubleQuant: o.doubleQuant, dtype: o.dtype });
    const tokenizer = o.tokenizer ?? (await loadTokenizer(o.modelDir));
    const generator = new WebGpuGenerator(engine, decoder, tokenizer, { contextLength: o.contextLength });
    let lora: LoraModel | null = null;
    return {
      gpu, engine, decoder, tokenizer, generator,
      lora: () => (lora ??= new LoraModel(decoder)),
      get hasLora() {
        return lora !== null;
      },
      close: () => gpu.destroy(),
    };
  } catch (e) {
    gpu.destroy();
    throw e;
  }
}
