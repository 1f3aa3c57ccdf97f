// nr serve --allow-runtime-lora --api-key --lora-root on a generated model, with PEFT adapters written by our own
// saver: vLLM's load/unload routes with their request and response shapes and status codes, the adapter serving
// completions and chat exactly as the WebGpuGenerator does with the same adapter loaded by hand, an in-place load
// while a request runs (that request finishes on the old weights, the next one gets the new), the key on every route
// but /health, lora_path confined to the root, a body nested 10^5 levels deep refused with 400, and the start-up refusal of runtime LoRA on an open address without a key.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGpu } from "@nr/kernels";
import { Engine, GpuBackend } from "@nr/autograd";
import { generateModel, loadDecoder, loadTokenizer } from "@nr/model";
import { LoraModel, loadPeftAdapter, savePeftAdapter } from "@nr/lora";
import { randomizeAdapter } from "@nr/lora/testing";
import { WebGpuGenerator, type RunningServer } from "@nr/rollout";
import { startServe } from "./serve.js";

const KEY = `k-${Math.random().toString(36).slice(2)}`;
const PROMPT = "12 + 30 =";
const CHAT = [{ role: "user" as const, content: "3 + 4" }];
const SAMPLED = { n: 3, temperature: 1, seed: 4242, max_tokens: 24 };
let root: string;
let loras: string;
let srv: RunningServer;
const quiet = { log: () => {}, err: () => {} };
/** What the WebGpuGenerator gives with each adapter loaded by hand: greedy text, chat text, sampled token ids. */
const want: Record<string, { greedy: string; chat: string; sampled: number[][] }> = {};

/** A PEFT adapter of rank r with nonzero weights. */
async function writeAdapter(dir: string, r: number, seed: number) {
  const gpu = await createGpu();
  try {
    const { decoder } = await loadDecoder(new Engine(new GpuBackend(gpu)), join(root, "base"));
    const lora = new LoraModel(decoder);
    lora.addAdapter("a", { r, alpha: 2 * r });
    randomizeAdapter(lora, "a", seed);
    await savePeftAdapter(lora, "a", dir);
  } finally {
    gpu.destroy();
  }
}

async function reference(names: string[]) {
  const gpu = await createGpu();
  try {
    const e = new Engine(new GpuBackend(gpu));
    const { decoder } = await loadDecoder(e, join(root, "base"));
    const tok = await loadTokenizer(join(root, "base"));
    const gen = new WebGpuGenerator(e, decoder, tok, { contextLength: 64 });
    const lora = new LoraModel(decoder);
    for (const name of names) {
      await loadPeftAdapter(lora, join(loras, name), name);
      lora.select(name);
      const [[greedy]] = await gen.generateIds([{ promptIds: tok.encode(PROMPT), n: 1 }], { temperature: 0, maxNewTokens: 8 });
      const [[chat]] = await gen.generateIds([{ promptIds: tok.encodeChat(CHAT, { addGenerationPrompt: true }), n: 1 }], { temperature: 0, maxNewTokens: 8 });
      // A request's own seed: the server draws with (seed, hash(prompt) + sample), the same as a PromptSpec seed.
      const [sampled] = await gen.generateIds([{ promptIds: tok.encode(PROMPT), n: SAMPLED.n, seed: SAMPLED.seed }], { temperature: 1, maxNewTokens: SAMPLED.max_tokens });
      want[name] = { greedy: greedy.text, chat: chat.text, sampled: sampled.map((q) => q.tokenIds) };
    }
  } finally {
    gpu.destroy();
  }
}

beforeAll(async () => {
  delete process.env.NR_API_KEY;
  root = mkdtempSync(join(tmpdir(), "nr-serve-lora-"));
  loras = join(root, "loras");
  mkdirSync(loras);
  await generateModel(join(root, "base"), { architecture: "qwen2", hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, numKvHeads: 1, tieWordEmbeddings: true }, { seed: 5, dtype: "f32", init: { std: 0.3 } });
  await writeAdapter(join(loras, "one"), 4, 111);
  await writeAdapter(join(loras, "two"), 4, 222);
  await writeAdapter(join(loras, "wide"), 32, 333);
  await writeAdapter(join(root, "outside"), 4, 444);
  symlinkSync(join(root, "outside"), join(loras, "link"));
  mkdirSync(join(loras, "junk"));
  writeFileSync(join(loras, "junk", "notes.txt"), "not an adapter");
  await reference(["one", "two"]);
  srv = await startServe({ model: join(root, "base"), host: "127.0.0.1", port: 0, maxBatch: 8, maxBodyBytes: 1 << 20, contextLength: 64, quiet: true, allowRuntimeLora: true, maxLoraRank: 16, loraRoot: loras, apiKey: KEY }, quiet);
}, 120_000);
afterAll(async () => {
  await srv?.close();
  rmSync(root, { recursive: true, force: true });
});

const auth = { authorization: `Bearer ${KEY}` };
const post = (path: string, body: unknown, headers: Record<string, string> = auth) => fetch(srv.url + path, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
async function call(path: string, body: unknown): Promise<{ status: number; text: string; json: any }> {
  const r = await post(path, body);
  const text = await r.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* the load/unload success body is plain text */
  }
  return { status: r.status, text, json };
}
const complete = async (model: string, extra: Record<string, unknown> = {}) => (await call("/completions", { model, prompt: PROMPT, max_tokens: 8, temperature: 0, ...extra })).json;
const ids = (choice: any) => choice.logprobs.tokens.map((t: string) => Number(/^token_id:(\d+)$/.exec(t)![1]));

describe("nr serve: runtime LoRA (vLLM's routes), API key, lora root", () => {
  it("refuses every route but /health without the key, with 401 in OpenAI's error shape", async () => {
    expect((await fetch(srv.url.replace(/\/v1$/, "/health"))).status).toBe(200);
    const none = await fetch(`${srv.url}/models`);
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toBe("Bearer");
    expect(await none.json()).toEqual({ error: { message: expect.stringMatching(/Missing API key/), type: "invalid_request_error", param: null, code: "invalid_api_key" } });
    const wrong = await post("/completions", { prompt: PROMPT, max_tokens: 2 }, { authorization: `Bearer ${KEY}x` });
    expect(wrong.status).toBe(401);
    expect(((await wrong.json()) as any).error.message).toMatch(/Incorrect API key/);
    expect((await post("/load_lora_adapter", { lora_name: "x", lora_path: "one" }, {})).status).toBe(401);
    expect((await fetch(`${srv.url}/models`, { headers: auth })).status).toBe(200);
  });

  it("loads, serves (completions and chat), reloads in place and unloads an adapter with vLLM's shapes", async () => {
    const load = await call("/load_lora_adapter", { lora_name: "policy", lora_path: "one" });
    expect(load).toMatchObject({ status: 200, text: "Success: LoRA adapter 'policy' added successfully." });
    const models = ((await (await fetch(`${srv.url}/models`, { headers: auth })).json()) as any).data;
    expect(models.map((m: any) => m.id)).toEqual(["base", "policy"]);
    expect(models[1]).toMatchObject({ object: "model", parent: "base", root: join(loras, "one") });
    expect((await complete("policy")).choices[0].text).toBe(want.one.greedy);
    const chat = (await call("/chat/completions", { model: "policy", messages: CHAT, max_tokens: 8, temperature: 0 })).json;
    expect(chat.choices[0].message.content).toBe(want.one.chat);
    const sampled = await complete("policy", { ...SAMPLED, logprobs: 1, return_tokens_as_token_ids: true });
    expect(sampled.choices.map(ids)).toEqual(want.one.sampled);
    expect(want.one.greedy).not.toBe(want.two.greedy);

    const dup = await call("/load_lora_adapter", { lora_name: "policy", lora_path: "two" });
    expect(dup.status).toBe(400);
    expect(dup.json).toEqual({ error: { message: "The lora adapter 'policy' has already been loaded. If you want to load the adapter in place, set 'load_inplace' to True.", type: "InvalidUserInput", param: null, code: 400 } });
    expect((await complete("policy")).choices[0].text).toBe(want.one.greedy); // the refused load changed nothing
    expect((await call("/load_lora_adapter", { lora_name: "policy", lora_path: "two", load_inplace: true })).status).toBe(200);
    expect((await complete("policy")).choices[0].text).toBe(want.two.greedy);

    const unload = await call("/unload_lora_adapter", { lora_name: "policy" });
    expect(unload).toMatchObject({ status: 200, text: "Success: LoRA adapter 'policy' removed successfully." });
    expect((await call("/completions", { model: "policy", prompt: PROMPT, max_tokens: 2 })).status).toBe(404);
    const again = await call("/unload_lora_adapter", { lora_name: "policy" });
    expect(again.status).toBe(404);
    expect(again.json.error).toMatchObject({ message: "The lora adapter 'policy' cannot be found.", type: "NotFoundError", code: 404 });
  });

  it("answers bad loads with vLLM's status codes and keeps serving", async () => {
    const bad = async (body: unknown) => (await call("/load_lora_adapter", body)).json.error;
    expect(await bad({ lora_name: "x" })).toMatchObject({ message: "Both 'lora_name' and 'lora_path' must be provided.", type: "InvalidUserInput", code: 400 });
    expect(await bad({ lora_path: "one" })).toMatchObject({ type: "InvalidUserInput", code: 400 });
    expect(await bad({ lora_name: "x", lora_path: "wide" })).toMatchObject({ message: expect.stringMatching(/LoRA rank 32 is greater than max_lora_rank 16/), type: "BadRequestError", code: 400 });
    expect(await bad({ lora_name: "x", lora_path: "junk" })).toMatchObject({ message: expect.stringMatching(/^Loading lora x failed: No adapter found for .*junk/), type: "NotFoundError", code: 404 });
    expect(await bad({ lora_name: "x", lora_path: "nowhere" })).toMatchObject({ type: "NotFoundError", code: 404 });
    // Out of the root: by .., by an absolute path, by a symlink inside the root that points out.
    expect(await bad({ lora_name: "x", lora_path: "../outside" })).toMatchObject({ message: expect.stringMatching(/contains "\.\."/), code: 400 });
    expect(await bad({ lora_name: "x", lora_path: join(root, "outside") })).toMatchObject({ message: expect.stringMatching(/outside this server's --lora-root/), code: 400 });
    expect(await bad({ lora_name: "x", lora_path: "link" })).toMatchObject({ message: expect.stringMatching(/outside this server's --lora-root/), code: 400 });
    expect(await bad({ lora_name: "base", lora_path: "one" })).toMatchObject({ code: 400 });
    expect(await bad({ lora_name: "x", lora_path: "one", load_inplace: "yes" })).toMatchObject({ code: 400 });
    expect((await call("/unload_lora_adapter", {})).json.error).toMatchObject({ message: "'lora_name' needs to be provided to unload a LoRA adapter.", code: 400 });
    // A body nesting 10^5 levels (200 kB, under the 1 MiB body limit): 400 with a message, not a stack overflow.
    const nested = await fetch(`${srv.url}/completions`, { method: "POST", headers: { "content-type": "application/json", ...auth }, body: `{"prompt": ${"[".repeat(100_000)}${"]".repeat(100_000)}}` });
    expect(nested.status).toBe(400);
    expect(((await nested.json()) as any).error).toMatchObject({ message: expect.stringMatching(/more than 64 levels deep/), code: "invalid_json" });
    const models = ((await (await fetch(`${srv.url}/models`, { headers: auth })).json()) as any).data;
    expect(models.map((m: any) => m.id)).toEqual(["base"]);
    expect((await complete("base")).choices[0].text).toEqual(expect.any(String));
  });

  it("an in-place load while a request runs: that request finishes on the old weights, the next one gets the new", async () => {
    expect((await call("/load_lora_adapter", { lora_name: "live", lora_path: "one" })).status).toBe(200);
    const first = await post("/completions", { model: "live", prompt: PROMPT, ...SAMPLED, logprobs: 1, return_tokens_as_token_ids: true, stream: true });
    const reader = first.body!.getReader();
    const chunks: string[] = [new TextDecoder().decode((await reader.read()).value)]; // it is decoding now
    const reload = call("/load_lora_adapter", { lora_name: "live", lora_path: "two", load_inplace: true });
    for (let r = await reader.read(); !r.done; r = await reader.read()) chunks.push(new TextDecoder().decode(r.value));
    expect((await reload).status).toBe(200);
    const events = chunks.join("").split("\n\n").filter((l) => l.startsWith("data: {")).map((l) => JSON.parse(l.slice(6)));
    const streamed = Array.from({ length: SAMPLED.n }, () => [] as number[]);
    for (const ev of events) for (const c of ev.choices) streamed[c.index].push(...ids(c));
    expect(streamed).toEqual(want.one.sampled);
    const second = await complete("live", { ...SAMPLED, logprobs: 1, return_tokens_as_token_ids: true });
    expect(second.choices.map(ids)).toEqual(want.two.sampled);
  });

  it("refuses runtime LoRA on an address other machines reach unless there is a key", async () => {
    const open = { model: join(root, "base"), host: "0.0.0.0", port: 0, maxBatch: 2, maxBodyBytes: 1 << 16, allowRuntimeLora: true };
    await expect(startServe(open, quiet)).rejects.toThrow(/--allow-runtime-lora on --host 0\.0\.0\.0 .*needs --api-key/);
    await expect(startServe({ ...open, host: "127.0.0.1", loraRoot: join(root, "nope") }, quiet)).rejects.toThrow(/--lora-root .*nope: no such folder/);
    await expect(startServe({ ...open, host: "127.0.0.1", maxLoraRank: 0 }, quiet)).rejects.toThrow(/--max-lora-rank/);
    await expect(startServe({ ...open, apiKey: " " }, quiet)).rejects.toThrow(/--api-key is empty/);
  });
});
