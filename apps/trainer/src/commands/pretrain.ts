// `nr pretrain`: the seeded pre-training that makes the embedded default's base model (see train/pretrain.ts).
import type { Argv, CommandModule } from "yargs";
import type { PretrainOptions } from "../train/pretrain.js";

/** Defaults of `nr pretrain` (the committed models/nr-tiny-math was made with them). */
export const PRETRAIN_DEFAULTS: Omit<PretrainOptions, "out" | "log"> = {
  seed: 0,
  steps: 1200,
  batchSize: 32,
  lr: 5e-3,
  hidden: 64,
  layers: 3,
  heads: 4,
  kvHeads: 2,
  intermediate: 192,
  problems: 20000,
  minSteps: 1,
  maxSteps: 1,
  maxOperand: 12,
  maxValue: 40,
};

export const pretrainCommand: CommandModule<object, PretrainOptions> = {
  command: "pretrain",
  describe: "Pre-train the small base model of the embedded default on synthetic text (seeded, full-parameter, on the GPU)",
  builder: (y: Argv) =>
    y
      .option("out", { type: "string", demandOption: true, describe: "output HF checkpoint folder, e.g. models/nr-tiny-math" })
      .option("seed", { type: "number", default: PRETRAIN_DEFAULTS.seed })
      .option("steps", { type: "number", default: PRETRAIN_DEFAULTS.steps })
      .option("batch-size", { type: "number", default: PRETRAIN_DEFAULTS.batchSize })
      .option("lr", { type: "number", default: PRETRAIN_DEFAULTS.lr })
      .option("hidden", { type: "number", default: PRETRAIN_DEFAULTS.hidden })
      .option("layers", { type: "number", default: PRETRAIN_DEFAULTS.layers })
      .option("heads", { type: "number", default: PRETRAIN_DEFAULTS.heads })
      .option("kv-heads", { type: "number", default: PRETRAIN_DEFAULTS.kvHeads })
      .option("intermediate", { type: "number", default: PRETRAIN_DEFAULTS.intermediate })
      .option("problems", { type: "number", default: PRETRAIN_DEFAULTS.problems })
      .option("min-steps", { type: "number", default: PRETRAIN_DEFAULTS.minSteps })
      .option("max-steps", { type: "number", default: PRETRAIN_DEFAULTS.maxSteps })
      .option("max-operand", { type: "number", default: PRETRAIN_DEFAULTS.maxOperand })
      .option("max-value", { type: "number", default: PRETRAIN_DEFAULTS.maxValue })
      .option("direct-share", { type: "number", default: 0, describe: "share (0..1) of the multi-step problems answered directly, without working" })
      .option("task", { choices: ["words", "expression"] as const, default: "words", describe: "synthetic problems: word problems, or one-line + / - chains (7 + 5 - 3 = ?)" })
      .option("fact-copies", { type: "number", default: 0, describe: "expression task: copies of every one-operation fact of the range added to the corpus (0: none)" })
      .option("init", { type: "string", describe: "continue from this checkpoint folder (made by nr pretrain) instead of a random init" })
      .option("snapshot-every", { type: "number", default: 0, describe: "also save the weights every N steps to <out>.snapshots/step-N (0: off)" })
      .example("$0 pretrain --out models/nr-tiny-math", "make the default's base model (the committed one was made this way)") as unknown as Argv<PretrainOptions>,
  handler: async (a) => {
    const { pretrain } = await import("../train/pretrain.js"); // the GPU stack loads only when the command runs
    await pretrain(a);
  },
};
