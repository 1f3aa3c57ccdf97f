// The run folder (docs/architecture.md, "Contracts other tools read"): runs/<name>/ with config.json (resolved), metrics.jsonl
// (one object per step, written line by line), samples.jsonl, summary.json, report.html and checkpoints/step-N/.
// Files are written crash-safe (files.ts); one process at a time writes a folder (run.lock, lock.ts); an existing run
// is only continued (--resume) or replaced (--overwrite) when asked.
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { ConfigError, type TrainConfig } from "./config.js";
import { findLatestCheckpoint, JsonlAppender, listCheckpoints, readJsonlFile, saveCheckpoint, writeFileAtomic, writeJsonAtomic, type CheckpointInfo } from "./files.js";
import { acquireRunLock, LOCK_FILE, type RunLock } from "./lock.js";
import { TensorBoardSink } from "./tensorboard.js";
import { WandbSink } from "./wandb.js";

export * from "./files.js";

// ---------------------------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------------------------

/**
 * One metrics.jsonl row. `step` is the global optimizer step (SFT then RL, continuing), `phase` what produced it.
 * report.html charts these names: loss, reward, accuracy, eval_accuracy, response_length, kl, entropy.
 */
export interface StepMetrics {
  step: number;
  phase: "sft" | "rl" | "eval" | (string & {});
  time?: number;
  loss?: number;
  reward?: number;
  accuracy?: number;
  eval_accuracy?: number;
  response_length?: number;
  kl?: number;
  entropy?: number;
  clip_frac?: number;
  grad_norm?: number;
  lr?: number;
  tokens_per_s?: number;
  [key: string]: unknown;
}

/** One samples.jsonl row: a completion with its verdict. `response_length` is in tokens. */
export interface SampleRecord {
  step: number;
  phase?: string;
  prompt?: string;
  completion: string;
  gold?: string;
  reward?: number;
  correct?: boolean;
  response_length?: number;
  finish_reason?: "eos" | "length" | (string & {});
  [key: string]: unknown;
}

export interface EvalResult {
  accuracy: number;
  n: number;
  [key: string]: unknown;
}

/** summary.json: the contract's keys plus free extras. Evals are null when that phase did not run. */
export interface RunSummary {
  wall_seconds: number;
  /** The model before SFT. */
  eval_base: EvalResult | null;
  /** After SFT = before RL. */
  eval_before: EvalResult | null;
  /** After RL. */
  eval_after: EvalResult | null;
  algo: string;
  /** Optimizer steps done in total (SFT + RL). */
  steps: number;
  sft_steps?: number;
  rl_steps?: number;
  [key: string]: unknown;
}

function checkSummary(s: RunSummary): void {
  const problems: string[] = [];
  if (!(typeof s.wall_seconds === "number" && s.wall_seconds >= 0)) problems.push(`wall_seconds must be a number >= 0 (got ${JSON.stringify(s.wall_seconds)})`);
  for (const k of ["eval_base", "eval_before", "eval_after"] as const) {
    const e = s[k];
    if (e === null) continue;
    if (typeof e !== "object" || typeof e.accuracy !== "number" || !(e.accuracy >= 0 && e.accuracy <= 1) || !Number.isInteger(e.n) || e.n < 0) problems.push(`${k} must be {accuracy in [0,1], n integer >= 0} or null (got ${JSON.stringify(e)})`);
  }
  if (typeof s.algo !== "string" || !s.algo) problems.push(`algo must be a non-empty string`);
  if (!Number.isInteger(s.steps) || s.steps < 0) problems.push(`steps must be an integer >= 0 (got ${JSON.stringify(s.steps)})`);
  if (problems.length) throw new Error(`summary.json: ${problems.join("; ")}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Metrics sinks (W&B, TensorBoard): metrics.jsonl stays the source of truth; sinks get a copy of every row
// ---------------------------------------------------------------------------------------------------------------

/** Somewhere metrics rows are mirrored to. `log` must not block or throw; `close` flushes. */
export interface MetricsSink {
  readonly name: string;
  log(row: StepMetrics): void;
  close(): Promise<void>;
}

/**
 * The scalars of a metrics row as `phase/key` → number (e.g. `rl/reward`, `sft/loss`, `eval/eval_accuracy`):
 * finite numbers, and booleans as 0/1; `step`, `phase` and non-numeric values are left out.
 */
export function metricScalars(row: StepMetrics): Record<string, number> {
  const phase = typeof row.phase === "string" && row.phase ? row.phase : "train";
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(row)) {
    if (k === "step" || k === "phase") continue;
    if (typeof v === "number" && Number.isFinite(v)) out[`${phase}/${k}`] = v;
    else if (typeof v === "boolean") out[`${phase}/${k}`] = v ? 1 : 0;
  }
  return out;
}

/**
 * The sinks a config asks for: `output.wandb` (Weights & Biases, through the official SDK in a worker thread) and
 * `output.tensorboard` (tfevents files in `<run>/tensorboard/`). Throws a clear error when W&B has no API key.
 */
export function sinksForConfig(config: TrainConfig, runDir: string, o: { warn?: (line: string) => void } = {}): MetricsSink[] {
  const sinks: MetricsSink[] = [];
  if (config.output.wandb) sinks.push(new WandbSink({ ...config.output.wandb, runName: config.name, config, warn: o.warn }));
  if (config.output.tensorboard) sinks.push(new TensorBoardSink(join(runDir, "tensorboard")));
  return sinks;
}

// ---------------------------------------------------------------------------------------------------------------
// The run folder
// ---------------------------------------------------------------------------------------------------------------

export interface OpenRunOptions {
  /**
   * What to do when the folder already has a run: "error" (default; the message says how to proceed), "overwrite"
   * (delete its contents once the lock is held: checkpoints, logs, best/, report) or "resume" (keep it; see
   * {@link RunFolder.rewindTo}). The folder's lock is taken first in every mode, so a live run is never touched.
   */
  ifExists?: "error" | "overwrite" | "resume";
  /** Attach the metrics sinks of the config's `output` section (W&B, TensorBoard). Default true. */
  sinks?: boolean;
}

export class RunFolder {
  readonly dir: string;
  private metricsOut: JsonlAppender | null = null;
  private samplesOut: JsonlAppender | null = null;
  private sinks: MetricsSink[] = [];
  private sinkErrors = new Set<string>();
  private lock: RunLock | null = null;
  /** Where sink problems are reported (once per sink); default stderr. */
  warn: (line: string) => void = (l) => console.error(l);

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** `<output.dir>/<name>` for a config (relative output dirs resolve against `cwd`). */
  static pathFor(config: Pick<TrainConfig, "name" | "output">, cwd = process.cwd()): string {
    return resolve(cwd, config.output.dir, config.name);
  }

  /** Open (creating) the run folder of `config` and write its resolved config.json. */
  static open(config: TrainConfig, o: OpenRunOptions & { cwd?: string } = {}): RunFolder {
    return RunFolder.openDir(RunFolder.pathFor(config, o.cwd), o, config);
  }

  /** Open (creating) a run folder by path; writes config.json when `config` is given. */
  static openDir(dir: string, o: OpenRunOptions = {}, config?: TrainConfig): RunFolder {
    const abs = resolve(dir);
    const lock = acquireRunLock(abs);
    try {
      const hasRun = RunFolder.holdsRun(abs);
      const mode = o.ifExists ?? "error";
      if (hasRun && mode === "error") throw new Error(`run folder ${abs} already holds a run: pass --resume ${abs} to continue it, --overwrite to delete it and start again, or choose another --name`);
      if (hasRun && mode === "overwrite") for (const f of readdirSync(abs)) if (f !== LOCK_FILE) rmSync(join(abs, f), { recursive: true, force: true });
    } catch (err) {
      lock.release();
      throw err;
    }
    const run = new RunFolder(abs);
    run.lock = lock;
    if (lock.tookOverFrom) run.warn(`run folder ${abs}: took over the lock of pid ${lock.tookOverFrom.pid} (started ${lock.tookOverFrom.started}), which is no longer running`);
    if (config) {
      run.writeConfig(config);
      if (o.sinks ?? true) run.attachConfiguredSinks(config);
    }
    return run;
  }

  /**
   * Reopen a run for `--resume`: its config.json, its latest complete checkpoint (null: start over from step 0),
   * and metrics/samples rewound to that checkpoint's step so the resumed run appends exactly where it left off.
   */
  static resume(dir: string, o: { sinks?: boolean; config?: (saved: TrainConfig, from: CheckpointInfo | null) => TrainConfig } = {}): { run: RunFolder; config: TrainConfig; checkpoint: CheckpointInfo | null } {
    const abs = resolve(dir);
    if (!existsSync(join(abs, "config.json"))) throw new Error(`cannot resume ${abs}: no config.json there (not a run folder)`);
    const run = RunFolder.openDir(abs, { ifExists: "resume" });
    const checkpoint = run.latestCheckpoint();
    let config: TrainConfig;
    try {
      // `o.config` checks the saved config and may change it (resume overrides): refused before anything is written.
      config = run.readConfig()!;
      if (o.config) {
        config = o.config(config, checkpoint);
        run.writeConfig(config);
      }
    } catch (err) {
      run.close();
      throw err;
    }
    run.rewindTo(checkpoint?.step ?? 0);
    // Rows from here on are mirrored (a resumed run is a new W&B run; TensorBoard gets a new events file).
    if (o.sinks ?? true) run.attachConfiguredSinks(config);
    return { run, config, checkpoint };
  }

  get configPath() {
    return join(this.dir, "config.json");
  }
  get metricsPath() {
    return join(this.dir, "metrics.jsonl");
  }
  get samplesPath() {
    return join(this.dir, "samples.jsonl");
  }
  get summaryPath() {
    return join(this.dir, "summary.json");
  }
  get reportPath() {
    return join(this.dir, "report.html");
  }
  get checkpointsDir() {
    return join(this.dir, "checkpoints");
  }

  writeConfig(config: TrainConfig): void {
    writeJsonAtomic(this.configPath, config);
  }

  /** True when `dir` holds (part of) a run: a config, logs or checkpoints. A lone lock file or model/ is not a run. */
  static holdsRun(dir: string): boolean {
    return ["config.json", "metrics.jsonl", "checkpoints", "summary.json"].some((f) => existsSync(join(dir, f)));
  }

  /** The run's config.json; a truncated or non-JSON file is a ConfigError naming the path. */
  readConfig(): TrainConfig | null {
    if (!existsSync(this.configPath)) return null;
    const text = readFileSync(this.configPath, "utf8");
    try {
      const parsed = JSON.parse(text) as unknown;
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not a JSON object");
      return parsed as TrainConfig;
    } catch (err) {
      throw new ConfigError([`${this.configPath} is not a valid run config (${(err as Error).message}${text.trim() === "" ? "; the file is empty" : ""}): restore it from a copy, or start a new run with --name`]);
    }
  }

  /** Append one metrics row (on disk when this returns), and mirror it to the sinks. */
  logMetrics(row: StepMetrics): void {
    if (!Number.isInteger(row.step)) throw new Error(`metrics row needs an integer step (got ${JSON.stringify(row.step)})`);
    (this.metricsOut ??= new JsonlAppender(this.metricsPath)).append(row);
    for (const s of this.sinks) {
      try {
        s.log(row);
      } catch (err) {
        this.sinkFailed(s, err);
      }
    }
  }

  /** Mirror every later metrics row to `sink` (closed by {@link finish} / {@link close}). */
  addSink(sink: MetricsSink): void {
    this.sinks.push(sink);
  }

  /** Attach the sinks `config.output` asks for (W&B, TensorBoard); `open`/`resume` do this unless `sinks: false`. */
  attachConfiguredSinks(config: TrainConfig): MetricsSink[] {
    const sinks = sinksForConfig(config, this.dir, { warn: (l) => this.warn(l) });
    sinks.forEach((s) => this.addSink(s));
    return sinks;
  }

  private sinkFailed(s: MetricsSink, err: unknown) {
    if (this.sinkErrors.has(s.name)) return;
    this.sinkErrors.add(s.name);
    this.warn(`warning: metrics sink ${s.name} failed (${(err as Error)?.message ?? err}); metrics.jsonl is unaffected`);
  }

  /** Close the files and flush + close the sinks (waits for them: W&B uploads its last rows here). */
  async finish(): Promise<void> {
    this.closeFiles();
    this.releaseLock();
    const sinks = this.sinks;
    this.sinks = [];
    await Promise.all(sinks.map((s) => s.close().catch((err) => this.sinkFailed(s, err))));
  }

  logSample(row: SampleRecord): void {
    (this.samplesOut ??= new JsonlAppender(this.samplesPath)).append(row);
  }

  readMetrics(): StepMetrics[] {
    return readJsonlFile<StepMetrics>(this.metricsPath);
  }

  readSamples(): SampleRecord[] {
    return readJsonlFile<SampleRecord>(this.samplesPath);
  }

  writeSummary(summary: RunSummary): void {
    checkSummary(summary);
    writeJsonAtomic(this.summaryPath, summary);
  }

  readSummary(): RunSummary | null {
    return existsSync(this.summaryPath) ? (JSON.parse(readFileSync(this.summaryPath, "utf8")) as RunSummary) : null;
  }

  saveCheckpoint(step: number, write: (tmpDir: string) => void | Promise<void>, o: { keepLast?: number; meta?: Record<string, unknown> } = {}): Promise<CheckpointInfo> {
    return saveCheckpoint(this.dir, step, write, o);
  }

  latestCheckpoint(): CheckpointInfo | null {
    return findLatestCheckpoint(this.dir);
  }

  listCheckpoints(): CheckpointInfo[] {
    return listCheckpoints(this.dir);
  }

  /**
   * For an exact resume from checkpoint `step`: drop metrics and samples rows logged after it (they will be logged
   * again), atomically. Returns how many rows were dropped.
   */
  rewindTo(step: number): { metrics: number; samples: number } {
    this.closeFiles();
    const cut = (path: string) => {
      if (!existsSync(path)) return 0;
      const rows = readJsonlFile<{ step?: number }>(path);
      const keep = rows.filter((r) => !(typeof r.step === "number" && r.step > step));
      writeFileAtomic(path, keep.map((r) => `${JSON.stringify(r)}\n`).join(""));
      return rows.length - keep.length;
    };
    return { metrics: cut(this.metricsPath), samples: cut(this.samplesPath) };
  }

  /** Close the files; sinks are asked to flush and close in the background (await {@link finish} to wait for them). */
  close(): void {
    if (this.sinks.length) void this.finish();
    else {
      this.closeFiles();
      this.releaseLock();
    }
  }

  private releaseLock(): void {
    this.lock?.release();
    this.lock = null;
  }

  private closeFiles(): void {
    this.metricsOut?.close();
    this.samplesOut?.close();
    this.metricsOut = this.samplesOut = null;
  }

  toString(): string {
    return `RunFolder(${basename(this.dir)})`;
  }
}

