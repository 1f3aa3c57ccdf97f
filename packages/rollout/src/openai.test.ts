// The HTTP backend against a local mock of the OpenAI /v1/completions API, started by the test.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { completeTokenIds, HttpError, loadLoraAdapter, OpenAIGenerator, postJson } from "./openai.js";

let server: Server;
let base = "";
const seen: Array<Record<string, unknown>> = [];
let failNext = 0;

beforeAll(async () => {
  server = createServer((req, res) => {
    let data = "";
    req.on("data", (c) => (data += c));
    req.on("end", () => {
      if (failNext > 0) {
        failNext--;
        res.writeHead(503).end("overloaded");
        return;
      }
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(data);
      } catch {
        res.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "malformed JSON" } }));
        return;
      }
      seen.push(body);
      if (body.model !== "policy") {
        res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: `The model \`${body.model}\` does not exist.` } }));
        return;
      }
      const n = body.n as number;
      // Deterministic fake: the answer depends on the prompt and the choice index; choices come back shuffled.
      const choices = Array.from({ length: n }, (_, i) => {
        const text = i === 0 ? "short \\boxed{4}" : "long ".repeat(body.max_tokens as number);
        const tokens = text.split(" ");
        return {
          index: i,
          text,
          finish_reason: i === 0 ? "stop" : "length",
          stop_reason: null,
          logprobs: { tokens, token_logprobs: tokens.map((_, k) => -0.1 * (k + 1)) },
        };
      }).reverse();
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ id: "cmpl-1", object: "text_completion", choices }));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

describe("OpenAIGenerator", () => {
  it("sends n, temperature, top_p, max_tokens, logprobs and the adapter name; returns completions in order", async () => {
    const gen = new OpenAIGenerator({ baseUrl: base, model: "policy", concurrency: 2 });
    const out = await gen.generate([
      { prompt: "What is 2+2?", n: 3, temperature: 0.8, topP: 0.95, maxNewTokens: 4, seed: 7 },
      { prompt: "Again?", n: 2, temperature: 0, maxNewTokens: 2, stop: ["</answer>"] },
    ]);
    expect(seen[0]).toMatchObject({ model: "policy", prompt: "What is 2+2?", n: 3, temperature: 0.8, top_p: 0.95, max_tokens: 4, seed: 7, logprobs: 1 });
    expect(seen[1]).toMatchObject({ stop: ["</answer>"], top_p: 1 });
    expect(out).toHaveLength(2);
    expect(out[0].completions.map((c) => c.finishReason)).toEqual(["eos", "length", "length"]);
    const first = out[0].completions[0] as { text: string; logprobs?: number[]; tokens?: number };
    expect(first.text).toBe("short \\boxed{4}");
    expect(first.logprobs).toEqual([-0.1, -0.2]);
    expect(first.tokens).toBe(2);
  });

  it("retries a 503 and then succeeds", async () => {
    failNext = 2;
    const gen = new OpenAIGenerator({ baseUrl: base, model: "policy", retryDelayMs: 1 });
    const out = await gen.generate([{ prompt: "x", n: 1, temperature: 1, maxNewTokens: 1 }]);
    expect(out[0].completions).toHaveLength(1);
  });

  it("reports a 4xx with the server's message and does not retry", async () => {
    const gen = new OpenAIGenerator({ baseUrl: base, model: "no-such-adapter", retryDelayMs: 1 });
    const before = seen.length;
    await expect(gen.generate([{ prompt: "x", n: 1, temperature: 1, maxNewTokens: 1 }])).rejects.toThrow(/HTTP 404.*no-such-adapter.*does not exist/);
    expect(seen.length - before).toBe(1);
  });

  it("fails clearly when the server is unreachable, and on bad options", async () => {
    const gen = new OpenAIGenerator({ baseUrl: "http://127.0.0.1:1/v1", model: "policy", retries: 1, retryDelayMs: 1 });
    await expect(gen.generate([{ prompt: "x", n: 1, temperature: 1, maxNewTokens: 1 }])).rejects.toThrow(/failed after 2 attempts/);
    expect(() => new OpenAIGenerator({ baseUrl: "localhost:8000", model: "m" })).toThrow(/must start with http/);
    await expect(new OpenAIGenerator({ baseUrl: base, model: "policy" }).generate([{ prompt: "x", n: 0, temperature: 1, maxNewTokens: 1 }])).rejects.toThrow(/n must be a positive integer/);
  });
});

describe("completeTokenIds / loadLoraAdapter (vLLM's shapes, against a mock)", () => {
  let mock: Server;
  let url = "";
  const bodies: Array<Record<string, unknown>> = [];
  beforeAll(async () => {
    mock = createServer((req, res) => {
      let data = "";
      req.on("data", (c) => (data += c));
      req.on("end", () => {
        const body = JSON.parse(data);
        bodies.push(body);
        if (req.url === "/v1/load_lora_adapter") return void res.writeHead(200).end(`Success: LoRA adapter '${body.lora_name}' added successfully.`);
        // vLLM lists the EOS it stopped on (id 2 here) among the returned tokens; a stop string shows in stop_reason.
        const ids = (xs: number[]) => xs.map((x) => (body.model === "plain" ? `tok${x}` : `token_id:${x}`));
        const choices = [
          { index: 1, text: "d e f", finish_reason: "length", stop_reason: null, logprobs: { tokens: ids([7, 8, 9]), token_logprobs: [-1, -2, -3] } },
          { index: 0, text: "a b", finish_reason: "stop", stop_reason: null, logprobs: { tokens: ids([5, 6, 2]), token_logprobs: [-0.5, -0.25, -0.125] } },
          { index: 2, text: "g", finish_reason: "stop", stop_reason: "\n\n", logprobs: { tokens: ids([11, 12]), token_logprobs: [-0.1, null] } },
        ];
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ choices }));
      });
    });
    await new Promise<void>((r) => mock.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(mock.address() as AddressInfo).port}/v1`;
  });
  afterAll(() => new Promise<void>((r) => mock.close(() => r())));

  it("sends the prompt as ids with n, seed, logprobs and return_tokens_as_token_ids; parses ids, drops a listed EOS", async () => {
    const conn = { baseUrl: url, apiKey: "k", timeoutMs: 5000 };
    const out = await completeTokenIds(conn, { model: "nr-policy", promptIds: [1, 2, 3], n: 3, maxNewTokens: 3, temperature: 1, seed: 42 }, [2]);
    expect(bodies.at(-1)).toEqual({ model: "nr-policy", prompt: [1, 2, 3], n: 3, max_tokens: 3, temperature: 1, top_p: 1, seed: 42, logprobs: 1, return_tokens_as_token_ids: true });
    expect(out).toEqual([
      { tokenIds: [5, 6], logprobs: [-0.5, -0.25], text: "a b", finishReason: "eos" },
      { tokenIds: [7, 8, 9], logprobs: [-1, -2, -3], text: "d e f", finishReason: "length" },
      { tokenIds: [11, 12], logprobs: [-0.1, Number.NaN], text: "g", finishReason: "stop" },
    ]);
    await expect(completeTokenIds(conn, { model: "plain", promptIds: [1], n: 3, maxNewTokens: 3, temperature: 1, seed: 1 })).rejects.toThrow(/"tok5", not "token_id:<id>"/);
    await expect(completeTokenIds(conn, { model: "x", promptIds: [1], n: 2, maxNewTokens: 3, temperature: 1, seed: 1 })).rejects.toThrow(/asked for n=2 completions, got 3/);
    expect(await loadLoraAdapter(conn, { lora_name: "nr-policy", lora_path: "/a", load_inplace: true })).toBe("Success: LoRA adapter 'nr-policy' added successfully.");
    expect(bodies.at(-1)).toEqual({ lora_name: "nr-policy", lora_path: "/a", load_inplace: true });
  });

  it("a server that is not there is an HttpError with status 0 (no answer), not a 4xx", async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const err = await postJson({ baseUrl: `http://127.0.0.1:${port}/v1`, timeoutMs: 5000 }, "/completions", "{}").catch((e) => e);
    expect(err).toBeInstanceOf(HttpError);
    expect(err.status).toBe(0);
    expect(err.message).toMatch(/ECONNREFUSED/);
  });

  it("a server that takes the request and never answers times out as an HttpError with status 0", async () => {
    const silent = createServer(() => {}); // holds every request open
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    try {
      const t0 = performance.now();
      const err = await postJson({ baseUrl: `http://127.0.0.1:${(silent.address() as AddressInfo).port}/v1`, timeoutMs: 300 }, "/completions", "{}").catch((e) => e);
      expect(err).toBeInstanceOf(HttpError);
      expect(err.status).toBe(0);
      expect(err.message).toMatch(/no answer within 300 ms/);
      expect(performance.now() - t0).toBeLessThan(5000);
    } finally {
      silent.closeAllConnections();
      silent.close();
    }
  });
});
