// End to end on the GPU with a miniature config: model generation → eval → SFT → eval → RL → eval → files.
import { describe, expect, it } from "vitest";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveConfig } from "../run/index.js";
import { runPipeline } from "./pipeline.js";

describe("nr train (miniature config)", () => {
  it("writes config, metrics, samples, summary, a checkpoint and the report", async () => {
    const cwd = await mkdtemp(join(tmpdir(), "nr-e2e-"));
    try {
      const config = resolveConfig({
        overrides: [
          ["name", "mini"],
          ["model.generate.hidden", 32], ["model.generate.layers", 1], ["model.generate.heads", 2], ["model.generate.kvHeads", 1], ["model.generate.intermediate", 64],
          ["data.trainSize", 8], ["data.evalSize", 4], ["eval.n", 4], ["eval.maxNewTokens", 12],
          ["sft.batchSize", 4], ["sft.epochs", 1], ["sft.warmup", 0],
          ["rl.steps", 2], ["rl.G", 2], ["rl.promptsPerStep", 2], ["rl.maxNewTokens", 12],
        ],
      });
      const lines: string[] = [];
      const { runDir, summary } = await runPipeline(config, { cwd, log: (l) => lines.push(l) });
      for (const f of ["config.json", "metrics.jsonl", "samples.jsonl", "summary.json", "report.html"]) expect(existsSync(join(runDir, f)), f).toBe(true);
      const metrics = (await readFile(join(runDir, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l));
      expect(metrics.filter((m) => m.phase === "sft")).toHaveLength(2);
      expect(metrics.filter((m) => m.phase === "rl")).toHaveLength(2);
      for (const m of metrics) expect(Number.isFinite(m.loss), JSON.stringify(m)).toBe(true);
      const samples = (await readFile(join(runDir, "samples.jsonl"), "utf8")).trim().split("\n");
      expect(samples).toHaveLength(2 * 2 * 2);
      const s = JSON.parse(await readFile(join(runDir, "summary.json"), "utf8"));
      expect(s).toMatchObject({ algo: "dr_grpo", steps: 4 });
      for (const k of ["eval_base", "eval_before", "eval_after"]) expect(s[k].n).toBe(4);
      expect(summary.wall_seconds).toBeGreaterThan(0);
      expect(lines.some((l) => l.startsWith("eval after RL"))).toBe(true);
      const html = await readFile(join(runDir, "report.html"), "utf8");
      expect(html).toContain("<svg");
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  });
});
