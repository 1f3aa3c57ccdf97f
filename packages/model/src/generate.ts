// Generator of small random models in HF layout: config.json, model.safetensors (or shards + index),
// generation_config.json and a byte-level BPE tokenizer with a ChatML template. Any Qwen2/Qwen3/Llama config,
// tied or untied embeddings, bf16/f16/f32 storage. Each tensor's values depend only on (seed, tensor name), so
// sharding and dtype do not change which numbers are drawn.
import { mkdir, writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { makeModelConfig, parameterSpecs, toHfConfig, SUPPORTED_ARCHITECTURES, type Architecture, type ModelConfig, type ModelConfigInit, type ParamSpec, type TorchDtype } from "./config.js";
import { encodeFloats, writeSafetensorsCheckpoint, type TensorToWrite } from "./safetensors.js";
import { writeCharTokenizer, type CharTokenizerOptions, type CharTokenizerSpec } from "./tokenizer.js";

export type StorageDtype = "bf16" | "f16" | "f32";

const TORCH: Record<StorageDtype, TorchDtype> = { bf16: "bfloat16", f16: "float16", f32: "float32" };
const ST: Record<StorageDtype, "BF16" | "F16" | "F32"> = { bf16: "BF16", f16: "F16", f32: "F32" };

/** Deterministic generator (sfc32 seeded through a string hash) with normal samples by Box–Muller. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare: number | null = null;

  constructor(seed: number | string) {
    // FNV-1a of the seed's text, then splitmix32 to fill the state
    let h = 0x811c9dc5;
    for (const ch of String(seed)) {
      h ^= ch.codePointAt(0)!;
      h = Math.imul(h, 0x01000193);
    }
    const mix = () => {
      h = (h + 0x9e3779b9) | 0;
      let z = h;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = mix();
    this.b = mix();
    this.c = mix();
    this.d = mix();
    for (let i = 0; i < 12; i++) this.nextU32();
  }

  nextU32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in (0, 1). */
  uniform(): number {
    return (this.nextU32() + 0.5) / 4294967296;
  }

  /** Standard normal. */
  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    const r = Math.sqrt(-2 * Math.log(this.uniform()));
    const th = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(th);
    return r * Math.cos(th);
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }
}

export interface InitOptions {
  /** Std of linear and embedding weights (default 0.02, as HF initializer_range). */
  std?: number;
  /** RMSNorm weights are 1 + normJitter·N(0, 1) (default 0.1, so the norm weights matter in tests; HF uses exactly 1). */
  normJitter?: number;
  /** Std of biases (default: `std`; HF initialises them to 0). */
  biasStd?: number;
}

/** The float64 values a parameter is initialised with (before rounding to the storage dtype). */
export function initialValues(p: ParamSpec, seed: number, init: InitOptions = {}): Float64Array {
  const n = p.shape.reduce((a, b) => a * b, 1);
  const [all] = initialValueChunks(p, seed, init, Math.max(1, n));
  return all ?? new Float64Array(0);
}

/**
 * The same values as {@link initialValues}, drawn in consecutive chunks of at most `chunk` elements (one RNG stream
 * per tensor, so chunking changes nothing): a vocabulary-sized table is produced without holding it whole.
 */
export function* initialValueChunks(p: ParamSpec, seed: number, init: InitOptions = {}, chunk = 1 << 20): Generator<Float64Array> {
  const std = init.std ?? 0.02;
  const n = p.shape.reduce((a, b) => a * b, 1);
  const rng = new Rng(`${seed}:${p.name}`);
  const jitter = init.normJitter ?? 0.1;
  const s = p.kind === "bias" ? (init.biasStd ?? std) : std;
  for (let at = 0; at < n; at += chunk) {
    const out = new Float64Array(Math.min(chunk, n - at));
    if (p.kind === "norm") for (let i = 0; i < out.length; i++) out[i] = 1 + jitter * rng.normal();
    else for (let i = 0; i < out.length; i++) out[i] = s * rng.normal();
    yield out;
  }
}

export interface GenerateOptions {
  seed?: number;
  /** Storage dtype (default: the config's torchDtype, i.e. f32 for a config made from defaults). */
  dtype?: StorageDtype;
  /** Number of safetensors shards (1: a single model.safetensors). */
  shards?: number;
  init?: InitOptions;
  /** Tokenizer options, or false to write no tokenizer files. */
  tokenizer?: CharTokenizerOptions | false;
}

export interface GeneratedModel {
  dir: string;
  config: ModelConfig;
  /** Files written, relative to dir. */
  files: string[];
  tokenizer: CharTokenizerSpec | null;
}

/**
 * Writes a random model in HF layout into `dir`. `config` gives the architecture and any sizes (defaults: hidden 64,
 * 2 layers, 4 heads, intermediate 2·hidden); without vocabSize the vocabulary is the generated tokenizer's size
 * rounded up to a multiple of 16. Token ids in config.json/generation_config.json follow the tokenizer
 * (eos `<|im_end|>`, pad `<|endoftext|>`).
 */
export async function generateModel(dir: string, config: ModelConfigInit, opts: GenerateOptions = {}): Promise<GeneratedModel> {
  const seed = opts.seed ?? 0;
  await mkdir(dir, { recursive: true });
  const tok = opts.tokenizer === false ? null : await writeCharTokenizer(dir, opts.tokenizer ?? {});
  const dtype: StorageDtype = opts.dtype ?? (config.torchDtype === "bfloat16" ? "bf16" : config.torchDtype === "float16" ? "f16" : "f32");
  const legacyBias = (config as Partial<ModelConfig>).qkvBias;
  const init: ModelConfigInit = {
    ...config,
    attentionBias: config.attentionBias ?? (config.architecture !== "qwen2" ? legacyBias : undefined),
    torchDtype: TORCH[dtype],
  };
  if (tok) {
    if (init.vocabSize === undefined) init.vocabSize = Math.ceil(tok.size / 16) * 16;
    else if (init.vocabSize < tok.size) throw new Error(`vocabSize ${init.vocabSize} is smaller than the generated tokenizer's ${tok.size} ids`);
    init.eosTokenIds ??= [tok.ids.imEnd];
    init.padTokenId ??= tok.ids.endoftext;
  }
  const cfg = makeModelConfig(init);
  const files: string[] = [];
  await writeFile(`${dir}/config.json`, JSON.stringify(toHfConfig(cfg), null, 2) + "\n");
  files.push("config.json");
  const gen: Record<string, unknown> = { _from_model_config: false, bos_token_id: cfg.bosTokenId, do_sample: false };
  if (tok) {
    gen.eos_token_id = [tok.ids.imEnd, tok.ids.endoftext];
    gen.pad_token_id = tok.ids.endoftext;
  } else if (cfg.eosTokenIds.length > 0) gen.eos_token_id = cfg.eosTokenIds;
  await writeFile(`${dir}/generation_config.json`, JSON.stringify(gen, null, 2) + "\n");
  files.push("generation_config.json");
  if (tok) files.push("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json");

  const tensors: TensorToWrite[] = parameterSpecs(cfg).map((p) => ({
    name: p.name,
    dtype: ST[dtype],
    shape: p.shape,
    data: () => encodeFloats(initialValues(p, seed, opts.init), ST[dtype]),
  }));
  files.push(...(await writeSafetensorsCheckpoint(dir, tensors, { shards: opts.shards ?? 1, metadata: { format: "pt", generator: "@nr/model", seed: String(seed) } })));
  return { dir, config: cfg, files, tokenizer: tok };
}

/**
 * CLI entry: `--out DIR --arch qwen2|qwen3|llama [--hidden 64] [--layers 2] [--heads 4] [--kv-heads 2]
 * [--head-dim D] [--intermediate 128] [--vocab V] [--max-pos 512] [--theta 10000] [--tied] [--attention-bias]
 * [--dtype bf16|f16|f32] [--shards 1] [--seed 0] [--std 0.02]`. Returns the generated model.
 */
export async function generateModelCli(argv: string[]): Promise<GeneratedModel> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: "string" },
      arch: { type: "string", default: "qwen2" },
      hidden: { type: "string" },
      layers: { type: "string" },
      heads: { type: "string" },
      "kv-heads": { type: "string" },
      "head-dim": { type: "string" },
      intermediate: { type: "string" },
      vocab: { type: "string" },
      "max-pos": { type: "string" },
      theta: { type: "string" },
      tied: { type: "boolean", default: false },
      "attention-bias": { type: "boolean", default: false },
      dtype: { type: "string", default: "bf16" },
      shards: { type: "string", default: "1" },
      seed: { type: "string", default: "0" },
      std: { type: "string" },
    },
    strict: true,
  });
  if (!values.out) throw new Error("--out DIR is required");
  const arch = values.arch as Architecture;
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch)) throw new Error(`--arch must be one of ${SUPPORTED_ARCHITECTURES.join(", ")}`);
  if (!["bf16", "f16", "f32"].includes(values.dtype!)) throw new Error("--dtype must be bf16, f16 or f32");
  const int = (v: string | undefined, flag: string): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new Error(`${flag} must be a number, got ${v}`);
    return n;
  };
  return generateModel(
    values.out,
    {
      architecture: arch,
      hiddenSize: int(values.hidden, "--hidden"),
      numLayers: int(values.layers, "--layers"),
      numHeads: int(values.heads, "--heads"),
      numKvHeads: int(values["kv-heads"], "--kv-heads"),
      headDim: int(values["head-dim"], "--head-dim"),
      intermediateSize: int(values.intermediate, "--intermediate"),
      vocabSize: int(values.vocab, "--vocab"),
      maxPositionEmbeddings: int(values["max-pos"], "--max-pos"),
      ropeTheta: int(values.theta, "--theta"),
      tieWordEmbeddings: values.tied,
      attentionBias: values["attention-bias"],
    },
    {
      dtype: values.dtype as StorageDtype,
      shards: int(values.shards, "--shards"),
      seed: int(values.seed, "--seed"),
      init: values.std !== undefined ? { std: int(values.std, "--std") } : undefined,
    },
  );
}
