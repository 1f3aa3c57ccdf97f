// Memory report for LoRA training over a frozen base: what each part costs in bytes.
import { loraParameterCount, type LoraConfig } from "./lora.js";

export interface MemoryShape {
  numLayers: number;
  hiddenSize: number;
  intermediateSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  tieWordEmbeddings: boolean;
}

export interface MemoryReport {
  baseLinearParams: number;
  baseBytesNf4: number;
  baseBytesF16: number;
  embeddingBytesF16: number;
  loraParams: number;
  loraBytes: number;
  optimizerBytes: number;
  gradientBytes: number;
  activationBytes: number;
  totalBytes: number;
}

/**
 * Bytes for: base linear weights in NF4 (4 bits + 8-bit absmax per 64 + f32 per 256 blocks, double-quantised) or
 * f16; the embedding / LM head in f16 (never quantised, as in bitsandbytes); LoRA master weights, gradients and AdamW
 * m/v in f32; activations for one micro-batch of `tokens` tokens (f32 residual stream, per layer the tensors the
 * backward keeps: ~ (6·H + 2·(q+kv) + 3·I) floats per token without checkpointing, 1·H per layer with it).
 */
export function memoryReport(s: MemoryShape, lora: LoraConfig, batch: { tokens: number; checkpoint: boolean }): MemoryReport {
  const H = s.hiddenSize, q = s.numHeads * s.headDim, kv = s.numKvHeads * s.headDim, I = s.intermediateSize;
  const perLayer = H * q + 2 * H * kv + q * H + 3 * H * I;
  const baseLinearParams = s.numLayers * perLayer;
  const blocks = baseLinearParams / 64;
  const baseBytesNf4 = baseLinearParams / 2 + blocks + (blocks / 256) * 4 + s.numLayers * 7 * (256 * 4 + 4);
  const baseBytesF16 = baseLinearParams * 2;
  const embeddingBytesF16 = s.vocabSize * H * 2 * (s.tieWordEmbeddings ? 1 : 2);
  const loraParams = loraParameterCount(s, lora);
  const loraBytes = loraParams * 4;
  const optimizerBytes = loraParams * 8;
  const gradientBytes = loraParams * 4;
  const perTokenLayer = batch.checkpoint ? H : 6 * H + 2 * (q + kv) + 3 * I;
  const activationBytes = batch.tokens * (s.numLayers * perTokenLayer + 4 * H) * 4;
  return {
    baseLinearParams,
    baseBytesNf4,
    baseBytesF16,
    embeddingBytesF16,
    loraParams,
    loraBytes,
    optimizerBytes,
    gradientBytes,
    activationBytes,
    totalBytes: baseBytesNf4 + embeddingBytesF16 + loraBytes + optimizerBytes + gradientBytes + activationBytes,
  };
}
