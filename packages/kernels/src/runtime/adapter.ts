// Adapter detection, in one place: kernels pick workgroup shapes and plans by it, tests and benchmarks size their
// cases by it.
import type { Gpu } from "./device.js";

/**
 * True for adapters that run compute on the CPU (Mesa lavapipe/llvmpipe, SwiftShader, WARP, or any adapter that
 * says it is a fallback): they favour small workgroups and few in flight.
 */
export function isCpuAdapter(gpu: Pick<Gpu, "adapter">): boolean {
  const a = gpu.adapter;
  return a.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader|warp|software/i.test(`${a.vendor} ${a.architecture} ${a.description}`);
}
