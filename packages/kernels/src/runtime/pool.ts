// Size-class buffer pool. GPU buffers are expensive to create and their lifetime must not depend on the JS
// garbage collector: a tensor's buffer is acquired from the pool and released explicitly, and released buffers
// are reused for later requests of the same size class (sizes round up to 1/4-octave steps: ≤ 19% waste).

export interface GpuBuffer {
  readonly buffer: GPUBuffer;
  /** Bytes the caller asked for (≤ buffer.size). */
  readonly bytes: number;
  readonly label: string;
}

interface PoolEntry extends GpuBuffer {
  released: boolean;
}

export interface PoolStats {
  /** Bytes held by live + free buffers. */
  allocatedBytes: number;
  /** Bytes handed out and not yet released. */
  inUseBytes: number;
  /** High-water mark of allocatedBytes. */
  peakAllocatedBytes: number;
  liveBuffers: number;
  freeBuffers: number;
}

const USAGE = 0x80 /* STORAGE */ | 0x04 /* COPY_SRC */ | 0x08; /* COPY_DST */

/** Round a byte count up to its size class: 256 B minimum, then 4 steps per power of two. */
export function sizeClass(bytes: number): number {
  const b = Math.max(256, Math.ceil(bytes));
  const octave = 2 ** Math.floor(Math.log2(b));
  const step = octave / 4;
  return Math.ceil(b / step) * step;
}

export class BufferPool {
  private free = new Map<number, GPUBuffer[]>();
  private stats: PoolStats = { allocatedBytes: 0, inUseBytes: 0, peakAllocatedBytes: 0, liveBuffers: 0, freeBuffers: 0 };

  constructor(private readonly device: GPUDevice) {}

  acquire(bytes: number, label = "tensor"): GpuBuffer {
    const size = sizeClass(bytes);
    const list = this.free.get(size);
    let buffer = list?.pop();
    if (buffer) {
      this.stats.freeBuffers--;
    } else {
      this.device.pushErrorScope("out-of-memory");
      buffer = this.device.createBuffer({ size, usage: USAGE, label: `nr-pool-${size}` });
      void this.device.popErrorScope().then((err) => {
        if (err) console.error(`GPU out of memory allocating ${size} bytes for "${label}": ${err.message}`);
      });
      this.stats.allocatedBytes += size;
      this.stats.peakAllocatedBytes = Math.max(this.stats.peakAllocatedBytes, this.stats.allocatedBytes);
    }
    this.stats.liveBuffers++;
    this.stats.inUseBytes += size;
    const entry: PoolEntry = { buffer, bytes, label, released: false };
    return entry;
  }

  release(buf: GpuBuffer) {
    const entry = buf as PoolEntry;
    if (entry.released) throw new Error(`buffer "${buf.label}" released twice`);
    entry.released = true;
    const size = buf.buffer.size;
    const list = this.free.get(size) ?? [];
    list.push(buf.buffer);
    this.free.set(size, list);
    this.stats.liveBuffers--;
    this.stats.freeBuffers++;
    this.stats.inUseBytes -= size;
  }

  /** Destroy every free buffer (keeps live ones). */
  trim() {
    for (const list of this.free.values()) {
      for (const b of list) {
        this.stats.allocatedBytes -= b.size;
        b.destroy();
      }
    }
    this.stats.freeBuffers = 0;
    this.free.clear();
  }

  destroyAll() {
    this.trim();
  }

  /** Start a new high-water mark from the current allocation (to measure one phase). */
  resetPeak() {
    this.stats.peakAllocatedBytes = this.stats.allocatedBytes;
  }

  getStats(): PoolStats {
    return { ...this.stats };
  }
}
