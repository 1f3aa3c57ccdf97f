// Measured adapter peak: what this device really does on a compute-only kernel and on a copy, so benchmark rows can
// say how far from the ceiling they are ("fraction of peak", with the roofline deciding which ceiling applies).
//
//  - FLOP/s: an FMA-chain kernel. Every invocation runs CH independent vec4 chains a = fma(a, x, y), U FMAs per chain
//    per loop trip, for `iters` trips (x, y from a uniform so nothing folds; 8 FLOP per vec4 FMA) and writes one vec4,
//    so memory traffic is nil. The trip count is scaled until one dispatch takes ≥ minMs, and the best of a few
//    shapes (workgroup size, CH, U) is kept. The unrolling matters on lavapipe: it runs every loop under an execution
//    mask, so each write of a loop-carried value costs a blend; with one FMA per chain per trip that blend is a third
//    of the instructions and the "peak" read ~25 % low (106 against 138–140 GFLOP/s on the 2-core machine).
//  - Bytes/s: a vec4 shader copy between two buffers larger than any cache (read + write both counted), and
//    copyBufferToBuffer of the same bytes; the faster of the two is the peak (both are recorded).
// Timing is wall clock around submit + wait (R launches per submit); a peak is the best of a few samples (the fastest
// launch), so a busy host lowers it less than it lowers a median.
// On CPU adapters (lavapipe) the "peak" is what the JIT-compiled shader reaches, far below the CPU's own peak.
import type { Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";

export interface PeakFlops {
  gflops: number;
  /** Workgroup size and chains of the best configuration. */
  config: string;
  ms: number;
  flops: number;
}

export interface PeakBandwidth {
  /** Best of the two copies, GB/s counting bytes read + written. */
  gbps: number;
  shaderCopyGBps: number;
  bufferCopyGBps: number;
  /** Bytes read + written per copy. */
  bytes: number;
}

export interface AdapterPeak {
  gflops: number;
  gbps: number;
  /** Arithmetic intensity (FLOP/byte) above which a kernel is compute-bound on this device. */
  ridge: number;
  flopsDetail: PeakFlops;
  bandwidthDetail: PeakBandwidth;
}

export function peakFmaWgsl(chains: number, workgroup: number, unroll = 1): string {
  const ch = Array.from({ length: chains }, (_, i) => i);
  return /* wgsl */ `
struct P { iters: u32, x: f32, y: f32, pad: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<uniform> u: P;
@compute @workgroup_size(${workgroup})
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let id = g.y * nwg.x * ${workgroup}u + g.x;
  let x = vec4<f32>(u.x);
  let y = vec4<f32>(u.y);
${ch.map((i) => `  var a${i} = vec4<f32>(f32(id & 255u) * 1e-3 + ${i}.0);`).join("\n")}
  for (var i = 0u; i < u.iters; i++) {
${Array.from({ length: unroll }, () => ch.map((i) => `    a${i} = fma(a${i}, x, y);`).join("\n")).join("\n")}
  }
  out[id] = ${ch.map((i) => `a${i}`).join(" + ")};
}
`;
}

export const COPY_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
struct P { n: u32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(2) var<uniform> u: P;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = g.y * nwg.x * 256u + g.x;
  if (i < u.n) { dst[i] = src[i]; }
}
`;

/**
 * Wall ms per call of `record`: one warm-up call (it compiles), then `samples` rounds of `calls` calls in one submit +
 * wait each; the fastest round and the median one. The benchmarks time per-call costs (a dispatch, a read of the
 * weights) with it too.
 */
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

/** 2-D grid for `groups` workgroups within maxComputeWorkgroupsPerDimension. */
function grid(gpu: Gpu, groups: number): [number, number] {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension ?? 65535;
  const x = Math.min(groups, max);
  return [x, Math.ceil(groups / x)];
}

export async function measurePeakFlops(gpu: Gpu, opts: { minMs?: number; iters?: number; cpu?: boolean } = {}): Promise<PeakFlops> {
  const cpu = opts.cpu ?? false;
  const minMs = opts.minMs ?? (cpu ? 150 : 40);
  const iters = opts.iters ?? 3;
  // Enough invocations to fill the device: 2¹⁸ on GPUs (an H100 holds ~2.7·10⁵ resident threads), 2¹² on CPUs.
  const invocations = cpu ? 4096 : 262144;
  const out = gpu.alloc(invocations * 16, "peak_fma_out");
  let best: PeakFlops | null = null;
  for (const [workgroup, chains, unroll] of [[64, 8, 1], [256, 8, 1], [64, 8, 8], [64, 16, 4], [256, 16, 4], [64, 24, 4]] as const) {
    const kernel = gpu.kernel(`peak_fma_wg${workgroup}_ch${chains}_u${unroll}`, peakFmaWgsl(chains, workgroup, unroll));
    const groups = grid(gpu, invocations / workgroup);
    const params = new ArrayBuffer(16);
    new Float32Array(params).set([0, 0.999, 1e-3], 0);
    let steps = 64;
    let ms = 0;
    // Grow the chain until one launch is long enough to time (compile happens in the first launch).
    for (;;) {
      new Uint32Array(params)[0] = steps;
      ms = (await msPerCall(gpu, () => gpu.dispatch(kernel, [out], groups, params), 1, 1)).best;
      if (ms >= minMs || steps >= 2 ** 22) break;
      steps = Math.min(2 ** 22, steps * Math.max(2, Math.ceil(minMs / Math.max(ms, 0.05))));
    }
    ms = (await msPerCall(gpu, () => gpu.dispatch(kernel, [out], groups, params), 1, iters)).best;
    const flops = invocations * steps * unroll * chains * 8;
    const gflops = flops / ms / 1e6;
    if (!best || gflops > best.gflops) best = { gflops, config: `workgroup ${workgroup}, ${chains} vec4 FMA chains × ${unroll} per trip, ${steps} trips, ${invocations} invocations`, ms, flops };
  }
  gpu.release(out);
  return best!;
}

export async function measurePeakBandwidth(gpu: Gpu, opts: { bytes?: number; iters?: number; cpu?: boolean } = {}): Promise<PeakBandwidth> {
  const cpu = opts.cpu ?? false;
  // 64 MiB per buffer: above the L2/L3 of GPUs and CPUs here, within lavapipe's 128 MiB binding limit.
  const maxBinding = gpu.limits.maxStorageBufferBindingSize ?? 2 ** 27;
  const bytes = Math.min(opts.bytes ?? 64 * 2 ** 20, Math.floor(maxBinding / 16) * 16);
  const iters = opts.iters ?? 3;
  const R = cpu ? 2 : 20;
  const src: GpuBuffer = gpu.alloc(bytes, "peak_copy_src");
  const dst: GpuBuffer = gpu.alloc(bytes, "peak_copy_dst");
  gpu.write(src, new Float32Array(bytes / 4).fill(1));
  const n = bytes / 16;
  const kernel = gpu.kernel("peak_copy_vec4", COPY_WGSL);
  const params = new Uint32Array([n, 0, 0, 0]);
  const groups = grid(gpu, Math.ceil(n / 256));
  const shaderMs = (await msPerCall(gpu, () => gpu.dispatch(kernel, [src, dst], groups, params), R, iters)).best;
  const bufferMs = (await msPerCall(gpu, () => gpu.copy(src, 0, dst, 0, bytes), R, iters)).best;
  gpu.release(src, dst);
  const shaderCopyGBps = (2 * bytes) / shaderMs / 1e6;
  const bufferCopyGBps = (2 * bytes) / bufferMs / 1e6;
  return { gbps: Math.max(shaderCopyGBps, bufferCopyGBps), shaderCopyGBps, bufferCopyGBps, bytes: 2 * bytes };
}

/** Peak FLOP/s and bytes/s of this adapter, measured now. */
export async function measureAdapterPeak(gpu: Gpu, opts: { cpu?: boolean } = {}): Promise<AdapterPeak> {
  const flopsDetail = await measurePeakFlops(gpu, opts);
  const bandwidthDetail = await measurePeakBandwidth(gpu, opts);
  return { gflops: flopsDetail.gflops, gbps: bandwidthDetail.gbps, ridge: flopsDetail.gflops / bandwidthDetail.gbps, flopsDetail, bandwidthDetail };
}

/** The least work a kernel must do: FLOPs and bytes moved to/from memory (each operand read once, outputs written once). */
export interface Work {
  flops: number;
  bytes: number;
  /** Kernel time of one call. */
  ms: number;
}

export interface PeakFraction {
  /** Roofline side: compute-bound when flops/bytes ≥ the device's ridge point. */
  bound: "compute" | "memory";
  /** GFLOP/s ÷ peak GFLOP/s (compute) or GB/s ÷ peak GB/s (memory). */
  fraction: number;
  achieved: number;
  unit: "GFLOP/s" | "GB/s";
}

export function fractionOfPeak(w: Work, peak: AdapterPeak): PeakFraction {
  const intensity = w.bytes > 0 ? w.flops / w.bytes : Infinity;
  if (intensity >= peak.ridge) {
    const achieved = w.flops / w.ms / 1e6;
    return { bound: "compute", fraction: achieved / peak.gflops, achieved, unit: "GFLOP/s" };
  }
  const achieved = w.bytes / w.ms / 1e6;
  return { bound: "memory", fraction: achieved / peak.gbps, achieved, unit: "GB/s" };
}
