/**
 * Sentence embeddings with onnxruntime-node: a MiniLM-class encoder (inputs `input_ids`,
 * `attention_mask`, optionally `token_type_ids`; output `last_hidden_state`) followed by
 * attention-masked mean pooling and L2 normalisation. Also: two tokenizers (BERT WordPiece from a
 * vocab.txt, and a hashing tokenizer) and a generator for a tiny hashed bag-of-words embedding model.
 */
import { readFile } from "node:fs/promises";
import * as ort from "onnxruntime-node";
import onnxProto from "onnx-proto";
import { Rng, fnv1a } from "../util.js";

const { onnx } = onnxProto;

/** Token ids of a text (and segment ids, when the model takes `token_type_ids`). */
export interface TokenizedText {
  inputIds: number[];
  tokenTypeIds?: number[];
}

/** Turns one text into token ids. */
export type TextTokenizer = (text: string) => number[] | TokenizedText;

/** Anything that maps texts to unit-length vectors. */
export interface Embedder {
  embed(texts: readonly string[]): Promise<Float32Array[]>;
}

// ---- tokenizers -------------------------------------------------------------------------

/** Lower-cased alphanumeric words of a text (NFKC). */
export function words(text: string): string[] {
  return text.normalize("NFKC").toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
}

export interface HashTokenizerOptions {
  /** Number of embedding rows; id 0 is padding, ids are 1..vocabSize-1. Default 4096. */
  vocabSize?: number;
  /** Character n-gram length added per word (fastText-style, with `<` `>` word boundaries); 0 for none. Default 3. */
  charNgram?: number;
  /** Words to leave out (default: a short list of English function words). */
  stopwords?: Iterable<string>;
  /** Longest id sequence (default 512). */
  maxLength?: number;
  /**
   * How many times a number's id is repeated (default 4). Numbers carry much of a math problem's
   * identity: weighting them keeps problems that share a template but not their numbers apart.
   */
  numberWeight?: number;
}

/** A short list of English function words the hash tokenizer leaves out by default. */
export const DEFAULT_STOPWORDS = [
  "a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "for", "with", "by", "from", "is", "are", "was", "were", "be",
  "it", "its", "that", "this", "as", "if", "then", "than", "so", "do", "does", "did", "how", "what", "much", "many",
  "he", "she", "they", "his", "her", "their", "him", "them", "has", "have", "had",
];

/**
 * Hashing tokenizer for {@link buildHashEmbeddingModel}: each word gets one id (FNV-1a hash of the
 * word) plus one id per character n-gram of `<word>`, so inflections and typos share most ids and
 * word order does not matter; numbers get no n-grams but their id is repeated `numberWeight` times.
 * Ids lie in 1..vocabSize-1.
 */
export function hashTokenizer(options: HashTokenizerOptions = {}): TextTokenizer {
  const V = options.vocabSize ?? 4096;
  const g = options.charNgram ?? 3;
  const stop = new Set(options.stopwords ?? DEFAULT_STOPWORDS);
  const maxLength = options.maxLength ?? 512;
  const numberWeight = Math.max(1, Math.round(options.numberWeight ?? 4));
  return (text) => {
    const ids: number[] = [];
    for (const w of words(text)) {
      if (stop.has(w)) continue;
      const id = 1 + (fnv1a(`w:${w}`) % (V - 1));
      const isNumber = /^\d+$/.test(w);
      for (let k = isNumber ? numberWeight : 1; k > 0; k--) ids.push(id);
      if (g > 0 && !isNumber) {
        const s = `<${w}>`;
        for (let i = 0; i + g <= s.length; i++) ids.push(1 + (fnv1a(`g:${s.slice(i, i + g)}`) % (V - 1)));
      }
      if (ids.length >= maxLength) break;
    }
    return ids.slice(0, maxLength);
  };
}

/** BERT-style WordPiece tokenizer (uncased by default) built from a `vocab.txt`. */
export class WordPieceTokenizer {
  readonly vocab: Map<string, number>;
  readonly lowercase: boolean;
  readonly maxLength: number;
  private readonly unk: number;
  private readonly cls: number;
  private readonly sep: number;

  constructor(vocab: readonly string[], options: { lowercase?: boolean; maxLength?: number } = {}) {
    this.vocab = new Map(vocab.map((t, i) => [t, i]));
    this.lowercase = options.lowercase ?? true;
    this.maxLength = options.maxLength ?? 256;
    const need = (t: string) => {
      const id = this.vocab.get(t);
      if (id === undefined) throw new Error(`WordPiece vocab has no ${t}`);
      return id;
    };
    this.unk = need("[UNK]");
    this.cls = need("[CLS]");
    this.sep = need("[SEP]");
  }

  /** Loads a `vocab.txt` (one token per line; the line number is the id). */
  static async fromVocabFile(path: string, options: { lowercase?: boolean; maxLength?: number } = {}): Promise<WordPieceTokenizer> {
    const lines = (await readFile(path, "utf8")).split(/\r?\n/);
    if (lines[lines.length - 1] === "") lines.pop();
    return new WordPieceTokenizer(lines, options);
  }

  /** Basic tokenisation: clean, lower-case and strip accents (uncased), split on spaces and punctuation. */
  basicTokens(text: string): string[] {
    let t = text.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\ufffd]/g, "");
    if (this.lowercase) t = t.toLowerCase().normalize("NFD").replace(/\p{Mn}/gu, "");
    // Punctuation, symbols and CJK ideographs become tokens of their own.
    t = t.replace(/([\p{P}\p{S}\u4e00-\u9fff\u3400-\u4dbf])/gu, " $1 ");
    return t.split(/\s+/).filter(Boolean);
  }

  /** Word pieces of one word, greedy longest-match-first with `##` continuations; `[UNK]` if it cannot be split. */
  wordPieces(word: string): number[] {
    if ([...word].length > 100) return [this.unk];
    const out: number[] = [];
    let start = 0;
    while (start < word.length) {
      let end = word.length;
      let found: number | undefined;
      while (start < end) {
        const piece = (start > 0 ? "##" : "") + word.slice(start, end);
        found = this.vocab.get(piece);
        if (found !== undefined) break;
        end--;
      }
      if (found === undefined) return [this.unk];
      out.push(found);
      start = end;
    }
    return out;
  }

  /** `[CLS] pieces… [SEP]`, truncated to `maxLength`. */
  encode(text: string): number[] {
    const ids = [this.cls];
    for (const w of this.basicTokens(text)) ids.push(...this.wordPieces(w));
    const body = ids.slice(0, this.maxLength - 1);
    body.push(this.sep);
    return body;
  }

  /** As a {@link TextTokenizer}. */
  get tokenizer(): TextTokenizer {
    return (text) => this.encode(text);
  }
}

// ---- the ONNX embedder ------------------------------------------------------------------

export interface OnnxEmbedderOptions {
  tokenizer: TextTokenizer;
  /** Texts per session run (default 32). */
  batchSize?: number;
  /** Padding id (default 0). */
  padId?: number;
  /** Passed to onnxruntime (e.g. `{ intraOpNumThreads: 1 }`). */
  sessionOptions?: ort.InferenceSession.SessionOptions;
}

/** Embeds texts with an ONNX encoder: mean pooling over `last_hidden_state` (masked), then L2 normalisation. */
export class OnnxEmbedder implements Embedder {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly options: OnnxEmbedderOptions,
  ) {}

  /** Loads a model from a path or bytes. */
  static async create(model: string | Uint8Array, options: OnnxEmbedderOptions): Promise<OnnxEmbedder> {
    const session = typeof model === "string" ? await ort.InferenceSession.create(model, options.sessionOptions ?? {}) : await ort.InferenceSession.create(model, options.sessionOptions ?? {});
    for (const name of ["input_ids"]) if (!session.inputNames.includes(name)) throw new Error(`embedding model has no ${name} input (inputs: ${session.inputNames.join(", ")})`);
    return new OnnxEmbedder(session, options);
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  async embed(texts: readonly string[]): Promise<Float32Array[]> {
    const tok = texts.map((t) => {
      const r = this.options.tokenizer(t);
      return Array.isArray(r) ? { inputIds: r } : r;
    });
    // Batch texts of similar length together to limit padding.
    const order = tok.map((_, i) => i).sort((a, b) => tok[a].inputIds.length - tok[b].inputIds.length);
    const out = new Array<Float32Array>(texts.length);
    const bs = Math.max(1, this.options.batchSize ?? 32);
    for (let s = 0; s < order.length; s += bs) {
      const idx = order.slice(s, s + bs);
      const vecs = await this.runBatch(idx.map((i) => tok[i]));
      idx.forEach((i, j) => (out[i] = vecs[j]));
    }
    return out;
  }

  private async runBatch(batch: TokenizedText[]): Promise<Float32Array[]> {
    const B = batch.length;
    const L = Math.max(1, ...batch.map((b) => b.inputIds.length));
    const pad = BigInt(this.options.padId ?? 0);
    const ids = new BigInt64Array(B * L).fill(pad);
    const mask = new BigInt64Array(B * L);
    const types = new BigInt64Array(B * L);
    batch.forEach((b, i) => {
      b.inputIds.forEach((id, j) => {
        ids[i * L + j] = BigInt(id);
        mask[i * L + j] = 1n;
        if (b.tokenTypeIds) types[i * L + j] = BigInt(b.tokenTypeIds[j] ?? 0);
      });
    });
    const feeds: Record<string, ort.Tensor> = { input_ids: new ort.Tensor("int64", ids, [B, L]) };
    if (this.session.inputNames.includes("attention_mask")) feeds.attention_mask = new ort.Tensor("int64", mask, [B, L]);
    if (this.session.inputNames.includes("token_type_ids")) feeds.token_type_ids = new ort.Tensor("int64", types, [B, L]);
    const res = await this.session.run(feeds);
    const outName = this.session.outputNames.includes("last_hidden_state") ? "last_hidden_state" : this.session.outputNames[0];
    const t = res[outName];
    const data = t.data as Float32Array;
    const vecs: Float32Array[] = [];
    if (t.dims.length === 2) {
      // Already pooled (e.g. a `sentence_embedding` output).
      const D = t.dims[1];
      for (let i = 0; i < B; i++) vecs.push(normalize(data.slice(i * D, (i + 1) * D)));
      return vecs;
    }
    if (t.dims.length !== 3 || t.dims[0] !== B || t.dims[1] !== L) throw new Error(`unexpected ${outName} shape [${t.dims.join(", ")}]`);
    const D = t.dims[2];
    for (let i = 0; i < B; i++) {
      const v = new Float32Array(D);
      let count = 0;
      for (let j = 0; j < L; j++) {
        if (mask[i * L + j] === 0n) continue;
        count++;
        const off = (i * L + j) * D;
        for (let d = 0; d < D; d++) v[d] += data[off + d];
      }
      if (count > 0) for (let d = 0; d < D; d++) v[d] /= count;
      vecs.push(normalize(v));
    }
    return vecs;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** Scales a vector to unit length in place (a zero vector stays zero). */
export function normalize(v: Float32Array): Float32Array {
  let s = 0;
  for (const x of v) s += x * x;
  const n = Math.sqrt(s);
  if (n > 0) for (let i = 0; i < v.length; i++) v[i] /= n;
  return v;
}

/** Dot product (= cosine for unit vectors). */
export function cosine(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

// ---- a tiny embedding model -------------------------------------------------------------

export interface HashEmbeddingModelOptions {
  /** Rows of the embedding table (must match the tokenizer's vocabSize). Default 4096. */
  vocabSize?: number;
  /** Embedding width. Default 128. */
  dim?: number;
  /** Seed of the random table. Default 0. */
  seed?: number;
  /** Add a `token_type_ids` input (a second, 2-row table added to the token vectors), like BERT models. */
  tokenTypeIds?: boolean;
}

/**
 * Builds a tiny MiniLM-shaped embedding model as ONNX bytes: `last_hidden_state = (E[input_ids]
 * (+ T[token_type_ids])) · attention_mask`, with E a seeded random Gaussian table (row 0, the padding
 * id, zero). Used with {@link hashTokenizer}, mean pooling makes it a hashed bag of words and
 * character n-grams: word order does not matter and light edits change few ids, so paraphrases of
 * that kind land close while texts with different content words do not.
 */
export function buildHashEmbeddingModel(options: HashEmbeddingModelOptions = {}): Uint8Array {
  const V = options.vocabSize ?? 4096;
  const D = options.dim ?? 128;
  const rng = new Rng(options.seed ?? 0);
  const table = new Float32Array(V * D);
  for (let i = D; i < table.length; i++) table[i] = rng.normal() / Math.sqrt(D);
  const F = onnx.TensorProto.DataType.FLOAT;
  const I64 = onnx.TensorProto.DataType.INT64;
  const dims = (...d: (number | string)[]) => ({ dim: d.map((x) => (typeof x === "number" ? { dimValue: x } : { dimParam: x })) });
  const nodes: onnxProto.onnx.INodeProto[] = [
    { opType: "Gather", input: ["embeddings", "input_ids"], output: ["tok"], attribute: [{ name: "axis", type: onnx.AttributeProto.AttributeType.INT, i: 0 }] },
  ];
  const initializer: onnxProto.onnx.ITensorProto[] = [
    { name: "embeddings", dataType: F, dims: [V, D], rawData: new Uint8Array(table.buffer) },
    { name: "unsqueeze_axes", dataType: I64, dims: [1], rawData: new Uint8Array(new BigInt64Array([-1n]).buffer) },
  ];
  const inputs: onnxProto.onnx.IValueInfoProto[] = [
    { name: "input_ids", type: { tensorType: { elemType: I64, shape: dims("batch", "seq") } } },
    { name: "attention_mask", type: { tensorType: { elemType: I64, shape: dims("batch", "seq") } } },
  ];
  let hidden = "tok";
  if (options.tokenTypeIds) {
    const types = new Float32Array(2 * D);
    for (let i = 0; i < types.length; i++) types[i] = (rng.normal() / Math.sqrt(D)) * 0.01;
    initializer.push({ name: "type_embeddings", dataType: F, dims: [2, D], rawData: new Uint8Array(types.buffer) });
    inputs.push({ name: "token_type_ids", type: { tensorType: { elemType: I64, shape: dims("batch", "seq") } } });
    nodes.push(
      { opType: "Gather", input: ["type_embeddings", "token_type_ids"], output: ["typ"], attribute: [{ name: "axis", type: onnx.AttributeProto.AttributeType.INT, i: 0 }] },
      { opType: "Add", input: ["tok", "typ"], output: ["tok_typ"] },
    );
    hidden = "tok_typ";
  }
  nodes.push(
    { opType: "Cast", input: ["attention_mask"], output: ["mask_f"], attribute: [{ name: "to", type: onnx.AttributeProto.AttributeType.INT, i: F }] },
    { opType: "Unsqueeze", input: ["mask_f", "unsqueeze_axes"], output: ["mask_3d"] },
    { opType: "Mul", input: [hidden, "mask_3d"], output: ["last_hidden_state"] },
  );
  const model = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: "", version: 17 }],
    producerName: "nano-reasoner @nr/data",
    graph: {
      name: "hash_bag_embedding",
      node: nodes,
      initializer,
      input: inputs,
      output: [{ name: "last_hidden_state", type: { tensorType: { elemType: F, shape: dims("batch", "seq", D) } } }],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}
