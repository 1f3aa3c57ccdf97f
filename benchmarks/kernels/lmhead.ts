// Fused LM head at Qwen2.5-1.5B shapes (H=1536, V=151936, tied embedding W [V, H]): per-token log p(target) +
// entropy + lse forward, and its backward (dh, recomputing the logits tiles), for 64 rows (NR_HEAVY=1 adds 256).
// All f32 (h and W), so the peer computes the same thing at the same precision.
//
// Metrics
//  - GFLOP/s, kernel only (record, one submit, wait): forward 2·M·V·H, backward 4·M·V·H (logits recompute + dh).
//  - extra device memory (bytes) of our path vs the naive one that materialises the M×V×4-byte logits; ours is
//    measured as the pool bytes newly allocated during the call (scratch: partials / dlogits chunks), after a trim.
//  Peer: onnxruntime-node's WebGPU EP running MatMul(h, Wᵀ) → Mul(1/T) → LogSoftmax → GatherElements(targets) for
//  the same rows in the same run (session.run: upload h, download logp — tiny next to the GEMM). The EP's failure
//  (e.g. a 933 MB initializer over the adapter's binding limit) is recorded in `note`; the CPU EP is timed as a
//  second reference row. There is no ORT peer for the backward. The WebGPU row's `note` also says which of the
//  peer's nodes the WebGPU EP takes (`probeOrtPlacement`): ORT quietly gives the others to its CPU EP.
import { isCpuAdapter, lmHeadBackward, lmHeadForward, lmHeadForwardPlan, lmHeadBackwardPlan, uploadLmHeadWeight, type Gpu, type GpuBuffer } from "@nr/kernels";
import { buildModel, ort, ortSession, tensor, timeOrt } from "../lib/ort.js";
import { higherIsBetter, lowerIsBetter, timeIt, type BenchRow } from "../lib/report.js";
import { work } from "./peak.js";

const H = 1536;
const V = 151936;
const T = 0.7;

function randomF32(n: number, seed: number, scale = 1) {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}

/**
 * Median ms of `record` + sync over `iters` runs, and the bytes newly allocated from the pool by the first run (its
 * scratch: the free list is trimmed first, later runs reuse the same buffers).
 */
async function timeWithScratch(gpu: Gpu, record: () => void, iters: number): Promise<{ ms: number; scratch: number }> {
  await gpu.sync();
  gpu.pool.trim();
  const before = gpu.pool.getStats().allocatedBytes;
  let scratch = -1;
  const t = await timeIt(async () => {
    record();
    await gpu.sync();
    if (scratch < 0) scratch = gpu.pool.getStats().allocatedBytes - before;
  }, { warmup: 0, iters });
  return { ms: t.medianMs, scratch };
}

/**
 * Where ORT's WebGPU EP runs the peer graph: a session with CPU fallback disabled is refused when any node would go to
 * the CPU EP. Probed on a small vocabulary (node placement depends on the op, not on V), for the whole graph and for
 * its MatMul alone. Measured here (onnxruntime-node 1.23, lavapipe): the whole graph is refused, the MatMul alone is
 * accepted — so the peer's GEMM runs on the WebGPU EP and LogSoftmax/GatherElements on the CPU EP.
 */
export async function probeOrtPlacement(): Promise<string> {
  const Hs = 64, Vs = 256;
  const graph = (full: boolean) =>
    buildModel({
      nodes: full
        ? [
            { op: "MatMul", inputs: ["h", "wT"], outputs: ["logits"] },
            { op: "LogSoftmax", inputs: ["logits"], outputs: ["lp"], attributes: { axis: -1 } },
            { op: "GatherElements", inputs: ["lp", "t"], outputs: ["logp"], attributes: { axis: 1 } },
          ]
        : [{ op: "MatMul", inputs: ["h", "wT"], outputs: ["logp"] }],
      inputs: [{ name: "h", type: "float32", dims: ["M", Hs] }, ...(full ? [{ name: "t", type: "int64" as const, dims: ["M", 1] as Array<string | number> }] : [])],
      outputs: [{ name: "logp", type: "float32", dims: ["M", full ? 1 : Vs] }],
      initializers: [{ name: "wT", type: "float32", dims: [Hs, Vs], data: new Float32Array(Hs * Vs) }],
    });
  const accepted = async (full: boolean) => {
    try {
      const s = await ort.InferenceSession.create(graph(full), { executionProviders: ["webgpu"], logSeverityLevel: 4, extra: { session: { disable_cpu_ep_fallback: "1" } } } as ort.InferenceSession.SessionOptions);
      await s.release();
      return true;
    } catch {
      return false;
    }
  };
  const whole = await accepted(true), matmulOnly = await accepted(false);
  return `ORT WebGPU EP with CPU fallback disabled: whole graph ${whole ? "accepted" : "refused (some nodes go to the CPU EP)"}, MatMul alone ${matmulOnly ? "accepted" : "refused"}`;
}

export async function benchLmHead(gpu: Gpu, opts: { iters?: number } = {}): Promise<BenchRow[]> {
  const slow = isCpuAdapter(gpu);
  const heavy = process.env.NR_HEAVY === "1";
  const iters = opts.iters ?? (slow ? 1 : 5);
  const Ms = heavy ? [64, 256] : [64];
  if (!heavy) console.log(`  lmhead: M = 64 rows only (256 with NR_HEAVY=1); full vocabulary ${V} × hidden ${H}`);
  const rows: BenchRow[] = [];

  const wHost = randomF32(V * H, 1234, 0.05);
  const { w, wShardRows } = uploadLmHeadWeight(gpu, wHost, V, H, { label: "bench_lm_head" });
  const common = { w, wShardRows, V, H, temperature: T };

  // Compile every pipeline once on a tiny problem (lavapipe: seconds per pipeline), so timings are kernel time.
  {
    const M = 16;
    const h = gpu.upload(randomF32(M * H, 1));
    const t = gpu.upload(new Uint32Array(M));
    const o = [gpu.alloc(M * 4), gpu.alloc(M * 4), gpu.alloc(M * 4)];
    const dh = gpu.alloc(M * H * 4);
    const small = uploadLmHeadWeight(gpu, wHost.subarray(0, 512 * H), 512, H);
    lmHeadForward(gpu, { h, w: small.w, wShardRows: small.wShardRows, V: 512, H, M, targets: t, logp: o[0], entropy: o[1], lse: o[2] });
    lmHeadBackward(gpu, { h, w: small.w, wShardRows: small.wShardRows, V: 512, H, M, targets: t, lse: o[2], entropy: o[1], gLogp: o[0], gEntropy: o[1], dh });
    await gpu.sync();
    gpu.release(h, t, dh, ...o, ...small.w);
  }

  // Peer graph (weights as an initializer, rows symbolic).
  const wT = new Float32Array(H * V);
  for (let v = 0; v < V; v++) for (let k = 0; k < H; k++) wT[k * V + v] = wHost[v * H + k];
  const model = buildModel({
    nodes: [
      { op: "MatMul", inputs: ["h", "wT"], outputs: ["logits"] },
      { op: "Mul", inputs: ["logits", "invT"], outputs: ["z"] },
      { op: "LogSoftmax", inputs: ["z"], outputs: ["lp"], attributes: { axis: -1 } },
      { op: "GatherElements", inputs: ["lp", "t"], outputs: ["logp"], attributes: { axis: 1 } },
    ],
    inputs: [
      { name: "h", type: "float32", dims: ["M", H] },
      { name: "t", type: "int64", dims: ["M", 1] },
    ],
    outputs: [{ name: "logp", type: "float32", dims: ["M", 1] }],
    initializers: [
      { name: "wT", type: "float32", dims: [H, V], data: wT },
      { name: "invT", type: "float32", dims: [], data: Float32Array.of(1 / T) },
    ],
  });
  const sessions = { webgpu: await ortSession(model, "webgpu"), cpu: await ortSession(model, "cpu") };
  const placement = await probeOrtPlacement();
  console.log(`  lmhead: ${placement}`);

  for (const M of Ms) {
    const hHost = randomF32(M * H, M, 1);
    const tHost = Uint32Array.from({ length: M }, (_, i) => (i * 7919) % V);
    const h = gpu.upload(hHost);
    const targets = gpu.upload(tHost);
    const logp = gpu.alloc(M * 4, "logp");
    const entropy = gpu.alloc(M * 4, "entropy");
    const lse = gpu.alloc(M * 4, "lse");
    const gLogp = gpu.upload(randomF32(M, 5));
    const gEnt = gpu.upload(randomF32(M, 6));
    const dh = gpu.alloc(M * H * 4, "dh");
    const fwd = () => lmHeadForward(gpu, { ...common, h, M, targets, logp, entropy, lse });
    const bwd = () => lmHeadBackward(gpu, { ...common, h, M, targets, lse, entropy, gLogp, gEntropy: gEnt, dh });
    const flop = 2 * M * V * H;
    const gf = (f: number, ms: number) => f / ms / 1e6;

    const { ms: fwdMs, scratch: fwdScratch } = await timeWithScratch(gpu, fwd, iters);
    const { ms: bwdMs, scratch: bwdScratch } = await timeWithScratch(gpu, bwd, iters);
    const naive = M * V * 4;
    const plan = { fwd: lmHeadForwardPlan(gpu, M, V, H, wShardRows).scratchBytes, bwd: lmHeadBackwardPlan(gpu, M, V, H, { shardRows: wShardRows }).scratchBytes };

    const caseName = `M=${M} H=${H} V=${V} f32 T=${T}`;
    const peerRows: Array<{ ep: "webgpu" | "cpu"; ms: number | null; note?: string }> = [];
    for (const ep of ["webgpu", "cpu"] as const) {
      const { session, error } = sessions[ep];
      let ms: number | null = null;
      let note = error;
      if (session) {
        try {
          const feeds = { h: tensor("float32", hHost, [M, H]), t: tensor("int64", BigInt64Array.from(tHost, (x) => BigInt(x)), [M, 1]) };
          ms = await timeOrt(session, feeds, Math.max(1, iters), 1);
        } catch (err) {
          note = (err as Error).message.split("\n")[0];
        }
      }
      peerRows.push({ ep, ms, note });
    }
    for (const p of peerRows) {
      rows.push(higherIsBetter(`${caseName} fwd logp+entropy`, "GFLOP/s (2·M·V·H)", gf(flop, fwdMs), `onnxruntime-node ${p.ep} EP MatMul+LogSoftmax+GatherElements (logp only)`, p.ms ? gf(flop, p.ms) : null, {
        ms: fwdMs, peerMs: p.ms, iters, ...(p.note || p.ep === "webgpu" ? { note: [p.note, p.ep === "webgpu" ? placement : undefined].filter(Boolean).join("; ") } : {}),
        // Bytes: the weight once, h in, logp/entropy/lse out.
        ...work(flop, 4 * (V * H + M * H + 3 * M), fwdMs),
      }));
    }
    rows.push(higherIsBetter(`${caseName} bwd dh (g_logp + g_entropy)`, "GFLOP/s (4·M·V·H)", gf(2 * flop, bwdMs), "none (ORT has no backward for this graph)", null, { ms: bwdMs, iters, ...work(2 * flop, 4 * (V * H + 2 * M * H + 5 * M), bwdMs) }));
    rows.push(lowerIsBetter(`${caseName} fwd extra memory`, "bytes", fwdScratch, "naive: full logits M×V×4", naive, { planned: plan.fwd }));
    rows.push(lowerIsBetter(`${caseName} bwd extra memory`, "bytes", bwdScratch, "naive: full logits M×V×4", naive, { planned: plan.bwd }));
    const wg = peerRows.find((p) => p.ep === "webgpu")!;
    const cpu = peerRows.find((p) => p.ep === "cpu")!;
    console.log(
      `${caseName}: fwd ${gf(flop, fwdMs).toFixed(2)} GFLOP/s (${fwdMs.toFixed(0)} ms), bwd ${gf(2 * flop, bwdMs).toFixed(2)} GFLOP/s (${bwdMs.toFixed(0)} ms); ` +
        `scratch fwd ${(fwdScratch / 2 ** 20).toFixed(2)} MiB, bwd ${(bwdScratch / 2 ** 20).toFixed(2)} MiB vs naive ${(naive / 2 ** 20).toFixed(1)} MiB; ` +
        `ORT webgpu ${wg.ms ? gf(flop, wg.ms).toFixed(2) : `- (${wg.note})`} | ORT cpu ${cpu.ms ? gf(flop, cpu.ms).toFixed(2) : `- (${cpu.note})`}`,
    );
    gpu.release(h, targets, logp, entropy, lse, gLogp, gEnt, dh);
  }
  gpu.release(...(w as GpuBuffer[]));
  await sessions.webgpu.session?.release();
  await sessions.cpu.session?.release();
  return rows;
}
