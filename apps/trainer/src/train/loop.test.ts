// A miniature SFT → RL run on the GPU: a generated Qwen2 checkpoint with its byte-level tokenizer, the synthetic task,
// LoRA adapters. SFT must lower its loss; an RL step must sample, score, compute Dr. GRPO advantages and update only
// the adapter (the base bytes stay the same).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGpu, type Gpu } from "@nr/kernels";
import { AdamW, Engine, GpuBackend } from "@nr/autograd";
import { generateModel, loadDecoder, loadTokenizer } from "@nr/model";
import { LoraModel } from "@nr/lora";
import { WebGpuGenerator } from "@nr/rollout";
import { preset } from "@nr/algos";
import { generateSynthetic, sftTarget } from "@nr/data";
import { rlStep, sftStep } from "./loop.js";

let gpu: Gpu;
let dir: string;
beforeAll(async () => {
  gpu = await createGpu();
  dir = await mkdtemp(join(tmpdir(), "nr-train-"));
  await generateModel(dir, { architecture: "qwen2", hiddenSize: 48, intermediateSize: 96, numLayers: 2, numHeads: 4, numKvHeads: 2, tieWordEmbeddings: true }, { seed: 1, dtype: "f32", init: { std: 0.2 } });
});
afterAll(async () => {
  gpu?.destroy();
  await rm(dir, { recursive: true, force: true });
});

const exact = async (text: string, gold: string) => {
  const m = /\\boxed\{([^}]*)\}/.exec(text);
  const correct = m !== null && m[1].trim() === gold.trim();
  return { reward: correct ? 1 : 0, correct, formatOk: /<\/think>/.test(text) && m !== null };
};

describe("training loops on the GPU (miniature)", () => {
  it("SFT lowers the loss; an RL step runs end to end and changes only the adapter", async () => {
    const e = new Engine(new GpuBackend(gpu));
    const { decoder } = await loadDecoder(e, dir);
    const tok = await loadTokenizer(dir);
    const lora = new LoraModel(decoder);
    const params = lora.addAdapter("policy", { r: 8, alpha: 16, seed: 0 });
    const opt = new AdamW(params, { lr: 0.02, weightDecay: 0 });
    const train = generateSynthetic({ count: 4, seed: 3, maxSteps: 1, maxOperand: 9 });
    const examples = train.map((r) => ({ promptIds: tok.encode(`${r.problem}\n`), completionIds: tok.encode(sftTarget(r.solution ?? "", r.answer)).slice(0, 24) }));
    const pad = tok.padTokenId ?? 0;
    const first = await sftStep(e, decoder, opt, [examples.slice(0, 2), examples.slice(2)], { lr: 0.02, clipGradNorm: 1, pad, checkpoint: true });
    let last = first;
    for (let i = 0; i < 3; i++) last = await sftStep(e, decoder, opt, [examples], { lr: 0.02, clipGradNorm: 1, pad });
    expect(first.skipped).toBe(false);
    expect(last.loss).toBeLessThan(first.loss);

    const embedBefore = await decoder.weights.embed.read();
    const gen = new WebGpuGenerator(e, decoder, tok);
    const stats = await rlStep(e, decoder, lora, opt, gen, train.slice(0, 2).map((r) => ({ promptIds: tok.encode(`${r.problem}\n`), gold: r.answer })), {
      algo: preset("dr_grpo"),
      G: 4,
      temperature: 1,
      maxNewTokens: 8,
      lr: 0.01,
      clipGradNorm: 1,
      ppoEpochs: 2,
      seed: 7,
      pad,
      eos: tok.stopTokenIds[0],
      reward: exact,
    });
    expect(stats.samples).toHaveLength(8);
    expect(Number.isFinite(stats.loss)).toBe(true);
    expect(stats.responseLengthMax).toBeLessThanOrEqual(9);
    expect(Array.from(await decoder.weights.embed.read())).toEqual(Array.from(embedBefore));
  });
});
