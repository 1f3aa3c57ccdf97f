// What every phase of `nr train` works with: the run (config, folder, log, keeper) and the GPU session (device,
// engine, model, adapters, generator), plus the run's tokenized inputs.
import type { Gpu } from "@nr/kernels";
import type { Engine, Tensor } from "@nr/autograd";
import type { Decoder } from "@nr/model";
import type { LoraModel } from "@nr/lora";
import type { WebGpuGenerator } from "@nr/rollout";
import type { MathRecord } from "@nr/data";
import type { TrainConfig } from "../run/index.js";
import type { RunFolder } from "../run/folder.js";
import type { RunInputs } from "../run/inputs.js";
import type { RunKeeper } from "./keeper.js";
import { restoreTensor, type EvalRecord } from "./state.js";

export interface TrainSession {
  config: TrainConfig;
  run: RunFolder;
  log: (line: string) => void;
  keeper: RunKeeper;
  gpu: Gpu;
  engine: Engine;
  decoder: Decoder;
  lora: LoraModel;
  gen: WebGpuGenerator;
  inputs: RunInputs;
  /** The training split (RL prompts). */
  train: MathRecord[];
  /** The policy adapter's trainable tensors. */
  policyParams: Tensor[];
  /** Test hook (NR_INJECT_NAN): "sft:3", "rl:2!" … (see pipeline.ts). */
  nanAt: Set<string>;
  /** The held-out evaluation, logged and recorded under `label`. */
  evaluate: (label: string) => Promise<EvalRecord>;
}

/** Peak GPU pool memory since the last reset, MiB. */
export const gpuMemMiB = (s: TrainSession) => s.gpu.pool.getStats().peakAllocatedBytes / 2 ** 20;

/** NR_INJECT_NAN "…!" steps: poison a tensor's values (every later step fails until a rollback). */
export const poison = (t: Tensor) => restoreTensor(t, new Float32Array(t.size).fill(NaN));
