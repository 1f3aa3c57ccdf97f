// Every published recipe end to end on the real model shape (NR_SCALE=1 only; not in the default `pnpm test`):
// `nr recipe run NAME` on a random checkpoint with Qwen2.5-Math-1.5B-Instruct's config.json and the real Qwen2.5
// tokenizer, every step at its smallest (1 SFT step, 1 RL step, 1-problem evals, a few curated problems), as a user
// runs it. Data: a folder of links to ../shared/data under the names each recipe expects. One model in memory at a
// time (each step is its own process). Prints each training step's measured tokens/s and device memory.
//   NR_SCALE=1 npx vitest run src/scale-recipes.test.ts      (in apps/trainer, after the build)
// NR_SCALE_MODEL=DIR reuses (or writes once into) a checkpoint folder instead of a temp one.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync, mkdirSync, symlinkSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RECIPES } from "./commands/recipes.js";
import type { RecipeRecord } from "./commands/recipe.js";
import { MIN, nrCli, scaleModel, scaleSkipReason, shared } from "./scale-kit.js";

const why = scaleSkipReason();
if (why) console.log(`recipes at scale skipped: ${why}`);

/** The file names the recipes expect, as links to the shared data (GSM8K has worked solutions for SFT). */
const DATA_LINKS: Record<string, string> = {
  "sft.jsonl": "gsm8k_train.jsonl",
  "gsm8k_train.jsonl": "gsm8k_train.jsonl",
  "gsm8k_test.jsonl": "gsm8k_test.jsonl",
  "math_train.jsonl": "gsm8k_train.jsonl",
  "math500_test.jsonl": "math500_test.jsonl",
  "train.jsonl": "gsm8k_train.jsonl",
  "aime.jsonl": "math500_test.jsonl",
  "eval.jsonl": "math500_test.jsonl",
};

// The smallest run of each step kind: enough to load the model, train one step of each phase and grade one problem.
const TRAIN = "--sft.steps 1 --sft.batchSize 1 --sft.gradAccum 1 --sft.warmup 0 --sft.maxSeqLen 384 --rl.steps 1 --rl.G 2 --rl.promptsPerStep 1 --rl.miniBatches 1 --rl.ppoEpochs 1 --rl.maxNewTokens 8 --rl.lengthStages 4,8 --eval.n 1 --eval.maxNewTokens 8 --eval.samples 0 --eval.every 0 --data.evalSize 1 --data.trainSize 8";
const EVAL = "--n 1 --max-new-tokens 4 --batch-size 1";
const CURATE = "--n 12 --samples 2 --min-pass 0 --max-pass 2 --max-new-tokens 4";

let cwd: string;
let model: string;
let data: string;
beforeAll(async () => {
  if (why) return;
  cwd = await mkdtemp(join(tmpdir(), "nr-recipes-"));
  model = await scaleModel(cwd);
  data = join(cwd, "data");
  mkdirSync(data);
  for (const [name, file] of Object.entries(DATA_LINKS)) symlinkSync(join(shared, file), join(data, name));
}, 30 * MIN);
afterAll(async () => {
  if (cwd) await rm(cwd, { recursive: true, force: true });
});

describe.skipIf(why !== null)("the recipes on the Qwen2.5-Math-1.5B shape (NR_SCALE=1)", () => {
  for (const recipe of RECIPES) {
    it(`nr recipe run ${recipe.name}: every step, every artefact in one run folder`, async () => {
      await nrCli(["recipe", "run", recipe.name, "--model", model, "--data", data, "--out", join(cwd, "runs"), `--train=${TRAIN}`, `--eval=${EVAL}`, `--curate=${CURATE}`], { cwd });
      const run = join(cwd, "runs", recipe.name);
      const record = JSON.parse(await readFile(join(run, "recipe.json"), "utf8")) as RecipeRecord;
      expect(record.steps.map((s) => [s.id, s.status])).toEqual(recipe.steps.map((s) => [s.id, "done"]));
      for (const step of recipe.steps) {
        if (step.kind === "curate") expect(existsSync(join(run, "curated.jsonl")) && existsSync(join(run, "curated.report.json")), "curated set").toBe(true);
        if (step.kind === "eval") {
          const report = JSON.parse(await readFile(join(run, "eval", `${step.id}.json`), "utf8"));
          expect(report.summary.problems, step.id).toBe(1);
          expect(typeof report.summary.greedyPass1, step.id).toBe("number");
          // avg@16 steps (DeepScaleR) sample 16 completions per problem
          if (step.args({ model, data, run }).includes("16")) expect(report.summary.samples, step.id).toBe(16);
        }
        if (step.kind === "train") {
          expect(existsSync(join(run, step.id, "best", "adapter_model.safetensors")), `${step.id} adapter`).toBe(true);
          const m = record.steps.find((s) => s.id === step.id)!.measured!;
          const phase = step.args({ model, data, run })[0];
          expect(m[`${phase}_gpu_mem_mb`], `${step.id} memory`).toBeGreaterThan(0);
          console.log(`measured ${recipe.name}/${step.id}: ${JSON.stringify(m)} in ${record.steps.find((s) => s.id === step.id)!.seconds!.toFixed(0)} s`);
        }
      }
    }, 90 * MIN);
  }
});
