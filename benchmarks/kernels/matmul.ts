// Matmul at Qwen2.5-1.5B projection shapes (y = x·Wᵀ, W [N,K] as nn.Linear stores it), and the backward products
// of a linear layer at T tokens: dX = dY·W, dW = dYᵀ·X, and a LoRA adapter gradient dA = dZᵀ·X (r = 16).
// Ours vs onnxruntime-node's WebGPU EP (ORT's own Dawn on the same adapter) and its CPU EP, same run.
// Comparable unit: one end-to-end call = upload the activations, compute, download the result (what session.run
// does); weights are resident on the device for both. Ours kernel-only GFLOP/s (R dispatches per submit) is reported
// beside it and is what `ofPeak` rates (benchmarks/kernels/peak.ts). Each row names the kernel and K split used.
import { matmul, matmulPlan, type Gpu, type GpuBuffer, toF16Array } from "@nr/kernels";
import { buildModel, ortSession, tensor, timeOrt } from "../lib/ort.js";
import { higherIsBetter, timeIt, type BenchRow } from "../lib/report.js";
import { work } from "./peak.js";

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

type MatmulCall = Omit<Parameters<typeof matmul>[1], "a" | "b" | "c">;

/**
 * Kernel-only ms per call (R calls per submit) and end-to-end ms (upload the `fresh` operands, one call, download C).
 * `a`/`b` are device buffers; `fresh` names which of them a caller would upload per call.
 */
async function oursTimings(gpu: Gpu, call: MatmulCall, a: GpuBuffer, b: GpuBuffer, fresh: { a?: Float32Array; b?: Float32Array }, iters: number) {
  const { M, N } = call;
  const y = gpu.alloc(M * N * 4);
  const flop = 2 * M * N * call.K;
  const R = Math.max(1, Math.min(32, Math.round(1e9 / flop)));
  const kernel = await timeIt(async () => {
    for (let r = 0; r < R; r++) matmul(gpu, { ...call, a, b, c: y });
    await gpu.sync();
  }, { warmup: 1, iters });
  const up = (x: Float32Array) => (call.dtype === "f16" ? gpu.upload(toF16Array(x)) : gpu.upload(x));
  const e2e = await timeIt(async () => {
    const ai = fresh.a ? up(fresh.a) : a;
    const bi = fresh.b ? up(fresh.b) : b;
    matmul(gpu, { ...call, a: ai, b: bi, c: y });
    await gpu.readF32(y, M * N);
    if (fresh.a) gpu.release(ai);
    if (fresh.b) gpu.release(bi);
  }, { warmup: 1, iters });
  gpu.release(y);
  return { kernelMs: kernel.medianMs / R, e2eMs: e2e.medianMs };
}

/** Rows for one product: ours (e2e, kernel-only, kernel name) vs both ORT EPs on the same inputs. */
async function rowsFor(
  gpu: Gpu,
  o: { caseName: string; call: MatmulCall; a: GpuBuffer; b: GpuBuffer; fresh: { a?: Float32Array; b?: Float32Array }; feeds: () => Record<string, ReturnType<typeof tensor>>; sessions: Record<"webgpu" | "cpu", Awaited<ReturnType<typeof ortSession>>>; iters: number; log: boolean },
): Promise<BenchRow[]> {
  const { M, N, K } = o.call;
  const flop = 2 * M * N * K;
  const gf = (ms: number) => flop / ms / 1e6;
  const esz = o.call.dtype === "f16" ? 2 : 4;
  const bytes = esz * (M * K + N * K) + 4 * M * N;
  const plan = matmulPlan(gpu, o.call);
  const ours = await oursTimings(gpu, o.call, o.a, o.b, o.fresh, o.iters);
  const rows: BenchRow[] = [];
  for (const ep of ["webgpu", "cpu"] as const) {
    const { session, error } = o.sessions[ep];
    const peerMs = session ? await timeOrt(session, o.feeds(), o.iters) : null;
    rows.push(
      higherIsBetter(o.caseName, "GFLOP/s end-to-end", gf(ours.e2eMs), `onnxruntime-node ${ep} EP`, peerMs ? gf(peerMs) : null, {
        oursKernelGflops: gf(ours.kernelMs),
        kernel: plan.label,
        kSlices: plan.slices,
        ...work(flop, bytes, ours.kernelMs),
        ...(error ? { note: error } : {}),
      }),
    );
  }
  if (o.log) {
    console.log(`${o.caseName}: ours ${gf(ours.e2eMs).toFixed(2)} GFLOP/s e2e (${gf(ours.kernelMs).toFixed(2)} kernel-only, ${plan.label}, ${plan.slices} K slice${plan.slices > 1 ? "s" : ""}) | ORT webgpu ${rows[0].peerValue?.toFixed(2) ?? "-"} | ORT cpu ${rows[1].peerValue?.toFixed(2) ?? "-"}`);
  }
  return rows;
}

export async function benchMatmul(gpu: Gpu, opts: { Ms?: number[]; iters?: number; dtype?: "f32" | "f16"; backwardTokens?: number; log?: boolean } = {}): Promise<BenchRow[]> {
  const Ms = opts.Ms ?? [1, 64, 512];
  const iters = opts.iters ?? 3;
  const dtype = opts.dtype ?? "f32";
  const log = opts.log !== false;
  const up = (x: Float32Array) => (dtype === "f16" ? gpu.upload(toF16Array(x)) : gpu.upload(x));
  const rows: BenchRow[] = [];
  for (const shape of MATMUL_SHAPES) {
    const { N, K } = shape;
    const wHost = randomF32(N * K, N + K);
    const w = up(wHost);
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
      const x = randomF32(M * K, M * 7 + N);
      const xb = up(x);
      rows.push(...(await rowsFor(gpu, {
        caseName: `M=${M} ${shape.name} ${N}x${K} ${dtype}`,
        call: { M, N, K, transB: true, dtype },
        a: xb,
        b: w,
        fresh: { a: x },
        feeds: () => ({ x: tensor("float32", x, [M, K]) }),
        sessions,
        iters,
        log,
      })));
      gpu.release(xb);
    }
    gpu.release(w);
    await sessions.webgpu.session?.release();
    await sessions.cpu.session?.release();
  }
  const T = opts.backwardTokens ?? Math.max(...Ms);
  if (T >= 16) rows.push(...(await benchBackward(gpu, { T, iters, dtype, log })));
  return rows;
}

/** Backward products of a linear layer (q/o_proj, 1536×1536) and a LoRA adapter (r = 16) at T tokens. */
async function benchBackward(gpu: Gpu, o: { T: number; iters: number; dtype: "f32" | "f16"; log: boolean }): Promise<BenchRow[]> {
  const { T, iters, dtype, log } = o;
  const H = 1536;
  const r = 16;
  const up = (x: Float32Array) => (dtype === "f16" ? gpu.upload(toF16Array(x)) : gpu.upload(x));
  const rows: BenchRow[] = [];
  const dy = randomF32(T * H, 11);
  const x = randomF32(T * H, 12);
  const dz = randomF32(T * r, 13);
  const wHost = randomF32(H * H, 14);
  const dyB = up(dy);
  const xB = up(x);
  const dzB = up(dz);
  const w = up(wHost);

  // dX = dY·W (W [N_out, K_in] resident): ORT MatMul(dY, W) with W as initializer.
  {
    const model = buildModel({
      nodes: [{ op: "MatMul", inputs: ["dy", "w"], outputs: ["dx"] }],
      inputs: [{ name: "dy", type: "float32", dims: ["T", H] }],
      outputs: [{ name: "dx", type: "float32", dims: ["T", H] }],
      initializers: [{ name: "w", type: "float32", dims: [H, H], data: wHost }],
    });
    const sessions = { webgpu: await ortSession(model, "webgpu"), cpu: await ortSession(model, "cpu") };
    rows.push(...(await rowsFor(gpu, { caseName: `bwd dX=dY·W T=${T} q/o_proj ${H}x${H} ${dtype}`, call: { M: T, N: H, K: H, dtype }, a: dyB, b: w, fresh: { a: dy }, feeds: () => ({ dy: tensor("float32", dy, [T, H]) }), sessions, iters, log })));
    await sessions.webgpu.session?.release();
    await sessions.cpu.session?.release();
  }
  // dW = dYᵀ·X and LoRA dA = dZᵀ·X (reduction over tokens): ORT Gemm(transA=1) on two session inputs.
  for (const g of [
    { name: `bwd dW=dYᵀ·X T=${T} q/o_proj ${H}x${H}`, Mo: H, a: dyB, aHost: dy },
    { name: `bwd LoRA dA=dZᵀ·X T=${T} r=${r} x ${H}`, Mo: r, a: dzB, aHost: dz },
  ]) {
    const model = buildModel({
      nodes: [{ op: "Gemm", inputs: ["a", "x"], outputs: ["g"], attributes: { transA: 1 } }],
      inputs: [
        { name: "a", type: "float32", dims: ["T", g.Mo] },
        { name: "x", type: "float32", dims: ["T", H] },
      ],
      outputs: [{ name: "g", type: "float32", dims: [g.Mo, H] }],
    });
    const sessions = { webgpu: await ortSession(model, "webgpu"), cpu: await ortSession(model, "cpu") };
    rows.push(...(await rowsFor(gpu, {
      caseName: `${g.name} ${dtype}`,
      call: { M: g.Mo, N: H, K: T, transA: true, dtype },
      a: g.a,
      b: xB,
      fresh: { a: g.aHost, b: x },
      feeds: () => ({ a: tensor("float32", g.aHost, [T, g.Mo]), x: tensor("float32", x, [T, H]) }),
      sessions,
      iters,
      log,
    })));
    await sessions.webgpu.session?.release();
    await sessions.cpu.session?.release();
  }
  gpu.release(dyB, xB, dzB, w);
  return rows;
}
