// Remote rollouts against two real `nr serve --allow-runtime-lora --api-key` processes on 127.0.0.1 serving the
// committed tiny model: the adapter goes out through vLLM's load route, the samples that come back equal the local
// WebGpuGenerator's with the same per-prompt seeds, a server that breaks mid-step has its prompts served by the other,
// the key and the lora root are enforced, and `nr train` with rl.rollout.servers finishes a few RL steps — with one
// server killed after the first — without writing the key into the run folder; the same run on one server, killed
// and resumed, ends with the same adapter bytes.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { createServer, type Server } from "node:http";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createGpu, type Gpu } from "@nr/kernels";
import { Engine, GpuBackend } from "@nr/autograd";
import { loadDecoder, loadTokenizer, type ModelTokenizer } from "@nr/model";
import { LoraModel } from "@nr/lora";
import { randomizeAdapter } from "@nr/lora/testing";
import { HttpError, loadLoraAdapter, WebGpuGenerator } from "@nr/rollout";
import { generateSynthetic } from "@nr/data";
import { resolveConfig } from "../run/index.js";
import { resumeConfig } from "../run/resume.js";
import { runPipeline } from "./pipeline.js";
import { promptSeed, RemoteRollout, REMOTE_ADAPTER_NAME, serverBaseUrl, takeRolloutKey } from "./remote-rollout.js";

const CLI = fileURLToPath(new URL("../cli.ts", import.meta.url));
const MODEL = fileURLToPath(new URL("../../../../models/nr-tiny-math", import.meta.url));
const KEY = `key-${Math.random().toString(36).slice(2)}`;

interface Worker {
  proc: ChildProcess;
  url: string;
  log: string[];
}

/** Start `nr serve` on a free port and resolve with its URL once it listens. */
function startWorker(root: string): Promise<Worker> {
  const args = ["--import", "tsx", CLI, "serve", "--model", MODEL, "--port", "0", "--allow-runtime-lora", "--api-key", KEY, "--lora-root", root, "--max-batch", "16", "--context-length", "128"];
  const proc = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NR_API_KEY: "" } });
  const log: string[] = [];
  return new Promise((resolvePromise, reject) => {
    const onData = (d: Buffer) => {
      log.push(...d.toString().split("\n").filter(Boolean));
      const m = log.map((l) => /listening on (http:\/\/\S+)/.exec(l)).find(Boolean);
      if (m) resolvePromise({ proc, url: m[1], log });
    };
    proc.stdout!.on("data", onData);
    proc.stderr!.on("data", onData);
    proc.on("exit", (code) => reject(new Error(`nr serve exited with ${code} before listening:\n${log.join("\n")}`)));
  });
}

let root: string;
let workers: Worker[] = [];
let gpu: Gpu;
let tok: ModelTokenizer;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "nr-remote-"));
  workers = await Promise.all([startWorker(root), startWorker(root)]);
  gpu = await createGpu();
  tok = await loadTokenizer(MODEL);
}, 120_000);
afterAll(async () => {
  for (const w of workers) w.proc.kill("SIGKILL");
  gpu?.destroy();
  rmSync(root, { recursive: true, force: true });
});

const prompts = (n: number, seed: number, G: number) => generateSynthetic({ count: n, seed, split: "train", minSteps: 1, maxSteps: 1, maxOperand: 12, maxValue: 40 }).map((r) => ({ promptIds: tok.encode(`Q: ${r.problem}\nA: `), n: G }));

/** An HTTP server that takes the adapter, then drops every completions connection: a worker dying mid-step. */
async function brokenWorker(): Promise<{ server: Server; url: string; completions: number }> {
  const state = { server: null as unknown as Server, url: "", completions: 0 };
  state.server = createServer((req, res) => {
    if (req.url?.endsWith("/load_lora_adapter")) return void res.end("Success: LoRA adapter 'nr-policy' added successfully.");
    state.completions++;
    req.socket.destroy();
  });
  await new Promise<void>((r) => state.server.listen(0, "127.0.0.1", r));
  state.url = `http://127.0.0.1:${(state.server.address() as AddressInfo).port}/v1`;
  return state;
}

/** `nr train` in a child process (child-run.ts) with the key in NR_API_KEY; killed with SIGKILL once `killWhen` holds. */
function runChild(args: string[], killWhen?: () => boolean): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }> {
  const child = fileURLToPath(new URL("./child-run.ts", import.meta.url));
  return new Promise((resolvePromise, reject) => {
    const p = spawn(process.execPath, ["--import", "tsx", child, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NR_API_KEY: KEY } });
    let out = "";
    p.stdout!.on("data", (d) => (out += d));
    p.stderr!.on("data", (d) => (out += d));
    const timer = killWhen ? setInterval(() => killWhen() && p.kill("SIGKILL"), 20) : undefined;
    p.on("error", reject);
    p.on("exit", (code, signal) => {
      clearInterval(timer);
      resolvePromise({ code, signal, out });
    });
  });
}

describe("remote rollouts on two nr serve workers", () => {
  it("the servers' samples equal the local generator's with the same per-prompt seeds; a broken server's prompts go to the other", async () => {
    const e = new Engine(new GpuBackend(gpu));
    const { decoder } = await loadDecoder(e, MODEL);
    const lora = new LoraModel(decoder);
    lora.addAdapter("policy", { r: 4, alpha: 8, seed: 5 });
    randomizeAdapter(lora, "policy", 99, 0.6); // a policy that differs from the base (PEFT's init has B = 0)
    const logs: string[] = [];
    const opts = { apiKey: KEY, adapterDir: join(root, "adapter"), baseModel: MODEL, timeoutMs: 60_000, stopTokenIds: tok.stopTokenIds, recordFile: join(root, "records.jsonl"), log: (l: string) => logs.push(l) };
    const ps = prompts(6, 11, 4);
    const sampling = { temperature: 1, maxNewTokens: 24, seed: 77 };
    const remote = new RemoteRollout({ ...opts, servers: workers.map((w) => w.url) });
    await remote.publish(lora, "policy", 0);
    const got = await remote.generateIds(ps, sampling);
    lora.select("policy");
    const gen = new WebGpuGenerator(e, decoder, tok);
    const local = await gen.generateIds(ps.map((p, i) => ({ ...p, seed: promptSeed(sampling.seed, i) })), sampling);
    expect(got.map((g) => g.map((q) => q.tokenIds))).toEqual(local.map((g) => g.map((q) => q.tokenIds)));
    expect(got.map((g) => g.map((q) => q.text))).toEqual(local.map((g) => g.map((q) => q.text)));
    expect(got.map((g) => g.map((q) => q.finishReason))).toEqual(local.map((g) => g.map((q) => q.finishReason)));
    got.flat().forEach((q, k) => q.logprobs.forEach((lp, j) => expect(lp).toBeCloseTo(local.flat()[k].logprobs[j], 5)));
    // The base alone samples other tokens: the servers really used the adapter.
    lora.select(null);
    const bare = await gen.generateIds(ps.map((p, i) => ({ ...p, seed: promptSeed(sampling.seed, i) })), sampling);
    lora.select("policy");
    expect(bare.map((g) => g.map((q) => q.tokenIds))).not.toEqual(local.map((g) => g.map((q) => q.tokenIds)));
    // Both servers loaded the adapter and answered completions; every request is recorded with its seed.
    for (const w of workers) {
      expect(w.log.some((l) => /POST \/v1\/load_lora_adapter 200/.test(l)), w.log.join("\n")).toBe(true);
      expect(w.log.some((l) => /POST \/v1\/completions 200/.test(l)), w.log.join("\n")).toBe(true);
    }
    const records = readFileSync(opts.recordFile, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(records.map((r) => r.seed).sort()).toEqual(ps.map((_, i) => promptSeed(77, i)).sort());

    // A server that takes the adapter, then drops its connections: its prompts are answered by the other one.
    const broken = await brokenWorker();
    try {
      const failover = new RemoteRollout({ ...opts, servers: [broken.url, workers[0].url] });
      await failover.publish(lora, "policy", 1);
      const again = await failover.generateIds(ps, sampling);
      expect(again.map((g) => g.map((q) => q.tokenIds))).toEqual(local.map((g) => g.map((q) => q.tokenIds)));
      expect(broken.completions).toBeGreaterThan(0);
      expect(failover.stepStats()).toMatchObject({ rollout_servers_live: 1, rollout_servers_failed: 1, rollout_requests: 6 });
      expect(logs.some((l) => l.includes(`${broken.url} failed`))).toBe(true);
      // No server left: the error names every URL.
      const dead = new RemoteRollout({ ...opts, servers: [broken.url] });
      await dead.publish(lora, "policy", 2);
      await expect(dead.generateIds(ps.slice(0, 1), sampling)).rejects.toThrow(new RegExp(`every server failed at step 3:\\n  ${broken.url.replace(/[.]/g, "\\.")}: `));
    } finally {
      broken.server.close();
    }
  }, 180_000);

  it("refuses a request without the key and a lora_path outside --lora-root", async () => {
    const url = workers[0].url;
    const res = await fetch(`${url}/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: REMOTE_ADAPTER_NAME, prompt: [1, 2], max_tokens: 2 }) });
    expect(res.status).toBe(401);
    expect(((await res.json()) as any).error.code).toBe("invalid_api_key");
    const err = await loadLoraAdapter({ baseUrl: url, apiKey: KEY, timeoutMs: 10_000 }, { lora_name: "x", lora_path: MODEL, load_inplace: true }).catch((e) => e);
    expect(err).toBeInstanceOf(HttpError);
    expect(err.status).toBe(400);
    expect(err.message).toMatch(/outside this server's --lora-root/);
    expect(serverBaseUrl("http://h:1")).toBe("http://h:1/v1");
    expect(serverBaseUrl("http://h:1/v1/")).toBe("http://h:1/v1");
  });

  it("nr train --rl.rollout.servers runs RL on the servers; with one killed after step 1 it finishes on the other", async () => {
    const servers = workers.map((w) => w.url).join(",");
    // The word-problem preset: its base (MODEL) on its own task.
    const config = resolveConfig({
      preset: "word-problems",
      overrides: [
        ["name", "remote"], ["data.trainSize", 16], ["data.evalSize", 4], ["eval.n", 4], ["eval.maxNewTokens", 8], ["eval.samples", 0], ["eval.every", 0],
        ["sft.enabled", false], ["rl.steps", 3], ["rl.G", 4], ["rl.promptsPerStep", 2], ["rl.maxNewTokens", 16], ["checkpoint.every", 1],
        ["rl.rollout.servers", servers], ["rl.rollout.apiKey", KEY], ["rl.rollout.tisCap", 2], ["rl.rollout.timeoutS", 60],
      ],
      cwd: root,
    });
    expect(config.rl.rollout).toMatchObject({ servers: workers.map((w) => w.url), tisCap: 2, timeoutS: 60 });
    const lines: string[] = [];
    const { runDir } = await runPipeline(config, {
      cwd: root,
      log: (l) => {
        lines.push(l);
        if (l.startsWith("rl step 1/3")) workers[1].proc.kill("SIGKILL");
      },
    });
    const metrics = readFileSync(join(runDir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l)).filter((m) => m.phase === "rl");
    expect(metrics.map((m) => m.rollout_servers_live)).toEqual([2, 1, 1]);
    for (const m of metrics) {
      expect(m.rollout_requests).toBe(2);
      expect(Number.isFinite(m.loss) && Number.isFinite(m.logp_mismatch)).toBe(true);
      // Same model, same adapter bytes, same kernels on both sides: the sampler's log-probs are the trainer's.
      expect(m.logp_mismatch).toBeLessThan(1e-3);
    }
    expect(metrics.some((m) => m.grad_norm > 0)).toBe(true); // the adapter moved: the byte comparison below means something
    expect(lines.some((l) => l.includes("sitting out this step"))).toBe(true);
    expect(lines.find((l) => l.startsWith("rl step 1/3"))).toMatch(/s gen on 2 servers, \|Δlogp\| \d\.\de-?\d+,/);
    const records = readFileSync(join(runDir, "rollouts.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(new Set(records.filter((r) => r.step === 1).map((r) => r.server)).size).toBe(2);
    expect(records.filter((r) => r.step > 1).every((r) => r.server === workers[0].url)).toBe(true);
    expect(existsSync(join(runDir, "summary.json"))).toBe(true);
    // The key is in no file of the run folder.
    const files = (dir: string): string[] => readdirSync(dir).flatMap((f) => (statSync(join(dir, f)).isDirectory() ? files(join(dir, f)) : [join(dir, f)]));
    for (const f of files(runDir)) expect(readFileSync(f).includes(KEY), f).toBe(false);
    expect(takeRolloutKey(config, [["rl.rollout.apiKey", "other"]])).toMatchObject({ apiKey: "other", overrides: [] });

    // The same run on the surviving server alone, killed with SIGKILL after its first checkpoint and resumed (the key
    // from NR_API_KEY: config.json has none), ends with the same adapter bytes: the samples depend on the recorded
    // seeds, not on which server drew them or on the interruption.
    const { apiKey: _, ...rollout } = config.rl.rollout!;
    const cfgPath = join(root, "resumed.json");
    writeFileSync(cfgPath, JSON.stringify({ ...config, name: "remote-resumed", rl: { ...config.rl, rollout: { ...rollout, servers: [workers[0].url] } } }));
    const resumedDir = join(root, "runs", "remote-resumed");
    const killed = await runChild([cfgPath, root], () => existsSync(join(resumedDir, "checkpoints", "step-1", "checkpoint.json")));
    expect(killed.signal, killed.out).toBe("SIGKILL");
    expect(existsSync(join(resumedDir, "summary.json"))).toBe(false);
    const resumed = await runChild([cfgPath, root, resumedDir]);
    expect(resumed.code, resumed.out).toBe(0);
    expect(resumed.out).toMatch(/resumed at step [12] \(rl/);
    const adapter = (dir: string) => readFileSync(join(dir, "best", "adapter_model.safetensors"));
    expect(adapter(resumedDir).equals(adapter(runDir))).toBe(true);
  }, 240_000);

  it("rl.rollout from the command line: a list of URLs, checked", () => {
    const c = resolveConfig({ overrides: [["rl.rollout.servers", "http://a:8000/v1,http://b:8001"]], checkPaths: false });
    expect(c.rl.rollout).toEqual({ servers: ["http://a:8000/v1", "http://b:8001"], timeoutS: 600, tisCap: 0 });
    expect(() => resolveConfig({ overrides: [["rl.rollout.servers", "a:8000"]], checkPaths: false })).toThrow(/rl\.rollout\.servers: "a:8000" is not an http\(s\) URL/);
    expect(() => resolveConfig({ overrides: [["rl.rollout.servers", "http://a"], ["rl.rollout.tisCap", 0.5]], checkPaths: false })).toThrow(/tisCap = 0\.5 must be 0 \(off\) or >= 1/);
    // --resume may point the run at other servers (the samples depend on the seeds, not on the servers); the change
    // is recorded in config.json's resume history. Other rollout keys stay fixed.
    const resumed = resumeConfig(c, [["rl.rollout.servers", "http://c:9000/v1"]], 3, { checkPaths: false }) as typeof c & { resumes: { changes: { key: string }[] }[] };
    expect(resumed.rl.rollout!.servers).toEqual(["http://c:9000/v1"]);
    expect(resumed.resumes[0].changes.map((ch) => ch.key)).toEqual(["rl.rollout.servers"]);
    expect(() => resumeConfig(c, [["rl.rollout.tisCap", 3]], 3, { checkPaths: false })).toThrow(/rl\.rollout\.tisCap cannot change on --resume/);
  });
});
