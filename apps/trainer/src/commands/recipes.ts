// The published recipes this project reproduces, each as the nr commands that run it. A step's command is a function
// of the model folder, the data folder and the run folder, so `nr recipe show` prints exactly what `nr recipe run`
// executes, and a user can run the same steps by hand.
import { join } from "node:path";
import { UsageError } from "./common.js";

/** Where a recipe's step commands point. */
export interface RecipeContext {
  model: string;
  data: string;
  run: string;
}

export type StepKind = "curate" | "train" | "eval";

export interface RecipeStep {
  id: string;
  kind: StepKind;
  what: string;
  /** The nr arguments (without `nr`). */
  args: (c: RecipeContext) => string[];
}

export interface RecipeDataFile {
  file: string;
  fields: string;
  use: string;
}

export interface Recipe {
  name: string;
  title: string;
  /** The checkpoint the published numbers were measured on. */
  model: string;
  /** configs/train preset its training steps use. */
  preset: string;
  data: RecipeDataFile[];
  published: string;
  steps: RecipeStep[];
  /** Printed after the last step (not run: e.g. a server that keeps running). */
  next?: (c: RecipeContext) => string[];
  /** What the published recipe does that these steps do not. */
  gaps: string[];
}

/**
 * `base` with the flags of `extra` put in place of the same flags in it (a flag given twice would reach yargs as an
 * array). A flag without a value (`--near-dedup`) is followed by another flag or nothing.
 */
export function withFlags(base: readonly string[], extra: readonly string[]): string[] {
  const parse = (a: readonly string[]) => {
    const out: [string, string | null][] = [];
    for (let i = 0; i < a.length; i++) {
      if (!a[i].startsWith("--")) throw new UsageError(`extra flags: "${a[i]}" is not a --flag or its value (expected e.g. "--n 1 --max-new-tokens 8")`);
      const hasValue = i + 1 < a.length && !a[i + 1].startsWith("--");
      out.push([a[i], hasValue ? a[++i] : null]);
    }
    return out;
  };
  const add = parse(extra);
  const names = new Set(add.map(([f]) => f));
  const out: string[] = [];
  for (let i = 0; i < base.length; i++) {
    const takesValue = base[i].startsWith("--") && i + 1 < base.length && !base[i + 1].startsWith("--");
    if (base[i].startsWith("--") && names.has(base[i])) {
      if (takesValue) i++;
      continue;
    }
    out.push(base[i]);
  }
  for (const [f, v] of add) out.push(f, ...(v === null ? [] : [v]));
  return out;
}

const d = (c: RecipeContext, file: string) => join(c.data, file);

/** Greedy (or sampled) evaluation of the base or an adapter, report and per-problem details in <run>/eval/. */
function evalStep(id: string, what: string, file: string, opts: { adapter?: string; flags?: string[] | ((c: RecipeContext) => string[]) } = {}): RecipeStep {
  return {
    id,
    kind: "eval",
    what,
    args: (c) =>
      withFlags(
        ["eval", "--model", c.model, ...(opts.adapter ? ["--adapter", join(c.run, opts.adapter)] : []), "--data", d(c, file), "--n", "100000", "--quant", "nf4", "--prompt-format", "chat", "--max-new-tokens", "384"],
        [...(typeof opts.flags === "function" ? opts.flags(c) : (opts.flags ?? [])), "--out", join(c.run, "eval", `${id}.json`), "--details", join(c.run, "eval", `${id}.jsonl`)],
      ),
  };
}

/** An nr train phase into <run>/<name>/ (its best/ is the adapter later steps use). */
function trainStep(id: string, what: string, command: "sft" | "rl", preset: string, data: (c: RecipeContext) => string, flags: (c: RecipeContext) => string[] = () => []): RecipeStep {
  return { id, kind: "train", what, args: (c) => [command, "--preset", preset, "--model", c.model, "--data", data(c), "--name", id, "--output.dir", c.run, ...flags(c)] };
}

/** `nr curate` of one data file into <run>/curated.jsonl (+ report), decontaminated against `evalSets`. */
function curateStep(what: string, file: string, evalSets: string[], flags: (c: RecipeContext) => string[] = () => []): RecipeStep {
  return {
    id: "curate",
    kind: "curate",
    what,
    args: (c) => ["curate", "--data", d(c, file), "--out", join(c.run, "curated.jsonl"), ...evalSets.flatMap((f) => ["--eval-set", d(c, f)]), ...flags(c)],
  };
}

/** MATH-500's CoT evaluation: 4 worked examples from the curated training problems' source file as chat turns. */
const MATH_4SHOT = (c: RecipeContext) => ["--max-new-tokens", "1024", "--shots", "4", "--shots-from", d(c, "math_train.jsonl")];

/** avg@16 at T 0.6 (DeepScaleR's evaluation), two problems (32 sequences) per generation batch. */
const AVG16 = ["--samples", "16", "--temperature", "0.6", "--top-p", "1", "--max-new-tokens", "3072", "--repetition-stop", "--batch-size", "2"];

const startFrom = (c: RecipeContext, step: string) => ["--model.adapter", join(c.run, step, "best")];

const nanoReasoner: Recipe = {
  name: "nano-reasoner",
  title: "Nano-Reasoner: SFT cold start, then GRPO and Dr. GRPO from the SFT adapter (QLoRA)",
  model: "Qwen2.5-Math-1.5B-Instruct",
  preset: "nano-reasoner",
  data: [
    { file: "sft.jsonl", fields: "problem, solution, answer (OpenR1-Math; GSM8K's question/answer with #### also reads)", use: "SFT cold start (the first 5,000 rows with a solution)" },
    { file: "gsm8k_train.jsonl", fields: "question, answer (… #### 72)", use: "RL prompts" },
    { file: "gsm8k_test.jsonl", fields: "question, answer (… #### 72)", use: "greedy pass@1, 1,319 problems" },
  ],
  published: "GSM8K greedy pass@1: base ≈65 % → SFT ≈72 % → GRPO ≈82 % → Dr. GRPO ≈84 %",
  steps: [
    evalStep("base-gsm8k", "base model, GSM8K test greedy", "gsm8k_test.jsonl"),
    trainStep("sft", "SFT cold start (lr 2e-5, batch 4, ≤5,000 samples)", "sft", "nano-reasoner", (c) => d(c, "sft.jsonl")),
    evalStep("sft-gsm8k", "SFT adapter, GSM8K test greedy", "gsm8k_test.jsonl", { adapter: "sft/best" }),
    trainStep("grpo", "GRPO from the SFT adapter (G 8, T 0.8, 384 tokens, 2 PPO epochs, clip-norm 1)", "rl", "nano-reasoner", (c) => d(c, "gsm8k_train.jsonl"), (c) => ["--rl.algo", "grpo", ...startFrom(c, "sft")]),
    evalStep("grpo-gsm8k", "GRPO adapter, GSM8K test greedy", "gsm8k_test.jsonl", { adapter: "grpo/best" }),
    trainStep("dr-grpo", "Dr. GRPO from the SFT adapter (same settings)", "rl", "nano-reasoner", (c) => d(c, "gsm8k_train.jsonl"), (c) => ["--rl.algo", "dr_grpo", ...startFrom(c, "sft")]),
    evalStep("dr-grpo-gsm8k", "Dr. GRPO adapter, GSM8K test greedy", "gsm8k_test.jsonl", { adapter: "dr-grpo/best" }),
  ],
  gaps: [],
};

const nexusLpro: Recipe = {
  name: "nexus-lpro",
  title: "Nexus-1.5B / LPRO: learnable-zone curation, then LPRO; CoT and TIR evaluation",
  model: "Qwen2.5-Math-1.5B-Instruct",
  preset: "nexus-lpro",
  data: [
    { file: "math_train.jsonl", fields: "problem, solution, answer (MATH train; the answer may be the solution's \\boxed{})", use: "curated to the learnable zone (2–5 of 8 base samples correct), then RL prompts; the 4 worked examples of the MATH-500 CoT prompt" },
    { file: "math500_test.jsonl", fields: "problem, answer", use: "MATH-500 greedy pass@1 (CoT and TIR prompts); also decontaminates the curated set" },
    { file: "gsm8k_test.jsonl", fields: "question, answer (… #### 72)", use: "GSM8K greedy pass@1; also decontaminates the curated set" },
    { file: "gsm8k_train.jsonl", fields: "question, answer (… #### 72)", use: "the 8 worked examples of the GSM8K CoT prompt" },
  ],
  published: "MATH-500 80.2 (CoT) / 84.0 (TIR), GSM8K 85.2; −14 % response length vs GRPO; λ 0.0 / 0.1 / 0.3 → 77.4 / 80.2 / 78.0",
  steps: [
    curateStep("answer check, dedup, decontamination, learnable zone: keep 2–5 of 8 base samples correct", "math_train.jsonl", ["math500_test.jsonl", "gsm8k_test.jsonl"], (c) => [
      "--model", c.model, "--quant", "nf4", "--prompt-format", "chat", "--samples", "8", "--min-pass", "2", "--max-pass", "5", "--temperature", "0.8", "--max-new-tokens", "1024",
    ]),
    evalStep("base-math500-cot", "base model, MATH-500 greedy, 4-shot CoT prompt", "math500_test.jsonl", { flags: MATH_4SHOT }),
    trainStep("lpro", "LPRO (G 4, λ 0.1, ε 0.20/0.28, lr 1e-6, 4 PPO epochs, format bonus 0.1)", "rl", "nexus-lpro", (c) => join(c.run, "curated.jsonl")),
    evalStep("lpro-math500-cot", "LPRO adapter, MATH-500 greedy, 4-shot CoT prompt", "math500_test.jsonl", { adapter: "lpro/best", flags: MATH_4SHOT }),
    evalStep("lpro-math500-tir", "LPRO adapter, MATH-500 greedy, TIR prompt (python in the sandbox)", "math500_test.jsonl", { adapter: "lpro/best", flags: ["--max-new-tokens", "1024", "--prompt-format", "tir"] }),
    evalStep("lpro-gsm8k-cot", "LPRO adapter, GSM8K test greedy, 8-shot CoT prompt", "gsm8k_test.jsonl", { adapter: "lpro/best", flags: (c) => ["--max-new-tokens", "1024", "--shots", "8", "--shots-from", d(c, "gsm8k_train.jsonl")] }),
  ],
  gaps: [
    "the CoT shots are seeded picks from the train files (chat turns), not the fixed exemplar sets of the original 8-shot GSM8K / 4-shot MATH prompts",
    "the λ ablation (0.0 / 0.3) is one more RL run per λ, by hand: nr rl --preset nexus-lpro --model MODEL --data RUN/curated.jsonl --rl.algoConfig.lpro.lambda 0.3 --name lpro-lambda-0.3 --output.dir RUN",
  ],
};

const deepScaleR: Recipe = {
  name: "deepscaler",
  title: "DeepScaleR: curated set, GRPO with 1/0 reward and context lengthening, avg@16",
  model: "Qwen2.5-Math-1.5B-Instruct (DeepScaleR itself started from DeepSeek-R1-Distill-Qwen-1.5B)",
  preset: "deepscaler",
  data: [
    { file: "train.jsonl", fields: "problem, answer (or solution with \\boxed{})", use: "curated (answer check, exact + embedding dedup, decontamination), then RL prompts" },
    { file: "aime.jsonl", fields: "problem, answer", use: "avg@16 at T 0.6 (and decontamination)" },
  ],
  published: "AIME 2024 avg@16 43.1 % for DeepScaleR-1.5B-Preview (from 28.8 % for its base)",
  steps: [
    curateStep("answer check, exact dedup, embedding near-dedup, decontamination against the eval set", "train.jsonl", ["aime.jsonl"], () => ["--near-dedup"]),
    evalStep("base-aime-avg16", "base model, avg@16 at T 0.6", "aime.jsonl", { flags: AVG16 }),
    trainStep("rl", "GRPO, reward 1/0, KL β 0.001, length stages 1024 → 2048 → 3072", "rl", "deepscaler", (c) => join(c.run, "curated.jsonl")),
    evalStep("rl-aime-avg16", "RL adapter, avg@16 at T 0.6", "aime.jsonl", { adapter: "rl/best", flags: AVG16 }),
  ],
  gaps: [
    "the published stages are 8K → 16K → 24K new tokens on a 128K-context model; the preset rescales them to Qwen2.5-Math-1.5B's 4,096-token window (1024 → 2048 → 3072); on a long-context checkpoint pass --train '--rl.maxNewTokens 24576 --rl.lengthStages 8192,16384,24576'",
    "the embedding dedup uses the built-in hashed bag-of-words encoder unless --curate '--embedder DIR' names a MiniLM-class ONNX encoder",
  ],
};

const qedNanoSft: Recipe = {
  name: "qed-nano-sft",
  title: "QED-Nano SFT: unique problems, long-context SFT (cosine, peak 3e-5, 3 % warm-up), then serving",
  model: "Qwen2.5-Math-1.5B-Instruct (the preset's shape; set --model to your checkpoint)",
  preset: "qed-nano-sft",
  data: [
    { file: "sft.jsonl", fields: "problem, solution, answer (long worked solutions)", use: "curated to unique problems (exact + near dedup, decontamination), then SFT" },
    { file: "eval.jsonl", fields: "problem, answer", use: "greedy pass@1 with a 3,072-token cap (the length-explosion guard)" },
  ],
  published: "none for this shape: the recipe reproduces the training procedure, not a published score",
  steps: [
    curateStep("unique problems: answer check, exact and near dedup, decontamination", "sft.jsonl", ["eval.jsonl"], () => ["--near-dedup"]),
    trainStep("sft", "long-context SFT: cosine, peak 3e-5, warm-up 3 %, 4,096-token sequences", "sft", "qed-nano-sft", (c) => join(c.run, "curated.jsonl")),
    evalStep("sft-eval", "SFT adapter, greedy, capped at 3,072 new tokens, looping completions stopped", "eval.jsonl", { adapter: "sft/best", flags: ["--max-new-tokens", "3072", "--repetition-stop"] }),
  ],
  next: (c) => ["serve", "--model", c.model, "--adapter", `qed-nano=${join(c.run, "sft", "best")}`, "--port", "8000"],
  gaps: [
    "the repetition stop (--repetition-stop: a tail of ≥ 64 tokens that is one block of ≤ 64 tokens repeated ≥ 4 times) is in nr eval / nr generate; nr serve requests do not set it",
    "sft.warmup is a step count: the preset's 28 steps are 3 % of 3 epochs of 5,000 examples at batch 4 × 4; scale it with your data",
  ],
};

export const RECIPES: readonly Recipe[] = [nanoReasoner, nexusLpro, deepScaleR, qedNanoSft];
