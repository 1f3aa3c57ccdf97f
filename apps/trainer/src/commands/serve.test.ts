// nr serve on a generated model with a PEFT adapter written by our own saver: the adapter's name selects it (its
// greedy text equals the WebGpuGenerator's with the adapter loaded by hand), the base name serves the bare model, and
// bad flags fail before the GPU starts.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGpu } from "@nr/kernels";
import { Engine, GpuBackend } from "@nr/autograd";
import { generateModel, loadDecoder, loadTokenizer } from "@nr/model";
import { LoraModel, loadPeftAdapter, savePeftAdapter } from "@nr/lora";
import { randomizeAdapter } from "@nr/lora/testing";
import { OpenAIGenerator, WebGpuGenerator, type RunningServer } from "@nr/rollout";
import { parseAdapterSpecs, startServe } from "./serve.js";

let root: string;
let srv: RunningServer;
const quiet = { log: () => {}, err: () => {} };

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "nr-serve-cli-"));
  await generateModel(join(root, "base"), { architecture: "qwen2", hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, numKvHeads: 1, tieWordEmbeddings: true }, { seed: 3, dtype: "f32", init: { std: 0.3 } });
  // An adapter with nonzero B (PEFT init has B = 0, which would not change the model).
  const gpu = await createGpu();
  try {
    const e = new Engine(new GpuBackend(gpu));
    const { decoder } = await loadDecoder(e, join(root, "base"));
    const lora = new LoraModel(decoder);
    lora.addAdapter("a", { r: 4, alpha: 8 });
    randomizeAdapter(lora, "a", 12345);
    await savePeftAdapter(lora, "a", join(root, "adapter"));
  } finally {
    gpu.destroy();
  }
  srv = await startServe({ model: join(root, "base"), adapter: [`tuned=${join(root, "adapter")}`], host: "127.0.0.1", port: 0, maxBatch: 4, maxBodyBytes: 1 << 16, contextLength: 64, quiet: true }, quiet);
});
afterAll(async () => {
  await srv?.close();
  rmSync(root, { recursive: true, force: true });
});

describe("nr serve", () => {
  it("serves the base under its folder name and the adapter under its name", async () => {
    const models = (await (await fetch(`${srv.url}/models`)).json()) as { data: { id: string }[] };
    expect(models.data.map((m) => m.id)).toEqual(["base", "tuned"]);
    const req = { prompt: "12 + 30 =", n: 1, temperature: 0, maxNewTokens: 8 };
    const [viaBase] = await new OpenAIGenerator({ baseUrl: srv.url, model: "base" }).generate([req]);
    const [viaTuned] = await new OpenAIGenerator({ baseUrl: srv.url, model: "tuned" }).generate([req]);
    // Reference: the same checkpoint and adapter loaded by hand on a second device.
    const gpu = await createGpu();
    try {
      const e = new Engine(new GpuBackend(gpu));
      const { decoder } = await loadDecoder(e, join(root, "base"));
      const tok = await loadTokenizer(join(root, "base"));
      const gen = new WebGpuGenerator(e, decoder, tok);
      const [plain] = await gen.generate([req]);
      const lora = new LoraModel(decoder);
      await loadPeftAdapter(lora, join(root, "adapter"), "x");
      lora.select("x");
      const [tuned] = await gen.generate([req]);
      expect(viaBase.completions[0].text).toBe(plain.completions[0].text);
      expect(viaTuned.completions[0].text).toBe(tuned.completions[0].text);
      expect(tuned.completions[0].text).not.toBe(plain.completions[0].text);
    } finally {
      gpu.destroy();
    }
  });

  it("checks flags before loading anything", async () => {
    expect(() => parseAdapterSpecs(["base=x"], "base")).toThrow(/is the base model's served name/);
    expect(() => parseAdapterSpecs(["a=x", "a=y"], "base")).toThrow(/given twice/);
    expect(() => parseAdapterSpecs(["a b=x"], "base")).toThrow(/letters, digits/);
    expect(parseAdapterSpecs(["runs/r1/checkpoints/step-5"], "base")).toEqual([["step-5", "runs/r1/checkpoints/step-5"]]);
    await expect(startServe({ model: join(root, "nope"), host: "127.0.0.1", port: 0, maxBatch: 4, maxBodyBytes: 1 << 16 }, quiet)).rejects.toThrow(/--model .*nope: no such folder/);
    await expect(startServe({ model: join(root, "base"), adapter: [`t=${root}`], host: "127.0.0.1", port: 0, maxBatch: 4, maxBodyBytes: 1 << 16 }, quiet)).rejects.toThrow(/--adapter .*no adapter_config.json there/);
    await expect(startServe({ model: join(root, "base"), host: "127.0.0.1", port: 70000, maxBatch: 4, maxBodyBytes: 1 << 16 }, quiet)).rejects.toThrow(/--port 70000: expected an integer/);
  });
});
