export { OpenAIGenerator, HttpError } from "./openai.js";
export type { OpenAIGeneratorOptions, RolloutCompletion } from "./openai.js";
export { WebGpuGenerator } from "./webgpu.js";
export type { TokenizerLike, SampleOptions, GeneratedSequence, GenerationTiming } from "./webgpu.js";
