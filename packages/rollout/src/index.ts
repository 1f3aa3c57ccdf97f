export { OpenAIGenerator, HttpError } from "./openai.js";
export type { OpenAIGeneratorOptions, RolloutCompletion } from "./openai.js";
