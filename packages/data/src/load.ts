import { readdir, readFile, stat } from "node:fs/promises";
import { basename, extname, join, relative, sep } from "node:path";
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } from "hyparquet";
import type { Compressors } from "hyparquet";
import { LAYOUTS, detectLayout, mapRow } from "./fields.js";
import type { FieldMap, Layout } from "./fields.js";
import { DatasetError } from "./types.js";
import type { BadRowReport, MathRecord } from "./types.js";
import { snippet } from "./util.js";

/** Options of {@link loadDataset}. */
export interface LoadOptions {
  /** Row layout; `"auto"` (default) detects it per file from the field names. */
  layout?: Layout | "auto";
  /**
   * Explicit field map. Merged over the chosen layout when `layout` is given, otherwise used as is
   * (then `problem` is required).
   */
  fields?: Partial<FieldMap>;
  /** For a dataset folder: which split to load (`train`, `test`, …). Required when the folder holds several. */
  split?: string;
  /** `source` of the records. Default: the folder name for a folder, the file stem for a file. */
  source?: string;
  /** What to do with a bad row: `"skip"` (default; it is reported in `badRows`) or `"error"` (throw {@link DatasetError}). */
  onBadRow?: "skip" | "error";
  /** Stop after this many good records. */
  limit?: number;
  /** Extra Parquet decompressors (hyparquet reads uncompressed and Snappy itself; pass e.g. hyparquet-compressors for ZSTD/GZIP/Brotli). */
  compressors?: Compressors;
}

/** What {@link loadDataset} returns. */
export interface LoadedDataset {
  records: MathRecord[];
  /** Every row that was skipped, with file, line and reason. */
  badRows: BadRowReport[];
  /** The files read, in order. */
  files: string[];
  /** The layout used for each file (`"custom"` for an explicit field map). */
  layouts: Record<string, Layout | "custom">;
}

const DATA_EXTS = [".jsonl", ".json", ".parquet"];
const SPLIT_WORDS = new Set(["train", "test", "validation", "valid", "val", "dev", "eval", "evaluation"]);

/**
 * The split a data file belongs to, from its name: `train-00000-of-00001.parquet` → `train`,
 * `gsm8k_test.jsonl` → `test`, `test.jsonl` → `test`, `data/validation/x.parquet` → `validation`.
 */
export function splitOfFile(relPath: string): string {
  const stem = basename(relPath, extname(relPath)).replace(/-\d{5}-of-\d{5}$/, "");
  const parts = stem.split(/[-_.]/);
  for (let i = parts.length - 1; i >= 0; i--) if (SPLIT_WORDS.has(parts[i].toLowerCase())) return parts[i];
  const dirs = relPath.split(/[\\/]/).slice(0, -1);
  for (let i = dirs.length - 1; i >= 0; i--) if (SPLIT_WORDS.has(dirs[i].toLowerCase())) return dirs[i];
  return parts[0] || stem;
}

async function listDataFiles(dir: string, depth = 0): Promise<string[]> {
  if (depth > 3) return [];
  const out: string[] = [];
  const entries = await readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => a.name.localeCompare(b.name));
  for (const e of entries) {
    if (e.name.startsWith(".")) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listDataFiles(p, depth + 1)));
    else if (DATA_EXTS.includes(extname(e.name).toLowerCase()) && !/^(dataset_infos?|dataset_dict|state|config)\.json$/i.test(e.name)) out.push(p);
  }
  return out;
}

/** The splits found in a dataset folder, with their files (relative paths). */
export async function listSplits(dir: string): Promise<Record<string, string[]>> {
  const files = await listDataFiles(dir);
  const splits: Record<string, string[]> = {};
  for (const f of files) {
    const rel = relative(dir, f);
    (splits[splitOfFile(rel)] ??= []).push(rel);
  }
  return splits;
}

/** Resolves a path (file or dataset folder) and split to the data files to read. */
export async function resolveDataFiles(path: string, split?: string): Promise<string[]> {
  const st = await stat(path);
  if (!st.isDirectory()) {
    // A single file is one split, the one its name says (gsm8k_test.jsonl is "test"); asking it for another split is
    // an error, never the whole file (that would silently evaluate on training data).
    if (split !== undefined && splitOfFile(basename(path)) !== split) throw new Error(`${path}: a single file has no split "${split}" (its name says "${splitOfFile(basename(path))}"); pass a dataset folder with ${split} files, or hold records out of this file`);
    return [path];
  }
  const splits = await listSplits(path);
  const names = Object.keys(splits);
  if (names.length === 0) throw new Error(`${path}: no .jsonl, .json or .parquet files`);
  if (split === undefined) {
    if (names.length > 1) throw new Error(`${path}: several splits (${names.join(", ")}); pass the split option`);
    return splits[names[0]].map((f) => join(path, f));
  }
  const files = splits[split];
  if (!files) throw new Error(`${path}: no split "${split}" (found: ${names.join(", ")})`);
  return files.map((f) => join(path, f));
}

function resolveFieldMap(options: LoadOptions, fields: string[], sample: Record<string, unknown> | undefined, file: string): { map: FieldMap; layout: Layout | "custom" } {
  const layout = options.layout && options.layout !== "auto" ? options.layout : null;
  if (layout) return { map: { ...LAYOUTS[layout], ...options.fields } as FieldMap, layout };
  if (options.fields?.problem) return { map: options.fields as FieldMap, layout: "custom" };
  const detected = detectLayout(fields, sample);
  if (!detected) throw new Error(`${file}: cannot detect the layout from fields [${fields.join(", ")}]; ${KNOWN_LAYOUTS} (rename the fields, or give loadDataset a layout or field map)`);
  return { map: { ...LAYOUTS[detected], ...options.fields } as FieldMap, layout: detected };
}

/** What each built-in layout needs, for messages (see detectLayout). */
const KNOWN_LAYOUTS = "rows need {question, answer} (GSM8K: answer ends with \"#### N\"), {problem, answer or solution} (MATH), {problem, messages, answer or solution} (OpenR1) or {prompt, answer}";

interface RawRow {
  line: number;
  row?: unknown;
  error?: string;
  text?: string;
}

/** Byte offset of the first byte of `bytes` that is not valid UTF-8 (a bad lead byte, bad continuation, overlong, surrogate or truncated sequence), or -1. */
export function invalidUtf8Offset(bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    const len = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (len === 0 || i + len > bytes.length) return i;
    // Second-byte ranges that exclude overlong forms, UTF-16 surrogates and code points above U+10FFFF.
    const lo = b === 0xe0 ? 0xa0 : b === 0xf0 ? 0x90 : 0x80;
    const hi = b === 0xed ? 0x9f : b === 0xf4 ? 0x8f : 0xbf;
    if (bytes[i + 1] < lo || bytes[i + 1] > hi) return i;
    for (let k = 2; k < len; k++) if ((bytes[i + k] & 0xc0) !== 0x80) return i;
    i += len;
  }
  return -1;
}

/**
 * The text of a JSON/JSONL file. Invalid UTF-8 is never replaced by U+FFFD silently: the lines holding it are returned
 * in `badLines` (1-based line → reason with the byte offset in the file) and blanked in the text.
 */
async function readUtf8(file: string): Promise<{ text: string; badLines: Map<number, { reason: string; shown: string }> }> {
  const bytes = await readFile(file);
  const badLines = new Map<number, { reason: string; shown: string }>();
  let start = 0;
  let line = 1;
  const parts: string[] = [];
  const decoder = new TextDecoder("utf-8");
  if (invalidUtf8Offset(bytes) < 0) return { text: decoder.decode(bytes), badLines };
  for (let i = 0; i <= bytes.length; i++) {
    if (i < bytes.length && bytes[i] !== 0x0a) continue;
    const chunk = bytes.subarray(start, i);
    const off = invalidUtf8Offset(chunk);
    // The line is shown (bad bytes as U+FFFD) in the message only; its row is never loaded.
    if (off >= 0) badLines.set(line, { reason: `invalid UTF-8 at byte offset ${start + off} (byte 0x${chunk[off].toString(16).padStart(2, "0")}); re-encode the file as UTF-8`, shown: decoder.decode(chunk) });
    parts.push(off >= 0 ? "" : decoder.decode(chunk));
    start = i + 1;
    line++;
  }
  return { text: parts.join("\n"), badLines };
}

async function* jsonRows(file: string): AsyncGenerator<RawRow> {
  const utf8 = await readUtf8(file);
  let text = utf8.text;
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  if (extname(file).toLowerCase() === ".json") {
    const trimmed = text.trimStart();
    if (trimmed.startsWith("[")) {
      // One JSON document: a line of bad bytes makes the whole array unreadable.
      for (const [line, bad] of utf8.badLines) {
        yield { line, error: bad.reason, text: bad.shown };
        return;
      }
      let arr: unknown;
      try {
        arr = JSON.parse(text);
      } catch (e) {
        yield { line: 1, error: `malformed JSON: ${(e as Error).message}`, text };
        return;
      }
      const rows = arr as unknown[];
      for (let i = 0; i < rows.length; i++) yield { line: i + 1, row: rows[i] };
      return;
    }
  }
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, "");
    const badBytes = utf8.badLines.get(i + 1);
    if (badBytes !== undefined) {
      yield { line: i + 1, error: badBytes.reason, text: badBytes.shown };
      continue;
    }
    if (line.trim() === "") continue;
    try {
      yield { line: i + 1, row: JSON.parse(line) };
    } catch (e) {
      yield { line: i + 1, error: `malformed JSON: ${(e as Error).message}`, text: line };
    }
  }
}

const PARQUET_CHUNK = 8192;

/** A Parquet string value whose bytes are not UTF-8 (kept apart instead of decoded with U+FFFD). */
class InvalidUtf8Value {
  constructor(
    readonly offset: number,
    readonly byte: number,
  ) {}
}

/** hyparquet's string parser, strict: invalid UTF-8 becomes an InvalidUtf8Value that the row check reports. */
const STRICT_STRINGS = {
  stringFromBytes(bytes: Uint8Array): unknown {
    if (!bytes) return bytes;
    const off = invalidUtf8Offset(bytes);
    return off < 0 ? new TextDecoder().decode(bytes) : new InvalidUtf8Value(off, bytes[off]);
  },
};

/** The first invalid UTF-8 value in a Parquet row (any depth), as a bad-row reason, or null. */
function invalidUtf8In(value: unknown, path: string): string | null {
  if (value instanceof InvalidUtf8Value) return `invalid UTF-8 in ${path} at byte offset ${value.offset} of the value (byte 0x${value.byte.toString(16).padStart(2, "0")}); re-encode the column as UTF-8`;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const r = invalidUtf8In(value[i], `${path}[${i}]`);
      if (r) return r;
    }
  } else if (value !== null && typeof value === "object" && !(value instanceof Date) && !ArrayBuffer.isView(value)) {
    for (const [k, v] of Object.entries(value)) {
      const r = invalidUtf8In(v, path ? `${path}.${k}` : k);
      if (r) return r;
    }
  }
  return null;
}

/**
 * Reads rows of a Parquet file in chunks. Only the columns needed are read: the mapped fields,
 * the `meta`/`extraMeta` fields, and (when `meta` is not given) every top-level scalar column.
 */
async function parquetInfo(file: string, compressors?: Compressors) {
  const buf = await asyncBufferFromFile(file);
  let metadata: Awaited<ReturnType<typeof parquetMetadataAsync>>;
  try {
    metadata = await parquetMetadataAsync(buf);
  } catch (e) {
    throw new Error(`${file}: not a readable Parquet file (${(e as Error).message})`);
  }
  const schema = parquetSchema(metadata);
  const columns = schema.children.map((c) => c.element.name);
  const scalar = schema.children.filter((c) => c.children.length === 0 && c.element.repetition_type !== "REPEATED").map((c) => c.element.name);
  const numRows = Number(metadata.num_rows);
  // Layout detection only needs the first answer (GSM8K `####` test); read just that column.
  const probe = columns.includes("answer") ? ["answer"] : columns.slice(0, 1);
  const first = numRows > 0 && probe.length > 0 ? (await parquetReadObjects({ file: buf, metadata, columns: probe, rowStart: 0, rowEnd: 1, compressors, parsers: STRICT_STRINGS }))[0] : undefined;
  return { buf, metadata, columns, scalar, numRows, first };
}

/**
 * Loads a dataset: a `.jsonl`, `.json` (array or lines) or `.parquet` file, or a Hugging Face–style
 * dataset folder (`data/train-00000-of-00001.parquet`, `train.jsonl`, `gsm8k_test.jsonl`, …; pick
 * the split with `split`). Rows are mapped with the built-in layouts (GSM8K, MATH/MATH-500,
 * OpenR1-Math, `{prompt, answer}`, `{question, answer}`) or an explicit field map.
 *
 * Bad rows (malformed JSON, a missing field, an empty answer, …) are never dropped silently:
 * with `onBadRow: "skip"` (default) they are returned in `badRows` with file and line;
 * with `onBadRow: "error"` the first one throws a {@link DatasetError}.
 */
export async function loadDataset(path: string, options: LoadOptions = {}): Promise<LoadedDataset> {
  const files = await resolveDataFiles(path, options.split);
  const isDir = (await stat(path)).isDirectory();
  const source = options.source ?? (isDir ? basename(path.replace(/[\\/]+$/, "")) : basename(path, extname(path)));
  const result: LoadedDataset = { records: [], badRows: [], files, layouts: {} };
  const limit = options.limit ?? Infinity;
  const bad = (report: BadRowReport) => {
    if (options.onBadRow === "error") throw new DatasetError(report);
    result.badRows.push(report);
  };
  const stems = new Map<string, number>();
  for (const file of files) {
    if (result.records.length >= limit) break;
    // Ids are `${stem}:${line}`; shards with equal stems in different folders get the folder prepended.
    let idPrefix = basename(file, extname(file));
    if (stems.has(idPrefix)) idPrefix = relative(path, file).split(sep).join("/").replace(/\.[^.]+$/, "");
    stems.set(idPrefix, 1);
    if (extname(file).toLowerCase() === ".parquet") {
      const info = await parquetInfo(file, options.compressors);
      const { map, layout } = resolveFieldMap(options, info.columns, info.first, file);
      result.layouts[file] = layout;
      const top = (p: string) => p.split(".")[0];
      const wanted = new Set<string>([map.problem, map.answer, map.solution, map.id, ...(map.extraMeta ?? [])].filter((x): x is string => !!x).map(top));
      if (map.meta) map.meta.forEach((m) => wanted.add(top(m)));
      else info.scalar.forEach((c) => wanted.add(c));
      const columns = info.columns.filter((c) => wanted.has(c));
      for (let start = 0; start < info.numRows && result.records.length < limit; start += PARQUET_CHUNK) {
        const rows = await parquetReadObjects({
          file: info.buf,
          metadata: info.metadata,
          columns,
          rowStart: start,
          rowEnd: Math.min(info.numRows, start + PARQUET_CHUNK),
          compressors: options.compressors,
          parsers: STRICT_STRINGS,
        });
        for (let i = 0; i < rows.length && result.records.length < limit; i++) {
          const line = start + i + 1;
          const badBytes = invalidUtf8In(rows[i], "");
          if (badBytes) {
            bad({ file, line, reason: badBytes });
            continue;
          }
          const rec = mapRow(rows[i], map, { source, idPrefix, line });
          if ("error" in rec) bad({ file, line, reason: rec.error, snippet: snippet(safeJson(rows[i])) });
          else result.records.push(rec);
        }
      }
      continue;
    }
    let map: FieldMap | null = null;
    for await (const raw of jsonRows(file)) {
      if (result.records.length >= limit) break;
      if (raw.error !== undefined) {
        bad({ file, line: raw.line, reason: raw.error, snippet: snippet(raw.text ?? "") });
        continue;
      }
      if (!map) {
        if (!raw.row || typeof raw.row !== "object" || Array.isArray(raw.row)) {
          bad({ file, line: raw.line, reason: "row is not a JSON object", snippet: snippet(safeJson(raw.row)) });
          continue;
        }
        const sample = raw.row as Record<string, unknown>;
        const resolved = resolveFieldMap(options, Object.keys(sample), sample, file);
        map = resolved.map;
        result.layouts[file] = resolved.layout;
      }
      const rec = mapRow(raw.row, map, { source, idPrefix, line: raw.line });
      if ("error" in rec) bad({ file, line: raw.line, reason: rec.error, snippet: snippet(safeJson(raw.row)) });
      else result.records.push(rec);
    }
  }
  return result;
}

function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x)) ?? String(v);
  } catch {
    return String(v);
  }
}

/** One line per bad row (`file:line: reason`), plus a count header; empty string when there are none. */
export function formatBadRows(reports: readonly BadRowReport[], max = 20): string {
  if (reports.length === 0) return "";
  const lines = [`${reports.length} bad row${reports.length === 1 ? "" : "s"} skipped:`];
  for (const r of reports.slice(0, max)) lines.push(`  ${r.file}:${r.line}: ${r.reason}`);
  if (reports.length > max) lines.push(`  … and ${reports.length - max} more`);
  return lines.join("\n");
}
