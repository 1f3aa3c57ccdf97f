// The measured pieces of `pnpm bench scale`, one base at a time: load, one SFT step, one RL step (generation, then a
// policy-gradient step on the generated sequences), and the memory estimate beside the pool. See index.ts.
import { AdamW, Engine, GpuBackend } from "@nr/autograd";
import { createGpu, type Gpu, type ProfileEntry } from "@nr/kernels";
import { loadDecoder, makeBatch, type Decoder, type ModelConfig } from "@nr/model";
import { LoraModel, memoryReport } from "@nr/lora";
import { WebGpuGenerator } from "@nr/rollout";

export type BaseKind = "nf4" | "f16";

export interface ScaleSettings {
  /** SFT micro-batch: rows × tokens. */
  batch: number;
  seq: number;
  /** RL: G samples of `newTokens` after a `prompt`-token prompt. */
  G: number;
  prompt: number;
  newTokens: number;
  r: number;
  /** Run one more SFT and RL step under the timestamp profiler for the per-kernel table. */
  profile: boolean;
}

/** GPU time per kernel over one profiled step (null entries: the adapter has no timestamp-query). */
export interface KernelTable {
  step: string;
  /** Wall time of the profiled step (passes split per dispatch, so a little slower than the timed step). */
  wallSeconds: number;
  gpuMs: number;
  kernels: ProfileEntry[] | null;
  note?: string;
}

export interface BaseResult {
  base: BaseKind;
  loadSeconds: number;
  /** Pool bytes the loaded base holds (after the load's trim). */
  poolAfterLoad: number;
  /** Pool bytes after adapters, AdamW and one SFT step (the pool keeps what it grew to: the step's peak). */
  poolAfterStep: number;
  estimateBytes: number;
  sft: { tokens: number; seconds: number; flops: number };
  rl: { genTokens: number; genSeconds: number; trainTokens: number; trainSeconds: number };
  /** Host peak RSS so far (bytes). */
  maxRss: number;
  kernelTables: KernelTable[];
}

const LORA = (r: number) => ({ r, alpha: 2 * r, seed: 1 });
const now = () => performance.now() / 1000;
const maxRss = () => process.resourceUsage().maxRSS * 1024;

/**
 * Model FLOPs of one token's forward pass at context length `ctx` (no recompute): 2 per weight of the seven
 * projections of every layer and of the LM head, plus causal attention (QKᵀ and PV over ~ctx/2 keys on average).
 */
export function forwardFlopsPerToken(c: ModelConfig, ctx: number): number {
  const H = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim, I = c.intermediateSize;
  const linear = c.numLayers * (H * q + 2 * H * kv + q * H + 3 * H * I);
  const attention = c.numLayers * 2 * 2 * (ctx / 2) * q;
  return 2 * (linear + c.vocabSize * H) + attention;
}

/**
 * FLOPs of a LoRA training step over `tokens` tokens: forward, and a backward that takes only input gradients through
 * the frozen base (as many FLOPs as the forward; attention's backward twice its forward). Adapters (rank r) and the
 * recompute of checkpointing are not counted.
 */
export function trainFlops(c: ModelConfig, tokens: number, ctx: number): number {
  const attention = c.numLayers * 2 * 2 * (ctx / 2) * c.numHeads * c.headDim;
  return tokens * (2 * forwardFlopsPerToken(c, ctx) + attention);
}

/** One SFT-style step: forward with checkpointing, mean NLL backward, AdamW. Returns seconds. */
async function trainStep(e: Engine, decoder: Decoder, lora: LoraModel, opt: AdamW, rows: number[][], gLogp: (mask: Float64Array) => number[]): Promise<number> {
  const t0 = now();
  await e.scope(async () => {
    const b = makeBatch(e, rows);
    const res = decoder.forward(b, { checkpoint: true });
    decoder.backward(res, gLogp(b.lossMask));
    await lora.parameters("policy")[0].grad!.read();
    return null;
  });
  opt.update(1e-5);
  opt.zeroGrad();
  await (e.backend as GpuBackend).gpu.sync();
  return now() - t0;
}

/** Load the base, then one SFT step and one RL step; the GPU is created and destroyed here. */
export async function measureBase(dir: string, base: BaseKind, s: ScaleSettings, tokens: number[], log: (m: string) => void): Promise<BaseResult> {
  const gpu: Gpu = await createGpu();
  try {
    await gpu.sync();
    gpu.pool.trim();
    const a0 = gpu.pool.getStats().allocatedBytes;
    const e = new Engine(new GpuBackend(gpu));
    const t0 = now();
    const { decoder, config } = await loadDecoder(e, dir, base === "nf4" ? { quant: "nf4", doubleQuant: true } : { dtype: "f16" });
    await gpu.sync();
    const loadSeconds = now() - t0;
    const poolAfterLoad = gpu.pool.getStats().allocatedBytes - a0;
    log(`${base}: loaded in ${loadSeconds.toFixed(1)} s (pool ${(poolAfterLoad / 2 ** 30).toFixed(2)} GiB, host peak RSS ${(maxRss() / 2 ** 30).toFixed(2)} GiB)`);

    const lora = new LoraModel(decoder);
    const params = lora.addAdapter("policy", LORA(s.r));
    const opt = new AdamW(params, { lr: 1e-5 });
    const at = (i: number) => tokens[i % tokens.length];
    const sftRows = Array.from({ length: s.batch }, (_, b) => Array.from({ length: s.seq }, (_, t) => at(b * 7 + t)));
    const sftTokens = s.batch * s.seq;
    lora.setTraining(true);
    const sftSeconds = await trainStep(e, decoder, lora, opt, sftRows, (m) => Array.from(m, (x) => -x / sftTokens));
    const poolAfterStep = gpu.pool.getStats().allocatedBytes - a0;
    const estimate = memoryReport(config, LORA(s.r), { tokens: sftTokens, checkpoint: true, ...(base === "nf4" ? { quant: "nf4" as const } : { quant: "none" as const, dtype: "f16" as const }), gpu });
    log(`${base}: SFT step ${s.batch} × ${s.seq} tokens in ${sftSeconds.toFixed(1)} s (pool ${(poolAfterStep / 2 ** 30).toFixed(2)} GiB, estimate ${(estimate.totalBytes / 2 ** 30).toFixed(2)} GiB)`);

    const rl = await rlStep(e, decoder, lora, opt, s, tokens, log, base);
    const kernelTables = s.profile ? await profileSteps(gpu, e, decoder, lora, opt, s, sftRows, tokens, log, base) : [];
    return {
      base,
      loadSeconds,
      poolAfterLoad,
      poolAfterStep,
      estimateBytes: estimate.totalBytes,
      sft: { tokens: sftTokens, seconds: sftSeconds, flops: trainFlops(config, sftTokens, s.seq) },
      rl,
      maxRss: maxRss(),
      kernelTables,
    };
  } finally {
    gpu.destroy();
  }
}

/** G samples of exactly `newTokens` (no stop token) from one prompt at T = 1, and the rows a policy-gradient step trains on. */
async function sampleGroup(e: Engine, decoder: Decoder, lora: LoraModel, s: ScaleSettings, tokens: number[], seed: number) {
  const promptIds = Array.from({ length: s.prompt }, (_, t) => tokens[t % tokens.length]);
  const idsOnly = { encode: () => [], decode: (ids: readonly number[]) => ids.join(" "), stopTokenIds: [] as number[] };
  const gen = new WebGpuGenerator(e, decoder, idsOnly);
  lora.setTraining(false);
  const [seqs] = await gen.generateIds([{ promptIds, n: s.G }], { temperature: 1, maxNewTokens: s.newTokens, seed });
  lora.setTraining(true);
  const rows = seqs.map((q) => [...q.promptIds, ...q.tokenIds]);
  const genTokens = seqs.reduce((a, q) => a + q.tokenIds.length, 0);
  const trainTokens = rows.reduce((a, r) => a + r.length, 0);
  // per-token weights standing in for Dr. GRPO's advantages: +1 for even samples, −1 for odd ones
  const advantage = (i: number) => (i % 2 === 0 ? 1 : -1) / trainTokens;
  const gLogp = (m: Float64Array) => Array.from(m, (x, i) => -x * advantage(Math.floor(i / rows[0].length)));
  return { rows, genTokens, trainTokens, gLogp };
}

/**
 * One RL step: generation (sampleGroup), then a policy-gradient step (forward with checkpointing, backward with
 * per-token weights, AdamW) on the G sequences — the same kernels and shapes as the trainer's step; the algorithm's
 * own arithmetic is negligible.
 */
async function rlStep(e: Engine, decoder: Decoder, lora: LoraModel, opt: AdamW, s: ScaleSettings, tokens: number[], log: (m: string) => void, base: BaseKind) {
  const t0 = now();
  const g = await sampleGroup(e, decoder, lora, s, tokens, 3);
  const genSeconds = now() - t0;
  log(`${base}: generated ${s.G} × ${s.newTokens} tokens in ${genSeconds.toFixed(1)} s`);
  const trainSeconds = await trainStep(e, decoder, lora, opt, g.rows, g.gLogp);
  log(`${base}: RL train step on ${g.trainTokens} tokens in ${trainSeconds.toFixed(1)} s`);
  return { genTokens: g.genTokens, genSeconds, trainTokens: g.trainTokens, trainSeconds };
}

/** Run `fn` under the timestamp profiler: GPU time per kernel label, largest first (null without timestamp-query). */
async function profiled(gpu: Gpu, step: string, fn: () => Promise<unknown>): Promise<KernelTable> {
  await gpu.sync();
  const on = gpu.profiler.start();
  const t0 = now();
  await fn();
  await gpu.sync();
  const wallSeconds = now() - t0;
  const kernels = on ? await gpu.profiler.stop() : null;
  const gpuMs = kernels ? kernels.reduce((a, k) => a + k.totalMs, 0) : 0;
  return { step, wallSeconds, gpuMs, kernels, ...(on ? {} : { note: "no timestamp-query on this adapter: no per-kernel times (wall time of the step only)" }) };
}

/** A second SFT step and RL step (generation, then training) under the profiler: the per-kernel tables. */
async function profileSteps(gpu: Gpu, e: Engine, decoder: Decoder, lora: LoraModel, opt: AdamW, s: ScaleSettings, sftRows: number[][], tokens: number[], log: (m: string) => void, base: BaseKind): Promise<KernelTable[]> {
  const sftTokens = sftRows.length * sftRows[0].length;
  const sft = await profiled(gpu, `${base} SFT step ${s.batch}×${s.seq}`, () => trainStep(e, decoder, lora, opt, sftRows, (m) => Array.from(m, (x) => -x / sftTokens)));
  let group: Awaited<ReturnType<typeof sampleGroup>> | null = null;
  const gen = await profiled(gpu, `${base} RL generation ${s.G}×${s.newTokens} new (prompt ${s.prompt})`, async () => (group = await sampleGroup(e, decoder, lora, s, tokens, 4)));
  const g = group!;
  const train = await profiled(gpu, `${base} RL train step ${g.rows.length}×${g.rows[0].length}`, () => trainStep(e, decoder, lora, opt, g.rows, g.gLogp));
  log(`${base}: profiled SFT step ${sft.wallSeconds.toFixed(1)} s, RL generation ${gen.wallSeconds.toFixed(1)} s, RL train ${train.wallSeconds.toFixed(1)} s`);
  return [sft, gen, train];
}
