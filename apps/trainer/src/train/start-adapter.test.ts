// model.adapter: an RL run that starts from an SFT run's adapter holds exactly its weights (before any update), uses it
// as the KL reference, and refuses an adapter of another shape before the GPU starts.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SafetensorsFile } from "@nr/model";
import { ConfigError, resolveConfig, type TrainConfig } from "../run/index.js";
import { runPipeline } from "./pipeline.js";

const mini = (name: string, extra: [string, unknown][] = []): TrainConfig =>
  resolveConfig({
    overrides: [
      ["name", name],
      ["model.generate.hidden", 32], ["model.generate.layers", 1], ["model.generate.heads", 2], ["model.generate.kvHeads", 1], ["model.generate.intermediate", 64],
      ["data.trainSize", 16], ["data.evalSize", 4], ["eval.n", 4], ["eval.maxNewTokens", 8], ["eval.every", 0], ["eval.samples", 0],
      ["sft.batchSize", 4], ["sft.steps", 3], ["sft.warmup", 0], ["sft.lr", 0.02],
      ["rl.steps", 1], ["rl.G", 2], ["rl.promptsPerStep", 2], ["rl.maxNewTokens", 8], ["rl.algo", "grpo"],
      ...extra,
    ],
  });

async function tensors(dir: string): Promise<Map<string, Float32Array>> {
  const f = await SafetensorsFile.open(join(dir, "adapter_model.safetensors"));
  try {
    const out = new Map<string, Float32Array>();
    for (const n of f.names()) out.set(n, await f.readF32(n));
    return out;
  } finally {
    await f.close();
  }
}

let cwd: string;
let sftRun: string;
beforeAll(async () => {
  cwd = await mkdtemp(join(tmpdir(), "nr-start-adapter-"));
  sftRun = (await runPipeline(mini("sft", [["rl.enabled", false]]), { cwd, log: () => {} })).runDir;
}, 300_000);
afterAll(async () => {
  await rm(cwd, { recursive: true, force: true });
});

describe("model.adapter", () => {
  const from = (name: string, extra: [string, unknown][]) =>
    mini(name, [["model.dir", join(sftRun, "model")], ["model.adapter", join(sftRun, "best")], ["sft.enabled", false], ...extra]);

  it("starts the policy from the adapter's weights and evaluates it as the start", async () => {
    const lines: string[] = [];
    const { runDir, summary } = await runPipeline(from("zero-steps", [["rl.steps", 0]]), { cwd, log: (l) => lines.push(l) });
    expect(lines.some((l) => l.includes(`policy adapter starts from ${join(sftRun, "best")}`))).toBe(true);
    const [a, b] = [await tensors(join(sftRun, "best")), await tensors(join(runDir, "best"))];
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    let nonzeroB = 0;
    for (const [k, v] of a) {
      expect(b.get(k), k).toEqual(v);
      if (k.includes("lora_B") && v.some((x) => x !== 0)) nonzeroB++;
    }
    expect(nonzeroB).toBeGreaterThan(0); // SFT moved B away from its zero init: a fresh adapter would differ
    const sft = JSON.parse(await readFile(join(sftRun, "summary.json"), "utf8"));
    expect(summary.eval_before).toEqual(sft.eval_after);
    expect(summary.eval_base).toEqual(sft.eval_base);
  }, 300_000);

  it("uses the start adapter as the RL reference (KL 0 before the first update)", async () => {
    const { runDir } = await runPipeline(from("one-step", [["rl.algoConfig", { kl: { beta: 0.04 } }]]), { cwd, log: () => {} });
    const rl = (await readFile(join(runDir, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l)).filter((m) => m.phase === "rl");
    expect(rl).toHaveLength(1);
    expect(Math.abs(rl[0].kl)).toBeLessThan(1e-5);
  }, 300_000);

  it("refuses an adapter whose rank or targets differ from the lora section, before any work", () => {
    const err = (() => {
      try {
        from("bad", [["lora.r", 4], ["lora.targets", ["q_proj"]]]);
      } catch (e) {
        return e as ConfigError;
      }
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect(err!.message).toMatch(/lora\.r = 4 differs from r = 16 in .*adapter_config\.json: set --lora\.r 16/);
    expect(err!.message).toMatch(/lora\.targets = q_proj differs from target_modules/);
    expect(() => mini("missing", [["model.adapter", join(cwd, "nope")]])).toThrow(/model\.adapter = ".*nope" does not exist/);
  });
});
