// nr recipe: every recipe's training commands resolve to valid configs of its preset, flags are replaced rather than
// repeated, bad inputs are refused before any step runs, and (built CLI, ../shared present) a whole recipe runs on the
// committed tiny model with every artefact in one run folder.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { parseOverrides, resolveConfig, type Override } from "../run/index.js";
import { describeRecipe, findRecipe, runRecipe, stepArgs, trainMeasurements, type RecipeArgs, type RecipeRecord } from "./recipe.js";
import { RECIPES, withFlags } from "./recipes.js";

const repo = fileURLToPath(new URL("../../../../", import.meta.url));
const cli = join(repo, "apps", "trainer", "dist", "cli.js");
const shared = join(repo, "..", "shared", "data");
const tiny = join(repo, "models", "nr-tiny-math");
const ctx = { model: "/m", data: "/d", run: "/r/x" };

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "nr-recipe-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** The config `nr sft|rl ARGS` would train with (paths not checked). */
function trainConfig(args: string[]) {
  const [command, ...rest] = args;
  const { overrides, rest: left } = parseOverrides(rest);
  const preset = left[left.indexOf("--preset") + 1];
  const phase: Override[] = command === "sft" ? [["rl.enabled", false]] : command === "rl" ? [["sft.enabled", false]] : [];
  return resolveConfig({ preset, overrides: [...overrides, ...phase], checkPaths: false });
}

describe("recipes", () => {
  it("each training step is a valid config of its preset, with the published settings", () => {
    for (const r of RECIPES) {
      const trains = r.steps.filter((s) => s.kind === "train");
      expect(trains.length, r.name).toBeGreaterThan(0);
      for (const s of trains) {
        const c = trainConfig(s.args(ctx));
        expect([c.name, c.output.dir, c.model.dir, c.data.prompt], `${r.name}/${s.id}`).toEqual([s.id, "/r/x", "/m", "chat"]);
      }
    }
    const nano = findRecipe("nano-reasoner").steps;
    const sft = trainConfig(nano.find((s) => s.id === "sft")!.args(ctx));
    expect([sft.sft.lr, sft.sft.batchSize, sft.data.trainSize, sft.sft.noThinkFraction, sft.rl.enabled]).toEqual([2e-5, 4, 5000, 0, false]);
    for (const [id, algo] of [["grpo", "grpo"], ["dr-grpo", "dr_grpo"]]) {
      const c = trainConfig(nano.find((s) => s.id === id)!.args(ctx));
      expect([c.rl.algo, c.model.adapter, c.sft.enabled, c.rl.G, c.rl.temperature, c.rl.maxNewTokens, c.rl.ppoEpochs, c.rl.clipGradNorm]).toEqual([algo, "/r/x/sft/best", false, 8, 0.8, 384, 2, 1]);
    }
    const lpro = trainConfig(findRecipe("nexus-lpro").steps.find((s) => s.id === "lpro")!.args(ctx));
    expect([lpro.rl.algo, lpro.rl.G, lpro.rl.lr, lpro.rl.ppoEpochs, lpro.data.source]).toEqual(["lpro", 4, 1e-6, 4, "/r/x/curated.jsonl"]);
    expect(lpro.rl.algoConfig).toEqual({ lpro: { lambda: 0.1, formatWeight: 0.1 }, clip: { epsLow: 0.2, epsHigh: 0.28 } });
    const dsr = trainConfig(findRecipe("deepscaler").steps.find((s) => s.id === "rl")!.args(ctx));
    expect([dsr.rl.algo, dsr.rl.lengthStages, dsr.rl.algoConfig, dsr.rl.G * dsr.rl.promptsPerStep]).toEqual(["grpo", [1024, 2048, 3072], { kl: { beta: 0.001 } }, 32]);
    const qed = trainConfig(findRecipe("qed-nano-sft").steps.find((s) => s.id === "sft")!.args(ctx));
    expect([qed.sft.lr, qed.sft.schedule, qed.sft.maxSeqLen, qed.rl.enabled]).toEqual([3e-5, "cosine", 4096, false]);
  });

  it("extra flags replace a step's own (a flag given twice would become an array)", () => {
    expect(withFlags(["eval", "--n", "100", "--near-dedup", "--max-new-tokens", "384"], ["--n", "1", "--near-dedup", "--seed", "3"])).toEqual(["eval", "--max-new-tokens", "384", "--n", "1", "--near-dedup", "--seed", "3"]);
    expect(() => withFlags(["eval"], ["n", "1"])).toThrow(/"n" is not a --flag or its value/);
    const args = stepArgs(findRecipe("nexus-lpro").steps.find((s) => s.id === "lpro-math500-tir")!, ctx, { eval: "--max-new-tokens=8 --n 2" });
    expect(args.filter((a) => a === "--max-new-tokens")).toHaveLength(1);
    expect(args.filter((a) => a === "--prompt-format")).toHaveLength(1);
    expect(args.slice(-4)).toEqual(["--max-new-tokens", "8", "--n", "2"]);
    expect(args[args.indexOf("--prompt-format") + 1]).toBe("tir");
    expect(args).not.toContain("--shots"); // TIR is zero-shot; the CoT evals carry their shots
    const cot = stepArgs(findRecipe("nexus-lpro").steps.find((s) => s.id === "lpro-gsm8k-cot")!, ctx, {});
    expect(cot.slice(cot.indexOf("--shots"), cot.indexOf("--shots") + 4)).toEqual(["--shots", "8", "--shots-from", "/d/gsm8k_train.jsonl"]);
  });

  it("show lists the data files and each step's exact command", () => {
    const text = describeRecipe(findRecipe("deepscaler"), ctx);
    for (const f of ["train.jsonl", "aime.jsonl"]) expect(text).toContain(f);
    expect(text).toContain("nr rl --preset deepscaler --model /m --data /r/x/curated.jsonl --name rl --output.dir /r/x");
    expect(text).toContain("--samples 16 --temperature 0.6");
    expect(() => findRecipe("nexus-lrpo")).toThrow(/unknown recipe "nexus-lrpo"; did you mean "nexus-lpro"\?/);
  });

  it("measures median tokens/s and peak memory per phase from metrics.jsonl", () => {
    const dir = join(work, "m");
    mkdirSync(dir);
    const rows = [{ phase: "sft", tokens_per_s: 10, gpu_mem_mb: 5 }, { phase: "sft", tokens_per_s: 30, gpu_mem_mb: 9 }, { phase: "sft", tokens_per_s: 20, gpu_mem_mb: 7 }, { phase: "eval", eval_accuracy: 1 }, { phase: "rl", generate_tokens_per_s: 4, train_tokens_per_s: 2, gpu_mem_mb: 11 }];
    writeFileSync(join(dir, "metrics.jsonl"), rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
    expect(trainMeasurements(dir)).toEqual({ sft_tokens_per_s: 20, sft_gpu_mem_mb: 9, rl_generate_tokens_per_s: 4, rl_train_tokens_per_s: 2, rl_gpu_mem_mb: 11 });
    expect(trainMeasurements(join(work, "none"))).toEqual({});
  });

  it("refuses a data folder without the recipe's files, an existing run without --resume, an unknown step", async () => {
    const data = join(work, "data");
    mkdirSync(data);
    writeFileSync(join(data, "sft.jsonl"), "");
    const base: RecipeArgs = { action: "run", recipe: "qed-nano-sft", model: tiny, data, out: join(work, "runs"), resume: false };
    const quiet = { log: () => {}, err: () => {} };
    await expect(runRecipe(base, quiet)).rejects.toThrow(/lacks eval\.jsonl \(problem, answer\): see nr recipe show qed-nano-sft/);
    await expect(runRecipe({ ...base, model: data }, quiet)).rejects.toThrow(/--model .*: no config\.json there/);
    writeFileSync(join(data, "eval.jsonl"), "");
    await expect(runRecipe({ ...base, only: ["sft", "serve"] }, quiet)).rejects.toThrow(/--only serve: no such step in qed-nano-sft \(steps: curate, sft, sft-eval\)/);
    mkdirSync(join(work, "runs", "qed-nano-sft"), { recursive: true });
    writeFileSync(join(work, "runs", "qed-nano-sft", "recipe.json"), JSON.stringify({ recipe: "qed-nano-sft", steps: [] }));
    await expect(runRecipe(base, quiet)).rejects.toThrow(/already holds a recipe run: pass --resume/);
    await expect(runRecipe({ ...base, recipe: "deepscaler", name: "qed-nano-sft", resume: true }, quiet)).rejects.toThrow(/lacks train\.jsonl/);
  });
});

const whyNot = !existsSync(cli) ? "apps/trainer is not built" : !existsSync(shared) ? `no ${shared}` : null;
if (whyNot) console.log(`nr recipe run on the tiny model skipped: ${whyNot}`);

describe.skipIf(whyNot !== null)("nr recipe run (built CLI, tiny model)", () => {
  it("qed-nano-sft: curated set, SFT adapter, eval report and the serve command, all in one run folder", async () => {
    const data = join(work, "tiny-data");
    mkdirSync(data);
    symlinkSync(join(shared, "gsm8k_train.jsonl"), join(data, "sft.jsonl"));
    symlinkSync(join(shared, "gsm8k_test.jsonl"), join(data, "eval.jsonl"));
    const train = "--sft.steps 2 --sft.warmup 0 --sft.batchSize 2 --sft.gradAccum 1 --sft.maxSeqLen 256 --eval.n 1 --eval.maxNewTokens 4 --data.evalSize 1 --data.trainSize 16";
    const { stdout } = await promisify(execFile)(process.execPath, [cli, "recipe", "run", "qed-nano-sft", "--model", tiny, "--data", data, "--out", join(work, "tiny-runs"), "--curate=--n 24", `--train=${train}`, "--eval=--n 2 --max-new-tokens 4"], { env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? "/tmp/xdg" }, maxBuffer: 64 << 20 });
    const run = join(work, "tiny-runs", "qed-nano-sft");
    const record = JSON.parse(readFileSync(join(run, "recipe.json"), "utf8")) as RecipeRecord;
    expect(record.steps.map((s) => s.status)).toEqual(["done", "done", "done"]);
    const curated = readFileSync(join(run, "curated.jsonl"), "utf8").trim().split("\n");
    expect(curated.length).toBeGreaterThan(16);
    expect(curated.length).toBeLessThanOrEqual(24);
    expect(JSON.parse(readFileSync(join(run, "curated.report.json"), "utf8")).input).toBe(24);
    expect(existsSync(join(run, "sft", "best", "adapter_model.safetensors"))).toBe(true);
    const metrics = readFileSync(join(run, "sft", "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(metrics.filter((m) => m.phase === "sft")).toHaveLength(2);
    expect(record.steps[1].measured!.sft_gpu_mem_mb).toBeGreaterThan(0);
    const ev = JSON.parse(readFileSync(join(run, "eval", "sft-eval.json"), "utf8"));
    expect([ev.summary.problems, ev.adapter, ev.options.maxNewTokens]).toEqual([2, join(run, "sft", "best"), 4]);
    expect(stdout).toContain(`next: nr serve --model ${tiny} --adapter qed-nano=${join(run, "sft", "best")} --port 8000`);
  }, 300_000);
});
