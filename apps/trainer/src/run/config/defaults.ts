// The embedded default config (= configs/train/default.json; a test keeps them equal).
import { LORA_TARGET_NAMES, type GeneratedModelConfig, type TrainConfig } from "./types.js";

/** Shape filled in when a config asks for a generated model (`--model.generate.hidden 32` …) without all fields. */
export const GENERATED_MODEL_DEFAULTS: GeneratedModelConfig = { hidden: 64, layers: 3, heads: 4, kvHeads: 2, intermediate: 192 };

/** The embedded default (identical to configs/train/default.json; a test keeps them equal). */
export const DEFAULT_CONFIG: TrainConfig = {
  name: "default",
  description: "Embedded default: the committed tiny Qwen2-architecture model (models/nr-tiny-chains, made by nr pretrain), the synthetic task's + / - chains of 2-4 operations, an SFT cold start on worked solutions, then Dr. GRPO; minutes on a CPU.",
  seed: 0,
  model: { dir: "models/nr-tiny-chains", quant: "none", dtype: "f32", doubleQuant: false },
  data: { source: "synthetic", trainSize: 2000, evalSize: 200, difficulty: { kind: "expression", minSteps: 2, maxSteps: 4, maxOperand: 9, maxValue: 20 }, prompt: "qa" },
  lora: { r: 16, alpha: 32, dropout: 0, targets: [...LORA_TARGET_NAMES] },
  sft: { enabled: true, lr: 5e-4, batchSize: 16, steps: 40, warmup: 5, schedule: "cosine", gradAccum: 1, checkpointing: false, maxSeqLen: 384, noThinkFraction: 0 },
  rl: {
    enabled: true,
    algo: "dr_grpo",
    G: 8,
    temperature: 0.5,
    topP: 1.0,
    maxNewTokens: 48,
    ppoEpochs: 1,
    miniBatches: 1,
    lr: 2e-4,
    clipGradNorm: 1.0,
    steps: 60,
    promptsPerStep: 8,
    dynamicSampling: false,
    lengthStages: [],
    lengthStageTruncation: 0,
    microBatchRows: 0,
  },
  eval: { every: 30, n: 200, temperature: 0, maxNewTokens: 48, samples: 8, sampleTemperature: 1 },
  checkpoint: { every: 10, keepLast: 2 },
  guards: { maxBadSteps: 3 },
  output: { dir: "runs" },
};
