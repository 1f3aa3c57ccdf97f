/**
 * `createVerifier`: an async pool of worker threads with a hard per-call timeout, for the RL loop.
 * A call that hangs or blows up (timeout, out-of-memory, crash) resolves to `correct: false, unscorable: true`
 * with a reason; the worker is terminated and replaced. Nothing rejects, nothing is thrown at the caller.
 */
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { type RewardOptions, type RewardResult, rewardFromResult } from "./rewards.js";
import type { VerifyOptions, VerifyResult } from "./verify.js";

export interface VerifierOptions {
  /** Hard wall-clock limit per verification, measured from dispatch to a worker (default 2000 ms). */
  timeoutMs?: number;
  /** Worker threads (default: available cores − 1, at least 1, at most 8). */
  workers?: number;
  /** Options applied to every call (per-call options override them). */
  verifyOptions?: VerifyOptions;
  /** V8 old-generation cap per worker; exceeding it kills the worker, not the process (default 256 MB). */
  maxOldGenerationSizeMb?: number;
  /** The worker script (default: dist/worker.js of this package). Must answer like src/worker.ts. */
  workerUrl?: URL | string;
}

export interface VerifierStats {
  completed: number;
  timeouts: number;
  crashes: number;
  restarts: number;
}

export interface Verifier {
  verify(prediction: string, gold: string, options?: VerifyOptions): Promise<VerifyResult>;
  verifyBatch(pairs: ReadonlyArray<{ prediction: string; gold: string; options?: VerifyOptions }>): Promise<VerifyResult[]>;
  /** Verifies in the pool, then applies `rewardFromResult`. */
  reward(response: string, gold: string, options?: RewardOptions): Promise<RewardResult>;
  stats(): VerifierStats;
  /** Terminates the workers; pending calls resolve as unscorable. */
  close(): Promise<void>;
  readonly size: number;
}

/**
 * Where the compiled worker is: next to this module in dist/, or dist/ seen from src/ (tests running the sources).
 */
export function resolveWorkerUrl(): URL {
  const candidates = [new URL("./worker.js", import.meta.url), new URL("../dist/worker.js", import.meta.url)];
  for (const u of candidates) if (existsSync(fileURLToPath(u))) return u;
  throw new Error("@nr/rewards: dist/worker.js not found; build the package first (pnpm --filter @nr/rewards build)");
}

interface Job {
  id: number;
  prediction: string;
  gold: string;
  options?: VerifyOptions;
  resolve: (r: VerifyResult) => void;
}

interface Slot {
  worker: Worker;
  ready: boolean;
  job: Job | null;
  timer: NodeJS.Timeout | null;
  dead: boolean;
}

const unscorable = (reason: string): VerifyResult => ({ correct: false, predicted: null, gold: null, reason, unscorable: true });

export function createVerifier(options: VerifierOptions = {}): Verifier {
  const timeoutMs = options.timeoutMs ?? 2000;
  const size = Math.max(1, Math.min(64, options.workers ?? Math.min(8, Math.max(1, availableParallelism() - 1))));
  const url = options.workerUrl ?? resolveWorkerUrl();
  const heapMb = options.maxOldGenerationSizeMb ?? 256;
  const queue: Job[] = [];
  const slots: Slot[] = [];
  const stats: VerifierStats = { completed: 0, timeouts: 0, crashes: 0, restarts: 0 };
  let nextId = 1;
  let closed = false;

  const spawn = (): Slot => {
    const worker = new Worker(url, { resourceLimits: { maxOldGenerationSizeMb: heapMb } });
    const slot: Slot = { worker, ready: false, job: null, timer: null, dead: false };
    worker.on("message", (m: { ready?: boolean; id?: number; result?: VerifyResult }) => {
      if (slot.dead) return;
      if (m.ready) {
        slot.ready = true;
        pump();
        return;
      }
      const job = slot.job;
      if (!job || m.id !== job.id) return;
      finish(slot, m.result ?? unscorable("worker sent no result"));
      stats.completed++;
      pump();
    });
    const fail = (why: string) => {
      if (slot.dead) return;
      slot.dead = true;
      const job = slot.job;
      if (job) {
        stats.crashes++;
        finish(slot, unscorable(`worker crashed: ${why}`));
      }
      replace(slot);
    };
    worker.on("error", (e) => fail(e instanceof Error ? `${(e as NodeJS.ErrnoException).code ?? e.name}: ${e.message}` : String(e)));
    worker.on("exit", (code) => fail(`exit code ${code}`));
    if (!busy()) worker.unref();
    return slot;
  };

  /** Workers keep the process alive only while calls are pending, so a forgotten close() never blocks exit. */
  function busy(): boolean {
    return queue.length > 0 || slots.some((s) => s.job !== null);
  }
  function refresh(): void {
    const b = busy();
    for (const s of slots) if (!s.dead) (b ? s.worker.ref() : s.worker.unref());
  }

  function finish(slot: Slot, result: VerifyResult): void {
    const job = slot.job;
    if (slot.timer) clearTimeout(slot.timer);
    slot.timer = null;
    slot.job = null;
    job?.resolve(result);
    refresh();
  }

  function replace(slot: Slot): void {
    const k = slots.indexOf(slot);
    void slot.worker.terminate().catch(() => undefined);
    if (k < 0 || closed) return;
    stats.restarts++;
    slots[k] = spawn();
  }

  function pump(): void {
    for (const slot of slots) {
      if (queue.length === 0) return;
      if (!slot.ready || slot.job || slot.dead) continue;
      const job = queue.shift() as Job;
      slot.job = job;
      slot.timer = setTimeout(() => {
        if (slot.job !== job) return;
        stats.timeouts++;
        slot.dead = true;
        finish(slot, unscorable(`timeout: verification exceeded ${timeoutMs} ms`));
        replace(slot);
        pump();
      }, timeoutMs);
      slot.worker.postMessage({ id: job.id, prediction: job.prediction, gold: job.gold, options: job.options });
    }
  }

  for (let i = 0; i < size; i++) slots.push(spawn());

  const verifyOne = (prediction: string, gold: string, callOptions?: VerifyOptions): Promise<VerifyResult> =>
    new Promise((resolve) => {
      if (closed) return resolve(unscorable("verifier closed"));
      if (typeof prediction !== "string" || typeof gold !== "string")
        return resolve({ correct: false, predicted: null, gold: null, reason: "error: prediction and gold must be strings" });
      const opts = options.verifyOptions || callOptions ? { ...options.verifyOptions, ...callOptions } : undefined;
      queue.push({ id: nextId++, prediction, gold, options: opts, resolve });
      refresh();
      pump();
    });

  return {
    size,
    verify: verifyOne,
    verifyBatch: (pairs) => Promise.all(pairs.map((p) => verifyOne(p.prediction, p.gold, p.options))),
    reward: async (response, gold, rewardOptions = {}) => rewardFromResult(await verifyOne(response, gold, rewardOptions), response, rewardOptions),
    stats: () => ({ ...stats }),
    close: async () => {
      closed = true;
      for (const job of queue.splice(0)) job.resolve(unscorable("verifier closed"));
      await Promise.all(
        slots.map((s) => {
          s.dead = true;
          if (s.job) finish(s, unscorable("verifier closed"));
          return s.worker.terminate().catch(() => undefined);
        }),
      );
    },
  };
}
