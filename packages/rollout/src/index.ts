export { OpenAIGenerator, HttpError } from "./openai.js";
export type { OpenAIGeneratorOptions, RolloutCompletion } from "./openai.js";
export { WebGpuGenerator } from "./webgpu.js";
export type { TokenizerLike, SampleOptions, SamplingSettings, PromptSpec, GeneratedSequence, GenerationTiming, GenerationJob, JobSource } from "./webgpu.js";
export { serve, ApiError } from "./serve.js";
export type { ServeOptions, ServeTokenizer, RunningServer } from "./serve.js";
