// `pnpm bench rollout`: generation throughput of the WebGpuGenerator — prefill and decode tokens/s at batch 1, 8
// and 64 completions (batch ≥ 8: G = 8 completions per prompt sharing that prompt's prefill) — against
// onnxruntime-node running the same checkpoint exported to ONNX (our exporter), greedily, in the same run.
// The exported graph has no KV cache, so the peer decodes by FULL RECOMPUTE: every new token re-runs the whole
// sequence [batch, prompt + generated] and takes the argmax of the last position (its prefill is one run over the
// distinct prompts). Both sides decode greedily with no end token, so every sequence is exactly --new tokens long,
// and their tokens are compared (agreement is printed; f32 near-ties may legitimately differ).
// GPU memory: the buffer pool's peak during each case (weights included) and the KV cache's share of it.
// Default: Qwen2.5-1.5B scaled down as in `pnpm bench model` (4 layers, hidden 192, MLP 1120, vocab 8192, 6:1 heads
// of dim 32), 32-token prompts, 32 new tokens, ORT's CPU EP (the faster peer on a CPU-backed adapter) — a few
// minutes on lavapipe.
// Each case also prints the host-side work of one decode step (Gpu.counters: dispatches, buffer copies, submits,
// host writes, read-backs) — the per-token overhead that dominates at batch 1 on a CPU adapter.
// Two floors of a decode step on this adapter are printed beside it: the dispatches' fixed cost and one shader
// read of the weights' bytes (weightReadMs).
// Last row: continuous batching (finished rows leave, queued prompts join) against our own static batching on the
// same number of rows, with mixed completion budgets.
// Second peer (--no-tjs to skip): transformers.js v3 generate() with its KV cache on the same model exported by
// `nr export`'s folder writer (see transformers-js.ts); rows "… vs transformers.js".
// Each side's rate is the best of --iters runs.
//   pnpm bench rollout [--prompt 32] [--new 32] [--batches 1,8,64] [--iters 2] [--ep cpu|webgpu] [--full] [--no-continuous] [--no-tjs]
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGpu, matmul, msPerCall, type Gpu } from "@nr/kernels";
import { Engine, GpuBackend, type Tensor } from "@nr/autograd";
import { exportOnnx, generateModel, loadDecoder } from "@nr/model";
import { WebGpuGenerator } from "@nr/rollout";
import { ort, ortSession, tensor, type OrtEp } from "../lib/ort.js";
import { higherIsBetter, writeResults, type BenchRow } from "../lib/report.js";
import { openTransformersJsPeer } from "./transformers-js.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const full = process.argv.includes("--full");
const P = Number(arg("prompt", "32"));
const N = Number(arg("new", "32"));
const batches = arg("batches", "1,8,64").split(",").map(Number);
const ep = arg("ep", "cpu") as OrtEp;
const iters = Number(arg("iters", "2"));
const G = 8;
for (const [k, v] of [["prompt", P], ["new", N], ["iters", iters], ...batches.map((b) => ["batches", b] as const)] as const) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${k}: expected positive integers (got ${v})`);
}
const config = full
  ? { architecture: "qwen2" as const, hiddenSize: 1536, intermediateSize: 8960, numLayers: 28, numHeads: 12, numKvHeads: 2, vocabSize: 151936, tieWordEmbeddings: true }
  : { architecture: "qwen2" as const, hiddenSize: 192, intermediateSize: 1120, numLayers: 4, numHeads: 6, numKvHeads: 1, vocabSize: 8192, tieWordEmbeddings: true };

/** Prompts of a case: batch b = (b / G) prompts × G completions when b ≥ G, else one prompt × b. */
const layout = (b: number) => (b >= G && b % G === 0 ? { prompts: b / G, n: G } : { prompts: 1, n: b });
const promptIds = (i: number) => Array.from({ length: P }, (_, t) => (i * 7919 + t * 131 + 17) % config.vocabSize);
// Ids only: no end token, so every sequence decodes exactly N tokens on both sides.
const idTokenizer = { encode: () => [], decode: (ids: readonly number[]) => ids.join(" "), stopTokenIds: [] as number[] };

const argmaxLast = (data: Float32Array, b: number, T: number, V: number) =>
  Array.from({ length: b }, (_, r) => {
    const off = (r * T + T - 1) * V;
    let best = 0;
    for (let v = 1; v < V; v++) if (data[off + v] > data[off + best]) best = v;
    return best;
  });

/** Greedy generation by full recompute in ORT: returns tokens and the prefill / decode times. */
async function ortGreedy(session: ort.InferenceSession, b: number): Promise<{ tokens: number[][]; prefillMs: number; decodeMs: number; decodeCpuMs: number }> {
  const { prompts, n } = layout(b);
  const run = async (rows: number[][]) => {
    const T = rows[0].length;
    const feeds = {
      input_ids: tensor("int64", BigInt64Array.from(rows.flat(), BigInt), [rows.length, T]),
      attention_mask: tensor("int64", new BigInt64Array(rows.length * T).fill(1n), [rows.length, T]),
      position_ids: tensor("int64", BigInt64Array.from(rows.flatMap(() => Array.from({ length: T }, (_, t) => BigInt(t)))), [rows.length, T]),
    };
    const out = await session.run(feeds);
    return argmaxLast(out.logits.data as Float32Array, rows.length, T, config.vocabSize);
  };
  const t0 = performance.now();
  const first = await run(Array.from({ length: prompts }, (_, i) => promptIds(i)));
  const prefillMs = performance.now() - t0;
  const seqs = Array.from({ length: b }, (_, r) => [...promptIds(Math.floor(r / n)), first[Math.floor(r / n)]]);
  const t1 = performance.now();
  const cpu0 = process.cpuUsage();
  for (let s = 1; s < N; s++) {
    const next = await run(seqs);
    seqs.forEach((q, r) => q.push(next[r]));
  }
  return { tokens: seqs.map((q) => q.slice(P)), prefillMs, decodeMs: performance.now() - t1, decodeCpuMs: cpuMs(process.cpuUsage(cpu0)) };
}

/**
 * Continuous vs static batching on the same slots: 16 prompts × 4 completions with budgets cycling 4, 8, 16, 32
 * tokens through 16 rows. Static: waves of 4 prompts, each wave decoding until its longest completion ends;
 * continuous: finished rows take the next prompt's samples at once. Both greedy, so the tokens must be identical.
 */
async function continuousCase(gen: WebGpuGenerator): Promise<BenchRow> {
  const slots = 16, per = 4, count = 16;
  const budgets = [4, 8, 16, 32].map((x) => Math.max(1, Math.round((x * N) / 32)));
  const specs = Array.from({ length: count }, (_, i) => ({ promptIds: promptIds(100 + i), n: per, maxNewTokens: budgets[i % 4] }));
  const o = { temperature: 0, maxNewTokens: N };
  let t0 = performance.now();
  const waves: number[][][] = [];
  for (let i = 0; i < count; i += slots / per) waves.push(...(await gen.generateIds(specs.slice(i, i + slots / per), o)).map((p) => p.map((s) => s.tokenIds)));
  const staticMs = performance.now() - t0;
  t0 = performance.now();
  const cont = (await gen.generateIds(specs, { ...o, maxBatchRows: slots })).map((p) => p.map((s) => s.tokenIds));
  const contMs = performance.now() - t0;
  const t = gen.lastTiming!;
  const tokens = cont.flat().reduce((a, q) => a + q.length, 0);
  const same = JSON.stringify(cont) === JSON.stringify(waves);
  console.log(`continuous batching: ${tokens} tokens in ${contMs.toFixed(0)} ms (mean ${t.meanLiveRows.toFixed(1)} of ${slots} rows live) vs static waves ${staticMs.toFixed(0)} ms; identical tokens: ${same}`);
  return higherIsBetter(`${count} prompts × ${per} (budgets ${budgets.join("/")}) through ${slots} rows`, "completion tokens/s (prefill included)", tokens / (contMs / 1000), "ours, static batching in waves of 16 rows", tokens / (staticMs / 1000), { meanLiveRows: +t.meanLiveRows.toFixed(2), identicalTokens: same });
}

/** CPU time of this process (every thread: JS, lavapipe's workers, ORT's pool) in ms. */
const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;

/**
 * Host-side work per decode step (sampling, read-back and the decode forward of every row): the Gpu counters of an
 * N-token generation minus those of a 1-token one (same prefill, no decode forward), divided by N − 1; and the
 * process CPU time per step the same way (a measure the other helpers' load on a shared machine disturbs less than
 * wall time).
 */
async function decodeStepCounts(gen: WebGpuGenerator, prompts: number, n: number): Promise<{ counts: Record<string, number>; cpuMsPerStep: number }> {
  const count = async (maxNewTokens: number) => {
    const c0 = { ...gen.gpu.counters };
    const cpu0 = process.cpuUsage();
    await gen.generateIds(Array.from({ length: prompts }, (_, i) => ({ promptIds: promptIds(i), n })), { temperature: 0, maxNewTokens });
    const cpu = cpuMs(process.cpuUsage(cpu0));
    return { c: Object.fromEntries(Object.entries(gen.gpu.counters).map(([k, v]) => [k, v - c0[k as keyof typeof c0]])), cpu };
  };
  const one = await count(1), all = await count(N);
  const steps = Math.max(1, N - 1);
  return { counts: Object.fromEntries(Object.entries(all.c).map(([k, v]) => [k, +((v - one.c[k]) / steps).toFixed(2)])), cpuMsPerStep: (all.cpu - one.cpu) / steps };
}

/**
 * The adapter's fixed cost of one dispatch: wall µs per dispatch of a kernel with almost no work (a 1 × 1 × 4
 * matmul), 200 of them recorded into one submit, best of 3. A decode step's dispatches × this is the part of its time
 * that no kernel speed-up removes (on lavapipe most of it is its thread pool's hand-off per dispatch).
 */
async function dispatchMicros(gpu: Gpu): Promise<number> {
  const [a, b, c] = [gpu.upload(new Float32Array(4)), gpu.upload(new Float32Array(4)), gpu.alloc(16)];
  const ms = (await msPerCall(gpu, () => matmul(gpu, { a, b, c, M: 1, N: 1, K: 4, transB: true }), 200)).best;
  gpu.release(a, b, c);
  return ms * 1000;
}

/** Sums one buffer's vec4s into 64 × 8 partial sums: every element read once, nothing else of note. */
const READ_ALL_WGSL = /* wgsl */ `
struct Params { n: u32, per: u32 }
@group(0) @binding(0) var<storage, read> W: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> Out: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> u: Params;
@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  var a = vec4<f32>(0.0);
  let base = wid.x * u.per * 8u;
  for (var i = 0u; i < u.per; i++) {
    let j = base + i * 8u + lid;
    if (j < u.n) { a += W[j]; }
  }
  Out[wid.x * 8u + lid] = a;
}`;

/**
 * The memory floor of a batch-1 decode step on this adapter: a step reads every weight at least once, so it cannot
 * take less than streaming that many bytes through a shader. Measured on one buffer of the same size (at most 64 MiB;
 * a bigger model's floor is scaled from it), filled so that no page is the kernel's shared zero page, read 5 times in
 * one submit by one dispatch each, best of 3. The weights themselves sit in ~50 buffers, and reading them one dispatch
 * each would add the per-dispatch cost measured above. Like the decode loop, the measurement reads the same bytes
 * over and over, so both see the same caches (the default model's 18 MB fits the reference machine's 32 MiB L3).
 */
async function weightReadMs(gpu: Gpu, decoder: Awaited<ReturnType<typeof loadDecoder>>["decoder"]): Promise<{ ms: number; bytes: number; measuredBytes: number }> {
  const tensors = decoder.weights.layers.flatMap((L) => [
    L.inputNorm,
    L.postAttentionNorm,
    ...[L.q, L.k, L.v, L.o, L.gate, L.up, L.down].flatMap((p) => {
      const d = p as unknown as { weight?: Tensor; bias?: Tensor | null };
      if (!d.weight) throw new Error("rollout bench: the weight floor counts dense projections only (this model is generated dense)");
      return d.bias ? [d.weight, d.bias] : [d.weight];
    }),
  ]);
  tensors.push(decoder.weights.finalNorm, decoder.weights.lmHead);
  const bytes = 4 * tensors.reduce((a, t) => a + t.size, 0); // f32 weights
  const cap = Math.min(64 * 2 ** 20, gpu.limits.maxStorageBufferBindingSize ?? 2 ** 27);
  const n = Math.floor(Math.min(bytes, cap) / 16); // vec4s read
  const buf = gpu.upload(new Float32Array(4 * n).fill(1), "weight-floor");
  const out = gpu.alloc(64 * 8 * 16, "weight-floor-out");
  const kernel = gpu.kernel("bench_read_all", READ_ALL_WGSL);
  const params = new Uint32Array([n, Math.ceil(n / (64 * 8))]);
  const best = (await msPerCall(gpu, () => gpu.dispatch(kernel, [buf, out], [64], params), 5)).best;
  gpu.release(buf, out);
  return { ms: (best * bytes) / (16 * n), bytes, measuredBytes: 16 * n };
}

const dir = await mkdtemp(join(tmpdir(), "nr-bench-rollout-"));
try {
  console.log(`generating a ${full ? "Qwen2.5-1.5B-shaped" : "scaled-down Qwen2.5-1.5B-shaped"} model (${JSON.stringify(config)}); prompts ${P} tokens, ${N} new tokens, batches ${batches.join(", ")}`);
  await generateModel(join(dir, "m"), config, { seed: 0, dtype: "f32", tokenizer: false });
  const gpu = await createGpu();
  const engine = new Engine(new GpuBackend(gpu));
  const { decoder } = await loadDecoder(engine, join(dir, "m"));
  const gen = new WebGpuGenerator(engine, decoder, idTokenizer);
  // Warm-up: compile every pipeline (prefill and decode at each batch shape) once.
  for (const b of batches) {
    const { prompts, n } = layout(b);
    await gen.generateIds(Array.from({ length: prompts }, (_, i) => ({ promptIds: promptIds(i), n })), { temperature: 0, maxNewTokens: 2 });
  }
  await exportOnnx(join(dir, "m"), join(dir, "m.onnx"));
  const { session, error } = await ortSession(new Uint8Array(await readFile(join(dir, "m.onnx"))), ep);
  if (session) await ortGreedy(session, 1); // warm-up
  const peer = `onnxruntime-node ${ep} EP, greedy by full recompute (no KV cache)`;
  const tjs = process.argv.includes("--no-tjs") ? { peer: null } : await openTransformersJsPeer(join(dir, "m"), dir);
  if ("error" in tjs) console.log(tjs.error);
  const rows: BenchRow[] = [];
  const perDispatchUs = await dispatchMicros(gpu);
  console.log(`fixed cost per dispatch on this adapter: ${perDispatchUs.toFixed(0)} µs (200 near-empty dispatches in one submit, best of 3)`);
  const weights = await weightReadMs(gpu, decoder);
  const scaled = weights.measuredBytes < weights.bytes ? `, scaled from ${(weights.measuredBytes / 1e6).toFixed(0)} MB read` : "";
  console.log(`streaming the weights a decode step reads (${(weights.bytes / 1e6).toFixed(1)} MB) through a shader once takes ${weights.ms.toFixed(2)} ms on this adapter (${(weights.bytes / weights.ms / 1e6).toFixed(1)} GB/s, best of 3${scaled}): a batch-1 step's memory floor`);
  for (const b of batches) {
    const { prompts, n } = layout(b);
    // Free the pool's cached buffers so the peak counts what this case allocates on top of the weights.
    gpu.pool.trim();
    gpu.pool.resetPeak();
    const base = gpu.pool.getStats().allocatedBytes;
    // Best of `iters` runs on each side (the machine may be shared: the best run is the least disturbed one).
    let out: Awaited<ReturnType<typeof gen.generateIds>> = [];
    const ours = { prefill: 0, decode: 0 };
    // Wall time of whole calls: a 1-token generation (prefill + first token: what the peer's prefill run gives) and
    // an N-token one; decode = the N − 1 further tokens of every row over the difference. (The generator's own
    // timing splits at recording time: GPU work recorded at admission lands in the next read-back, i.e. in decode.)
    const specs = Array.from({ length: prompts }, (_, i) => ({ promptIds: promptIds(i), n }));
    for (let it = 0; it < iters; it++) {
      let t0 = performance.now();
      await gen.generateIds(specs, { temperature: 0, maxNewTokens: 1 });
      const firstMs = performance.now() - t0;
      t0 = performance.now();
      out = await gen.generateIds(specs, { temperature: 0, maxNewTokens: N });
      const allMs = performance.now() - t0;
      ours.prefill = Math.max(ours.prefill, (prompts * P) / (firstMs / 1000));
      ours.decode = Math.max(ours.decode, (b * (N - 1)) / (Math.max(1e-3, allMs - firstMs) / 1000));
    }
    const peak = gpu.pool.getStats().peakAllocatedBytes;
    const { counts: perStep, cpuMsPerStep } = await decodeStepCounts(gen, prompts, n);
    let theirs: Awaited<ReturnType<typeof ortGreedy>> | null = null;
    for (let it = 0; session && it < iters; it++) {
      const r = await ortGreedy(session, b);
      if (!theirs) theirs = r;
      theirs.prefillMs = Math.min(theirs.prefillMs, r.prefillMs);
      theirs.decodeMs = Math.min(theirs.decodeMs, r.decodeMs);
      theirs.decodeCpuMs = Math.min(theirs.decodeCpuMs, r.decodeCpuMs);
    }
    // CPU ms per generated token, each side; cpuRatio > 1: ours spends less CPU per token.
    const oursCpu = cpuMsPerStep / b, peerCpu = theirs ? theirs.decodeCpuMs / (b * (N - 1)) : null;
    const mine = out.flat().map((s) => s.tokenIds);
    const agree = theirs ? mine.filter((q, r) => q.join() === theirs.tokens[r].join()).length : null;
    const extra = {
      prompts,
      completionsPerPrompt: n,
      promptTokens: P,
      newTokens: N,
      poolPeakMiB: +(peak / 2 ** 20).toFixed(1),
      poolPeakAboveWeightsMiB: +((peak - base) / 2 ** 20).toFixed(1),
      kvCacheMiB: +(gen.kvCacheBytes(b, P + N) / 2 ** 20).toFixed(2),
      greedyAgreement: agree === null ? null : `${agree}/${b}`,
      perDecodeStep: perStep,
      // The same counts as table columns: host work per decode step (the whole batch's step, not per row).
      dispatchesPerStep: perStep.dispatches,
      submitsPerStep: perStep.submits,
      readsPerStep: perStep.reads,
      cpuMsPerToken: +oursCpu.toFixed(2),
      // The share of a decode step's wall time that its dispatches' fixed cost alone takes.
      dispatchFloorMs: +((perStep.dispatches * perDispatchUs) / 1000).toFixed(2),
      // Streaming the weights' bytes once (weightReadMs): the step's memory floor, which no dispatch count changes.
      weightReadMs: +weights.ms.toFixed(2),
      stepMs: +((1000 * b) / ours.decode).toFixed(2),
      decodeCpuMsPerToken: { ours: +oursCpu.toFixed(3), peer: peerCpu === null ? null : +peerCpu.toFixed(3), cpuRatio: peerCpu === null ? null : +(peerCpu / oursCpu).toFixed(3) },
      ...(error ? { note: error } : {}),
    };
    const name = `batch ${b} (${prompts} prompt${prompts > 1 ? "s" : ""} × ${n}${n > 1 ? ", shared prefill" : ""})`;
    rows.push(higherIsBetter(name, "prefill tokens/s", ours.prefill, peer, theirs ? (prompts * P) / (theirs.prefillMs / 1000) : null, extra));
    // The peer's decode loop makes N − 1 tokens (the first comes from its prefill).
    rows.push(higherIsBetter(name, "decode tokens/s", ours.decode, peer, theirs ? (b * (N - 1)) / (theirs.decodeMs / 1000) : null, extra));
    if (tjs.peer) {
      const t = await tjs.peer.greedy(Array.from({ length: b }, (_, r) => promptIds(Math.floor(r / n))), N, iters);
      const tAgree = `${mine.filter((q, r) => q.join() === t.tokens[r].join()).length}/${b}`;
      const tExtra = { ...extra, greedyAgreement: tAgree, peerRows: b, peerPrefillTokens: b * P };
      rows.push(higherIsBetter(`${name} vs transformers.js`, "prefill tokens/s", ours.prefill, tjs.peer.label, (b * P) / (t.prefillMs / 1000), tExtra));
      rows.push(higherIsBetter(`${name} vs transformers.js`, "decode tokens/s", ours.decode, tjs.peer.label, (b * (N - 1)) / (t.decodeMs / 1000), tExtra));
      console.log(`${name}: transformers.js prefill ${((b * P) / (t.prefillMs / 1000)).toFixed(0)} tok/s (${b} rows), decode ${((b * (N - 1)) / (t.decodeMs / 1000)).toFixed(1)} tok/s; greedy agreement with ours ${tAgree}`);
    }
    console.log(`${name}: ours prefill ${ours.prefill.toFixed(0)} tok/s, decode ${ours.decode.toFixed(1)} tok/s; peer ${theirs ? `prefill ${((prompts * P) / (theirs.prefillMs / 1000)).toFixed(0)}, decode ${((b * (N - 1)) / (theirs.decodeMs / 1000)).toFixed(1)} tok/s` : `unavailable (${error})`}; pool peak ${extra.poolPeakMiB} MiB (${extra.poolPeakAboveWeightsMiB} MiB above the weights, KV cache ${extra.kvCacheMiB} MiB); greedy agreement ${extra.greedyAgreement}; per decode step ${Object.entries(perStep).map(([k, v]) => `${v} ${k}`).join(", ")}; CPU ms per decode token ours ${oursCpu.toFixed(2)}, peer ${peerCpu?.toFixed(2) ?? "-"}; a decode step takes ${extra.stepMs} ms; its dispatches' fixed cost is ${extra.dispatchFloorMs} ms and one read of the weights ${extra.weightReadMs} ms`);
  }
  await session?.release();
  await tjs.peer?.release();
  if (!process.argv.includes("--no-continuous")) rows.push(await continuousCase(gen));
  writeResults("rollout", gpu.adapter, rows, { config, scaledDown: !full, promptTokens: P, newTokens: N, G, iters, timing: "best of iters runs, each side; ours: wall time of a 1-token call (prefill) and of an N-token call minus it (decode)", peerMode: "full recompute (the exported ONNX graph has no KV cache)", peerEp: ep }, ["dispatchesPerStep", "submitsPerStep", "readsPerStep", "cpuMsPerToken", "stepMs", "dispatchFloorMs", "weightReadMs"]);
  gpu.destroy();
} finally {
  await rm(dir, { recursive: true, force: true });
}
