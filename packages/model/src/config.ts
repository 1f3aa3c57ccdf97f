// Hugging Face config.json → normalised ModelConfig for the decoder-only architectures Nano-Reasoner runs:
//
//   qwen2  Qwen2 / Qwen2.5 / Qwen2.5-Math: q/k/v projections have a bias, o_proj has none.
//   qwen3  Qwen3: no q/k/v bias (unless attention_bias), per-head RMSNorm on q and k (q_norm/k_norm, weight [head_dim])
//          applied before RoPE, explicit head_dim (may differ from hidden/heads).
//   llama  Llama: no bias unless attention_bias (then q/k/v and o all have one).
//
// All three: RMSNorm, rotate-half RoPE over the whole head dim, GQA, SwiGLU MLP (silu(gate)·up → down).
import { readFile } from "node:fs/promises";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";

export const SUPPORTED_ARCHITECTURES = ["qwen2", "qwen3", "llama"] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

/** Floating dtypes a checkpoint's weights may be stored in (HF `torch_dtype` names). */
export type TorchDtype = "bfloat16" | "float16" | "float32";

export interface ModelConfig {
  architecture: Architecture;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** Per-head dimension: `head_dim` when given, else hidden_size / num_attention_heads. */
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** Storage dtype of the weights (`torch_dtype`, or `dtype` in newer transformers); bfloat16 when absent. */
  torchDtype: TorchDtype;
  bosTokenId: number | null;
  /** All eos ids of config.json (`eos_token_id` may be a number or a list). */
  eosTokenIds: number[];
  padTokenId: number | null;
  /** q/k/v projections have a bias (Qwen2 always; Llama/Qwen3 with attention_bias). */
  qkvBias: boolean;
  /** o_proj has a bias (Llama/Qwen3 with attention_bias). */
  oBias: boolean;
  /** Per-head RMSNorm on q and k before RoPE (Qwen3). */
  qkNorm: boolean;
  /** The parsed config.json as read. */
  raw: Record<string, unknown>;
}

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
    this.name = "ConfigError";
  }
}

function num(raw: Record<string, unknown>, file: string, key: string, opts: { int?: boolean; min?: number; def?: number } = {}): number {
  const v = raw[key];
  if (v === undefined || v === null) {
    if (opts.def !== undefined) return opts.def;
    throw new ConfigError(file, `missing required field "${key}"`);
  }
  if (typeof v !== "number" || !Number.isFinite(v)) throw new ConfigError(file, `field "${key}" must be a number, got ${JSON.stringify(v)}`);
  if (opts.int && !Number.isInteger(v)) throw new ConfigError(file, `field "${key}" must be an integer, got ${v}`);
  if (opts.min !== undefined && v < opts.min) throw new ConfigError(file, `field "${key}" must be ≥ ${opts.min}, got ${v}`);
  return v;
}

function optId(raw: Record<string, unknown>, file: string, key: string): number | null {
  const v = raw[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw new ConfigError(file, `field "${key}" must be a token id, got ${JSON.stringify(v)}`);
  return v;
}

function idList(raw: Record<string, unknown>, file: string, key: string): number[] {
  const v = raw[key];
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const x of list) {
    if (typeof x !== "number" || !Number.isInteger(x) || x < 0) throw new ConfigError(file, `field "${key}" must be a token id or a list of ids, got ${JSON.stringify(v)}`);
  }
  return [...new Set(list as number[])];
}

function bool(raw: Record<string, unknown>, file: string, key: string, def: boolean): boolean {
  const v = raw[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== "boolean") throw new ConfigError(file, `field "${key}" must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * Normalises a parsed HF config.json. `file` names the source in error messages.
 * Unsupported architectures, activations, rope scaling and sliding-window attention are rejected with a clear error.
 */
export function parseModelConfig(raw: unknown, file = "config.json"): ModelConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new ConfigError(file, "not a JSON object");
  const r = raw as Record<string, unknown>;
  const mt = r.model_type;
  if (typeof mt !== "string" || !(SUPPORTED_ARCHITECTURES as readonly string[]).includes(mt)) {
    const archs = Array.isArray(r.architectures) ? ` (architectures: ${(r.architectures as unknown[]).join(", ")})` : "";
    throw new ConfigError(
      file,
      `unsupported model_type ${JSON.stringify(mt ?? null)}${archs}; supported model types: ${SUPPORTED_ARCHITECTURES.join(", ")}`,
    );
  }
  const architecture = mt as Architecture;
  const hiddenSize = num(r, file, "hidden_size", { int: true, min: 1 });
  const numHeads = num(r, file, "num_attention_heads", { int: true, min: 1 });
  const numKvHeads = num(r, file, "num_key_value_heads", { int: true, min: 1, def: numHeads });
  if (numHeads % numKvHeads !== 0) throw new ConfigError(file, `num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  let headDim: number;
  if (r.head_dim !== undefined && r.head_dim !== null) headDim = num(r, file, "head_dim", { int: true, min: 2 });
  else {
    if (hiddenSize % numHeads !== 0) throw new ConfigError(file, `hidden_size (${hiddenSize}) is not divisible by num_attention_heads (${numHeads}) and no head_dim is given`);
    headDim = hiddenSize / numHeads;
  }
  if (headDim % 2 !== 0) throw new ConfigError(file, `head_dim must be even for rotary embeddings, got ${headDim}`);
  const act = r.hidden_act ?? "silu";
  if (act !== "silu" && act !== "swish") throw new ConfigError(file, `unsupported hidden_act ${JSON.stringify(act)} (only silu)`);
  if (r.rope_scaling !== undefined && r.rope_scaling !== null) {
    const t = (r.rope_scaling as Record<string, unknown>).rope_type ?? (r.rope_scaling as Record<string, unknown>).type;
    if (t !== "default") throw new ConfigError(file, `unsupported rope_scaling ${JSON.stringify(r.rope_scaling)} (only plain RoPE)`);
  }
  if (r.use_sliding_window === true) throw new ConfigError(file, "use_sliding_window: true is not supported (full attention only)");
  if (architecture === "llama" && r.mlp_bias === true) throw new ConfigError(file, "mlp_bias: true is not supported");
  const attentionBias = bool(r, file, "attention_bias", false);
  const rawDtype = r.torch_dtype ?? r.dtype ?? "bfloat16";
  if (rawDtype !== "bfloat16" && rawDtype !== "float16" && rawDtype !== "float32") {
    throw new ConfigError(file, `unsupported torch_dtype ${JSON.stringify(rawDtype)} (bfloat16, float16 or float32)`);
  }
  return {
    architecture,
    hiddenSize,
    intermediateSize: num(r, file, "intermediate_size", { int: true, min: 1 }),
    numLayers: num(r, file, "num_hidden_layers", { int: true, min: 1 }),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: num(r, file, "rms_norm_eps", { min: 0, def: 1e-6 }),
    ropeTheta: num(r, file, "rope_theta", { min: 1, def: 10000 }),
    vocabSize: num(r, file, "vocab_size", { int: true, min: 1 }),
    maxPositionEmbeddings: num(r, file, "max_position_embeddings", { int: true, min: 1, def: 2048 }),
    // Qwen2Config, Qwen3Config and LlamaConfig all default to untied embeddings.
    tieWordEmbeddings: bool(r, file, "tie_word_embeddings", false),
    torchDtype: rawDtype,
    bosTokenId: optId(r, file, "bos_token_id"),
    eosTokenIds: idList(r, file, "eos_token_id"),
    padTokenId: optId(r, file, "pad_token_id"),
    qkvBias: architecture === "qwen2" ? true : attentionBias,
    oBias: architecture === "qwen2" ? false : attentionBias,
    qkNorm: architecture === "qwen3",
    raw: r,
  };
}

/** Reads `config.json` from a checkpoint folder (or the file itself). */
export async function loadModelConfig(dirOrFile: string): Promise<ModelConfig> {
  const file = existsSync(dirOrFile) && statSync(dirOrFile).isDirectory() ? join(dirOrFile, "config.json") : dirOrFile;
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new ConfigError(file, `cannot read config: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(file, `invalid JSON: ${(err as Error).message}`);
  }
  return parseModelConfig(raw, file);
}

/** The fields needed to describe a decoder (everything but `raw`; defaults filled by {@link makeModelConfig}). */
export type ModelConfigInit = Partial<Omit<ModelConfig, "raw" | "qkvBias" | "oBias" | "qkNorm">> & {
  architecture: Architecture;
  /** Llama/Qwen3 only: bias on q/k/v/o (HF `attention_bias`). */
  attentionBias?: boolean;
};

/** Fills a ModelConfig from a few fields (defaults: a tiny model) by round-tripping through {@link toHfConfig}. */
export function makeModelConfig(init: ModelConfigInit): ModelConfig {
  const hiddenSize = init.hiddenSize ?? 64;
  const numHeads = init.numHeads ?? 4;
  const base: Omit<ModelConfig, "raw"> = {
    architecture: init.architecture,
    hiddenSize,
    intermediateSize: init.intermediateSize ?? hiddenSize * 2,
    numLayers: init.numLayers ?? 2,
    numHeads,
    numKvHeads: init.numKvHeads ?? numHeads,
    headDim: init.headDim ?? hiddenSize / numHeads,
    rmsNormEps: init.rmsNormEps ?? 1e-6,
    ropeTheta: init.ropeTheta ?? 10000,
    vocabSize: init.vocabSize ?? 256,
    maxPositionEmbeddings: init.maxPositionEmbeddings ?? 512,
    tieWordEmbeddings: init.tieWordEmbeddings ?? false,
    torchDtype: init.torchDtype ?? "float32",
    bosTokenId: init.bosTokenId ?? null,
    eosTokenIds: init.eosTokenIds ?? [],
    padTokenId: init.padTokenId ?? null,
    qkvBias: init.architecture === "qwen2" ? true : (init.attentionBias ?? false),
    oBias: init.architecture === "qwen2" ? false : (init.attentionBias ?? false),
    qkNorm: init.architecture === "qwen3",
  };
  return parseModelConfig(toHfConfig(base), "<generated config>");
}

/** ModelConfig → an HF config.json object that transformers loads as the same model. */
export function toHfConfig(c: Omit<ModelConfig, "raw">): Record<string, unknown> {
  const arch = { qwen2: "Qwen2ForCausalLM", qwen3: "Qwen3ForCausalLM", llama: "LlamaForCausalLM" }[c.architecture];
  const out: Record<string, unknown> = {
    architectures: [arch],
    model_type: c.architecture,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    hidden_act: "silu",
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: null,
    vocab_size: c.vocabSize,
    max_position_embeddings: c.maxPositionEmbeddings,
    tie_word_embeddings: c.tieWordEmbeddings,
    torch_dtype: c.torchDtype,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds.length === 0 ? null : c.eosTokenIds,
    attention_dropout: 0,
    initializer_range: 0.02,
    use_cache: true,
  };
  if (c.padTokenId !== null) out.pad_token_id = c.padTokenId;
  if (c.architecture === "qwen2") {
    if (c.oBias || !c.qkvBias) throw new Error("qwen2 always has q/k/v bias and no o_proj bias");
    out.use_sliding_window = false;
    out.sliding_window = null;
    out.max_window_layers = c.numLayers;
  } else {
    if (c.qkvBias !== c.oBias) throw new Error(`${c.architecture}: attention_bias covers q/k/v and o together`);
    out.attention_bias = c.qkvBias;
    if (c.architecture === "qwen3") {
      out.use_sliding_window = false;
      out.sliding_window = null;
    } else out.mlp_bias = false;
  }
  return out;
}

/** What a parameter is (for loaders and the GPU model). */
export type ParamRole =
  | "embed"
  | "q"
  | "k"
  | "v"
  | "o"
  | "qBias"
  | "kBias"
  | "vBias"
  | "oBias"
  | "qNorm"
  | "kNorm"
  | "gate"
  | "up"
  | "down"
  | "inputNorm"
  | "postAttnNorm"
  | "finalNorm"
  | "lmHead";

export interface ParamSpec {
  /** HF state-dict name. */
  name: string;
  shape: number[];
  role: ParamRole;
  /** Layer index, or null for embed/final norm/lm_head. */
  layer: number | null;
  /** "linear": [out, in] weight of y = x·Wᵀ; "bias": [out]; "norm": RMSNorm weight; "embedding": [vocab, hidden]. */
  kind: "linear" | "bias" | "norm" | "embedding";
}

/** HF parameter names. */
export const HF_NAMES = {
  embed: "model.embed_tokens.weight",
  finalNorm: "model.norm.weight",
  lmHead: "lm_head.weight",
  layerPrefix: (i: number) => `model.layers.${i}.`,
} as const;

const LAYER_SUFFIX: Record<Exclude<ParamRole, "embed" | "finalNorm" | "lmHead">, string> = {
  q: "self_attn.q_proj.weight",
  k: "self_attn.k_proj.weight",
  v: "self_attn.v_proj.weight",
  o: "self_attn.o_proj.weight",
  qBias: "self_attn.q_proj.bias",
  kBias: "self_attn.k_proj.bias",
  vBias: "self_attn.v_proj.bias",
  oBias: "self_attn.o_proj.bias",
  qNorm: "self_attn.q_norm.weight",
  kNorm: "self_attn.k_norm.weight",
  gate: "mlp.gate_proj.weight",
  up: "mlp.up_proj.weight",
  down: "mlp.down_proj.weight",
  inputNorm: "input_layernorm.weight",
  postAttnNorm: "post_attention_layernorm.weight",
};

/** HF name of a parameter by role (and layer for per-layer roles). */
export function paramName(role: ParamRole, layer?: number): string {
  if (role === "embed") return HF_NAMES.embed;
  if (role === "finalNorm") return HF_NAMES.finalNorm;
  if (role === "lmHead") return HF_NAMES.lmHead;
  if (layer === undefined) throw new Error(`paramName: role ${role} needs a layer index`);
  return HF_NAMES.layerPrefix(layer) + LAYER_SUFFIX[role];
}

/** The parameters a checkpoint of this config holds, in HF order, with expected shapes. */
export function parameterSpecs(c: ModelConfig): ParamSpec[] {
  const H = c.hiddenSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const I = c.intermediateSize;
  const specs: ParamSpec[] = [{ name: HF_NAMES.embed, shape: [c.vocabSize, H], role: "embed", layer: null, kind: "embedding" }];
  for (let i = 0; i < c.numLayers; i++) {
    const add = (role: keyof typeof LAYER_SUFFIX, shape: number[], kind: ParamSpec["kind"]) =>
      specs.push({ name: paramName(role, i), shape, role, layer: i, kind });
    add("q", [qDim, H], "linear");
    if (c.qkvBias) add("qBias", [qDim], "bias");
    add("k", [kvDim, H], "linear");
    if (c.qkvBias) add("kBias", [kvDim], "bias");
    add("v", [kvDim, H], "linear");
    if (c.qkvBias) add("vBias", [kvDim], "bias");
    add("o", [H, qDim], "linear");
    if (c.oBias) add("oBias", [H], "bias");
    if (c.qkNorm) {
      add("qNorm", [c.headDim], "norm");
      add("kNorm", [c.headDim], "norm");
    }
    add("gate", [I, H], "linear");
    add("up", [I, H], "linear");
    add("down", [H, I], "linear");
    add("inputNorm", [H], "norm");
    add("postAttnNorm", [H], "norm");
  }
  specs.push({ name: HF_NAMES.finalNorm, shape: [H], role: "finalNorm", layer: null, kind: "norm" });
  if (!c.tieWordEmbeddings) specs.push({ name: HF_NAMES.lmHead, shape: [c.vocabSize, H], role: "lmHead", layer: null, kind: "linear" });
  return specs;
}

/** Total number of parameters of the config (tied embeddings counted once). */
export function parameterCount(c: ModelConfig): number {
  return parameterSpecs(c).reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
}
