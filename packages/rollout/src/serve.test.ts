// The OpenAI-compatible server over a generated checkpoint: our OpenAIGenerator talking to it gets exactly what the
// WebGpuGenerator gives directly (greedy, and sampled with a seed); chat uses the chat template; streams concatenate
// to the non-streamed text; requests for an adapter run with that adapter only; bad requests get OpenAI-shaped 4xx
// errors without disturbing a request in flight.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGpu, type Gpu } from "@nr/kernels";
import { Engine, GpuBackend, scale, type Tensor } from "@nr/autograd";
import { generateModel, loadDecoder, loadTokenizer, type Decoder, type ModelTokenizer, type Projection } from "@nr/model";
import { WebGpuGenerator } from "./webgpu.js";
import { OpenAIGenerator } from "./openai.js";
import { jsonDepth, serve, type RunningServer } from "./serve.js";

let gpu: Gpu;
let dir: string;
let decoder: Decoder;
let tok: ModelTokenizer;
let gen: WebGpuGenerator;
let srv: RunningServer;
const CTX = 96;
// A stand-in for a LoRA adapter: "doubled" scales layer 0's q and v projections when active.
let doubled = false;
const activations: (string | null)[] = [];
class Scaled implements Projection {
  constructor(readonly base: Projection) {}
  get outFeatures() {
    return this.base.outFeatures;
  }
  get inFeatures() {
    return this.base.inFeatures;
  }
  forward(x: Tensor): Tensor {
    const y = this.base.forward(x);
    return doubled ? scale(y, 2) : y;
  }
}

beforeAll(async () => {
  gpu = await createGpu();
  dir = await mkdtemp(join(tmpdir(), "nr-serve-"));
  await generateModel(dir, { architecture: "qwen2", hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, tieWordEmbeddings: true }, { seed: 7, dtype: "f32", init: { std: 0.3 } });
  const engine = new Engine(new GpuBackend(gpu));
  decoder = (await loadDecoder(engine, dir)).decoder;
  decoder.weights.layers[0].q = new Scaled(decoder.weights.layers[0].q);
  decoder.weights.layers[0].v = new Scaled(decoder.weights.layers[0].v);
  tok = await loadTokenizer(dir);
  gen = new WebGpuGenerator(engine, decoder, tok, { contextLength: CTX });
  srv = await serve({
    generator: gen,
    tokenizer: tok,
    model: "tiny",
    adapters: ["doubled"],
    activate: (a) => {
      activations.push(a);
      doubled = a === "doubled";
    },
    port: 0,
    maxTokens: 40,
    maxBatchRows: 8,
    maxBodyBytes: 4096,
  });
});
afterAll(async () => {
  await srv?.close();
  gpu?.destroy();
  await rm(dir, { recursive: true, force: true });
});

const post = (path: string, body: unknown) => fetch(srv.url + path, { method: "POST", headers: { "content-type": "application/json" }, body: typeof body === "string" ? body : JSON.stringify(body) });
async function postJson(path: string, body: unknown): Promise<{ status: number; json: any }> {
  const r = await post(path, body);
  return { status: r.status, json: await r.json() };
}
/** SSE events of a streamed response, [DONE] excluded (checked to be last). */
async function events(r: Response): Promise<any[]> {
  expect(r.headers.get("content-type")).toMatch(/text\/event-stream/);
  const text = await r.text();
  const datas = text.split("\n\n").filter(Boolean).map((l) => l.replace(/^data: /, ""));
  expect(datas[datas.length - 1]).toBe("[DONE]");
  return datas.slice(0, -1).map((d) => JSON.parse(d));
}
const direct = async (prompt: string, o: { n: number; temperature: number; maxNewTokens: number; seed?: number; stop?: string[] }, adapter = false) => {
  doubled = adapter;
  try {
    const [r] = await gen.generate([{ prompt, ...o }]);
    return r.completions as unknown as { text: string; finishReason: string; tokens: number; logprobs: number[] }[];
  } finally {
    doubled = false;
  }
};

describe("nr serve", () => {
  it("lists the base model and its adapters", async () => {
    const r = await fetch(srv.url + "/models");
    const j = (await r.json()) as { object: string; data: { id: string; max_model_len: number }[] };
    expect(j.object).toBe("list");
    expect(j.data.map((m: { id: string }) => m.id)).toEqual(["tiny", "doubled"]);
    expect(j.data[0].max_model_len).toBe(CTX);
  });

  it("OpenAIGenerator against the server equals the WebGpuGenerator directly (greedy and seeded sampling)", async () => {
    const client = new OpenAIGenerator({ baseUrl: srv.url, model: "tiny", concurrency: 3 });
    const reqs = [
      { prompt: "3 + 4 =", n: 2, temperature: 0, maxNewTokens: 8 },
      { prompt: "Tom has 12 apples.", n: 1, temperature: 0, maxNewTokens: 5 },
      { prompt: "Sam buys 3 pens", n: 3, temperature: 0.9, topP: 0.95, maxNewTokens: 6, seed: 42 },
    ];
    const got = await client.generate(reqs);
    for (let i = 0; i < reqs.length; i++) {
      const want = await direct(reqs[i].prompt, reqs[i]);
      const g = got[i].completions as unknown as { text: string; finishReason: string; tokens: number; logprobs: number[] }[];
      expect(g.map((c) => c.text), `request ${i}`).toEqual(want.map((c) => c.text));
      expect(g.map((c) => c.finishReason)).toEqual(want.map((c) => c.finishReason));
      expect(g.map((c) => c.tokens)).toEqual(want.map((c) => c.tokens));
      g.forEach((c, k) => c.logprobs.forEach((lp, j) => expect(lp).toBeCloseTo(want[k].logprobs[j], 6)));
    }
    // Greedy log-probs are 0 (a point mass); sampled ones are negative.
    expect((got[0].completions[0] as unknown as { logprobs: number[] }).logprobs.every((v) => v === 0)).toBe(true);
    expect((got[2].completions[0] as unknown as { logprobs: number[] }).logprobs.some((v) => v < 0)).toBe(true);
  });

  it("a request for an adapter runs with it, a request for the base without it, even when sent together", async () => {
    const prompt = "What is 7 * 6?";
    const [base, ad] = await Promise.all([
      postJson("/completions", { model: "tiny", prompt, max_tokens: 8, temperature: 0 }),
      postJson("/completions", { model: "doubled", prompt, max_tokens: 8, temperature: 0 }),
    ]);
    expect(base.status).toBe(200);
    expect(ad.status).toBe(200);
    expect(base.json.choices[0].text).toBe((await direct(prompt, { n: 1, temperature: 0, maxNewTokens: 8 }))[0].text);
    expect(ad.json.choices[0].text).toBe((await direct(prompt, { n: 1, temperature: 0, maxNewTokens: 8 }, true))[0].text);
    expect(ad.json.choices[0].text).not.toBe(base.json.choices[0].text);
    expect(ad.json.model).toBe("doubled");
    expect(activations).toContain("doubled");
  });

  it("repetition_penalty reaches the sampler", async () => {
    // A prompt where the penalty changes the greedy completion (found with the generator directly).
    const texts = ["x = x = x = x", "1 1 1 1", "abcabc", "Tom Tom Tom", "0000", "zz zz", "==", "a+a+a", "))))", "no no no", "3*3*3", "qqq"];
    const o = { temperature: 0, maxNewTokens: 8 };
    const plain = await gen.generateIds(texts.map((t) => ({ promptIds: tok.encode(t), n: 1 })), o);
    const pen = await gen.generateIds(texts.map((t) => ({ promptIds: tok.encode(t), n: 1, repetitionPenalty: 3 })), o);
    const i = texts.findIndex((_, k) => pen[k][0].tokenIds.join() !== plain[k][0].tokenIds.join());
    expect(i, "the penalty changed no candidate's greedy completion").toBeGreaterThanOrEqual(0);
    const body = { model: "tiny", prompt: texts[i], max_tokens: 8, temperature: 0, logprobs: 0 };
    const tokens = async (b: object) => (await postJson("/completions", b)).json.choices[0].logprobs.tokens as string[];
    expect(await tokens({ ...body, repetition_penalty: 3 })).toEqual(pen[i][0].tokenIds.map((t) => tok.decode([t])));
    expect(await tokens(body)).toEqual(plain[i][0].tokenIds.map((t) => tok.decode([t])));
    expect((await postJson("/completions", { ...body, repetition_penalty: 0 })).status).toBe(400);
  });

  it("chat uses the chat template with the generation prompt; usage counts tokens", async () => {
    const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "2+2?" }];
    const { status, json } = await postJson("/chat/completions", { model: "tiny", messages, max_tokens: 6, temperature: 0, logprobs: true });
    expect(status).toBe(200);
    const ids = tok.encodeChat(messages, { addGenerationPrompt: true });
    const [[want]] = await gen.generateIds([{ promptIds: ids, n: 1 }], { temperature: 0, maxNewTokens: 6 });
    expect(json.object).toBe("chat.completion");
    expect(json.choices[0].message).toEqual({ role: "assistant", content: want.text });
    expect(json.choices[0].logprobs.content.map((c: { token: string }) => c.token)).toEqual(want.tokenIds.map((t) => tok.decode([t])));
    expect(json.usage).toEqual({ prompt_tokens: ids.length, completion_tokens: want.tokenIds.length, total_tokens: ids.length + want.tokenIds.length });
  });

  it("streams: chunks per choice concatenate to the non-streamed text, a stop string is never sent, [DONE] ends it", async () => {
    const body = { model: "tiny", prompt: "Tom has 12 apples and eats", n: 2, max_tokens: 12, temperature: 0.8, seed: 3, logprobs: 1 };
    const whole = (await postJson("/completions", body)).json;
    // Stop at a piece of the first choice's text, to exercise the held-back text.
    // (The random model writes mostly partial UTF-8, decoded as U+FFFD: take two whole characters.)
    const t0: string = whole.choices[0].text;
    const k = [...t0].findIndex((_, i) => i >= 1 && i + 2 <= t0.length && !t0.slice(i, i + 2).includes("\uFFFD"));
    expect(k, `no stop string candidate in ${JSON.stringify(t0)}`).toBeGreaterThan(0);
    const stop = t0.slice(k, k + 2);
    const plain = (await postJson("/completions", { ...body, stop })).json;
    const evs = await events(await post("/completions", { ...body, stop, stream: true, stream_options: { include_usage: true } }));
    for (const idx of [0, 1]) {
      const mine = evs.filter((e) => e.choices[0]?.index === idx);
      expect(mine.map((e) => e.choices[0].text).join("")).toBe(plain.choices[idx].text);
      expect(mine.slice(0, -1).every((e) => e.choices[0].finish_reason === null)).toBe(true);
      expect(mine[mine.length - 1].choices[0].finish_reason).toBe(plain.choices[idx].finish_reason);
      expect(mine.flatMap((e) => e.choices[0].logprobs?.token_logprobs ?? [])).toEqual(plain.choices[idx].logprobs.token_logprobs);
    }
    expect(plain.choices[0].text).toBe(t0.slice(0, t0.indexOf(stop)));
    expect(plain.choices[0]).toMatchObject({ finish_reason: "stop", stop_reason: stop });
    expect(evs[evs.length - 1].usage.completion_tokens).toBe(plain.usage.completion_tokens);

    const chat = await events(await post("/chat/completions", { model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 6, temperature: 0, stream: true }));
    const plainChat = (await postJson("/chat/completions", { model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 6, temperature: 0 })).json;
    expect(chat[0].object).toBe("chat.completion.chunk");
    expect(chat[0].choices[0].delta.role).toBe("assistant");
    expect(chat.map((e) => e.choices[0].delta.content ?? "").join("")).toBe(plainChat.choices[0].message.content);
  });

  it("bad requests get OpenAI-shaped 4xx errors and do not disturb a request in flight", async () => {
    const long = { model: "tiny", prompt: "Sam buys 3 pens at 2 dollars", n: 4, max_tokens: 30, temperature: 0.7, seed: 9 };
    const alone = (await postJson("/completions", long)).json;
    const inFlight = postJson("/completions", long);
    const huge = JSON.stringify({ model: "tiny", prompt: "x".repeat(5000) });
    const cases: [string, unknown, number, RegExp][] = [
      ["/completions", "{not json", 400, /malformed JSON/],
      ["/completions", "[1, 2]", 400, /must be a JSON object/],
      ["/completions", huge, 413, /larger than this server's limit of 4096 bytes/],
      ["/completions", { model: "nope", prompt: "x" }, 404, /The model `nope` does not exist\. Served: `tiny`, `doubled`/],
      ["/completions", { model: "tiny", prompt: "x".repeat(80), max_tokens: 20 }, 400, /maximum context length is 96 tokens\. However, you requested 100 tokens \(80 in the prompt, 20 for the completion\)/],
      ["/completions", { model: "tiny", prompt: "x", max_tokens: 41 }, 400, /max_tokens=41 is above this server's limit of 40/],
      ["/completions", { model: "tiny", prompt: "x", n: "2" }, 400, /n must be an integer in \[1, 8\] \(got "2"\)/],
      ["/completions", { model: "tiny", prompt: "x", n: 9 }, 400, /n must be an integer in \[1, 8\]/],
      ["/completions", { model: "tiny", prompt: "x", temperature: "hot" }, 400, /temperature must be a number/],
      ["/completions", { model: "tiny", prompt: "x", top_p: 0 }, 400, /top_p must be a number in \(0, 1\]/],
      ["/completions", { model: "tiny", prompt: "x", stop: [1] }, 400, /stop must be at most 16 non-empty strings/],
      ["/completions", { model: "tiny", prompt: 5 }, 400, /prompt must be a string/],
      ["/completions", { model: "tiny", prompt: "" }, 400, /prompt is empty/],
      ["/completions", { model: "tiny", prompt: [[1, 2], [99999]] }, 400, /prompt\[1\] holds token id 99999, outside the vocabulary/],
      ["/completions", { model: "tiny", prompt: "x", logprobs: 5 }, 400, /logprobs=5 is not supported/],
      ["/completions", { model: "tiny", prompt: "x", presence_penalty: 0.5 }, 400, /presence_penalty=0.5 is not supported/],
      ["/completions", { model: "tiny", prompt: "x", seed: -1 }, 400, /seed must be an integer/],
      ["/chat/completions", { model: "tiny", messages: [] }, 400, /messages must be a non-empty list/],
      ["/chat/completions", { model: "tiny", messages: [{ role: "user", content: [{ type: "image_url" }] }] }, 400, /only \{type: "text", text\} parts are supported/],
      ["/nope", {}, 404, /no route POST \/v1\/nope/],
      // vLLM without VLLM_ALLOW_RUNTIME_LORA_UPDATING has no such routes: 404.
      ["/load_lora_adapter", { lora_name: "a", lora_path: "/tmp" }, 404, /runtime LoRA loading is off/],
      ["/unload_lora_adapter", { lora_name: "a" }, 404, /runtime LoRA loading is off/],
      ["/completions", `{"model": "tiny", "prompt": ${"[".repeat(65)}1${"]".repeat(65)}}`, 400, /nests arrays\/objects more than 64 levels deep/],
    ];
    const answers = await Promise.all(cases.map(([path, body]) => postJson(path, body)));
    answers.forEach((a, i) => {
      const [path, , status, msg] = cases[i];
      expect(a.status, `${path} case ${i}`).toBe(status);
      expect(a.json.error.message, `case ${i}`).toMatch(msg);
      expect(a.json.error.type).toBe(status === 404 ? "not_found_error" : "invalid_request_error");
    });
    const wrongMethod = await fetch(srv.url + "/completions");
    expect(wrongMethod.status).toBe(405);
    const done = await inFlight;
    expect(done.status).toBe(200);
    expect(done.json.choices.map((c: { text: string }) => c.text)).toEqual(alone.choices.map((c: { text: string }) => c.text));
  });

  it("jsonDepth counts array/object nesting and ignores brackets inside strings", () => {
    expect(jsonDepth("1")).toBe(0);
    expect(jsonDepth('{"a": [1, {"b": []}], "c": {}}')).toBe(4);
    expect(jsonDepth('{"a": "[[[{{{\\"]]]"}')).toBe(1); // an escaped quote does not end the string
    expect(jsonDepth("[".repeat(100_000) + "]".repeat(100_000), 64)).toBe(65); // stops counting past the limit
  });

  it("a client that disconnects mid-stream frees its rows; the server keeps serving", async () => {
    const ctrl = new AbortController();
    const res = await fetch(srv.url + "/completions", { method: "POST", body: JSON.stringify({ model: "tiny", prompt: "b", n: 8, max_tokens: 40, temperature: 1, seed: 2, stream: true }), signal: ctrl.signal });
    const reader = res.body!.getReader();
    await reader.read(); // the first chunk arrived: the job is in the batch
    ctrl.abort();
    const after = await postJson("/completions", { model: "tiny", prompt: "3 + 4 =", max_tokens: 4, temperature: 0 });
    expect(after.status).toBe(200);
    // The batch the cancelled request was in stopped decoding it: far fewer than its 8 × 40 tokens were sampled.
    expect(gen.lastTiming!.decodeTokens).toBeLessThan(100);
    expect(after.json.choices[0].text).toBe((await direct("3 + 4 =", { n: 1, temperature: 0, maxNewTokens: 4 }))[0].text);
  });
});
