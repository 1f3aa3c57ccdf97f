// `nr doctor`: what WebGPU adapter we run on, its features and limits, and one checked matmul with its speed.
import { createGpu, matmul, matmulReference, type GpuOptions } from "@nr/kernels";

export interface DoctorReport {
  adapter: string;
  backend: string;
  features: string[];
  limits: Record<string, number>;
  matmul: { M: number; N: number; K: number; maxAbsError: number; ms: number; gflops: number; ok: boolean };
}

export async function doctor(options: GpuOptions = {}): Promise<DoctorReport> {
  const gpu = await createGpu(options);
  try {
    const M = 128, N = 256, K = 512;
    const a = new Float32Array(M * K).map((_, i) => Math.sin(i * 0.37));
    const w = new Float32Array(N * K).map((_, i) => Math.cos(i * 0.11));
    const aBuf = gpu.upload(a);
    const wBuf = gpu.upload(w);
    const cBuf = gpu.alloc(M * N * 4);
    matmul(gpu, { a: aBuf, b: wBuf, c: cBuf, M, N, K, transB: true });
    await gpu.sync(); // compile + warm up
    const t0 = performance.now();
    const reps = 3;
    for (let i = 0; i < reps; i++) matmul(gpu, { a: aBuf, b: wBuf, c: cBuf, M, N, K, transB: true });
    const got = await gpu.readF32(cBuf, M * N);
    const ms = (performance.now() - t0) / reps;
    const want = matmulReference(a, w, { M, N, K, transB: true });
    let maxAbsError = 0;
    for (let i = 0; i < want.length; i++) maxAbsError = Math.max(maxAbsError, Math.abs(got[i] - want[i]));
    gpu.release(aBuf, wBuf, cBuf);
    return {
      adapter: gpu.adapterName,
      backend: gpu.adapter.backend,
      features: [...gpu.features].sort(),
      limits: { ...gpu.limits },
      // |a|,|w| ≤ 1 and K = 512: f32 accumulation error stays far below 1e-2.
      matmul: { M, N, K, maxAbsError, ms, gflops: (2 * M * N * K) / ms / 1e6, ok: Number.isFinite(maxAbsError) && maxAbsError < 1e-2 },
    };
  } finally {
    gpu.destroy();
  }
}

export function printDoctor(r: DoctorReport) {
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  console.log(`adapter   ${r.adapter}`);
  console.log(`backend   ${r.backend}`);
  console.log(`features  ${r.features.join(", ")}`);
  console.log("limits");
  for (const [k, v] of Object.entries(r.limits)) {
    console.log(`  ${k.padEnd(36)} ${/Size$/.test(k) && v > 65536 ? mib(v) : v}`);
  }
  const m = r.matmul;
  console.log(
    `matmul    ${m.M}x${m.K} · (${m.N}x${m.K})ᵀ: max |error| vs float64 ${m.maxAbsError.toExponential(2)} ` +
      `${m.ok ? "OK" : "FAILED"}, ${m.ms.toFixed(2)} ms, ${m.gflops.toFixed(2)} GFLOP/s`,
  );
}
