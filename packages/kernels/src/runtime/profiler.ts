// GPU-timestamp profiler. When enabled (and the adapter has timestamp-query), each compute pass gets begin/end
// timestamps and the profiler attributes pass time to the labels of the dispatches recorded in it. Passes are
// split per dispatch while profiling so every label gets its own time. Without timestamp-query it reports
// nothing and `enabled` stays false: use wall-clock around `gpu.sync()` instead. A query set holds MAX_PASSES
// passes; when it fills, the recorded work is submitted early so that every dispatch of a long step is timed.
import type { Gpu } from "./device.js";

const MAX_PASSES = 512;

export interface ProfileEntry {
  label: string;
  calls: number;
  totalMs: number;
}

export class GpuProfiler {
  private querySet: GPUQuerySet | null = null;
  private resolveBuf: GPUBuffer | null = null;
  private labels: string[] = [];
  private passIndex = 0;
  private active = false;
  private readonly totals = new Map<string, ProfileEntry>();
  private pendingReads: Promise<void>[] = [];

  constructor(private readonly gpu: Gpu) {}

  get enabled() {
    return this.active;
  }

  /** Start attributing GPU time to kernel labels. Returns false when the adapter has no timestamp-query. */
  start(): boolean {
    if (!this.gpu.hasTimestamps) return false;
    if (!this.querySet) {
      this.querySet = this.gpu.device.createQuerySet({ type: "timestamp", count: MAX_PASSES * 2 });
      this.resolveBuf = this.gpu.device.createBuffer({ size: MAX_PASSES * 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    }
    this.active = true;
    return true;
  }

  passDescriptor(): GPUComputePassDescriptor {
    if (!this.active || !this.querySet || this.passIndex >= MAX_PASSES) return {};
    const i = this.passIndex++;
    this.labels[i] = "";
    return { timestampWrites: { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } };
  }

  afterDispatch(label: string) {
    if (!this.active || this.passIndex === 0) return;
    const i = this.passIndex - 1;
    this.labels[i] = this.labels[i] ? `${this.labels[i]}+${label}` : label;
    // One dispatch per pass while profiling, so the next dispatch opens a new timed pass.
    this.gpu.endPass();
    // The query set is full: submit now (beforeFinish resolves it) so the passes after this one are timed too.
    if (this.passIndex >= MAX_PASSES) this.gpu.submit();
  }

  beforeFinish(encoder: GPUCommandEncoder) {
    if (!this.active || !this.querySet || !this.resolveBuf || this.passIndex === 0) return;
    const n = this.passIndex;
    const labels = this.labels.slice(0, n);
    this.passIndex = 0;
    encoder.resolveQuerySet(this.querySet, 0, 2 * n, this.resolveBuf, 0);
    const staging = this.gpu.device.createBuffer({ size: n * 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    encoder.copyBufferToBuffer(this.resolveBuf, 0, staging, 0, n * 16);
    this.pendingReads.push(
      (async () => {
        await this.gpu.device.queue.onSubmittedWorkDone();
        await staging.mapAsync(GPUMapMode.READ);
        const t = new BigUint64Array(staging.getMappedRange().slice(0));
        staging.destroy();
        for (let i = 0; i < n; i++) {
          const ms = Number(t[2 * i + 1] - t[2 * i]) / 1e6;
          const e = this.totals.get(labels[i]) ?? { label: labels[i], calls: 0, totalMs: 0 };
          e.calls++;
          e.totalMs += ms > 0 && ms < 1e6 ? ms : 0;
          this.totals.set(labels[i], e);
        }
      })(),
    );
  }

  /** Stop profiling and return time per label, largest first. */
  async stop(): Promise<ProfileEntry[]> {
    this.gpu.submit();
    await Promise.all(this.pendingReads);
    this.pendingReads = [];
    this.active = false;
    const out = [...this.totals.values()].sort((a, b) => b.totalMs - a.totalMs);
    this.totals.clear();
    return out;
  }

  destroy() {
    this.querySet?.destroy();
    this.resolveBuf?.destroy();
  }
}
