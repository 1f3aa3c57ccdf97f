// NF4 family: bitsandbytes-compatible 4-bit NormalFloat weights on the GPU — quantize (from f32/f16/bf16, with
// double quantisation of the block scales), dequantize, the fused NF4 matmul in both orientations of a linear layer,
// and the upload/download of a weight's host form (the bitsandbytes checkpoint format itself is read and written by
// @nr/model bnb.ts). Reference: docs/kernels.md §2.
//
// ── Format (bitsandbytes `quantize_4bit(quant_type="nf4")`, default backend semantics) ──────────────────────────
//  W [N, K] (nn.Linear: out_features × in_features) is flattened row-major, f = n·K + k, and cut into blocks of
//  `blocksize` (64) elements (the last block may be partial). Per block b:
//    absmax[b] = max |W[f]|                          (fp32; the input dtype converts to f32 exactly)
//    s         = clamp(fl32(W[f] · fl32(1/absmax[b])), −1, 1)
//    code      = argmin_i fl32(|s − NF4[i]|)         (all in f32; an exact tie picks the LOWER index, like
//                                                      torch.argmin; a block of zeros gives 0·∞ = NaN → code 0)
//    byte[f>>1] = code[2j] << 4 | code[2j+1]          (EVEN element in the HIGH nibble; an odd element count is
//                                                      padded with the code of 0.0, i.e. 7)
//  Dequantized weight: w = fl32(NF4[code] · scale[b]) (then rounded to the compute dtype).
//  Tie handling / CUDA: bnb's CUDA kernel instead compares s against decimal midpoint constants with `>` (also
//  "lower index on a tie"); the two agree except for s within an ulp of a midpoint. We follow the reference
//  (default/CPU) backend exactly.
//
// ── Double quantisation (compress_statistics=True, the QLoRA default) ───────────────────────────────────────
//    offset     = mean(absmax)                                  (one f32 per tensor)
//    v[i]       = fl32(absmax[i] − offset)
//    absmax2[g] = max |v[i]| over groups of 256 first-level blocks
//    qabsmax[i] = argmin_j fl32(|clamp(fl32(v[i]·fl32(1/absmax2[g])), −1, 1) − DYN[j]|)   (8-bit, lower index on
//                 ties; absmax2 = 0 gives NaN → 0, exactly like bnb's quantize_blockwise)
//    scale[i]   = fl32(fl32(DYN[qabsmax[i]] · absmax2[g]) + offset)        (what every kernel multiplies by)
//  DYN is bnb's signed dynamic 8-bit map, see `createDynamicMap` (a checkpoint's `nested_quant_map` is preferred).
//  `offset`: bnb takes torch's f32 `mean()`, whose summation order is implementation-defined (CPU and CUDA differ),
//  so nobody reproduces it bit for bit; we sum in double-single (TwoSum) precision on the GPU and divide once, which
//  lands within a few ulp of the exact mean. Everything downstream of the offset is bit-exact.
//
// ── How the GPU reproduces bnb bit for bit ────────────────────────────────────────────────────────────────────
//  * fl32(1/a) is computed with integer long division (WGSL's `1.0/a` is only accurate to 2.5 ulp).
//  * The nearest-code argmin is replaced by comparisons against precomputed f32 thresholds: T_j = the smallest f32
//    s with argmin(s) ≥ j, found on the host by bisection over f32 bit patterns with the exact f32 emulation of the
//    argmin above (`codeThresholds`). code = #{j ≥ 1 : s ≥ T_j} — only a multiply feeds a compare, so no fused
//    multiply-add can change a rounding.
//  * scale = (DYN[q]·absmax2) + offset: the product is passed through a bit-XOR with a runtime zero so the
//    compiler cannot contract it into an fma (which would round once instead of twice).
//
// ── GPU layout (`Nf4Weight`) ──────────────────────────────────────────────────────────────────────────────────
//  packed : u32 words, word i = bytes 4i..4i+3 of bnb's packed uint8 tensor (little-endian), i.e. 8 codes; for
//           K % 8 == 0 every row starts on a word boundary. N·K/2 bytes.
//  scales : f32 per block, the (double-)dequantised absmax — the load-time form docs/kernels.md §2.3 describes: the
//           GEMM needs one load + one multiply per 8 weights and never touches the 8-bit map.
//  double : the double-quantised bytes kept for saving (qabsmax u8 packed 4 per u32, absmax2 f32, offset f32) plus
//           the host copy of the 8-bit map. `nf4MemoryBytes` accounts for all of it.
//
// ── Fused matmul (`nf4Matmul`) ────────────────────────────────────────────────────────────────────────────────
//  forward   : y[M,N]  = α · x[M,K] · deq(W)ᵀ  (+ y)      (nn.Linear)
//  inputGrad : dx[M,K] = α · dy[M,N] · deq(W)  (+ dx)     (the frozen base's input gradient)
//  W is never materialised in full precision: NF4 words are decoded (16-entry table × block scale) inside the GEMM.
//  x/dy f32 or f16 (shader-f16), f32 accumulation, output f32 or f16. K must be a multiple of 8.
//  Kernels (chosen by adapter and M; `path` forces one):
//   "tiled"  (GPUs, M > 8): 16×16 threads, a BM×64 output tile, BK = 32; each thread decodes one u32 word (8 weights)
//            of the W tile into workgroup memory — [n][k-run] for forward, [n-run][k] for inputGrad — so the inner
//            register-tile loop is the same for both orientations.
//   "direct" (CPU adapters such as lavapipe; inputGrad with M ≤ 8 on GPUs): no workgroup memory or barriers;
//            forward: TM rows × TN columns per invocation, reading W words along K; inputGrad: TM rows × the 8
//            output columns of one word, walking W down the N axis (neighbouring invocations read neighbouring words).
//   "gemv"   (GPUs, forward with M ≤ 8): 32 lanes per output column stride over its K words (coalesced), summed
//            through workgroup memory.
//   "broadcast" (CPU adapters with subgroups, forward at any M, in blocks of 8 rows): gemv-cpu.ts — one subgroup
//            per workgroup, x broadcast across the lanes, codes decoded by a select tree; measured 1.5–2.2× less CPU
//            than "direct" on lavapipe at M = 1…8.
import type { Gpu } from "./runtime/device.js";
import type { GpuBuffer } from "./runtime/pool.js";
import { isCpuAdapter } from "./runtime/adapter.js";
import { broadcastWidth } from "./matmul.js";
import { gemvCpuConfig, gemvCpuParams, gemvCpuText } from "./gemv-cpu.js";

// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════
// Tables and exact f32 host arithmetic
// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════

/**
 * The 16 NF4 values (bitsandbytes `get_4bit_type("nf4")`, from `create_normal_map(0.9677083, use_extra_value)`:
 * normal quantiles, 8 negative / 9 non-negative, scaled to [−1, 1]); index = 4-bit code. Stored as f32.
 */
export const NF4_CODE: Float32Array = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]);

const f32 = Math.fround;
const cvtF = new Float32Array(1);
const cvtU = new Uint32Array(cvtF.buffer);

/** IEEE bits of fl32(x). */
export function f32Bits(x: number): number {
  cvtF[0] = x;
  return cvtU[0];
}
function bitsToF32(b: number): number {
  cvtU[0] = b >>> 0;
  return cvtF[0];
}
/** A key that orders f32 values as integers (−0 and +0 share 0). */
function orderKey(x: number): number {
  const b = f32Bits(x);
  return b & 0x80000000 ? -(b & 0x7fffffff) : b;
}
function fromOrderKey(k: number): number {
  return k < 0 ? bitsToF32((0x80000000 | -k) >>> 0) : bitsToF32(k);
}

/**
 * bitsandbytes' nearest-code rule with exact f32 arithmetic: argmin_i fl32(|s − code[i]|), the first (lowest) index
 * on a tie; NaN gives 0 (torch.argmin over all-NaN distances). (Each f32 op is done in f64 and rounded once with
 * Math.fround; a difference of two f32 values is exact in f64 whenever it can matter, so this is exact emulation.)
 */
export function nearestCodeIndex(s: number, code: ArrayLike<number>): number {
  let best = 0;
  let bestD = Infinity;
  for (let i = 0; i < code.length; i++) {
    const d = Math.abs(f32(s - code[i]));
    if (d < bestD) {
      bestD = d;
      best = i;
    }
  }
  return best;
}

const thresholdCache = new Map<string, Float32Array>();

/**
 * f32 decision thresholds equivalent to `nearestCodeIndex` for s ∈ [−1, 1]: t[0] = −∞ and, for j ≥ 1, t[j] is the
 * smallest f32 s with nearestCodeIndex(s) ≥ j (+∞ when no s ≤ 1 reaches j). Then
 *   nearestCodeIndex(s, code) == #{ j ≥ 1 : s ≥ t[j] }
 * because the argmin is non-decreasing in s for a sorted code (the tests check this densely around every threshold).
 * Found by bisection over f32 bit patterns (≈31 steps per threshold).
 */
export function codeThresholds(code: ArrayLike<number>): Float32Array {
  const key = Array.from(code, (v) => f32Bits(v).toString(16)).join(",");
  const hit = thresholdCache.get(key);
  if (hit) return hit;
  for (let i = 1; i < code.length; i++) {
    if (!(f32(code[i]) >= f32(code[i - 1]))) throw new Error(`codeThresholds: the code table must be sorted ascending (index ${i})`);
  }
  const L = code.length;
  const t = new Float32Array(L);
  t[0] = -Infinity;
  const lo0 = orderKey(-1);
  const hi0 = orderKey(1);
  for (let j = 1; j < L; j++) {
    const reaches = (k: number) => nearestCodeIndex(fromOrderKey(k), code) >= j;
    if (!reaches(hi0)) {
      t[j] = Infinity;
      continue;
    }
    if (reaches(lo0)) {
      t[j] = -1;
      continue;
    }
    let lo = lo0; // does not reach j
    let hi = hi0; // reaches j
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (reaches(mid)) hi = mid;
      else lo = mid;
    }
    t[j] = fromOrderKey(hi);
  }
  thresholdCache.set(key, t);
  return t;
}

/**
 * bitsandbytes' signed dynamic 8-bit map, `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`,
 * regenerated from its definition:
 *   for i in 0 … max_exponent_bits−1 (a decimal exponent 10^(i−(max_exponent_bits−1)), i.e. 1e−6 … 1e0):
 *     n_i = 2^(i + total_bits−1 − max_exponent_bits) (+1 boundaries; unsigned maps use twice as many)
 *     boundaries = torch.linspace(0.1, 1, n_i + 1)            (float32)
 *     means      = (boundaries[:-1] + boundaries[1:]) / 2     (float32)
 *     values    += means · 10^(i−6)   and, signed, −means · 10^(i−6)   (float32 tensor × Python scalar → f32 op)
 *   (when total_bits − 1 > max_exponent_bits, 2^(…)−1 "additional items" with the last exponent follow)
 *   values += [0, 1.0]; pad with 0 to 256 entries; sort ascending.
 * Signed 7/8: 1+2+4+…+64 = 127 magnitudes per sign + 0 + 1.0 = 256 values in [−0.99297, 1].
 *
 * The f32 values depend on how torch's CPU `linspace` rounds (see `torchLinspaceF32`): x86 builds dispatching to
 * AVX2/AVX-512 fuse its multiply-add (`fusedLinspace: true`, the default here), the baseline build does not. Both
 * variants were checked bit for bit against torch 2.13 (ATEN_CPU_CAPABILITY=avx2 and =default); they differ by one
 * ulp in 42 of the 256 entries, which is why a checkpoint's own `nested_quant_map` always wins.
 */
export function createDynamicMap(opts: { signed?: boolean; maxExponentBits?: number; totalBits?: number; fusedLinspace?: boolean } = {}): Float32Array {
  const signed = opts.signed ?? true;
  const maxExp = opts.maxExponentBits ?? 7;
  const totalBits = opts.totalBits ?? 8;
  const fused = opts.fusedLinspace ?? true;
  const nonSignBits = totalBits - 1;
  const additional = 2 ** (nonSignBits - maxExp) - 1;
  const data: number[] = [];
  const push = (count: number, exponent: number) => {
    const b = torchLinspaceF32(0.1, 1, count, fused);
    const scale = f32(Number(`1e${exponent}`)); // Python's 10**e as a float, cast to f32 by the tensor op
    for (let j = 0; j + 1 < b.length; j++) {
      const mean = f32(f32(b[j] + b[j + 1]) / 2);
      data.push(f32(mean * scale));
    }
    if (signed) for (let j = 0; j + 1 < b.length; j++) data.push(-f32(f32(f32(b[j] + b[j + 1]) / 2) * scale));
  };
  let i = 0;
  for (i = 0; i < maxExp; i++) {
    const items = signed ? 2 ** (i + nonSignBits - maxExp) + 1 : 2 ** (i + nonSignBits - maxExp + 1) + 1;
    push(items, -(maxExp - 1) + i);
  }
  if (additional > 0) push(additional + 1, -(maxExp - 1) + (i - 1));
  data.push(0, 1.0);
  if (data.length > 2 ** totalBits) throw new Error(`createDynamicMap: ${data.length} values for ${totalBits} bits`);
  while (data.length < 256) data.push(0);
  data.sort((a, b) => a - b);
  return Float32Array.from(data);
}

/**
 * torch.linspace(start, end, steps) in float32 on the CPU, rounded as torch's kernel does (torch ≥ 2.1, a scalar
 * loop): element i is `start + step·i` for i < steps/2 and `end − step·(steps−1−i)` after, step = fl32((end −
 * start)/(steps − 1)). `fused`: the AVX2 / AVX-512 builds of that loop (the usual x86 dispatch) are compiled with FMA
 * and the compiler contracts the multiply-add into one rounding; the baseline build (ATEN_CPU_CAPABILITY=default,
 * and most non-x86 builds) rounds twice. (The product of an f32 and a small integer plus an f32 is exact in f64, so
 * one Math.fround is a correctly rounded fma.)
 */
export function torchLinspaceF32(start: number, end: number, steps: number, fused = true): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = f32(start);
    return out;
  }
  const s = f32(start);
  const e = f32(end);
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    if (fused) out[i] = i < halfway ? f32(s + step * i) : f32(e - step * (steps - i - 1));
    else out[i] = i < halfway ? f32(s + f32(step * i)) : f32(e - f32(step * (steps - i - 1)));
  }
  return out;
}

let defaultDynamicMap: Float32Array | null = null;
/** The default signed dynamic map (torch's x86 AVX2/AVX-512 rounding of linspace), cached. */
export function dynamicMap(): Float32Array {
  defaultDynamicMap ??= createDynamicMap();
  return defaultDynamicMap;
}

// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════
// float64 host reference (exact f32 emulation of bnb's default backend; independent of the GPU algorithm:
// argmin over the code table and Math.fround(1/a), not thresholds and integer division)
// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════

export interface Nf4QuantizeReference {
  /** bnb's packed uint8 tensor: ceil(n/2) bytes. */
  packed: Uint8Array;
  /** First-level absmax per block (f32). */
  absmax: Float32Array;
  /** Per-block scale the kernels use (double-dequantised absmax, or absmax itself). */
  scales: Float32Array;
  qabsmax: Uint8Array | null;
  absmax2: Float32Array | null;
  offset: number | null;
}

/**
 * bitsandbytes `quantize_4bit(nf4)` (+ double quantisation) on the host. `values` are the weights as f32 values
 * (bf16/f16 weights widened exactly). `offset` overrides mean(absmax) (see the header on its reproducibility).
 */
export function nf4QuantizeReference(
  values: ArrayLike<number>,
  opts: { blocksize?: number; doubleQuant?: boolean; dynamicMap?: ArrayLike<number>; offset?: number; code?: ArrayLike<number> } = {},
): Nf4QuantizeReference {
  const bs = opts.blocksize ?? 64;
  const code = opts.code ?? NF4_CODE;
  const n = values.length;
  const blocks = Math.ceil(n / bs);
  const absmax = new Float32Array(blocks);
  const codes = new Uint8Array(n + (n % 2));
  for (let b = 0; b < blocks; b++) {
    let m = 0;
    for (let f = b * bs; f < Math.min(n, (b + 1) * bs); f++) m = Math.max(m, Math.abs(f32(values[f])));
    absmax[b] = m;
    const r = f32(1 / m); // ∞ for an all-zero block
    for (let f = b * bs; f < Math.min(n, (b + 1) * bs); f++) {
      const s = Math.min(1, Math.max(-1, f32(f32(values[f]) * r))); // NaN stays NaN
      codes[f] = nearestCodeIndex(s, code);
    }
  }
  if (n % 2) codes[n] = nearestCodeIndex(0, code);
  const packed = new Uint8Array(Math.ceil(n / 2));
  for (let j = 0; j < packed.length; j++) packed[j] = (codes[2 * j] << 4) | codes[2 * j + 1];
  if (!(opts.doubleQuant ?? true)) return { packed, absmax, scales: absmax.slice(), qabsmax: null, absmax2: null, offset: null };

  const map = opts.dynamicMap ?? dynamicMap();
  let sum = 0;
  for (let i = 0; i < blocks; i++) sum += absmax[i];
  const offset = opts.offset ?? f32(sum / blocks);
  const groups = Math.ceil(blocks / 256);
  const absmax2 = new Float32Array(groups);
  const qabsmax = new Uint8Array(blocks);
  const scales = new Float32Array(blocks);
  for (let g = 0; g < groups; g++) {
    const end = Math.min(blocks, (g + 1) * 256);
    let m = 0;
    for (let i = g * 256; i < end; i++) m = Math.max(m, Math.abs(f32(absmax[i] - offset)));
    absmax2[g] = m;
    const r = f32(1 / m);
    for (let i = g * 256; i < end; i++) {
      const s = Math.min(1, Math.max(-1, f32(f32(absmax[i] - offset) * r)));
      qabsmax[i] = nearestCodeIndex(s, map);
      scales[i] = f32(f32(map[qabsmax[i]] * m) + offset);
    }
  }
  return { packed, absmax, scales, qabsmax, absmax2, offset };
}

/** Dequantize on the host: w[f] = fl32(code[nibble] · scale[f / blocksize]) as f32 values. */
export function nf4DequantizeReference(packed: Uint8Array, scales: ArrayLike<number>, n: number, blocksize = 64, code: ArrayLike<number> = NF4_CODE): Float32Array {
  const out = new Float32Array(n);
  for (let f = 0; f < n; f++) {
    const byte = packed[f >> 1];
    const c = f & 1 ? byte & 15 : byte >> 4;
    out[f] = f32(code[c] * scales[Math.floor(f / blocksize)]);
  }
  return out;
}

export type Nf4MatmulMode = "forward" | "inputGrad";

/** float64 reference of the fused matmul given the dequantised W [N,K]: forward x[M,K]·Wᵀ, inputGrad dy[M,N]·W. */
export function nf4MatmulReference(a: ArrayLike<number>, w: ArrayLike<number>, o: { M: number; N: number; K: number; mode: Nf4MatmulMode; alpha?: number }): Float64Array {
  const { M, N, K } = o;
  const alpha = o.alpha ?? 1;
  if (o.mode === "forward") {
    const y = new Float64Array(M * N);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[m * K + k] * w[n * K + k];
        y[m * N + n] = alpha * s;
      }
    }
    return y;
  }
  const dx = new Float64Array(M * K);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const d = a[m * N + n];
      if (d === 0) continue;
      for (let k = 0; k < K; k++) dx[m * K + k] += d * w[n * K + k];
    }
  }
  if (alpha !== 1) for (let i = 0; i < dx.length; i++) dx[i] *= alpha;
  return dx;
}

// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════
// GPU weight layout
// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════

/** Weight dtypes we quantize from (and record as the checkpoint's compute dtype). */
export type Nf4SourceDtype = "f32" | "f16" | "bf16";
export type Nf4ActDtype = "f32" | "f16";

export interface Nf4DoubleQuant {
  /** One u8 code per first-level block, 4 per u32 word (byte i of the bnb `absmax` uint8 tensor = byte i here). */
  qabsmax: GpuBuffer;
  /** f32 per group of `blocksize` (256) first-level blocks (bnb `nested_absmax`). */
  absmax2: GpuBuffer;
  /** One f32: mean of the first-level absmax (bnb `nested_offset`). */
  offset: GpuBuffer;
  /** The 8-bit map the codes index (bnb `nested_quant_map`). */
  map: Float32Array;
  /** Second-level block size (bnb `nested_blocksize`, 256). */
  blocksize: number;
}

export interface Nf4Weight {
  /** out_features (rows of W). */
  N: number;
  /** in_features (columns of W). */
  K: number;
  /** Elements per first-level block (64). */
  blocksize: number;
  /** ceil(N·K / blocksize). */
  blocks: number;
  /** The compute dtype the weight came from (recorded in the checkpoint's quant state). */
  dtype: Nf4SourceDtype;
  /** The 16-entry code table (bnb `quant_map`). */
  code: Float32Array;
  /** ceil(N·K/8) u32 words of packed codes. */
  packed: GpuBuffer;
  /** f32 per block: the scale the kernels multiply by. */
  scales: GpuBuffer;
  /** Double-quantised statistics (kept for saving), or null when stored without them. */
  double: Nf4DoubleQuant | null;
}

export interface Nf4Memory {
  /** Packed 4-bit codes on the device. */
  codes: number;
  /** f32 per-block scales on the device (what the GEMM reads). */
  scales: number;
  /** qabsmax + absmax2 + offset on the device (kept for saving). */
  doubleQuant: number;
  total: number;
  /** total · 8 / (N·K). */
  bitsPerParam: number;
  /** Bytes of the same weight in a bitsandbytes checkpoint (tensors only, not the JSON state). */
  checkpoint: number;
}

/** Device bytes of an NF4 weight (codes + scales + the double-quant state). */
export function nf4MemoryBytes(w: Nf4Weight): Nf4Memory {
  return nf4MemoryFor(w.N, w.K, { blocksize: w.blocksize, doubleQuant: w.double !== null, nestedBlocksize: w.double?.blocksize });
}

/** The same accounting for a planned [N, K] weight. */
export function nf4MemoryFor(N: number, K: number, opts: { blocksize?: number; doubleQuant?: boolean; nestedBlocksize?: number } = {}): Nf4Memory {
  const bs = opts.blocksize ?? 64;
  const n = N * K;
  const blocks = Math.ceil(n / bs);
  const dq = opts.doubleQuant ?? true;
  const groups = Math.ceil(blocks / (opts.nestedBlocksize ?? 256));
  const codes = Math.ceil(n / 8) * 4;
  const scales = blocks * 4;
  const doubleQuant = dq ? Math.ceil(blocks / 4) * 4 + groups * 4 + 4 : 0;
  const total = codes + scales + doubleQuant;
  const checkpoint = Math.ceil(n / 2) + 16 * 4 + (dq ? blocks + groups * 4 + 256 * 4 : blocks * 4);
  return { codes, scales, doubleQuant, total, bitsPerParam: (total * 8) / n, checkpoint };
}

export function releaseNf4(gpu: Gpu, w: Nf4Weight) {
  gpu.release(w.packed, w.scales, w.double?.qabsmax, w.double?.absmax2, w.double?.offset);
}

// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════
// WGSL helpers
// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════

/** An exact WGSL f32 literal (hex float) for an f32 value. */
export function wgslF32(x: number): string {
  const b = f32Bits(x);
  const sign = b >>> 31 ? "-" : "";
  const e = (b >>> 23) & 0xff;
  const m = b & 0x7fffff;
  if (e === 0xff) throw new Error(`wgslF32: ${x} is not finite`);
  if (e === 0) return m === 0 ? `${sign}0.0f` : `${sign}0x0.${(m << 1).toString(16).padStart(6, "0")}p-126f`;
  return `${sign}0x1.${(m << 1).toString(16).padStart(6, "0")}p${e - 127}f`;
}

function codeConst(code: ArrayLike<number>): string {
  return `const CODE = array<f32, 16>(${Array.from(code, wgslF32).join(", ")});`;
}

/** Shift of element e (0..7) of a word: byte e>>1, even element in the high nibble. */
const NIB_SHIFT = [4, 0, 12, 8, 20, 16, 28, 24];

/** WGSL: decode word `w` into two vec4<f32> of code values (elements 0..3, 4..7), unscaled. */
function decodeWord(w: string, lo: string, hi: string): string {
  const c = (e: number) => `CODE[(${w} >> ${NIB_SHIFT[e]}u) & 15u]`;
  return `let ${lo} = vec4<f32>(${c(0)}, ${c(1)}, ${c(2)}, ${c(3)});\n    let ${hi} = vec4<f32>(${c(4)}, ${c(5)}, ${c(6)}, ${c(7)});`;
}

/** WGSL fn recipRN(a) = fl32(1/a) exactly, by integer long division (a > 0; normal a below 2^125). */
const RECIP_RN = /* wgsl */ `
fn recipRN(a: f32) -> f32 {
  let b = bitcast<u32>(a);
  let e = (b >> 23u) & 0xffu;
  let m = (b & 0x7fffffu) | 0x800000u;
  if (e == 0u || e >= 253u) { return 1.0 / a; }            // subnormal / huge absmax: outside the exact range
  if (m == 0x800000u) { return bitcast<f32>((254u - e) << 23u); } // a power of two: exact
  // q = floor(2^48 / m) ∈ [2^24, 2^25): 24 result bits + a round bit; rem ≠ 0 is the sticky bit.
  var rem = 1u;
  var q = 0u;
  for (var i = 0u; i < 48u; i++) {
    rem = rem << 1u;
    q = q << 1u;
    if (rem >= m) { rem -= m; q |= 1u; }
  }
  var mant = q >> 1u;
  if ((q & 1u) == 1u && (rem != 0u || (mant & 1u) == 1u)) { mant += 1u; }
  var ex = 253u - e;
  if (mant == 0x1000000u) { mant = 0x800000u; ex += 1u; }
  return bitcast<f32>((ex << 23u) | (mant & 0x7fffffu));
}`;

function log2Int(x: number): number {
  const l = Math.log2(x);
  if (!Number.isInteger(l)) throw new Error(`${x} is not a power of two`);
  return l;
}

/** Workgroups for `count` items of `per` each, folded into y past 65535. */
function foldGrid(count: number, per: number, gpu: Gpu): [number, number] {
  const wgs = Math.max(1, Math.ceil(count / per));
  const maxX = Math.min(65535, gpu.limits.maxComputeWorkgroupsPerDimension ?? 65535);
  if (wgs <= maxX) return [wgs, 1];
  const y = Math.ceil(wgs / maxX);
  return [Math.ceil(wgs / y), y];
}

// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════
// Quantize on the GPU
// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════

/** Codes + first-level absmax. One invocation per u32 word (8 elements); a workgroup covers 2048 elements. */
export function nf4QuantizeWgsl(opts: { dtype: Nf4SourceDtype; blocksize: number; code?: ArrayLike<number> }): string {
  const code = opts.code ?? NF4_CODE;
  const tpb = opts.blocksize / 8; // invocations per block
  if (!Number.isInteger(tpb) || tpb < 1 || tpb > 256 || (tpb & (tpb - 1)) !== 0) throw new Error(`nf4 quantize: blocksize ${opts.blocksize} must be a power of two in [8, 2048]`);
  const t = codeThresholds(code);
  const pad = nearestCodeIndex(0, code);
  const load =
    opts.dtype === "f32"
      ? `return bitcast<f32>(src[e]);`
      : opts.dtype === "bf16"
        ? `return bitcast<f32>(((src[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu) << 16u);`
        : `return f16BitsToF32((src[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu);`;
  const count = Array.from({ length: 15 }, (_, j) => `select(0u, 1u, s >= ${wgslF32(t[j + 1])})`).join(" + ");
  return /* wgsl */ `
struct Params { n: u32, words: u32, wgX: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> packed: array<u32>;
@group(0) @binding(2) var<storage, read_write> absmax: array<f32>;
@group(0) @binding(3) var<uniform> u: Params;

const TPB = ${tpb}u;
var<workgroup> red: array<f32, 256>;
var<workgroup> rcp: array<f32, ${256 / tpb}>;

fn f16BitsToF32(h: u32) -> f32 {
  let s = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0u) { let v = f32(m) * 5.9604644775390625e-8; return select(v, -v, s != 0u); }
  if (e == 31u) { return bitcast<f32>(s | 0x7f800000u | (m << 13u)); }
  return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));
}
fn loadElem(e: u32) -> f32 { ${load} }
${RECIP_RN}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let gw = (wg.y * u.wgX + wg.x) * 256u + lid;
  var vals: array<f32, 8>;
  var m = 0.0;
  for (var i = 0u; i < 8u; i++) {
    let e = gw * 8u + i;
    var v = 0.0;
    if (e < u.n) { v = loadElem(e); }
    vals[i] = v;
    m = max(m, abs(v));
  }
  red[lid] = m;
  for (var s = TPB / 2u; s > 0u; s = s >> 1u) {
    workgroupBarrier();
    if ((lid & (TPB - 1u)) < s) { red[lid] = max(red[lid], red[lid + s]); }
  }
  workgroupBarrier();
  let lead = lid & ~(TPB - 1u);
  let amax = red[lead];
  if (lid == lead) {
    rcp[lid / TPB] = recipRN(amax);
    if (gw < u.words) { absmax[gw / TPB] = amax; }
  }
  workgroupBarrier();
  let r = rcp[lid / TPB];
  if (gw >= u.words) { return; }
  var word = 0u;
  for (var i = 0u; i < 8u; i++) {
    let e = gw * 8u + i;
    var c = 0u;
    if (e < u.n) {
      // amax == 0: bnb computes 0·(1/0) = NaN, whose argmin is code 0.
      if (amax > 0.0) {
        let s = clamp(vals[i] * r, -1.0, 1.0);
        c = ${count};
      }
    } else if (e == u.n && (u.n & 1u) == 1u) {
      c = ${pad}u; // bnb pads an odd element count with 0.0 before packing
    }
    word |= c << (((i >> 1u) << 3u) + ((~i & 1u) << 2u));
  }
  packed[gw] = word;
}
`;
}

/** offset = mean(absmax): one workgroup, double-single (TwoSum) accumulation, one division. */
export function nf4MeanWgsl(): string {
  return /* wgsl */ `
struct Params { n: u32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<storage, read> absmax: array<f32>;
@group(0) @binding(1) var<storage, read_write> offset: array<f32>;
@group(0) @binding(2) var<uniform> u: Params;
var<workgroup> sh: array<f32, 256>;
var<workgroup> sl: array<f32, 256>;
fn twoSum(a: f32, b: f32) -> vec2<f32> {
  let s = a + b;
  let bb = s - a;
  return vec2<f32>(s, (a - (s - bb)) + (b - bb));
}
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  var hi = 0.0;
  var lo = 0.0;
  for (var i = lid; i < u.n; i += 256u) {
    let t = twoSum(hi, absmax[i]);
    hi = t.x;
    lo += t.y;
  }
  sh[lid] = hi;
  sl[lid] = lo;
  for (var s = 128u; s > 0u; s = s >> 1u) {
    workgroupBarrier();
    if (lid < s) {
      let t = twoSum(sh[lid], sh[lid + s]);
      sh[lid] = t.x;
      sl[lid] = sl[lid] + sl[lid + s] + t.y;
    }
  }
  workgroupBarrier();
  if (lid == 0u) { offset[0] = (sh[0] + sl[0]) / f32(u.n); }
}
`;
}

/** Double quantisation of absmax (one workgroup per group of 256 blocks) and the per-block scales. */
export function nf4DoubleQuantWgsl(): string {
  return /* wgsl */ `
struct Params { n: u32, wgX: u32, zero: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> absmax: array<f32>;
@group(0) @binding(1) var<storage, read> offsetBuf: array<f32>;
// tables[0..256): the 8-bit map; tables[256 + j], j = 1..255: its decision thresholds (see codeThresholds).
@group(0) @binding(2) var<storage, read> tables: array<f32>;
@group(0) @binding(3) var<storage, read_write> qabsmax: array<u32>;
@group(0) @binding(4) var<storage, read_write> absmax2: array<f32>;
@group(0) @binding(5) var<storage, read_write> scales: array<f32>;
@group(0) @binding(6) var<uniform> u: Params;
var<workgroup> red: array<f32, 256>;
var<workgroup> qs: array<u32, 256>;
var<workgroup> rc: array<f32, 1>;
${RECIP_RN}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wg.y * u.wgX + wg.x;
  let i = g * 256u + lid;
  let off = offsetBuf[0];
  var v = 0.0;
  if (i < u.n) { v = absmax[i] - off; }
  red[lid] = abs(v);
  for (var s = 128u; s > 0u; s = s >> 1u) {
    workgroupBarrier();
    if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
  }
  workgroupBarrier();
  let a2 = red[0];
  if (lid == 0u) {
    rc[0] = recipRN(a2);
    if (g * 256u < u.n) { absmax2[g] = a2; }
  }
  workgroupBarrier();
  let r = rc[0];
  var q = 0u;
  if (i < u.n && a2 > 0.0) {
    let s = clamp(v * r, -1.0, 1.0);
    var lo = 0u;
    for (var step = 128u; step > 0u; step = step >> 1u) {
      if (lo + step <= 255u && tables[256u + lo + step] <= s) { lo += step; }
    }
    q = lo;
  }
  qs[lid] = q;
  workgroupBarrier();
  if (i < u.n && (lid & 3u) == 0u) {
    qabsmax[i >> 2u] = qs[lid] | (qs[lid + 1u] << 8u) | (qs[lid + 2u] << 16u) | (qs[lid + 3u] << 24u);
  }
  if (i < u.n) {
    // XOR with a runtime zero: keeps the product a separately rounded f32 (no fma contraction with the add).
    let p = bitcast<f32>(bitcast<u32>(tables[q] * a2) ^ u.zero);
    scales[i] = p + off;
  }
}
`;
}

export interface Nf4QuantizeArgs {
  /** The weight [N, K] row-major: f32, or f16 / bf16 packed two per u32 (as uploaded from a Uint16Array). */
  input: GpuBuffer;
  dtype: Nf4SourceDtype;
  N: number;
  K: number;
  /** Default 64. */
  blocksize?: number;
  /** Double-quantise the block scales (bnb compress_statistics; default true). */
  doubleQuant?: boolean;
  /** The 8-bit map for double quantisation (default: `dynamicMap()`). */
  dynamicMap?: Float32Array;
  label?: string;
}

/**
 * Quantize a weight to NF4 on the GPU, exactly as bitsandbytes does (see the header). Records dispatches only; the
 * returned buffers are owned by the caller (`releaseNf4`).
 */
export function quantizeNf4(gpu: Gpu, args: Nf4QuantizeArgs): Nf4Weight {
  const { N, K, dtype } = args;
  const bs = args.blocksize ?? 64;
  const label = args.label ?? "nf4";
  if (!(N > 0 && K > 0) || !Number.isInteger(N) || !Number.isInteger(K)) throw new Error(`quantizeNf4: N and K must be positive integers (got N=${N} K=${K})`);
  if (!(bs >= 8 && bs <= 2048 && (bs & (bs - 1)) === 0)) throw new Error(`quantizeNf4: blocksize ${bs} must be a power of two in [8, 2048] (bitsandbytes uses 64)`);
  const n = N * K;
  if (n >= 2 ** 32 - 16) throw new Error(`quantizeNf4: ${n} elements exceed u32 indexing`);
  const need = dtype === "f32" ? n * 4 : Math.ceil(n / 2) * 4;
  if (args.input.bytes < need) throw new Error(`quantizeNf4: input holds ${args.input.bytes} bytes, needs ${need} for ${dtype} [${N}, ${K}]`);
  const words = Math.ceil(n / 8);
  const blocks = Math.ceil(n / bs);
  const packed = gpu.alloc(words * 4, `${label}.packed`);
  const absmax = gpu.alloc(blocks * 4, `${label}.absmax`);
  const [wx, wy] = foldGrid(words, 256, gpu);
  const q = gpu.kernel(`nf4_quantize_${dtype}_b${bs}`, nf4QuantizeWgsl({ dtype, blocksize: bs }));
  gpu.dispatch(q, [args.input, packed, absmax], [wx, wy], new Uint32Array([n, words, wx, 0]));
  const base = { N, K, blocksize: bs, blocks, dtype, code: NF4_CODE, packed };
  if (!(args.doubleQuant ?? true)) return { ...base, scales: absmax, double: null };

  const map = args.dynamicMap ?? dynamicMap();
  const groups = Math.ceil(blocks / 256);
  const offset = gpu.alloc(4, `${label}.offset`);
  const qabsmax = gpu.alloc(Math.ceil(blocks / 4) * 4, `${label}.qabsmax`);
  const absmax2 = gpu.alloc(groups * 4, `${label}.absmax2`);
  const scales = gpu.alloc(blocks * 4, `${label}.scales`);
  gpu.dispatch(gpu.kernel("nf4_mean", nf4MeanWgsl()), [absmax, offset], [1], new Uint32Array([blocks, 0, 0, 0]));
  const tables = gpu.upload(dynamicTables(map), `${label}.dq_tables`);
  const [gx, gy] = foldGrid(groups, 1, gpu);
  gpu.dispatch(gpu.kernel("nf4_double_quant", nf4DoubleQuantWgsl()), [absmax, offset, tables, qabsmax, absmax2, scales], [gx, gy], new Uint32Array([blocks, gx, 0, 0]));
  // Released now, reused only by work recorded later (the pool hands buffers out in submission order).
  gpu.release(absmax, tables);
  return { ...base, scales, double: { qabsmax, absmax2, offset, map: Float32Array.from(map), blocksize: 256 } };
}

function dynamicTables(map: ArrayLike<number>): Float32Array {
  if (map.length !== 256) throw new Error(`nf4: the 8-bit map must have 256 entries (got ${map.length})`);
  const t = codeThresholds(map);
  const tables = new Float32Array(512);
  tables.set(map, 0);
  tables.set(t, 256);
  tables[256] = 0; // unused (j = 0)
  return tables;
}

// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════
// Dequantize
// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════

export function nf4DequantizeWgsl(opts: { outDtype: Nf4ActDtype; code: ArrayLike<number> }): string {
  const o = opts.outDtype;
  return /* wgsl */ `
${o === "f16" ? "enable f16;" : ""}
struct Params { n: u32, words: u32, wgX: u32, wordShift: u32 }
@group(0) @binding(0) var<storage, read> packed: array<u32>;
@group(0) @binding(1) var<storage, read> scales: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<${o}>;
@group(0) @binding(3) var<uniform> u: Params;
${codeConst(opts.code)}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let gw = (wg.y * u.wgX + wg.x) * 256u + lid;
  if (gw >= u.words) { return; }
  let w = packed[gw];
  let s = scales[gw >> u.wordShift];
  for (var i = 0u; i < 8u; i++) {
    let e = gw * 8u + i;
    if (e < u.n) { out[e] = ${o}(CODE[(w >> (((i >> 1u) << 3u) + ((~i & 1u) << 2u))) & 15u] * s); }
  }
}
`;
}

/** out[N·K] = deq(W) as f32 (bit-exact with bnb's f32 dequantisation) or f16. */
export function dequantizeNf4(gpu: Gpu, w: Nf4Weight, out: GpuBuffer, opts: { outDtype?: Nf4ActDtype } = {}): void {
  const o = opts.outDtype ?? "f32";
  if (o === "f16" && !gpu.hasF16) throw new Error("dequantizeNf4: f16 output needs shader-f16, which this adapter lacks");
  const n = w.N * w.K;
  const need = n * (o === "f16" ? 2 : 4);
  if (out.bytes < need) throw new Error(`dequantizeNf4: out holds ${out.bytes} bytes, needs ${need} for [${w.N}, ${w.K}] ${o}`);
  const words = Math.ceil(n / 8);
  const [wx, wy] = foldGrid(words, 256, gpu);
  const k = gpu.kernel(`nf4_dequantize_${o}`, nf4DequantizeWgsl({ outDtype: o, code: w.code }));
  gpu.dispatch(k, [w.packed, w.scales, out], [wx, wy], new Uint32Array([n, words, wx, log2Int(w.blocksize / 8)]));
}

// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════
// Fused NF4 matmul
// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════

export interface Nf4MatmulArgs {
  /** forward: y[M,N] = x[M,K]·deq(W)ᵀ;  inputGrad: dx[M,K] = dy[M,N]·deq(W). */
  mode: Nf4MatmulMode;
  /** x [M,K] (forward) or dy [M,N] (inputGrad), row-major. */
  a: GpuBuffer;
  w: Nf4Weight;
  /** y [M,N] (forward) or dx [M,K] (inputGrad). */
  out: GpuBuffer;
  M: number;
  /** dtype of `a` (default f32). */
  dtype?: Nf4ActDtype;
  outDtype?: Nf4ActDtype;
  alpha?: number;
  /** out += result (e.g. adding the base's input gradient to LoRA's). */
  accumulate?: boolean;
  /**
   * Force a kernel. Default: on CPU adapters "broadcast" for forward (when the adapter has subgroups), else
   * "direct"; on GPUs "gemv" for forward with M ≤ 8, "direct" for inputGrad with M ≤ 8, else "tiled". ("gemv" and
   * "broadcast" are forward-only.)
   */
  path?: "tiled" | "direct" | "gemv" | "broadcast";
}

const PARAMS = "struct Params { M: u32, N: u32, K: u32, KW: u32, bsShift: u32, alpha: f32, acc: u32, pad: u32 }";

function storeExpr(o: Nf4ActDtype, ci: string, v: string): string {
  return `{ var r = u.alpha * ${v}; if (u.acc != 0u) { r += f32(C[${ci}]); } C[${ci}] = ${o}(r); }`;
}

/** Direct forward kernel: each invocation TM rows × TN columns, W words read along K (K % 8 == 0). */
export function nf4ForwardDirectWgsl(o: { dtype: Nf4ActDtype; outDtype: Nf4ActDtype; TM: number; TN: number; WX: number; WY: number; code: ArrayLike<number> }): string {
  const { dtype, outDtype, TM, TN, WX, WY } = o;
  const f16 = dtype === "f16" || outDtype === "f16";
  return /* wgsl */ `
${f16 ? "enable f16;" : ""}
${PARAMS}
@group(0) @binding(0) var<storage, read> A: array<vec4<${dtype}>>;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> S: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<${outDtype}>;
@group(0) @binding(4) var<uniform> u: Params;
${codeConst(o.code)}
@compute @workgroup_size(${WX}, ${WY}, 1)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let n0 = (wg.x * ${WX}u + lid.x) * ${TN}u;
  let m0 = (wg.y * ${WY}u + lid.y) * ${TM}u;
  if (n0 >= u.N || m0 >= u.M) { return; }
  var acc: array<array<f32, ${TN}>, ${TM}>;
  var rowA: array<u32, ${TM}>;
  var rowW: array<u32, ${TN}>;
  var flat: array<u32, ${TN}>;
  // Rows/columns past the edge read a valid (clamped) row and are never stored.
  for (var i = 0u; i < ${TM}u; i++) { rowA[i] = min(m0 + i, u.M - 1u) * (u.K / 4u); }
  for (var j = 0u; j < ${TN}u; j++) { let n = min(n0 + j, u.N - 1u); rowW[j] = n * u.KW; flat[j] = n * u.K; }
  for (var kw = 0u; kw < u.KW; kw++) {
    var a0: array<vec4<f32>, ${TM}>;
    var a1: array<vec4<f32>, ${TM}>;
    for (var i = 0u; i < ${TM}u; i++) {
      a0[i] = vec4<f32>(A[rowA[i] + 2u * kw]);
      a1[i] = vec4<f32>(A[rowA[i] + 2u * kw + 1u]);
    }
    for (var j = 0u; j < ${TN}u; j++) {
      let w = W[rowW[j] + kw];
      let s = S[(flat[j] + kw * 8u) >> u.bsShift];
      ${decodeWord("w", "c0", "c1")}
      for (var i = 0u; i < ${TM}u; i++) { acc[i][j] += s * (dot(a0[i], c0) + dot(a1[i], c1)); }
    }
  }
  for (var i = 0u; i < ${TM}u; i++) {
    let m = m0 + i;
    if (m >= u.M) { break; }
    for (var j = 0u; j < ${TN}u; j++) {
      let n = n0 + j;
      if (n < u.N) ${storeExpr(outDtype, "m * u.N + n", "acc[i][j]")}
    }
  }
}
`;
}

/**
 * GEMV-style forward kernel for GPUs at M ≤ 8 (decode): a workgroup of 32 lanes × 8 columns; the 32 lanes of a
 * column stride over its K words (neighbouring lanes read neighbouring words and x runs: coalesced), keep TM row
 * accumulators, and are summed through workgroup memory at the end.
 */
export function nf4ForwardGemvWgsl(o: { dtype: Nf4ActDtype; outDtype: Nf4ActDtype; TM: number; code: ArrayLike<number> }): string {
  const { dtype, outDtype, TM } = o;
  const f16 = dtype === "f16" || outDtype === "f16";
  return /* wgsl */ `
${f16 ? "enable f16;" : ""}
${PARAMS}
@group(0) @binding(0) var<storage, read> A: array<vec4<${dtype}>>;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> S: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<${outDtype}>;
@group(0) @binding(4) var<uniform> u: Params;
${codeConst(o.code)}
var<workgroup> red: array<f32, ${TM * 256}>;
@compute @workgroup_size(32, 8, 1)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let n = (wg.y * u.pad + wg.x) * 8u + lid.y;   // u.pad = workgroups along x (2D fold)
  let nc = min(n, u.N - 1u);
  var acc: array<f32, ${TM}>;
  var rowA: array<u32, ${TM}>;
  for (var i = 0u; i < ${TM}u; i++) { rowA[i] = min(i, u.M - 1u) * (u.K / 4u); }
  for (var kw = lid.x; kw < u.KW; kw += 32u) {
    let w = W[nc * u.KW + kw];
    let s = S[(nc * u.K + kw * 8u) >> u.bsShift];
    ${decodeWord("w", "c0", "c1")}
    for (var i = 0u; i < ${TM}u; i++) {
      let a0 = vec4<f32>(A[rowA[i] + 2u * kw]);
      let a1 = vec4<f32>(A[rowA[i] + 2u * kw + 1u]);
      acc[i] += s * (dot(a0, c0) + dot(a1, c1));
    }
  }
  for (var i = 0u; i < ${TM}u; i++) { red[i * 256u + lid.y * 32u + lid.x] = acc[i]; }
  workgroupBarrier();
  if (lid.x < ${TM}u && lid.x < u.M && n < u.N) {
    var v = 0.0;
    for (var l = 0u; l < 32u; l++) { v += red[lid.x * 256u + lid.y * 32u + l]; }
    ${storeExpr(outDtype, "lid.x * u.N + n", "v")}
  }
}
`;
}

/** Direct inputGrad kernel: each invocation TM rows × the 8 output columns of one W word, walking n = 0..N−1. */
export function nf4InputGradDirectWgsl(o: { dtype: Nf4ActDtype; outDtype: Nf4ActDtype; TM: number; WX: number; WY: number; code: ArrayLike<number> }): string {
  const { dtype, outDtype, TM, WX, WY } = o;
  const f16 = dtype === "f16" || outDtype === "f16";
  return /* wgsl */ `
${f16 ? "enable f16;" : ""}
${PARAMS}
@group(0) @binding(0) var<storage, read> A: array<${dtype}>;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> S: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<${outDtype}>;
@group(0) @binding(4) var<uniform> u: Params;
${codeConst(o.code)}
@compute @workgroup_size(${WX}, ${WY}, 1)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let kw = wg.x * ${WX}u + lid.x;
  let m0 = (wg.y * ${WY}u + lid.y) * ${TM}u;
  if (kw >= u.KW || m0 >= u.M) { return; }
  var acc0: array<vec4<f32>, ${TM}>;
  var acc1: array<vec4<f32>, ${TM}>;
  var rowA: array<u32, ${TM}>;
  for (var i = 0u; i < ${TM}u; i++) { rowA[i] = min(m0 + i, u.M - 1u) * u.N; }
  for (var n = 0u; n < u.N; n++) {
    let w = W[n * u.KW + kw];
    let s = S[(n * u.K + kw * 8u) >> u.bsShift];
    ${decodeWord("w", "d0", "d1")}
    let c0 = d0 * s;
    let c1 = d1 * s;
    for (var i = 0u; i < ${TM}u; i++) {
      let d = vec4<f32>(f32(A[rowA[i] + n]));
      acc0[i] = fma(d, c0, acc0[i]);
      acc1[i] = fma(d, c1, acc1[i]);
    }
  }
  for (var i = 0u; i < ${TM}u; i++) {
    let m = m0 + i;
    if (m >= u.M) { break; }
    let base = m * u.K + kw * 8u;
    for (var e = 0u; e < 4u; e++) {
      ${storeExpr(outDtype, "base + e", "acc0[i][e]")}
      ${storeExpr(outDtype, "base + 4u + e", "acc1[i][e]")}
    }
  }
}
`;
}

const TWX = 16;
const TWY = 16;
const TBN = 64; // output columns per workgroup tile
const TBK = 32; // contraction step

/**
 * Tiled kernel for both orientations: A (x or dy) staged as [BK][BM] f32, the W tile decoded — one u32 word per
 * invocation — into [BK][BN] f32, then the register-tile loop of matmul.ts. Contraction length L = K (forward) or
 * N (inputGrad); output width = N (forward) or K (inputGrad).
 */
export function nf4TiledWgsl(o: { mode: Nf4MatmulMode; dtype: Nf4ActDtype; outDtype: Nf4ActDtype; TM: number; code: ArrayLike<number> }): string {
  const { mode, dtype, outDtype, TM } = o;
  const BM = TM * TWY;
  const THREADS = TWX * TWY;
  const f16 = dtype === "f16" || outDtype === "f16";
  const fwd = mode === "forward";
  const aLoads = (BM * TBK) / THREADS;
  // One word per invocation: forward 64 rows × 4 words along k; inputGrad 32 rows (n) × 8 words along k.
  const bStage = fwd
    ? /* wgsl */ `
    {
      let nn = tid / 4u; let wq = tid % 4u;
      let gn = col0 + nn; let gk = k0 + wq * 8u;
      var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0);
      if (gn < u.N && gk < u.K) {
        let w = W[gn * u.KW + gk / 8u];
        let s = S[(gn * u.K + gk) >> u.bsShift];
        ${decodeWord("w", "d0", "d1")}
        c0 = d0 * s; c1 = d1 * s;
      }
      for (var e = 0u; e < 4u; e++) {
        Bs[(wq * 8u + e) * ${TBN}u + nn] = c0[e];
        Bs[(wq * 8u + 4u + e) * ${TBN}u + nn] = c1[e];
      }
    }`
    : /* wgsl */ `
    {
      let cc = tid / 8u; let wq = tid % 8u;
      let gc = k0 + cc; let gk = col0 + wq * 8u;
      var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0);
      if (gc < u.N && gk < u.K) {
        let w = W[gc * u.KW + gk / 8u];
        let s = S[(gc * u.K + gk) >> u.bsShift];
        ${decodeWord("w", "d0", "d1")}
        c0 = d0 * s; c1 = d1 * s;
      }
      for (var e = 0u; e < 4u; e++) {
        Bs[cc * ${TBN}u + wq * 8u + e] = c0[e];
        Bs[cc * ${TBN}u + wq * 8u + 4u + e] = c1[e];
      }
    }`;
  const L = fwd ? "u.K" : "u.N";
  const OW = fwd ? "u.N" : "u.K";
  return /* wgsl */ `
${f16 ? "enable f16;" : ""}
${PARAMS}
@group(0) @binding(0) var<storage, read> A: array<${dtype}>;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> S: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<${outDtype}>;
@group(0) @binding(4) var<uniform> u: Params;
${codeConst(o.code)}
var<workgroup> As: array<f32, ${TBK * BM}>;
var<workgroup> Bs: array<f32, ${TBK * TBN}>;
@compute @workgroup_size(${TWX}, ${TWY}, 1)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) tid: u32) {
  let row0 = wg.y * ${BM}u;
  let col0 = wg.x * ${TBN}u;
  let L = ${L};
  var acc: array<vec4<f32>, ${TM}>;
  for (var k0 = 0u; k0 < L; k0 += ${TBK}u) {
    for (var i = 0u; i < ${aLoads}u; i++) {
      let idx = tid + i * ${THREADS}u;
      let kk = idx % ${TBK}u; let mm = idx / ${TBK}u;
      let gm = row0 + mm; let gk = k0 + kk;
      var v = 0.0;
      if (gm < u.M && gk < L) { v = f32(A[gm * L + gk]); }
      As[kk * ${BM}u + mm] = v;
    }
    ${bStage}
    workgroupBarrier();
    for (var k = 0u; k < ${TBK}u; k++) {
      let bb = k * ${TBN}u + lid.x;
      let bv = vec4<f32>(Bs[bb], Bs[bb + ${TWX}u], Bs[bb + ${2 * TWX}u], Bs[bb + ${3 * TWX}u]);
      let ab = k * ${BM}u + lid.y * ${TM}u;
      for (var r = 0u; r < ${TM}u; r++) { acc[r] = fma(vec4<f32>(As[ab + r]), bv, acc[r]); }
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < ${TM}u; r++) {
    let gm = row0 + lid.y * ${TM}u + r;
    if (gm >= u.M) { break; }
    for (var j = 0u; j < 4u; j++) {
      let gn = col0 + lid.x + j * ${TWX}u;
      if (gn < ${OW}) ${storeExpr(outDtype, `gm * ${OW} + gn`, "acc[r][j]")}
    }
  }
}
`;
}

/** Register tile of the direct kernels by M. */
function directTile(M: number): { TM: number; TN: number; WX: number; WY: number } {
  if (M <= 1) return { TM: 1, TN: 4, WX: 16, WY: 1 };
  if (M <= 4) return { TM: 4, TN: 4, WX: 64, WY: 1 };
  return { TM: 8, TN: 4, WX: 8, WY: 8 };
}

function codeKey(code: Float32Array): string {
  return code === NF4_CODE ? "nf4" : Array.from(code, (v) => f32Bits(v).toString(16)).join("");
}

/** Record the fused NF4 matmul (see the header for both orientations). */
export function nf4Matmul(gpu: Gpu, args: Nf4MatmulArgs): void {
  const { w, M, mode } = args;
  const { N, K } = w;
  const dtype = args.dtype ?? "f32";
  const outDtype = args.outDtype ?? "f32";
  if (mode !== "forward" && mode !== "inputGrad") throw new Error(`nf4Matmul: mode must be "forward" or "inputGrad" (got ${String(mode)})`);
  if (!(M > 0) || !Number.isInteger(M)) throw new Error(`nf4Matmul: M must be a positive integer (got ${M})`);
  if (K % 8 !== 0) throw new Error(`nf4Matmul: K=${K} must be a multiple of 8 (rows of W must start on a packed word)`);
  if (w.blocksize % 8 !== 0) throw new Error(`nf4Matmul: blocksize ${w.blocksize} must be a multiple of 8`);
  if ((dtype === "f16" || outDtype === "f16") && !gpu.hasF16) throw new Error("nf4Matmul: f16 operands need shader-f16, which this adapter lacks; use f32");
  if (M * Math.max(N, K) >= 2 ** 32) throw new Error(`nf4Matmul: M·max(N,K) = ${M * Math.max(N, K)} exceeds u32 indexing`);
  const esz = (d: Nf4ActDtype) => (d === "f16" ? 2 : 4);
  const aCols = mode === "forward" ? K : N;
  const oCols = mode === "forward" ? N : K;
  if (args.a.bytes < M * aCols * esz(dtype)) throw new Error(`nf4Matmul(${mode}): input holds ${args.a.bytes} bytes, needs ${M * aCols * esz(dtype)} for [${M}, ${aCols}] ${dtype}`);
  if (args.out.bytes < M * oCols * esz(outDtype)) throw new Error(`nf4Matmul(${mode}): out holds ${args.out.bytes} bytes, needs ${M * oCols * esz(outDtype)} for [${M}, ${oCols}] ${outDtype}`);
  if (w.packed.bytes < Math.ceil((N * K) / 8) * 4) throw new Error(`nf4Matmul: packed weight holds ${w.packed.bytes} bytes, needs ${Math.ceil((N * K) / 8) * 4} for [${N}, ${K}]`);
  if (w.scales.bytes < w.blocks * 4) throw new Error(`nf4Matmul: scales hold ${w.scales.bytes} bytes, needs ${w.blocks * 4}`);

  const params = new ArrayBuffer(32);
  new Uint32Array(params).set([M, N, K, K / 8, log2Int(w.blocksize), 0, args.accumulate ? 1 : 0, 0]);
  new Float32Array(params)[5] = args.alpha ?? 1;
  const lanes = broadcastWidth(gpu);
  // Every M on CPU adapters (not only decode-sized ones): a row's result must not depend on how many rows share the
  // call (continuous batching reproduces the static batch bit for bit), and each kernel has its own summation order.
  const cpuPath = lanes && mode === "forward" ? "broadcast" : "direct";
  const path = args.path ?? (isCpuAdapter(gpu) ? cpuPath : M <= 8 ? (mode === "forward" ? "gemv" : "direct") : "tiled");
  if (path === "gemv" && (mode !== "forward" || M > 8)) throw new Error(`nf4Matmul: the "gemv" kernel is forward-only with M ≤ 8 (got ${mode}, M=${M})`);
  if (path === "broadcast" && (mode !== "forward" || !lanes)) throw new Error(`nf4Matmul: the "broadcast" kernel is forward-only and needs the subgroups feature (got ${mode}, subgroups ${gpu.hasSubgroups})`);
  const sfx = `${dtype}${outDtype === "f16" ? "_oh" : ""}_${codeKey(w.code)}`;
  const bufs = [args.a, w.packed, w.scales, args.out];
  if (path === "broadcast") {
    const cfg = gemvCpuConfig(M, lanes!, w.blocksize, K);
    const label = `nf4_fwd_bcast_${sfx}_tm${cfg.TM}_tn${cfg.TN}_w${cfg.W}${cfg.groupScale ? "_g" : ""}`;
    const p = gemvCpuParams({ M, N, K, bsShift: log2Int(w.blocksize), alpha: args.alpha, accumulate: args.accumulate });
    gpu.dispatch(gpu.kernel(label, gemvCpuText({ dtype, outDtype, cfg, code: w.code })), bufs, [Math.ceil(N / (cfg.W * cfg.TN)), Math.ceil(M / cfg.TM)], p);
    return;
  }
  if (path === "gemv") {
    const TM = M <= 1 ? 1 : M <= 4 ? 4 : 8;
    const [gx, gy] = foldGrid(N, 8, gpu);
    new Uint32Array(params)[7] = gx;
    gpu.dispatch(gpu.kernel(`nf4_fwd_gemv_${sfx}_tm${TM}`, nf4ForwardGemvWgsl({ dtype, outDtype, TM, code: w.code })), bufs, [gx, gy], params);
    return;
  }
  if (path === "direct") {
    const cfg = directTile(M);
    if (mode === "forward") {
      const k = gpu.kernel(`nf4_fwd_direct_${sfx}_tm${cfg.TM}`, nf4ForwardDirectWgsl({ dtype, outDtype, ...cfg, code: w.code }));
      gpu.dispatch(k, bufs, [Math.ceil(N / (cfg.TN * cfg.WX)), Math.ceil(M / (cfg.TM * cfg.WY))], params);
    } else {
      const k = gpu.kernel(`nf4_igrad_direct_${sfx}_tm${cfg.TM}`, nf4InputGradDirectWgsl({ dtype, outDtype, TM: cfg.TM, WX: cfg.WX, WY: cfg.WY, code: w.code }));
      gpu.dispatch(k, bufs, [Math.ceil(K / 8 / cfg.WX), Math.ceil(M / (cfg.TM * cfg.WY))], params);
    }
    return;
  }
  const TM = M <= 32 ? 2 : 4;
  const k = gpu.kernel(`nf4_${mode === "forward" ? "fwd" : "igrad"}_tiled_${sfx}_tm${TM}`, nf4TiledWgsl({ mode, dtype, outDtype, TM, code: w.code }));
  gpu.dispatch(k, bufs, [Math.ceil(oCols / TBN), Math.ceil(M / (TM * TWY))], params);
}

// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════
// Host form of a weight (what a checkpoint holds) to and from the GPU; the bitsandbytes tensor format that stores
// it is read and written by the model loader (@nr/model bnb.ts)
// ═════════════════════════════════════════════════════════════════════════════════════════════════════════════

/** The host form of one bitsandbytes NF4 linear weight. */
export interface Nf4HostState {
  /** [N, K]. */
  shape: [number, number];
  blocksize: number;
  /** The compute dtype recorded by bnb (torch name without "torch.", e.g. "bfloat16"). */
  dtype: string;
  /** ceil(N·K/2) bytes, even element in the high nibble. */
  packed: Uint8Array;
  quantMap: Float32Array;
  /** Non-nested: f32 absmax per block. */
  absmax: Float32Array | null;
  /** Nested (double-quantised) statistics. */
  nested: { qabsmax: Uint8Array; absmax2: Float32Array; quantMap: Float32Array; blocksize: number; offset: number; dtype: string } | null;
}

/** Per-block scales of a host state, exactly as bnb dequantises them (f32). */
export function nf4HostScales(s: Nf4HostState): Float32Array {
  if (!s.nested) return Float32Array.from(s.absmax!);
  const { qabsmax, absmax2, quantMap, blocksize, offset } = s.nested;
  const out = new Float32Array(qabsmax.length);
  for (let i = 0; i < out.length; i++) out[i] = f32(f32(quantMap[qabsmax[i]] * absmax2[Math.floor(i / blocksize)]) + offset);
  return out;
}

const TORCH_DTYPE: Record<Nf4SourceDtype, string> = { f32: "float32", f16: "float16", bf16: "bfloat16" };
function sourceDtype(torchName: string): Nf4SourceDtype {
  return torchName === "float16" ? "f16" : torchName === "bfloat16" ? "bf16" : "f32";
}

/** Upload a host state: packed codes, the exact per-block scales, and (nested) the double-quant bytes. */
export function uploadNf4(gpu: Gpu, s: Nf4HostState, label = "nf4"): Nf4Weight {
  const [N, K] = s.shape;
  const blocks = Math.ceil((N * K) / s.blocksize);
  const words = Math.ceil((N * K) / 8);
  const packedBytes = new Uint8Array(words * 4);
  packedBytes.set(s.packed.subarray(0, Math.min(s.packed.length, words * 4)));
  const packed = gpu.upload(packedBytes, `${label}.packed`);
  const scales = gpu.upload(nf4HostScales(s), `${label}.scales`);
  const base = { N, K, blocksize: s.blocksize, blocks, dtype: sourceDtype(s.dtype), code: Float32Array.from(s.quantMap), packed, scales };
  if (!s.nested) return { ...base, double: null };
  const qb = new Uint8Array(Math.ceil(blocks / 4) * 4);
  qb.set(s.nested.qabsmax.subarray(0, blocks));
  return {
    ...base,
    double: {
      qabsmax: gpu.upload(qb, `${label}.qabsmax`),
      absmax2: gpu.upload(s.nested.absmax2, `${label}.absmax2`),
      offset: gpu.upload(Float32Array.of(s.nested.offset), `${label}.offset`),
      map: Float32Array.from(s.nested.quantMap),
      blocksize: s.nested.blocksize,
    },
  };
}

/** Read a GPU NF4 weight back into its host (checkpoint) form. */
export async function downloadNf4(gpu: Gpu, w: Nf4Weight): Promise<Nf4HostState> {
  const n = w.N * w.K;
  const packed = new Uint8Array(await gpu.read(w.packed, Math.ceil(n / 8) * 4)).slice(0, Math.ceil(n / 2));
  const base = { shape: [w.N, w.K] as [number, number], blocksize: w.blocksize, dtype: TORCH_DTYPE[w.dtype], packed, quantMap: Float32Array.from(w.code) };
  if (!w.double) return { ...base, absmax: await gpu.readF32(w.scales, w.blocks), nested: null };
  const d = w.double;
  const groups = Math.ceil(w.blocks / d.blocksize);
  const qabsmax = new Uint8Array(await gpu.read(d.qabsmax, Math.ceil(w.blocks / 4) * 4)).slice(0, w.blocks);
  const absmax2 = await gpu.readF32(d.absmax2, groups);
  const offset = (await gpu.readF32(d.offset, 1))[0];
  return { ...base, absmax: null, nested: { qabsmax, absmax2, quantMap: Float32Array.from(d.map), blocksize: d.blocksize, offset, dtype: "float32" } };
}
