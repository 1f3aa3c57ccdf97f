// Per-token layer kernels at Qwen2.5-1.5B shapes: RMSNorm forward/backward (hidden 1536; 512 and 2048 tokens),
// SwiGLU forward ([512, 8960]) and RoPE forward (512 tokens × 12 heads × 128, q only, in place). All f32.
//
// Metric: GB/s = (bytes the kernel must read + write) / time, kernel-only (R dispatches recorded, one submit, median
// of a few), and its fraction of a measured copy: copyBufferToBuffer of half those bytes (so the same bytes are
// read + written) timed the same way on the same device. The peer row for RMSNorm forward is onnxruntime-node's
// SimplifiedLayerNormalization on its WebGPU EP; session.run moves x in and y out, so that comparison is end to
// end on both sides (upload x, normalize, download y) — our kernel-only number is reported beside it.
import { isCpuAdapter, rmsNorm, rmsNormBackward, rope, swiglu, type Gpu, type GpuBuffer } from "@nr/kernels";
import { buildModel, ortSession, tensor, timeOrt } from "../lib/ort.js";
import { higherIsBetter, timeIt, type BenchRow } from "../lib/report.js";
import { work } from "./peak.js";

const H = 1536;
const EPS = 1e-6;

function randomF32(n: number, seed: number, scale = 1) {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}

/** Median ms per call of `record` (R calls recorded, one submit + wait per sample). */
async function kernelMs(gpu: Gpu, record: () => void, R: number, iters: number): Promise<number> {
  const t = await timeIt(async () => {
    for (let r = 0; r < R; r++) record();
    await gpu.sync();
  }, { warmup: 1, iters });
  return t.medianMs / R;
}

/** Copy bandwidth (GB/s counting read + write) for a copy that moves `trafficBytes` in total. */
async function copyGBps(gpu: Gpu, trafficBytes: number, R: number, iters: number): Promise<number> {
  const bytes = Math.max(4, Math.ceil(trafficBytes / 2 / 4) * 4);
  const src = gpu.alloc(bytes, "bench_copy_src");
  const dst = gpu.alloc(bytes, "bench_copy_dst");
  const ms = await kernelMs(gpu, () => gpu.copy(src, 0, dst, 0, bytes), R, iters);
  gpu.release(src, dst);
  return (2 * bytes) / ms / 1e6;
}

export async function benchNorm(gpu: Gpu, opts: { iters?: number } = {}): Promise<BenchRow[]> {
  const iters = opts.iters ?? 5;
  const slow = isCpuAdapter(gpu);
  const R = slow ? 2 : 20;
  const rows: BenchRow[] = [];
  const gbps = (bytes: number, ms: number) => bytes / ms / 1e6;
  // FLOPs are a few per element (memory-bound everywhere): `flops` per row is an estimate for the roofline.
  const addRow = async (name: string, bytes: number, ms: number, flops: number, extra: Record<string, unknown> = {}) => {
    const copy = await copyGBps(gpu, bytes, R, iters);
    const ours = gbps(bytes, ms);
    rows.push(higherIsBetter(name, "GB/s (kernel only)", ours, "buffer copy, same bytes (ratio = fraction of copy bandwidth)", copy, {
      ms, fractionOfCopy: ours / copy, ...extra, ...work(flops, bytes, ms),
    }));
    console.log(`${name}: ${ours.toFixed(2)} GB/s, ${ms.toFixed(3)} ms; copy ${copy.toFixed(2)} GB/s → ${((100 * ours) / copy).toFixed(1)}% of copy`);
    return ours;
  };

  // ORT peer for the forward (built once; the row count is a symbolic dim).
  const model = buildModel({
    nodes: [{ op: "SimplifiedLayerNormalization", inputs: ["x", "w"], outputs: ["y"], attributes: { axis: -1, epsilon: EPS } }],
    inputs: [{ name: "x", type: "float32", dims: ["M", H] }],
    outputs: [{ name: "y", type: "float32", dims: ["M", H] }],
    initializers: [{ name: "w", type: "float32", dims: [H], data: randomF32(H, 7, 1) }],
  });
  const ortWeb = await ortSession(model, "webgpu");

  const w = gpu.upload(randomF32(H, 7, 1));
  for (const M of [512, 2048]) {
    const xHost = randomF32(M * H, M);
    const x = gpu.upload(xHost);
    const y = gpu.alloc(M * H * 4, "y");
    const rstd = gpu.alloc(M * 4, "rstd");
    const fwdBytes = (2 * M * H + H + M) * 4; // x, w in; y, rstd out
    const fwdMs = await kernelMs(gpu, () => rmsNorm(gpu, { x, w, y, rstd, rows: M, H, eps: EPS }), R, iters);
    const name = `RMSNorm fwd [${M}×${H}] f32`;
    const oursKernel = await addRow(name, fwdBytes, fwdMs, 4 * M * H);

    // End to end (the unit session.run measures): upload x, normalize, read y back.
    const e2e = await timeIt(async () => {
      const xi = gpu.upload(xHost);
      rmsNorm(gpu, { x: xi, w, y, rows: M, H, eps: EPS });
      await gpu.readF32(y, M * H);
      gpu.release(xi);
    }, { warmup: 1, iters });
    const e2eBytes = (2 * M * H + H) * 4;
    let peerMs: number | null = null;
    let note: string | undefined = ortWeb.error;
    if (ortWeb.session) {
      try {
        peerMs = await timeOrt(ortWeb.session, { x: tensor("float32", xHost, [M, H]) }, iters);
      } catch (err) {
        note = (err as Error).message.split("\n")[0];
      }
    }
    rows.push(higherIsBetter(`${name} end-to-end`, "GB/s end-to-end (upload x, run, download y)", gbps(e2eBytes, e2e.medianMs), "onnxruntime-node webgpu EP SimplifiedLayerNormalization", peerMs ? gbps(e2eBytes, peerMs) : null, {
      oursKernelGBps: oursKernel,
      ...work(4 * M * H, fwdBytes, fwdMs),
      ...(note ? { note } : {}),
    }));
    console.log(`${name} end-to-end: ours ${gbps(e2eBytes, e2e.medianMs).toFixed(2)} GB/s | ORT webgpu ${peerMs ? gbps(e2eBytes, peerMs).toFixed(2) : `- (${note})`}`);

    const dy = gpu.upload(randomF32(M * H, M + 1));
    const dx = gpu.alloc(M * H * 4, "dx");
    const dw = gpu.alloc(H * 4, "dw");
    rmsNorm(gpu, { x, w, y, rstd, rows: M, H, eps: EPS });
    const bwdBytes = (3 * M * H + 2 * H + M) * 4; // dy, x, w, rstd in; dx, dw out (scratch partials not counted)
    const bwdMs = await kernelMs(gpu, () => rmsNormBackward(gpu, { dy, x, w, rstd, dx, dw, rows: M, H }), R, iters);
    await addRow(`RMSNorm bwd [${M}×${H}] f32 (dx + dw)`, bwdBytes, bwdMs, 8 * M * H);
    gpu.release(x, y, rstd, dy, dx, dw);
  }
  gpu.release(w);
  await ortWeb.session?.release();

  {
    const M = 512;
    const I = 8960;
    const gate = gpu.upload(randomF32(M * I, 11, 4));
    const upB = gpu.upload(randomF32(M * I, 12));
    const h = gpu.alloc(M * I * 4, "h");
    const ms = await kernelMs(gpu, () => swiglu(gpu, { gate, up: upB, h, M, I }), R, iters);
    await addRow(`SwiGLU fwd [${M}×${I}] f32`, 3 * M * I * 4, ms, 6 * M * I);
    gpu.release(gate, upB, h);
  }

  {
    const tokens = 512;
    const Hq = 12;
    const D = 128;
    const q = gpu.upload(randomF32(tokens * Hq * D, 13));
    const positions = gpu.upload(Uint32Array.from({ length: tokens }, (_, i) => i));
    const ms = await kernelMs(gpu, () => rope(gpu, { q, positions, tokens, Hq, D, theta: 10000 }), R, iters);
    await addRow(`RoPE fwd q [${tokens} tok × ${Hq} heads × ${D}] f32 in place`, (2 * tokens * Hq * D + tokens) * 4, ms, 3 * tokens * Hq * D);
    gpu.release(q, positions);
  }
  return rows;
}
