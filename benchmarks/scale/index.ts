// `pnpm bench scale`: the real Qwen2.5-Math-1.5B shape (vocab 151,936, hidden 1,536, 28 layers, 12/2 heads of 128,
// MLP 8,960, tied embeddings) end to end on this adapter, for an NF4 base (double-quantised, QLoRA) and an f16 base
// (model.dtype f16; --bases nf4 measures the NF4 one only):
//   load       safetensors (bf16) → GPU, seconds; the pool bytes the base holds; host peak RSS
//   SFT step   LoRA r16 on all seven projections, B × T tokens, checkpointing, AdamW: tokens/s and fractionOfPeak
//              (model FLOPs of the step ÷ its time ÷ the adapter's FMA peak measured in the same run; steps.ts says
//              which FLOPs count)
//   RL step    G samples × n new tokens at T = 1 (KV-cache generation), then a policy-gradient step on the G
//              sequences: generation tokens/s (new tokens ÷ the call's wall time, prefill included) and training
//              tokens/s
//   memory     @nr/lora's memoryReport beside the pool after the SFT step (the pool never shrinks within a step, so
//              that is the step's peak)
//   kernels    a second SFT step and RL step (generation, training) under the timestamp profiler: GPU time per kernel
//              (calls, ms, share), the top 12 printed, all of them in benchmarks/results/scale.json; by default for
//              the first base only (--profile all: every base, --profile 0: none)
// The checkpoint is random (writeRandomCheckpoint from the config, bf16, ~3 GB) in a temp folder unless --model names
// one; the tokenizer is the real Qwen2.5 one from ../shared/data/qwen2.5_tokenizer when present (else, or with
// --tokenizer generated, a byte-level BPE of the same vocabulary size from @nr/model's writeByteBpeTokenizer), and the token ids come from a GSM8K problem (or a fixed sentence) encoded with it. No peer runs here:
// PyTorch + PEFT + bitsandbytes would be the peer on a CUDA GPU (see README "Scale").
//   pnpm bench scale [--model DIR] [--config FILE] [--bases nf4,f16|nf4|f16] [--batch 1] [--seq 32] [--G 2] [--prompt 16]
//                    [--new 4] [--r 16] [--profile 1|all|0] [--tokenizer real|generated]
// The defaults are sized to end within 15 minutes on an idle 2-core lavapipe. On a real GPU, full-size batches:
//   pnpm bench scale --batch 4 --seq 1024 --G 8 --prompt 256 --new 384 --profile all
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createGpu } from "@nr/kernels";
import { INDEX_FILE, loadTokenizer, parseModelConfig, SINGLE_FILE, writeByteBpeTokenizer, writeRandomCheckpoint, type ModelConfig } from "@nr/model";
import { higherIsBetter, lowerIsBetter, writeResults, type BenchRow } from "../lib/report.js";
import { measurePeak, peakMeta } from "../kernels/peak.js";
import { measureBase, type BaseKind, type BaseResult, type KernelTable, type ScaleSettings } from "./steps.js";

const here = dirname(fileURLToPath(import.meta.url));
const shared = join(here, "..", "..", "..", "shared", "data");
const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const int = (name: string, dflt: string) => {
  const v = Number(arg(name, dflt));
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name}: expected a positive integer (got ${arg(name, dflt)})`);
  return v;
};
// Defaults sized so the whole bench (checkpoint write, NF4 load, the timed and the profiled steps) ends within
// 15 minutes on an idle 2-core lavapipe; a GPU takes the full-size flags (header).
const settings: ScaleSettings = {
  batch: int("batch", "1"),
  seq: int("seq", "32"),
  G: int("G", "2"),
  prompt: int("prompt", "16"),
  newTokens: int("new", "4"),
  r: int("r", "16"),
  profile: true,
};
const bases = arg("bases", "nf4,f16").split(",") as BaseKind[];
for (const b of bases) if (b !== "nf4" && b !== "f16") throw new Error(`--bases: nf4 and/or f16 (got ${b})`);
const profileArg = arg("profile", "1");
if (!["0", "1", "all"].includes(profileArg)) throw new Error(`--profile: 1 (the first base), all or 0 (got ${profileArg})`);
/** Whether the i-th base gets the profiled steps (each one adds a step of each kind to the bench's time). */
const profileBase = (i: number) => profileArg === "all" || (profileArg === "1" && i === 0);
const configFile = arg("config", join(here, "qwen2.5-math-1.5b-instruct.config.json"));
const started = performance.now();
const log = (m: string) => console.log(`[${((performance.now() - started) / 1000).toFixed(0).padStart(4)} s] ${m}`);

/**
 * The real Qwen2.5 tokenizer from ../shared when it is there (unless --tokenizer generated), else a byte-level BPE
 * generated with exactly the config's vocab_size (writeByteBpeTokenizer), written under `under`.
 */
async function tokenizerFolder(under: string): Promise<string> {
  const real = join(shared, "qwen2.5_tokenizer");
  if (existsSync(real) && arg("tokenizer", "real") !== "generated") return real;
  const vocabSize = JSON.parse(readFileSync(configFile, "utf8")).vocab_size;
  const out = join(under, "generated-tokenizer");
  const t0 = performance.now();
  const spec = await writeByteBpeTokenizer(out, { vocabSize });
  log(`${existsSync(real) ? "--tokenizer generated" : `no ${real}`}: generated a byte-level BPE of ${spec.size} ids (${spec.learnedMerges} of ${spec.merges} merges learned from a built-in text) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return out;
}

/** The checkpoint folder: --model as given (generated there when it holds no weights yet), else a temp folder. */
async function checkpointDir(): Promise<{ dir: string; temp: string | null }> {
  const given = process.argv.includes("--model") ? arg("model", "") : null;
  const temp = given ? null : await mkdtemp(join(tmpdir(), "nr-bench-scale-"));
  const dir = given ?? join(temp!, "model");
  if (existsSync(join(dir, SINGLE_FILE)) || existsSync(join(dir, INDEX_FILE))) return { dir, temp };
  const tokTemp = await mkdtemp(join(tmpdir(), "nr-bench-tokenizer-"));
  const tokenizerDir = await tokenizerFolder(tokTemp);
  log(`writing a random checkpoint of ${configFile} to ${dir} (tokenizer from ${tokenizerDir})`);
  const t0 = performance.now();
  let next = 0;
  try {
    await writeRandomCheckpoint(dir, configFile, {
      tokenizerDir,
      onProgress: (done, total) => {
        if (done < next && done < total) return;
        next = done + total / 10;
        const s = (performance.now() - t0) / 1000;
        log(`  ${(done / 2 ** 20).toFixed(0)} / ${(total / 2 ** 20).toFixed(0)} MiB, ${(done / 2 ** 20 / s).toFixed(1)} MiB/s, ETA ${((total - done) / (done / s)).toFixed(0)} s`);
      },
    });
  } finally {
    await rm(tokTemp, { recursive: true, force: true }); // its files are copied into the checkpoint
  }
  return { dir, temp };
}

/** Token ids for the steps: a GSM8K problem with its solution, encoded by the checkpoint's tokenizer. */
async function sampleTokens(dir: string): Promise<{ ids: number[]; source: string; tokenizer: string }> {
  const tok = await loadTokenizer(dir);
  const gsm = join(shared, "gsm8k_test.jsonl");
  const text = existsSync(gsm)
    ? (() => {
        const row = JSON.parse(readFileSync(gsm, "utf8").split("\n")[0]);
        return `${row.question}\n${row.answer}`;
      })()
    : "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?";
  return { ids: tok.encode(text), source: existsSync(gsm) ? "gsm8k_test.jsonl line 1" : "a fixed sentence", tokenizer: `${tok.size} ids${tok.size === 151665 ? " (the real Qwen2.5 tokenizer's count)" : ""}` };
}

function rowsOf(r: BaseResult, c: ModelConfig, peakGflops: number): BenchRow[] {
  const shape = { vocab: c.vocabSize, hidden: c.hiddenSize, layers: c.numLayers, base: r.base };
  const tag = `${r.base} base, vocab ${c.vocabSize} hidden ${c.hiddenSize} ${c.numLayers} layers`;
  const none = "none on this adapter";
  const sftRate = r.sft.tokens / r.sft.seconds;
  const fraction = r.sft.flops / r.sft.seconds / 1e9 / peakGflops;
  return [
    lowerIsBetter(`load (safetensors bf16 → ${r.base === "nf4" ? "NF4 double-quant" : "f16"}), ${tag}`, "s", r.loadSeconds, none, null, shape),
    lowerIsBetter(`GPU pool after load, ${tag}`, "GiB", r.poolAfterLoad / 2 ** 30, none, null, shape),
    lowerIsBetter(`host peak RSS, ${tag}`, "GiB", r.maxRss / 2 ** 30, none, null, shape),
    higherIsBetter(`SFT step ${settings.batch}×${settings.seq} (LoRA r${settings.r}, checkpointing), ${tag}`, "tokens/s", sftRate, none, null, { ...shape, seconds: r.sft.seconds, modelFlops: r.sft.flops, fractionOfPeak: fraction, ofPeak: `${(100 * fraction).toPrecision(2)}% C` }),
    higherIsBetter(`RL generation ${settings.G}×${settings.newTokens} new (prompt ${settings.prompt}), ${tag}`, "tokens/s", r.rl.genTokens / r.rl.genSeconds, none, null, { ...shape, seconds: r.rl.genSeconds }),
    higherIsBetter(`RL train step on ${r.rl.trainTokens} tokens, ${tag}`, "tokens/s", r.rl.trainTokens / r.rl.trainSeconds, none, null, { ...shape, seconds: r.rl.trainSeconds }),
    // ratio = estimate / measured: 1 means the estimate is exact (within 10 % is the bar)
    lowerIsBetter(`GPU pool after SFT step vs @nr/lora memoryReport, ${tag}`, "GiB", r.poolAfterStep / 2 ** 30, "@nr/lora memoryReport (estimate)", r.estimateBytes / 2 ** 30, shape),
  ];
}

/** The top kernels of one profiled step: calls, GPU ms, share of the step's GPU time. */
function printKernelTable(t: KernelTable, top = 12) {
  console.log(`\nper-kernel GPU time, ${t.step}: ${(t.gpuMs / 1000).toFixed(2)} s of GPU time in ${t.wallSeconds.toFixed(1)} s wall`);
  if (!t.kernels) return console.log(`  ${t.note}`);
  const name = Math.max(6, ...t.kernels.slice(0, top).map((k) => k.label.length));
  console.log(`  ${"kernel".padEnd(name)}  ${"calls".padStart(7)}  ${"ms".padStart(10)}  ${"share".padStart(6)}`);
  for (const k of t.kernels.slice(0, top)) console.log(`  ${k.label.padEnd(name)}  ${String(k.calls).padStart(7)}  ${k.totalMs.toFixed(1).padStart(10)}  ${((100 * k.totalMs) / t.gpuMs).toFixed(1).padStart(5)}%`);
  if (t.kernels.length > top) console.log(`  … ${t.kernels.length - top} more kernels in benchmarks/results/scale.json`);
}

const { dir, temp } = await checkpointDir();
try {
  const c = parseModelConfig(JSON.parse(readFileSync(join(dir, "config.json"), "utf8")), join(dir, "config.json"));
  const sample = await sampleTokens(dir);
  // a cut-down --config may have fewer ids than the tokenizer
  const ids = sample.ids.map((id) => id % c.vocabSize);
  const gpu = await createGpu();
  const peak = await measurePeak(gpu);
  const adapter = gpu.adapter;
  gpu.destroy();
  const rows: BenchRow[] = [];
  const kernelTables: KernelTable[] = [];
  for (const [i, base] of bases.entries()) {
    const r = await measureBase(dir, base, { ...settings, profile: profileBase(i) }, ids, log);
    rows.push(...rowsOf(r, c, peak.gflops));
    kernelTables.push(...r.kernelTables);
  }
  for (const t of kernelTables) printKernelTable(t);
  const wallSeconds = (performance.now() - started) / 1000;
  writeResults("scale", adapter, rows, { config: configFile, settings: { ...settings, profile: profileArg }, bases, tokens: sample.source, tokenizer: sample.tokenizer, checkpoint: temp ? "random (temp folder)" : dir, wallSeconds, ...peakMeta(peak), kernelTables });
  log(`whole bench ${wallSeconds.toFixed(0)} s`);
} finally {
  if (temp) await rm(temp, { recursive: true, force: true });
}
