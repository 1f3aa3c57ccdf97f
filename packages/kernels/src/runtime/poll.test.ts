// The host-wait back-off (poll.ts): dawn.node's ticks back off during waits on CPU adapters, results are
// unchanged, and JavaScript's own setImmediate callbacks are never delayed.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { promisify } from "node:util";
import { gpuSuite } from "../testing.js";
import { isCpuAdapter } from "./adapter.js";
import { matmul, matmulReference } from "../matmul.js";
import { gpuWaitStats, tickWait } from "./poll.js";

const s = gpuSuite("poll", { beforeAll, afterAll });

describe("waiting for the GPU", () => {
  it("the schedule: at once for the first 0.5 ms, sleeps of 1/16 of the wait (≥ 0.25 ms) to 16 ms, then timers of 3–4 ms", () => {
    const at = (w: number) => tickWait(w);
    expect([0, 0.2, 0.49].map(at)).toEqual([0, 0, 0].map(() => ({ sleepMs: 0, timerMs: 0 })));
    expect([0.5, 4, 8, 15.9].map((w) => at(w).sleepMs)).toEqual([0.25, 0.25, 0.5, 15.9 / 16]);
    expect([0.5, 4, 8, 15.9].map((w) => at(w).timerMs)).toEqual([0, 0, 0, 0]);
    expect([16, 24, 31.9, 32, 1000].map((w) => at(w))).toEqual([3, 4, 4, 4, 4].map((timerMs) => ({ sleepMs: 0, timerMs })));
    // the added latency stays a small share of a long wait
    for (const w of [2, 10, 50, 500]) expect((at(w).sleepMs + at(w).timerMs) / w).toBeLessThanOrEqual(0.3);
  });

  it("on a CPU adapter waits back off to sleeps and timers, and every read is still right", async () => {
    const gpu = s.gpu;
    if (!isCpuAdapter(gpu)) {
      expect(gpuWaitStats().installed).toBe(false); // a real GPU keeps dawn.node's own polling
      return;
    }
    if (process.env.NR_GPU_WAIT === "spin") return expect(gpuWaitStats().installed).toBe(false);
    expect(gpuWaitStats().installed).toBe(true);
    const before = gpuWaitStats();
    const M = 160, N = 200, K = 700; // awkward sizes, long enough a job to wait for
    const a = Float32Array.from({ length: M * K }, () => s.rand() - 0.5);
    const b = Float32Array.from({ length: K * N }, () => s.rand() - 0.5);
    const want = matmulReference(a, b, { M, N, K });
    for (let rep = 0; rep < 3; rep++) {
      const c = gpu.upload(new Float32Array(M * N).fill(Number.NaN)); // poisoned: an unwritten element fails
      matmul(gpu, { a: gpu.upload(a), b: gpu.upload(b), c, M, N, K });
      const got = await gpu.readF32(c, M * N);
      let worst = 0;
      for (let i = 0; i < M * N; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / (1 + Math.abs(want[i])));
      expect(worst).toBeLessThan(1e-4);
      gpu.pool.release(c);
    }
    const after = gpuWaitStats();
    expect(after.waits).toBeGreaterThan(before.waits);
    expect(after.immediateTicks).toBeGreaterThan(before.immediateTicks);
    // a 3 × 45 MFLOP wait on the CPU outlasts 0.5 ms: its later ticks sleep first (or, past 16 ms, wait on timers)
    expect(after.sleptTicks + after.timerTicks).toBeGreaterThan(before.sleptTicks + before.timerTicks);
  });

  it("JavaScript's setImmediate callbacks run at once during a GPU wait, and the promisified form still works", async () => {
    const gpu = s.gpu;
    const M = 128, N = 256, K = 512;
    const c = gpu.upload(new Float32Array(M * N));
    matmul(gpu, { a: gpu.upload(new Float32Array(M * K).fill(1)), b: gpu.upload(new Float32Array(K * N).fill(1)), c, M, N, K });
    const order: string[] = [];
    const read = gpu.readF32(c, 4).then((v) => order.push(`read ${v[0]}`));
    let spins = 0;
    await new Promise<void>((done) => {
      const spin = () => (++spins < 50 ? setImmediate(spin) : (order.push("50 immediates"), done()));
      setImmediate(spin);
    });
    await read;
    expect(order).toContain(`read ${K}`);
    expect(spins).toBe(50);
    expect(await promisify(setImmediate)("value")).toBe("value");
    gpu.pool.release(c);
  });
});
