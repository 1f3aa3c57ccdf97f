// Batched generation on WebGPU with the training model itself (frozen base + unmerged LoRA: no weight sync).
//
// One decode loop over a fixed set of `rows` slots, each holding one sequence, with a per-layer KV cache of
// [rows, Tmax] entries. A prompt is admitted when `n` slots are free: it is prefilled once (B = 1, causal attention
// over the prompt), its keys/values are copied into the cache rows of its n samples and its last-token logits into
// their logits rows — one prefill per prompt, not n. Every step: GPU sampling of the next token of every live row
// (temperature/top-k/top-p/min-p, Philox RNG), read back only the sampled ids and their log-probs under the sampling
// distribution, record them (EOS, a stop string or the token budget ends a row), then one decode forward over all
// slots (Decoder.step: the trainer's layers and Projection objects, RoPE at each row's own position, K/V appended to
// the row's cache, attention against the cache up to the row's length) → final norm → logits.
//
// Continuous batching: a finished row frees its slot at once, and queued prompts are admitted into free slots
// before the next step, so the batch stays full while work remains. `generateIds` with `maxBatchRows` ≥ the total
// number of sequences admits everything at step 0 (static batching); with fewer rows, later prompts join as earlier
// sequences finish. `run` drives the same loop from any JobSource (the HTTP server feeds it from its request queue).
//
// Sampling randomness depends on the sequence, never on the batch: a row draws its uniform from Philox keyed by a
// seed with counter (sequence id, the row's own step). A prompt with its own `seed` uses (seed, hash(prompt) + sample
// index); a prompt without one uses the call's seed and the row's index in the call (prompt order × n). Rows that
// share (seed, step, sampling settings) are sampled by one dispatch; others are gathered into a scratch batch per
// group, so rows that joined at different times (different steps) or carry different seeds all get their own draws.
import * as K from "@nr/kernels";
import type { Gpu, GpuBuffer } from "@nr/kernels";
import { rowsArg, type Engine, type Tensor } from "@nr/autograd";
import type { Decoder } from "@nr/model";
import { RepeatDetector, resolveRepetitionStop } from "@nr/data/core";
import type { FinishReason, GenerationRequest, GenerationResult, Generator, RepetitionStop } from "@nr/data";

export interface TokenizerLike {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string;
  readonly stopTokenIds: readonly number[];
}

/** How to sample. Per-prompt fields of {@link PromptSpec} override these. */
export interface SamplingSettings {
  /** 0 = greedy (argmax). */
  temperature: number;
  topP?: number;
  /** 0 = off. */
  topK?: number;
  minP?: number;
  /** HF repetition penalty over the prompt and the tokens so far (1 = off): logit x → x/p if x > 0, else x·p. */
  repetitionPenalty?: number;
  maxNewTokens: number;
  seed?: number;
  /** Strings that end a completion (cut from the text; the tokens that produced them stay in tokenIds). */
  stop?: string[];
  /** The length-explosion guard: a looping tail ends the completion (finish reason "repetition"). Default off. */
  repetitionStop?: RepetitionStop;
}

export interface SampleOptions extends SamplingSettings {
  /** Context window (prompt + completion); default the generator's `contextLength` option, else 4096. */
  contextLength?: number;
  /**
   * Continuous batching: at most this many sequences decode at once; finished ones leave the batch and the next
   * prompts (in order) join. Default: all sequences at once.
   */
  maxBatchRows?: number;
}

/**
 * Tool use inside generation (TIR: the model writes a program, a sandbox runs it, its output joins the text). Each
 * sequence gets a session when it starts; after every sampled token the session may pause the sequence and hand
 * back token ids to append. The sequence keeps its slot and its KV cache while the tool runs (other rows go on
 * decoding), then the ids are fed one per decode step like sampled tokens (appended to the cache, no re-prefill),
 * marked 1 in `toolMask` with log-prob 0, and sampling resumes. They count towards maxNewTokens.
 */
export interface ToolHook {
  start(): ToolSession;
}
export interface ToolSession {
  /** null: go on sampling; a promise: pause this sequence until it gives the token ids to append. */
  afterToken(tokenIds: readonly number[]): Promise<number[]> | null;
}

/** One prompt to complete `n` times, with optional per-prompt sampling settings. */
export interface PromptSpec extends Partial<SamplingSettings> {
  promptIds: number[];
  n: number;
  /** Tool use (see {@link ToolHook}); sequences of this prompt then carry `toolMask`. */
  tool?: ToolHook;
  /** Streaming: called after each token of sample `sample` is recorded (tokenIds/logprobs are the live arrays). */
  onToken?: (sample: number, tokenIds: readonly number[], logprobs: readonly number[]) => void;
  /** Streaming: called when sample `sample` finishes (before the whole prompt's result is delivered). */
  onSequence?: (sample: number, seq: GeneratedSequence) => void;
}

export interface GeneratedSequence {
  promptIds: number[];
  tokenIds: number[];
  /** log-prob of each sampled token under the sampling distribution. */
  logprobs: number[];
  text: string;
  finishReason: FinishReason;
  /** The stop string that ended the sequence (finishReason "stop"). */
  stopString?: string;
  /** With a tool hook: 1 where the token was appended by the tool (not sampled: no policy action), else 0. */
  toolMask?: number[];
}

export interface GenerationTiming {
  prefillMs: number;
  decodeMs: number;
  prefillTokens: number;
  decodeTokens: number;
  steps: number;
  /** Slots of the batch and the mean number of them holding a live sequence per decode step. */
  rows: number;
  meanLiveRows: number;
}

/** A prompt resolved against defaults and validated: what the decode loop needs. */
export interface GenerationJob {
  promptIds: number[];
  n: number;
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  repetitionPenalty: number;
  maxNewTokens: number;
  stop: string[];
  repetitionStop?: Required<RepetitionStop>;
  /** RNG key and the counter's sequence id of each sample. */
  seed: number;
  seqIds: number[];
  onToken?: PromptSpec["onToken"];
  onSequence?: PromptSpec["onSequence"];
  tool?: ToolHook;
  /** Receives the n sequences when the last of them finishes. */
  done(seqs: GeneratedSequence[]): void;
  /** Receives the error when the loop fails while this job is in it. */
  fail?(err: Error): void;
  /** Polled every step; a cancelled job leaves the batch and gets no `done`. */
  cancelled?(): boolean;
}

/** Where the decode loop gets work: the next job needing at most `freeRows` slots, or null for none now. */
export interface JobSource {
  take(freeRows: number): GenerationJob | null;
}

/** 32-bit FNV-1a over token ids: a prompt's contribution to its samples' RNG sequence ids. */
function hashIds(ids: readonly number[]): number {
  let h = 0x811c9dc5;
  for (const id of ids) {
    h ^= id & 0xffff;
    h = Math.imul(h, 0x01000193);
    h ^= id >>> 16;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

interface Slot {
  job: GenerationJob;
  sample: number;
  step: number;
  tokenIds: number[];
  logprobs: number[];
  done: FinishReason | null;
  stopString?: string;
  /** The repetition guard's state (when the job asks for it). */
  repeats?: RepeatDetector;
  /** Tool use: the session, tokens waiting to be fed, the mask so far, and the pending tool call (row paused). */
  tool?: { session: ToolSession; forced: number[]; mask: number[]; paused: Promise<void> | null };
}

interface JobState {
  results: (GeneratedSequence | null)[];
  remaining: number;
}

type KvPair = { k: GpuBuffer; v: GpuBuffer };

/** What one decode loop holds: its per-layer KV caches, sampling buffers, rows and the jobs they belong to. */
interface LoopState {
  R: number;
  Tmax: number;
  V: number;
  /** Bytes of one row's slice of a layer's K (or V) cache. */
  rowBytes: number;
  caches: KvPair[];
  bufs: { logits: GpuBuffer; ids: GpuBuffer; logp: GpuBuffer; seqBuf: GpuBuffer; gLogits: GpuBuffer; gSeq: GpuBuffer; gIds: GpuBuffer; gLogp: GpuBuffer; R: number; V: number };
  picked: GpuBuffer;
  hist: { host: Uint32Array; buf: GpuBuffer | null; lens: GpuBuffer | null };
  slots: (Slot | null)[];
  lens: number[];
  states: Map<GenerationJob, JobState>;
  stops: Set<number>;
  timing: GenerationTiming;
}

export class WebGpuGenerator implements Generator {
  readonly gpu: Gpu;
  lastTiming: GenerationTiming | null = null;

  constructor(
    readonly engine: Engine,
    readonly decoder: Decoder,
    readonly tokenizer: TokenizerLike,
    readonly opts: { contextLength?: number } = {},
  ) {
    const backend = engine.backend as unknown as { gpu?: Gpu };
    if (!backend.gpu) throw new Error("WebGpuGenerator: the engine must use the GPU backend");
    this.gpu = backend.gpu;
  }

  /** The context window used when a call gives none. */
  get contextLength(): number {
    return this.opts.contextLength ?? 4096;
  }

  /** Tool use for every prompt that brings none of its own (`generate()`, `generateIds()`; e.g. the TIR sandbox). */
  tool: ToolHook | null = null;

  async generate(requests: GenerationRequest[]): Promise<GenerationResult[]> {
    // One batch for all requests: each request's own seed (when given) makes its samples independent of the others.
    const seqs = await this.generateIds(
      requests.map((r) => ({ promptIds: r.promptIds ? [...r.promptIds] : this.tokenizer.encode(r.prompt), n: r.n, temperature: r.temperature, topP: r.topP, maxNewTokens: r.maxNewTokens, seed: r.seed, stop: r.stop, repetitionStop: r.repetitionStop })),
      { temperature: 1, maxNewTokens: 1 },
    );
    return seqs.map((s) => ({
      completions: s.map((q) => ({ text: q.text, tokens: q.tokenIds.length, finishReason: q.finishReason, logprobs: q.logprobs, tokenIds: q.tokenIds, ...(q.toolMask ? { toolMask: q.toolMask } : {}) }) as never),
    }));
  }

  /** Bytes of the KV cache for `rows` sequences of up to `tmax` tokens. */
  kvCacheBytes(rows: number, tmax: number): number {
    const c = this.decoder.config;
    return 2 * c.numLayers * rows * tmax * c.numKvHeads * c.headDim * 4;
  }

  /** Throws a clear error when a [rows, tmax] KV cache does not fit one binding of this adapter. */
  checkCache(rows: number, tmax: number) {
    const perCache = this.kvCacheBytes(rows, tmax) / (2 * this.decoder.config.numLayers);
    const limit = Math.min(this.gpu.limits.maxStorageBufferBindingSize, this.gpu.limits.maxBufferSize);
    if (perCache > limit) {
      throw new Error(`generate: one layer's KV cache for ${rows} sequences × ${tmax} tokens is ${(perCache / 2 ** 20).toFixed(1)} MiB, above this adapter's binding limit of ${(limit / 2 ** 20).toFixed(0)} MiB; generate fewer sequences at once (maxBatchRows) or lower max_new_tokens`);
    }
  }

  /**
   * Resolve a prompt against call defaults and check it: non-empty, ids in the vocabulary, sane settings, and
   * room for at least one new token in the context window. `maxNewTokens` is clipped to the window.
   * `rowBase` is the prompt's first row index in its call (the RNG sequence id of prompts without their own seed).
   */
  resolveJob(p: PromptSpec, d: SamplingSettings, contextLength: number, rowBase: number, done: GenerationJob["done"]): GenerationJob {
    const V = this.decoder.config.vocabSize;
    const L = p.promptIds.length;
    if (L === 0) throw new Error("generate: empty prompt (no tokens)");
    const bad = p.promptIds.find((id) => !Number.isInteger(id) || id < 0 || id >= V);
    if (bad !== undefined) throw new Error(`generate: prompt token id ${bad} is outside the vocabulary [0, ${V})`);
    if (!Number.isInteger(p.n) || p.n < 1) throw new Error(`generate: n must be a positive integer (got ${p.n})`);
    const temperature = p.temperature ?? d.temperature;
    const topP = p.topP ?? d.topP ?? 1;
    const topK = p.topK ?? d.topK ?? 0;
    const minP = p.minP ?? d.minP ?? 0;
    if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new Error(`generate: temperature must be ≥ 0 (got ${temperature})`);
    if (!(topP > 0 && topP <= 1)) throw new Error(`generate: top_p must be in (0, 1] (got ${topP})`);
    if (!Number.isInteger(topK) || topK < 0) throw new Error(`generate: top_k must be a non-negative integer, 0 = off (got ${topK})`);
    if (!(minP >= 0 && minP <= 1)) throw new Error(`generate: min_p must be in [0, 1] (got ${minP})`);
    const repetitionPenalty = p.repetitionPenalty ?? d.repetitionPenalty ?? 1;
    if (!(repetitionPenalty > 0) || !Number.isFinite(repetitionPenalty)) throw new Error(`generate: repetition_penalty must be a positive number, 1 = off (got ${repetitionPenalty})`);
    const want = p.maxNewTokens ?? d.maxNewTokens;
    if (!Number.isInteger(want) || want < 1) throw new Error(`generate: maxNewTokens must be a positive integer (got ${want})`);
    const maxNewTokens = Math.min(want, contextLength - L);
    if (maxNewTokens < 1) throw new Error(`generate: a ${L}-token prompt leaves no room in the ${contextLength}-token context window`);
    const stop = p.stop ?? d.stop ?? [];
    if (stop.some((s) => typeof s !== "string" || s.length === 0)) throw new Error("generate: stop strings must be non-empty strings");
    const repetition = p.repetitionStop ?? d.repetitionStop;
    const repetitionStop = repetition ? resolveRepetitionStop(repetition) : undefined;
    const own = p.seed !== undefined;
    const seed = own ? p.seed! : (d.seed ?? 0);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`generate: seed must be a non-negative integer (got ${seed})`);
    const h = own ? hashIds(p.promptIds) : 0;
    const seqIds = Array.from({ length: p.n }, (_, s) => (own ? (h + s) >>> 0 : (rowBase + s) >>> 0));
    return { promptIds: p.promptIds, n: p.n, temperature, topP, topK, minP, repetitionPenalty, maxNewTokens, stop, ...(repetitionStop ? { repetitionStop } : {}), seed, seqIds, onToken: p.onToken, onSequence: p.onSequence, tool: p.tool ?? this.tool ?? undefined, done };
  }

  async generateIds(prompts: PromptSpec[], o: SampleOptions): Promise<GeneratedSequence[][]> {
    const ctx = o.contextLength ?? this.contextLength;
    const out: GeneratedSequence[][] = prompts.map(() => []);
    let rowBase = 0;
    const jobs = prompts.map((p, i) => {
      const j = this.resolveJob(p, o, ctx, rowBase, (seqs) => (out[i] = seqs));
      rowBase += p.n;
      return j;
    });
    if (jobs.length === 0) return out;
    const total = jobs.reduce((a, j) => a + j.n, 0);
    const rows = Math.min(o.maxBatchRows ?? total, total);
    if (!Number.isInteger(rows) || rows < 1) throw new Error(`generate: maxBatchRows must be a positive integer (got ${o.maxBatchRows})`);
    const widest = Math.max(...jobs.map((j) => j.n));
    if (widest > rows) throw new Error(`generate: a prompt asks for n=${widest} samples but maxBatchRows is ${rows}; its samples must decode together`);
    const tmax = Math.max(...jobs.map((j) => j.promptIds.length + j.maxNewTokens));
    this.checkCache(rows, tmax);
    let next = 0;
    await this.run({ take: (free) => (next < jobs.length && jobs[next].n <= free ? jobs[next++] : null) }, { rows, tmax });
    return out;
  }

  /**
   * The decode loop over `rows` slots with caches of `tmax` tokens per row. Admits jobs from `source` into free
   * slots before every step (a job's samples are admitted together) and returns when no slot is live and the
   * source has nothing to give. Every job must fit: prompt + maxNewTokens ≤ tmax, n ≤ rows.
   */
  async run(source: JobSource, shape: { rows: number; tmax: number }): Promise<void> {
    // One loop at a time on this generator (a second caller waits for the first to finish).
    const before = this.running;
    let release!: () => void;
    this.running = new Promise((r) => (release = r));
    await before;
    try {
      await this.loop(source, shape);
    } finally {
      release();
    }
  }

  private running: Promise<void> = Promise.resolve();

  /** One decode loop: admit jobs into free rows, sample every live row, feed the samples back, until nothing is left. */
  private async loop(source: JobSource, shape: { rows: number; tmax: number }): Promise<void> {
    this.checkCache(shape.rows, shape.tmax);
    const st = this.openLoop(shape.rows, shape.tmax);
    let liveSum = 0;
    try {
      for (;;) {
        const t0 = performance.now();
        await this.admitJobs(st, source);
        st.timing.prefillMs += performance.now() - t0;
        this.dropCancelled(st);
        const live = st.slots.flatMap((s, b) => (s && !s.tool?.paused ? [b] : []));
        const paused = st.slots.flatMap((s) => (s?.tool?.paused ? [s.tool.paused] : []));
        if (live.length === 0 && paused.length === 0) break;
        if (live.length === 0) {
          await Promise.race(paused); // every row waits for its tool: nothing to decode until one answers
          continue;
        }
        const t1 = performance.now();
        const { idv, lpv } = await this.sampleLive(st, live);
        st.timing.steps++;
        liveSum += live.length;
        for (const b of live) this.recordSample(st, b, idv[b], lpv[b]);
        await this.feedRows(st, live);
        st.timing.decodeMs += performance.now() - t1;
      }
      st.timing.meanLiveRows = st.timing.steps ? liveSum / st.timing.steps : 0;
      this.lastTiming = st.timing;
    } catch (err) {
      for (const job of st.states.keys()) job.fail?.(err as Error);
      throw err;
    } finally {
      this.closeLoop(st);
    }
  }

  /** The GPU buffers and host bookkeeping of one loop over R rows of Tmax tokens. */
  private openLoop(R: number, Tmax: number): LoopState {
    const gpu = this.gpu, c = this.decoder.config;
    const V = c.vocabSize;
    const perCache = R * Tmax * c.numKvHeads * c.headDim * 4;
    return {
      R, Tmax, V,
      rowBytes: Tmax * c.numKvHeads * c.headDim * 4,
      caches: Array.from({ length: c.numLayers }, () => ({ k: gpu.alloc(perCache, "kcache"), v: gpu.alloc(perCache, "vcache") })),
      bufs: {
        logits: gpu.alloc(R * V * 4, "logits"),
        ids: gpu.alloc(R * 4, "sampled-ids"),
        logp: gpu.alloc(R * 4, "sampled-logp"),
        seqBuf: gpu.alloc(R * 4, "seq-ids"),
        // Scratch batch for sampling groups that are not the whole batch.
        gLogits: gpu.alloc(R * V * 4, "group-logits"),
        gSeq: gpu.alloc(R * 4, "group-seq-ids"),
        gIds: gpu.alloc(R * 4, "group-ids"),
        gLogp: gpu.alloc(R * 4, "group-logp"),
        R, V,
      },
      picked: gpu.alloc(2 * R * 4, "sampled"), // ids then log-probs: one read-back per step
      // Repetition penalty: each row's history (prompt + sampled tokens) mirrored on the host, uploaded when needed.
      hist: { host: new Uint32Array(0), buf: null, lens: null },
      slots: new Array(R).fill(null),
      lens: new Array<number>(R).fill(0),
      states: new Map(),
      stops: new Set(this.tokenizer.stopTokenIds),
      timing: { prefillMs: 0, decodeMs: 0, prefillTokens: 0, decodeTokens: 0, steps: 0, rows: R, meanLiveRows: 0 },
    };
  }

  private closeLoop(st: LoopState): void {
    const b = st.bufs;
    for (const cch of st.caches) this.gpu.release(cch.k, cch.v);
    this.gpu.release(b.logits, b.ids, b.logp, b.seqBuf, st.picked, b.gLogits, b.gSeq, b.gIds, b.gLogp, st.hist.buf, st.hist.lens);
  }

  private freeRows(st: LoopState): number {
    return st.slots.reduce((a, s) => a + (s ? 0 : 1), 0);
  }

  /** Admit: prefill each new prompt once, then copy its cache rows and logits to each of its samples' slots. */
  private async admitJobs(st: LoopState, source: JobSource): Promise<void> {
    for (let job = source.take(this.freeRows(st)); job; job = source.take(this.freeRows(st))) {
      const L = job.promptIds.length;
      const free = this.freeRows(st);
      if (job.n > free || L + job.maxNewTokens > st.Tmax) throw new Error(`generate: a job needing ${job.n} rows × ${L + job.maxNewTokens} tokens does not fit the batch (${free} free rows of ${st.Tmax} tokens)`);
      const { promptKv, promptLogits } = await this.prefill(job.promptIds);
      st.states.set(job, { results: new Array(job.n).fill(null), remaining: job.n });
      const taken: number[] = [];
      for (let b = 0; b < st.R && taken.length < job.n; b++) if (!st.slots[b]) taken.push(b);
      taken.forEach((dst, s) => this.placeSample(st, job, s, dst, promptKv, promptLogits));
      for (const pk of promptKv) this.gpu.release(pk.k, pk.v);
      this.gpu.release(promptLogits);
      st.timing.prefillTokens += L;
    }
  }

  /** One prompt through the decoder into its own KV cache; the logits of its last position. */
  private async prefill(promptIds: number[]) {
    const e = this.engine, gpu = this.gpu, c = this.decoder.config;
    const L = promptIds.length;
    const bytes = L * c.numKvHeads * c.headDim * 4;
    const promptKv = Array.from({ length: c.numLayers }, () => ({ k: gpu.alloc(bytes, "prompt-k"), v: gpu.alloc(bytes, "prompt-v") }));
    const promptLogits = gpu.alloc(c.vocabSize * 4, "prompt-logits");
    await e.scope(async () =>
      e.noGrad(() => {
        const x = this.decoder.step({ tokens: promptIds, starts: [0], B: 1, T: L, caches: promptKv, Tmax: L });
        this.lmLogits(x, L - 1, 1, promptLogits, 0);
      }),
    );
    return { promptKv, promptLogits };
  }

  /** Sample s of `job` takes row `dst`: the prompt's cache rows and logits are copied there. */
  private placeSample(st: LoopState, job: GenerationJob, s: number, dst: number, promptKv: KvPair[], promptLogits: GpuBuffer): void {
    const gpu = this.gpu, L = job.promptIds.length;
    const kvBytes = L * this.decoder.config.numKvHeads * this.decoder.config.headDim * 4;
    gpu.copy(promptLogits, 0, st.bufs.logits, dst * st.V * 4, st.V * 4);
    st.caches.forEach((cch, li) => {
      gpu.copy(promptKv[li].k, 0, cch.k, dst * st.rowBytes, kvBytes);
      gpu.copy(promptKv[li].v, 0, cch.v, dst * st.rowBytes, kvBytes);
    });
    gpu.write(st.bufs.seqBuf, Uint32Array.of(job.seqIds[s]), dst * 4);
    st.lens[dst] = L;
    st.slots[dst] = { job, sample: s, step: 0, tokenIds: [], logprobs: [], done: null, ...(job.repetitionStop ? { repeats: new RepeatDetector(job.repetitionStop) } : {}) };
    if (job.tool) st.slots[dst]!.tool = { session: job.tool.start(), forced: [], mask: [], paused: null };
    if (job.repetitionPenalty !== 1) {
      const h = st.hist;
      if (!h.buf) {
        h.host = new Uint32Array(st.R * st.Tmax);
        h.buf = gpu.alloc(st.R * st.Tmax * 4, "token-history");
        h.lens = gpu.alloc(st.R * 4, "history-lengths");
      }
      h.host.set(job.promptIds, dst * st.Tmax);
    }
  }

  /** Cancelled jobs leave without a result. */
  private dropCancelled(st: LoopState): void {
    for (let b = 0; b < st.R; b++) {
      const job = st.slots[b]?.job;
      if (job?.cancelled?.()) {
        for (let i = 0; i < st.R; i++) if (st.slots[i]?.job === job) st.slots[i] = null;
        st.states.delete(job);
      }
    }
  }

  /** Samples one token for every live row on the GPU; one read-back of ids and log-probs. */
  private async sampleLive(st: LoopState, live: number[]) {
    const gpu = this.gpu, R = st.R, b = st.bufs;
    if (st.hist.buf) this.penalize(st.slots, live, st.lens, st.hist as { host: Uint32Array; buf: GpuBuffer; lens: GpuBuffer }, b.logits, st.Tmax);
    this.sampleRows(st.slots, live, b);
    gpu.copy(b.ids, 0, st.picked, 0, R * 4);
    gpu.copy(b.logp, 0, st.picked, R * 4, R * 4);
    const back = await gpu.read(st.picked, 2 * R * 4);
    return { idv: new Uint32Array(back, 0, R), lpv: new Float32Array(back, R * 4, R) };
  }

  /** Row b's token this step (a tool's forced token before the sampled one): appended, checked for an end, reported. */
  private recordSample(st: LoopState, b: number, sampled: number, sampledLogp: number): void {
    const sq = st.slots[b]!;
    const job = sq.job;
    sq.step++;
    const forced = sq.tool?.forced.length ? sq.tool.forced.shift()! : undefined;
    const tok = forced ?? sampled;
    if (forced === undefined && st.stops.has(tok)) sq.done = "eos";
    else {
      sq.tokenIds.push(tok);
      sq.logprobs.push(forced === undefined ? sampledLogp : 0);
      sq.tool?.mask.push(forced === undefined ? 0 : 1);
      if (job.repetitionPenalty !== 1) st.hist.host[b * st.Tmax + job.promptIds.length + sq.tokenIds.length - 1] = tok;
      st.timing.decodeTokens++;
      if (job.stop.length && forced === undefined) this.checkStop(sq);
      if (!sq.done && sq.repeats?.push(tok)) sq.done = "repetition";
      if (!sq.done && sq.tokenIds.length >= job.maxNewTokens) sq.done = "length";
      job.onToken?.(sq.sample, sq.tokenIds, sq.logprobs);
      if (!sq.done && forced === undefined && sq.tool) this.callTool(sq.tool, sq.tokenIds);
    }
    if (sq.done) this.finishRow(st, b);
  }

  /** A stop string in the decoded tail ends the row (the tail is long enough for any token that completes one). */
  private checkStop(sq: Slot): void {
    const tail = this.tokenizer.decode(sq.tokenIds.slice(-32));
    const hit = sq.job.stop.find((s) => tail.includes(s));
    if (hit !== undefined) {
      sq.done = "stop";
      sq.stopString = hit;
    }
  }

  private finishRow(st: LoopState, b: number): void {
    const sq = st.slots[b]!;
    const job = sq.job;
    const js = st.states.get(job)!;
    js.results[sq.sample] = this.finishSequence(job, sq);
    job.onSequence?.(sq.sample, js.results[sq.sample]!);
    st.slots[b] = null;
    if (--js.remaining === 0) {
      st.states.delete(job);
      job.done(js.results as GeneratedSequence[]);
    }
  }

  /**
   * Decode: feed every row its latest token (free slots get a dummy token at position 0).
   * A row that paused at this step still feeds the token it just sampled. One paused before re-feeds its last token at
   * that token's own position: the same keys/values rewritten in place and its logits kept valid, so it can resume by
   * sampling (a tool that appends nothing) or by feeding the tool's tokens. Who waits is decided by who sampled this
   * step, not by `paused`, which a tool may clear while this step awaits the GPU.
   */
  private async feedRows(st: LoopState, live: number[]): Promise<void> {
    const e = this.engine, slots = st.slots;
    if (!slots.some((s) => s)) return;
    const waiting = slots.map((s, b) => !!s && !live.includes(b));
    const feed = slots.map((s) => (s ? s.tokenIds[s.tokenIds.length - 1] : 0));
    const starts = slots.map((s, b) => (s ? st.lens[b] - (waiting[b] ? 1 : 0) : 0));
    await e.scope(async () =>
      e.noGrad(() => {
        const x = this.decoder.step({ tokens: feed, starts, B: st.R, T: 1, caches: st.caches, Tmax: st.Tmax });
        this.lmLogits(x, 0, st.R, st.bufs.logits, 0);
      }),
    );
    for (let b = 0; b < st.R; b++) if (slots[b] && !waiting[b]) st.lens[b]++;
  }

  /** The text of a finished row: decoded without special tokens, cut before its stop string. */
  private finishSequence(job: GenerationJob, sq: Slot): GeneratedSequence {
    // An immediate EOS yields no tokens (the tokenizer refuses to decode an empty list).
    let text = sq.tokenIds.length ? this.tokenizer.decode(sq.tokenIds, { skipSpecialTokens: true }) : "";
    if (sq.stopString !== undefined) {
      const at = text.indexOf(sq.stopString);
      if (at >= 0) text = text.slice(0, at);
    }
    return { promptIds: job.promptIds, tokenIds: sq.tokenIds, logprobs: sq.logprobs, text, finishReason: sq.done!, ...(sq.stopString !== undefined ? { stopString: sq.stopString } : {}), ...(sq.tool ? { toolMask: sq.tool.mask } : {}) };
  }

  /** Asks the row's tool session about its latest token; a call pauses the row until its ids arrive. */
  private callTool(tool: NonNullable<Slot["tool"]>, tokenIds: readonly number[]): void {
    const call = tool.session.afterToken(tokenIds);
    if (!call) return;
    tool.paused = call.then(
      (ids) => {
        tool.forced.push(...ids);
        tool.paused = null;
      },
      () => {
        tool.paused = null; // a failing tool appends nothing; the row samples on
      },
    );
  }

  /**
   * Apply each live row's repetition penalty to its logits in place (one dispatch per distinct penalty ≠ 1). A row's
   * history is its prompt and sampled tokens: lens[b] of them (the tokens already in its KV cache).
   */
  private penalize(slots: (Slot | null)[], live: number[], lens: number[], hist: { host: Uint32Array; buf: GpuBuffer; lens: GpuBuffer }, logits: GpuBuffer, Tmax: number) {
    const R = slots.length;
    const penalties = new Set(live.map((b) => slots[b]!.job.repetitionPenalty).filter((p) => p !== 1));
    if (penalties.size === 0) return;
    this.gpu.write(hist.buf, hist.host);
    for (const penalty of penalties) {
      // Rows with another penalty get an empty history (untouched) in this dispatch.
      const n = Uint32Array.from({ length: R }, (_, b) => (slots[b]?.job.repetitionPenalty === penalty ? lens[b] : 0));
      this.gpu.write(hist.lens, n);
      K.repetitionPenalty(this.gpu, { logits, B: R, V: this.decoder.config.vocabSize, tokens: hist.buf, lengths: hist.lens, L: Tmax, penalty });
    }
  }

  /**
   * Record sampling for the live rows. Rows that share (seed, step, settings) form a group; a group that is the
   * only one samples straight from the batch's logits (rows outside it are not live, their draws are ignored);
   * otherwise each group's logits rows and sequence ids are gathered into the scratch batch, sampled, and the ids
   * and log-probs scattered back to the rows' places.
   */
  private sampleRows(
    slots: (Slot | null)[],
    live: number[],
    b: { logits: GpuBuffer; ids: GpuBuffer; logp: GpuBuffer; seqBuf: GpuBuffer; gLogits: GpuBuffer; gSeq: GpuBuffer; gIds: GpuBuffer; gLogp: GpuBuffer; R: number; V: number },
  ) {
    const gpu = this.gpu, V = b.V;
    const groups = new Map<string, number[]>();
    for (const r of live) {
      const s = slots[r]!, j = s.job;
      const key = `${j.seed}|${s.step}|${j.temperature}|${j.topP}|${j.topK}|${j.minP}`;
      const g = groups.get(key);
      if (g) g.push(r);
      else groups.set(key, [r]);
    }
    const settings = (r: number) => {
      const s = slots[r]!, j = s.job;
      return { seed: j.seed, step: s.step, temperature: j.temperature, topP: j.topP, topK: j.topK, minP: j.minP };
    };
    if (groups.size === 1) {
      K.sampleTokens(gpu, { logits: b.logits, B: b.R, V, ids: b.ids, logp: b.logp, seqIds: b.seqBuf, ...settings(live[0]) });
      return;
    }
    for (const rowsOf of groups.values()) {
      // Contiguous runs of rows move with one copy each.
      const runs: [number, number, number][] = []; // [first row, group offset, length]
      rowsOf.forEach((r, i) => {
        const last = runs[runs.length - 1];
        if (last && last[0] + last[2] === r) last[2]++;
        else runs.push([r, i, 1]);
      });
      for (const [r, off, n] of runs) {
        gpu.copy(b.logits, r * V * 4, b.gLogits, off * V * 4, n * V * 4);
        gpu.copy(b.seqBuf, r * 4, b.gSeq, off * 4, n * 4);
      }
      K.sampleTokens(gpu, { logits: b.gLogits, B: rowsOf.length, V, ids: b.gIds, logp: b.gLogp, seqIds: b.gSeq, ...settings(rowsOf[0]) });
      for (const [r, off, n] of runs) {
        gpu.copy(b.gIds, off * 4, b.ids, r * 4, n * 4);
        gpu.copy(b.gLogp, off * 4, b.logp, r * 4, n * 4);
      }
    }
  }

  /** logits[dstRow + i] = h[srcRow + i] · Wᵀ for `count` rows (temperature applied by the sampler). */
  private lmLogits(h: Tensor, srcRow: number, count: number, out: GpuBuffer, dstRow: number) {
    const c = this.decoder.config, gpu = this.gpu;
    const H = c.hiddenSize, V = c.vocabSize;
    let src = h.storage as GpuBuffer;
    if (srcRow !== 0) {
      const tmp = gpu.alloc(count * H * 4, "last-hidden");
      gpu.copy(src, srcRow * H * 4, tmp, 0, count * H * 4);
      src = tmp;
    }
    let dst = out;
    const direct = dstRow === 0;
    if (!direct) dst = gpu.alloc(count * V * 4, "logits-tmp");
    const head = this.decoder.weights.lmHead; // f32, or f16 with loadDecoder's dtype "f16"
    const w = rowsArg(head.storage); // one buffer, or the row shards of a vocabulary-sized head
    K.lmHeadLogits(gpu, { h: src, w: w.buffers, wShardRows: w.shardRows, wDtype: head.dtype === "f16" ? "f16" : "f32", out: dst, M: count, V, H, temperature: 1 });
    if (!direct) {
      gpu.copy(dst, 0, out, dstRow * V * 4, count * V * 4);
      gpu.release(dst);
    }
    if (src !== h.storage) gpu.release(src);
  }
}
