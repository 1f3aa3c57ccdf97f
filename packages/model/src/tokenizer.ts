// Tokenizer of a checkpoint folder: tokenizer.json (+ tokenizer_config.json) through @huggingface/tokenizers, the
// Jinja chat template through @huggingface/jinja, special/eos/pad ids from the configs, and a consistency check
// against config.json's vocab_size. Also writes a small byte-level BPE tokenizer (+ ChatML template) for generated
// models.
import { readFile, writeFile, mkdir } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";

export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

export class TokenizerError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
    this.name = "TokenizerError";
  }
}

export interface LoadTokenizerOptions {
  /**
   * config.json vocab_size to check against; read from `dir`/config.json when present and not given.
   * Pass `null` to skip the check.
   */
  vocabSize?: number | null;
  /** How many more rows the embedding may have than the tokenizer has ids (padding, default 1024). */
  maxVocabPadding?: number;
  /** Which template when tokenizer_config.json's chat_template is a list of {name, template} (default "default"). */
  chatTemplateName?: string;
}

export interface ChatTemplateOptions {
  /** Append the assistant header so the model continues as the assistant (HF `add_generation_prompt`). */
  addGenerationPrompt?: boolean;
  /** Extra template variables (e.g. `tools`, `enable_thinking`, `documents`). */
  extra?: Record<string, unknown>;
}

type TokenField = string | { content?: string } | null | undefined;

function tokenString(v: unknown): string | null {
  const t = v as TokenField;
  if (typeof t === "string") return t;
  if (t && typeof t === "object" && typeof t.content === "string") return t.content;
  return null;
}

async function readJson(file: string, what: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new TokenizerError(file, `cannot read ${what}: ${(err as Error).message}`);
  }
  try {
    const v = JSON.parse(text);
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not a JSON object");
    return v;
  } catch (err) {
    throw new TokenizerError(file, `invalid ${what}: ${(err as Error).message}`);
  }
}

/** A checkpoint's tokenizer with its chat template and special ids. */
export class ModelTokenizer {
  /** The @huggingface/tokenizers instance. */
  readonly tokenizer: Tokenizer;
  /** Number of ids the tokenizer can produce: max id (vocab and added tokens) + 1. */
  readonly size: number;
  /** Added tokens by content → id (special and non-special, e.g. `<think>`). */
  readonly addedTokens: ReadonlyMap<string, { id: number; special: boolean }>;
  readonly bosToken: string | null;
  readonly bosTokenId: number | null;
  readonly eosToken: string | null;
  /** tokenizer_config.json's eos token id (Qwen2.5 instruct/math: `<|im_end|>` = 151645). */
  readonly eosTokenId: number | null;
  readonly padToken: string | null;
  readonly padTokenId: number | null;
  /** Ids that end generation: tokenizer eos ∪ generation_config.json eos ∪ config.json eos, in that order. */
  readonly stopTokenIds: readonly number[];
  /** The Jinja chat template source, or null when the checkpoint has none. */
  readonly chatTemplate: string | null;
  private readonly template: Template | null;
  private readonly templateTokens: Record<string, unknown>;

  private constructor(init: {
    tokenizer: Tokenizer;
    size: number;
    added: Map<string, { id: number; special: boolean }>;
    cfg: Record<string, unknown>;
    extraStops: number[];
    chatTemplate: string | null;
    file: string;
  }) {
    this.tokenizer = init.tokenizer;
    this.size = init.size;
    this.addedTokens = init.added;
    const idOf = (tok: string | null, field: string): number | null => {
      if (tok === null) return null;
      const id = this.tokenToId(tok);
      if (id === undefined) throw new TokenizerError(init.file, `${field} ${JSON.stringify(tok)} is not in tokenizer.json`);
      return id;
    };
    this.bosToken = tokenString(init.cfg.bos_token);
    this.bosTokenId = idOf(this.bosToken, "bos_token");
    this.eosToken = tokenString(init.cfg.eos_token);
    this.eosTokenId = idOf(this.eosToken, "eos_token");
    this.padToken = tokenString(init.cfg.pad_token);
    this.padTokenId = idOf(this.padToken, "pad_token");
    const stops = [...(this.eosTokenId !== null ? [this.eosTokenId] : []), ...init.extraStops];
    this.stopTokenIds = [...new Set(stops)];
    this.chatTemplate = init.chatTemplate;
    try {
      this.template = init.chatTemplate !== null ? new Template(init.chatTemplate) : null;
    } catch (err) {
      throw new TokenizerError(init.file, `chat template does not parse: ${(err as Error).message}`);
    }
    const tokens: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(init.cfg)) {
      if (!k.endsWith("_token")) continue;
      const s = tokenString(v);
      if (s !== null) tokens[k] = s;
    }
    if (Array.isArray(init.cfg.additional_special_tokens)) tokens.additional_special_tokens = init.cfg.additional_special_tokens.map(tokenString);
    this.templateTokens = tokens;
  }

  /**
   * Loads `dir`/tokenizer.json (required), tokenizer_config.json (special tokens, chat_template), chat_template.jinja
   * (preferred over tokenizer_config's chat_template when present, as transformers does), generation_config.json and
   * config.json (eos ids; vocab_size check).
   */
  static async fromDir(dir: string, opts: LoadTokenizerOptions = {}): Promise<ModelTokenizer> {
    const tjPath = join(dir, "tokenizer.json");
    if (!existsSync(tjPath)) throw new TokenizerError(tjPath, "missing tokenizer.json (the tokenizer needs the fast-tokenizer JSON file)");
    const tj = await readJson(tjPath, "tokenizer.json");
    if (typeof tj.model !== "object" || tj.model === null) throw new TokenizerError(tjPath, "tokenizer.json has no model section");
    const tcPath = join(dir, "tokenizer_config.json");
    const cfg = existsSync(tcPath) ? await readJson(tcPath, "tokenizer_config.json") : {};

    const added = new Map<string, { id: number; special: boolean }>();
    let maxId = -1;
    for (const t of (tj.added_tokens ?? []) as { id: number; content: string; special?: boolean }[]) {
      added.set(t.content, { id: t.id, special: t.special ?? false });
      maxId = Math.max(maxId, t.id);
    }
    const vocab = (tj.model as { vocab?: unknown }).vocab;
    if (Array.isArray(vocab)) {
      maxId = Math.max(maxId, vocab.length - 1);
    } else if (vocab && typeof vocab === "object") {
      for (const id of Object.values(vocab as Record<string, number>)) maxId = Math.max(maxId, id);
    } else {
      throw new TokenizerError(tjPath, "tokenizer.json model has no vocab");
    }
    const size = maxId + 1;

    // vocab_size consistency with config.json
    const configPath = join(dir, "config.json");
    let vocabSize = opts.vocabSize;
    let configJson: Record<string, unknown> | null = null;
    if (existsSync(configPath)) configJson = await readJson(configPath, "config.json");
    if (vocabSize === undefined && configJson && typeof configJson.vocab_size === "number") vocabSize = configJson.vocab_size;
    if (vocabSize !== undefined && vocabSize !== null) {
      const pad = opts.maxVocabPadding ?? 1024;
      if (size > vocabSize) {
        throw new TokenizerError(tjPath, `tokenizer has ${size} ids but the model's vocab_size is ${vocabSize}: this tokenizer does not belong to this model`);
      }
      if (vocabSize - size > pad) {
        throw new TokenizerError(
          tjPath,
          `tokenizer has ${size} ids but the model's vocab_size is ${vocabSize} (${vocabSize - size} more, beyond the ${pad}-row padding allowance): wrong tokenizer for this model?`,
        );
      }
    }

    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(tj, cfg);
    } catch (err) {
      throw new TokenizerError(tjPath, `cannot build the tokenizer: ${(err as Error).message}`);
    }

    // chat template
    let chatTemplate: string | null = null;
    const jinjaPath = join(dir, "chat_template.jinja");
    if (existsSync(jinjaPath)) chatTemplate = await readFile(jinjaPath, "utf8");
    else if (typeof cfg.chat_template === "string") chatTemplate = cfg.chat_template;
    else if (Array.isArray(cfg.chat_template)) {
      const name = opts.chatTemplateName ?? "default";
      const entry = (cfg.chat_template as { name?: string; template?: string }[]).find((t) => t.name === name);
      if (!entry || typeof entry.template !== "string") throw new TokenizerError(tcPath, `no chat template named ${JSON.stringify(name)}`);
      chatTemplate = entry.template;
    }

    // extra stop ids
    const extraStops: number[] = [];
    const addIds = (v: unknown) => {
      for (const x of Array.isArray(v) ? v : [v]) if (typeof x === "number" && Number.isInteger(x)) extraStops.push(x);
    };
    const genPath = join(dir, "generation_config.json");
    if (existsSync(genPath)) addIds((await readJson(genPath, "generation_config.json")).eos_token_id);
    if (configJson) addIds(configJson.eos_token_id);
    for (const id of extraStops) {
      if (id >= size) throw new TokenizerError(tjPath, `eos_token_id ${id} (generation_config.json/config.json) is not a tokenizer id (size ${size})`);
    }

    return new ModelTokenizer({ tokenizer, size, added, cfg, extraStops, chatTemplate, file: existsSync(tcPath) ? tcPath : tjPath });
  }

  /** Token ids of a text. Special tokens written in the text are recognised; `addSpecialTokens` runs the post-processor (bos etc.). */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: opts.addSpecialTokens ?? false }).ids;
  }

  /** Token strings (in the tokenizer's own alphabet, e.g. `Ġ` for a byte-level space). */
  tokenize(text: string): string[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).tokens;
  }

  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    return this.tokenizer.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? false, clean_up_tokenization_spaces: false });
  }

  tokenToId(token: string): number | undefined {
    return this.addedTokens.get(token)?.id ?? this.tokenizer.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  /** Whether `id` is a special added token (`<|im_start|>`, …). */
  isSpecial(id: number): boolean {
    const t = this.idToToken(id);
    return t !== undefined && this.addedTokens.get(t)?.special === true;
  }

  /** Renders messages with the checkpoint's chat template (bos/eos/pad tokens available to it; @huggingface/jinja provides `raise_exception`). */
  renderChat(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): string {
    if (!this.template) throw new Error("this tokenizer has no chat template (no chat_template in tokenizer_config.json and no chat_template.jinja)");
    return this.template.render({
      bos_token: "",
      eos_token: "",
      ...this.templateTokens,
      ...opts.extra,
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
    });
  }

  /** Token ids of the rendered chat (no extra special tokens added, as HF apply_chat_template does). */
  encodeChat(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): number[] {
    return this.encode(this.renderChat(messages, opts));
  }
}

/** Loads the tokenizer of a checkpoint folder. */
export function loadTokenizer(dir: string, opts?: LoadTokenizerOptions): Promise<ModelTokenizer> {
  return ModelTokenizer.fromDir(dir, opts);
}

// ---------------------------------------------------------------------------------------------------------------
// A small byte-level BPE tokenizer for generated models.

/** ChatML: `<|im_start|>{role}\n{content}<|im_end|>\n` per message; generation prompt `<|im_start|>assistant\n`. */
export const CHATML_TEMPLATE =
  "{%- for message in messages -%}" +
  "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}" +
  "{%- endfor -%}" +
  "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

/** Special tokens of the generated tokenizer, in id order after the byte/merge vocabulary. */
export const CHATML_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] as const;
/** Non-special added tokens of the generated tokenizer (kept by skip_special_tokens decoding). */
export const THINK_TOKENS = ["<think>", "</think>"] as const;

/** GPT-2's reversible byte → printable character map used by ByteLevel pre-tokenizers. */
export function byteLevelAlphabet(): string[] {
  const chars: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    chars[b] = String.fromCodePoint(printable ? b : 256 + extra++);
  }
  return chars;
}

export interface CharTokenizerOptions {
  /**
   * Whole strings to get single tokens for (through a chain of BPE merges), e.g. `["\\boxed", " the"]`.
   * Everything else is one token per byte (so per character for ASCII).
   */
  words?: readonly string[];
  /** Extra non-special added tokens (besides `<think>`, `</think>`). */
  addedTokens?: readonly string[];
  /** Chat template (default {@link CHATML_TEMPLATE}). */
  chatTemplate?: string;
  modelMaxLength?: number;
}

export interface CharTokenizerSpec {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  /** Ids 0..size-1 are used. */
  size: number;
  ids: { endoftext: number; imStart: number; imEnd: number };
}

/**
 * Builds a byte-level BPE tokenizer: ids 0–255 are the bytes (id = byte value, so printable ASCII characters are
 * their own code), then one id per merge of `words`, then `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` (special)
 * and `<think>`, `</think>` (+ `addedTokens`).
 */
export function buildCharTokenizer(opts: CharTokenizerOptions = {}): CharTokenizerSpec {
  const alphabet = byteLevelAlphabet();
  const vocab: Record<string, number> = {};
  alphabet.forEach((c, b) => (vocab[c] = b));
  let next = 256;
  const merges: [string, string][] = [];
  const enc = new TextEncoder();
  for (const w of opts.words ?? []) {
    const pieces = [...enc.encode(w)].map((b) => alphabet[b]);
    if (pieces.length < 2) continue;
    let left = pieces[0];
    for (let i = 1; i < pieces.length; i++) {
      const merged = left + pieces[i];
      if (!(merged in vocab)) {
        vocab[merged] = next++;
        merges.push([left, pieces[i]]);
      }
      left = merged;
    }
  }
  const added: Record<string, unknown>[] = [];
  const addToken = (content: string, special: boolean) => {
    if (content in vocab || added.some((a) => a.content === content)) throw new Error(`duplicate token ${JSON.stringify(content)}`);
    added.push({ id: next++, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special });
  };
  for (const t of CHATML_SPECIAL_TOKENS) addToken(t, true);
  for (const t of [...THINK_TOKENS, ...(opts.addedTokens ?? [])]) addToken(t, false);
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false };
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  const decoderEntries: Record<string, unknown> = {};
  for (const a of added) {
    const { id, ...rest } = a;
    decoderEntries[String(id)] = rest;
  }
  const tokenizerConfig = {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: decoderEntries,
    additional_special_tokens: ["<|im_start|>", "<|im_end|>"],
    bos_token: null,
    chat_template: opts.chatTemplate ?? CHATML_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: "<|im_end|>",
    errors: "replace",
    model_max_length: opts.modelMaxLength ?? 4096,
    pad_token: "<|endoftext|>",
    split_special_tokens: false,
    tokenizer_class: "PreTrainedTokenizerFast",
    unk_token: null,
  };
  const idOf = (c: string) => added.find((a) => a.content === c)!.id as number;
  return {
    tokenizerJson,
    tokenizerConfig,
    size: next,
    ids: { endoftext: idOf("<|endoftext|>"), imStart: idOf("<|im_start|>"), imEnd: idOf("<|im_end|>") },
  };
}

/** Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json of {@link buildCharTokenizer} into `dir`. */
export async function writeCharTokenizer(dir: string, opts: CharTokenizerOptions = {}): Promise<CharTokenizerSpec> {
  const spec = buildCharTokenizer(opts);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "tokenizer.json"), JSON.stringify(spec.tokenizerJson, null, 2) + "\n");
  await writeFile(join(dir, "tokenizer_config.json"), JSON.stringify(spec.tokenizerConfig, null, 2) + "\n");
  await writeFile(
    join(dir, "special_tokens_map.json"),
    JSON.stringify({ additional_special_tokens: ["<|im_start|>", "<|im_end|>"], eos_token: "<|im_end|>", pad_token: "<|endoftext|>" }, null, 2) + "\n",
  );
  return spec;
}
