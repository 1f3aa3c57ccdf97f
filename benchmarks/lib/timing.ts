// Wall-clock timing of recorded GPU work, for benchmarks that measure per-call costs (a dispatch, a read of the
// weights): one warm-up call (it compiles), then `samples` rounds of `calls` calls in one submit + wait each.
import type { Gpu } from "@nr/kernels";

/** Best and median wall ms per call of `record` over `samples` rounds of `calls` calls each. */
export async function msPerCall(gpu: Gpu, record: () => void, calls: number, samples = 3): Promise<{ best: number; median: number }> {
  record();
  await gpu.sync();
  const perCall: number[] = [];
  for (let s = 0; s < samples; s++) {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) record();
    await gpu.sync();
    perCall.push((performance.now() - t0) / calls);
  }
  perCall.sort((a, b) => a - b);
  return { best: perCall[0], median: perCall[Math.floor((samples - 1) / 2)] };
}
