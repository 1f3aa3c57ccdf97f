// A miniature SFT → RL run on the GPU: a generated Qwen2 checkpoint with its byte-level tokenizer, the synthetic task,
// LoRA adapters. SFT must lower its loss; an RL step must sample, score, compute Dr. GRPO advantages and update only
// the adapter (the base bytes stay the same).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createGpu, type Gpu } from "@nr/kernels";
import { AdamW, Engine, GpuBackend } from "@nr/autograd";
import { generateModel, loadDecoder, loadTokenizer } from "@nr/model";
import { LoraModel } from "@nr/lora";
import { WebGpuGenerator } from "@nr/rollout";
import { ALGO_NAMES, preset } from "@nr/algos";
import { generateSynthetic, sftTarget } from "@nr/data";
import { Critic, rlStep, sftStep } from "./loop.js";

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

/** A model folder opened on the GPU with a fresh "policy" LoRA adapter. */
async function openPolicy(modelDir: string, adapter: { r: number; alpha: number; seed: number }) {
  const e = new Engine(new GpuBackend(gpu));
  const { decoder } = await loadDecoder(e, modelDir);
  const tok = await loadTokenizer(modelDir);
  const lora = new LoraModel(decoder);
  const params = lora.addAdapter("policy", adapter);
  return { e, decoder, tok, lora, params };
}

const exact = async (text: string, gold: string) => {
  const m = /\\boxed\{([^}]*)\}/.exec(text);
  const correct = m !== null && m[1].trim() === gold.trim();
  return { reward: correct ? 1 : 0, correct, formatOk: /<\/think>/.test(text) && m !== null };
};

describe("training loops on the GPU (miniature)", () => {
  it("SFT lowers the loss; an RL step runs end to end and changes only the adapter", async () => {
    const { e, decoder, tok, lora, params } = await openPolicy(dir, { r: 8, alpha: 16, seed: 0 });
    const opt = new AdamW(params, { lr: 0.02, weightDecay: 0 });
    const train = generateSynthetic({ count: 4, seed: 3, maxSteps: 1, maxOperand: 9 });
    const examples = train.map((r) => ({ promptIds: tok.encode(`${r.problem}\n`), completionIds: tok.encode(sftTarget(r.solution ?? "", r.answer)).slice(0, 24) }));
    const pad = tok.padTokenId ?? 0;
    const first = await sftStep(e, decoder, opt, [examples.slice(0, 2), examples.slice(2)], { lr: 0.02, clipGradNorm: 1, pad, recompute: true });
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

  it("refuses a Critic the algorithm's step plan does not call for, and a missing one, before sampling", async () => {
    const { e, decoder, tok, lora, params } = await openPolicy(dir, { r: 4, alpha: 8, seed: 1 });
    const opt = new AdamW(params, { lr: 0.01, weightDecay: 0 });
    let sampled = 0;
    const source = { generateIds: async () => (sampled++, []) };
    const base = { G: 2, temperature: 1, maxNewTokens: 4, lr: 0.01, clipGradNorm: 1, ppoEpochs: 1, seed: 1, pad: tok.padTokenId ?? 0, eos: tok.stopTokenIds[0], reward: async () => ({ reward: 0, correct: false, formatOk: false }) };
    const prompts = [{ promptIds: tok.encode("1+1\n"), gold: "2" }];
    await expect(rlStep(e, decoder, lora, opt, source, prompts, { ...base, algo: preset("ppo") })).rejects.toThrow(/value.coef > 0\) but no Critic/);
    const critic = new Critic(lora, decoder, { r: 4, alpha: 8, seed: 2 });
    await expect(rlStep(e, decoder, lora, opt, source, prompts, { ...base, algo: preset("grpo"), critic })).rejects.toThrow(/value.coef = 0\) but a Critic/);
    expect(sampled).toBe(0);
  });

  it.each(ALGO_NAMES.map((a) => [a]))("an RL step of preset %s (K = 2 minibatches × 2 epochs, micro-batches of 3) updates the adapter", async (name) => {
    const { e, decoder, tok, lora, params } = await openPolicy(dir, { r: 4, alpha: 8, seed: 1 });
    // B = 0 at init would make every adapter identical to the base: give the policy a non-zero B first.
    for (const p of params) if (p.name.endsWith("lora_B")) p.storage = e.backend.upload(Array.from({ length: p.size }, (_, i) => 0.01 * Math.sin(i + 1)), "f32");
    await lora.copyAdapter("policy", "reference");
    lora.select("policy");
    const algo = preset(name);
    const critic = algo.value.coef > 0 ? new Critic(lora, decoder, { r: 4, alpha: 8, seed: 2 }) : undefined;
    const opt = new AdamW([...params, ...(critic?.params ?? [])], { lr: 0.01, weightDecay: 0 });
    const before = await Promise.all(params.map((p) => p.read()));
    const headBefore = critic ? await critic.head.read() : null;
    const train = generateSynthetic({ count: 6, seed: 5, maxSteps: 1, maxOperand: 9 });
    const prompts = train.map((r) => ({ promptIds: tok.encode(`${r.problem}\n`), gold: r.answer }));
    // Rewards alternate so every group has signal (dynamic sampling keeps it); the verifier is not under test here.
    let k = 0;
    const reward = async () => {
      const correct = k++ % 2 === 0;
      return { reward: correct ? 1 : 0, correct, formatOk: true };
    };
    const stats = await rlStep(e, decoder, lora, opt, new WebGpuGenerator(e, decoder, tok), prompts.slice(0, 2), {
      algo, G: 4, temperature: 1, maxNewTokens: 6, lr: 0.01, clipGradNorm: 1, ppoEpochs: 2, miniBatches: 2, microBatchRows: 3,
      seed: 11, pad: tok.padTokenId ?? 0, eos: tok.stopTokenIds[0], reward, reference: "reference", critic, morePrompts: (n) => prompts.slice(2, 2 + n),
    });
    expect(stats.skipped).toBe(false);
    expect(stats.noSignal).toBe(false);
    expect(Number.isFinite(stats.loss) && Number.isFinite(stats.gradNorm)).toBe(true);
    expect(stats.groupsKept).toBe(2);
    const after = await Promise.all(params.map((p) => p.read()));
    expect(after.some((a, i) => a.some((v, j) => v !== before[i][j]))).toBe(true);
    if (algo.kl.beta > 0 && algo.kl.placement === "loss") expect(stats.kl).toBeGreaterThanOrEqual(0);
    if (critic) {
      expect(Array.from(await critic.head.read()).some((v, i) => v !== headBefore![i])).toBe(true);
      expect(typeof stats.extra["value/explained_var"]).toBe("number");
    }
  }, 120_000);
});

// The policy gradient must point the right way: the committed base model answers a "Q: … A:" prompt in its plain
// format ("… The answer is 21.") about three times in four and in the reasoning format (`\boxed{}`) otherwise. A
// reward for the reasoning format alone (a change of habit, R1-Zero style) must climb from that base rate to
// (nearly) always within a dozen Dr. GRPO steps. A sign or advantage bug leaves it at, or drives it below, the base rate.
describe("RL learns a reachable reward", () => {
  const modelDir = fileURLToPath(new URL("../../../../models/nr-tiny-math", import.meta.url));
  it("Dr. GRPO on models/nr-tiny-math: the share of completions in the \\boxed{} format climbs to ≥ 0.9", async () => {
    const { e, decoder, tok, lora, params } = await openPolicy(modelDir, { r: 16, alpha: 32, seed: 1 });
    const opt = new AdamW(params, { lr: 1e-3, weightDecay: 0 });
    const problems = generateSynthetic({ count: 96, seed: 5, minSteps: 1, maxSteps: 1, maxOperand: 12, maxValue: 40 });
    const prompts = problems.map((r) => ({ promptIds: tok.encode(`Q: ${r.problem}\nA: `), gold: r.answer }));
    const reward = async (text: string) => {
      const boxed = text.includes("\\boxed{");
      return { reward: boxed ? 1 : 0, correct: boxed, formatOk: boxed };
    };
    const gen = new WebGpuGenerator(e, decoder, tok);
    const means: number[] = [];
    for (let step = 0; step < 12; step++) {
      const s = await rlStep(e, decoder, lora, opt, gen, prompts.slice(step * 8, step * 8 + 8), {
        algo: preset("dr_grpo"), G: 8, temperature: 1, maxNewTokens: 30, lr: 1e-3, clipGradNorm: 1, ppoEpochs: 1, miniBatches: 1,
        seed: 11 + step, pad: tok.padTokenId ?? 0, eos: tok.stopTokenIds[0], reward,
      });
      means.push(s.samples.reduce((a, x) => a + x.reward, 0) / s.samples.length);
    }
    console.log(`share of \\boxed{} completions per RL step: ${means.map((m) => m.toFixed(2)).join(" ")}`);
    expect(means[0]).toBeLessThan(0.6);
    expect((means[10] + means[11]) / 2).toBeGreaterThanOrEqual(0.9);
  }, 180_000);
});
