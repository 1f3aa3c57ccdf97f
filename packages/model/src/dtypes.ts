// Float format conversions used by the safetensors reader/writer and the ONNX exporter.
//
//   bf16 → f32   exact (the bf16 bits are the top half of the f32 bits)
//   f16  → f32   exact (table of all 65 536 values, built on first use)
//   f32  → bf16  round to nearest, ties to even; NaN stays NaN (quiet), ±Inf stays ±Inf
//   f32  → f16   round to nearest, ties to even, with f16 subnormals; overflow → ±Inf; NaN stays NaN
//
// A float64 input to the f32 → x conversions is first rounded to f32 (so f64 → f16 rounds twice; the storage
// conversions of this package always start from f32 values).

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** f32 bits → f16 bits, round to nearest even. */
function f32BitsToF16Bits(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return mant !== 0 ? sign | 0x7e00 | (mant >>> 13) : sign | 0x7c00;
  const e = exp - 112; // exponent re-biased for f16 (127 − 15)
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // f16 subnormal (or zero): value = m · 2^(exp−150), unit 2^−24 ⇒ h = m >> (14 − e)
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) !== 0)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++; // a carry into the exponent is correct (up to Inf)
  return sign | h;
}

/** f32 bits → bf16 bits, round to nearest even. */
function f32BitsToBf16Bits(b: number): number {
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** One number → f16 bits (the number is first rounded to f32). */
export function toF16Bits(x: number): number {
  scratchF32[0] = x;
  return f32BitsToF16Bits(scratchU32[0]);
}

/** One number → bf16 bits (the number is first rounded to f32). */
export function toBf16Bits(x: number): number {
  scratchF32[0] = x;
  return f32BitsToBf16Bits(scratchU32[0]);
}

let f16Table: Float32Array | null = null;

function buildF16Table(): Float32Array {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) t[h] = sign * mant * 2 ** -24;
    else if (exp === 0x1f) t[h] = mant ? NaN : sign * Infinity;
    else t[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  return t;
}

/** f16 bits → number (exact). */
export function f16BitsToNumber(h: number): number {
  f16Table ??= buildF16Table();
  return f16Table[h & 0xffff];
}

/** bf16 bits → number (exact). */
export function bf16BitsToNumber(h: number): number {
  scratchU32[0] = (h & 0xffff) << 16;
  return scratchF32[0];
}

/** Rounds a number to the nearest f16 value (as a number). */
export function roundToF16(x: number): number {
  return f16BitsToNumber(toF16Bits(x));
}

/** Rounds a number to the nearest bf16 value (as a number). */
export function roundToBf16(x: number): number {
  return bf16BitsToNumber(toBf16Bits(x));
}

/** bf16 bits → f32 (exact). `dst` may be given (same length). */
export function bf16ToF32(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
  return dst;
}

/** f16 bits → f32 (exact). */
export function f16ToF32(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const t = (f16Table ??= buildF16Table());
  for (let i = 0; i < src.length; i++) dst[i] = t[src[i]];
  return dst;
}

/** f32 → f16 bits, round to nearest even. */
export function f32ToF16(src: Float32Array, dst = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) dst[i] = f32BitsToF16Bits(bits[i]);
  return dst;
}

/** f32 → bf16 bits, round to nearest even. */
export function f32ToBf16(src: Float32Array, dst = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) dst[i] = f32BitsToBf16Bits(bits[i]);
  return dst;
}

/** bf16 bits → f16 bits: exact widening to f32, then one round-to-nearest-even step. */
export function bf16ToF16(src: Uint16Array, dst = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) dst[i] = f32BitsToF16Bits(src[i] << 16);
  return dst;
}

/** f64 → f32 by rounding each value (round to nearest even, as Float32Array stores). */
export function f64ToF32(src: Float64Array, dst = new Float32Array(src.length)): Float32Array {
  dst.set(src);
  return dst;
}
