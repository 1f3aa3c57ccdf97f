export { Engine, Tensor } from "./tensor.js";
export type { DType } from "./tensor.js";
export type { Backend, Storage, AttentionDims, AdamWStep } from "./backend.js";
export { CpuBackend } from "./cpu.js";
export { linear, add, scale, rmsnorm, rope, swiglu, attention, embedding, lmHeadLogprob } from "./ops.js";
export { AdamW } from "./optim.js";
export type { AdamWConfig } from "./optim.js";
export { learningRate } from "./schedule.js";
export type { ScheduleConfig, ScheduleKind } from "./schedule.js";
