// The host-wait back-off (poll.ts): dawn.node's ticks back off during long waits on CPU adapters, results are
// unchanged, and JavaScript's own setImmediate callbacks are never delayed.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { promisify } from "node:util";
import { gpuSuite } from "../testing.js";
import { isCpuAdapter } from "./adapter.js";
import { matmul, matmulReference } from "../matmul.js";
import { gpuWaitStats, tickDelay } from "./poll.js";

const s = gpuSuite("poll", { beforeAll, afterAll });

describe("waiting for the GPU", () => {
  it("the delay schedule: at once for the first 0.5 ms, then 1 ms growing to at most 4 ms", () => {
    expect([0, 0.2, 0.49].map(tickDelay)).toEqual([0, 0, 0]);
    expect([0.5, 7.9, 8, 16, 24, 31.9, 32, 1000].map(tickDelay)).toEqual([1, 1, 2, 3, 4, 4, 4, 4]);
    // the added latency stays a small share of a long wait
    for (const w of [2, 10, 50, 500]) expect(tickDelay(w) / w).toBeLessThanOrEqual(0.5);
  });

  it("on a CPU adapter long waits back off to timers, and every read is still right", async () => {
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
    expect(after.timerTicks).toBeGreaterThan(before.timerTicks); // a 3 × 45 MFLOP wait on the CPU outlasts 0.5 ms
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
