// @nr/model — host side of the decoder: HF config, streaming safetensors, tokenizer + chat template, random model
// generator, float64 reference forward, ONNX export (a transformers.js model folder with a KV cache).
export * from "./config.js";
export * from "./dtypes.js";
export * from "./safetensors.js";
export * from "./checkpoint.js";
export * from "./tokenizer.js";
export * from "./byte-bpe.js";
export * from "./generate.js";
export * from "./random-checkpoint.js";
export * from "./reference.js";
export * from "./onnx.js";
export * from "./export-folder.js";
export * from "./decoder.js";
export * from "./load.js";
export * from "./bnb.js";
