import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { acquireRunLock, LOCK_FILE, lockHolder, RunLockedError } from "./lock.js";

const tmp = () => mkdtempSync(join(tmpdir(), "nr-lock-"));
/** The built lock module, for scripts run in other processes. */
const lockJs = new URL("../../dist/run/lock.js", import.meta.url).href;

/** Runs an ES-module script in a fresh node process; resolves with its trimmed stdout. */
function runNode(script: string): Promise<string> {
  return new Promise((done) => {
    const p = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.on("close", () => done(out.trim()));
  });
}

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

  it("processes racing for it: one wins, and every loser names the winner (never a half-written lock)", async () => {
    const dir = tmp();
    // Each racer waits for the same start time, tries once, prints WON or the refusal, holds a win for a moment.
    const start = Date.now() + 1500;
    const script = `const { acquireRunLock } = await import(${JSON.stringify(lockJs)});
      while (Date.now() < ${start}) {}
      try { acquireRunLock(${JSON.stringify(dir)}); console.log("WON " + process.pid); await new Promise((r) => setTimeout(r, 1500)); }
      catch (e) { console.log(e.message); }`;
    const lines = await Promise.all(Array.from({ length: 6 }, () => runNode(script)));
    const winners = lines.filter((l) => l.startsWith("WON "));
    expect(winners, lines.join("\n")).toHaveLength(1);
    const pid = winners[0].slice(4);
    for (const l of lines.filter((x) => !x.startsWith("WON "))) expect(l).toContain(`is in use by pid ${pid} on ${hostname()}`);
  }, 60_000);

  it("is never seen empty or half-written: a reader polling while another process takes and releases it", async () => {
    const dir = tmp();
    const file = join(dir, LOCK_FILE);
    const writer = `const { acquireRunLock } = await import(${JSON.stringify(lockJs)});
      const until = Date.now() + 3000; let n = 0;
      while (Date.now() < until) { acquireRunLock(${JSON.stringify(dir)}).release(); n++; }
      console.log(n);`;
    const reader = `const { readFileSync } = await import("node:fs");
      const until = Date.now() + 3000; let seen = 0, bad = 0;
      while (Date.now() < until) { let t; try { t = readFileSync(${JSON.stringify(file)}, "utf8"); } catch { continue; }
        seen++; try { JSON.parse(t); } catch { bad++; } }
      console.log(JSON.stringify({ seen, bad }));`;
    const [taken, read] = await Promise.all([runNode(writer), runNode(reader)]);
    const { seen, bad } = JSON.parse(read) as { seen: number; bad: number };
    expect(Number(taken)).toBeGreaterThan(100);
    expect(seen).toBeGreaterThan(0);
    expect(bad, `${bad} of ${seen} reads of the lock were not whole JSON (${taken} locks taken)`).toBe(0);
  }, 60_000);
});
