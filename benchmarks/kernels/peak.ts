// "Fraction of peak" for benchmark rows: each row that carries its minimum work (`flops`, `bytes`) and its kernel
// time (`kernelMs`) gets `fractionOfPeak` against the adapter peak measured in the same run (packages/kernels
// peak.ts): GFLOP/s ÷ peak GFLOP/s when flops/bytes ≥ the ridge point (compute-bound), else GB/s ÷ peak GB/s
// (memory-bound). `ofPeak` is the printed form, e.g. "31% C" / "4% M". Rows measured end to end are rated on their
// kernel-only time (the upload/download a peer's session.run includes is not the kernel's work).
import { fractionOfPeak, isCpuAdapter, measureAdapterPeak, type AdapterPeak, type Gpu } from "@nr/kernels";
import type { BenchRow } from "../lib/report.js";

/** The work fields a family attaches to a row so it can be rated against the peak. */
export function work(flops: number, bytes: number, kernelMs: number): { flops: number; bytes: number; kernelMs: number } {
  return { flops, bytes, kernelMs };
}

export async function measurePeak(gpu: Gpu): Promise<AdapterPeak> {
  const t0 = performance.now();
  const peak = await measureAdapterPeak(gpu, { cpu: isCpuAdapter(gpu) });
  console.log(
    `measured peak: ${peak.gflops.toFixed(2)} GFLOP/s (${peak.flopsDetail.config}); ${peak.gbps.toFixed(2)} GB/s ` +
      `(shader copy ${peak.bandwidthDetail.shaderCopyGBps.toFixed(2)}, copyBufferToBuffer ${peak.bandwidthDetail.bufferCopyGBps.toFixed(2)}, ` +
      `${(peak.bandwidthDetail.bytes / 2 ** 20).toFixed(0)} MiB moved); ridge ${peak.ridge.toFixed(1)} FLOP/byte [${((performance.now() - t0) / 1000).toFixed(1)} s]`,
  );
  return peak;
}

/** Fill fractionOfPeak / peakBound / ofPeak on every row that has flops, bytes and kernelMs. */
export function ratePeak(rows: BenchRow[], peak: AdapterPeak): BenchRow[] {
  for (const r of rows) {
    const { flops, bytes, kernelMs } = r as { flops?: number; bytes?: number; kernelMs?: number };
    if (typeof flops !== "number" || typeof bytes !== "number" || typeof kernelMs !== "number" || !(kernelMs > 0)) continue;
    const f = fractionOfPeak({ flops, bytes, ms: kernelMs }, peak);
    r.fractionOfPeak = f.fraction;
    r.peakBound = f.bound;
    const pct = 100 * f.fraction;
    r.ofPeak = `${pct >= 10 ? pct.toFixed(0) : pct.toPrecision(2)}% ${f.bound === "compute" ? "C" : "M"}`;
  }
  return rows;
}

export function peakMeta(peak: AdapterPeak) {
  return {
    peak: { gflops: peak.gflops, gbps: peak.gbps, ridgeFlopPerByte: peak.ridge, flops: peak.flopsDetail, bandwidth: peak.bandwidthDetail },
    ofPeakNote:
      "ofPeak = kernel-only rate ÷ measured peak: C = compute-bound (FLOP/byte ≥ ridge; GFLOP/s ÷ peak GFLOP/s), M = memory-bound (GB/s ÷ peak GB/s); bytes = each operand read once + outputs written once; the bandwidth peak streams 64 MiB buffers, so a memory-bound row whose data stays in cache can exceed 100%",
  };
}
