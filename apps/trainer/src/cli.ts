#!/usr/bin/env node
// The `nr` command line. For train | sft | rl, dotted config overrides (`--rl.algo lpro --rl.G 4`) are taken out
// before yargs sees the arguments; the other subcommands (eval, generate, curate, bench, …) get their own flags
// untouched. Every subcommand has --help.
import yargs, { type Argv } from "yargs";
import { hideBin } from "yargs/helpers";
import { benchCommand } from "./commands/bench.js";
import { curateCommand } from "./commands/curate.js";
import { evalCommand } from "./commands/eval.js";
import { exportCommand } from "./commands/export.js";
import { generateCommand } from "./commands/generate.js";
import { pretrainCommand } from "./commands/pretrain.js";
import { recipeCommand } from "./commands/recipe.js";
import { sandboxCommand } from "./commands/sandbox.js";
import { serveCommand } from "./commands/serve.js";
import { doctor, printDoctor } from "./doctor.js";
import { ConfigError, parseOverrides, resolveConfig, type Override } from "./run/index.js";

const argv = hideBin(process.argv);
const TRAIN_COMMANDS = ["train", "sft", "rl"];
const first = argv.find((x) => !x.startsWith("-"));
const { overrides, rest }: { overrides: Override[]; rest: string[] } = first === undefined || TRAIN_COMMANDS.includes(first) ? parseOverrides(argv) : { overrides: [], rest: argv };

const trainOptions = (y: Argv) =>
  y
    .option("preset", { type: "string", default: "default", describe: "configs/train/<preset>.json or a path to a JSON config" })
    .option("resume", { type: "string", describe: "continue the run in this folder (runs/<name>) from its latest checkpoint; its config.json is used (dotted flags change only step counts, cadences, sinks, or keys the saved config fails on)" })
    .option("overwrite", { type: "boolean", default: false, describe: "replace an existing runs/<name> (its contents are deleted once the new run passes its checks)" })
    .epilog("Any config key can be overridden with a dotted flag, e.g. --rl.algo lpro --rl.G 4 --sft.lr 2e-4 --name my-run");

async function train(argv: { preset: string; resume?: string; overwrite: boolean }, phases: { sft: boolean; rl: boolean }) {
  const extra = [...overrides];
  if (!phases.sft) extra.push(["sft.enabled", false]);
  if (!phases.rl) extra.push(["rl.enabled", false]);
  if (argv.resume !== undefined) {
    if (rest.some((a) => a === "--preset" || a.startsWith("--preset="))) throw new Error(`--preset has no effect with --resume (the run's own config.json is used); pass only the settings to change`);
    // The run's own config.json, with these overrides where they are allowed mid-run (checked in runPipeline).
    const { runPipeline } = await import("./train/pipeline.js");
    await runPipeline(null, { resumeDir: argv.resume, overrides: extra, overwrite: argv.overwrite });
    return;
  }
  let config;
  try {
    config = resolveConfig({ preset: argv.preset, overrides: extra });
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`nr: invalid config:\n${e.message}`);
      process.exit(2);
    }
    throw e;
  }
  const { runPipeline } = await import("./train/pipeline.js");
  await runPipeline(config, { overwrite: argv.overwrite });
}

await yargs(rest)
  .scriptName("nr")
  .command("train", "SFT cold start, then RL, then eval and a report (the embedded default with no arguments)", trainOptions, (a) => train(a, { sft: true, rl: true }))
  .command("sft", "SFT only", trainOptions, (a) => train(a, { sft: true, rl: false }))
  .command("rl", "RL only (from the base model or --model)", trainOptions, (a) => train(a, { sft: false, rl: true }))
  .command(exportCommand)
  .command(evalCommand)
  .command(generateCommand)
  .command(curateCommand)
  .command(benchCommand)
  .command(serveCommand)
  .command(pretrainCommand)
  .command(sandboxCommand)
  .command(recipeCommand)
  .command(
    "doctor",
    "Show the WebGPU adapter, its features and limits, and run one checked matmul; with --model, whether that model fits each training phase",
    (y) =>
      y
        .option("backend", { type: "string", describe: "Dawn backend (vulkan, metal, d3d12, null); env NR_BACKEND" })
        .option("adapter", { type: "string", describe: "substring of the adapter name to pick; env NR_ADAPTER" })
        .option("model", { type: "string", describe: "checkpoint folder: estimate memory and the largest binding per phase of nr train (nothing is loaded)" })
        .option("preset", { type: "string", describe: "training preset for --model (default: the embedded default)" })
        .option("memory", { type: "number", describe: "device memory in GiB (WebGPU does not report it; CPU adapters use the host's RAM)" })
        .option("prompt-tokens", { type: "number", default: 256, describe: "longest prompt in tokens, for the RL phases" })
        .option("json", { type: "boolean", default: false, describe: "print the report as JSON" })
        .example("nr doctor --model /models/Qwen2.5-Math-1.5B-Instruct --preset qwen2.5-math-1.5b-dr-grpo --memory 8", "does it fit an 8 GiB GPU?"),
    async (argv) => {
      const model = argv.model ? { model: argv.model, preset: argv.preset, memoryGiB: argv.memory, promptTokens: argv["prompt-tokens"] } : undefined;
      const report = await doctor({ backend: argv.backend, adapter: argv.adapter }, model);
      if (argv.json) console.log(JSON.stringify(report, null, 2));
      else printDoctor(report);
      if (!report.matmul.ok || report.fit?.phases.some((p) => p.fitsMemory === false || !p.fitsBinding)) process.exitCode = 1;
    },
  )
  .demandCommand(1, "Name a command; see --help.")
  .strict()
  .fail((msg, err, y) => {
    if (err) {
      console.error(`nr: ${err.message}`);
    } else {
      console.error(`nr: ${msg}\n`);
      y.showHelp();
    }
    process.exit(2);
  })
  .help()
  .parseAsync();
