// The WebGPU device: one function (`createGpu`) returns a ready `Gpu` with the adapter's full limits,
// the optional features we use, a buffer pool, a pipeline cache, and a command recorder that keeps many
// dispatches in one encoder. Errors from Dawn (validation, out-of-memory, device lost) are collected with the
// label of the kernel that caused them and thrown from the next `sync()`/`read*()` — never a silent hang.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BufferPool, type GpuBuffer } from "./pool.js";
import { PipelineCache, type Kernel } from "./pipelines.js";
import { GpuProfiler } from "./profiler.js";
import { isCpuAdapter } from "./adapter.js";
import { installGpuWaitBackoff } from "./poll.js";

export interface GpuOptions {
  /** Dawn backend: vulkan | metal | d3d12 | d3d11 | opengl | null. Env NR_BACKEND. Default: Dawn's choice. */
  backend?: string;
  /** Substring of the adapter name to pick when several exist (e.g. "NVIDIA", "llvmpipe"). Env NR_ADAPTER. */
  adapter?: string;
  /** Ask for experimental features (subgroup-matrix); turns on Dawn's allow_unsafe_apis. Env NR_EXPERIMENTAL=1. */
  experimental?: boolean;
  /** Turn off bounds clamping in shaders (faster; every kernel here bounds-checks itself). Env NR_ROBUSTNESS=0. */
  disableRobustness?: boolean;
  /** Extra Dawn toggles to enable. */
  enableToggles?: string[];
  powerPreference?: "low-power" | "high-performance";
}

export interface AdapterSummary {
  vendor: string;
  architecture: string;
  description: string;
  device: string;
  backend: string;
  isFallbackAdapter: boolean;
}

/** Features we use when the adapter has them. */
const WANTED_FEATURES = ["shader-f16", "subgroups", "timestamp-query", "subgroup-size-control"] as const;
const EXPERIMENTAL_FEATURES = ["chromium-experimental-subgroup-matrix"] as const;
/** Limits we raise to the adapter's maximum (the defaults are far too small for a 1.5B model). */
const WANTED_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxUniformBufferBindingSize",
  "maxBindGroups",
] as const;

export class GpuError extends Error {
  constructor(message: string, readonly kind: "validation" | "out-of-memory" | "internal" | "lost" | "no-adapter") {
    super(message);
    this.name = "GpuError";
  }
}

let dawnModule: { create: (opts: string[]) => GPU; globals: object } | null = null;

async function loadDawn() {
  if (!dawnModule) {
    // Dawn's Vulkan loader wants a writable runtime dir; headless machines often lack one.
    if (process.platform === "linux" && !process.env.XDG_RUNTIME_DIR) {
      process.env.XDG_RUNTIME_DIR = mkdtempSync(join(tmpdir(), "nr-xdg-"));
    }
    const mod = (await import("webgpu")) as unknown as { create: (opts: string[]) => GPU; globals: object };
    Object.assign(globalThis, mod.globals);
    dawnModule = mod;
  }
  return dawnModule;
}

function noAdapterMessage(opts: GpuOptions): string {
  const asked = [opts.backend && `backend=${opts.backend}`, opts.adapter && `adapter~"${opts.adapter}"`]
    .filter(Boolean)
    .join(", ");
  const lines = [`No WebGPU adapter found${asked ? ` (asked for ${asked})` : ""}.`];
  if (process.platform === "linux") {
    lines.push(
      "On Linux, Dawn needs a Vulkan driver. With a GPU: install its Vulkan driver (NVIDIA: the driver's Vulkan ICD and",
      "libvulkan1). Without a GPU: run `bash scripts/setup.sh`, which installs Mesa lavapipe (Vulkan on the CPU):",
      "  Debian 12: apt-get install -t bookworm-backports mesa-vulkan-drivers   (Mesa 25; bookworm's Mesa 22 is refused by Dawn)",
      "and make sure XDG_RUNTIME_DIR points at a writable folder.",
    );
  } else if (process.platform === "darwin") {
    lines.push("On macOS, Dawn uses Metal: update macOS, or unset NR_BACKEND/NR_ADAPTER.");
  } else {
    lines.push("On Windows, update the GPU driver (D3D12 or Vulkan), or unset NR_BACKEND/NR_ADAPTER.");
  }
  return lines.join("\n");
}

/** The backend Dawn picks when none is named. */
function defaultBackend(): string {
  return process.platform === "darwin" ? "metal" : process.platform === "win32" ? "d3d12" : "vulkan";
}

export async function createGpu(options: GpuOptions = {}): Promise<Gpu> {
  const opts: GpuOptions = {
    backend: options.backend ?? process.env.NR_BACKEND ?? undefined,
    adapter: options.adapter ?? process.env.NR_ADAPTER ?? undefined,
    experimental: options.experimental ?? process.env.NR_EXPERIMENTAL === "1",
    disableRobustness: options.disableRobustness ?? process.env.NR_ROBUSTNESS !== "1",
    enableToggles: options.enableToggles ?? [],
    powerPreference: options.powerPreference ?? "high-performance",
  };
  const dawn = await loadDawn();
  const toggles = ["vulkan_enable_f16_on_nvidia", "disable_workgroup_init", ...opts.enableToggles!];
  if (opts.experimental) toggles.push("allow_unsafe_apis");
  if (opts.disableRobustness) toggles.push("disable_robustness");
  const createOpts = [`enable-dawn-features=${toggles.join(",")}`, "disable-dawn-features=timestamp_quantization"];
  if (opts.backend) createOpts.push(`backend=${opts.backend}`);
  if (opts.adapter) createOpts.push(`adapter=${opts.adapter}`);

  let adapter: GPUAdapter | null = null;
  let instance: GPU | null = null;
  try {
    // The instance must outlive every device made from it: dawn.node tears the device down when the GPU
    // object is garbage-collected. Keep it referenced from the Gpu.
    instance = dawn.create(createOpts);
    adapter = await instance.requestAdapter({ powerPreference: opts.powerPreference });
  } catch (err) {
    throw new GpuError(`${noAdapterMessage(opts)}\nDawn said: ${(err as Error).message}`, "no-adapter");
  }
  if (!adapter) throw new GpuError(noAdapterMessage(opts), "no-adapter");

  const requiredFeatures: GPUFeatureName[] = [];
  for (const f of WANTED_FEATURES) if (adapter.features.has(f)) requiredFeatures.push(f as GPUFeatureName);
  if (opts.experimental) {
    for (const f of EXPERIMENTAL_FEATURES) if (adapter.features.has(f)) requiredFeatures.push(f as GPUFeatureName);
  }
  const requiredLimits: Record<string, number> = {};
  const adapterLimits = adapter.limits as unknown as Record<string, number>;
  for (const name of WANTED_LIMITS) if (adapterLimits[name] !== undefined) requiredLimits[name] = adapterLimits[name];

  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits, label: "nano-reasoner" });
  const info = adapter.info as GPUAdapterInfo & { backendType?: string; subgroupMatrixConfigs?: unknown[] };
  const summary: AdapterSummary = {
    vendor: info.vendor ?? "",
    architecture: info.architecture ?? "",
    description: info.description ?? "",
    device: info.device ?? "",
    backend: info.backendType ?? opts.backend ?? defaultBackend(),
    isFallbackAdapter: Boolean((info as { isFallbackAdapter?: boolean }).isFallbackAdapter),
  };
  // on a CPU adapter dawn.node's spinning wait competes with the adapter's own compute threads (see poll.ts)
  if (isCpuAdapter({ adapter: summary })) installGpuWaitBackoff();
  return new Gpu(device, summary, info.subgroupMatrixConfigs ?? [], instance!);
}

/** Entries of the uniform-buffer and bind-group caches (LRU). */
const CACHE_ENTRIES = 4096;

type TypedArray = Float32Array | Float64Array | Uint32Array | Int32Array | Uint16Array | Uint8Array | Int8Array;

/** A ready device with everything kernels need. */
export class Gpu {
  readonly features: ReadonlySet<string>;
  readonly limits: Readonly<Record<string, number>>;
  readonly pool: BufferPool;
  readonly pipelines: PipelineCache;
  readonly profiler: GpuProfiler;
  readonly hasF16: boolean;
  readonly hasSubgroups: boolean;
  readonly hasTimestamps: boolean;
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private readonly errors: GpuError[] = [];
  private lostReason: string | null = null;
  /** Uniform buffers used by the commands recorded since the last submit; recycled once the GPU is done. */
  private pendingUniforms: GPUBuffer[] = [];
  private freeUniforms = new Map<number, GPUBuffer[]>();
  /**
   * Per-dispatch host work is most of a small decode step's cost (a bind group and a uniform write per dispatch,
   * ~80 dispatches per token on a 4-layer model), and a decode loop repeats the same dispatches: same pipelines,
   * same pooled buffers, same parameters. So uniform buffers are content-addressed and never rewritten (a hit needs
   * no write), and bind groups are cached by (pipeline, buffers, uniform buffer) identity. Both are LRU-bounded;
   * an evicted uniform buffer is recycled only after the GPU finished the work submitted with it.
   */
  private readonly uniformCache = new Map<string, GPUBuffer>();
  private readonly bindGroupCache = new Map<string, GPUBindGroup>();
  private readonly objectIds = new WeakMap<object, number>();
  private nextObjectId = 1;
  private destroyed = false;
  /**
   * Host-side work counted since the device was made (benchmarks read differences): recorded dispatches and
   * buffer copies, queue submits, host→GPU writes, and GPU→host read-backs (each a map-and-wait round trip).
   */
  readonly counters = { dispatches: 0, copies: 0, submits: 0, writes: 0, reads: 0 };

  constructor(
    readonly device: GPUDevice,
    readonly adapter: AdapterSummary,
    readonly subgroupMatrixConfigs: readonly unknown[],
    /** Held so the Dawn instance is not garbage-collected while the device lives. */
    readonly instance: GPU,
  ) {
    this.features = new Set([...device.features] as string[]);
    const limits: Record<string, number> = {};
    for (const name of WANTED_LIMITS) limits[name] = (device.limits as unknown as Record<string, number>)[name];
    limits.maxComputeWorkgroupStorageSize = device.limits.maxComputeWorkgroupStorageSize;
    this.limits = limits;
    this.hasF16 = this.features.has("shader-f16");
    this.hasSubgroups = this.features.has("subgroups");
    this.hasTimestamps = this.features.has("timestamp-query");
    this.pool = new BufferPool(device);
    this.pipelines = new PipelineCache(device, (e) => this.errors.push(e));
    this.profiler = new GpuProfiler(this);
    device.addEventListener("uncapturederror", (ev) => {
      const e = (ev as GPUUncapturedErrorEvent).error;
      const kind = e instanceof GPUOutOfMemoryError ? "out-of-memory" : e instanceof GPUValidationError ? "validation" : "internal";
      this.errors.push(new GpuError(`WebGPU ${kind} error: ${e.message}`, kind));
    });
    void device.lost.then((info) => {
      if (!this.destroyed) this.lostReason = `${info.reason}: ${info.message}`;
    });
  }

  /** Human-readable one-line adapter name. */
  get adapterName(): string {
    const a = this.adapter;
    return [a.vendor, a.architecture, a.description].filter(Boolean).join(" / ") || "unknown adapter";
  }

  /** Compile (or fetch from the cache) a compute kernel from WGSL source. */
  kernel(label: string, wgsl: string, entryPoint = "main"): Kernel {
    return this.pipelines.get(label, wgsl, entryPoint);
  }

  // ---------------------------------------------------------------------------------------------------------
  // Recording
  private beginPass(): GPUComputePassEncoder {
    this.throwIfLost();
    if (!this.encoder) this.encoder = this.device.createCommandEncoder({ label: "nr-step" });
    if (!this.pass) this.pass = this.encoder.beginComputePass(this.profiler.passDescriptor());
    return this.pass;
  }

  /** End the open compute pass (the profiler calls this to time dispatches one by one). */
  endPass() {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  /** A uniform buffer holding `data`, valid for commands recorded before the next submit. */
  uniform(data: ArrayBuffer | ArrayBufferView): GPUBuffer {
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const key = bytes.byteLength % 4 === 0 && bytes.byteLength <= 256 ? String.fromCharCode(...new Uint16Array(bytes.slice().buffer)) : null;
    const hit = key === null ? undefined : this.uniformCache.get(key);
    if (hit) {
      this.uniformCache.delete(key!);
      this.uniformCache.set(key!, hit);
      return hit;
    }
    const buf = this.freshUniform(bytes);
    if (key !== null) {
      this.uniformCache.set(key, buf);
      if (this.uniformCache.size > CACHE_ENTRIES) {
        const [oldKey, old] = this.uniformCache.entries().next().value as [string, GPUBuffer];
        this.uniformCache.delete(oldKey);
        this.pendingUniforms.push(old); // recycled once the work submitted with it is done
      }
    } else this.pendingUniforms.push(buf);
    return buf;
  }

  /** A small id per object (pipelines, buffers) for cache keys. */
  private idOf(o: object): number {
    let id = this.objectIds.get(o);
    if (id === undefined) this.objectIds.set(o, (id = this.nextObjectId++));
    return id;
  }

  private freshUniform(bytes: Uint8Array): GPUBuffer {
    const size = Math.max(16, Math.ceil(bytes.byteLength / 16) * 16);
    const free = this.freeUniforms.get(size);
    let buf = free?.pop();
    if (!buf) buf = this.device.createBuffer({ size, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: "nr-uniform" });
    // writeBuffer lands before the next submit, ahead of every command recorded with this buffer.
    this.device.queue.writeBuffer(buf, 0, bytes);
    return buf;
  }

  /**
   * Record one dispatch. `buffers` bind to @binding(0..n-1) of group 0 in order; `uniforms`, when given,
   * binds after them (the last binding).
   */
  dispatch(kernel: Kernel, buffers: Array<GpuBuffer | GPUBuffer>, workgroups: [number, number?, number?], uniforms?: ArrayBuffer | ArrayBufferView) {
    const maxWg = this.limits.maxComputeWorkgroupsPerDimension ?? 65535;
    const [x, y = 1, z = 1] = workgroups;
    if (x > maxWg || y > maxWg || z > maxWg) {
      throw new GpuError(`${kernel.label}: dispatch ${x}×${y}×${z} exceeds maxComputeWorkgroupsPerDimension=${maxWg}`, "validation");
    }
    if (x === 0 || y === 0 || z === 0) return;
    const bound = buffers.map((b) => ("buffer" in b ? b.buffer : b));
    if (uniforms) bound.push(this.uniform(uniforms));
    const key = `${this.idOf(kernel.pipeline)}:${bound.map((b) => this.idOf(b)).join(",")}`;
    let bindGroup = this.bindGroupCache.get(key);
    if (bindGroup) this.bindGroupCache.delete(key);
    else {
      const entries: GPUBindGroupEntry[] = bound.map((buffer, i) => ({ binding: i, resource: { buffer } }));
      bindGroup = this.device.createBindGroup({ layout: kernel.pipeline.getBindGroupLayout(0), entries, label: kernel.label });
      if (this.bindGroupCache.size >= CACHE_ENTRIES) this.bindGroupCache.delete(this.bindGroupCache.keys().next().value as string);
    }
    this.bindGroupCache.set(key, bindGroup);
    const pass = this.beginPass();
    pass.setPipeline(kernel.pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    this.counters.dispatches++;
    this.profiler.afterDispatch(kernel.label);
  }

  /** Record a buffer-to-buffer copy (ends the current compute pass). */
  copy(src: GpuBuffer | GPUBuffer, srcOffset: number, dst: GpuBuffer | GPUBuffer, dstOffset: number, bytes: number) {
    this.throwIfLost();
    this.endPass();
    if (!this.encoder) this.encoder = this.device.createCommandEncoder({ label: "nr-step" });
    this.encoder.copyBufferToBuffer("buffer" in src ? src.buffer : src, srcOffset, "buffer" in dst ? dst.buffer : dst, dstOffset, bytes);
    this.counters.copies++;
  }

  /** Submit everything recorded so far (no wait). */
  submit() {
    this.endPass();
    const uniforms = this.pendingUniforms;
    this.pendingUniforms = [];
    if (this.encoder) {
      this.profiler.beforeFinish(this.encoder);
      this.device.queue.submit([this.encoder.finish()]);
      this.counters.submits++;
      this.encoder = null;
    }
    if (uniforms.length) {
      void this.device.queue.onSubmittedWorkDone().then(() => {
        for (const u of uniforms) {
          const list = this.freeUniforms.get(u.size) ?? [];
          list.push(u);
          this.freeUniforms.set(u.size, list);
        }
      });
    }
  }

  /** Submit and wait for the GPU; throws the first error Dawn reported since the last check. */
  async sync(): Promise<void> {
    this.submit();
    await Promise.race([this.device.queue.onSubmittedWorkDone(), this.device.lost.then(() => undefined)]);
    await this.pipelines.settle();
    this.throwErrors();
  }

  private throwIfLost() {
    if (this.lostReason) throw new GpuError(`WebGPU device lost (${this.lostReason})`, "lost");
    if (this.destroyed) throw new GpuError("Gpu used after destroy()", "lost");
  }

  private throwErrors() {
    this.throwIfLost();
    if (this.errors.length) {
      const first = this.errors[0];
      const more = this.errors.length - 1;
      this.errors.length = 0;
      throw new GpuError(first.message + (more ? ` (and ${more} more error${more > 1 ? "s" : ""})` : ""), first.kind);
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Data movement

  /** A pooled storage buffer of at least `bytes` bytes. Release it with `gpu.release(buf)`. */
  alloc(bytes: number, label = "tensor"): GpuBuffer {
    const max = this.limits.maxBufferSize;
    if (bytes > max) {
      throw new GpuError(
        `${label}: a buffer of ${bytes} bytes exceeds this adapter's maxBufferSize (${max}); split the tensor or use a smaller batch`,
        "out-of-memory",
      );
    }
    return this.pool.acquire(bytes, label);
  }

  release(...bufs: Array<GpuBuffer | null | undefined>) {
    for (const b of bufs) if (b) this.pool.release(b);
  }

  /** Upload a typed array into a new pooled buffer (4-byte padded). */
  upload(data: TypedArray, label = "upload"): GpuBuffer {
    const buf = this.alloc(Math.max(4, Math.ceil(data.byteLength / 4) * 4), label);
    this.write(buf, data);
    return buf;
  }

  /** Write a typed array into an existing buffer at a byte offset. Ordered before the next submit. */
  write(buf: GpuBuffer, data: TypedArray, byteOffset = 0) {
    const padded = data.byteLength % 4 === 0 ? data : (() => {
      const p = new Uint8Array(Math.ceil(data.byteLength / 4) * 4);
      p.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      return p;
    })();
    // Pending commands that read `buf` must run before this write lands: submit them first.
    this.submit();
    this.device.queue.writeBuffer(buf.buffer, byteOffset, padded.buffer, padded.byteOffset, padded.byteLength);
    this.counters.writes++;
  }

  /** Fill a buffer with a 32-bit pattern (e.g. NaN poisoning in tests). */
  fill32(buf: GpuBuffer, bits: number, bytes = buf.bytes) {
    const words = new Uint32Array(Math.ceil(bytes / 4)).fill(bits >>> 0);
    this.write(buf, words);
  }

  /** Submit pending work, copy `bytes` from `buf` to the host, and check for errors. */
  async read(buf: GpuBuffer | GPUBuffer, bytes?: number, byteOffset = 0): Promise<ArrayBuffer> {
    const src = "buffer" in buf ? buf.buffer : buf;
    const n = Math.ceil((bytes ?? ("bytes" in buf ? buf.bytes : src.size)) / 4) * 4;
    const staging = this.device.createBuffer({ size: Math.max(4, n), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: "nr-readback" });
    this.copy(buf, byteOffset, staging, 0, n);
    this.counters.reads++;
    this.submit();
    try {
      await Promise.race([
        staging.mapAsync(GPUMapMode.READ),
        this.device.lost.then((i) => Promise.reject(new GpuError(`WebGPU device lost (${i.reason}: ${i.message})`, "lost"))),
      ]);
      await this.pipelines.settle();
      this.throwErrors();
      return staging.getMappedRange().slice(0);
    } finally {
      if (staging.mapState === "mapped") staging.unmap();
      staging.destroy();
    }
  }

  async readF32(buf: GpuBuffer | GPUBuffer, count?: number, offset = 0): Promise<Float32Array> {
    return new Float32Array(await this.read(buf, count === undefined ? undefined : count * 4, offset * 4));
  }

  async readU32(buf: GpuBuffer | GPUBuffer, count?: number, offset = 0): Promise<Uint32Array> {
    return new Uint32Array(await this.read(buf, count === undefined ? undefined : count * 4, offset * 4));
  }

  /** Read `count` f16 values and widen them to f32 on the host. */
  async readF16(buf: GpuBuffer | GPUBuffer, count: number, offset = 0): Promise<Float32Array> {
    const raw = new Uint16Array(await this.read(buf, Math.ceil(count / 2) * 4, offset * 2), 0, count);
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = f16BitsToF32(raw[i]);
    return out;
  }

  destroy() {
    if (this.destroyed) return;
    this.destroyed = true;
    this.pool.destroyAll();
    this.profiler.destroy();
    for (const list of this.freeUniforms.values()) for (const b of list) b.destroy();
    this.device.destroy();
  }
}

// f16 <-> f32 bit conversions on the host (round to nearest even), used for uploads and readbacks.
const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

export function f32ToF16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // Inf / NaN
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> Inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow -> signed zero
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && (m & 1))) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1))) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function toF16Array(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = f32ToF16Bits(values[i]);
  return out;
}
