// Will this model train on this adapter? For each phase of `nr train` (load, SFT step, RL generation, RL training
// step) the estimated device memory (@nr/lora memoryReport, the KV cache) against the adapter's memory, and the
// largest single buffer a kernel binds against maxStorageBufferBindingSize — with the config keys that would make a
// phase fit. Nothing is loaded or run: config.json and the training config are enough.
import { GpuBackend, type Engine } from "@nr/autograd";
import { tableShardRows } from "@nr/kernels";
import { memoryReport, type LoraTarget } from "@nr/lora";
import type { ModelConfig } from "@nr/model";
import { rlTokenBudget, type TrainConfig } from "./run/index.js";
import { kvLayerBytes } from "./kv-fit.js";
import { EVAL_BATCH } from "./train/run-eval.js";

export interface PhaseFit {
  phase: string;
  /** What the phase runs at (rows × tokens). */
  shape: string;
  /** Estimated device bytes at the phase's peak. */
  estimateBytes: number;
  /** The largest single binding a kernel needs in this phase, and what it is. */
  largestBindingBytes: number;
  largestBinding: string;
  /** null when the adapter's memory is unknown. */
  fitsMemory: boolean | null;
  fitsBinding: boolean;
  /** Config keys that lower this phase's memory or largest binding. */
  knobs: string;
}

export interface AdapterLimits {
  maxStorageBufferBindingSize: number;
  /** Device memory in bytes, or null when unknown (WebGPU does not report it). */
  memoryBytes: number | null;
}

/** A binding: its bytes and what it holds. */
type Binding = [number, string];
const largest = (...b: Binding[]): Binding => b.reduce((a, x) => (x[0] > a[0] ? x : a));

/** The largest activation of a step over `tokens` tokens: the MLP's gate/up outputs, or the attention rows. */
function activationBinding(m: ModelConfig, tokens: number): Binding {
  return largest([tokens * m.intermediateSize * 4, `MLP activation [${tokens} tokens × ${m.intermediateSize}] f32`], [tokens * m.numHeads * m.headDim * 4, `attention activation [${tokens} tokens × ${m.numHeads * m.headDim}] f32`]);
}

/** The largest weight bound at load: a linear weight in its upload dtype, or one row shard of the embedding table. */
function loadBinding(m: ModelConfig, cfg: TrainConfig, limit: number): Binding {
  const H = m.hiddenSize, q = m.numHeads * m.headDim;
  const [N, K] = m.intermediateSize * H >= q * H ? [m.intermediateSize, H] : [q, H];
  // NF4 quantises the stored bf16/f16 bits on the GPU; an f16 base uploads f16; f32 uploads f32
  const wBytes = cfg.model.quant === "nf4" ? (m.torchDtype === "float32" ? 4 : 2) : cfg.model.dtype === "f16" ? 2 : 4;
  const tBytes = cfg.model.quant === "none" && cfg.model.dtype === "f16" ? 2 : 4;
  // tables and linear weights over the limit are held as row shards / blocks (loadDecoder)
  const split = (rows: number, cols: number, bytes: number): [number, number] => {
    try {
      const per = tableShardRows(rows, cols, bytes, limit);
      return [per, Math.ceil(rows / per)];
    } catch {
      return [rows, 1]; // two rows do not fit: the whole matrix is the binding
    }
  };
  const [wRows, wBlocks] = split(N, K, wBytes);
  const [tRows, tShards] = split(m.vocabSize, H, tBytes);
  return largest(
    [wRows * K * wBytes, `linear weight [${N} × ${K}]${wBlocks > 1 ? ` row block (${wBlocks} blocks of ${wRows} rows)` : ""} at load`],
    [tRows * H * tBytes, `embedding table${tShards > 1 ? ` shard (${tShards} shards of ${tRows} rows)` : ""}`],
  );
}

/**
 * Rows of `tokensPerRow` tokens one forward pass can take on this engine before its widest activation (the MLP's
 * [tokens × intermediate] f32 output) outgrows one storage binding; 0 (no cap) off the GPU. RL training uses it when
 * rl.microBatchRows is 0, so a batch the adapter cannot bind is split into micro-batches instead of failing.
 */
export function rowsPerForward(e: Engine, m: WidthShape, tokensPerRow: number): number {
  return e.backend instanceof GpuBackend ? rowsThatFit(m, tokensPerRow, e.backend.shardBytes) : 0;
}

type WidthShape = Pick<ModelConfig, "intermediateSize" | "hiddenSize" | "numHeads" | "headDim">;

/** Rows of `tokensPerRow` tokens whose widest f32 activation fits `limit` bytes (at least 1). */
function rowsThatFit(m: WidthShape, tokensPerRow: number, limit: number): number {
  const widest = Math.max(m.intermediateSize, m.hiddenSize, m.numHeads * m.headDim);
  return Math.max(1, Math.floor(limit / (Math.max(1, tokensPerRow) * widest * 4)));
}

/** The fit of every phase of `cfg` for model `m` on an adapter with `limits`; `promptTokens` is the longest prompt. */
export function fitReport(m: ModelConfig, cfg: TrainConfig, limits: AdapterLimits, promptTokens: number): PhaseFit[] {
  const lora = { r: cfg.lora.r, alpha: cfg.lora.alpha, dropout: cfg.lora.dropout, targets: cfg.lora.targets as LoraTarget[] };
  const base = { quant: cfg.model.quant, dtype: cfg.model.quant === "nf4" ? ("f32" as const) : cfg.model.dtype, doubleQuant: cfg.model.doubleQuant };
  const report = (tokens: number, checkpoint: boolean) => memoryReport(m, lora, { tokens, checkpoint, ...base });
  const limit = limits.maxStorageBufferBindingSize;
  const phase = (p: Omit<PhaseFit, "fitsMemory" | "fitsBinding">): PhaseFit => ({
    ...p,
    fitsMemory: limits.memoryBytes === null ? null : p.estimateBytes <= limits.memoryBytes,
    fitsBinding: p.largestBindingBytes <= limit,
  });
  const out: PhaseFit[] = [];
  const baseBytes = report(1, true).baseBytes;
  const [loadB, loadWhat] = loadBinding(m, cfg, limit);
  out.push(phase({ phase: "load", shape: `${cfg.model.quant === "nf4" ? "NF4" : cfg.model.dtype} base`, estimateBytes: baseBytes, largestBindingBytes: loadB, largestBinding: loadWhat, knobs: "model.quant nf4 (4-bit linears) or model.dtype f16 (half of f32); a linear weight over the binding limit needs an adapter with a larger maxStorageBufferBindingSize" }));
  if (cfg.sft.enabled) {
    // a batch is run in parts of as many rows as one binding holds the activation of (sftStep)
    const rows = Math.min(cfg.sft.batchSize, rowsThatFit(m, cfg.sft.maxSeqLen, limit));
    const tokens = rows * cfg.sft.maxSeqLen;
    const [b, what] = activationBinding(m, tokens);
    out.push(phase({ phase: "SFT step", shape: `${rows} × ${cfg.sft.maxSeqLen} tokens`, estimateBytes: report(tokens, cfg.sft.checkpointing).totalBytes, largestBindingBytes: b, largestBinding: what, knobs: "sft.batchSize (raise sft.gradAccum to keep the effective batch), sft.maxSeqLen, sft.checkpointing true" }));
  }
  if (cfg.rl.enabled) {
    const len = promptTokens + rlTokenBudget(cfg);
    const genRows = cfg.rl.promptsPerStep * cfg.rl.G;
    const kvLayer = kvLayerBytes(m, genRows, len);
    const logits = genRows * m.vocabSize * 4;
    const [gb, gwhat] = largest([kvLayer, `one layer's K (or V) cache [${genRows} rows × ${len} tokens]`], [logits, `decode logits [${genRows} × ${m.vocabSize}] f32`]);
    out.push(phase({ phase: "RL generation", shape: `${genRows} rows × ${len} tokens`, estimateBytes: baseBytes + report(1, true).adapterBytes + 2 * m.numLayers * kvLayer + logits, largestBindingBytes: gb, largestBinding: gwhat, knobs: "rl.promptsPerStep, rl.G, rl.maxNewTokens (the KV cache grows with rows × tokens)" }));
    // rl.microBatchRows 0: a minibatch's rows, capped to what one binding holds (as rlStep does)
    const rows = cfg.rl.microBatchRows > 0 ? cfg.rl.microBatchRows : Math.min(rowsThatFit(m, len, limit), Math.ceil(genRows / cfg.rl.miniBatches));
    const [tb, twhat] = activationBinding(m, rows * len);
    out.push(phase({ phase: "RL training step", shape: `${rows} rows × ${len} tokens`, estimateBytes: report(rows * len, cfg.sft.checkpointing).totalBytes, largestBindingBytes: tb, largestBinding: twhat, knobs: "rl.microBatchRows (completions per forward pass), rl.miniBatches, rl.maxNewTokens, sft.checkpointing true (RL uses it too)" }));
  }
  if (cfg.eval.n > 0) {
    // an eval decodes EVAL_BATCH problems at once, a greedy row and eval.samples sampled rows each
    const rows = Math.min(EVAL_BATCH, cfg.eval.n) * (1 + cfg.eval.samples);
    const len = promptTokens + cfg.eval.maxNewTokens;
    const kvLayer = kvLayerBytes(m, rows, len);
    const [b, what] = largest([kvLayer, `one layer's K (or V) cache [${rows} rows × ${len} tokens]`], [rows * m.vocabSize * 4, `decode logits [${rows} × ${m.vocabSize}] f32`]);
    out.push(phase({ phase: "eval generation", shape: `${rows} rows × ${len} tokens`, estimateBytes: baseBytes + report(1, true).adapterBytes + 2 * m.numLayers * kvLayer + rows * m.vocabSize * 4, largestBindingBytes: b, largestBinding: what, knobs: "eval.samples (rows: 32 problems at a time), eval.maxNewTokens" }));
  }
  return out;
}

export function printFit(fits: PhaseFit[], limits: AdapterLimits) {
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  console.log(`memory    ${limits.memoryBytes === null ? "unknown (WebGPU does not report device memory; pass --memory GiB)" : gib(limits.memoryBytes)}; binding limit ${mib(limits.maxStorageBufferBindingSize)}`);
  for (const f of fits) {
    const mem = f.fitsMemory === null ? "?" : f.fitsMemory ? "fits" : "TOO BIG";
    const bind = f.fitsBinding ? "fits" : "TOO BIG";
    console.log(`${f.phase.padEnd(17)} ${f.shape.padEnd(24)} memory ${gib(f.estimateBytes).padStart(10)} ${mem.padEnd(8)} largest binding ${mib(f.largestBindingBytes).padStart(10)} ${bind.padEnd(8)} (${f.largestBinding})`);
    if (f.fitsMemory === false || !f.fitsBinding) console.log(`${"".padEnd(17)} to make it fit: ${f.knobs}`);
  }
}
