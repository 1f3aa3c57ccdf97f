// The run's data: folder splits, one-split folders, the resume check of data_split.json; and resume overrides.
import { mkdirSync, mkdtempSync, readFileSync, realpathSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, DEFAULT_CONFIG, resolveConfig, type TrainConfig } from "./config.js";
import { DATA_SPLIT_FILE, loadRunData, recordDataSplit } from "./data.js";
import { keysNamedIn, resumeConfig } from "./resume.js";

const row = (i: number, topic = "pencils") => JSON.stringify({ question: `How many ${topic} does shop ${i} sell on day ${i * 3} of week ${i % 7}?`, answer: `${i} steps\n#### ${i}` });
const rows = (from: number, to: number, topic?: string) => Array.from({ length: to - from }, (_, k) => row(from + k, topic)).join("\n") + "\n";
const config = (source: string, over: [string, unknown][] = []): TrainConfig => resolveConfig({ overrides: [["data.source", source], ["data.evalSize", 4], ...over], checkPaths: false });

describe("loadRunData", () => {
  it("a folder with train and test splits: those two, with train questions repeating a test one dropped", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nr-data-"));
    writeFileSync(join(dir, "train.jsonl"), rows(0, 10) + row(102)); // row 102's question is also in test
    writeFileSync(join(dir, "test.jsonl"), rows(100, 106));
    const lines: string[] = [];
    const d = await loadRunData(config(dir), "/", (l) => lines.push(l));
    expect(d.split.how).toBe("dataset folder splits");
    expect(d.heldout.map((r) => r.id)).toEqual(["test:1", "test:2", "test:3", "test:4"]); // data.evalSize of the test split
    expect(d.train.map((r) => r.id)).toEqual(Array.from({ length: 10 }, (_, i) => `train:${i + 1}`));
    expect(d.split.dropped).toEqual([{ id: "train:11", heldOutId: "test:3", by: "exact" }]);
    expect(lines.join("\n")).toMatch(/dropped 1 train record whose question repeats a held-out one \(train:11 ≈ test:3/);
  });

  it("a folder of one split is split like a file; other folders are refused naming their splits", async () => {
    const one = mkdtempSync(join(tmpdir(), "nr-data-"));
    writeFileSync(join(one, "all.jsonl"), rows(0, 20));
    const d = await loadRunData(config(one), "/", () => {});
    expect(d.split.how).toBe("seeded split of one file");
    expect(d.heldout).toHaveLength(4);
    expect(d.train).toHaveLength(16);
    const two = mkdtempSync(join(tmpdir(), "nr-data-"));
    writeFileSync(join(two, "a_dev.jsonl"), rows(0, 5));
    writeFileSync(join(two, "b_test.jsonl"), rows(5, 10));
    await expect(loadRunData(config(two), "/", () => {})).rejects.toThrow(/a dataset folder needs a "train" split and a held-out one .*found: dev, test/);
  });

  it("on --resume the split must be the one recorded; a changed file is refused", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nr-data-"));
    const file = join(dir, "d.jsonl");
    writeFileSync(file, rows(0, 20));
    const run = join(dir, "run");
    mkdirSync(run);
    const first = await loadRunData(config(file), "/", () => {});
    recordDataSplit(run, first.split, false);
    const saved = JSON.parse(readFileSync(join(run, DATA_SPLIT_FILE), "utf8"));
    expect(saved).toEqual({ source: file, path: realpathSync(file), seed: 0, how: "seeded split of one file", train: first.train.map((r) => r.id), eval: first.heldout.map((r) => r.id), dropped: [] });
    recordDataSplit(run, (await loadRunData(config(file), "/", () => {})).split, true); // same data: fine
    writeFileSync(file, rows(0, 21));
    const changed = await loadRunData(config(file), "/", () => {});
    expect(() => recordDataSplit(run, changed.split, true)).toThrow(/data_split\.json: the data no longer splits as when this run started \(now 17 train \/ 4 held-out records, then 16 \/ 4\)/);
  });
});

describe("resumeConfig", () => {
  const saved = { ...structuredClone(DEFAULT_CONFIG), rl: { ...DEFAULT_CONFIG.rl, temperature: 0 } } as TrainConfig;

  it("applies safe keys and keys the saved config fails on, recording each change with its step", () => {
    const c = resumeConfig(saved, [["rl.temperature", "1"], ["rl.steps", "90"], ["sft.epochs", "2"], ["output.tensorboard", "true"]], 40) as TrainConfig & { resumes: unknown[] };
    expect(c.rl).toMatchObject({ temperature: 1, steps: 90 });
    expect(c.sft.epochs).toBe(2);
    expect(c.sft.steps).toBeUndefined();
    // sft.epochs replaces sft.steps (an either/or pair): both changes are recorded.
    expect(c.resumes).toEqual([
      {
        step: 40,
        at: expect.any(String),
        changes: [
          { key: "rl.temperature", from: 0, to: 1 },
          { key: "rl.steps", from: DEFAULT_CONFIG.rl.steps, to: 90 },
          { key: "sft.epochs", from: undefined, to: 2 },
          { key: "output.tensorboard", from: undefined, to: true },
          { key: "sft.steps", from: 40, to: undefined },
        ],
      },
    ]);
    // A second resume appends; overrides equal to the saved values change nothing and are not recorded.
    const again = resumeConfig(c, [["rl.steps", "80"], ["rl.G", "8"]], 60) as TrainConfig & { resumes: { step: number }[] };
    expect(again.resumes.map((r) => r.step)).toEqual([40, 60]);
    expect(resumeConfig(c, [["rl.G", "8"]], 60)).toEqual(c);
    // The resumed run's config.json still works as a preset for a new run (its history is not carried over).
    const file = join(mkdtempSync(join(tmpdir(), "nr-preset-")), "config.json");
    writeFileSync(file, JSON.stringify(again));
    const fresh = resolveConfig({ preset: file, checkPaths: false }) as TrainConfig & { resumes?: unknown };
    expect(fresh.resumes).toBeUndefined();
    expect(fresh.rl.steps).toBe(80);
  });

  it("refuses every other key by name, and a still-failing config with the fix to pass", () => {
    const err = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
        return (e as ConfigError).problems;
      }
      throw new Error("expected a ConfigError");
    };
    const refused = err(() => resumeConfig(saved, [["rl.temperature", "1"], ["rl.G", "4"], ["lora.r", "8"]], 10));
    expect(refused).toHaveLength(2);
    expect(refused[0]).toMatch(/^--rl\.G 4: rl\.G cannot change on --resume \(the run so far was trained with 8\)/);
    expect(refused[1]).toMatch(/^--lora\.r 8: lora\.r cannot change on --resume/);
    expect(err(() => resumeConfig(saved, [], 10))[0]).toMatch(/rl\.temperature = 0 is not allowed.*pass the fixed values with --resume/);
  });

  it("finds the keys a problem names, not their parents or look-alikes", () => {
    expect([...keysNamedIn(["rl.lengthStages[1] = 64 exceeds rl.maxNewTokens = 40", "model.generate.hidden = 30 must be divisible"])].sort()).toEqual(["model.generate.hidden", "rl.lengthStages", "rl.maxNewTokens"]);
  });
});
