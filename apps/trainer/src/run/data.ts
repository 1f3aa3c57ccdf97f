// The records a training run trains and evaluates on, with a held-out split that is never trained on:
// - the synthetic task: its train and held-out splits are disjoint by construction;
// - a dataset folder with a train split and a held-out split (test, validation, …): those two;
// - a single file (or a folder with one split): `data.evalSize` records held out by a seeded shuffle.
// In every case train questions that repeat a held-out one (exactly or nearly) are dropped from train and reported.
// The split is written to `<run>/data_split.json` (record ids as @nr/data names them) and checked again on --resume.
// Bad data (missing, empty, malformed, too small) is refused here, before any model is loaded.
import { existsSync, readFileSync, realpathSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import type { LeakReport, LoadedDataset, MathRecord } from "@nr/data";
import type { TrainConfig } from "./config.js";
import { writeJsonAtomic } from "./folder.js";

export const DATA_SPLIT_FILE = "data_split.json";

/** `<run>/data_split.json`. */
export interface DataSplitFile {
  source: string;
  /** The data file or folder, resolved (so that `nr eval --adapter` can tell it is given the same data). */
  path?: string;
  seed: number;
  /** How the held-out records were chosen. */
  how: "synthetic splits" | "dataset folder splits" | "seeded split of one file";
  train: string[];
  eval: string[];
  /** Train records dropped because their question repeats a held-out one. */
  dropped: LeakReport[];
}

export interface RunData {
  train: MathRecord[];
  heldout: MathRecord[];
  split: DataSplitFile;
}

/** A data problem the user must fix; the CLI prints the message and exits 2. */
export class DataError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DataError";
  }
}

const HELD_OUT_SPLITS = ["test", "validation", "valid", "val", "dev", "eval", "evaluation"];

async function load(path: string, config: TrainConfig, split: string | undefined, log: (l: string) => void): Promise<LoadedDataset> {
  const { DatasetError, loadDataset } = await import("@nr/data");
  const key = `data.source ${config.data.source}${split ? ` (split ${split})` : ""}`;
  let ds: LoadedDataset;
  try {
    ds = await loadDataset(path, { split, onBadRow: config.data.skipBadRows ? "skip" : "error" });
  } catch (e) {
    if (e instanceof DatasetError) throw new DataError(`${e.message}${e.report.snippet ? `\n  ${e.report.snippet}` : ""}\n(fix the row, or pass --data.skipBadRows to skip bad rows)`);
    throw new DataError(`${key}: ${(e as Error).message}`);
  }
  if (ds.badRows.length) {
    const b = ds.badRows[0];
    log(`data: skipped ${ds.badRows.length} bad row${ds.badRows.length === 1 ? "" : "s"} of ${path}${split ? ` (${split})` : ""} (data.skipBadRows; first: ${b.file}:${b.line}: ${b.reason})`);
  }
  if (ds.records.length === 0) throw new DataError(`${key}: no usable records in ${ds.files.join(", ") || path}${ds.badRows.length ? ` (${ds.badRows.length} bad rows skipped)` : " (the file is empty)"}: expected rows like {"question": …, "answer": …}`);
  return ds;
}

async function fromFolderSplits(path: string, config: TrainConfig, trainSplit: string, evalSplit: string, log: (l: string) => void) {
  const { dropHeldOutDuplicates } = await import("@nr/data");
  const train = (await load(path, config, trainSplit, log)).records;
  const heldout = (await load(path, config, evalSplit, log)).records.slice(0, config.data.evalSize);
  return { ...(await dropHeldOutDuplicates(train, heldout)), how: "dataset folder splits" as const };
}

async function fromOneSet(path: string, config: TrainConfig, split: string | undefined, log: (l: string) => void) {
  const { splitHeldOut } = await import("@nr/data");
  const all = (await load(path, config, split, log)).records;
  const most = Math.floor(all.length / 2);
  if (config.data.evalSize > most) throw new DataError(`data.evalSize = ${config.data.evalSize} is too large for data.source ${config.data.source} (${all.length} usable records; at most half are held out): set --data.evalSize ${Math.max(1, most)} or less`);
  return { ...(await splitHeldOut(all, config.data.evalSize, config.seed)), how: "seeded split of one file" as const };
}

/** Load and split the run's data (see the module comment). Throws DataError naming the key, file or `file:line`. */
export async function loadRunData(config: TrainConfig, cwd: string, log: (l: string) => void): Promise<RunData> {
  const d = config.data;
  if (d.source === "synthetic") {
    const { generateSynthetic } = await import("@nr/data");
    const diff = d.difficulty ?? {};
    const train = generateSynthetic({ count: d.trainSize, seed: config.seed, split: "train", ...diff });
    const heldout = generateSynthetic({ count: d.evalSize, seed: config.seed, split: "heldout", ...diff });
    return { train, heldout, split: splitFile("synthetic", undefined, config.seed, "synthetic splits", train, heldout, []) };
  }
  const path = resolve(cwd, d.source);
  if (!existsSync(path)) throw new DataError(`data.source = "${d.source}" does not exist: expected "synthetic" or a .jsonl/.json/.parquet file or dataset folder`);
  let parts;
  if (statSync(path).isDirectory()) {
    const { listSplits } = await import("@nr/data");
    const names = Object.keys(await listSplits(path));
    const evalSplit = HELD_OUT_SPLITS.find((s) => names.includes(s));
    if (names.includes("train") && evalSplit) parts = await fromFolderSplits(path, config, "train", evalSplit, log);
    else if (names.length === 1) parts = await fromOneSet(path, config, names[0], log);
    else throw new DataError(`data.source ${d.source}: a dataset folder needs a "train" split and a held-out one (${HELD_OUT_SPLITS.join(", ")}), or a single split to hold records out of; found: ${names.join(", ") || "no .jsonl/.json/.parquet files"}`);
  } else parts = await fromOneSet(path, config, undefined, log);
  if (parts.leaks.length) {
    const ex = parts.leaks.slice(0, 3).map((l) => `${l.id} ≈ ${l.heldOutId}${l.by === "exact" ? "" : ` (${Math.round(100 * (l.overlap ?? 0))}% shared 8-grams)`}`);
    log(`data: dropped ${parts.leaks.length} train record${parts.leaks.length === 1 ? "" : "s"} whose question repeats a held-out one (${ex.join("; ")}${parts.leaks.length > 3 ? "; …" : ""}; all in ${DATA_SPLIT_FILE})`);
  }
  const train = parts.train.slice(0, d.trainSize);
  if (train.length === 0) throw new DataError(`data.source ${d.source}: no train records left after holding out ${parts.heldOut.length}${parts.leaks.length ? ` and dropping ${parts.leaks.length} duplicates of held-out questions` : ""}`);
  log(`data: ${train.length} train / ${parts.heldOut.length} held-out records from ${d.source} (${parts.how}, seed ${config.seed}; disjoint; ids in ${DATA_SPLIT_FILE})`);
  return { train, heldout: parts.heldOut, split: splitFile(d.source, realpathSync(path), config.seed, parts.how, train, parts.heldOut, parts.leaks) };
}

function splitFile(source: string, path: string | undefined, seed: number, how: DataSplitFile["how"], train: MathRecord[], heldout: MathRecord[], dropped: LeakReport[]): DataSplitFile {
  return { source, ...(path ? { path } : {}), seed, how, train: train.map((r) => r.id), eval: heldout.map((r) => r.id), dropped };
}

/**
 * When a run held records out of this very data file (a seeded split), its split: `nr eval` of the run's adapter on
 * the file then evaluates the held-out records only. Null for other data, other kinds of split, or no record.
 */
export function runSplitOf(runDir: string, dataPath: string): DataSplitFile | null {
  const file = join(runDir, DATA_SPLIT_FILE);
  if (!existsSync(file) || !existsSync(dataPath)) return null;
  const split = JSON.parse(readFileSync(file, "utf8")) as DataSplitFile;
  return split.how === "seeded split of one file" && split.path === realpathSync(dataPath) ? split : null;
}

/**
 * Record the split in a fresh run, or on --resume check that the data still splits the same way (a changed file
 * would silently move records between train and held-out).
 */
export function recordDataSplit(runDir: string, split: DataSplitFile, resuming: boolean): void {
  const path = join(runDir, DATA_SPLIT_FILE);
  if (resuming && existsSync(path)) {
    const saved = JSON.parse(readFileSync(path, "utf8")) as DataSplitFile;
    const same = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);
    if (!same(saved.train, split.train) || !same(saved.eval, split.eval)) {
      throw new DataError(`${path}: the data no longer splits as when this run started (now ${split.train.length} train / ${split.eval.length} held-out records, then ${saved.train.length} / ${saved.eval.length}): resume with the same data.source file, or start a new run`);
    }
    return;
  }
  writeJsonAtomic(path, split);
}
