// The worker pool runs the compiled dist/worker.js (vitest's globalSetup builds dist/ when it is stale).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { createVerifier, resolveWorkerUrl } from "./index.js";

const dir = mkdtempSync(join(tmpdir(), "nr-rewards-pool-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A worker that behaves like dist/worker.js, except on the predictions "HANG" (busy loop) and "OOM" (allocates without bound). */
function misbehavingWorker(): URL {
  const real = resolveWorkerUrl();
  const verifyUrl = new URL("./verify.js", real).href;
  const file = join(dir, "bad-worker.mjs");
  writeFileSync(
    file,
    `import { parentPort } from "node:worker_threads";
import { verify } from ${JSON.stringify(verifyUrl)};
parentPort.on("message", (m) => {
  if (m.prediction === "HANG") { for (;;) {} }
  if (m.prediction === "OOM") { const keep = []; for (;;) keep.push(new Array(1e6).fill(Math.random())); }
  parentPort.postMessage({ id: m.id, result: verify(m.prediction, m.gold, m.options) });
});
parentPort.postMessage({ ready: true });
`,
  );
  return pathToFileURL(file);
}

describe("createVerifier", () => {
  it("resolves dist/worker.js from the sources and from dist", () => {
    expect(resolveWorkerUrl().pathname).toMatch(/dist\/worker\.js$/);
  });

  it("verifies batches in parallel and agrees with verify()", async () => {
    const v = createVerifier({ workers: 2, timeoutMs: 5000 });
    try {
      const pairs = Array.from({ length: 300 }, (_, i) => ({ prediction: `so \\boxed{\\frac{${2 * i}}{2}}`, gold: String(i === 7 ? 8 : i) }));
      const rs = await v.verifyBatch(pairs);
      expect(rs.filter((r) => r.correct).length).toBe(299);
      expect(rs[7].correct).toBe(false);
      expect(v.stats()).toMatchObject({ completed: 300, timeouts: 0, crashes: 0 });
      const r = await v.reward("<think>2+2</think> \\boxed{4}", "4", { formatBonus: 0.1 });
      expect(r).toMatchObject({ reward: 1.1, correct: true, formatOk: true, unscorable: false });
      const withOptions = await v.verify("10, 4, -2", "4, 10, -2", { unorderedLists: true });
      expect(withOptions.correct).toBe(true);
    } finally {
      await v.close();
    }
  });

  it("a hung verification times out as unscorable; the pool replaces the worker and keeps serving", async () => {
    const v = createVerifier({ workers: 1, timeoutMs: 300, workerUrl: misbehavingWorker() });
    try {
      const t0 = performance.now();
      const [hung, after] = await Promise.all([v.verify("HANG", "1"), v.verify("\\boxed{1}", "1")]);
      expect(hung).toMatchObject({ correct: false, unscorable: true });
      expect(hung.reason).toMatch(/timeout/);
      expect(after.correct).toBe(true);
      expect(performance.now() - t0).toBeLessThan(20_000);
      expect(v.stats()).toMatchObject({ timeouts: 1, restarts: 1 });
      const reward = await v.reward("HANG", "1");
      expect(reward.unscorable).toBe(true);
      expect(Number.isNaN(reward.reward)).toBe(true);
    } finally {
      await v.close();
    }
  });

  it("an exploding verification (out of memory) is a crash result, not a crash", async () => {
    const v = createVerifier({ workers: 1, timeoutMs: 30_000, maxOldGenerationSizeMb: 24, workerUrl: misbehavingWorker() });
    try {
      const r = await v.verify("OOM", "1");
      expect(r).toMatchObject({ correct: false, unscorable: true });
      expect(r.reason).toMatch(/crash/);
      expect((await v.verify("2", "2")).correct).toBe(true);
      expect(v.stats().crashes).toBe(1);
    } finally {
      await v.close();
    }
  });

  it("close() settles pending calls and later calls", async () => {
    const v = createVerifier({ workers: 1, timeoutMs: 10_000, workerUrl: misbehavingWorker() });
    const pending = v.verify("HANG", "1");
    await new Promise((r) => setTimeout(r, 100));
    await v.close();
    expect((await pending).reason).toMatch(/closed/);
    expect((await v.verify("1", "1")).reason).toMatch(/closed/);
  });
});
