// Fused NF4 matmul at Qwen2.5-1.5B projection shapes (W [N, K] as nn.Linear stores it, bitsandbytes NF4, block 64,
// double-quantised scales dequantised at load): forward y = x·Wᵀ and input gradient dx = dy·W, x/dy f32.
// M ∈ {1, 64}; M = 512 too on real GPUs, and on CPU adapters (lavapipe) only with NR_HEAVY=1.
//
// Metric: GFLOP/s = 2·M·N·K / time, kernel only (R dispatches recorded, one submit + wait, median of a few).
// Peer: onnxruntime-node's com.microsoft MatMulBnb4 (K, N, block_size=64, quant_type=1 = NF4; B = the same packed
// uint8 codes, absmax = our f32 per-block scales), same run, same adapter:
//  - forward on the WebGPU EP, created with CPU fallback disabled so the node really runs on the GPU;
//  - input gradient = MatMulBnb4 with transB=0, training_mode=1, which the WebGPU EP does not implement (its
//    error is recorded in `note`); it is timed on the CPU EP instead.
// session.run includes moving x in and y out, so peer numbers are end to end; our end-to-end number (upload x,
// compute, download y) is reported beside the kernel-only one as `oursEndToEndGflops`. Each row also records the
// largest |ours − ORT| / max|ORT| on the same inputs (both decode the same bytes: a format check, not just a timing).
import type { Gpu } from "../../packages/kernels/src/runtime/device.js";
import { downloadNf4, nf4HostScales, nf4Matmul, quantizeNf4, releaseNf4, type Nf4MatmulMode } from "../../packages/kernels/src/nf4.js";
import { isCpuAdapter } from "../../packages/kernels/src/matmul.js";
import { buildModel, ort, tensor, timeOrt } from "../lib/ort.js";
import { higherIsBetter, timeIt, type BenchRow } from "../lib/report.js";

export const NF4_SHAPES = [
  { name: "q/o_proj", N: 1536, K: 1536 },
  { name: "k/v_proj", N: 256, K: 1536 },
  { name: "gate/up_proj", N: 8960, K: 1536 },
  { name: "down_proj", N: 1536, K: 8960 },
];

function randomF32(n: number, seed: number, scale: number) {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}

async function ortBnb4(mode: Nf4MatmulMode, N: number, K: number, packed: Uint8Array, absmax: Float32Array, ep: "webgpu" | "cpu") {
  const model = buildModel({
    nodes: [
      {
        op: "MatMulBnb4",
        domain: "com.microsoft",
        inputs: ["A", "B", "absmax"],
        outputs: ["Y"],
        attributes: mode === "forward" ? { K, N, block_size: 64, quant_type: 1 } : { K, N, block_size: 64, quant_type: 1, transB: 0, training_mode: 1 },
      },
    ],
    inputs: [{ name: "A", type: "float32", dims: ["M", mode === "forward" ? K : N] }],
    outputs: [{ name: "Y", type: "float32", dims: ["M", mode === "forward" ? N : K] }],
    initializers: [
      { name: "B", type: "uint8", dims: [packed.length], data: packed },
      { name: "absmax", type: "float32", dims: [absmax.length], data: absmax },
    ],
  });
  try {
    // Without fallback disabled ORT would quietly run an unsupported node on the CPU EP.
    const session = await ort.InferenceSession.create(model, {
      executionProviders: [ep],
      graphOptimizationLevel: "all",
      logSeverityLevel: 4,
      ...(ep === "webgpu" ? { extra: { session: { disable_cpu_ep_fallback: "1" } } } : {}),
    } as ort.InferenceSession.SessionOptions);
    return { session, error: undefined };
  } catch (err) {
    return { session: null, error: (err as Error).message.split("\n")[0] };
  }
}

export async function benchNf4(gpu: Gpu, opts: { Ms?: number[]; iters?: number; shapes?: typeof NF4_SHAPES; log?: boolean } = {}): Promise<BenchRow[]> {
  const cpu = isCpuAdapter(gpu);
  const heavy = process.env.NR_HEAVY === "1";
  const Ms = opts.Ms ?? (cpu && !heavy ? [1, 64] : [1, 64, 512]);
  const iters = opts.iters ?? (cpu ? 3 : 7);
  const rows: BenchRow[] = [];
  for (const shape of opts.shapes ?? NF4_SHAPES) {
    const { N, K } = shape;
    const wIn = gpu.upload(randomF32(N * K, N * 31 + K, 0.05), "bench_nf4_src");
    const w = quantizeNf4(gpu, { input: wIn, dtype: "f32", N, K, label: "bench_nf4" });
    const host = await downloadNf4(gpu, w);
    gpu.release(wIn);
    const scales = nf4HostScales(host);
    const peers = {
      forward: { ep: "webgpu" as const, ...(await ortBnb4("forward", N, K, host.packed, scales, "webgpu")) },
      inputGrad: { ep: "cpu" as const, ...(await ortBnb4("inputGrad", N, K, host.packed, scales, "cpu")) },
    };
    const webgpuIGrad = await ortBnb4("inputGrad", N, K, host.packed, scales, "webgpu");
    await webgpuIGrad.session?.release();
    const igradNote = webgpuIGrad.session ? undefined : `ORT WebGPU EP: ${webgpuIGrad.error}; peer timed on the CPU EP`;
    if (webgpuIGrad.session) peers.inputGrad = { ep: "webgpu", ...(await ortBnb4("inputGrad", N, K, host.packed, scales, "webgpu")) };

    for (const M of Ms) {
      const flop = 2 * M * N * K;
      const gf = (ms: number) => flop / ms / 1e6;
      for (const mode of ["forward", "inputGrad"] as const) {
        const inCols = mode === "forward" ? K : N;
        const outCols = mode === "forward" ? N : K;
        const a = randomF32(M * inCols, M * 7 + inCols, 1);
        const aBuf = gpu.upload(a, "bench_nf4_a");
        const out = gpu.alloc(M * outCols * 4, "bench_nf4_out");
        nf4Matmul(gpu, { mode, a: aBuf, w, out, M }); // compile + warm
        await gpu.sync();
        const R = cpu ? 1 : M >= 512 ? 4 : 16;
        const kernel = await timeIt(async () => {
          for (let r = 0; r < R; r++) nf4Matmul(gpu, { mode, a: aBuf, w, out, M });
          await gpu.sync();
        }, { warmup: 0, iters });
        const e2e = await timeIt(async () => {
          const ai = gpu.upload(a, "bench_nf4_a");
          nf4Matmul(gpu, { mode, a: ai, w, out, M });
          await gpu.readF32(out, M * outCols);
          gpu.release(ai);
        }, { warmup: 0, iters });
        const ours = await gpu.readF32(out, M * outCols);
        gpu.release(aBuf, out);

        const peer = peers[mode];
        let peerMs: number | null = null;
        let maxRelDiff: number | null = null;
        if (peer.session) {
          const feeds = { A: tensor("float32", a, [M, inCols]) };
          const res = await peer.session.run(feeds);
          const y = res.Y.data as Float32Array;
          let maxAbs = 0;
          let diff = 0;
          for (let i = 0; i < y.length; i++) {
            maxAbs = Math.max(maxAbs, Math.abs(y[i]));
            diff = Math.max(diff, Math.abs(y[i] - ours[i]));
          }
          maxRelDiff = diff / (maxAbs || 1);
          peerMs = await timeOrt(peer.session, feeds, iters, 0);
        }
        const what = mode === "forward" ? "forward x·Wᵀ" : "input-grad dy·W";
        const caseName = `M=${M} ${shape.name} ${N}x${K} ${what}`;
        const note = mode === "inputGrad" ? igradNote : peer.error ? `ORT ${peer.ep} EP: ${peer.error}` : undefined;
        rows.push(
          higherIsBetter(caseName, "GFLOP/s (kernel)", gf(kernel.medianMs / R), `onnxruntime-node MatMulBnb4 ${peer.ep} EP (session.run, end to end)`, peerMs ? gf(peerMs) : null, {
            oursEndToEndGflops: gf(e2e.medianMs),
            maxRelDiffVsOrt: maxRelDiff,
            ...(note ? { note } : {}),
          }),
        );
        if (opts.log !== false) {
          console.log(
            `${caseName}: ours ${gf(kernel.medianMs / R).toFixed(2)} GFLOP/s kernel (${gf(e2e.medianMs).toFixed(2)} e2e) | ORT ${peer.ep} ${peerMs ? gf(peerMs).toFixed(2) : "-"} | max rel diff ${maxRelDiff?.toExponential(2) ?? "-"}`,
          );
        }
      }
    }
    releaseNf4(gpu, w);
    await peers.forward.session?.release();
    await peers.inputGrad.session?.release();
  }
  return rows;
}
