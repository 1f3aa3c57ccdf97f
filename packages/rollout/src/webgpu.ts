// Batched generation on WebGPU with the training model itself (frozen base + unmerged LoRA: no weight sync).
//
// Per call: every request's prompt is prefilled once (B = 1, causal attention over the prompt) and its keys/values
// are written into a prompt cache; the n samples of that request then start from byte copies of that cache — one
// prefill per prompt, not n. Decoding runs all samples of all requests as one batch, one token per step: embed →
// layers (projections through the same Projection objects the trainer uses, RoPE at each row's own position, K/V
// appended to the per-layer cache, attention against the cache up to each row's length) → final norm → logits of the
// new token → GPU sampling (temperature/top-k/top-p/min-p, Philox RNG keyed by seed, sequence and step). Only the
// sampled ids and their log-probs under the sampling distribution come back to the host. Rows that finish (EOS, a
// stop string, or the token budget) stop being recorded; the batch ends when all have finished.
import * as K from "@nr/kernels";
import type { Gpu, GpuBuffer } from "@nr/kernels";
import { add, embedding, rmsnorm, rope, swiglu, type Engine, type Tensor } from "@nr/autograd";
import type { Decoder, DecoderLayer } from "@nr/model";
import type { FinishReason, GenerationRequest, GenerationResult, Generator } from "@nr/data";

export interface TokenizerLike {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string;
  readonly stopTokenIds: readonly number[];
}

export interface SampleOptions {
  temperature: number;
  topP?: number;
  topK?: number;
  minP?: number;
  maxNewTokens: number;
  seed?: number;
  stop?: string[];
  /** Context window (prompt + completion); default the model's max positions or 4096. */
  contextLength?: number;
}

export interface GeneratedSequence {
  promptIds: number[];
  tokenIds: number[];
  /** log-prob of each sampled token under the sampling distribution. */
  logprobs: number[];
  text: string;
  finishReason: FinishReason;
}

export interface GenerationTiming {
  prefillMs: number;
  decodeMs: number;
  prefillTokens: number;
  decodeTokens: number;
  steps: number;
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

  async generate(requests: GenerationRequest[]): Promise<GenerationResult[]> {
    const out: GenerationResult[] = [];
    // Requests with the same sampling settings share one batch.
    const groups = new Map<string, number[]>();
    requests.forEach((r, i) => {
      const key = JSON.stringify([r.temperature, r.topP ?? 1, r.maxNewTokens, r.stop ?? [], r.seed ?? 0]);
      groups.set(key, [...(groups.get(key) ?? []), i]);
    });
    for (const idx of groups.values()) {
      const r0 = requests[idx[0]];
      const seqs = await this.generateIds(
        idx.map((i) => ({ promptIds: this.tokenizer.encode(requests[i].prompt), n: requests[i].n })),
        { temperature: r0.temperature, topP: r0.topP, maxNewTokens: r0.maxNewTokens, seed: r0.seed, stop: r0.stop },
      );
      idx.forEach((reqIndex, j) => {
        out[reqIndex] = {
          completions: seqs[j].map((s) => ({ text: s.text, tokens: s.tokenIds.length, finishReason: s.finishReason, logprobs: s.logprobs, tokenIds: s.tokenIds }) as never),
        };
      });
    }
    return out;
  }

  /** Bytes of the KV cache for `rows` sequences of up to `tmax` tokens. */
  kvCacheBytes(rows: number, tmax: number): number {
    const c = this.decoder.config;
    return 2 * c.numLayers * rows * tmax * c.numKvHeads * c.headDim * 4;
  }

  async generateIds(prompts: { promptIds: number[]; n: number }[], o: SampleOptions): Promise<GeneratedSequence[][]> {
    const e = this.engine, gpu = this.gpu, c = this.decoder.config;
    const R = prompts.reduce((a, p) => a + p.n, 0);
    if (R === 0) return prompts.map(() => []);
    const maxPrompt = Math.max(...prompts.map((p) => p.promptIds.length));
    if (prompts.some((p) => p.promptIds.length === 0)) throw new Error("generate: empty prompt (no tokens)");
    const ctx = o.contextLength ?? this.opts.contextLength ?? 4096;
    const maxNew = Math.min(o.maxNewTokens, ctx - maxPrompt);
    if (maxNew < 1) throw new Error(`generate: a ${maxPrompt}-token prompt leaves no room in the ${ctx}-token context window`);
    const Tmax = maxPrompt + maxNew;
    const kvBytes = this.kvCacheBytes(R, Tmax);
    const perCache = kvBytes / (2 * c.numLayers);
    const limit = Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
    if (perCache > limit) {
      throw new Error(`generate: one layer's KV cache for ${R} sequences × ${Tmax} tokens is ${(perCache / 2 ** 20).toFixed(1)} MiB, above this adapter's binding limit of ${(limit / 2 ** 20).toFixed(0)} MiB; generate fewer sequences at once or lower max_new_tokens`);
    }
    const D = c.headDim, Hkv = c.numKvHeads, V = c.vocabSize;
    this.cacheTmax = Tmax;
    const caches = Array.from({ length: c.numLayers }, () => ({ k: gpu.alloc(perCache, "kcache"), v: gpu.alloc(perCache, "vcache") }));
    const rowBytes = Tmax * Hkv * D * 4;
    const seed = o.seed ?? 0;
    const logits = gpu.alloc(R * V * 4, "logits");
    const ids = gpu.alloc(R * 4, "sampled-ids");
    const logp = gpu.alloc(R * 4, "sampled-logp");
    const lens = new Array<number>(R).fill(0);
    const t0 = performance.now();
    try {
      // ---- prefill: once per prompt, then copy its cache rows and logits to each of its n samples
      // The prompt's K/V and last-token logits go to scratch buffers first (a buffer cannot be copied onto itself).
      const promptKv = caches.map(() => ({ k: gpu.alloc(rowBytes, "prompt-k"), v: gpu.alloc(rowBytes, "prompt-v") }));
      const promptLogits = gpu.alloc(V * 4, "prompt-logits");
      let row = 0;
      for (const p of prompts) {
        const L = p.promptIds.length;
        await e.scope(async () =>
          e.noGrad(() => {
            const x = this.forwardTokens(p.promptIds, [0], L, 1, promptKv, "prefill");
            this.lmLogits(x, L - 1, 1, promptLogits, 0);
          }),
        );
        for (let s = 0; s < p.n; s++) {
          const dst = row + s;
          gpu.copy(promptLogits, 0, logits, dst * V * 4, V * 4);
          caches.forEach((cch, li) => {
            gpu.copy(promptKv[li].k, 0, cch.k, dst * rowBytes, L * Hkv * D * 4);
            gpu.copy(promptKv[li].v, 0, cch.v, dst * rowBytes, L * Hkv * D * 4);
          });
          lens[dst] = L;
        }
        row += p.n;
      }
      for (const pk of promptKv) gpu.release(pk.k, pk.v);
      gpu.release(promptLogits);
      const prefillMs = performance.now() - t0;
      // ---- decode
      const seqs = prompts.flatMap((p) => Array.from({ length: p.n }, () => ({ promptIds: p.promptIds, tokenIds: [] as number[], logprobs: [] as number[], done: null as FinishReason | null })));
      const stops = new Set(this.tokenizer.stopTokenIds);
      const t1 = performance.now();
      let steps = 0;
      for (let step = 0; step < maxNew; step++) {
        K.sampleTokens(gpu, { logits, B: R, V, ids, logp, seed, step, temperature: o.temperature, topP: o.topP, topK: o.topK, minP: o.minP });
        const [idv, lpv] = await Promise.all([gpu.readU32(ids, R), gpu.readF32(logp, R)]);
        steps++;
        let alive = 0;
        seqs.forEach((sq, i) => {
          if (sq.done) return;
          const tok = idv[i];
          if (stops.has(tok)) {
            sq.done = "eos";
            return;
          }
          sq.tokenIds.push(tok);
          sq.logprobs.push(lpv[i]);
          if (o.stop?.length) {
            const tail = this.tokenizer.decode(sq.tokenIds.slice(-32));
            if (o.stop.some((s) => tail.endsWith(s))) {
              sq.done = "stop";
              return;
            }
          }
          if (sq.tokenIds.length >= maxNew) sq.done = "length";
          else alive++;
        });
        if (alive === 0) break;
        // Feed every row its sampled token (finished rows too: their results are simply ignored).
        await e.scope(async () =>
          e.noGrad(() => {
            const x = this.forwardTokens(Array.from(idv), lens.slice(), 1, R, caches, "decode");
            this.lmLogits(x, 0, R, logits, 0);
          }),
        );
        for (let i = 0; i < R; i++) lens[i] = Math.min(lens[i] + 1, Tmax);
      }
      this.lastTiming = { prefillMs, decodeMs: performance.now() - t1, prefillTokens: prompts.reduce((a, p) => a + p.promptIds.length, 0), decodeTokens: seqs.reduce((a, s) => a + s.tokenIds.length, 0), steps };
      const out: GeneratedSequence[][] = [];
      let k = 0;
      for (const p of prompts) {
        out.push(
          seqs.slice(k, k + p.n).map((s) => {
            // An immediate EOS yields no tokens (the tokenizer refuses to decode an empty list).
            let text = s.tokenIds.length ? this.tokenizer.decode(s.tokenIds, { skipSpecialTokens: true }) : "";
            if (s.done === "stop") for (const st of o.stop ?? []) if (text.endsWith(st)) text = text.slice(0, -st.length);
            return { promptIds: s.promptIds, tokenIds: s.tokenIds, logprobs: s.logprobs, text, finishReason: s.done ?? "length" };
          }),
        );
        k += p.n;
      }
      return out;
    } finally {
      for (const cch of caches) gpu.release(cch.k, cch.v);
      gpu.release(logits, ids, logp);
    }
  }

  /**
   * Run the layers over `T` new tokens for each of `B` rows. prefill: B = 1, the prompt at cache row `cacheRows[0]`;
   * decode: T = 1, row b's token sits at position `starts[b]`. Returns the final-norm hidden states [B·T, H].
   */
  private forwardTokens(tokens: number[], starts: number[], T: number, B: number, caches: { k: GpuBuffer; v: GpuBuffer }[], mode: "prefill" | "decode"): Tensor {
    const e = this.engine, gpu = this.gpu, c = this.decoder.config, W = this.decoder.weights;
    const D = c.headDim, Hkv = c.numKvHeads, Hq = c.numHeads;
    const ids = e.tensor(tokens, [B * T], { dtype: "u32" });
    const pos = e.tensor(mode === "prefill" ? Array.from({ length: T }, (_, t) => t) : starts, [B * T], { dtype: "u32" });
    // decode: each row's new K/V goes to its own position; prefill: the prompt goes to row cacheRows[0] from 0.
    const appendAt = e.tensor(starts, [B], { dtype: "u32" });
    const lensAfter = e.tensor(starts.map((s) => s + 1), [B], { dtype: "u32" });
    const Tmax = this.cacheTmax;
    let x = embedding(ids, W.embed);
    W.layers.forEach((L: DecoderLayer, li: number) => {
      const h = rmsnorm(x, L.inputNorm, c.rmsNormEps);
      let q = e.view(L.q.forward(h), [B, T, Hq, D]);
      let k = e.view(L.k.forward(h), [B, T, Hkv, D]);
      const v = e.view(L.v.forward(h), [B, T, Hkv, D]);
      if (c.qkNorm) {
        q = rmsnorm(q, L.qNorm!, c.rmsNormEps);
        k = rmsnorm(k, L.kNorm!, c.rmsNormEps);
      }
      q = rope(q, pos, c.ropeTheta);
      k = rope(k, pos, c.ropeTheta);
      const cache = caches[li];
      const o = e.empty([B, T, Hq, D], "f32");
      if (mode === "prefill") {
        // Write the prompt's K/V into its cache row (positions 0..T−1), then attend causally within the prompt.
        gpu.copy(k.storage as GpuBuffer, 0, cache.k, 0, T * Hkv * D * 4);
        gpu.copy(v.storage as GpuBuffer, 0, cache.v, 0, T * Hkv * D * 4);
        K.attention(gpu, { q: q.storage as GpuBuffer, k: k.storage as GpuBuffer, v: v.storage as GpuBuffer, o: o.storage as GpuBuffer, B: 1, T, Hq, Hkv, D });
      } else {
        K.kvCacheAppend(gpu, { k: k.storage as GpuBuffer, v: v.storage as GpuBuffer, kCache: cache.k, vCache: cache.v, positions: appendAt.storage as GpuBuffer, B, Tn: 1, Tmax, Hkv, D });
        K.attentionDecode(gpu, { q: q.storage as GpuBuffer, kCache: cache.k, vCache: cache.v, o: o.storage as GpuBuffer, lens: lensAfter.storage as GpuBuffer, B, Tq: 1, Tmax, Hq, Hkv, D });
      }
      const x1 = add(x, L.o.forward(e.view(o, [B * T, Hq * D])));
      const h2 = rmsnorm(x1, L.postAttentionNorm, c.rmsNormEps);
      x = add(x1, L.down.forward(swiglu(L.gate.forward(h2), L.up.forward(h2))));
    });
    return rmsnorm(x, W.finalNorm, c.rmsNormEps);
  }

  /** Cache length (tokens per row) of the generation in progress. */
  private cacheTmax = 0;

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
    K.lmHeadLogits(gpu, { h: src, w: this.decoder.weights.lmHead.storage as GpuBuffer, out: dst, M: count, V, H, temperature: 1 });
    if (!direct) {
      gpu.copy(dst, 0, out, dstRow * V * 4, count * V * 4);
      gpu.release(dst);
    }
    if (src !== h.storage) gpu.release(src);
  }
}
