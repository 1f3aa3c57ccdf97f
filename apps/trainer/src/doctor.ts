// `nr doctor`: what WebGPU adapter we run on, its features and limits, and one checked matmul with its speed.
// `nr doctor --model DIR [--preset P]` adds, per phase of `nr train`, whether that model fits this adapter (fit.ts).
import { totalmem } from "node:os";
import { createGpu, isCpuAdapter, matmul, matmulReference, type GpuOptions } from "@nr/kernels";
import { openCheckpoint } from "@nr/model";
import { fitReport, printFit, type AdapterLimits, type PhaseFit } from "./fit.js";
import { resolveConfig } from "./run/index.js";

export interface DoctorReport {
  adapter: string;
  backend: string;
  features: string[];
  limits: Record<string, number>;
  matmul: { M: number; N: number; K: number; maxAbsError: number; ms: number; gflops: number; ok: boolean };
  /** With a model: its fit per phase of the training config. */
  fit?: { model: string; preset: string; limits: AdapterLimits; phases: PhaseFit[] };
}

export interface DoctorModelOptions {
  /** A checkpoint folder (HF layout): its config.json and tensors are checked, nothing is loaded. */
  model: string;
  /** Training preset (default "default") and dotted overrides, as `nr train` takes them. */
  preset?: string;
  overrides?: Record<string, unknown>;
  /** Device memory in GiB (WebGPU does not report it; CPU adapters default to the host's RAM). */
  memoryGiB?: number;
  /** Longest prompt in tokens (default 256: a GSM8K problem in a chat template). */
  promptTokens?: number;
}

/** The fit of a model on this adapter for every phase of a training config (no weights loaded). */
async function modelFit(gpu: Awaited<ReturnType<typeof createGpu>>, o: DoctorModelOptions): Promise<NonNullable<DoctorReport["fit"]>> {
  const ck = await openCheckpoint(o.model); // config.json parsed and every tensor checked against it
  await ck.tensors.close();
  const preset = o.preset ?? "default";
  const cfg = resolveConfig({ preset, overrides: { ...o.overrides, "model.dir": o.model }, checkPaths: false });
  if (o.memoryGiB !== undefined && !(o.memoryGiB > 0)) throw new Error(`--memory must be a positive number of GiB (got ${o.memoryGiB})`);
  const memoryBytes = o.memoryGiB !== undefined ? o.memoryGiB * 2 ** 30 : isCpuAdapter(gpu) ? totalmem() : null;
  const limits = { maxStorageBufferBindingSize: gpu.limits.maxStorageBufferBindingSize, memoryBytes };
  return { model: o.model, preset, limits, phases: fitReport(ck.config, cfg, limits, o.promptTokens ?? 256) };
}

export async function doctor(options: GpuOptions = {}, model?: DoctorModelOptions): Promise<DoctorReport> {
  const gpu = await createGpu(options);
  try {
    const fit = model ? await modelFit(gpu, model) : undefined;
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
      fit,
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
  if (r.fit) {
    console.log(`\nmodel     ${r.fit.model} with preset ${r.fit.preset}`);
    printFit(r.fit.phases, r.fit.limits);
  }
}
