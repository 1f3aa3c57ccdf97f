// Test helpers shared by every GPU package: a seeded RNG (seed printed so failures reproduce), NaN poisoning,
// and tolerance checks against float64 references that report the worst element.

import { Mulberry32 } from "./runtime/random.js";

/** A seeded uniform [0, 1) generator (the package's Mulberry32). */
export function rng(seed: number): () => number {
  const g = new Mulberry32(seed);
  return () => g.next();
}

/** A fresh seed per run (NR_SEED pins it); print it so a failure can be replayed. */
export function freshSeed(): number {
  const pinned = process.env.NR_SEED;
  return pinned ? Number(pinned) : (Math.random() * 2 ** 31) >>> 0;
}

export function randn(n: number, rand: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(rand(), 1e-12);
    const v = rand();
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

export function randInt(lo: number, hi: number, rand: () => number): number {
  return lo + Math.floor(rand() * (hi - lo + 1));
}

/** Bit pattern of a quiet NaN in f32 and (twice) in f16, for poisoning outputs before a kernel runs. */
export const NAN_F32_BITS = 0x7fc00000;
export const NAN_F16X2_BITS = 0x7e007e00;

export interface CloseReport {
  ok: boolean;
  worst: number;
  worstIndex: number;
  got: number;
  want: number;
  bound: number;
  nonFinite: number;
}

/**
 * Check |got[i] − want[i]| ≤ bound[i] elementwise (bound may be a number). Non-finite values in `got` where
 * `want` is finite always fail (catches unwritten, NaN-poisoned outputs).
 */
export function compare(got: ArrayLike<number>, want: ArrayLike<number>, bound: number | ArrayLike<number>): CloseReport {
  if (got.length < want.length) throw new Error(`compare: got ${got.length} values, want ${want.length}`);
  let worst = 0;
  let worstIndex = -1;
  let nonFinite = 0;
  let ok = true;
  for (let i = 0; i < want.length; i++) {
    const b = typeof bound === "number" ? bound : bound[i];
    const g = got[i];
    const w = want[i];
    if (!Number.isFinite(g) && Number.isFinite(w)) {
      nonFinite++;
      ok = false;
      if (worstIndex < 0 || worst !== Infinity) {
        worst = Infinity;
        worstIndex = i;
      }
      continue;
    }
    const err = Math.abs(g - w);
    const ratio = err / (b || Number.MIN_VALUE);
    if (err > b) ok = false;
    if (worst !== Infinity && ratio > worst) {
      worst = ratio;
      worstIndex = i;
    }
  }
  const i = Math.max(worstIndex, 0);
  return {
    ok,
    worst,
    worstIndex,
    got: got[i],
    want: want[i],
    bound: typeof bound === "number" ? bound : bound[i],
    nonFinite,
  };
}

export function describeReport(r: CloseReport): string {
  return `worst error/bound ${r.worst.toPrecision(3)} at [${r.worstIndex}]: got ${r.got}, want ${r.want}, bound ${r.bound.toExponential(2)}; non-finite ${r.nonFinite}`;
}

/** Round values to f16 precision (what an f16 upload stores), returned as f32. */
export function roundToF16(values: Float32Array, toBits: (x: number) => number, fromBits: (h: number) => number): Float32Array {
  const out = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = fromBits(toBits(values[i]));
  return out;
}

// Dtype-aware buffer helpers shared by the kernel tests (f16 values travel as f16 bits; outputs start as NaN).
import type { Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import { f16BitsToF32, f32ToF16Bits, toF16Array } from "./runtime/device.js";

export type TestDtype = "f32" | "f16";

/** The values an upload in `dt` stores (f16: rounded to nearest even). */
export function asDtype(x: Float32Array, dt: TestDtype): Float32Array {
  return dt === "f16" ? roundToF16(x, f32ToF16Bits, f16BitsToF32) : x;
}

export function uploadAs(gpu: Gpu, x: Float32Array, dt: TestDtype): GpuBuffer {
  return dt === "f16" ? gpu.upload(toF16Array(x)) : gpu.upload(x);
}

/** A buffer for `count` values of `dt`, filled with NaN so unwritten outputs are caught. */
export function poisonedBuffer(gpu: Gpu, count: number, dt: TestDtype, label = "out"): GpuBuffer {
  const b = gpu.alloc(Math.max(4, Math.ceil((count * (dt === "f16" ? 2 : 4)) / 4) * 4), label);
  gpu.fill32(b, dt === "f16" ? NAN_F16X2_BITS : NAN_F32_BITS);
  return b;
}

export function readAs(gpu: Gpu, b: GpuBuffer, count: number, dt: TestDtype): Promise<Float32Array> {
  return dt === "f16" ? gpu.readF16(b, count) : gpu.readF32(b, count);
}

// ── GPU suite set-up ──────────────────────────────────────────────────────────────────────────────────────────
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGpu, type GpuOptions } from "./runtime/device.js";
import { isCpuAdapter } from "./runtime/adapter.js";

export { isCpuAdapter };

/** A test runner's suite hooks (vitest's beforeAll / afterAll); passed in so this module never loads a runner. */
type SuiteHook = (fn: () => unknown, timeout?: number) => void;

export interface GpuSuite {
  /** The device (from the first test on; it is destroyed after the last). */
  readonly gpu: Gpu;
  /** A scratch folder removed after the suite (with `tmpDir`). */
  readonly dir: string;
  /** The suite's seed (NR_SEED pins it) and a generator seeded with it. */
  readonly seed: number;
  readonly rand: () => number;
  /** True on CPU adapters (lavapipe, SwiftShader, WARP): suites size their heavy cases by it. */
  readonly cpu: boolean;
}

/**
 * One GPU test file's set-up: a device before the tests, its adapter and the seed printed (so a failure can be replayed
 * with NR_SEED), an optional scratch folder, and everything released after the tests.
 * `const t = gpuSuite("matmul", { beforeAll, afterAll })`, then `t.gpu`, `t.rand`, `t.dir` inside the tests.
 */
export function gpuSuite(label: string, hooks: { beforeAll: SuiteHook; afterAll: SuiteHook }, opts: { tmpDir?: boolean; gpu?: GpuOptions } = {}): GpuSuite {
  const seed = freshSeed();
  let gpu: Gpu | undefined;
  let dir: string | undefined;
  const suite: GpuSuite = {
    get gpu() {
      if (!gpu) throw new Error(`gpuSuite(${label}): the GPU is opened in beforeAll; use it inside tests`);
      return gpu;
    },
    get dir() {
      if (!dir) throw new Error(`gpuSuite(${label}): no scratch folder (pass { tmpDir: true })`);
      return dir;
    },
    seed,
    rand: rng(seed),
    get cpu() {
      return isCpuAdapter(suite.gpu);
    },
  };
  hooks.beforeAll(async () => {
    gpu = await createGpu(opts.gpu);
    if (opts.tmpDir) dir = await mkdtemp(join(tmpdir(), `nr-${label.replace(/[^a-z0-9]+/gi, "-")}-`));
    console.log(`${label} tests on ${gpu.adapterName} (f16: ${gpu.hasF16}); seed ${seed} (NR_SEED=${seed} to replay)`);
  });
  hooks.afterAll(async () => {
    gpu?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return suite;
}
