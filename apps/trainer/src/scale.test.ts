// The real model shape end to end (NR_SCALE=1 only; not in the default `pnpm test`): a random checkpoint with
// Qwen2.5-Math-1.5B-Instruct's config.json (vocab 151,936: the embedding table is 933 MB of f32, over a 128 MiB
// binding) and the real Qwen2.5 tokenizer, then through the CLI as a user runs it:
//   nr train --preset qwen2.5-math-1.5b-dr-grpo --model M --data gsm8k_test.jsonl   (1 SFT step, 1 RL step, 1-problem evals)
//   nr eval, nr generate, nr serve (one completion over HTTP) and nr export on the same model and the trained adapter.
// Needs ../shared/data (GSM8K + the tokenizer) and ~4 GB of RAM; on lavapipe (2 cores) about 30–40 minutes when idle.
// NR_SCALE_MODEL=DIR reuses (or writes once into) a checkpoint folder instead of a temp one.
//   NR_SCALE=1 npx vitest run src/scale.test.ts      (in apps/trainer, after the build)
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { MIN, nrCli as nr, scaleModel, scaleSkipReason, shared } from "./scale-kit.js";

const why = scaleSkipReason();
if (why) console.log(`scale end-to-end skipped: ${why}`);

let cwd: string;
let model: string;
beforeAll(async () => {
  if (why) return;
  cwd = await mkdtemp(join(tmpdir(), "nr-scale-"));
  model = await scaleModel(cwd);
}, 30 * MIN);
afterAll(async () => {
  if (cwd) await rm(cwd, { recursive: true, force: true });
});

describe.skipIf(why !== null)("the Qwen2.5-Math-1.5B shape end to end (NR_SCALE=1)", () => {
  const data = join(shared, "gsm8k_test.jsonl");
  // small enough for lavapipe, the preset's recipe otherwise: QLoRA NF4 + double quant, r16 all-linear, Dr. GRPO
  const small = ["--sft.steps", "1", "--sft.batchSize", "1", "--sft.warmup", "0", "--sft.maxSeqLen", "384",
    "--rl.steps", "1", "--rl.G", "2", "--rl.promptsPerStep", "1", "--rl.miniBatches", "1", "--rl.ppoEpochs", "1", "--rl.maxNewTokens", "8",
    "--eval.n", "1", "--eval.maxNewTokens", "8", "--eval.samples", "1", "--eval.every", "0", "--data.evalSize", "1", "--data.trainSize", "8",
    "--checkpoint.every", "1"];

  it("nr train with the Qwen preset: one SFT step, one RL step, evals, an adapter", async () => {
    const out = await nr(["train", "--preset", "qwen2.5-math-1.5b-dr-grpo", "--model", model, "--data", data, "--name", "scale", "--output.dir", join(cwd, "runs"), ...small], { cwd });
    expect(out).toMatch(/eval after RL/);
    const summary = JSON.parse(await readFile(join(cwd, "runs", "scale", "summary.json"), "utf8"));
    expect(summary).toBeTruthy();
    expect(existsSync(join(cwd, "runs", "scale", "best", "adapter_model.safetensors"))).toBe(true);
    const metrics = (await readFile(join(cwd, "runs", "scale", "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l));
    for (const m of metrics.filter((r) => r.phase === "sft" || r.phase === "rl")) expect(Number.isFinite(m.loss), JSON.stringify(m)).toBe(true);
  }, 150 * MIN); // ≈ 30 min on an idle 2-core lavapipe; a shared machine can take several times that

  it("nr eval, nr generate and nr export on the same model and adapter", async () => {
    const adapter = join(cwd, "runs", "scale", "best");
    const ev = await nr(["eval", "--model", model, "--adapter", adapter, "--data", data, "--n", "1", "--max-new-tokens", "4", "--out", join(cwd, "eval.json")], { cwd });
    expect(ev).toMatch(/1 problem|pass@1|accuracy/i);
    expect(JSON.parse(await readFile(join(cwd, "eval.json"), "utf8"))).toBeTruthy();
    const gen = await nr(["generate", "--model", model, "--quant", "nf4", "--prompt", "What is 2+3?", "--max-new-tokens", "2"], { cwd });
    expect(gen).toMatch(/prompt-1 \(2 tokens/);
    await nr(["export", "--model", model, "--adapter", adapter, "--out", join(cwd, "onnx"), "--dtype", "f16"], { cwd });
    expect(existsSync(join(cwd, "onnx", "config.json"))).toBe(true);
  }, 60 * MIN);

  it("nr serve answers one completion over HTTP (the base is served under its folder name)", async () => {
    const port = 18000 + Math.floor(Math.random() * 1000);
    let body: { choices: Array<{ text: string }> } | null = null;
    await nr(["serve", "--model", model, "--port", String(port)], {
      cwd,
      until: (out) => {
        if (!/listening on/.test(out)) return undefined;
        return (async () => {
          const r = await fetch(`http://127.0.0.1:${port}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: basename(model), prompt: "What is 2+3?", max_tokens: 2 }) });
          expect(r.status).toBe(200);
          body = (await r.json()) as { choices: Array<{ text: string }> };
        })();
      },
    });
    expect(body!.choices[0].text.length).toBeGreaterThanOrEqual(0);
    expect(body!.choices).toHaveLength(1);
  }, 30 * MIN);
});
