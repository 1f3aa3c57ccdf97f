// The W&B sink against a local mock of the W&B API (GraphQL + file_stream) started by the test: the official SDK,
// running in the sink's worker thread, must create the run and deliver every metrics row.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_CONFIG, resolveConfig, type TrainConfig } from "./config.js";
import { RunFolder, type StepMetrics } from "./folder.js";
import { findWandbApiKey, WandbSink } from "./wandb.js";

interface Received {
  graphql: { query: string; variables: Record<string, unknown>; auth?: string }[];
  history: Record<string, unknown>[];
  streamPaths: string[];
  complete: boolean;
}

let server: Server;
let baseUrl: string;
let received: Received;
/** When set, GraphQL requests get this HTTP status (to simulate a refusing server). */
let refuseWith: number | null = null;
const KEY = "k".repeat(40);

const body = (req: IncomingMessage) =>
  new Promise<string>((res) => {
    let s = "";
    req.on("data", (c) => (s += c));
    req.on("end", () => res(s));
  });

beforeAll(async () => {
  server = createServer(async (req, res) => {
    const text = await body(req);
    const json = text ? JSON.parse(text) : {};
    res.setHeader("content-type", "application/json");
    if (req.url === "/graphql") {
      if (refuseWith) {
        res.statusCode = refuseWith;
        res.end(JSON.stringify({ errors: [{ message: "refused by the mock" }] }));
        return;
      }
      received.graphql.push({ query: json.query, variables: json.variables, auth: req.headers.authorization });
      if (/query Viewer/.test(json.query)) res.end(JSON.stringify({ data: { viewer: { id: "u1", entity: "mock-entity", flags: "{}", teams: { edges: [] } } } }));
      else if (/mutation UpsertBucket/.test(json.query)) {
        const v = json.variables;
        res.end(JSON.stringify({ data: { upsertBucket: { bucket: { id: "b1", name: v.name, displayName: v.displayName ?? v.name, description: null, config: v.config, sweepName: null, project: { id: "p1", name: v.project, entity: { id: "e1", name: v.entity } } }, inserted: true } } }));
      } else res.end(JSON.stringify({ data: {} }));
      return;
    }
    if (req.url?.endsWith("/file_stream")) {
      received.streamPaths.push(req.url);
      const h = json.files?.["wandb-history.jsonl"];
      if (h) for (const line of h.content) received.history.push(JSON.parse(line));
      if (json.complete) received.complete = true;
      res.end("{}");
      return;
    }
    res.statusCode = 404;
    res.end("{}");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const addr = server.address() as { port: number };
  baseUrl = `http://127.0.0.1:${addr.port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

const reset = () => (received = { graphql: [], history: [], streamPaths: [], complete: false });

const rows: StepMetrics[] = [
  { step: 1, phase: "sft", loss: 2.5, lr: 1e-3 },
  { step: 2, phase: "sft", loss: 1.75, lr: 9e-4, skipped: false },
  { step: 3, phase: "rl", reward: 0.25, accuracy: 0.25, response_length: 31.5, eval_label: "not a number" },
  { step: 3, phase: "eval", eval_accuracy: 0.4, eval_n: 10 },
  { step: 4, phase: "rl", reward: 0.5, kl: 0.002 },
];

describe("W&B sink (official @wandb/sdk) against a local mock server", () => {
  it("creates the run with its config and delivers every row, same-step rows merged, keys phase/name", async () => {
    reset();
    const warnings: string[] = [];
    const sink = new WandbSink({ project: "nr-test", entity: "team-x", baseUrl, apiKey: KEY, runName: "mini", config: { seed: 7 }, warn: (l) => warnings.push(l), closeTimeoutMs: 30_000 });
    for (const r of rows) sink.log(r);
    await sink.close();
    expect(warnings).toEqual([]);
    expect(sink.error).toBeNull();
    expect(sink.run).toMatchObject({ entity: "team-x", project: "nr-test" });
    const upsert = received.graphql.find((g) => /UpsertBucket/.test(g.query))!;
    expect(upsert.variables).toMatchObject({ project: "nr-test", entity: "team-x", displayName: "mini", name: sink.run!.id });
    expect(JSON.parse(upsert.variables.config as string)).toEqual({ seed: 7 });
    expect(upsert.auth).toBe(`Basic ${Buffer.from(`api:${KEY}`).toString("base64")}`);
    expect(received.streamPaths.every((p) => p === `/files/team-x/nr-test/${sink.run!.id}/file_stream`)).toBe(true);
    expect(received.complete).toBe(true);
    const got = received.history.map((h) => Object.fromEntries(Object.entries(h).filter(([k]) => !k.startsWith("_") || k === "_step")));
    expect(got).toEqual([
      { _step: 1, "sft/loss": 2.5, "sft/lr": 1e-3 },
      { _step: 2, "sft/loss": 1.75, "sft/lr": 9e-4, "sft/skipped": 0 },
      { _step: 3, "rl/reward": 0.25, "rl/accuracy": 0.25, "rl/response_length": 31.5, "eval/eval_accuracy": 0.4, "eval/eval_n": 10 },
      { _step: 4, "rl/reward": 0.5, "rl/kl": 0.002 },
    ]);
    for (const h of received.history) expect(typeof h._timestamp).toBe("number");
  }, 60_000);

  it("without an entity the SDK asks the server for the key's default entity", async () => {
    reset();
    const sink = new WandbSink({ project: "p", baseUrl, apiKey: KEY, closeTimeoutMs: 30_000 });
    sink.log({ step: 0, phase: "rl", reward: 1 });
    await sink.close();
    expect(received.graphql.some((g) => /query Viewer/.test(g.query))).toBe(true);
    expect(sink.run?.entity).toBe("mock-entity");
    expect(received.history.map((h) => h["rl/reward"])).toEqual([1]);
  }, 60_000);

  it("a refusing server is reported once and never throws into training", async () => {
    reset();
    refuseWith = 403;
    try {
      const warnings: string[] = [];
      const sink = new WandbSink({ project: "p", entity: "e", baseUrl, apiKey: KEY, warn: (l) => warnings.push(l), closeTimeoutMs: 10_000 });
      for (const r of rows) sink.log(r);
      await sink.close();
      expect(sink.error).toMatch(/W&B/);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/W&B logging stopped \(metrics\.jsonl is unaffected\)/);
      expect(received.history).toEqual([]);
    } finally {
      refuseWith = null;
    }
  }, 30_000);

  it("configuration errors are clear: no API key, a bad base URL; the key comes from the env or ~/.netrc", () => {
    const home = mkdtempSync(join(tmpdir(), "nr-wb-home-"));
    try {
      expect(findWandbApiKey("https://api.wandb.ai", { env: { HOME: home } })).toBeNull();
      writeFileSync(join(home, ".netrc"), `machine example.org\n  login user\n  password nope\nmachine 127.0.0.1:9\n  login user\n  password ${KEY}\n`);
      expect(findWandbApiKey("http://127.0.0.1:9/", { env: { HOME: home } })).toBe(KEY);
      expect(findWandbApiKey("http://127.0.0.1:9", { env: { HOME: home, WANDB_API_KEY: "envkey" } })).toBe("envkey");
      const saved = { key: process.env.WANDB_API_KEY, home: process.env.HOME };
      delete process.env.WANDB_API_KEY;
      process.env.HOME = home;
      try {
        expect(() => new WandbSink({ project: "p", baseUrl: "https://api.wandb.ai" })).toThrow(/no W&B API key was found for https:\/\/api\.wandb\.ai: set WANDB_API_KEY/);
      } finally {
        if (saved.key !== undefined) process.env.WANDB_API_KEY = saved.key;
        process.env.HOME = saved.home;
      }
      expect(() => new WandbSink({ project: "p", baseUrl: "api.wandb.ai", apiKey: KEY })).toThrow(/output\.wandb\.baseUrl = "api\.wandb\.ai" is not an http\(s\) URL/);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});

describe("RunFolder sinks from the config (output.wandb, output.tensorboard)", () => {
  it("the config keys: output.wandb.{project, entity?, baseUrl} and output.tensorboard", () => {
    const c = resolveConfig({ overrides: [["output.wandb.project", "p"], ["output.wandb.entity", "team"], ["output.tensorboard", "true"]], checkPaths: false });
    expect(c.output).toEqual({ dir: "runs", wandb: { project: "p", entity: "team", baseUrl: "https://api.wandb.ai" }, tensorboard: true });
    expect(resolveConfig({ overrides: [["output.wandb.project", "p"]], checkPaths: false }).output.wandb).toEqual({ project: "p", baseUrl: "https://api.wandb.ai" });
    expect(() => resolveConfig({ overrides: [["output.wandb.entty", "x"]], checkPaths: false })).toThrow(/did you mean "output\.wandb\.entity"/);
    expect(() => resolveConfig({ overrides: [["output.tensorboard", "maybe"]], checkPaths: false })).toThrow(/--output\.tensorboard "maybe" is not allowed: expected true \| false/);
  });

  it("every logged row reaches W&B and a TensorBoard events file; metrics.jsonl is unchanged", async () => {
    reset();
    const dir = mkdtempSync(join(tmpdir(), "nr-sinks-"));
    const saved = process.env.WANDB_API_KEY;
    process.env.WANDB_API_KEY = KEY;
    try {
      const config: TrainConfig = { ...structuredClone(DEFAULT_CONFIG), name: "sinks", output: { dir, wandb: { project: "nr-sinks", entity: "team-y", baseUrl }, tensorboard: true } };
      const run = RunFolder.open(config);
      for (const r of rows) run.logMetrics(r);
      await run.finish();
      expect(run.readMetrics()).toEqual(rows);
      expect(received.history.map((h) => h._step)).toEqual([1, 2, 3, 4]);
      expect(received.history[2]["eval/eval_accuracy"]).toBe(0.4);
      const tb = readdirSync(join(run.dir, "tensorboard"));
      expect(tb).toHaveLength(1);
      expect(tb[0]).toMatch(/^events\.out\.tfevents\./);
      // Sinks are only attached when asked for.
      const plain = RunFolder.open({ ...config, name: "plain", output: { dir } });
      plain.logMetrics(rows[0]);
      await plain.finish();
      expect(existsSync(join(plain.dir, "tensorboard"))).toBe(false);
    } finally {
      if (saved === undefined) delete process.env.WANDB_API_KEY;
      else process.env.WANDB_API_KEY = saved;
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
