// Weights & Biases metrics sink through the official JS SDK (@wandb/sdk: `wandb.init` → GraphQL upsertBucket, then
// `run.log` rows streamed to `<baseUrl>/files/<entity>/<project>/<run>/file_stream`).
//
// The SDK runs in a worker thread of its own: it throws from event listeners when the server refuses a request and
// installs SIGINT/SIGTERM handlers that call process.exit — in a worker, neither can take the training process
// down or pre-empt its own signal handling. Rows go to the worker as messages; a W&B failure is reported once and
// training goes on (metrics.jsonl is the record). Rows of the same step (an RL row and an eval row) are merged into
// one W&B history row, with keys `phase/name` (rl/reward, sft/loss, eval/eval_accuracy).
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { homedir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { metricScalars, type MetricsSink, type StepMetrics } from "./folder.js";

export interface WandbSinkOptions {
  project: string;
  entity?: string;
  /** API server (default https://api.wandb.ai; a self-hosted or local server works the same way). */
  baseUrl?: string;
  /** Display name of the W&B run. */
  runName?: string;
  /** Stored as the W&B run's config. */
  config?: unknown;
  /** Default: $WANDB_API_KEY, else the `machine <host>` entry of ~/.netrc that `wandb login` writes. */
  apiKey?: string;
  /** How long close() waits for the last rows to upload (default 60 s), then gives up. */
  closeTimeoutMs?: number;
  warn?: (line: string) => void;
}

/** The API key for `baseUrl`: the option, $WANDB_API_KEY, or ~/.netrc (as `wandb login` writes it); null if none. */
export function findWandbApiKey(baseUrl: string, o: { env?: NodeJS.ProcessEnv; netrc?: string } = {}): string | null {
  const env = o.env ?? process.env;
  if (env.WANDB_API_KEY) return env.WANDB_API_KEY;
  const netrc = o.netrc ?? join(env.HOME ?? homedir(), ".netrc");
  if (!existsSync(netrc)) return null;
  const host = baseUrl.replace(/^[a-z]+:\/\//i, "").split("/")[0];
  const words = readFileSync(netrc, "utf8").split(/\s+/).filter(Boolean);
  for (let i = 0; i < words.length; i++) {
    if (words[i] !== "machine" || words[i + 1] !== host) continue;
    for (let j = i + 2; j < words.length && words[j] !== "machine"; j++) if (words[j] === "password") return words[j + 1] ?? null;
  }
  return null;
}

// Runs inside the worker (CommonJS, eval'd): init once, log in order, finish on request.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { wandb } = require(workerData.sdk);
const runP = wandb.init(workerData.init);
runP.then(
  (run) => parentPort.postMessage({ type: "ready", id: run.id, entity: run.entity, project: run.project, url: run.url() }),
  (e) => { parentPort.postMessage({ type: "error", message: String((e && e.message) || e) }); process.exit(1); },
);
parentPort.on("message", (m) => {
  if (m.type === "log") runP.then((run) => run.log(m.data, m.step));
  else if (m.type === "finish") runP.then((run) => run.finish()).then(() => { parentPort.postMessage({ type: "finished" }); process.exit(0); });
});
`;

export class WandbSink implements MetricsSink {
  readonly name = "wandb";
  /** Set once the server has accepted the run. */
  run: { id: string; entity: string; project: string; url: string } | null = null;
  /** The first failure, if any (logging stopped then). */
  error: string | null = null;
  private worker: Worker | null;
  private pending: { step: number; data: Record<string, number> } | null = null;
  private lastStep = -Infinity;
  private closing: Promise<void> | null = null;
  private sdkOutput = "";
  private readonly warn: (line: string) => void;
  private readonly closeTimeoutMs: number;
  private readonly exited: Promise<void>;
  readonly ready: Promise<void>;

  constructor(o: WandbSinkOptions) {
    this.warn = o.warn ?? ((l) => console.error(l));
    this.closeTimeoutMs = o.closeTimeoutMs ?? 60_000;
    if (!o.project) throw new Error("output.wandb.project must be set (the W&B project to log to)");
    const baseUrl = (o.baseUrl ?? "https://api.wandb.ai").replace(/\/+$/, "");
    if (!/^https?:\/\/[^/]+/.test(baseUrl)) throw new Error(`output.wandb.baseUrl = "${o.baseUrl}" is not an http(s) URL (e.g. https://api.wandb.ai)`);
    const apiKey = o.apiKey ?? findWandbApiKey(baseUrl);
    if (!apiKey) throw new Error(`output.wandb is set but no W&B API key was found for ${baseUrl}: set WANDB_API_KEY (or run \`wandb login\`, which writes ~/.netrc), or remove output.wandb`);
    let sdk: string;
    try {
      sdk = createRequire(import.meta.url).resolve("@wandb/sdk");
    } catch {
      throw new Error("output.wandb needs the @wandb/sdk package: pnpm --filter @nr/trainer add @wandb/sdk graphql");
    }
    const init = {
      project: o.project,
      ...(o.entity ? { entity: o.entity } : {}),
      ...(o.runName ? { name: o.runName } : {}),
      config: JSON.parse(JSON.stringify(o.config ?? {})),
      settings: { baseUrl, apiKey, silent: true },
    };
    // The SDK prints its own errors; they are kept and the first one is quoted in the single warning.
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { sdk, init }, env: { ...process.env, WANDB_BASE_URL: baseUrl }, stdout: true, stderr: true });
    for (const stream of [this.worker.stdout, this.worker.stderr]) stream.on("data", (b: Buffer) => (this.sdkOutput = (this.sdkOutput + b.toString()).slice(0, 4000)));
    let readyResolve!: () => void;
    this.ready = new Promise((r) => (readyResolve = r));
    this.worker.on("message", (m: { type: string; message?: string; id?: string; entity?: string; project?: string; url?: string }) => {
      if (m.type === "ready") {
        this.run = { id: m.id!, entity: m.entity!, project: m.project!, url: m.url! };
        readyResolve();
      } else if (m.type === "error") this.fail(`W&B init failed: ${m.message}`);
    });
    this.worker.on("error", (e) => this.fail(`W&B SDK error: ${e.message}`));
    this.exited = new Promise((r) => this.worker!.once("exit", () => r()));
    void this.exited.then(() => {
      this.worker = null;
      readyResolve();
    });
  }

  private fail(message: string) {
    if (this.error) return;
    const said = this.sdkOutput.split("\n").find((l) => /error/i.test(l));
    this.error = said && !message.includes(said.trim()) ? `${message} (SDK: ${said.trim().slice(0, 200)})` : message;
    this.warn(`warning: ${this.error}; W&B logging stopped (metrics.jsonl is unaffected)`);
  }

  private flush() {
    if (!this.pending) return;
    const { step, data } = this.pending;
    this.pending = null;
    this.worker?.postMessage({ type: "log", step, data });
    this.lastStep = step;
  }

  log(row: StepMetrics): void {
    if (this.closing || this.error) return;
    const data = metricScalars(row);
    if (this.pending && row.step === this.pending.step) {
      Object.assign(this.pending.data, data);
      return;
    }
    if (row.step < (this.pending?.step ?? this.lastStep)) {
      this.warn(`warning: W&B: metrics step ${row.step} after step ${this.pending?.step ?? this.lastStep} is not sent (W&B steps only increase)`);
      return;
    }
    this.flush();
    this.pending = { step: row.step, data };
  }

  /** Send the last row, finish the W&B run (uploads complete), and stop the worker. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (!this.worker) return;
      this.flush();
      this.worker.postMessage({ type: "finish" });
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), this.closeTimeoutMs)));
      const r = await Promise.race([this.exited, timeout]);
      clearTimeout(timer);
      if (r === "timeout") {
        this.fail(`W&B did not finish uploading within ${this.closeTimeoutMs / 1000} s`);
        await this.worker?.terminate();
      }
    })();
    return this.closing;
  }
}
