// The memory report against the buffer pool's own accounting on the GPU: a small Qwen2-shaped model with an NF4
// base (and with an f16 base, where the adapter has shader-f16), LoRA adapters on all seven linears and AdamW state,
// one forward + backward with and without gradient checkpointing. Every part of the report (base, adapters, optimizer
// state, gradients + activations, total) must be within 10 % of what the pool measured; the f16 base's bytes must be
// exactly what the pool holds for its weights.
import { afterAll, beforeAll, describe, expect, it, type TestContext } from "vitest";
import { join } from "node:path";
import { gpuSuite } from "@nr/kernels/testing";
import { AdamW, Engine, GpuBackend } from "@nr/autograd";
import { generateModel, loadDecoder, makeBatch } from "@nr/model";
import { LoraModel } from "./lora.js";
import { memoryReport } from "./memory.js";

const t = gpuSuite("lora memory", { beforeAll, afterAll }, { tmpDir: true });

const CONFIG = { architecture: "qwen2" as const, hiddenSize: 64, intermediateSize: 176, numLayers: 3, numHeads: 4, numKvHeads: 2, vocabSize: 96, tieWordEmbeddings: true };
const LORA = { r: 8, alpha: 16, seed: 2 };
// (dropout is left out of the checkpointed run: a recomputed layer would draw new masks)

/** Load the generated model with this base, add adapters + AdamW, run one step; the pool's growth per part vs the report. */
async function measure(base: { quant: "nf4" } | { dtype: "f16" }, checkpoint: boolean, dropout: number) {
  const tag = "quant" in base ? base.quant : base.dtype;
  const modelDir = join(t.dir, `m-${tag}-${checkpoint}`);
  await generateModel(modelDir, CONFIG, { seed: 4, dtype: "bf16", tokenizer: false });
  const allocated = () => t.gpu.pool.getStats().allocatedBytes;
  await t.gpu.sync();
  t.gpu.pool.trim();
  const a0 = allocated();
  const e = new Engine(new GpuBackend(t.gpu));
  const { decoder, config } = await loadDecoder(e, modelDir, base);
  const a1 = allocated();
  const lora = new LoraModel(decoder);
  const params = lora.addAdapter("policy", { ...LORA, dropout });
  lora.setTraining(true);
  const a2 = allocated();
  const opt = new AdamW(params, { lr: 1e-3 });
  const a3 = allocated();
  const rows = Array.from({ length: 3 }, (_, b) => Array.from({ length: 40 - 7 * b }, (_, t) => (b * 11 + t * 5) % 96));
  await e.scope(async () => {
    const b = makeBatch(e, rows, { leftPad: true });
    const res = decoder.forward(b, { checkpoint });
    decoder.backward(res, Array.from(b.lossMask, (m) => -m), Array.from(b.lossMask, (m) => 0.1 * m));
    await params[0].grad!.read();
    return null;
  });
  const a4 = allocated();
  opt.update(1e-3);
  await t.gpu.sync();
  const tokens = rows.length * Math.max(...rows.map((r) => r.length));
  const rep = memoryReport(config, { ...LORA, dropout }, { tokens, checkpoint, ...("quant" in base ? { quant: "nf4" as const } : { quant: "none" as const, dtype: "f16" as const }), gpu: t.gpu });
  const measured = { base: a1 - a0, adapters: a2 - a1, optimizer: a3 - a2, step: a4 - a3, total: a4 - a0 };
  const reported = { base: rep.baseBytes, adapters: rep.adapterBytes, optimizer: rep.optimizerBytes, step: rep.gradientBytes + rep.activationBytes, total: rep.totalBytes };
  console.log(`${tag} base, checkpoint ${checkpoint}, ${tokens} tokens: ` + Object.keys(measured).map((k) => `${k} measured ${measured[k as keyof typeof measured]} B, reported ${reported[k as keyof typeof reported]} B`).join("; "));
  for (const k of Object.keys(measured) as Array<keyof typeof measured>) {
    expect(Math.abs(reported[k] - measured[k]), `${k}: reported ${reported[k]} B, pool ${measured[k]} B`).toBeLessThanOrEqual(0.1 * measured[k]);
  }
  // The activation part is a real share of the step (the test would not see a wrong activation model otherwise).
  expect(rep.activationBytes).toBeGreaterThan(0.5 * measured.step);
  return { rep, measured, config };
}

const CASES: Array<[boolean, number]> = [[false, 0.05], [true, 0]];

describe("memory report vs the buffer pool (NF4 base + LoRA + AdamW, one forward/backward)", () => {
  for (const [checkpoint, dropout] of CASES) {
    it(`matches the pool within 10 % (checkpointing ${checkpoint ? "on" : "off"}, LoRA dropout ${dropout})`, async () => {
      await measure({ quant: "nf4" }, checkpoint, dropout);
    });
  }
});

describe("memory report vs the buffer pool (f16 base + LoRA + AdamW, one forward/backward)", () => {
  for (const [checkpoint, dropout] of CASES) {
    it(`matches the pool within 10 % and the base exactly (checkpointing ${checkpoint ? "on" : "off"}, LoRA dropout ${dropout})`, async (ctx: TestContext) => {
      if (!t.gpu.hasF16) ctx.skip(`${t.gpu.adapterName} lacks shader-f16`);
      const { rep, measured, config } = await measure({ dtype: "f16" }, checkpoint, dropout);
      expect(rep.baseBytes).toBe(measured.base);
      // Half the f32 base's linear bytes (and table bytes): the f16 weights really are counted as f16.
      const f32 = memoryReport(config, { ...LORA, dropout }, { tokens: 120, checkpoint, quant: "none", gpu: t.gpu });
      expect(rep.baseLinearTensorBytes * 2).toBe(f32.baseLinearTensorBytes);
    });
  }

  it("refuses an f16 base with NF4 (as loadDecoder does)", () => {
    expect(() => memoryReport({ ...CONFIG, headDim: 16 }, LORA, { tokens: 8, checkpoint: false, quant: "nf4", dtype: "f16" })).toThrow(/cannot be combined with quant "nf4"/);
  });
});
