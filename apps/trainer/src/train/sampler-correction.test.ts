// Truncated importance sampling for remote rollouts (rl.rollout.tisCap → rlStep's samplerCorrection): a rollout
// source whose log-probs are the trainer's shifted by δ must scale every token's policy gradient by min(e^{−δ}, cap),
// so the step's gradient norm is the uncorrected one times that factor; without the flag the shift changes nothing.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGpu, type Gpu } from "@nr/kernels";
import { AdamW, Engine, GpuBackend } from "@nr/autograd";
import { generateModel, loadDecoder, loadTokenizer } from "@nr/model";
import { LoraModel } from "@nr/lora";
import { WebGpuGenerator, type PromptSpec, type SampleOptions } from "@nr/rollout";
import { preset } from "@nr/algos";
import { rlStep, type RolloutSource } from "./loop.js";

let gpu: Gpu;
let dir: string;
beforeAll(async () => {
  gpu = await createGpu();
  dir = await mkdtemp(join(tmpdir(), "nr-tis-"));
  await generateModel(dir, { architecture: "qwen2", hiddenSize: 32, intermediateSize: 64, numLayers: 1, numHeads: 2, numKvHeads: 1, tieWordEmbeddings: true }, { seed: 4, dtype: "f32", init: { std: 0.3 } });
});
afterAll(async () => {
  gpu?.destroy();
  await rm(dir, { recursive: true, force: true });
});

describe("sampler correction (truncated importance sampling)", () => {
  it("weights each token's policy gradient by min(π_trainer/π_sampler, cap)", async () => {
    const e = new Engine(new GpuBackend(gpu));
    const { decoder } = await loadDecoder(e, dir);
    const tok = await loadTokenizer(dir);
    const lora = new LoraModel(decoder);
    const params = lora.addAdapter("policy", { r: 4, alpha: 8, seed: 2 });
    const gen = new WebGpuGenerator(e, decoder, tok);
    // The local sampler's tokens, with every log-prob shifted by δ and no EOS (so every token carries the weight).
    const shifted = (delta: number): RolloutSource => ({
      generateIds: async (prompts: PromptSpec[], o: SampleOptions) =>
        (await gen.generateIds(prompts, o)).map((g) => g.map((q) => ({ ...q, finishReason: "length" as const, logprobs: q.logprobs.map((lp) => lp + delta) }))),
    });
    let k = 0;
    const reward = async () => {
      const correct = k++ % 2 === 0; // alternating: every group has spread, so every advantage is nonzero
      return { reward: correct ? 1 : 0, correct, formatOk: true };
    };
    const prompts = ["12 + 3 =", "7 * 2 ="].map((p) => ({ promptIds: tok.encode(p), gold: "0" }));
    const gradNorm = async (source: RolloutSource, correction: boolean, cap: number) => {
      k = 0;
      const algo = { ...preset("dr_grpo"), importanceSampling: { mode: "token_truncate" as const, cap } };
      // lr 1e-12: AdamW's first step moves the adapter by ~1e-12, so every call sees the same weights.
      const st = await rlStep(e, decoder, lora, new AdamW(params, { lr: 1e-12, weightDecay: 0 }), source, prompts, { algo, G: 4, temperature: 1, maxNewTokens: 6, lr: 1e-12, clipGradNorm: 1e9, ppoEpochs: 1, seed: 5, pad: tok.padTokenId ?? 0, eos: tok.stopTokenIds[0], reward, samplerCorrection: correction });
      return st.gradNorm;
    };
    const plain = await gradNorm(shifted(0), false, 2);
    expect(plain).toBeGreaterThan(0);
    expect(await gradNorm(shifted(0.5), false, 2)).toBeCloseTo(plain, 6); // measured, not used
    expect((await gradNorm(shifted(0.5), true, 1e9)) / plain).toBeCloseTo(Math.exp(-0.5), 4); // sampler more confident: weight e^{-δ}
    expect((await gradNorm(shifted(-1), true, 2)) / plain).toBeCloseTo(2, 4); // e^{1} truncated at the cap
    expect((await gradNorm(shifted(0), true, 2)) / plain).toBeCloseTo(1, 4);
  }, 120_000);
});
