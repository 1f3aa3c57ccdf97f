// The training config's TypeScript types and the value lists the schema and the CLI share.
import { ALGO_NAMES, type AlgoName } from "@nr/algos";

/** The RL algorithms are @nr/algos' presets (one list, owned there). */
export const RL_ALGOS = ALGO_NAMES;
export type RlAlgo = AlgoName;
export const LR_SCHEDULES = ["constant", "linear", "cosine"] as const;
export type LrSchedule = (typeof LR_SCHEDULES)[number];
export const LORA_TARGET_NAMES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
export type LoraTargetName = (typeof LORA_TARGET_NAMES)[number];
export const BASE_QUANTS = ["none", "nf4"] as const;
export type BaseQuant = (typeof BASE_QUANTS)[number];
export const BASE_DTYPES = ["f32", "f16"] as const;
export type BaseDtype = (typeof BASE_DTYPES)[number];

/** Shape of the small Qwen2-architecture model the project generates when no checkpoint is given. */
export interface GeneratedModelConfig {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
}

/** Exactly one of `dir` (an HF checkpoint folder) or `generate` (make a small model). */
export interface ModelConfig {
  dir?: string;
  generate?: GeneratedModelConfig;
  /** Storage of the frozen base's linear weights: "nf4" (4-bit NormalFloat, QLoRA) or "none" (model.dtype). */
  quant: BaseQuant;
  /** Storage of an unquantised frozen base (linears, embedding, LM head): "f32", or "f16" (half the memory; needs shader-f16). */
  dtype: BaseDtype;
  /** NF4 only: quantise the absmax scales too (bitsandbytes `bnb_4bit_use_double_quant`). */
  doubleQuant: boolean;
  /** A PEFT LoRA adapter folder the policy starts from (e.g. an SFT run's best/); its r, alpha and targets must be lora's. */
  adapter?: string;
}

/** Synthetic-task difficulty (ignored for a dataset path). */
export interface DifficultyConfig {
  /** "words" (word problems, the default) or "expression" (one-line + / - chains, `7 + 5 - 3 = ?`). */
  kind?: "words" | "expression";
  minSteps: number;
  maxSteps: number;
  maxOperand: number;
  maxValue: number;
}

export interface DataConfig {
  /** "synthetic" (the project's math task) or a path to a JSONL/Parquet dataset (file or folder). */
  source: string;
  trainSize: number;
  evalSize: number;
  difficulty: DifficultyConfig;
  /** Prompt format: "qa" (`Q: … A: `, for the small generated models), "chat" (the tokenizer's chat template with
   * the chain-of-thought system prompt, for instruct checkpoints), "tir" (the chat template with the tool-integrated
   * system prompt: python blocks in completions run in @nr/sandbox and their output is appended), or "auto" (chat for
   * model.dir, qa otherwise). */
  prompt: PromptStyle;
  /** Skip malformed dataset rows (counted in the log) instead of stopping at the first with `file:line: reason`. Default false. */
  skipBadRows?: boolean;
}

export const PROMPT_STYLES = ["auto", "qa", "chat", "tir"] as const;
export type PromptStyle = (typeof PROMPT_STYLES)[number];

export interface LoraSection {
  r: number;
  alpha: number;
  dropout: number;
  /** Projection names; "all-linear" in a preset or override expands to all seven. */
  targets: LoraTargetName[];
}

export interface SftConfig {
  enabled: boolean;
  lr: number;
  batchSize: number;
  /** Exactly one of `epochs` (passes over data.trainSize examples) or `steps` (optimizer steps). */
  epochs?: number;
  steps?: number;
  /** Warm-up optimizer steps (linear from 0). */
  warmup: number;
  schedule: LrSchedule;
  gradAccum: number;
  /** Activation checkpointing per decoder layer. */
  checkpointing: boolean;
  maxSeqLen: number;
  /**
   * Share of SFT examples (0..1, picked by a seeded hash of the record id) whose target skips the worked solution:
   * an empty `<think>\n\n</think>` then the boxed answer, the "non-thinking" half of a hybrid-thinking cold start.
   * Default 0 (every example shows its work).
   */
  noThinkFraction?: number;
  /**
   * At most this many worked solutions in the cold start: a seeded draw from the train split's examples that fit
   * maxSeqLen (like `--max_train_samples` of Hugging Face's example scripts). Worked traces are the scarce data; RL
   * needs only final answers, so it keeps every train prompt. Default: all of them.
   */
  maxExamples?: number;
}

export interface RlConfig {
  enabled: boolean;
  algo: RlAlgo;
  /** Completions per prompt. */
  G: number;
  temperature: number;
  topP: number;
  maxNewTokens: number;
  ppoEpochs: number;
  miniBatches: number;
  lr: number;
  clipGradNorm: number;
  steps: number;
  promptsPerStep: number;
  /** DAPO-style: drop groups whose rewards are all equal (no signal) and refill. */
  dynamicSampling: boolean;
  /** Curriculum of max_new_tokens: stage k of n covers steps [k·steps/n, (k+1)·steps/n); [] = maxNewTokens throughout. */
  lengthStages: number[];
  /** Also advance to the next length stage early when a step's truncation rate exceeds this (0 = by step count only). */
  lengthStageTruncation: number;
  /** Completions per forward/backward pass (gradient accumulation inside a minibatch); 0 = the whole minibatch. */
  microBatchRows: number;
  /** Generate on OpenAI-compatible servers (vLLM, nr serve) instead of this GPU (apps/trainer/src/train/remote-rollout.ts). */
  rollout?: RolloutConfig;
  /**
   * The algorithm's own knobs: a partial @nr/algos AlgoConfig deep-merged over the `rl.algo` preset and checked by
   * @nr/algos, e.g. {"lpro": {"lambda": 0.1}, "clip": {"epsHigh": 0.28}, "kl": {"beta": 0.001}}.
   */
  algoConfig?: Record<string, unknown>;
}

export interface RolloutConfig {
  /** Base URLs of the servers, e.g. http://10.0.0.2:8000/v1 (each must load LoRA adapters at runtime). */
  servers: string[];
  /** Where each step's adapter is written for the servers to read (default: <run>/rollout-adapter). */
  adapterDir?: string;
  /** Bearer key for the servers (else NR_API_KEY); never written into the run folder. */
  apiKey?: string;
  /** Seconds a server may take to answer one request before its share goes to another server. */
  timeoutS: number;
  /** Truncated importance sampling: weight each token's policy gradient by min(π_trainer/π_sampler, cap); 0 = off. */
  tisCap: number;
}

export interface GuardConfig {
  /** Consecutive non-finite (skipped) steps before rolling back to the last good state. */
  maxBadSteps: number;
}

export interface EvalConfig {
  /** Evaluate every N RL steps (0 = only before and after). */
  every: number;
  n: number;
  temperature: number;
  maxNewTokens: number;
  /** Also sample this many completions per problem at `sampleTemperature` and report avg@n and pass@n (0 = greedy only). */
  samples: number;
  sampleTemperature: number;
}

export interface CheckpointConfig {
  /** Save every N optimizer steps (0 = only at the end). */
  every: number;
  keepLast: number;
}

export interface WandbConfig {
  project: string;
  /** W&B user or team (default: the API key's default entity). */
  entity?: string;
  baseUrl: string;
}

export interface OutputConfig {
  /** Parent folder of run folders: runs are written to `<dir>/<name>/`. */
  dir: string;
  wandb?: WandbConfig;
  /** Also write TensorBoard event files to `<run>/tensorboard/`. */
  tensorboard?: boolean;
}

export interface TrainConfig {
  name: string;
  description?: string;
  seed: number;
  model: ModelConfig;
  data: DataConfig;
  lora: LoraSection;
  sft: SftConfig;
  rl: RlConfig;
  eval: EvalConfig;
  checkpoint: CheckpointConfig;
  guards: GuardConfig;
  output: OutputConfig;
}
