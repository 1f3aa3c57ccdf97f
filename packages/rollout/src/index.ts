export { OpenAIGenerator, HttpError, postJson, completeTokenIds, loadLoraAdapter, unloadLoraAdapter } from "./openai.js";
export type { OpenAIGeneratorOptions, RolloutCompletion, ServerConnection, TokenIdsRequest, TokenIdsCompletion } from "./openai.js";
export { WebGpuGenerator } from "./webgpu.js";
export type { TokenizerLike, SampleOptions, SamplingSettings, PromptSpec, GeneratedSequence, GenerationTiming, GenerationJob, JobSource } from "./webgpu.js";
export { serve, ApiError, jsonDepth, MAX_JSON_DEPTH } from "./serve.js";
export type { ServeOptions, ServeTokenizer, RunningServer, RuntimeLora } from "./serve.js";
