// Matmul at Qwen2.5-1.5B projection shapes (y = x·Wᵀ, W [N,K] as nn.Linear stores it).
// Ours vs onnxruntime-node's WebGPU EP (ORT's own Dawn on the same adapter) and its CPU EP, same run.
// Comparable unit: one end-to-end call = upload x, compute, download y (what session.run does); the weight is
// resident on the device for both. Ours kernel-only GFLOP/s (R dispatches per submit) is reported beside it.
import { matmul, type Gpu, type GpuBuffer, toF16Array } from "@nr/kernels";
import { buildModel, ortSession, tensor, timeOrt } from "../lib/ort.js";
import { higherIsBetter, timeIt, type BenchRow } from "../lib/report.js";

export const MATMUL_SHAPES = [
  { name: "q/o_proj", N: 1536, K: 1536 },
  { name: "k/v_proj", N: 256, K: 1536 },
  { name: "gate/up_proj", N: 8960, K: 1536 },
  { name: "down_proj", N: 1536, K: 8960 },
];

function randomF32(n: number, seed: number) {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 0.1;
  }
  return out;
}

async function oursTimings(gpu: Gpu, M: number, N: number, K: number, x: Float32Array, w: GpuBuffer, dtype: "f32" | "f16", iters: number) {
  const up = (a: Float32Array) => (dtype === "f16" ? gpu.upload(toF16Array(a)) : gpu.upload(a));
  const xb = up(x);
  const y = gpu.alloc(M * N * 4);
  const R = M >= 512 ? 2 : M >= 64 ? 8 : 32;
  const kernel = await timeIt(async () => {
    for (let r = 0; r < R; r++) matmul(gpu, { a: xb, b: w, c: y, M, N, K, transB: true, dtype });
    await gpu.sync();
  }, { warmup: 1, iters });
  const e2e = await timeIt(async () => {
    const xi = up(x);
    matmul(gpu, { a: xi, b: w, c: y, M, N, K, transB: true, dtype });
    await gpu.readF32(y, M * N);
    gpu.release(xi);
  }, { warmup: 1, iters });
  gpu.release(xb, y);
  return { kernelMs: kernel.medianMs / R, e2eMs: e2e.medianMs };
}

export async function benchMatmul(gpu: Gpu, opts: { Ms?: number[]; iters?: number; dtype?: "f32" | "f16"; log?: boolean } = {}): Promise<BenchRow[]> {
  const Ms = opts.Ms ?? [1, 64, 512];
  const iters = opts.iters ?? 3;
  const dtype = opts.dtype ?? "f32";
  const rows: BenchRow[] = [];
  for (const shape of MATMUL_SHAPES) {
    const { N, K } = shape;
    const wHost = randomF32(N * K, N + K);
    const w = dtype === "f16" ? gpu.upload(toF16Array(wHost)) : gpu.upload(wHost);
    // ORT computes x·Wᵀ as MatMul(x, Wᵀ) with the transposed weight as an initializer: same math, its best layout.
    const wT = new Float32Array(K * N);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) wT[k * N + n] = wHost[n * K + k];
    const model = buildModel({
      nodes: [{ op: "MatMul", inputs: ["x", "wT"], outputs: ["y"] }],
      inputs: [{ name: "x", type: "float32", dims: ["M", K] }],
      outputs: [{ name: "y", type: "float32", dims: ["M", N] }],
      initializers: [{ name: "wT", type: "float32", dims: [K, N], data: wT }],
    });
    const sessions = { webgpu: await ortSession(model, "webgpu"), cpu: await ortSession(model, "cpu") };
    for (const M of Ms) {
      const flop = 2 * M * N * K;
      const gf = (ms: number) => flop / ms / 1e6;
      const x = randomF32(M * K, M * 7 + N);
      const ours = await oursTimings(gpu, M, N, K, x, w, dtype, iters);
      const caseName = `M=${M} ${shape.name} ${N}x${K} ${dtype}`;
      for (const ep of ["webgpu", "cpu"] as const) {
        const { session, error } = sessions[ep];
        const peerMs = session ? await timeOrt(session, { x: tensor("float32", x, [M, K]) }, iters) : null;
        rows.push(
          higherIsBetter(caseName, "GFLOP/s end-to-end", gf(ours.e2eMs), `onnxruntime-node ${ep} EP`, peerMs ? gf(peerMs) : null, {
            oursKernelGflops: gf(ours.kernelMs),
            ...(error ? { note: error } : {}),
          }),
        );
      }
      const last = rows.slice(-2);
      if (opts.log !== false) console.log(`${caseName}: ours ${gf(ours.e2eMs).toFixed(2)} GFLOP/s e2e (${gf(ours.kernelMs).toFixed(2)} kernel-only) | ORT webgpu ${last[0].peerValue?.toFixed(2) ?? "-"} | ORT cpu ${last[1].peerValue?.toFixed(2) ?? "-"}`);
    }
    gpu.release(w);
    await sessions.webgpu.session?.release();
    await sessions.cpu.session?.release();
  }
  return rows;
}
