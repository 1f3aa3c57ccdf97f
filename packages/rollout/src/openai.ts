// A Generator over an OpenAI-compatible /v1/completions endpoint (vLLM, SGLang, or `nr serve`): the scale-out path
// when generation outgrows one machine. One HTTP request per prompt asks for all `n` samples at once, with
// per-token log-probs; requests run with bounded concurrency, time out, and retry on connection errors and 5xx
// (never on 4xx, which are the caller's mistake and are reported with the server's message).
//
// For RL on token ids (the trainer's remote rollouts) `completeTokenIds` sends the prompt as token ids and asks for
// the sampled tokens back as ids (vLLM's `return_tokens_as_token_ids`, which `nr serve` implements too), and
// `loadLoraAdapter` / `unloadLoraAdapter` call vLLM's runtime LoRA routes.
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
  /** `status` 0: no HTTP answer (connection refused, reset, timed out). */
  constructor(message: string, readonly status: number) {
    super(message);
    this.name = "HttpError";
  }
}

/** Where and how to reach one server. */
export interface ServerConnection {
  /** e.g. http://127.0.0.1:8000/v1 */
  baseUrl: string;
  apiKey?: string;
  timeoutMs: number;
}

/** POST a JSON body; the answer's text on 2xx, else an HttpError carrying the server's message (status 0: no answer). */
export async function postJson(conn: ServerConnection, path: string, body: string): Promise<string> {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), conn.timeoutMs);
  const url = conn.baseUrl.replace(/\/+$/, "") + path;
  try {
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", ...(conn.apiKey ? { authorization: `Bearer ${conn.apiKey}` } : {}) },
      body,
      signal: ctrl.signal,
    });
    const text = await res.text();
    if (!res.ok) {
      let msg = text.slice(0, 500);
      try {
        const j = JSON.parse(text) as { error?: { message?: string } | string; message?: string; detail?: string };
        msg = (typeof j.error === "string" ? j.error : j.error?.message) ?? j.message ?? j.detail ?? msg;
      } catch {
        /* not JSON: keep the text */
      }
      throw new HttpError(`HTTP ${res.status} from ${url}: ${msg}`, res.status);
    }
    return text;
  } catch (e) {
    if (e instanceof HttpError) throw e;
    if ((e as Error).name === "AbortError") throw new HttpError(`${url}: no answer within ${conn.timeoutMs} ms`, 0);
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new HttpError(`${url}: ${cause?.code ?? cause?.message ?? (e as Error).message}`, 0);
  } finally {
    clearTimeout(timer);
  }
}

/** vLLM's POST /v1/load_lora_adapter; resolves with its plain-text "Success: …" answer. */
export function loadLoraAdapter(conn: ServerConnection, req: { lora_name: string; lora_path: string; load_inplace?: boolean }): Promise<string> {
  return postJson(conn, "/load_lora_adapter", JSON.stringify(req));
}

/** vLLM's POST /v1/unload_lora_adapter. */
export function unloadLoraAdapter(conn: ServerConnection, req: { lora_name: string }): Promise<string> {
  return postJson(conn, "/unload_lora_adapter", JSON.stringify(req));
}

/** One prompt as token ids, sampled `n` times with the server's seeded sampler. */
export interface TokenIdsRequest {
  model: string;
  promptIds: number[];
  n: number;
  maxNewTokens: number;
  temperature: number;
  topP?: number;
  topK?: number;
  seed: number;
}

/** A completion as token ids with the sampler's log-prob of each (a stop token that ended it is not included). */
export interface TokenIdsCompletion {
  tokenIds: number[];
  logprobs: number[];
  text: string;
  finishReason: FinishReason;
}

/**
 * One /v1/completions request with the prompt as token ids, `logprobs: 1` and `return_tokens_as_token_ids: true`.
 * One attempt: callers decide where to retry. A server that does not return ids (`token_id:<id>`) is an error.
 */
export async function completeTokenIds(conn: ServerConnection, r: TokenIdsRequest, stopTokenIds: readonly number[] = []): Promise<TokenIdsCompletion[]> {
  const body = {
    model: r.model,
    prompt: r.promptIds,
    n: r.n,
    max_tokens: r.maxNewTokens,
    temperature: r.temperature,
    top_p: r.topP ?? 1,
    ...(r.topK ? { top_k: r.topK } : {}),
    seed: r.seed,
    logprobs: 1,
    return_tokens_as_token_ids: true,
  };
  const text = await postJson(conn, "/completions", JSON.stringify(body));
  let json: { choices?: ChoiceJson[] };
  try {
    json = JSON.parse(text);
  } catch {
    throw new HttpError(`${conn.baseUrl}/completions returned invalid JSON: ${text.slice(0, 200)}`, 502);
  }
  const choices = json.choices;
  if (!Array.isArray(choices) || choices.length !== r.n) throw new HttpError(`${conn.baseUrl}/completions: asked for n=${r.n} completions, got ${Array.isArray(choices) ? choices.length : "no choices array"}`, 502);
  const stops = new Set(stopTokenIds);
  return [...choices]
    .sort((a, b) => a.index - b.index)
    .map((c) => {
      const names = c.logprobs?.tokens ?? [];
      const lps = c.logprobs?.token_logprobs ?? [];
      const tokenIds = names.map((t) => {
        const m = /^token_id:(\d+)$/.exec(t);
        if (!m) throw new HttpError(`${conn.baseUrl}/completions returned the token ${JSON.stringify(t)}, not "token_id:<id>": the server must support return_tokens_as_token_ids (vLLM, nr serve)`, 502);
        return Number(m[1]);
      });
      const logprobs = lps.map((v) => (v === null ? Number.NaN : v));
      const finishReason: FinishReason = c.finish_reason === "length" ? "length" : typeof c.stop_reason === "string" ? "stop" : "eos";
      // vLLM lists the stop token that ended a sequence; the trainer appends EOS itself.
      if (finishReason === "eos" && tokenIds.length && stops.has(tokenIds[tokenIds.length - 1])) {
        tokenIds.pop();
        logprobs.pop();
      }
      return { tokenIds, logprobs, text: c.text, finishReason };
    });
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
        if (e instanceof HttpError && e.status >= 400 && e.status < 500) throw e; // the request is wrong: retrying cannot help
      }
    }
    throw new Error(`OpenAIGenerator: ${this.opts.baseUrl}/completions failed after ${this.opts.retries + 1} attempts: ${lastErr?.message}`);
  }

  private async post(path: string, body: string): Promise<unknown> {
    const text = await postJson({ baseUrl: this.opts.baseUrl, apiKey: this.opts.apiKey, timeoutMs: this.opts.timeoutMs }, path, body);
    try {
      return JSON.parse(text);
    } catch {
      throw new HttpError(`${path} returned invalid JSON: ${text.slice(0, 200)}`, 502);
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
