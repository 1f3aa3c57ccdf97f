// Compute pipelines cached by WGSL source. Compilation problems are reported with the kernel's label and the
// first WGSL diagnostics, through the device's error list (thrown at the next sync/read).
import { GpuError } from "./device.js";

export interface Kernel {
  readonly label: string;
  readonly pipeline: GPUComputePipeline;
}

export class PipelineCache {
  private cache = new Map<string, Kernel>();
  private pending: Promise<void>[] = [];

  constructor(
    private readonly device: GPUDevice,
    private readonly report: (e: GpuError) => void,
  ) {}

  get size() {
    return this.cache.size;
  }

  get(label: string, wgsl: string, entryPoint = "main"): Kernel {
    // The text itself is the key for "main" (no concatenation: a memoised generator's string keeps its hash).
    const key = entryPoint === "main" ? wgsl : `${entryPoint}\u0000${wgsl}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    this.device.pushErrorScope("validation");
    const module = this.device.createShaderModule({ code: wgsl, label });
    const pipeline = this.device.createComputePipeline({ layout: "auto", compute: { module, entryPoint }, label });
    const check = this.device.popErrorScope().then(async (err) => {
      if (!err) return;
      const info = await module.getCompilationInfo();
      const diags = info.messages
        .filter((m) => m.type === "error")
        .slice(0, 5)
        .map((m) => `  line ${m.lineNum}:${m.linePos}: ${m.message}\n    ${wgsl.split("\n")[m.lineNum - 1]?.trim() ?? ""}`)
        .join("\n");
      this.report(new GpuError(`kernel "${label}" failed to compile: ${err.message}${diags ? `\n${diags}` : ""}`, "validation"));
    });
    this.pending.push(check);
    const kernel = { label, pipeline };
    this.cache.set(key, kernel);
    return kernel;
  }

  /** Wait until every compilation check issued so far has reported. */
  async settle() {
    const p = this.pending;
    this.pending = [];
    await Promise.all(p);
  }
}
