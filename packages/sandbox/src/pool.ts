// A pool of warm sandboxed interpreters (worker threads). A call waits for a free worker, runs there, and the
// pool enforces the wall-clock limit by terminating that worker; a terminated, crashed or overgrown worker is
// replaced in the background, so the next call finds a warm one.
import { existsSync } from "node:fs";
import { Worker } from "node:worker_threads";
import { findPythonLibs } from "./pylib.js";
import type { RunReply, SandboxResult, WorkerConfig, WorkerMessage } from "./protocol.js";

export interface SandboxOptions {
  /** Warm interpreters kept (each ≈ 100–200 MB with sympy). Default 1. */
  workers?: number;
  /** Default wall-clock limit per call (ms). Default 5000. */
  timeoutMs?: number;
  /** WebAssembly memory limit per interpreter (bytes). Default 1 GiB. */
  memoryLimitBytes?: number;
  /** stdout + stderr limit per call (bytes). Default 64 KiB. */
  outputLimitBytes?: number;
  /** Host package folders made visible (copied into memory); default: sympy and mpmath where found (pylib.ts). */
  pylibDirs?: string[];
  /** Modules imported at warm-up. Default: "sympy" when it was found, else none. */
  preload?: string[];
  /** Wall-clock limit for an interpreter's start (ms). Default 120000. */
  bootTimeoutMs?: number;
}

interface Job {
  code: string;
  timeoutMs: number;
  resolve(r: SandboxResult): void;
  reject(e: Error): void;
}

interface Slot {
  worker: Worker;
  ready: boolean;
  job?: Job;
  timer?: NodeJS.Timeout;
  /** Fails the pool if the interpreter never starts; cleared once it is ready or the slot ends (a pending timer would
   * keep the process alive for the whole boot limit after close()). */
  bootTimer?: NodeJS.Timeout;
}

const WORKER_URL = new URL("./worker.js", import.meta.url);

export class SandboxPool {
  readonly config: WorkerConfig;
  readonly timeoutMs: number;
  private readonly bootTimeoutMs: number;
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private closed = false;
  private nextId = 1;
  /** Count of workers started (first boots + replacements): the tests read it to see a replacement happened. */
  started = 0;
  private bootFailure?: string;

  constructor(opts: SandboxOptions = {}) {
    if (!existsSync(WORKER_URL)) throw new Error(`@nr/sandbox: ${WORKER_URL.pathname} is missing; build the package (pnpm --filter @nr/sandbox build)`);
    const libs = opts.pylibDirs ?? findPythonLibs();
    this.config = {
      pylibDirs: libs,
      preload: opts.preload ?? (libs.some((d) => /sympy$/.test(d)) ? ["sympy"] : []),
      memoryLimitBytes: opts.memoryLimitBytes ?? 1 << 30,
      outputLimitBytes: opts.outputLimitBytes ?? 64 * 1024,
    };
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.bootTimeoutMs = opts.bootTimeoutMs ?? 120_000;
    for (let i = 0; i < Math.max(1, opts.workers ?? 1); i++) this.spawn();
  }

  /** Resolves when every interpreter is warm (for benchmarks and tests that time calls, not boots). */
  async warm(): Promise<void> {
    await Promise.all(Array.from({ length: this.slots.length }, () => this.run("pass")));
  }

  /** Runs `code` in a fresh `__main__` namespace of a warm interpreter. Never rejects for a Python-side failure. */
  run(code: string, opts: { timeoutMs?: number } = {}): Promise<SandboxResult> {
    if (this.closed) return Promise.reject(new Error("SandboxPool: run() after close()"));
    if (this.bootFailure) return Promise.reject(new Error(`SandboxPool: ${this.bootFailure}`));
    return new Promise((resolve, reject) => {
      this.queue.push({ code, timeoutMs: opts.timeoutMs ?? this.timeoutMs, resolve, reject });
      this.dispatch();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const job of this.queue.splice(0)) job.reject(new Error("SandboxPool closed"));
    await Promise.all(this.slots.splice(0).map((s) => (clearTimeout(s.bootTimer), clearTimeout(s.timer), s.worker.terminate())));
  }

  private spawn(): void {
    const worker = new Worker(WORKER_URL, { workerData: this.config, execArgv: [], resourceLimits: { maxOldGenerationSizeMb: 512 } });
    const slot: Slot = { worker, ready: false };
    this.started++;
    this.slots.push(slot);
    // cleared when the worker is ready, and by fail() and replace() on the error paths below
    slot.bootTimer = setTimeout(() => this.fail(slot, `an interpreter did not start within ${this.bootTimeoutMs} ms`), this.bootTimeoutMs);
    worker.on("message", (m: WorkerMessage) => {
      if (m.type === "ready") {
        clearTimeout(slot.bootTimer);
        slot.ready = true;
        this.dispatch();
      } else if (m.type === "result") this.finish(slot, m);
      else {
        if (!slot.ready) this.fail(slot, m.reason);
        else this.replace(slot, { status: "crashed", stdout: "", stderr: "", reason: `the interpreter crashed: ${m.reason}`, wallMs: 0 });
      }
    });
    worker.on("error", (e) => {
      if (!slot.ready) this.fail(slot, `an interpreter failed to start: ${e.message}`);
      else this.replace(slot, { status: "crashed", stdout: "", stderr: "", reason: `the interpreter crashed: ${e.message}`, wallMs: 0 });
    });
  }

  /** A worker that never became ready: every waiting call fails with the reason (no retry loop). */
  private fail(slot: Slot, reason: string): void {
    clearTimeout(slot.bootTimer);
    this.bootFailure = reason;
    void slot.worker.terminate();
    for (const job of this.queue.splice(0)) job.reject(new Error(`SandboxPool: ${reason}`));
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (!slot.ready || slot.job || this.queue.length === 0) continue;
      const job = this.queue.shift()!;
      slot.job = job;
      const id = this.nextId++;
      const started = performance.now();
      const expire = () => {
        const wallMs = performance.now() - started;
        // Node's timers keep a millisecond clock and can fire a fraction of a millisecond before performance.now()
        // reaches the limit: wait out the rest, so a stopped run has always had its full limit
        if (wallMs < job.timeoutMs) {
          slot.timer = setTimeout(expire, Math.ceil(job.timeoutMs - wallMs));
          return;
        }
        this.replace(slot, { status: "timeout", stdout: "", stderr: "", reason: `the code ran past the ${job.timeoutMs} ms wall-clock limit and was stopped`, wallMs });
      };
      slot.timer = setTimeout(expire, job.timeoutMs);
      slot.worker.postMessage({ id, code: job.code });
    }
  }

  private finish(slot: Slot, reply: RunReply): void {
    clearTimeout(slot.timer);
    const job = slot.job!;
    slot.job = undefined;
    const { stdout, stderr, status, reason, wallMs } = reply;
    job.resolve(reason === undefined ? { status, stdout, stderr, wallMs } : { status, stdout, stderr, reason, wallMs });
    // WebAssembly memory never shrinks: an interpreter that grew past half the limit is retired, so one big call
    // does not leave every later call near the limit.
    if (reply.heapBytes > this.config.memoryLimitBytes / 2) this.replace(slot);
    else this.dispatch();
  }

  /** Terminates a worker (answering its call with `result`, if any) and starts a fresh one. */
  private replace(slot: Slot, result?: SandboxResult): void {
    clearTimeout(slot.timer);
    clearTimeout(slot.bootTimer);
    const i = this.slots.indexOf(slot);
    if (i < 0) return;
    this.slots.splice(i, 1);
    void slot.worker.terminate();
    if (slot.job && result) slot.job.resolve(result);
    slot.job = undefined;
    if (!this.closed) this.spawn();
  }
}
