// One writer per run folder: `<run>/run.lock` holds {pid, host, started, command} of the process writing the folder.
// It appears complete and at once: written to a file of this process's own, then hard-linked into place (link fails
// when the name exists, so two processes racing for it cannot both win, and a loser never reads a half-written lock).
// It is removed when the process exits (normally, on an error, or on SIGINT/SIGTERM), and taken over when its holder
// is a dead process on this host (a SIGKILLed run).
import { existsSync, linkSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";

export const LOCK_FILE = "run.lock";

export interface LockHolder {
  pid: number;
  host: string;
  started: string;
  command?: string;
}

/** Thrown when another live process holds the folder. */
export class RunLockedError extends Error {
  constructor(
    readonly dir: string,
    readonly holder: LockHolder | null,
  ) {
    const who = holder ? `pid ${holder.pid} on ${holder.host} (started ${holder.started}${holder.command ? `: ${holder.command}` : ""})` : "another process (unreadable lock file)";
    super(`run folder ${dir} is in use by ${who}. Wait for it to finish, or stop it; if it is gone (another host, a crash), delete ${join(dir, LOCK_FILE)}`);
    this.name = "RunLockedError";
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM"; // exists, owned by someone else
  }
}

function readHolder(path: string): LockHolder | null {
  try {
    const h = JSON.parse(readFileSync(path, "utf8")) as LockHolder;
    return Number.isInteger(h.pid) && typeof h.host === "string" ? h : null;
  } catch {
    return null;
  }
}

/** Locks this process holds, with how many RunFolders share each (a process may reopen its own folder). */
const held = new Map<string, number>();
let exitHooked = false;

function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  process.on("exit", () => {
    for (const p of held.keys()) removeOwnLock(p);
  });
  // Ctrl-C / kill: release, then die with the usual status (only when nobody else handles the signal).
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      for (const p of held.keys()) removeOwnLock(p);
      if (process.listenerCount(sig) === 1) process.exit(128 + (sig === "SIGINT" ? 2 : 15));
    });
  }
}

function removeOwnLock(path: string): void {
  const h = readHolder(path);
  if (h && h.pid === process.pid && h.host === hostname()) rmSync(path, { force: true });
}

function releaseLockFile(path: string): void {
  const n = (held.get(path) ?? 0) - 1;
  if (n > 0) {
    held.set(path, n);
    return;
  }
  held.delete(path);
  removeOwnLock(path);
}

/**
 * Create `path` holding `text` unless it exists; false when it does. The text goes to a file of this process's own
 * first and is hard-linked into place, so the lock is never seen empty or half-written (with O_EXCL alone a racing
 * reader could open it between create and write). Where hard links are not supported, O_EXCL it is.
 */
function createLockFile(path: string, text: string): boolean {
  const own = `${path}.${process.pid}.tmp`;
  writeFileSync(own, text);
  try {
    linkSync(own, path);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") return false;
    if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "ENOSYS") throw err;
  } finally {
    rmSync(own, { force: true });
  }
  try {
    writeFileSync(path, text, { flag: "wx" });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  }
}

export interface RunLock {
  path: string;
  /** The stale holder that was taken over, if any (for the log). */
  tookOverFrom: LockHolder | null;
  release(): void;
}

/**
 * Take `<dir>/run.lock` (creating `dir`). Throws {@link RunLockedError} at once when a live process holds it; a lock
 * of a dead process on this host is taken over (and returned in `tookOverFrom` so the caller can say so).
 */
export function acquireRunLock(dir: string, command = process.argv.slice(1).join(" ")): RunLock {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, LOCK_FILE);
  const me: LockHolder = { pid: process.pid, host: hostname(), started: new Date().toISOString(), command };
  let tookOverFrom: LockHolder | null = null;
  const handle = (): RunLock => {
    let released = false;
    return { path, tookOverFrom, release: () => (released ? undefined : ((released = true), releaseLockFile(path))) };
  };
  if (held.has(path) && readHolder(path)?.pid === process.pid) {
    held.set(path, held.get(path)! + 1);
    return handle();
  }
  for (let attempt = 0; attempt < 3; attempt++) {
    if (createLockFile(path, `${JSON.stringify(me)}\n`)) {
      held.set(path, 1);
      hookExit();
      return handle();
    }
    const holder = readHolder(path);
    const stale = holder !== null && holder.host === hostname() && holder.pid !== process.pid && !isAlive(holder.pid);
    if (!stale) throw new RunLockedError(dir, holder);
    // Move the stale lock aside (rename is atomic: of two processes taking over, one gets ENOENT and retries,
    // then meets the winner's fresh lock).
    const aside = `${path}.stale-${process.pid}`;
    try {
      renameSync(path, aside);
      rmSync(aside, { force: true });
      tookOverFrom = holder;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
  throw new RunLockedError(dir, readHolder(path));
}

/** Who holds `dir`'s lock now (null: nobody, or a dead process on this host). */
export function lockHolder(dir: string): LockHolder | null {
  const path = join(dir, LOCK_FILE);
  if (!existsSync(path)) return null;
  const h = readHolder(path);
  return h && !(h.host === hostname() && !isAlive(h.pid)) ? h : null;
}
