// Test kit of the rollout tests: a generator over a small random Qwen2-architecture checkpoint written to a temp folder.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGpu, type Gpu } from "@nr/kernels";
import { Engine, GpuBackend } from "@nr/autograd";
import { generateModel, loadDecoder, loadTokenizer, type Decoder, type ModelTokenizer } from "@nr/model";
import { WebGpuGenerator } from "./webgpu.js";

export interface TinyGenerator {
  gpu: Gpu;
  dir: string;
  engine: Engine;
  decoder: Decoder;
  tok: ModelTokenizer;
  gen: WebGpuGenerator;
  close(): Promise<void>;
}

/** hidden 32, 2 layers, 4/2 heads, tied embeddings; `std` scales the random init (a lower one loops sooner). */
export async function openTinyGenerator(label: string, o: { seed: number; std: number }): Promise<TinyGenerator> {
  const gpu = await createGpu();
  const dir = await mkdtemp(join(tmpdir(), `nr-${label}-`));
  await generateModel(dir, { architecture: "qwen2", hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, tieWordEmbeddings: true }, { seed: o.seed, dtype: "f32", init: { std: o.std } });
  const engine = new Engine(new GpuBackend(gpu));
  const { decoder } = await loadDecoder(engine, dir);
  const tok = await loadTokenizer(dir);
  const gen = new WebGpuGenerator(engine, decoder, tok);
  const close = async () => {
    gpu.destroy();
    await rm(dir, { recursive: true, force: true });
  };
  return { gpu, dir, engine, decoder, tok, gen, close };
}
