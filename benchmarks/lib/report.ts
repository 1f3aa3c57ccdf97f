// The benchmark contract (docs/architecture.md, "Contracts other tools read"): every benchmark writes
// benchmarks/results/<name>.json = { name, date, adapter, rows: [{ case, metric, ours, peer, peerValue, ratio }] }
// and prints the same rows as a table. `ratio` > 1 always means "we are better" (for lower-is-better metrics,
// ratio = peerValue / ours and the metric name says so).
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export interface AdapterInfo {
  vendor: string;
  architecture: string;
  description: string;
  backend: string;
}

export interface BenchRow {
  case: string;
  metric: string;
  ours: number;
  peer: string;
  peerValue: number | null;
  ratio: number | null;
  [extra: string]: unknown;
}

/** A row where higher is better (GFLOP/s, tokens/s, verifications/s). */
export function higherIsBetter(c: string, metric: string, ours: number, peer: string, peerValue: number | null, extra: Record<string, unknown> = {}): BenchRow {
  return { case: c, metric, ours, peer, peerValue, ratio: peerValue ? ours / peerValue : null, ...extra };
}

/** A row where lower is better (ms, bytes): ratio = peer / ours so that > 1 still means we win. */
export function lowerIsBetter(c: string, metric: string, ours: number, peer: string, peerValue: number | null, extra: Record<string, unknown> = {}): BenchRow {
  return { case: c, metric: `${metric} (lower is better)`, ours, peer, peerValue, ratio: peerValue ? peerValue / ours : null, ...extra };
}

const fmt = (v: unknown) =>
  typeof v === "number" ? (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3)) : v === null || v === undefined ? "-" : String(v);

export function printTable(rows: BenchRow[], extraColumns: string[] = []) {
  // ofPeak (benchmarks/kernels/peak.ts: kernel rate as a fraction of the measured adapter peak) when rows carry it.
  const cols = ["case", "metric", "ours", "peer", "peerValue", "ratio", ...(rows.some((r) => r.ofPeak !== undefined) ? ["ofPeak"] : []), ...extraColumns];
  const cells = rows.map((r) => cols.map((c) => fmt(r[c])));
  const widths = cols.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i].length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i])).join("  ");
  console.log(line([...cols]));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const row of cells) console.log(line(row));
}

const resultsDir = join(dirname(fileURLToPath(import.meta.url)), "..", "results");

/** Write results/<name>.json and print the table last (with `extraColumns`: row fields shown after the standard ones). Returns the JSON path. */
export function writeResults(name: string, adapter: AdapterInfo | null, rows: BenchRow[], meta: Record<string, unknown> = {}, extraColumns: string[] = []): string {
  mkdirSync(resultsDir, { recursive: true });
  const path = join(resultsDir, `${name}.json`);
  const doc = { name, date: new Date().toISOString(), adapter: adapter ?? { vendor: "cpu", architecture: process.arch, description: "no GPU used", backend: "none" }, ...meta, rows };
  writeFileSync(path, JSON.stringify(doc, null, 2) + "\n");
  console.log(`\n${name}: ${rows.length} rows → ${path}\n`);
  printTable(rows, extraColumns);
  return path;
}

/** Median of repeated timings (ms) after warm-up. */
export async function timeIt(fn: () => Promise<void> | void, opts: { warmup?: number; iters?: number; minMs?: number } = {}): Promise<{ medianMs: number; samples: number[] }> {
  const warmup = opts.warmup ?? 1;
  const iters = opts.iters ?? 5;
  for (let i = 0; i < warmup; i++) await fn();
  const samples: number[] = [];
  const start = performance.now();
  while (samples.length < iters || (opts.minMs && performance.now() - start < opts.minMs && samples.length < 1000)) {
    const t0 = performance.now();
    await fn();
    samples.push(performance.now() - t0);
  }
  const sorted = [...samples].sort((a, b) => a - b);
  return { medianMs: sorted[Math.floor(sorted.length / 2)], samples };
}
