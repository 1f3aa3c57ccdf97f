// nr doctor --model: the per-phase fit (memory estimate, largest binding, knobs) against sizes worked out by hand,
// and the doctor on a generated checkpoint.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateModel, makeModelConfig } from "@nr/model";
import { memoryReport } from "@nr/lora";
import { fitReport, rowsPerForward } from "./fit.js";
import { doctor } from "./doctor.js";
import { resolveConfig } from "./run/index.js";

let dir: string;
beforeAll(async () => (dir = await mkdtemp(join(tmpdir(), "nr-fit-"))));
afterAll(async () => rm(dir, { recursive: true, force: true }));

// Qwen2.5-Math-1.5B's shape
const QWEN = makeModelConfig({ architecture: "qwen2", hiddenSize: 1536, intermediateSize: 8960, numLayers: 28, numHeads: 12, numKvHeads: 2, vocabSize: 151936, tieWordEmbeddings: true, torchDtype: "bfloat16" });
const MiB = 2 ** 20;

describe("fitReport", () => {
  const cfg = resolveConfig({ preset: "qwen2.5-math-1.5b-dr-grpo", overrides: { "model.dir": "/nowhere" }, checkPaths: false });

  it("splits the Qwen preset's SFT and RL batches to fit a 128 MiB binding, and names the knobs", () => {
    const fits = fitReport(QWEN, cfg, { maxStorageBufferBindingSize: 128 * MiB, memoryBytes: 24 * 2 ** 30 }, 256);
    const by = Object.fromEntries(fits.map((f) => [f.phase, f]));
    // the 933 MB f32 table is split into 7 shards of 21840 rows (⌊2²⁷ / 6144⌋ = 21845 → a multiple of 8)
    expect(by.load.largestBinding).toMatch(/7 shards of 21840 rows/);
    expect(by.load.largestBindingBytes).toBe(21840 * 1536 * 4);
    expect(by.load.fitsBinding).toBe(true);
    // SFT: 4 × 1024 tokens × 8960 × 4 bytes = 140 MiB > 128 MiB, so the batch runs 3 rows at a time
    expect(by["SFT step"].shape).toBe("3 × 1024 tokens");
    expect(by["SFT step"].largestBindingBytes).toBe(3 * 1024 * 8960 * 4);
    expect(by["SFT step"].fitsBinding).toBe(true);
    expect(by["SFT step"].knobs).toMatch(/sft\.batchSize.*sft\.maxSeqLen/);
    expect(by["SFT step"].estimateBytes).toBe(memoryReport(QWEN, { r: 16, alpha: 32, dropout: 0.05 }, { tokens: 3072, checkpoint: true, quant: "nf4", doubleQuant: true }).totalBytes);
    // RL generation: 8 prompts × G 8 = 64 rows of 256 + 384 tokens; one layer's K cache 64·640·2·128·4 B = 40 MiB
    expect(by["RL generation"].shape).toBe("64 rows × 640 tokens");
    expect(by["RL generation"].largestBindingBytes).toBe(64 * 640 * 256 * 4);
    expect(by["RL generation"].fitsBinding).toBe(true);
    // RL training: 16 rows per minibatch capped to the 5 whose [5·640 × 8960] f32 activation fits 128 MiB
    expect(by["RL training step"].shape).toBe("5 rows × 640 tokens");
    expect(by["RL training step"].fitsBinding).toBe(true);
    expect(by["RL training step"].knobs).toMatch(/rl\.microBatchRows/);
  });

  it("fits with the knobs turned; a small memory is reported as too small; unknown memory is not judged", () => {
    const small = resolveConfig({ preset: "qwen2.5-math-1.5b-dr-grpo", overrides: { "model.dir": "/nowhere", "sft.batchSize": 1, "rl.microBatchRows": 2 }, checkPaths: false });
    const fits = fitReport(QWEN, small, { maxStorageBufferBindingSize: 128 * MiB, memoryBytes: 2 * 2 ** 30 }, 256);
    expect(fits.every((f) => f.fitsBinding)).toBe(true);
    expect(fits.find((f) => f.phase === "load")!.fitsMemory).toBe(true); // NF4 base ≈ 1.6 GiB
    expect(fits.find((f) => f.phase === "SFT step")!.fitsMemory).toBe(false);
    expect(fitReport(QWEN, small, { maxStorageBufferBindingSize: 128 * MiB, memoryBytes: null }, 256).every((f) => f.fitsMemory === null)).toBe(true);
  });

  it("Qwen2.5-7B's 18,944 × 3,584 MLP (136 MB in bf16) loads as row blocks", () => {
    const q7 = makeModelConfig({ architecture: "qwen2", hiddenSize: 3584, intermediateSize: 18944, numLayers: 28, numHeads: 28, numKvHeads: 4, vocabSize: 152064, tieWordEmbeddings: false, torchDtype: "bfloat16" });
    const load = fitReport(q7, cfg, { maxStorageBufferBindingSize: 128 * MiB, memoryBytes: null }, 256)[0];
    expect(load.fitsBinding).toBe(true);
    // tables: ⌊2²⁷ / 14336⌋ = 9362 → 9360 rows of f32; the MLP: ⌊2²⁷ / 7168⌋ = 18724 → 18720 rows of bf16 (2 blocks)
    expect(load.largestBindingBytes).toBe(Math.max(9360 * 3584 * 4, 18720 * 3584 * 2));
  });

  it("an f16 base binds f16 table shards and f16 linears", () => {
    const f16 = resolveConfig({ preset: "qwen2.5-math-1.5b-dr-grpo", overrides: { "model.dir": "/nowhere", "model.quant": "none", "model.dtype": "f16", "model.doubleQuant": false }, checkPaths: false });
    const load = fitReport(QWEN, f16, { maxStorageBufferBindingSize: 128 * MiB, memoryBytes: null }, 256)[0];
    expect(load.largestBinding).toMatch(/4 shards of 43688 rows/); // ⌊2²⁷ / 3072⌋ = 43690 → 43688
  });
});

describe("rowsPerForward", () => {
  it("caps RL rows so the MLP activation fits one binding; no cap off the GPU", async () => {
    const { createGpu } = await import("@nr/kernels");
    const { CpuBackend, Engine, GpuBackend } = await import("@nr/autograd");
    const gpu = await createGpu();
    try {
      // 128 MiB / (640 tokens × 8960 × 4 B) = 5.85 → 5 rows of Qwen2.5-Math-1.5B's shape per forward
      expect(rowsPerForward(new Engine(new GpuBackend(gpu, { maxShardBytes: 128 * MiB })), QWEN, 640)).toBe(5);
      expect(rowsPerForward(new Engine(new GpuBackend(gpu, { maxShardBytes: 1000 })), QWEN, 640)).toBe(1);
      expect(rowsPerForward(new Engine(new CpuBackend()), QWEN, 640)).toBe(0);
    } finally {
      gpu.destroy();
    }
  });
});

describe("sftStep over a batch split to fit the binding", () => {
  it("gives the loss and adapter update of the unsplit batch", async () => {
    const { createGpu } = await import("@nr/kernels");
    const { AdamW, Engine, GpuBackend } = await import("@nr/autograd");
    const { loadDecoder } = await import("@nr/model");
    const { LoraModel } = await import("@nr/lora");
    const { sftStep } = await import("./train/loop.js");
    const modelDir = join(dir, "sft-split");
    await generateModel(modelDir, { architecture: "qwen2", hiddenSize: 32, intermediateSize: 64, numLayers: 1, numHeads: 2, numKvHeads: 1, tieWordEmbeddings: true }, { seed: 2, dtype: "f32", init: { std: 0.2 } });
    const examples = [[5, 9, 2, 17, 3, 8], [11, 4, 30], [1, 2, 3, 4, 5, 6, 7, 8, 9]].map((ids) => ({ promptIds: ids.slice(0, 2), completionIds: ids.slice(2) }));
    const gpu = await createGpu();
    try {
      const run = async (maxShardBytes?: number) => {
        const e = new Engine(new GpuBackend(gpu, { maxShardBytes }));
        const { decoder } = await loadDecoder(e, modelDir);
        const lora = new LoraModel(decoder);
        const params = lora.addAdapter("policy", { r: 4, alpha: 8, seed: 3 });
        let forwards = 0;
        const forward = decoder.forward.bind(decoder);
        decoder.forward = (batch, o) => (forwards++, forward(batch, o));
        const stats = await sftStep(e, decoder, new AdamW(params, { lr: 0.01 }), [examples], { lr: 0.01, clipGradNorm: 1, pad: 0 });
        return { loss: stats.loss, forwards, params: await Promise.all(params.map((p) => p.read())) };
      };
      const whole = await run();
      // 9 tokens × 64 × 4 B = 2304 B per row: a 2400-byte binding holds one row, so three forwards
      const split = await run(2400);
      expect([whole.forwards, split.forwards]).toEqual([1, 3]);
      expect(Math.abs(split.loss - whole.loss)).toBeLessThan(1e-5 * Math.abs(whole.loss));
      split.params.forEach((p, i) => p.forEach((v, j) => expect(Math.abs(v - whole.params[i][j])).toBeLessThan(1e-5)));
    } finally {
      gpu.destroy();
    }
  });
});

describe("nr doctor --model", () => {
  it("reports every phase of the default preset for a generated checkpoint, and refuses a bad --memory", async () => {
    const modelDir = join(dir, "m");
    await generateModel(modelDir, { architecture: "qwen2", hiddenSize: 32, numLayers: 2, numHeads: 2, numKvHeads: 1, tieWordEmbeddings: true }, { seed: 1, dtype: "bf16" });
    const r = await doctor({}, { model: modelDir, memoryGiB: 1 });
    expect(r.fit!.phases.map((p) => p.phase)).toEqual(["load", "SFT step", "RL generation", "RL training step", "eval generation"]);
    expect(r.fit!.phases.every((p) => p.fitsMemory && p.fitsBinding)).toBe(true);
    await expect(doctor({}, { model: modelDir, memoryGiB: -1 })).rejects.toThrow(/--memory must be a positive number/);
    await expect(doctor({}, { model: join(dir, "missing") })).rejects.toThrow(/missing/);
  });
});
