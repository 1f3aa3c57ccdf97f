// `pnpm bench model`: decoder forward and forward+backward tokens/s on the GPU, against onnxruntime-node running the
// same checkpoint exported to ONNX (our exporter) on its WebGPU and CPU EPs, forward only, same run.
// The default config is Qwen2.5-1.5B scaled down (layers 28→4, hidden 1536→192, MLP 8960→1120, vocab 151936→8192,
// 12:2 heads → 6:1 of dim 32) so a CPU-backed adapter finishes in about a minute; `--full` uses the real 1.5B shape.
//   pnpm bench model [--batch 4] [--seq 64] [--iters 2] [--full]
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGpu } from "@nr/kernels";
import { Engine, GpuBackend } from "@nr/autograd";
import { exportOnnx, generateModel, loadDecoder, makeBatch } from "@nr/model";
import { LoraModel } from "@nr/lora";
import { ortSession, tensor, timeOrt } from "../lib/ort.js";
import { higherIsBetter, timeIt, writeResults, type BenchRow } from "../lib/report.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const full = process.argv.includes("--full");
const B = Number(arg("batch", "4"));
const T = Number(arg("seq", "64"));
const iters = Number(arg("iters", "2"));
const config = full
  ? { architecture: "qwen2" as const, hiddenSize: 1536, intermediateSize: 8960, numLayers: 28, numHeads: 12, numKvHeads: 2, vocabSize: 151936, tieWordEmbeddings: true }
  : { architecture: "qwen2" as const, hiddenSize: 192, intermediateSize: 1120, numLayers: 4, numHeads: 6, numKvHeads: 1, vocabSize: 8192, tieWordEmbeddings: true };

const dir = await mkdtemp(join(tmpdir(), "nr-bench-model-"));
try {
  console.log(`generating a ${full ? "Qwen2.5-1.5B-shaped" : "scaled-down Qwen2.5-1.5B-shaped"} model (${JSON.stringify(config)})`);
  await generateModel(join(dir, "m"), config, { seed: 0, dtype: "f32", tokenizer: false });
  const gpu = await createGpu();
  const engine = new Engine(new GpuBackend(gpu));
  const { decoder } = await loadDecoder(engine, join(dir, "m"));
  const lora = new LoraModel(decoder);
  lora.addAdapter("bench", { r: 16, alpha: 32 });
  const rows = Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => (b * 131 + t * 17) % config.vocabSize));
  const tokens = B * T;

  const fwd = await timeIt(async () => {
    await engine.scope(async () => {
      const batch = makeBatch(engine, rows);
      const res = engine.noGrad(() => decoder.forward(batch));
      await res.logp.read();
    });
  }, { warmup: 1, iters });
  const fwdBwd = await timeIt(async () => {
    await engine.scope(async () => {
      const batch = makeBatch(engine, rows);
      const res = decoder.forward(batch, { checkpoint: true });
      decoder.backward(res, Array.from(batch.lossMask, (m) => -m / tokens));
      await lora.parameters("bench")[0].grad!.read();
    });
    for (const p of lora.parameters("bench")) {
      p.grad?.dispose();
      p.grad = null;
    }
  }, { warmup: 1, iters });

  await exportOnnx(join(dir, "m"), join(dir, "m.onnx"));
  const { readFile } = await import("node:fs/promises");
  const bytes = new Uint8Array(await readFile(join(dir, "m.onnx")));
  const feeds = {
    input_ids: tensor("int64", BigInt64Array.from(rows.flat(), BigInt), [B, T]),
    attention_mask: tensor("int64", new BigInt64Array(B * T).fill(1n), [B, T]),
    position_ids: tensor("int64", BigInt64Array.from(rows.flatMap((r) => r.map((_, t) => BigInt(t)))), [B, T]),
  };
  const rowsOut: BenchRow[] = [];
  const ours = { fwd: tokens / (fwd.medianMs / 1000), fwdBwd: tokens / (fwdBwd.medianMs / 1000) };
  for (const ep of ["webgpu", "cpu"] as const) {
    const { session, error } = await ortSession(bytes, ep);
    const ms = session ? await timeOrt(session, feeds, iters) : null;
    const peer = ms ? tokens / (ms / 1000) : null;
    rowsOut.push(higherIsBetter(`forward B=${B} T=${T}`, "tokens/s", ours.fwd, `onnxruntime-node ${ep} EP (forward, full logits)`, peer, error ? { note: error } : {}));
    rowsOut.push(higherIsBetter(`forward+backward (LoRA r16, checkpointing) B=${B} T=${T}`, "tokens/s", ours.fwdBwd, `onnxruntime-node ${ep} EP (forward only)`, peer, { note: "peer does forward only: ratio understates us", ...(error ? { error } : {}) }));
    await session?.release();
  }
  writeResults("model", gpu.adapter, rowsOut, { config, scaledDown: !full, peakPoolBytes: gpu.pool.getStats().peakAllocatedBytes });
  gpu.destroy();
} finally {
  await rm(dir, { recursive: true, force: true });
}
