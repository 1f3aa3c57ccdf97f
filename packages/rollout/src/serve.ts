// `nr serve`: an OpenAI-compatible HTTP server (node:http only) over the WebGPU generator, so that anything that
// speaks the OpenAI API — our own OpenAIGenerator, the openai SDKs, evaluation harnesses — can use a checkpoint and
// its LoRA adapters.
//
//   GET  /v1/models             the base model and every adapter, by name
//   POST /v1/completions        prompt (string | string[] | token ids | token id lists)
//   POST /v1/chat/completions   messages rendered with the checkpoint's chat template (generation prompt appended)
//   GET  /health                200 when the server is up (the one route that needs no API key)
//   POST /v1/load_lora_adapter  {lora_name, lora_path, load_inplace}: load a PEFT adapter while serving (vLLM's
//   POST /v1/unload_lora_adapter {lora_name}                          runtime LoRA routes; only with runtimeLora)
//
// Fields: model (the base model's or an adapter's name; default the base), n, max_tokens (chat: also
// max_completion_tokens), temperature, top_p, top_k (−1/0 = off), min_p, repetition_penalty (vLLM's extension, HF
// semantics over prompt + output), seed, stop, logprobs (completions: 0/1;
// chat: true, top_logprobs 0), return_tokens_as_token_ids (vLLM's: log-prob tokens spelled "token_id:<id>"), stream
// (+ stream_options.include_usage). Log-probs are those of the sampled tokens
// under the sampling distribution (after temperature / top-k / top-p / min-p; 0 for greedy), which is what RL needs;
// alternatives (top_logprobs) are not computed. finish_reason is "stop" (EOS or a stop string; vLLM's stop_reason
// names the string) or "length".
//
// Every request is validated before it is queued; a bad one gets a 4xx JSON error in OpenAI's shape
// ({error: {message, type, param, code}}) and never reaches the GPU. Valid requests are queued to the one generator,
// whose decode loop admits them into free rows of its running batch (continuous batching) as long as they use the
// adapter of that batch; a request for another adapter waits until the batch drains, then the adapter switches.
// A request without a seed gets a random one; a request with a seed gets the same completions whatever else is in
// the batch. A client that disconnects cancels its request's rows.
//
// Runtime LoRA follows vLLM (VLLM_ALLOW_RUNTIME_LORA_UPDATING): success is 200 with a plain-text "Success: …" body;
// errors are {error: {message, type, param, code}} with vLLM's types and the HTTP status as code — 400
// InvalidUserInput (a field missing, a name already loaded without load_inplace), 404 NotFoundError (unload of an
// unknown name, a lora_path that holds no PEFT adapter), 400 BadRequestError (an adapter the server refuses, e.g. a
// rank above its maximum, or a lora_path outside its root). Without runtimeLora both routes are 404, as in vLLM
// without the variable. A load or unload joins the request queue once its file is read: the requests queued before
// it run to the end on the weights they started with (admission stops, the running batch drains), then the weights
// change, then later requests run — a request sent after the load has answered always gets the new weights.
// (serve-lora.ts holds the adapter registry and those two routes.)
//
// With apiKey every route but /health needs `Authorization: Bearer <key>` (compared in constant time); others get
// 401. A body nesting arrays/objects deeper than MAX_JSON_DEPTH is refused with 400 before it is parsed.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createHash, randomBytes, randomInt, timingSafeEqual } from "node:crypto";
import type { ChatMessage } from "@nr/model";
import type { GeneratedSequence, GenerationJob, PromptSpec, TokenizerLike, WebGpuGenerator } from "./webgpu.js";
import { ApiError } from "./serve-errors.js";
import { ServedAdapters, type RuntimeLora } from "./serve-lora.js";
import { unfinished } from "@nr/data/core";

export { ApiError } from "./serve-errors.js";
export type { RuntimeLora } from "./serve-lora.js";

export interface ServeTokenizer extends TokenizerLike {
  /** Render chat messages with the checkpoint's template (absent: /v1/chat/completions answers 400). */
  renderChat?(messages: readonly ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
}

/** Deepest array/object nesting a request body may have (a chat request with content parts needs 5). */
export const MAX_JSON_DEPTH = 64;

export interface ServeOptions {
  generator: WebGpuGenerator;
  tokenizer: ServeTokenizer;
  /** The base model's served name. */
  model: string;
  /** Served adapter names (LoRA adapters already loaded on the decoder). */
  adapters?: string[];
  /** Select an adapter (or the bare base with null) before a batch of its requests runs. */
  activate?: (adapter: string | null) => void;
  /** Default 127.0.0.1 (this machine only); 0.0.0.0 to listen on every interface. */
  host?: string;
  /** Default 8000; 0 picks a free port. */
  port?: number;
  /** Prompt + completion limit per sequence (default the generator's context length). */
  contextLength?: number;
  /** Largest max_tokens a request may ask for (default: the context length). */
  maxTokens?: number;
  /** Sequences decoding at once (the KV cache holds this many × contextLength tokens); n ≤ this. Default 32. */
  maxBatchRows?: number;
  /** Largest request body in bytes (default 1 MiB). */
  maxBodyBytes?: number;
  /** One line per request and per batch error (default: none). */
  log?: (line: string) => void;
  /** Require `Authorization: Bearer <apiKey>` on every route but /health. */
  apiKey?: string;
  /** Serve /v1/load_lora_adapter and /v1/unload_lora_adapter (absent: both 404, as vLLM without runtime updating). */
  runtimeLora?: RuntimeLora<any>;
}

export interface RunningServer {
  /** Base URL of the API, e.g. http://127.0.0.1:8000/v1 */
  url: string;
  port: number;
  server: Server;
  /** Stop accepting, answer queued requests 503, wait for the running batch, close connections. */
  close(): Promise<void>;
}


function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  if (res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text).toString(), ...headers });
  res.end(text);
}

function sendError(res: ServerResponse, e: ApiError, headers: Record<string, string> = {}) {
  sendJson(res, e.status, { error: { message: e.message, type: e.type, param: e.param, code: e.code } }, headers);
}

/** Read the body up to `limit` bytes; beyond it, drain the rest (so the client sees the answer) and throw 413. */
function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) over = true;
      else chunks.push(c);
      if (size > 64 * limit) req.destroy(); // a client that will not stop sending
    });
    req.on("end", () => (over ? reject(new ApiError(413, `request body is larger than this server's limit of ${limit} bytes (nr serve --max-body-bytes)`, null, "request_too_large")) : resolve(Buffer.concat(chunks).toString("utf8"))));
    req.on("error", reject);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Field validation: each reader names the field, the value it got and what it accepts.

type Body = Record<string, unknown>;
const show = (v: unknown) => (typeof v === "string" ? JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v) : JSON.stringify(v)?.slice(0, 60) ?? String(v));
const bad = (param: string, what: string, v: unknown) => new ApiError(400, `${param} must be ${what} (got ${show(v)})`, param, "invalid_value");

function num(b: Body, k: string, dflt: number, lo: number, hi: number, loOpen = false): number {
  const v = b[k];
  if (v === undefined || v === null) return dflt;
  const ok = typeof v === "number" && Number.isFinite(v) && (loOpen ? v > lo : v >= lo) && v <= hi;
  if (!ok) throw bad(k, `a number in ${loOpen ? "(" : "["}${lo}, ${hi}]`, v);
  return v;
}

function int(b: Body, k: string, dflt: number | null, lo: number, hi: number): number | null {
  const v = b[k];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi) throw bad(k, `an integer in [${lo}, ${hi}]`, v);
  return v;
}

function bool(b: Body, k: string): boolean {
  const v = b[k];
  if (v === undefined || v === null) return false;
  if (typeof v !== "boolean") throw bad(k, "true or false", v);
  return v;
}

/** Fields we do not implement must be absent or at their neutral value. */
function unsupported(b: Body, k: string, neutral: (v: unknown) => boolean, why: string) {
  const v = b[k];
  if (v !== undefined && v !== null && !neutral(v)) throw new ApiError(400, `${k}=${show(v)} is not supported by this server: ${why}`, k, "unsupported_parameter");
}

/** What both endpoints share after their own fields are read. */
interface Common {
  adapter: string | null;
  model: string;
  n: number;
  maxTokens: number | null;
  sampling: Pick<PromptSpec, "temperature" | "topP" | "topK" | "minP" | "repetitionPenalty" | "stop" | "seed">;
  stream: boolean;
  includeUsage: boolean;
}

// ---------------------------------------------------------------------------------------------------------------

/** A queued request, or a change of adapters that runs when the batch before it has drained. */
type Pending = { adapter: string | null; job: GenerationJob } | { control: () => void; settle: (err?: Error) => void };

/** FIFO of jobs for the one generator; batches run one adapter at a time. */
class Scheduler {
  private queue: Pending[] = [];
  private running: Promise<void> | null = null;
  closed = false;

  constructor(private readonly o: Required<Pick<ServeOptions, "generator" | "maxBatchRows">> & { tmax: number; activate?: ServeOptions["activate"]; log?: ServeOptions["log"] }) {}

  submit(p: Pending) {
    if (this.closed) throw new ApiError(503, "the server is shutting down", null, "shutting_down");
    this.queue.push(p);
    this.running ??= this.pump().finally(() => (this.running = null));
  }

  /** Run `fn` once every request queued before it has finished; later requests wait for it. */
  control(fn: () => void): Promise<void> {
    return new Promise((resolve, reject) => this.submit({ control: fn, settle: (err) => (err ? reject(err) : resolve()) }));
  }

  private dropCancelled() {
    this.queue = this.queue.filter((p) => !("job" in p && p.job.cancelled?.()));
  }

  private async pump() {
    for (this.dropCancelled(); this.queue.length; this.dropCancelled()) {
      const head = this.queue[0];
      if ("control" in head) {
        this.queue.shift();
        try {
          head.control();
          head.settle();
        } catch (err) {
          head.settle(err as Error);
        }
        continue;
      }
      const adapter = head.adapter;
      this.o.activate?.(adapter);
      const take = (free: number) => {
        this.dropCancelled();
        const next = this.queue[0];
        // Strict FIFO: a request for another adapter, or an adapter change, stops admission until this batch drains.
        if (!next || !("job" in next) || next.adapter !== adapter || next.job.n > free) return null;
        return (this.queue.shift() as { job: GenerationJob }).job;
      };
      try {
        await this.o.generator.run({ take }, { rows: this.o.maxBatchRows, tmax: this.o.tmax });
      } catch (err) {
        // The jobs in the batch were failed by the generator; queued ones run in the next batch.
        this.o.log?.(`batch failed: ${(err as Error).message}`);
      }
    }
  }

  async close() {
    this.closed = true;
    const down = new ApiError(503, "the server is shutting down", null, "shutting_down");
    for (const p of this.queue.splice(0)) {
      if ("job" in p) p.job.fail?.(down);
      else p.settle(down);
    }
    await this.running;
  }
}

/** Deepest nesting of arrays and objects in JSON text (brackets inside strings ignored); stops past `limit`. */
export function jsonDepth(text: string, limit = Infinity): number {
  let depth = 0, max = 0, inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max && (max = depth) > limit) return max;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return max;
}

/** Constant-time check of `Authorization: Bearer <key>` (digests make the compared lengths equal). */
function bearerCheck(apiKey: string | undefined): (req: IncomingMessage) => boolean {
  if (apiKey === undefined) return () => true;
  const want = createHash("sha256").update(apiKey).digest();
  return (req) => {
    const m = /^Bearer (.+)$/i.exec(req.headers.authorization ?? "");
    return m !== null && timingSafeEqual(createHash("sha256").update(m[1].trim()).digest(), want);
  };
}

// the repetition guard (never on for serve requests today) cut a completion short: "length" tells a client it is unfinished
const finish = (s: GeneratedSequence) => ({ finish_reason: unfinished(s.finishReason) ? "length" : "stop", stop_reason: s.stopString ?? null });

/** The JSON object of a POST body: size, nesting depth and syntax checked, in that order. */
async function jsonBody(req: IncomingMessage, maxBody: number): Promise<Body> {
  const text = await readBody(req, maxBody);
  // JSON.parse itself copes with deep nesting, but every recursive walk of the result (messages, error text) would
  // overflow the stack: refuse it up front.
  const depth = jsonDepth(text, MAX_JSON_DEPTH);
  if (depth > MAX_JSON_DEPTH) throw new ApiError(400, `the request body nests arrays/objects more than ${MAX_JSON_DEPTH} levels deep; no request of this API needs more than 5`, null, "invalid_json");
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw new ApiError(400, `malformed JSON in the request body: ${(e as Error).message}`, null, "invalid_json");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new ApiError(400, "the request body must be a JSON object", null, "invalid_json");
  return body as Body;
}

/** The completions and chat endpoints over one generator: request validation, jobs, JSON and streamed answers. */
class CompletionsApi {
  readonly gen: WebGpuGenerator;
  readonly tok: ServeTokenizer;
  readonly model: string;
  readonly ctx: number;
  readonly maxTokensLimit: number;
  readonly maxRows: number;
  readonly V: number;

  constructor(
    opts: ServeOptions,
    readonly adapters: ServedAdapters,
    readonly scheduler: Scheduler,
  ) {
    this.gen = opts.generator;
    this.tok = opts.tokenizer;
    this.model = opts.model;
    this.ctx = opts.contextLength ?? this.gen.contextLength;
    this.maxTokensLimit = opts.maxTokens ?? this.ctx;
    this.maxRows = opts.maxBatchRows ?? 32;
    this.V = this.gen.decoder.config.vocabSize;
  }

  common(b: Body, chat: boolean): Common {
    const model = b.model ?? this.model;
    if (typeof model !== "string") throw bad("model", "a string (a served model name)", model);
    if (model !== this.model && !this.adapters.has(model)) {
      throw new ApiError(404, `The model \`${model}\` does not exist. Served: ${[this.model, ...this.adapters.names()].map((m) => `\`${m}\``).join(", ")} (GET /v1/models).`, "model", "model_not_found");
    }
    const n = int(b, "n", 1, 1, this.maxRows)!;
    const maxKey = chat && b.max_completion_tokens !== undefined && b.max_completion_tokens !== null ? "max_completion_tokens" : "max_tokens";
    const maxTokens = int(b, maxKey, chat ? null : 16, 1, Number.MAX_SAFE_INTEGER);
    if (maxTokens !== null && maxTokens > this.maxTokensLimit) throw new ApiError(400, `${maxKey}=${maxTokens} is above this server's limit of ${this.maxTokensLimit} (nr serve --max-tokens)`, maxKey, "invalid_value");
    const temperature = num(b, "temperature", 1, 0, 100);
    const topP = num(b, "top_p", 1, 0, 1, true);
    const topK = int(b, "top_k", 0, -1, this.V)!;
    const minP = num(b, "min_p", 0, 0, 1);
    const repetitionPenalty = num(b, "repetition_penalty", 1, 0, 10, true);
    let stop: string[] = [];
    if (typeof b.stop === "string") stop = [b.stop];
    else if (Array.isArray(b.stop)) stop = b.stop;
    else if (b.stop !== undefined && b.stop !== null) throw bad("stop", "a string or a list of strings", b.stop);
    if (stop.length > 16 || stop.some((s) => typeof s !== "string" || s.length === 0)) throw bad("stop", "at most 16 non-empty strings", b.stop);
    const seed = int(b, "seed", null, 0, Number.MAX_SAFE_INTEGER);
    const stream = bool(b, "stream");
    const so = b.stream_options;
    if (so !== undefined && so !== null && (typeof so !== "object" || Array.isArray(so))) throw bad("stream_options", "an object", so);
    const includeUsage = Boolean((so as Body | null | undefined)?.include_usage);
    unsupported(b, "presence_penalty", (v) => v === 0, "only 0");
    unsupported(b, "frequency_penalty", (v) => v === 0, "only 0");
    unsupported(b, "logit_bias", (v) => typeof v === "object" && Object.keys(v as object).length === 0, "no logit bias");
    unsupported(b, "best_of", (v) => v === n, "best_of must equal n");
    return { adapter: model === this.model ? null : model, model, n, maxTokens, sampling: { temperature, topP, topK: topK < 0 ? 0 : topK, minP, repetitionPenalty, stop, seed: seed ?? randomInt(2 ** 47) }, stream, includeUsage };
  }

  /** Prompts → token ids with the context-window check; returns the completion budget of each. */
  budget(ids: number[], c: Common, what: string): number {
    if (ids.length === 0) throw new ApiError(400, `${what} is empty (it encodes to no tokens)`, what, "invalid_value");
    const bad = ids.find((id) => id >= this.V);
    if (bad !== undefined) throw new ApiError(400, `${what} holds token id ${bad}, outside the vocabulary [0, ${this.V})`, what, "invalid_value");
    const want = c.maxTokens ?? Math.min(this.maxTokensLimit, this.ctx - ids.length);
    if (ids.length + want > this.ctx) {
      throw new ApiError(400, `This model's maximum context length is ${this.ctx} tokens. However, you requested ${ids.length + want} tokens (${ids.length} in the ${what}, ${want} for the completion). Please reduce the length of the ${what} or the completion.`, what, "context_length_exceeded");
    }
    return want;
  }

  completionPrompts(b: Body): number[][] {
    const p = b.prompt;
    const isIds = (x: unknown): x is number[] => Array.isArray(x) && x.length > 0 && x.every((t) => typeof t === "number" && Number.isInteger(t) && t >= 0);
    if (typeof p === "string") return [this.tok.encode(p)];
    if (isIds(p)) return [p];
    if (Array.isArray(p) && p.length > 0 && p.every((s) => typeof s === "string")) return p.map((s: string) => this.tok.encode(s));
    if (Array.isArray(p) && p.length > 0 && p.every(isIds)) return p as number[][];
    throw bad("prompt", "a string, a list of strings, a list of token ids or a list of such lists (non-empty)", p);
  }

  chatPrompt(b: Body): number[] {
    const msgs = b.messages;
    if (!Array.isArray(msgs) || msgs.length === 0) throw bad("messages", "a non-empty list of {role, content}", msgs);
    const flat: ChatMessage[] = msgs.map((m, i) => {
      const at = `messages[${i}]`;
      if (typeof m !== "object" || m === null) throw bad(at, "an object {role, content}", m);
      const { role, content } = m as Body;
      if (typeof role !== "string") throw bad(`${at}.role`, "a string", role);
      let text: string;
      if (typeof content === "string") text = content;
      else if (content === null || content === undefined) text = "";
      else if (Array.isArray(content)) {
        text = content
          .map((part, j) => {
            const pt = part as Body;
            if (pt?.type !== "text" || typeof pt.text !== "string") throw new ApiError(400, `${at}.content[${j}]: only {type: "text", text} parts are supported`, `${at}.content`, "invalid_value");
            return pt.text;
          })
          .join("");
      } else throw bad(`${at}.content`, "a string or a list of text parts", content);
      return { role, content: text };
    });
    if (!this.tok.renderChat) throw new ApiError(400, "this model's tokenizer has no chat template; use /v1/completions with a rendered prompt", "messages", "no_chat_template");
    let text: string;
    try {
      text = this.tok.renderChat(flat, { addGenerationPrompt: true });
    } catch (e) {
      throw new ApiError(400, `the chat template refused these messages: ${(e as Error).message}`, "messages", "invalid_value");
    }
    return this.tok.encode(text);
  }

  tokenText(id: number): string {
    return this.tok.decode([id]);
  }

  /** vLLM's return_tokens_as_token_ids: log-prob entries name tokens as "token_id:<id>" (exact ids for RL clients). */
  tokenName(id: number, asIds: boolean): string {
    return asIds ? `token_id:${id}` : this.tokenText(id);
  }

  async completions(res: ServerResponse, b: Body, chat: boolean) {
    const c = this.common(b, chat);
    const asIds = bool(b, "return_tokens_as_token_ids");
    let logprobs = false;
    if (chat) {
      logprobs = bool(b, "logprobs");
      const top = int(b, "top_logprobs", 0, 0, 20);
      if (top) throw new ApiError(400, "top_logprobs > 0 is not supported: this server returns the sampled tokens' log-probs only", "top_logprobs", "unsupported_parameter");
    } else {
      const lp = int(b, "logprobs", null, 0, 20);
      if (lp !== null && lp > 1) throw new ApiError(400, `logprobs=${lp} is not supported: this server returns the sampled tokens' log-probs only (logprobs 0 or 1)`, "logprobs", "unsupported_parameter");
      logprobs = lp !== null;
      unsupported(b, "echo", (v) => v === false, "echo is not implemented");
      unsupported(b, "suffix", (v) => v === "", "suffix is not implemented");
    }
    const prompts = chat ? [this.chatPrompt(b)] : this.completionPrompts(b);
    const budgets = prompts.map((ids, i) => this.budget(ids, c, chat ? "messages" : prompts.length > 1 ? `prompt[${i}]` : "prompt"));
    const id = `${chat ? "chatcmpl" : "cmpl"}-${randomBytes(12).toString("hex")}`;
    const head = { id, object: chat ? "chat.completion" : "text_completion", created: Math.floor(Date.now() / 1000), model: c.model };
    let cancelled = false;
    res.on("close", () => {
      if (!res.writableFinished) cancelled = true;
    });
    const promptTokens = prompts.reduce((a, p) => a + p.length, 0);

    // Streaming: per choice, text already sent and tokens already reported.
    const sent = prompts.flatMap(() => Array.from({ length: c.n }, () => ({ chars: 0, tokens: 0, started: false })));
    const chunk = (index: number, text: string, ids: number[], lps: number[], fin: ReturnType<typeof finish> | null) => {
      if (res.destroyed) return;
      const st = sent[index];
      const choice: Body = chat
        ? { index, delta: { ...(st.started ? {} : { role: "assistant" }), ...(text || !st.started ? { content: text } : {}) }, logprobs: logprobs ? chatLogprobs(ids, lps) : null, finish_reason: fin?.finish_reason ?? null, ...(fin ? { stop_reason: fin.stop_reason } : {}) }
        : { index, text, logprobs: logprobs ? completionLogprobs(ids, lps, st.chars) : null, finish_reason: fin?.finish_reason ?? null, ...(fin ? { stop_reason: fin.stop_reason } : {}) };
      st.started = true;
      st.chars += text.length;
      st.tokens += ids.length;
      res.write(`data: ${JSON.stringify({ ...head, object: chat ? "chat.completion.chunk" : "text_completion", choices: [choice] })}\n\n`);
    };
    const completionLogprobs = (ids: number[], lps: number[], offset0: number) => {
      const text_offset: number[] = [];
      let off = offset0;
      for (const id of ids) {
        text_offset.push(off);
        off += this.tokenText(id).length;
      }
      return { tokens: ids.map((id) => this.tokenName(id, asIds)), token_logprobs: lps, top_logprobs: null, text_offset };
    };
    const chatLogprobs = (ids: number[], lps: number[]) => ({
      content: ids.map((t, i) => {
        const s = this.tokenName(t, asIds);
        return { token: s, logprob: lps[i], bytes: [...Buffer.from(this.tokenText(t), "utf8")], top_logprobs: [] };
      }),
    });
    /** Text safe to send: not a possible start of a stop string, not a half-decoded character. */
    const safeText = (ids: readonly number[]) => {
      let text = ids.length ? this.tok.decode(ids, { skipSpecialTokens: true }) : "";
      let end = text.length;
      for (const s of c.sampling.stop ?? []) {
        const at = text.indexOf(s);
        if (at >= 0) end = Math.min(end, at);
        for (let k = Math.min(s.length - 1, text.length); k > 0; k--) {
          if (text.endsWith(s.slice(0, k))) {
            end = Math.min(end, text.length - k);
            break;
          }
        }
      }
      while (end > 0 && text[end - 1] === "\uFFFD") end--;
      text = text.slice(0, end);
      return text;
    };

    // Every job is built (and checked) before anything is queued or sent.
    const pending: { job: GenerationJob; result: Promise<GeneratedSequence[]> }[] = prompts.map((promptIds, pi) => {
      const spec: PromptSpec = { promptIds, n: c.n, ...c.sampling, maxNewTokens: budgets[pi] };
      if (c.stream) {
        spec.onToken = (s, ids, lps) => {
          const index = pi * c.n + s;
          const text = safeText(ids).slice(sent[index].chars);
          const newIds = ids.slice(sent[index].tokens);
          if (text || (logprobs && newIds.length)) chunk(index, text, [...newIds], lps.slice(sent[index].tokens), null);
        };
        spec.onSequence = (s, seq) => {
          const index = pi * c.n + s;
          chunk(index, seq.text.slice(sent[index].chars), seq.tokenIds.slice(sent[index].tokens), seq.logprobs.slice(sent[index].tokens), finish(seq));
        };
      }
      let resolve!: (seqs: GeneratedSequence[]) => void;
      let reject!: (err: Error) => void;
      const result = new Promise<GeneratedSequence[]>((a, b) => ((resolve = a), (reject = b)));
      let job: GenerationJob;
      try {
        job = this.gen.resolveJob(spec, { temperature: 1, maxNewTokens: budgets[pi] }, this.ctx, 0, resolve);
      } catch (e) {
        throw new ApiError(400, (e as Error).message.replace(/^generate: /, ""));
      }
      job.fail = reject;
      job.cancelled = () => cancelled;
      return { job, result };
    });
    if (c.stream) {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
      res.flushHeaders();
    }
    for (const p of pending) this.scheduler.submit({ adapter: c.adapter, job: p.job });
    const results = await Promise.all(pending.map((p) => p.result));
    const all = results.flat();
    const usage = { prompt_tokens: promptTokens, completion_tokens: all.reduce((a, s) => a + s.tokenIds.length, 0), total_tokens: 0 };
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    if (c.stream) {
      if (c.includeUsage) res.write(`data: ${JSON.stringify({ ...head, object: chat ? "chat.completion.chunk" : "text_completion", choices: [], usage })}\n\n`);
      res.end("data: [DONE]\n\n");
      return;
    }
    const choices = all.map((s, index) =>
      chat
        ? { index, message: { role: "assistant", content: s.text }, logprobs: logprobs ? chatLogprobs(s.tokenIds, s.logprobs) : null, ...finish(s) }
        : { index, text: s.text, logprobs: logprobs ? completionLogprobs(s.tokenIds, s.logprobs, 0) : null, ...finish(s) },
    );
    sendJson(res, 200, { ...head, choices, usage });
  }
}

const ROUTES = "GET /v1/models, POST /v1/completions, POST /v1/chat/completions";
const LORA_ROUTES = ["/v1/load_lora_adapter", "/v1/unload_lora_adapter"];

/** One request: /health, the key, then the route. */
async function route(req: IncomingMessage, res: ServerResponse, path: string, api: CompletionsApi, o: { maxBody: number; authorized: (req: IncomingMessage) => boolean; created: number }) {
  if (path === "/health") return sendJson(res, 200, { status: "ok" });
  if (!o.authorized(req)) throw new ApiError(401, `${req.headers.authorization ? "Incorrect" : "Missing"} API key: send the header \`Authorization: Bearer <key>\` with the key this server was started with (nr serve --api-key / NR_API_KEY)`, null, "invalid_api_key");
  const adapters = api.adapters;
  if (path === "/v1/models") {
    if (req.method !== "GET") throw new ApiError(405, `${req.method} ${path}: use GET`, null, "method_not_allowed");
    const card = (id: string, root: string) => ({ id, object: "model", created: o.created, owned_by: "nano-reasoner", root, parent: id === api.model ? null : api.model, max_model_len: api.ctx });
    return sendJson(res, 200, { object: "list", data: [card(api.model, api.model), ...adapters.entries().map(([id, from]) => card(id, from ?? api.model))] });
  }
  const isLora = LORA_ROUTES.includes(path);
  if (!["/v1/completions", "/v1/chat/completions", ...LORA_ROUTES].includes(path) || (isLora && !adapters.runtime)) {
    const why = isLora ? " (runtime LoRA loading is off: start nr serve with --allow-runtime-lora)" : "";
    throw new ApiError(404, `no route ${req.method} ${path}${why}; this server has ${ROUTES}${adapters.runtime ? `, POST ${LORA_ROUTES.join(", POST ")}` : ""}`, null, "unknown_route");
  }
  if (req.method !== "POST") throw new ApiError(405, `${req.method} ${path}: use POST`, null, "method_not_allowed");
  const body = await jsonBody(req, o.maxBody);
  if (isLora) {
    const text = await (path === "/v1/load_lora_adapter" ? adapters.load(body) : adapters.unload(body));
    res.writeHead(200, { "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(text).toString() });
    return void res.end(text);
  }
  await api.completions(res, body, path === "/v1/chat/completions");
}

export async function serve(opts: ServeOptions): Promise<RunningServer> {
  const maxRows = opts.maxBatchRows ?? 32;
  if ((opts.adapters ?? []).includes(opts.model)) throw new Error(`serve: adapter name "${opts.model}" is also the base model's name; rename one`);
  if (!Number.isInteger(maxRows) || maxRows < 1) throw new Error(`serve: maxBatchRows must be a positive integer (got ${maxRows})`);
  const ctx = opts.contextLength ?? opts.generator.contextLength;
  opts.generator.checkCache(maxRows, ctx); // fail at start, not on the first request
  const scheduler = new Scheduler({ generator: opts.generator, maxBatchRows: maxRows, tmax: ctx, activate: opts.activate, log: opts.log });
  const adapters = new ServedAdapters(opts.model, opts.adapters ?? [], opts.runtimeLora, (fn) => scheduler.control(fn), opts.log);
  const api = new CompletionsApi(opts, adapters, scheduler);
  const routing = { maxBody: opts.maxBodyBytes ?? 1 << 20, authorized: bearerCheck(opts.apiKey), created: Math.floor(Date.now() / 1000) };
  const server = createServer((req, res) => {
    const t0 = performance.now();
    const path = (req.url ?? "/").split("?")[0].replace(/\/+$/, "") || "/";
    res.on("finish", () => opts.log?.(`${req.method} ${path} ${res.statusCode} ${(performance.now() - t0).toFixed(0)} ms`));
    route(req, res, path, api, routing).catch((err) => {
      const e = err instanceof ApiError ? err : new ApiError(500, `generation failed: ${(err as Error).message}`);
      if (e.status >= 500) opts.log?.(`${req.method} ${path}: ${e.message}`);
      if (res.headersSent) {
        // Mid-stream: report in the stream, then end it.
        if (!res.writableEnded) res.end(`data: ${JSON.stringify({ error: { message: e.message, type: e.type, param: e.param, code: e.code } })}\n\ndata: [DONE]\n\n`);
      } else sendError(res, e, e.status === 413 ? { connection: "close" } : e.status === 401 ? { "www-authenticate": "Bearer" } : {});
    });
  });
  const host = opts.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 8000, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const shown = host.includes(":") ? `[${host}]` : host === "0.0.0.0" ? "127.0.0.1" : host;
  return {
    url: `http://${shown}:${port}/v1`,
    port,
    server,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        void scheduler.close().then(() => server.closeAllConnections());
      });
    },
  };
}
