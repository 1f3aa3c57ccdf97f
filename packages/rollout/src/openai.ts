// A Generator over an OpenAI-compatible /v1/completions endpoint (vLLM, SGLang, or `nr serve`): the scale-out path
// when generation outgrows one machine. One HTTP request per prompt asks for all `n` samples at once, with
// per-token log-probs; requests run with bounded concurrency, time out, and retry on connection errors and 5xx
// (never on 4xx, which are the caller's mistake and are reported with the server's message).
import type { Completion, FinishReason, GenerationRequest, GenerationResult, Generator } from "@nr/data";

export interface OpenAIGeneratorOptions {
  /** e.g. http://localhost:8000/v1 */
  baseUrl: string;
  /** Served model name; with vLLM LoRA serving, the adapter name selects the adapter. */
  model: string;
  apiKey?: string;
  /** Parallel HTTP requests (default 8). */
  concurrency?: number;
  /** Per-request timeout in ms (default 600 000). */
  timeoutMs?: number;
  /** Retries on network errors / 5xx (default 3), with exponential backoff from `retryDelayMs` (default 500). */
  retries?: number;
  retryDelayMs?: number;
  /** Ask for the sampled tokens' log-probs (default true). */
  logprobs?: boolean;
  /** Extra fields sent with every request (e.g. { top_k: 20, repetition_penalty: 1.05 }). */
  extraBody?: Record<string, unknown>;
}

/** A completion with what RL needs beyond the text. */
export interface RolloutCompletion extends Completion {
  /** Log-prob of each sampled token under the sampling distribution, when the server returns them. */
  logprobs?: number[];
  /** The sampled tokens as the server spells them. */
  tokenTexts?: string[];
  /** Wall time of the HTTP request that produced this completion (ms). */
  latencyMs: number;
}

export class HttpError extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
    this.name = "HttpError";
  }
}

interface ChoiceJson {
  index: number;
  text: string;
  finish_reason: string | null;
  stop_reason?: string | number | null;
  logprobs?: { token_logprobs?: Array<number | null>; tokens?: string[] } | null;
}

export class OpenAIGenerator implements Generator {
  private readonly opts: Required<Omit<OpenAIGeneratorOptions, "apiKey" | "extraBody">> & Pick<OpenAIGeneratorOptions, "apiKey" | "extraBody">;

  constructor(options: OpenAIGeneratorOptions) {
    if (!/^https?:\/\//.test(options.baseUrl)) throw new Error(`OpenAIGenerator: baseUrl must start with http:// or https:// (got "${options.baseUrl}")`);
    if (!options.model) throw new Error("OpenAIGenerator: model (the served model or adapter name) is required");
    this.opts = {
      concurrency: 8,
      timeoutMs: 600_000,
      retries: 3,
      retryDelayMs: 500,
      logprobs: true,
      ...options,
      baseUrl: options.baseUrl.replace(/\/+$/, ""),
    };
  }

  async generate(requests: GenerationRequest[]): Promise<GenerationResult[]> {
    const results: GenerationResult[] = new Array(requests.length);
    let next = 0;
    const worker = async () => {
      while (next < requests.length) {
        const i = next++;
        results[i] = { completions: await this.one(requests[i]) };
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.opts.concurrency, requests.length) }, worker));
    return results;
  }

  private body(r: GenerationRequest): Record<string, unknown> {
    if (!(r.n >= 1) || !Number.isInteger(r.n)) throw new Error(`OpenAIGenerator: n must be a positive integer (got ${r.n})`);
    if (!(r.maxNewTokens >= 1)) throw new Error(`OpenAIGenerator: maxNewTokens must be ≥ 1 (got ${r.maxNewTokens})`);
    return {
      model: this.opts.model,
      prompt: r.prompt,
      n: r.n,
      max_tokens: r.maxNewTokens,
      temperature: r.temperature,
      top_p: r.topP ?? 1,
      ...(r.seed !== undefined ? { seed: r.seed } : {}),
      ...(r.stop?.length ? { stop: r.stop } : {}),
      ...(this.opts.logprobs ? { logprobs: 1 } : {}),
      ...this.opts.extraBody,
    };
  }

  private async one(r: GenerationRequest): Promise<RolloutCompletion[]> {
    const body = JSON.stringify(this.body(r));
    let lastErr: Error | null = null;
    for (let attempt = 0; attempt <= this.opts.retries; attempt++) {
      if (attempt > 0) await new Promise((res) => setTimeout(res, this.opts.retryDelayMs * 2 ** (attempt - 1)));
      const t0 = performance.now();
      try {
        const json = await this.post("/completions", body);
        const latencyMs = performance.now() - t0;
        return this.parse(json, r, latencyMs);
      } catch (e) {
        lastErr = e as Error;
        if (e instanceof HttpError && e.status < 500) throw e; // the request is wrong: retrying cannot help
      }
    }
    throw new Error(`OpenAIGenerator: ${this.opts.baseUrl}/completions failed after ${this.opts.retries + 1} attempts: ${lastErr?.message}`);
  }

  private async post(path: string, body: string): Promise<unknown> {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), this.opts.timeoutMs);
    try {
      const res = await fetch(this.opts.baseUrl + path, {
        method: "POST",
        headers: { "content-type": "application/json", ...(this.opts.apiKey ? { authorization: `Bearer ${this.opts.apiKey}` } : {}) },
        body,
        signal: ctrl.signal,
      });
      const text = await res.text();
      if (!res.ok) {
        let msg = text.slice(0, 500);
        try {
          const j = JSON.parse(text) as { error?: { message?: string } | string; message?: string };
          msg = (typeof j.error === "string" ? j.error : j.error?.message) ?? j.message ?? msg;
        } catch {
          /* not JSON: keep the text */
        }
        throw new HttpError(`HTTP ${res.status} from ${path}: ${msg}`, res.status);
      }
      try {
        return JSON.parse(text);
      } catch {
        throw new HttpError(`${path} returned invalid JSON: ${text.slice(0, 200)}`, 502);
      }
    } catch (e) {
      if ((e as Error).name === "AbortError") throw new Error(`request timed out after ${this.opts.timeoutMs} ms`);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  private parse(json: unknown, r: GenerationRequest, latencyMs: number): RolloutCompletion[] {
    const choices = (json as { choices?: ChoiceJson[] }).choices;
    if (!Array.isArray(choices)) throw new HttpError(`response has no "choices" array: ${JSON.stringify(json).slice(0, 200)}`, 502);
    if (choices.length !== r.n) throw new HttpError(`asked for n=${r.n} completions, the server returned ${choices.length}`, 502);
    return [...choices]
      .sort((a, b) => a.index - b.index)
      .map((c) => {
        const finishReason: FinishReason =
          c.finish_reason === "length" ? "length" : typeof c.stop_reason === "string" || (c.stop_reason == null && r.stop?.some((s) => c.text.endsWith(s))) ? "stop" : "eos";
        const lp = c.logprobs?.token_logprobs;
        return {
          text: c.text,
          finishReason,
          tokens: lp?.length ?? c.logprobs?.tokens?.length,
          logprobs: lp ? lp.map((v) => (v === null ? Number.NaN : v)) : undefined,
          tokenTexts: c.logprobs?.tokens,
          latencyMs,
        };
      });
  }
}
