import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  ConfigError,
  DEFAULT_CONFIG,
  GENERATED_MODEL_DEFAULTS,
  LORA_TARGET_NAMES,
  applyOverrides,
  closest,
  configKeys,
  flattenOverrides,
  listPresets,
  loadPreset,
  parseOverrides,
  presetDir,
  resolveConfig,
  validateConfig,
} from "./config.js";
import { rlMaxNewTokens, sftSchedule, stageIndexAt } from "../train/schedule.js";

const errorOf = (f: () => unknown): ConfigError => {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error("expected a ConfigError");
};

describe("presets", () => {
  it("configs/train/default.json is the embedded default and validates", () => {
    const dir = presetDir();
    expect(dir).toBeDefined();
    const json = JSON.parse(readFileSync(join(dir!, "default.json"), "utf8"));
    expect(json).toEqual(DEFAULT_CONFIG);
    const c = resolveConfig();
    expect(c).toEqual(DEFAULT_CONFIG);
    expect(c.rl.algo).toBe("dr_grpo");
    expect(c.sft.enabled && c.rl.enabled).toBe(true);
    expect(c.model.dir).toBe("models/nr-tiny-chains");
    // Every SFT target of the default shows its work (no answer-only share).
    expect(c.sft.noThinkFraction ?? 0).toBe(0);
    expect(c.model.generate).toBeUndefined();
    expect(listPresets()).toEqual(expect.arrayContaining(["default", "qwen2.5-math-1.5b-dr-grpo"]));
  });

  it("the Qwen preset mirrors the brief and asks for model.dir", () => {
    const raw = loadPreset("qwen2.5-math-1.5b-dr-grpo");
    expect((raw.model as Record<string, unknown>).generate).toBeUndefined(); // dir replaced the default's generate
    const e = errorOf(() => resolveConfig({ preset: "qwen2.5-math-1.5b-dr-grpo" }));
    expect(e.message).toMatch(/model\.dir = "<path to Qwen2\.5-Math-1\.5B-Instruct>" is a placeholder.*--model\.dir DIR/);
    // With a real checkpoint folder it resolves.
    const ck = mkdtempSync(join(tmpdir(), "nr-ckpt-"));
    writeFileSync(join(ck, "config.json"), "{}");
    const c = resolveConfig({ preset: "qwen2.5-math-1.5b-dr-grpo", overrides: [["model.dir", ck]] });
    expect(c.lora).toEqual({ r: 16, alpha: 32, dropout: 0.05, targets: [...LORA_TARGET_NAMES] });
    expect(c.model).toMatchObject({ dir: ck, quant: "nf4", doubleQuant: true });
    expect(c.rl).toMatchObject({ algo: "dr_grpo", G: 8, temperature: 0.8, maxNewTokens: 384, ppoEpochs: 2, clipGradNorm: 1 });
    expect(c.sft).toMatchObject({ lr: 2e-5, batchSize: 4, epochs: 1 });
    expect(c.data.trainSize).toBe(5000);
    // Every SFT target shows its worked solution (the embedded default's answer-only share must not leak in).
    expect(c.sft.noThinkFraction).toBe(0);
    // One epoch over 5000 examples in steps of batchSize 4 × gradAccum 1 (the step count SFT runs).
    expect(sftSchedule(c, 5000)).toEqual({ perEpoch: 1250, total: 1250 });
    // A missing folder is named as such.
    expect(errorOf(() => resolveConfig({ preset: "qwen2.5-math-1.5b-dr-grpo", overrides: [["model.dir", join(ck, "nope")]] })).message).toMatch(/model\.dir = ".*nope" does not exist/);
  });

  it("presets for real checkpoints never inherit the embedded default's answer-only SFT share", () => {
    for (const name of listPresets().filter((n) => n !== "default")) {
      const raw = loadPreset(name) as { model: { dir?: string }; sft: { noThinkFraction?: number } };
      if (raw.model.dir === undefined) continue;
      expect([name, raw.sft.noThinkFraction ?? 0]).toEqual([name, 0]);
    }
  });

  it("unknown preset names and unknown keys in a preset file suggest the closest", () => {
    expect(errorOf(() => loadPreset("defualt")).message).toMatch(/unknown preset "defualt"; did you mean "default"\?/);
    const dir = mkdtempSync(join(tmpdir(), "nr-preset-"));
    const f = join(dir, "bad.json");
    writeFileSync(f, JSON.stringify({ rl: { algo: "ppo", gg: 4 }, sft: { learningRate: 1 } }));
    const e = errorOf(() => loadPreset(f));
    expect(e.problems).toHaveLength(2);
    expect(e.problems[0]).toMatch(/unknown config key "rl\.gg"; did you mean "rl\.G"\?/);
    expect(e.problems[1]).toMatch(/unknown config key "sft\.learningRate"/);
    // A partial preset is merged over the default.
    const ok = join(dir, "ok.json");
    writeFileSync(ok, JSON.stringify({ name: "mine", rl: { algo: "lpro" }, sft: { steps: 7 } }));
    const c = resolveConfig({ preset: ok });
    expect(c.name).toBe("mine");
    expect(c.rl.algo).toBe("lpro");
    expect(c.rl.G).toBe(DEFAULT_CONFIG.rl.G);
    expect(c.sft.steps).toBe(7);
    expect(c.sft.epochs).toBeUndefined();
    // Either/or keys, optional-object defaults and typed values: the preset is merged as typed overrides.
    const gen = join(dir, "gen.json");
    writeFileSync(gen, JSON.stringify({ model: { generate: { hidden: 32 } }, sft: { epochs: 2, steps: null }, output: { wandb: { project: "p" } }, lora: { targets: "all-linear" } }));
    const raw = loadPreset(gen) as Record<string, any>;
    expect(raw.model).toEqual({ generate: { ...GENERATED_MODEL_DEFAULTS, hidden: 32 }, quant: "none", dtype: "f32", doubleQuant: false });
    expect(raw.sft.steps).toBeUndefined();
    expect(raw.sft.epochs).toBe(2);
    expect(raw.output.wandb).toEqual({ project: "p", baseUrl: "https://api.wandb.ai" });
    expect(resolveConfig({ preset: gen }).lora.targets).toEqual([...LORA_TARGET_NAMES]);
    const empty = join(dir, "empty-generate.json");
    writeFileSync(empty, JSON.stringify({ model: { generate: {} } }));
    expect(resolveConfig({ preset: empty }).model).toMatchObject({ generate: GENERATED_MODEL_DEFAULTS });
    expect(resolveConfig({ preset: empty }).model.dir).toBeUndefined();
    // A JSON string where a number belongs is a validation error, not coerced as a CLI string would be.
    const str = join(dir, "str.json");
    writeFileSync(str, JSON.stringify({ rl: { G: "4" } }));
    expect(errorOf(() => resolveConfig({ preset: str })).message).toMatch(/rl\.G = "4" is not allowed: expected an integer >= 1/);
  });
});

describe("validation", () => {
  it("names the key and the allowed values", () => {
    const bad = structuredClone(DEFAULT_CONFIG) as unknown as Record<string, any>;
    bad.rl.algo = "grpo2";
    bad.sft.schedule = "step";
    bad.rl.temperature = -1;
    bad.lora.targets = ["q_proj", "qkv"];
    bad.eval.n = 2.5;
    bad.sft.noThinkFraction = 1.5;
    delete bad.checkpoint.keepLast;
    const e = errorOf(() => validateConfig(bad));
    const text = e.problems.join("\n");
    expect(text).toContain(`rl.algo = "grpo2" is not allowed: expected "grpo" | "dr_grpo" | "ppo" | "gspo" | "dapo" | "grpo_lead" | "lpro"; did you mean "grpo"?`);
    expect(text).toContain(`sft.schedule = "step" is not allowed: expected "constant" | "linear" | "cosine"`);
    expect(text).toContain(`rl.temperature = -1 is not allowed: expected a number >= 0`);
    expect(text).toMatch(/lora\.targets contains "qkv", which is not allowed: expected a list of "q_proj" \| .*"all-linear"/);
    expect(text).toContain(`eval.n = 2.5 is not allowed: expected an integer >= 1`);
    expect(text).toContain(`sft.noThinkFraction = 1.5 is not allowed: expected a number >= 0 and <= 1`);
    expect(text).toContain(`checkpoint.keepLast is missing`);
    expect(e.problems).toHaveLength(7);
  });

  it("cross-field rules", () => {
    const c = structuredClone(DEFAULT_CONFIG);
    delete c.model.dir;
    c.model.generate = { hidden: 100, layers: 1, heads: 3, kvHeads: 2, intermediate: 8 };
    c.rl.G = 1;
    c.rl.maxNewTokens = 64;
    c.rl.lengthStages = [64, 32, 999];
    c.model.doubleQuant = true;
    const text = errorOf(() => validateConfig(c)).problems.join("\n");
    const f16nf4 = structuredClone(DEFAULT_CONFIG);
    f16nf4.model.quant = "nf4";
    f16nf4.model.dtype = "f16";
    expect(errorOf(() => validateConfig(f16nf4, { checkPaths: false })).problems).toEqual([`model.dtype = "f16" needs model.quant = "none" (an NF4 base keeps its own 4-bit storage)`]);
    const f16 = structuredClone(DEFAULT_CONFIG);
    f16.model.dtype = "f16";
    expect(validateConfig(f16, { checkPaths: false }).model.dtype).toBe("f16");
    expect(text).toContain("model.generate.hidden = 100 must be divisible by model.generate.heads = 3");
    expect(text).toContain("model.generate.heads = 3 must be a multiple of model.generate.kvHeads = 2");
    expect(text).toContain(`rl.G = 1 is too small for rl.algo = "dr_grpo"`);
    expect(text).toContain("rl.lengthStages must increase");
    expect(text).toContain("rl.lengthStages[2] = 999 exceeds rl.maxNewTokens = 64");
    expect(text).toContain(`model.doubleQuant = true needs model.quant = "nf4"`);
    const both = structuredClone(DEFAULT_CONFIG) as unknown as Record<string, any>;
    both.model.generate = { hidden: 64, layers: 1, heads: 4, kvHeads: 2, intermediate: 128 };
    expect(errorOf(() => validateConfig(both, { checkPaths: false })).message).toContain("set only one of model.dir | model.generate");
  });
});

describe("overrides", () => {
  it("parses dotted flags, coerces to the schema's types, leaves other args alone", () => {
    const { overrides, rest } = parseOverrides(["train", "--rl.algo", "lpro", "--rl.G", "4", "--sft.lr=3e-4", "--no-sft.checkpointing", "--rl.dynamicSampling", "--verbose", "--rl.lengthStages", "16,32,64", "--name", "run-1", "--lora.targets", "q_proj,v_proj", "--seed", "7", "--rl.steps", "60", "--rl.maxNewTokens", "64"]);
    expect(rest).toEqual(["train", "--verbose"]);
    const c = resolveConfig({ overrides });
    expect(c.rl.algo).toBe("lpro");
    expect(c.rl.G).toBe(4);
    expect(c.sft.lr).toBe(3e-4);
    expect(c.sft.checkpointing).toBe(false);
    expect(c.rl.dynamicSampling).toBe(true);
    expect(c.rl.lengthStages).toEqual([16, 32, 64]);
    expect(c.name).toBe("run-1");
    expect(c.seed).toBe(7);
    expect(c.lora.targets).toEqual(["q_proj", "v_proj"]);
    // 60 RL steps over 3 length stages: 20 steps each (the budget the RL loop uses at each step).
    expect([0, 19, 20, 25, 39, 40, 59].map((s) => rlMaxNewTokens(c, stageIndexAt(c, s)))).toEqual([16, 16, 32, 32, 32, 64, 64]);
    // Short aliases.
    const a = parseOverrides(["--model", "/m", "--algo=gspo", "--data", "d.jsonl"]);
    expect(a.overrides).toEqual([["model.dir", "/m"], ["rl.algo", "gspo"], ["data.source", "d.jsonl"]]);
    expect(errorOf(() => parseOverrides(["--rl.G"])).message).toBe("--rl.G needs a value (an integer >= 1)");
  });

  it("unknown keys suggest the closest valid key; bad values name the type", () => {
    expect(errorOf(() => applyOverrides({}, [["rl.g", "4"]])).message).toMatch(/unknown config key "rl\.g"; did you mean "rl\.G"\?/);
    expect(errorOf(() => applyOverrides({}, [["rl.temprature", "1"]])).message).toMatch(/did you mean "rl\.temperature"\?/);
    expect(errorOf(() => applyOverrides({}, [["sft.batch_size", "1"]])).message).toMatch(/did you mean "sft\.batchSize"\?/);
    expect(errorOf(() => applyOverrides({}, [["algo", "ppo"]])).message).toMatch(/did you mean "rl\.algo"\?/);
    expect(errorOf(() => applyOverrides({}, [["rl.G", "four"]])).message).toBe(`--rl.G "four" is not allowed: expected an integer >= 1`);
    expect(errorOf(() => applyOverrides({}, [["sft.enabled", "maybe"]])).message).toContain("expected true | false");
    expect(closest("zzzzzz", configKeys())).toBeUndefined();
  });

  it("either/or keys replace each other; optional objects get defaults; null removes", () => {
    const base = loadPreset("default");
    const ck = mkdtempSync(join(tmpdir(), "nr-ckpt-"));
    mkdirSync(join(ck, "m"));
    writeFileSync(join(ck, "m", "config.json"), "{}");
    const c = resolveConfig({ overrides: [["model.dir", join(ck, "m")], ["sft.steps", "5"], ["output.wandb.project", "p"]] });
    expect(c.model.generate).toBeUndefined();
    expect(c.sft.steps).toBe(5);
    expect(c.sft.epochs).toBeUndefined();
    expect(c.output.wandb).toEqual({ project: "p", baseUrl: "https://api.wandb.ai" });
    const back = applyOverrides(base, [["model.generate.layers", "2"]]);
    expect(validateConfig(back).model.generate).toEqual({ ...GENERATED_MODEL_DEFAULTS, layers: 2 });
    expect(validateConfig(back).model.dir).toBeUndefined();
    const noW = applyOverrides(applyOverrides(base, [["output.wandb.project", "p"]]), [["output.wandb", "null"]]);
    expect(validateConfig(noW).output.wandb).toBeUndefined();
    // sft.noThinkFraction is optional (absent = every target shows its work) and can be removed.
    expect(validateConfig(applyOverrides(base, [["sft.noThinkFraction", "null"]])).sft.noThinkFraction).toBeUndefined();
    // data.difficulty.kind is optional (absent = word problems), "expression" or "words" only, and can be removed.
    expect(validateConfig(applyOverrides(base, [["data.difficulty.kind", "expression"]])).data.difficulty.kind).toBe("expression");
    expect(() => validateConfig(applyOverrides(base, [["data.difficulty.kind", "sums"]]))).toThrow(/data\.difficulty\.kind = "?sums"? .*expression/);
    expect(validateConfig(applyOverrides(applyOverrides(base, [["data.difficulty.kind", "words"]]), [["data.difficulty.kind", "null"]])).data.difficulty.kind).toBeUndefined();
    // yargs-style nested objects flatten to the same overrides.
    expect(flattenOverrides({ rl: { G: 4, lengthStages: [8] }, name: "x" })).toEqual([["rl.G", 4], ["rl.lengthStages", [8]], ["name", "x"]]);
    expect(resolveConfig({ overrides: { "rl.G": 16 } }).rl.G).toBe(16);
  });
});

describe("step schedules the pipeline runs (train/schedule.ts)", () => {
  it("SFT steps: sft.steps, or epochs over whole batchSize × gradAccum steps of the usable examples", () => {
    const c = resolveConfig({ overrides: [["sft.epochs", 2.5], ["sft.batchSize", 8], ["sft.gradAccum", 2]] });
    expect(c.sft.steps).toBeUndefined();
    expect(sftSchedule(c, 100)).toEqual({ perEpoch: 6, total: 15 }); // floor(100 / 16) = 6 per epoch, 6 × 2.5
    expect(sftSchedule(c, 3)).toEqual({ perEpoch: 1, total: 3 }); // fewer examples than a step: one step per epoch
    expect(sftSchedule(resolveConfig(), 2000)).toEqual({ perEpoch: 125, total: 40 }); // the default sets sft.steps
    expect(sftSchedule(resolveConfig({ overrides: [["sft.enabled", false]] }), 2000).total).toBe(0);
  });

  it("length stages advance by step count; without stages the budget is rl.maxNewTokens", () => {
    const c = resolveConfig({ overrides: [["rl.steps", 7], ["rl.maxNewTokens", 40], ["rl.lengthStages", "10,20,40"]] });
    expect(Array.from({ length: 7 }, (_, s) => stageIndexAt(c, s))).toEqual([0, 0, 0, 1, 1, 2, 2]); // floor(s·3/7)
    expect(rlMaxNewTokens(c, 5)).toBe(40);
    expect(rlMaxNewTokens(c, 9)).toBe(40); // an early advance past the last stage stays there
    const plain = resolveConfig();
    expect([0, plain.rl.steps - 1].map((s) => rlMaxNewTokens(plain, stageIndexAt(plain, s)))).toEqual([plain.rl.maxNewTokens, plain.rl.maxNewTokens]);
  });
});
