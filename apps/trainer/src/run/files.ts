// Files of a run folder written so that a crash never leaves a half-written one: JSON through a temp file + fsync +
// rename, JSONL appended a whole line per write (a torn last line is ignored on read), checkpoints assembled in a temp
// folder and renamed into place, old ones pruned to the last N.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";

// ---------------------------------------------------------------------------------------------------------------
// Atomic files
// ---------------------------------------------------------------------------------------------------------------

let tmpCounter = 0;
const tmpSuffix = () => `.tmp-${process.pid}-${Date.now().toString(36)}-${(tmpCounter++).toString(36)}`;

/** Write a file atomically: write + fsync a sibling temp file, then rename over the target. */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}${tmpSuffix()}`;
  const fd = openSync(tmp, "w");
  try {
    writeSync(fd, typeof data === "string" ? Buffer.from(data, "utf8") : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/** JSON.stringify (2-space indent, trailing newline) written atomically. */
export function writeJsonAtomic(path: string, value: unknown): void {
  writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

/** Read a JSONL file; a torn last line (crash mid-write) is ignored, a bad line elsewhere throws with its number. */
export function readJsonlFile<T = Record<string, unknown>>(path: string): T[] {
  if (!existsSync(path)) return [];
  const lines = readFileSync(path, "utf8").split("\n");
  const out: T[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    try {
      out.push(JSON.parse(line) as T);
    } catch (err) {
      const isLast = lines.slice(i + 1).every((l) => !l.trim());
      if (isLast) break;
      throw new Error(`${path}:${i + 1}: not JSON (${(err as Error).message})`);
    }
  }
  return out;
}

/** Appends one JSON object per line; each line goes to the OS with one write (no user-space buffering). */
export class JsonlAppender {
  private fd: number | null;
  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
    this.fd = openSync(path, "a");
  }
  append(row: object): void {
    if (this.fd === null) throw new Error(`${this.path}: appender is closed`);
    writeSync(this.fd, `${JSON.stringify(row)}\n`);
  }
  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------------------------

/** Written last into every checkpoint folder; a step-N folder without it is not a complete checkpoint. */
export const CHECKPOINT_MARKER = "checkpoint.json";

export interface CheckpointInfo {
  step: number;
  dir: string;
}

const STEP_RE = /^step-(\d+)$/;

/** Complete checkpoints under `<runDir>/checkpoints`, oldest first. */
export function listCheckpoints(runDir: string): CheckpointInfo[] {
  const root = join(runDir, "checkpoints");
  if (!existsSync(root)) return [];
  const out: CheckpointInfo[] = [];
  for (const name of readdirSync(root)) {
    const m = STEP_RE.exec(name);
    const dir = join(root, name);
    if (m && statSync(dir).isDirectory() && existsSync(join(dir, CHECKPOINT_MARKER))) out.push({ step: Number(m[1]), dir });
  }
  return out.sort((a, b) => a.step - b.step);
}

/** The latest complete checkpoint of a run folder (for `--resume`), or null. */
export function findLatestCheckpoint(runDir: string): CheckpointInfo | null {
  const all = listCheckpoints(runDir);
  return all.length ? all[all.length - 1] : null;
}

/** Remove all but the newest `keepLast` complete checkpoints (and any leftover temp folders). Returns removed dirs. */
export function pruneCheckpoints(runDir: string, keepLast: number): string[] {
  const root = join(runDir, "checkpoints");
  const removed: string[] = [];
  if (!existsSync(root)) return removed;
  for (const name of readdirSync(root)) {
    if (name.startsWith(".tmp-")) {
      rmSync(join(root, name), { recursive: true, force: true });
      removed.push(join(root, name));
    }
  }
  const all = listCheckpoints(runDir);
  for (const c of all.slice(0, Math.max(0, all.length - Math.max(1, keepLast)))) {
    rmSync(c.dir, { recursive: true, force: true });
    removed.push(c.dir);
  }
  return removed;
}

/**
 * Save checkpoint `step`: `write(tmpDir)` fills a temp folder (adapter, optimizer state, RNG, data cursor...), then
 * the marker is written and the folder renamed to `checkpoints/step-N` (replacing an older one of the same step), then
 * old checkpoints are pruned to `keepLast`. If `write` throws, the temp folder is removed and nothing changes.
 */
export async function saveCheckpoint(runDir: string, step: number, write: (tmpDir: string) => void | Promise<void>, o: { keepLast?: number; meta?: Record<string, unknown> } = {}): Promise<CheckpointInfo> {
  if (!Number.isInteger(step) || step < 0) throw new Error(`saveCheckpoint: step must be an integer >= 0 (got ${step})`);
  const root = join(runDir, "checkpoints");
  mkdirSync(root, { recursive: true });
  const tmp = join(root, `.tmp-step-${step}${tmpSuffix()}`);
  mkdirSync(tmp);
  try {
    await write(tmp);
    writeJsonAtomic(join(tmp, CHECKPOINT_MARKER), { step, saved_at: new Date().toISOString(), ...o.meta });
    const dest = join(root, `step-${step}`);
    if (existsSync(dest)) {
      const old = join(root, `.tmp-old-step-${step}${tmpSuffix()}`);
      renameSync(dest, old);
      renameSync(tmp, dest);
      rmSync(old, { recursive: true, force: true });
    } else renameSync(tmp, dest);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  if (o.keepLast !== undefined) pruneCheckpoints(runDir, o.keepLast);
  return { step, dir: join(root, `step-${step}`) };
}

