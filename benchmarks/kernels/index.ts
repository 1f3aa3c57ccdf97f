// `pnpm bench kernels`: every kernel family's benchmark in one run, on one device, one table.
// Each family lives in benchmarks/kernels/<family>.ts and exports bench<Family>(gpu) → rows.
//   pnpm bench kernels [--only matmul,nf4,...]
import { existsSync } from "node:fs";
import { createGpu, type Gpu } from "@nr/kernels";
import { writeResults, type BenchRow } from "../lib/report.js";
import { measurePeak, peakMeta, ratePeak } from "./peak.js";

const FAMILIES: Array<{ file: string; fn: string }> = [
  { file: "matmul", fn: "benchMatmul" },
  { file: "nf4", fn: "benchNf4" },
  { file: "attention", fn: "benchAttention" },
  { file: "lmhead", fn: "benchLmHead" },
  { file: "norm", fn: "benchNorm" },
];

const onlyArg = process.argv.indexOf("--only");
const only = onlyArg >= 0 ? process.argv[onlyArg + 1].split(",") : null;

const gpu: Gpu = await createGpu();
console.log(`adapter: ${gpu.adapterName}`);
// The adapter's measured peak, before any ORT session exists (rows are rated against it: see ./peak.ts).
const peak = await measurePeak(gpu);
const rows: BenchRow[] = [];
for (const f of FAMILIES) {
  if (only && !only.includes(f.file)) continue;
  const path = new URL(`./${f.file}.ts`, import.meta.url);
  if (!existsSync(path)) {
    console.log(`(${f.file}: no benchmark file yet)`);
    continue;
  }
  const mod = (await import(path.href)) as Record<string, (g: Gpu) => Promise<BenchRow[]>>;
  console.log(`— ${f.file}`);
  const t0 = performance.now();
  const got = await mod[f.fn](gpu);
  console.log(`  ${got.length} rows in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  rows.push(...got.map((r) => ({ ...r, case: `${f.file}: ${r.case}` })));
}
writeResults("kernels", gpu.adapter, ratePeak(rows, peak), { note: "ratio = ours / peer measured in the same run; see each row's note", ...peakMeta(peak) });
gpu.destroy();
