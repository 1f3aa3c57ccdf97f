// TIR in the RL step: a scripted rollout source "writes" a python block token by token through the real TIR tool
// (the sandbox runs it and its output block is appended, toolMask 1), then the answer. The tool tokens must be out of the loss (trained tokens = the policy's tokens + EOS)
// and out of the sampler/trainer log-prob check: the script gives exact log-probs for the policy's tokens and
// absurd ones (−50) for the tool's, so the measured mismatch stays ~0 only if the tool tokens are skipped.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGpu, type Gpu } from "@nr/kernels";
import { AdamW, Engine, GpuBackend } from "@nr/autograd";
import { generateModel, loadDecoder, loadTokenizer, makeBatch } from "@nr/model";
import { LoraModel } from "@nr/lora";
import { preset } from "@nr/algos";
import type { PromptSpec } from "@nr/rollout";
import { SandboxPool, TirTool } from "@nr/sandbox";
import { rlStep, type RolloutSource } from "./loop.js";

let gpu: Gpu;
let dir: string;
let pool: SandboxPool;
beforeAll(async () => {
  pool = new SandboxPool({ workers: 1, preload: [], pylibDirs: [] });
  gpu = await createGpu();
  dir = await mkdtemp(join(tmpdir(), "nr-tir-"));
  await generateModel(dir, { architecture: "qwen2", hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, tieWordEmbeddings: true }, { seed: 3, dtype: "f32", init: { std: 0.2 } });
});
afterAll(async () => {
  await pool?.close();
  gpu?.destroy();
  await rm(dir, { recursive: true, force: true });
});

describe("TIR rollouts in an RL step", () => {
  it("tool-output tokens are masked out of the loss and of the log-prob check, and counted", async () => {
    const e = new Engine(new GpuBackend(gpu));
    const { decoder } = await loadDecoder(e, dir);
    const tok = await loadTokenizer(dir);
    const lora = new LoraModel(decoder);
    const opt = new AdamW(lora.addAdapter("policy", { r: 4, alpha: 8, seed: 1 }), { lr: 0.01, weightDecay: 0 });
    const tool = new TirTool(pool, tok);
    /** The "model" writes the block one token at a time; the tool answers when it closes (as in the generator). */
    const writeWithTool = async (text: string) => {
      const session = tool.start();
      const ids: number[] = [], mask: number[] = [];
      for (const id of tok.encode(text)) {
        ids.push(id);
        mask.push(0);
        const call = session.afterToken(ids);
        if (call) for (const t of await call) ids.push(t), mask.push(1);
      }
      return { ids, mask };
    };
    let policyTokens = 0, toolTokens = 0;
    const scripted: RolloutSource = {
      async generateIds(prompts: PromptSpec[], o) {
        return Promise.all(
          prompts.map((p) =>
            Promise.all(
              Array.from({ length: p.n }, async (_, s) => {
                const block = await writeWithTool("```python\nprint(6 * 7)\n```");
                const answer = tok.encode(`So \\boxed{${s % 2 ? "41" : "42"}}`);
                const tokenIds = [...block.ids, ...answer];
                const toolMask = [...block.mask, ...answer.map(() => 0)];
                const lp = await e.scope(async () => e.noGrad(() => decoder.forward(makeBatch(e, [[...p.promptIds, ...tokenIds]]), { temperature: o.temperature })).logp.read());
                const logprobs = tokenIds.map((_, j) => (toolMask[j] ? -50 : lp[p.promptIds.length - 1 + j]));
                policyTokens += toolMask.filter((m) => !m).length + 1; // + the EOS the trainer appends
                toolTokens += toolMask.filter((m) => m).length;
                return { promptIds: p.promptIds, tokenIds, logprobs, toolMask, text: tok.decode(tokenIds), finishReason: "eos" as const };
              }),
            ),
          ),
        );
      },
    };
    const stats = await rlStep(e, decoder, lora, opt, scripted, [{ promptIds: tok.encode("What is 6 * 7?\n"), gold: "42" }], {
      algo: preset("dr_grpo"),
      G: 4,
      temperature: 1,
      maxNewTokens: 64,
      lr: 0.01,
      clipGradNorm: 1,
      ppoEpochs: 1,
      seed: 1,
      pad: tok.padTokenId ?? 0,
      eos: tok.stopTokenIds[0],
      reward: async (text, gold) => {
        const correct = text.includes(`\\boxed{${gold}}`);
        return { reward: correct ? 1 : 0, correct, formatOk: true };
      },
    });
    expect(stats.samples.map((s) => s.correct)).toEqual([true, false, true, false]);
    expect(stats.samples[0].text).toContain("```python\nprint(6 * 7)\n```\n```output\n42\n```\nSo \\boxed{42}");
    expect(tool.stats).toMatchObject({ completions: 4, calls: 4, errors: 0, timeouts: 0 });
    expect(toolTokens).toBeGreaterThan(0);
    expect(stats.trainTokens).toBe(policyTokens);
    expect(stats.logpMismatch).toBeLessThan(1e-3);
    expect(stats.extra["tir/calls_per_completion"]).toBe(1);
    expect(stats.extra["tir/tool_token_frac"]).toBeCloseTo(toolTokens / (toolTokens + policyTokens - 4), 10);
    expect(Number.isFinite(stats.loss) && stats.gradNorm > 0).toBe(true);
  });
});
