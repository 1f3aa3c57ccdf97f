// End to end on the GPU with miniature configs: model generation → eval → SFT → eval → RL → eval → files; a run
// killed with SIGKILL and resumed ends with the same bytes as an uninterrupted one; injected NaNs are skipped and
// rolled back.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { existsSync, readdirSync } from "node:fs";
import { spawn } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SafetensorsFile } from "@nr/model";
import { resolveConfig, type TrainConfig } from "../run/index.js";
import { runPipeline } from "./pipeline.js";

const mini = (name: string, extra: [string, unknown][] = []): TrainConfig =>
  resolveConfig({
    overrides: [
      ["name", name],
      ["model.generate.hidden", 32], ["model.generate.layers", 1], ["model.generate.heads", 2], ["model.generate.kvHeads", 1], ["model.generate.intermediate", 64],
      ["data.trainSize", 16], ["data.evalSize", 4], ["eval.n", 4], ["eval.maxNewTokens", 10], ["eval.every", 0], ["eval.samples", 2],
      ["sft.batchSize", 4], ["sft.steps", 3], ["sft.warmup", 0],
      ["rl.steps", 2], ["rl.G", 2], ["rl.promptsPerStep", 2], ["rl.maxNewTokens", 10],
      ["checkpoint.every", 1], ["checkpoint.keepLast", 20],
      ...extra,
    ],
  });

const readJsonl = async (p: string) => (await readFile(p, "utf8")).trim().split("\n").map((l) => JSON.parse(l));

let cwd: string;
beforeAll(async () => {
  cwd = await mkdtemp(join(tmpdir(), "nr-e2e-"));
});
afterAll(async () => {
  await rm(cwd, { recursive: true, force: true });
});

describe("nr train (miniature config)", () => {
  it("writes config, metrics, samples, summary, checkpoints and the report (QLoRA: NF4 base)", async () => {
    const lines: string[] = [];
    const { runDir, summary } = await runPipeline(mini("e2e", [["rl.steps", 2], ["eval.every", 1], ["model.quant", "nf4"], ["model.doubleQuant", true], ["sft.noThinkFraction", 0.75]]), { cwd, log: (l) => lines.push(l) });
    for (const f of ["config.json", "metrics.jsonl", "samples.jsonl", "summary.json", "report.html", "best/adapter_config.json"]) expect(existsSync(join(runDir, f)), f).toBe(true);
    // A hybrid-thinking cold start (sft.noThinkFraction 0.75) is reported with the count it picked.
    const hybrid = lines.find((l) => l.includes("targets answer without reasoning"));
    expect(hybrid).toMatch(/: (\d+) of 16 targets/);
    expect(Number(/: (\d+) of 16/.exec(hybrid!)![1])).toBeGreaterThan(0);
    const metrics = await readJsonl(join(runDir, "metrics.jsonl"));
    expect(metrics.filter((m) => m.phase === "sft")).toHaveLength(3);
    const rl = metrics.filter((m) => m.phase === "rl");
    expect(rl).toHaveLength(2);
    for (const m of [...rl, ...metrics.filter((m) => m.phase === "sft")]) {
      expect(Number.isFinite(m.loss), JSON.stringify(m)).toBe(true);
      expect(m.gpu_mem_mb).toBeGreaterThan(0);
    }
    for (const k of ["reward", "accuracy", "response_length", "truncation_rate", "entropy", "kl", "logp_mismatch", "generate_tokens_per_s", "train_tokens_per_s"]) expect(typeof rl[0][k], k).toBe("number");
    // The sampler's log-probs and the training forward's agree (same tokens, same temperature).
    expect(rl[0].logp_mismatch).toBeLessThan(1e-3);
    // eval rows: base, after SFT, after RL step 1 (periodic), after RL
    expect(metrics.filter((m) => m.phase === "eval").map((m) => m.eval_label)).toEqual(["base (no adapter)", "after SFT", "RL step 1", "after RL"]);
    const samples = await readJsonl(join(runDir, "samples.jsonl"));
    expect(samples).toHaveLength(2 * 2 * 2);
    // thinking_rate: the share of the step's samples with something besides whitespace inside <think>…</think>.
    const reasons = (c: unknown) => String(c).includes("<think>") && String(c).split("<think>")[1].split("</think>")[0].trim() !== "";
    for (const m of rl) {
      const own = samples.filter((x) => x.step === m.step);
      expect(m.thinking_rate, `step ${m.step}`).toBe(own.filter((x) => reasons(x.completion)).length / own.length);
    }
    expect(metrics.filter((m) => m.phase === "eval").every((m) => typeof m.eval_thinking_rate === "number" && Number.isInteger((m.eval_thinking_rate as number) * 4))).toBe(true);
    const s = JSON.parse(await readFile(join(runDir, "summary.json"), "utf8"));
    expect(s).toMatchObject({ algo: "dr_grpo", steps: 5, sft_steps: 3, rl_steps: 2, rollbacks: 0 });
    for (const k of ["eval_base", "eval_before", "eval_after"]) {
      expect(s[k].n).toBe(4);
      // eval.samples = 2: avg@2 over 4 problems × 2 samples, pass@2 over 4 problems, beside greedy.
      expect(s[k]).toMatchObject({ samples: 2, sample_temperature: 1 });
      expect(Number.isInteger(s[k].avg_at_k * 8) && s[k].avg_at_k <= s[k].pass_at_k && Number.isInteger(s[k].pass_at_k * 4), JSON.stringify(s[k])).toBe(true);
      // The thinking rate of the greedy completions and the mean length of the correct ones (null when none is).
      expect(Number.isInteger(s[k].thinking_rate * 4), JSON.stringify(s[k])).toBe(true);
      if (s[k].accuracy === 0 && s[k].avg_at_k === 0) expect(s[k].correct_length).toBeNull();
      else expect(s[k].correct_length).toBeGreaterThan(0);
    }
    expect(metrics.filter((m) => m.phase === "eval").every((m) => typeof m.eval_avg_at_k === "number" && m.eval_samples === 2)).toBe(true);
    expect(summary.wall_seconds).toBeGreaterThan(0);
    expect(lines.some((l) => l.startsWith("pre-flight: SFT step at 4 ×"))).toBe(true);
    expect(lines.some((l) => l.startsWith("eval after RL"))).toBe(true);
    expect(lines.some((l) => l.includes("base NF4 (double-quantised scales)"))).toBe(true);
    const ckpts = readdirSync(join(runDir, "checkpoints")).filter((d) => d.startsWith("step-"));
    expect(ckpts.length).toBe(5);
    for (const f of ["adapter/adapter_model.safetensors", "adapter/adapter_config.json", "trainer_state.json", "trainer_state.safetensors", "checkpoint.json"]) expect(existsSync(join(runDir, "checkpoints", "step-5", f)), f).toBe(true);
    expect(await readFile(join(runDir, "report.html"), "utf8")).toContain("<svg");
    // best/ holds the adapter summary.best names (the final one wins a tie with the periodic eval at RL step 1).
    expect(s.best).toMatchObject({ step: 5, dir: join(runDir, "best") });
    expect(await readFile(join(runDir, "best", "adapter_model.safetensors"))).toEqual(await readFile(join(runDir, "checkpoints", "step-5", "adapter", "adapter_model.safetensors")));
  }, 240_000);

  it("a run killed with SIGKILL and resumed ends with the same adapter bytes as an uninterrupted run", async () => {
    const child = fileURLToPath(new URL("./child-run.ts", import.meta.url));
    const runChild = (cfgPath: string, resumeDir?: string, killWhen?: (dir: string) => boolean) =>
      new Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }>((resolvePromise, reject) => {
        const p = spawn(process.execPath, ["--import", "tsx", child, cfgPath, cwd, ...(resumeDir ? [resumeDir] : [])], { stdio: ["ignore", "pipe", "pipe"], env: process.env });
        let out = "";
        p.stdout.on("data", (d) => (out += d));
        p.stderr.on("data", (d) => (out += d));
        const timer: ReturnType<typeof setInterval> | undefined = killWhen
          ? setInterval(() => {
              if (killWhen(out)) {
                clearInterval(timer);
                p.kill("SIGKILL");
              }
            }, 20)
          : undefined;
        p.on("error", reject);
        p.on("exit", (code, signal) => {
          if (timer) clearInterval(timer);
          resolvePromise({ code, signal, out });
        });
      });
    const cfgA = mini("straight"), cfgB = mini("killed");
    const pathA = join(cwd, "a.json"), pathB = join(cwd, "b.json");
    await writeFile(pathA, JSON.stringify(cfgA));
    await writeFile(pathB, JSON.stringify(cfgB));
    const a = await runChild(pathA);
    expect(a.code, a.out).toBe(0);
    const runB = join(cwd, "runs", "killed");
    // Kill during the first RL step, once the checkpoint after SFT step 3 (step-3) exists and RL is under way.
    const b1 = await runChild(pathB, undefined, () => existsSync(join(runB, "checkpoints", "step-3", "checkpoint.json")) && existsSync(join(runB, "checkpoints", "step-3", "adapter")));
    expect(b1.signal, b1.out).toBe("SIGKILL");
    expect(existsSync(join(runB, "summary.json"))).toBe(false);
    const b2 = await runChild(pathB, runB);
    expect(b2.code, b2.out).toBe(0);
    expect(b2.out).toMatch(/resumed at step [1-9]/);
    const runA = join(cwd, "runs", "straight");
    const final = (dir: string) => join(dir, "checkpoints", "step-5");
    expect(await readFile(join(final(runB), "adapter", "adapter_model.safetensors"))).toEqual(await readFile(join(final(runA), "adapter", "adapter_model.safetensors")));
    // Optimizer moments too, tensor by tensor.
    const fa = await SafetensorsFile.open(join(final(runA), "trainer_state.safetensors"));
    const fb = await SafetensorsFile.open(join(final(runB), "trainer_state.safetensors"));
    try {
      expect(fb.names()).toEqual(fa.names());
      for (const n of fa.names()) expect(Array.from(await fb.readF32(n)), n).toEqual(Array.from(await fa.readF32(n)));
    } finally {
      await fa.close();
      await fb.close();
    }
    // The metrics rewind: one row per step, identical losses.
    const strip = (rows: Record<string, unknown>[]) => rows.filter((r) => r.phase !== "eval").map((r) => [r.step, r.phase, r.loss, r.reward]);
    expect(strip(await readJsonl(join(runB, "metrics.jsonl")))).toEqual(strip(await readJsonl(join(runA, "metrics.jsonl"))));
  }, 400_000);

  it("skips steps with a non-finite gradient and rolls back after repeated failures", async () => {
    const lines: string[] = [];
    process.env.NR_INJECT_NAN = "sft:2,sft:4!";
    try {
      const { runDir, summary } = await runPipeline(mini("nan", [["sft.steps", 7], ["rl.enabled", false], ["guards.maxBadSteps", 2], ["checkpoint.every", 0]]), { cwd, log: (l) => lines.push(l) });
      const sft = (await readJsonl(join(runDir, "metrics.jsonl"))).filter((m) => m.phase === "sft");
      // step 2: poisoned gradient → skipped; step 4: poisoned weights → 4 and 5 fail → rollback → 6, 7 train again.
      expect(sft.map((m) => m.skipped)).toEqual([false, true, false, true, true, false, false]);
      expect(Number.isFinite(sft[5].loss) && Number.isFinite(sft[6].loss)).toBe(true);
      expect(lines.filter((l) => l.includes("rolled back"))).toHaveLength(1);
      expect(summary.rollbacks).toBe(1);
    } finally {
      delete process.env.NR_INJECT_NAN;
    }
  }, 240_000);
});
