// Streaming safetensors reader/writer.
//
// File layout: u64 little-endian N, then N bytes of UTF-8 JSON header {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {str: str}}, then the data region; offsets are relative to the data region's start (8 + N).
//
// Reading never loads a whole file: open() reads the 8-byte length and the header, validates every entry against the
// file size, and keeps a file handle; each tensor (or a range of its rows) is then read by offset in bounded chunks
// and converted on the fly (bf16 → f32 exact, → f16 round-to-nearest-even). A multi-GB checkpoint needs only as much
// memory as the tensors the caller asks for.
//
// Sharded checkpoints: model.safetensors.index.json {"metadata": {...}, "weight_map": {tensor: shard file}}.
import { open, readFile, stat, writeFile, type FileHandle } from "node:fs/promises";
import { existsSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { endianness } from "node:os";
import { bf16ToF16, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "./dtypes.js";

if (endianness() !== "LE") throw new Error("@nr/model: safetensors I/O assumes a little-endian host");

export type SafetensorsDtype = "BF16" | "F16" | "F32" | "F64" | "U8" | "I8" | "I16" | "I32" | "I64" | "BOOL";

export const DTYPE_BYTES: Record<SafetensorsDtype, number> = {
  BF16: 2,
  F16: 2,
  F32: 4,
  F64: 8,
  U8: 1,
  I8: 1,
  I16: 2,
  I32: 4,
  I64: 8,
  BOOL: 1,
};

export const FLOAT_DTYPES: readonly SafetensorsDtype[] = ["BF16", "F16", "F32", "F64"];

/** Largest header accepted (the format's own limit is 100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;

/** Bytes read per I/O call when converting (a multiple of 8). */
export const DEFAULT_CHUNK_BYTES = 8 << 20;

export class SafetensorsError extends Error {
  constructor(
    readonly file: string,
    message: string,
    readonly tensor?: string,
  ) {
    super(`${file}${tensor !== undefined ? ` [tensor ${tensor}]` : ""}: ${message}`);
    this.name = "SafetensorsError";
  }
}

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  numel: number;
  byteLength: number;
  /** Absolute byte offset of the tensor's data in its file. */
  fileOffset: number;
  /** The file holding the tensor. */
  file: string;
}

export interface ReadOptions {
  /** Read only rows [start, start + count) of dim 0 (e.g. a few embedding rows). */
  rows?: { start: number; count: number };
  /** I/O chunk size in bytes for converting reads (default 8 MiB). */
  chunkBytes?: number;
}

export type TypedTensorData = Float32Array | Float64Array | Uint16Array | Uint8Array | Int8Array | Int16Array | Int32Array | BigInt64Array;

/** Anything tensors can be read from: one safetensors file, or a (sharded) checkpoint. */
export interface TensorSource {
  /** Tensor names, in file order. */
  names(): string[];
  has(name: string): boolean;
  /** Throws a SafetensorsError naming the tensor when absent. */
  info(name: string): TensorInfo;
  /** The stored bytes. */
  readRaw(name: string, opts?: ReadOptions): Promise<Uint8Array>;
  /** Floating tensors as f32 (bf16/f16 exact; f64 rounded). */
  readF32(name: string, opts?: ReadOptions): Promise<Float32Array>;
  /** Floating tensors as f16 bits (round to nearest even from bf16/f32/f64). */
  readF16(name: string, opts?: ReadOptions): Promise<Uint16Array>;
  /** The stored values in their natural typed array (bf16/f16 as Uint16Array bits, BOOL as Uint8Array). */
  readTyped(name: string, opts?: ReadOptions): Promise<TypedTensorData>;
  metadata(): Record<string, string>;
  close(): Promise<void>;
}

function isInt(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

/** Parses and validates a header against the data region size. Exported for tests and tools. */
export function parseSafetensorsHeader(
  headerBytes: Uint8Array,
  dataSize: number,
  file: string,
): { tensors: TensorInfo[]; metadata: Record<string, string> } {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError(file, "corrupt header: not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new SafetensorsError(file, `corrupt header: invalid JSON (${(err as Error).message})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new SafetensorsError(file, "corrupt header: not a JSON object");
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  const headerStart = 8 + headerBytes.length;
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof entry !== "object" || entry === null || Array.isArray(entry)) throw new SafetensorsError(file, "corrupt header: __metadata__ must be an object of strings");
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== "string") throw new SafetensorsError(file, `corrupt header: __metadata__.${k} must be a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (typeof entry !== "object" || entry === null) throw new SafetensorsError(file, "corrupt header: entry is not an object", name);
    const e = entry as Record<string, unknown>;
    const dtype = e.dtype;
    if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
      throw new SafetensorsError(file, `unknown dtype ${JSON.stringify(dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(", ")})`, name);
    }
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every(isInt)) throw new SafetensorsError(file, `corrupt header: shape ${JSON.stringify(shape)} is not a list of sizes`, name);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !isInt(off[0]) || !isInt(off[1]) || off[1] < off[0]) {
      throw new SafetensorsError(file, `corrupt header: data_offsets ${JSON.stringify(off)} is not [begin, end] with begin ≤ end`, name);
    }
    const numel = (shape as number[]).reduce((a, b) => a * b, 1);
    const byteLength = numel * DTYPE_BYTES[dtype as SafetensorsDtype];
    if (off[1] - off[0] !== byteLength) {
      throw new SafetensorsError(
        file,
        `data_offsets [${off[0]}, ${off[1]}] span ${off[1] - off[0]} bytes but shape [${shape.join(", ")}] of ${dtype} needs ${byteLength}`,
        name,
      );
    }
    if (off[1] > dataSize) {
      throw new SafetensorsError(
        file,
        `data_offsets [${off[0]}, ${off[1]}] out of range: the data region holds ${dataSize} bytes (file truncated?)`,
        name,
      );
    }
    tensors.push({ name, dtype: dtype as SafetensorsDtype, shape: shape as number[], numel, byteLength, fileOffset: headerStart + off[0], file });
  }
  const sorted = [...tensors].sort((a, b) => a.fileOffset - b.fileOffset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    const cur = sorted[i];
    if (prev.byteLength > 0 && cur.byteLength > 0 && cur.fileOffset < prev.fileOffset + prev.byteLength) {
      throw new SafetensorsError(file, `data of tensors ${prev.name} and ${cur.name} overlap`, cur.name);
    }
  }
  return { tensors: sorted, metadata };
}

function typedView(dtype: SafetensorsDtype, bytes: Uint8Array): TypedTensorData {
  const { buffer, byteOffset, byteLength } = bytes;
  const n = byteLength / DTYPE_BYTES[dtype];
  switch (dtype) {
    case "F32":
      return new Float32Array(buffer, byteOffset, n);
    case "F64":
      return new Float64Array(buffer, byteOffset, n);
    case "BF16":
    case "F16":
      return new Uint16Array(buffer, byteOffset, n);
    case "I8":
      return new Int8Array(buffer, byteOffset, n);
    case "I16":
      return new Int16Array(buffer, byteOffset, n);
    case "I32":
      return new Int32Array(buffer, byteOffset, n);
    case "I64":
      return new BigInt64Array(buffer, byteOffset, n);
    case "U8":
    case "BOOL":
      return bytes;
  }
}

/** One open .safetensors file. */
export class SafetensorsFile implements TensorSource {
  private readonly byName: Map<string, TensorInfo>;
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly fileSize: number,
    readonly headerSize: number,
    private readonly order: TensorInfo[],
    private readonly meta: Record<string, string>,
  ) {
    this.byName = new Map(order.map((t) => [t.name, t]));
  }

  /** Opens a file: reads and validates the header only. */
  static async open(path: string): Promise<SafetensorsFile> {
    let handle: FileHandle;
    try {
      handle = await open(path, "r");
    } catch (err) {
      throw new SafetensorsError(path, `cannot open: ${(err as Error).message}`);
    }
    try {
      const size = (await handle.stat()).size;
      if (size < 8) throw new SafetensorsError(path, `truncated header: file is ${size} bytes, shorter than the 8-byte header length`);
      const lenBuf = new Uint8Array(8);
      await readFully(handle, lenBuf, 0, path);
      const n64 = new DataView(lenBuf.buffer).getBigUint64(0, true);
      if (n64 > BigInt(size - 8)) throw new SafetensorsError(path, `header length ${n64} goes beyond the file size (${size} bytes): corrupt or truncated header`);
      const n = Number(n64);
      if (n > MAX_HEADER_BYTES) throw new SafetensorsError(path, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
      if (n < 2) throw new SafetensorsError(path, `corrupt header: header length ${n} is too small for a JSON object`);
      const header = new Uint8Array(n);
      await readFully(handle, header, 8, path);
      const { tensors, metadata } = parseSafetensorsHeader(header, size - 8 - n, path);
      return new SafetensorsFile(path, handle, size, n, tensors, metadata);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  names(): string[] {
    return this.order.map((t) => t.name);
  }
  has(name: string): boolean {
    return this.byName.has(name);
  }
  info(name: string): TensorInfo {
    const t = this.byName.get(name);
    if (!t) throw new SafetensorsError(this.path, "missing tensor", name);
    return t;
  }
  metadata(): Record<string, string> {
    return { ...this.meta };
  }

  private range(t: TensorInfo, opts?: ReadOptions): { offset: number; numel: number } {
    if (!opts?.rows) return { offset: t.fileOffset, numel: t.numel };
    const { start, count } = opts.rows;
    const rows = t.shape[0] ?? 1;
    if (t.shape.length === 0 || !isInt(start) || !isInt(count) || start + count > rows) {
      throw new SafetensorsError(this.path, `rows [${start}, ${start + count}) out of range for shape [${t.shape.join(", ")}]`, t.name);
    }
    const rowElems = t.shape.slice(1).reduce((a, b) => a * b, 1);
    return { offset: t.fileOffset + start * rowElems * DTYPE_BYTES[t.dtype], numel: count * rowElems };
  }

  private check(): void {
    if (this.closed) throw new SafetensorsError(this.path, "file is closed");
  }

  async readRaw(name: string, opts?: ReadOptions): Promise<Uint8Array> {
    this.check();
    const t = this.info(name);
    const { offset, numel } = this.range(t, opts);
    const out = new Uint8Array(numel * DTYPE_BYTES[t.dtype]);
    await readFully(this.handle, out, offset, this.path, name);
    return out;
  }

  async readTyped(name: string, opts?: ReadOptions): Promise<TypedTensorData> {
    const t = this.info(name);
    return typedView(t.dtype, await this.readRaw(name, opts));
  }

  /** Reads in chunks, handing each chunk (as bytes of whole elements) and its first element index to `sink`. */
  private async chunked(t: TensorInfo, opts: ReadOptions | undefined, sink: (bytes: Uint8Array, elem: number) => void): Promise<number> {
    this.check();
    const { offset, numel } = this.range(t, opts);
    const esize = DTYPE_BYTES[t.dtype];
    const chunk = Math.max(8, Math.floor((opts?.chunkBytes ?? DEFAULT_CHUNK_BYTES) / 8) * 8);
    const total = numel * esize;
    const buf = new Uint8Array(new ArrayBuffer(Math.min(chunk, Math.max(total, 8))));
    for (let done = 0; done < total; ) {
      const len = Math.min(buf.length, total - done);
      const view = buf.subarray(0, len);
      await readFully(this.handle, view, offset + done, this.path, t.name);
      sink(view, done / esize);
      done += len;
    }
    return numel;
  }

  private floatInfo(name: string): TensorInfo {
    const t = this.info(name);
    if (!FLOAT_DTYPES.includes(t.dtype)) throw new SafetensorsError(this.path, `dtype ${t.dtype} is not a floating type; use readTyped/readRaw`, name);
    return t;
  }

  async readF32(name: string, opts?: ReadOptions): Promise<Float32Array> {
    const t = this.floatInfo(name);
    if (t.dtype === "F32") {
      const bytes = await this.readRaw(name, opts);
      return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    }
    const out = new Float32Array(this.range(t, opts).numel);
    await this.chunked(t, opts, (bytes, elem) => {
      const dst = out.subarray(elem);
      if (t.dtype === "F64") dst.set(new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8));
      else {
        const src = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
        if (t.dtype === "BF16") bf16ToF32(src, dst.subarray(0, src.length));
        else f16ToF32(src, dst.subarray(0, src.length));
      }
    });
    return out;
  }

  async readF16(name: string, opts?: ReadOptions): Promise<Uint16Array> {
    const t = this.floatInfo(name);
    if (t.dtype === "F16") {
      const bytes = await this.readRaw(name, opts);
      return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
    }
    const out = new Uint16Array(this.range(t, opts).numel);
    await this.chunked(t, opts, (bytes, elem) => {
      const n = bytes.byteLength / DTYPE_BYTES[t.dtype];
      const dst = out.subarray(elem, elem + n);
      if (t.dtype === "BF16") bf16ToF16(new Uint16Array(bytes.buffer, bytes.byteOffset, n), dst);
      else if (t.dtype === "F32") f32ToF16(new Float32Array(bytes.buffer, bytes.byteOffset, n), dst);
      else f32ToF16(Float32Array.from(new Float64Array(bytes.buffer, bytes.byteOffset, n)), dst);
    });
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}

async function readFully(handle: FileHandle, out: Uint8Array, position: number, file: string, tensor?: string): Promise<void> {
  let done = 0;
  while (done < out.length) {
    const { bytesRead } = await handle.read(out, done, out.length - done, position + done);
    if (bytesRead === 0) throw new SafetensorsError(file, `truncated file: expected ${out.length} bytes at offset ${position}, got ${done}`, tensor);
    done += bytesRead;
  }
}

export const SINGLE_FILE = "model.safetensors";
export const INDEX_FILE = "model.safetensors.index.json";

/** A checkpoint: one model.safetensors, or shards listed by model.safetensors.index.json. */
export class SafetensorsCheckpoint implements TensorSource {
  private constructor(
    /** The file opened: model.safetensors or the index. */
    readonly path: string,
    readonly files: SafetensorsFile[],
    private readonly where: Map<string, SafetensorsFile>,
    private readonly meta: Record<string, string>,
  ) {}

  /**
   * Opens a folder (model.safetensors.index.json preferred, else model.safetensors), an index file or a single
   * .safetensors file. Every shard's header is read and validated; the index must agree with the shards.
   */
  static async open(path: string): Promise<SafetensorsCheckpoint> {
    let file = path;
    if (existsSync(path) && statSync(path).isDirectory()) {
      if (existsSync(join(path, INDEX_FILE))) file = join(path, INDEX_FILE);
      else if (existsSync(join(path, SINGLE_FILE))) file = join(path, SINGLE_FILE);
      else throw new SafetensorsError(path, `no ${SINGLE_FILE} or ${INDEX_FILE} in this folder`);
    }
    if (!file.endsWith(".json")) {
      const f = await SafetensorsFile.open(file);
      return new SafetensorsCheckpoint(file, [f], new Map(f.names().map((n) => [n, f])), f.metadata());
    }
    let index: { metadata?: Record<string, unknown>; weight_map?: Record<string, unknown> };
    try {
      index = JSON.parse(await readFile(file, "utf8"));
    } catch (err) {
      throw new SafetensorsError(file, `cannot read index: ${(err as Error).message}`);
    }
    const wm = index.weight_map;
    if (typeof wm !== "object" || wm === null) throw new SafetensorsError(file, "index has no weight_map object");
    const shardNames = [...new Set(Object.values(wm))];
    for (const s of shardNames) if (typeof s !== "string") throw new SafetensorsError(file, `weight_map value ${JSON.stringify(s)} is not a file name`);
    const dir = dirname(file);
    const files: SafetensorsFile[] = [];
    try {
      for (const s of shardNames as string[]) {
        const p = join(dir, s);
        if (!existsSync(p)) throw new SafetensorsError(file, `shard ${s} listed in weight_map does not exist`);
        files.push(await SafetensorsFile.open(p));
      }
      const byShard = new Map(files.map((f) => [basename(f.path), f]));
      const where = new Map<string, SafetensorsFile>();
      for (const [name, s] of Object.entries(wm as Record<string, string>)) {
        const f = byShard.get(basename(s))!;
        if (!f.has(name)) throw new SafetensorsError(file, `weight_map puts tensor ${name} in ${s}, which does not hold it`, name);
        where.set(name, f);
      }
      for (const f of files) {
        for (const n of f.names()) {
          if (!where.has(n)) throw new SafetensorsError(file, `tensor ${n} of shard ${basename(f.path)} is not listed in weight_map`, n);
          if (where.get(n) !== f) throw new SafetensorsError(file, `tensor ${n} is stored in more than one shard`, n);
        }
      }
      const meta: Record<string, string> = {};
      for (const [k, v] of Object.entries(index.metadata ?? {})) meta[k] = String(v);
      return new SafetensorsCheckpoint(file, files, where, meta);
    } catch (err) {
      await Promise.all(files.map((f) => f.close()));
      throw err;
    }
  }

  private fileOf(name: string): SafetensorsFile {
    const f = this.where.get(name);
    if (!f) throw new SafetensorsError(this.path, "missing tensor", name);
    return f;
  }
  names(): string[] {
    return this.files.flatMap((f) => f.names());
  }
  has(name: string): boolean {
    return this.where.has(name);
  }
  info(name: string): TensorInfo {
    return this.fileOf(name).info(name);
  }
  metadata(): Record<string, string> {
    return { ...this.meta };
  }
  async readRaw(name: string, opts?: ReadOptions): Promise<Uint8Array> {
    return this.fileOf(name).readRaw(name, opts);
  }
  async readF32(name: string, opts?: ReadOptions): Promise<Float32Array> {
    return this.fileOf(name).readF32(name, opts);
  }
  async readF16(name: string, opts?: ReadOptions): Promise<Uint16Array> {
    return this.fileOf(name).readF16(name, opts);
  }
  async readTyped(name: string, opts?: ReadOptions): Promise<TypedTensorData> {
    return this.fileOf(name).readTyped(name, opts);
  }
  async close(): Promise<void> {
    await Promise.all(this.files.map((f) => f.close()));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Writing

/**
 * A tensor to write; `data` holds the stored bytes (any typed array view) or produces them on demand — all at once,
 * or as an async sequence of consecutive chunks (a tensor larger than memory is written without being held).
 */
export interface TensorToWrite {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  data: ArrayBufferView | (() => ArrayBufferView | Promise<ArrayBufferView> | AsyncIterable<ArrayBufferView>);
}

/** The data of a tensor as a sequence of byte chunks. */
async function* dataChunks(t: TensorToWrite): AsyncIterable<Uint8Array> {
  const d = typeof t.data === "function" ? await t.data() : t.data;
  if (Symbol.asyncIterator in d) for await (const chunk of d as AsyncIterable<ArrayBufferView>) yield asBytes(chunk);
  else yield asBytes(d as ArrayBufferView);
}

/** Float values → the bytes of a floating safetensors dtype (f32 → bf16/f16 round to nearest even). */
export function encodeFloats(values: Float32Array | Float64Array | number[], dtype: "BF16" | "F16" | "F32" | "F64"): Uint8Array {
  let out: ArrayBufferView;
  if (dtype === "F64") out = Float64Array.from(values);
  else {
    const f32 = values instanceof Float32Array ? values : Float32Array.from(values);
    out = dtype === "F32" ? f32 : dtype === "BF16" ? f32ToBf16(f32) : f32ToF16(f32);
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

function asBytes(v: ArrayBufferView): Uint8Array {
  return v instanceof Uint8Array ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/** The header bytes (JSON padded with spaces to a multiple of 8) and the data order (by element size, descending). */
function buildHeader(tensors: readonly TensorToWrite[], metadata?: Record<string, string>): { header: Uint8Array; order: TensorToWrite[]; dataBytes: number } {
  const seen = new Set<string>();
  for (const t of tensors) {
    if (t.name === "__metadata__") throw new Error("safetensors: a tensor cannot be named __metadata__");
    if (seen.has(t.name)) throw new Error(`safetensors: duplicate tensor name ${t.name}`);
    seen.add(t.name);
    if (!(t.dtype in DTYPE_BYTES)) throw new Error(`safetensors: unknown dtype ${t.dtype} for ${t.name}`);
  }
  // Larger elements first keeps every tensor aligned to its element size (the data region starts 8-aligned).
  const order = [...tensors].sort((a, b) => DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype]);
  const json: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) json.__metadata__ = metadata;
  let off = 0;
  for (const t of order) {
    const n = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    json[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + n] };
    off += n;
  }
  let text = JSON.stringify(json);
  const raw = new TextEncoder().encode(text);
  const padded = Math.ceil(raw.length / 8) * 8;
  text += " ".repeat(padded - raw.length);
  return { header: new TextEncoder().encode(text), order, dataBytes: off };
}

/**
 * Writes a .safetensors file, tensor by tensor (lazy `data` functions are called one at a time, so a large
 * checkpoint can be produced without holding it all). Returns the file size.
 */
export async function writeSafetensors(path: string, tensors: readonly TensorToWrite[], metadata: Record<string, string> = { format: "pt" }): Promise<number> {
  const { header, order, dataBytes } = buildHeader(tensors, metadata);
  const handle = await open(path, "w");
  try {
    const len = new Uint8Array(8);
    new DataView(len.buffer).setBigUint64(0, BigInt(header.length), true);
    await handle.write(len, 0, 8, 0);
    await handle.write(header, 0, header.length, 8);
    let pos = 8 + header.length;
    for (const t of order) {
      const expect = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
      let got = 0;
      for await (const bytes of dataChunks(t)) {
        if (got + bytes.byteLength > expect) throw new Error(`${path}: tensor ${t.name}: more than ${expect} data bytes for shape [${t.shape.join(", ")}] of ${t.dtype}`);
        for (let done = 0; done < bytes.length; ) {
          const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, pos + got + done);
          done += bytesWritten;
        }
        got += bytes.length;
      }
      if (got !== expect) throw new Error(`${path}: tensor ${t.name}: ${got} data bytes for shape [${t.shape.join(", ")}] of ${t.dtype} (needs ${expect})`);
      pos += got;
    }
    return 8 + header.length + dataBytes;
  } finally {
    await handle.close();
  }
}

/** HF transformers' default `max_shard_size` for save_pretrained ("5GB"). */
export const HF_MAX_SHARD_BYTES = 5e9;

/** Tensors (in order) grouped into files of at most maxBytes each, as save_pretrained does (a larger tensor alone). */
function groupByBytes(tensors: readonly TensorToWrite[], sizes: number[], maxBytes: number): TensorToWrite[][] {
  const groups: TensorToWrite[][] = [[]];
  let acc = 0;
  tensors.forEach((t, i) => {
    if (groups[groups.length - 1].length > 0 && acc + sizes[i] > maxBytes) {
      groups.push([]);
      acc = 0;
    }
    groups[groups.length - 1].push(t);
    acc += sizes[i];
  });
  return groups;
}

/** Tensors (in order) split into `shards` groups of about equal bytes, each with at least one tensor. */
function groupByCount(tensors: readonly TensorToWrite[], sizes: number[], shards: number): TensorToWrite[][] {
  if (shards > tensors.length) throw new Error(`cannot split ${tensors.length} tensors into ${shards} shards`);
  const total = sizes.reduce((a, b) => a + b, 0);
  const groups: TensorToWrite[][] = [];
  let cur: TensorToWrite[] = [];
  let acc = 0;
  for (let i = 0; i < tensors.length; i++) {
    const left = tensors.length - i;
    const groupsLeft = shards - groups.length;
    // close the current shard when it reached its share, or when every remaining shard needs one tensor
    if (cur.length > 0 && groupsLeft > 1 && (acc >= (total * (groups.length + 1)) / shards || left < groupsLeft)) {
      groups.push(cur);
      cur = [];
    }
    cur.push(tensors[i]);
    acc += sizes[i];
  }
  groups.push(cur);
  return groups;
}

/**
 * Writes `shards` files `model-0000i-of-0000n.safetensors` (tensors kept in order, split by size) plus
 * model.safetensors.index.json; with shards = 1 writes a single model.safetensors. With `maxShardBytes` instead, the
 * files are cut as HF's save_pretrained cuts them: a new file when the next tensor would go over the size, a single
 * model.safetensors (no index) when everything fits one.
 */
export async function writeSafetensorsCheckpoint(
  dir: string,
  tensors: readonly TensorToWrite[],
  opts: { shards?: number; maxShardBytes?: number; metadata?: Record<string, string> } = {},
): Promise<string[]> {
  const shards = opts.shards ?? 1;
  const metadata = opts.metadata ?? { format: "pt" };
  if (!Number.isInteger(shards) || shards < 1) throw new Error(`shards must be a positive integer, got ${shards}`);
  if (opts.maxShardBytes !== undefined && !(opts.maxShardBytes > 0)) throw new Error(`maxShardBytes must be positive, got ${opts.maxShardBytes}`);
  const sizes = tensors.map((t) => t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype]);
  const total = sizes.reduce((a, b) => a + b, 0);
  const bySize = opts.maxShardBytes !== undefined ? groupByBytes(tensors, sizes, opts.maxShardBytes) : null;
  if (bySize ? bySize.length === 1 : shards === 1) {
    await writeSafetensors(join(dir, SINGLE_FILE), tensors, metadata);
    return [SINGLE_FILE];
  }
  const groups = bySize ?? groupByCount(tensors, sizes, shards);
  const pad = (k: number) => String(k).padStart(5, "0");
  const names = groups.map((_, k) => `model-${pad(k + 1)}-of-${pad(groups.length)}.safetensors`);
  const weightMap: Record<string, string> = {};
  for (let k = 0; k < groups.length; k++) {
    await writeSafetensors(join(dir, names[k]), groups[k], metadata);
    for (const t of groups[k]) weightMap[t.name] = names[k];
  }
  await writeFile(join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + "\n");
  return [...names, INDEX_FILE];
}

/** File size helper for reports. */
export async function fileSize(path: string): Promise<number> {
  return (await stat(path)).size;
}
