// Full-size random checkpoints in Hugging Face layout from a published config.json (Qwen2 / Qwen2.5 / Qwen3 / Llama):
// the config is kept as given (every field), the weights are drawn as in generate.ts (one seeded RNG stream per
// tensor) and written in bf16 as they are drawn, a few MiB at a time — a 1.5B model (3 GB) never sits in memory.
// Files are cut like save_pretrained's: a single model.safetensors up to HF's default shard size (5 GB), beyond it
// model-0000i-of-0000n.safetensors plus model.safetensors.index.json. Tokenizer files are copied from a folder
// (the real Qwen2.5 tokenizer, for example) or a character tokenizer is generated. Meant for tests and benchmarks
// that need the real shapes without downloading weights; write it to a temp folder, never into the repository.
import { chmod, copyFile, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parameterSpecs, parseModelConfig, type ModelConfig } from "./config.js";
import { initialValueChunks, type InitOptions, type StorageDtype } from "./generate.js";
import { encodeFloats, HF_MAX_SHARD_BYTES, writeSafetensorsCheckpoint, type TensorToWrite } from "./safetensors.js";
import { writeCharTokenizer } from "./tokenizer.js";

const ST = { bf16: "BF16", f16: "F16", f32: "F32" } as const;
const BYTES = { bf16: 2, f16: 2, f32: 4 } as const;
/** Tokenizer files copied from `tokenizerDir` when present there. */
const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja"];

export interface RandomCheckpointOptions {
  seed?: number;
  /** Storage dtype (default bf16, as published Qwen checkpoints). */
  dtype?: StorageDtype;
  /** Largest safetensors file (default HF's 5 GB); a checkpoint above it is sharded with an index. */
  maxShardBytes?: number;
  /** Copy the tokenizer files of this folder; without it a character tokenizer (smaller than the vocabulary) is generated. */
  tokenizerDir?: string;
  init?: InitOptions;
  /** Called as bytes are written (done, total). */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

export interface RandomCheckpoint {
  dir: string;
  config: ModelConfig;
  /** Files written, relative to dir. */
  files: string[];
  /** Bytes of weights written. */
  weightBytes: number;
}

/** The raw config.json object of a path (a config.json file or a folder holding one), or the object itself. */
async function readRawConfig(config: string | Record<string, unknown>): Promise<{ raw: Record<string, unknown>; file: string }> {
  if (typeof config !== "string") return { raw: config, file: "config.json" };
  const file = config.endsWith(".json") ? config : join(config, "config.json");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new Error(`${file}: cannot read the model config (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); pass a config.json file or a folder holding one`);
  }
  try {
    return { raw: JSON.parse(text), file };
  } catch (err) {
    throw new Error(`${file}: not valid JSON (${(err as Error).message})`);
  }
}

/** Writes a random checkpoint of the given config into `dir` (created; existing weight files there are replaced). */
export async function writeRandomCheckpoint(dir: string, config: string | Record<string, unknown>, opts: RandomCheckpointOptions = {}): Promise<RandomCheckpoint> {
  const { raw, file } = await readRawConfig(config);
  const cfg = parseModelConfig(raw, file);
  const dtype = opts.dtype ?? "bf16";
  const seed = opts.seed ?? 0;
  await mkdir(dir, { recursive: true });
  const torchDtype = { bf16: "bfloat16", f16: "float16", f32: "float32" }[dtype];
  await writeFile(join(dir, "config.json"), JSON.stringify({ ...raw, torch_dtype: torchDtype }, null, 2) + "\n");
  const files = ["config.json", ...(await writeTokenizerFiles(dir, opts.tokenizerDir))];
  const eos = cfg.eosTokenIds.length === 1 ? cfg.eosTokenIds[0] : cfg.eosTokenIds;
  await writeFile(join(dir, "generation_config.json"), JSON.stringify({ bos_token_id: cfg.bosTokenId, eos_token_id: eos, do_sample: false }, null, 2) + "\n");
  files.push("generation_config.json");

  const specs = parameterSpecs(cfg);
  const total = specs.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1) * BYTES[dtype], 0);
  let done = 0;
  const tensors: TensorToWrite[] = specs.map((p) => ({
    name: p.name,
    dtype: ST[dtype],
    shape: p.shape,
    data: async function* () {
      for (const values of initialValueChunks(p, seed, opts.init)) {
        const bytes = encodeFloats(values, ST[dtype]);
        done += bytes.byteLength;
        opts.onProgress?.(done, total);
        yield bytes;
      }
    },
  }));
  const metadata = { format: "pt", generator: "@nr/model writeRandomCheckpoint", seed: String(seed) };
  files.push(...(await writeSafetensorsCheckpoint(dir, tensors, { maxShardBytes: opts.maxShardBytes ?? HF_MAX_SHARD_BYTES, metadata })));
  return { dir, config: cfg, files, weightBytes: total };
}

/** Copies the tokenizer files of `from` (those present), or writes a generated character tokenizer. */
async function writeTokenizerFiles(dir: string, from: string | undefined): Promise<string[]> {
  if (!from) {
    await writeCharTokenizer(dir);
    return ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];
  }
  const present = new Set(await readdir(from).catch(() => [] as string[]));
  const copied = TOKENIZER_FILES.filter((f) => present.has(f));
  if (!copied.includes("tokenizer.json")) throw new Error(`${from}: no tokenizer.json in the tokenizer folder`);
  for (const f of copied) {
    await copyFile(join(from, f), join(dir, f));
    await chmod(join(dir, f), 0o644); // a read-only source (a shared data folder) must not make the copy read-only
  }
  return copied;
}
