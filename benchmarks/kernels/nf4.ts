// Fused NF4 matmul at Qwen2.5-1.5B projection shapes (W [N, K] as nn.Linear stores it, bitsandbytes NF4, block 64,
// double-quantised scales dequantised at load): forward y = x·Wᵀ and input gradient dx = dy·W, x/dy f32.
// M ∈ {1, 64}; M = 512 too on real GPUs, and on CPU adapters (lavapipe) only with NR_HEAVY=1.
//
// Metric: GFLOP/s = 2·M·N·K / time, kernel only (R dispatches recorded, one submit + wait, median of a few).
// Peer: onnxruntime-node's com.microsoft MatMulBnb4 (block_size=64, quant_type=1 = NF4) on its WebGPU EP, created
// with CPU fallback disabled so the node really runs on the GPU (the CPU EP is used only if the WebGPU EP refuses;
// the row says so). session.run includes moving x in and y out, so peer numbers are end to end; our end-to-end
// number (upload x, compute, download y) is reported beside the kernel-only one as `oursEndToEndGflops`.
//  - forward: MatMulBnb4(K, N) on exactly our bytes (packed codes, absmax = our f32 per-block scales). Each row
//    records max |ours − ORT| / max |ORT| on the same input: both decode the same bytes, so this checks the format.
//  - input gradient: ORT's own route to dy·W, MatMulBnb4 with transB=0/training_mode=1, exists only on its CPU EP
//    and does not compute dy·W for W [N, K] stored the bnb way (it reads the dequantised buffer transposed; the
//    measured mismatch is recorded in `note`). So the peer is MatMulBnb4 with K'=N, N'=K on an NF4 copy of Wᵀ —
//    the same product and FLOPs, at the price of a second, transposed 4-bit copy of every weight that our kernel
//    does not need (its numbers differ from ours by that copy's own quantisation, so no diff is recorded).
import { downloadNf4, isCpuAdapter, nf4DequantizeReference, nf4HostScales, nf4Matmul, nf4MatmulReference, nf4QuantizeReference, quantizeNf4, releaseNf4, type Gpu } from "@nr/kernels";
import { buildModel, ort, tensor, timeOrt } from "../lib/ort.js";
import { higherIsBetter, timeIt, type BenchRow } from "../lib/report.js";
import { work } from "./peak.js";

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

/** A MatMulBnb4 session: Y[M, n] = A[M, k] · dequant(B as [n, k])ᵀ (or ORT's transB=0 training variant). */
async function ortBnb4(o: { k: number; n: number; packed: Uint8Array; absmax: Float32Array; ep: "webgpu" | "cpu"; trainingTransB0?: boolean }) {
  const { k, n } = o;
  const model = buildModel({
    nodes: [
      {
        op: "MatMulBnb4",
        domain: "com.microsoft",
        inputs: ["A", "B", "absmax"],
        outputs: ["Y"],
        attributes: o.trainingTransB0 ? { K: k, N: n, block_size: 64, quant_type: 1, transB: 0, training_mode: 1 } : { K: k, N: n, block_size: 64, quant_type: 1 },
      },
    ],
    inputs: [{ name: "A", type: "float32", dims: ["M", o.trainingTransB0 ? n : k] }],
    outputs: [{ name: "Y", type: "float32", dims: ["M", o.trainingTransB0 ? k : n] }],
    initializers: [
      { name: "B", type: "uint8", dims: [o.packed.length], data: o.packed },
      { name: "absmax", type: "float32", dims: [o.absmax.length], data: o.absmax },
    ],
  });
  try {
    // Without fallback disabled ORT would quietly run a node the WebGPU EP lacks on the CPU EP.
    const session = await ort.InferenceSession.create(model, {
      executionProviders: [o.ep],
      graphOptimizationLevel: "all",
      logSeverityLevel: 4,
      ...(o.ep === "webgpu" ? { extra: { session: { disable_cpu_ep_fallback: "1" } } } : {}),
    } as ort.InferenceSession.SessionOptions);
    return { session, error: undefined as string | undefined };
  } catch (err) {
    return { session: null, error: (err as Error).message.split("\n")[0] };
  }
}

/** WebGPU EP, else the CPU EP with the reason recorded. */
async function ortPeer(o: { k: number; n: number; packed: Uint8Array; absmax: Float32Array }) {
  const gpuPeer = await ortBnb4({ ...o, ep: "webgpu" });
  if (gpuPeer.session) return { ep: "webgpu" as const, session: gpuPeer.session, note: undefined };
  const cpuPeer = await ortBnb4({ ...o, ep: "cpu" });
  return { ep: "cpu" as const, session: cpuPeer.session, note: `ORT WebGPU EP: ${gpuPeer.error}; peer on the CPU EP${cpuPeer.error ? ` (also failed: ${cpuPeer.error})` : ""}` };
}

/** Does ORT's transB=0 / training_mode=1 MatMulBnb4 (CPU EP) compute dy·W for a bnb [N, K] weight? Max rel. error. */
async function probeOrtTransB0(): Promise<string> {
  const N = 16;
  const K = 128;
  const wv = randomF32(N * K, 5, 0.1);
  const q = nf4QuantizeReference(wv, { doubleQuant: false });
  const deq = nf4DequantizeReference(q.packed, q.absmax, N * K);
  const p = await ortBnb4({ k: K, n: N, packed: q.packed, absmax: q.absmax, ep: "cpu", trainingTransB0: true });
  if (!p.session) return `ORT transB=0/training_mode=1 on the CPU EP: ${p.error}`;
  const M = 3;
  const dy = randomF32(M * N, 9, 1);
  const y = (await p.session.run({ A: tensor("float32", dy, [M, N]) })).Y.data as Float32Array;
  await p.session.release();
  const want = nf4MatmulReference(dy, deq, { M, N, K, mode: "inputGrad" });
  let maxAbs = 0;
  let diff = 0;
  for (let i = 0; i < want.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(want[i]));
    diff = Math.max(diff, Math.abs(y[i] - want[i]));
  }
  return `ORT's transB=0/training_mode=1 MatMulBnb4 (CPU EP only) vs float64 dy·W at [${N}, ${K}]: max rel error ${(diff / maxAbs).toExponential(2)}`;
}

export async function benchNf4(gpu: Gpu, opts: { Ms?: number[]; iters?: number; shapes?: typeof NF4_SHAPES; log?: boolean } = {}): Promise<BenchRow[]> {
  const cpu = isCpuAdapter(gpu);
  const heavy = process.env.NR_HEAVY === "1";
  const Ms = opts.Ms ?? (cpu && !heavy ? [1, 64] : [1, 64, 512]);
  if (!opts.Ms && cpu && !heavy) console.log("  nf4: M = 512 skipped on this CPU adapter (NR_HEAVY=1 runs it); M ∈ {1, 64} at full Qwen shapes");
  const iters = opts.iters ?? (cpu ? 5 : 7);
  const rows: BenchRow[] = [];
  const transB0 = await probeOrtTransB0();
  for (const shape of opts.shapes ?? NF4_SHAPES) {
    const { N, K } = shape;
    const wHost = randomF32(N * K, N * 31 + K, 0.05);
    const wIn = gpu.upload(wHost, "bench_nf4_src");
    const w = quantizeNf4(gpu, { input: wIn, dtype: "f32", N, K, label: "bench_nf4" });
    const host = await downloadNf4(gpu, w);
    gpu.release(wIn);
    const scales = nf4HostScales(host);
    // Wᵀ [K, N] quantised on its own (the copy ORT needs for the input gradient).
    const wT = new Float32Array(N * K);
    for (let r = 0; r < N; r++) for (let c = 0; c < K; c++) wT[c * N + r] = wHost[r * K + c];
    const wTIn = gpu.upload(wT, "bench_nf4_srcT");
    const wTq = quantizeNf4(gpu, { input: wTIn, dtype: "f32", N: K, K: N, doubleQuant: false, label: "bench_nf4T" });
    const hostT = await downloadNf4(gpu, wTq);
    gpu.release(wTIn);
    releaseNf4(gpu, wTq);
    const peers = {
      forward: await ortPeer({ k: K, n: N, packed: host.packed, absmax: scales }),
      inputGrad: await ortPeer({ k: N, n: K, packed: hostT.packed, absmax: hostT.absmax! }),
    };

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
        // Enough dispatches per submit that the submit/wait overhead stays small (CPU adapters: ≥ ~0.2 GFLOP).
        const R = cpu ? Math.min(16, Math.max(1, Math.round(2e8 / flop))) : M >= 512 ? 4 : 16;
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
        if (peer.session && mode === "forward") {
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
        }
        if (peer.session) {
          const feeds = { A: tensor("float32", a, [M, inCols]) };
          await peer.session.run(feeds); // warm
          peerMs = await timeOrt(peer.session, feeds, iters, 0);
        }
        const what = mode === "forward" ? "forward x·Wᵀ" : "input-grad dy·W";
        const caseName = `M=${M} ${shape.name} ${N}x${K} ${what}`;
        const note = [peer.note, mode === "inputGrad" ? `peer multiplies by an NF4 copy of Wᵀ; ${transB0}` : undefined].filter(Boolean).join("; ") || undefined;
        rows.push(
          higherIsBetter(caseName, "GFLOP/s (kernel)", gf(kernel.medianMs / R), `onnxruntime-node MatMulBnb4 ${peer.ep} EP${mode === "inputGrad" ? " on NF4(Wᵀ)" : ""} (session.run, end to end)`, peerMs ? gf(peerMs) : null, {
            oursEndToEndGflops: gf(e2e.medianMs),
            maxRelDiffVsOrt: maxRelDiff,
            // 4-bit codes + f32 block scales + f32 activations in and out.
            ...work(flop, (N * K) / 2 + (N * K / 64) * 4 + 4 * M * (inCols + outCols), kernel.medianMs / R),
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
