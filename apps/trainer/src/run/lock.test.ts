import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { acquireRunLock, LOCK_FILE, lockHolder, RunLockedError } from "./lock.js";

const tmp = () => mkdtempSync(join(tmpdir(), "nr-lock-"));

describe("run.lock", () => {
  it("holds pid, host and start time; a process may reopen its own folder; the last release removes it", () => {
    const dir = tmp();
    const a = acquireRunLock(dir, "nr train --name x");
    const held = JSON.parse(readFileSync(join(dir, LOCK_FILE), "utf8"));
    expect(held).toMatchObject({ pid: process.pid, host: hostname(), command: "nr train --name x" });
    expect(Date.now() - Date.parse(held.started)).toBeLessThan(60_000);
    const b = acquireRunLock(dir);
    a.release();
    a.release(); // twice is harmless
    expect(existsSync(join(dir, LOCK_FILE))).toBe(true);
    b.release();
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
  });

  it("a live process elsewhere holds it: refused naming it; a dead one on this host: taken over and reported", async () => {
    const dir = tmp();
    const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 30000)"]);
    try {
      writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: child.pid, host: hostname(), started: "2026-01-01T00:00:00.000Z" }));
      let err: unknown;
      try {
        acquireRunLock(dir);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(RunLockedError);
      expect((err as Error).message).toContain(`is in use by pid ${child.pid} on ${hostname()} (started 2026-01-01T00:00:00.000Z)`);
      expect(lockHolder(dir)?.pid).toBe(child.pid);
      // Another host's lock cannot be checked for liveness: it is never taken over.
      writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: 1, host: `${hostname()}-other`, started: "x" }));
      expect(() => acquireRunLock(dir)).toThrow(/in use by pid 1 on .*-other/);
    } finally {
      child.kill();
    }
    const dead = Number(spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" }).stdout);
    writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: dead, host: hostname(), started: "2026-01-01T00:00:00.000Z" }));
    expect(lockHolder(dir)).toBeNull();
    const lock = acquireRunLock(dir);
    expect(lock.tookOverFrom).toMatchObject({ pid: dead });
    expect(JSON.parse(readFileSync(join(dir, LOCK_FILE), "utf8")).pid).toBe(process.pid);
    lock.release();
  });
});
