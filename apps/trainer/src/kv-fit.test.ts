// The KV cache's binding check: sizes worked out by hand, nr train's pre-flight against a small fake limit, and the
// commands (generate, eval, serve) refusing before the weights load.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateModel, makeModelConfig } from "@nr/model";
import { kvCacheProblem, kvLayerBytes } from "./kv-fit.js";
import { preflightKvCache } from "./train/preflight.js";
import { fitReport } from "./fit.js";
import { resolveConfig } from "./run/index.js";
import { runGenerate } from "./commands/generate.js";
import { runEval } from "./commands/eval.js";
import { startServe } from "./commands/serve.js";

const QWEN = makeModelConfig({ architecture: "qwen2", hiddenSize: 1536, intermediateSize: 8960, numLayers: 28, numHeads: 12, numKvHeads: 2, vocabSize: 151936, tieWordEmbeddings: true, torchDtype: "bfloat16" });
const MiB = 2 ** 20;
const quiet = { log: () => {}, err: () => {} };

describe("kvCacheProblem", () => {
  it("sizes one layer's K cache as rows × tokens × kv heads × head dim × 4 bytes and says what would fit", () => {
    // Qwen2.5-1.5B: 2 KV heads of 128 → 1 KiB per row and token
    expect(kvLayerBytes(QWEN, 64, 640)).toBe(64 * 640 * 1024);
    expect(kvCacheProblem(QWEN, "x", 64, 640, 128 * MiB, "k")).toBeNull();
    expect(kvCacheProblem(QWEN, "x", 128, 1024, 128 * MiB, "k")).toBeNull(); // exactly 128 MiB fits
    const msg = kvCacheProblem(QWEN, "RL", 129, 1024, 128 * MiB, "rl.G")!;
    // 129 rows × 1024 tokens × 1 KiB = 129 MiB; 128 rows of 1024, or 129 rows of ⌊2²⁷ / 132096⌋ = 1016 tokens fit
    expect(msg).toMatch(/^RL: one layer's K \(and V\) cache for 129 sequences × 1024 tokens is 129\.0 MiB/);
    expect(msg).toMatch(/at most 128 sequences of 1024 tokens or 129 of 1016 tokens fit\. Lower rl\.G\./);
  });
});

describe("nr train pre-flight of the KV caches (a 4 MiB fake binding limit)", () => {
  const cfg = resolveConfig({ preset: "qwen2.5-math-1.5b-dr-grpo", overrides: { "model.dir": "/nowhere" }, checkPaths: false });
  it("names the RL and eval keys when their caches do not fit, and passes when they do", () => {
    // RL: 8 prompts × G 8 = 64 rows × (200 + the completion budget) tokens × 1 KiB ≫ 4 MiB
    expect(() => preflightKvCache(QWEN, cfg, 4 * MiB, { rl: 200, eval: 200 })).toThrow(/pre-flight, RL generation: .*rl\.promptsPerStep or rl\.G/);
    // eval alone: RL off, eval of 32 problems × (1 + samples) rows
    const evalOnly = resolveConfig({ preset: "qwen2.5-math-1.5b-dr-grpo", overrides: { "model.dir": "/nowhere", "rl.enabled": false }, checkPaths: false });
    let err = "";
    try {
      preflightKvCache(QWEN, evalOnly, 4 * MiB, { rl: 200, eval: 200 });
    } catch (e) {
      err = (e as Error).message;
    }
    expect(err).toMatch(/^pre-flight, eval: .*eval\.samples .*eval\.maxNewTokens/);
    expect(err).not.toMatch(/RL generation/);
    expect(() => preflightKvCache(QWEN, cfg, 4 * 2 ** 30, { rl: 200, eval: 200 })).not.toThrow();
  });

  it("nr doctor's report has the same verdict per phase", () => {
    const fits = fitReport(QWEN, cfg, { maxStorageBufferBindingSize: 4 * MiB, memoryBytes: null }, 200);
    const by = Object.fromEntries(fits.map((f) => [f.phase, f]));
    expect(by["RL generation"].fitsBinding).toBe(false);
    expect(by["eval generation"].fitsBinding).toBe(false);
    // 32 problems × (1 + eval.samples 4) = 160 rows: their decode logits (97 MB) outgrow the K cache here
    expect(by["eval generation"].shape).toMatch(/^160 rows × /);
    expect(by["eval generation"].knobs).toMatch(/eval\.samples/);
  });
});

describe("nr generate / eval / serve refuse a KV cache over the binding limit before loading", () => {
  let dir: string;
  let model: string;
  let limit = 0;
  beforeAll(async () => {
    const { createGpu } = await import("@nr/kernels");
    const gpu = await createGpu();
    limit = Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
    gpu.destroy();
    dir = await mkdtemp(join(tmpdir(), "nr-kv-fit-"));
    model = join(dir, "m");
    // 1 KV head of 16: 64 B per row and token, so 2²¹ row-tokens fill lavapipe's (and WebGPU's default) 128 MiB
    await generateModel(model, { architecture: "qwen2", hiddenSize: 32, numLayers: 1, numHeads: 2, numKvHeads: 1, tieWordEmbeddings: true, maxPositionEmbeddings: 8192 }, { seed: 1, dtype: "f32" });
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));
  // 64 × 64 rows × 600 tokens × 64 B = 150 MiB: over any 128 MiB limit (adapters with larger bindings skip this)
  const big = { batchSize: 64, samples: 64, maxNewTokens: 599 };

  it("generate", async (ctx) => {
    if (limit > 128 * MiB) return ctx.skip(); // this adapter would hold the cache and run the whole generation
    const args = { model, prompt: ["1+1="], temperature: 1, topP: 1, seed: 0, promptFormat: "raw" as const, skipBadRows: false, quiet: true, ...big };
    await expect(runGenerate(args, quiet)).rejects.toThrow(/^generate \(prompt ≥ 1 token \+ --max-new-tokens\): .*4096 sequences × 600 tokens is 150\.0 MiB.*--batch-size or --samples/);
  });
  it("eval", async (ctx) => {
    if (limit > 128 * MiB) return ctx.skip();
    const args = { model, data: "synthetic", n: 2, temperature: 1, topP: 1, seed: 0, promptFormat: "raw" as const, skipBadRows: false, quiet: true, ...big, samples: 63 };
    await expect(runEval(args as never, quiet)).rejects.toThrow(/^eval \(prompt ≥ 1 token \+ --max-new-tokens\): .*4096 sequences × 600 tokens.*--batch-size or --samples/);
  });
  it("serve", async (ctx) => {
    if (limit > 256 * MiB) return ctx.skip();
    await expect(startServe({ model, host: "127.0.0.1", port: 0, maxBatch: 512, contextLength: 8192, maxTokens: 16, maxBodyBytes: 2 ** 20, quiet: true } as never, quiet)).rejects.toThrow(/^serve: .*512 sequences × 8192 tokens is 256\.0 MiB.*--max-batch \(slots\) or --context-length/);
  });
});
