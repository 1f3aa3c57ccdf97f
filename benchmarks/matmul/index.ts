// `pnpm bench matmul [--m 1,64,512] [--iters 3] [--dtype f32|f16]`: see kernels/matmul.ts for what is measured
// (forward at Qwen2.5-1.5B projection shapes, backward products at T = max M tokens) and kernels/peak.ts for ofPeak.
import { createGpu } from "@nr/kernels";
import { writeResults } from "../lib/report.js";
import { benchMatmul } from "../kernels/matmul.js";
import { measurePeak, peakMeta, ratePeak } from "../kernels/peak.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const Ms = arg("m", "1,64,512").split(",").map(Number);
const iters = Number(arg("iters", "3"));
const dtype = arg("dtype", "f32") as "f32" | "f16";

const gpu = await createGpu();
console.log(`adapter: ${gpu.adapterName}; dtype ${dtype}; M ∈ {${Ms.join(", ")}}; ${iters} timed iterations (median)`);
const peak = await measurePeak(gpu);
const rows = await benchMatmul(gpu, { Ms, iters, dtype });
writeResults("matmul", gpu.adapter, ratePeak(rows, peak), { dtype, note: "ratio = ours / peer, same run, same adapter for the WebGPU EP; GFLOP/s = 2·M·N·K / median time", ...peakMeta(peak) });
gpu.destroy();
