import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DEFAULT_CONFIG } from "./config.js";
import { CHECKPOINT_MARKER, RunFolder, findLatestCheckpoint, readJsonlFile, saveCheckpoint, writeJsonAtomic } from "./folder.js";

const tmp = () => mkdtempSync(join(tmpdir(), "nr-run-"));

describe("run folder", () => {
  it("writes config.json, metrics/samples line by line, summary.json", () => {
    const cwd = tmp();
    const config = { ...structuredClone(DEFAULT_CONFIG), name: "t1" };
    const run = RunFolder.open(config, { cwd });
    expect(run.dir).toBe(join(cwd, "runs", "t1"));
    expect(JSON.parse(readFileSync(join(run.dir, "config.json"), "utf8"))).toEqual(config);
    run.logMetrics({ step: 1, phase: "sft", loss: 2.5 });
    // Flushed per line: another reader sees it before close.
    expect(readFileSync(run.metricsPath, "utf8")).toBe(`{"step":1,"phase":"sft","loss":2.5}\n`);
    run.logMetrics({ step: 2, phase: "rl", reward: 0.5, kl: 0.01 });
    run.logSample({ step: 2, completion: "x = \\boxed{4}", correct: true, response_length: 7 });
    expect(run.readMetrics().map((r) => r.step)).toEqual([1, 2]);
    expect(run.readSamples()[0].correct).toBe(true);
    const summary = { wall_seconds: 12.5, eval_base: { accuracy: 0.1, n: 200 }, eval_before: { accuracy: 0.3, n: 200 }, eval_after: { accuracy: 0.6, n: 200 }, algo: "dr_grpo", steps: 2 };
    run.writeSummary(summary);
    expect(JSON.parse(readFileSync(run.summaryPath, "utf8"))).toEqual(summary);
    expect(() => run.writeSummary({ ...summary, eval_after: { accuracy: 1.5, n: 3 } })).toThrow(/eval_after must be \{accuracy in \[0,1\]/);
    run.close();
    // No temp files are left behind.
    expect(readdirSync(run.dir).sort()).toEqual(["config.json", "metrics.jsonl", "samples.jsonl", "summary.json"]);
    // A second open without resume refuses and says what to do.
    expect(() => RunFolder.open(config, { cwd })).toThrow(/--resume.*--overwrite/);
    const again = RunFolder.open(config, { cwd, ifExists: "overwrite" });
    expect(existsSync(again.metricsPath)).toBe(false);
  });

  it("atomic JSON writes replace whole files; a torn last JSONL line is ignored", () => {
    const d = tmp();
    const f = join(d, "a.json");
    writeJsonAtomic(f, { a: 1 });
    writeJsonAtomic(f, { b: 2 });
    expect(JSON.parse(readFileSync(f, "utf8"))).toEqual({ b: 2 });
    expect(readdirSync(d)).toEqual(["a.json"]);
    const j = join(d, "m.jsonl");
    writeFileSync(j, `{"step":1}\n{"step":2}\n{"step":3,"lo`);
    expect(readJsonlFile(j)).toEqual([{ step: 1 }, { step: 2 }]);
    writeFileSync(j, `{"step":1}\nnot json\n{"step":3}\n`);
    expect(() => readJsonlFile(j)).toThrow(/m\.jsonl:2: not JSON/);
  });

  it("checkpoints: temp dir + rename, keep-last pruning, latest complete one, failed writes leave nothing", async () => {
    const run = RunFolder.openDir(join(tmp(), "r"));
    for (const step of [10, 20, 30, 40]) {
      await run.saveCheckpoint(step, (d) => writeFileSync(join(d, "adapter_model.safetensors"), `weights@${step}`), { keepLast: 2, meta: { data_cursor: step * 4 } });
    }
    expect(run.listCheckpoints().map((c) => c.step)).toEqual([30, 40]);
    const latest = run.latestCheckpoint()!;
    expect(latest.step).toBe(40);
    expect(readFileSync(join(latest.dir, "adapter_model.safetensors"), "utf8")).toBe("weights@40");
    expect(JSON.parse(readFileSync(join(latest.dir, CHECKPOINT_MARKER), "utf8"))).toMatchObject({ step: 40, data_cursor: 160 });
    // A failing writer: no step-50, no temp leftovers, latest unchanged.
    await expect(run.saveCheckpoint(50, () => Promise.reject(new Error("disk full")))).rejects.toThrow("disk full");
    expect(readdirSync(run.checkpointsDir).sort()).toEqual(["step-30", "step-40"]);
    // A step folder without the marker (e.g. copied half-way by hand) is not complete; a stale temp dir is ignored.
    mkdirSync(join(run.checkpointsDir, "step-99"));
    mkdirSync(join(run.checkpointsDir, ".tmp-step-60-x"));
    expect(findLatestCheckpoint(run.dir)!.step).toBe(40);
    // Re-saving an existing step replaces it.
    await saveCheckpoint(run.dir, 40, (d) => writeFileSync(join(d, "adapter_model.safetensors"), "again"), { keepLast: 2 });
    expect(readFileSync(join(run.checkpointsDir, "step-40", "adapter_model.safetensors"), "utf8")).toBe("again");
    expect(existsSync(join(run.checkpointsDir, ".tmp-step-60-x"))).toBe(false);
    expect(findLatestCheckpoint(join(tmp(), "none"))).toBeNull();
  });

  it("resume: rewindTo drops rows after the checkpoint step", () => {
    const dir = join(tmp(), "r");
    const run = RunFolder.openDir(dir, {}, DEFAULT_CONFIG);
    for (let s = 1; s <= 5; s++) {
      run.logMetrics({ step: s, phase: "rl", reward: s / 10 });
      run.logSample({ step: s, completion: `c${s}` });
    }
    run.close();
    appendFileSync(run.metricsPath, `{"step":6,"phase":"rl","rew`); // crash mid-line
    const resumed = RunFolder.openDir(dir, { ifExists: "resume" });
    expect(resumed.readConfig()).toEqual(DEFAULT_CONFIG);
    expect(resumed.rewindTo(3)).toEqual({ metrics: 2, samples: 2 });
    resumed.logMetrics({ step: 4, phase: "rl", reward: 0.9 });
    expect(resumed.readMetrics().map((r) => [r.step, r.reward])).toEqual([[1, 0.1], [2, 0.2], [3, 0.3], [4, 0.9]]);
    expect(resumed.readSamples().map((r) => r.completion)).toEqual(["c1", "c2", "c3"]);
    resumed.close();
  });

  it("RunFolder.resume returns the config, the latest checkpoint and rewinds the logs", async () => {
    const cwd = tmp();
    const run = RunFolder.open({ ...DEFAULT_CONFIG, name: "res" }, { cwd });
    for (let s = 1; s <= 7; s++) {
      run.logMetrics({ step: s, phase: "sft", loss: 1 / s });
      if (s % 3 === 0) await run.saveCheckpoint(s, (d) => writeFileSync(join(d, "state.json"), JSON.stringify({ step: s })), { keepLast: 1 });
    }
    run.close();
    const { run: again, config, checkpoint } = RunFolder.resume(run.dir);
    expect(config.name).toBe("res");
    expect(checkpoint?.step).toBe(6);
    expect(again.readMetrics().map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(() => RunFolder.resume(join(cwd, "nothing"))).toThrow(/no config\.json/);
  });
});
