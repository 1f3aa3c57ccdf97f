import { describe, expect, it } from "vitest";
import { bf16BitsToNumber, bf16ToF16, bf16ToF32, f16BitsToNumber, f16ToF32, f32ToBf16, f32ToF16, toBf16Bits, toF16Bits } from "./dtypes.js";
import { Rng } from "./generate.js";

/** Independent decoding through DataView: bf16 bits are the top half of an f32. */
function bf16ViaDataView(h: number): number {
  const dv = new DataView(new ArrayBuffer(4));
  dv.setUint32(0, h << 16);
  return dv.getFloat32(0);
}

/**
 * Nearest-even check: |x − v(h)| is minimal among the neighbours h ± 1, ties broken towards an even mantissa.
 * Returns a description of the failure, or null.
 */
function nearestEvenFailure(x: number, h: number, decode: (h: number) => number, maxFinite: number): string | null {
  const v = decode(h);
  if (Number.isNaN(x)) return Number.isNaN(v) ? null : `${x} → ${v}`;
  if (Math.abs(x) >= maxFinite) return Number.isFinite(v) ? `${x} should overflow, got ${v}` : null;
  if (!Number.isFinite(v)) return `${x} → ${v}`;
  const err = Math.abs(x - v);
  for (const n of [h - 1, h + 1]) {
    if (n < 0 || n > 0xffff || ((n ^ h) & 0x8000) !== 0) continue; // stay on the same sign
    const w = decode(n);
    if (!Number.isFinite(w)) continue;
    const e = Math.abs(x - w);
    if (e < err) return `${x} → ${v}, but ${w} is nearer`;
    if (e === err && (h & 1) !== 0) return `${x} → ${v}: tie not broken to even`;
  }
  return null;
}

describe("float conversions", () => {
  it("bf16 → f32 is exact for all 65 536 bit patterns", () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const out = bf16ToF32(all);
    const bad: number[] = [];
    for (let h = 0; h < 65536; h++) {
      const want = bf16ViaDataView(h);
      if (Number.isNaN(want) ? !Number.isNaN(out[h]) : !Object.is(out[h], want)) bad.push(h);
    }
    expect(bad).toEqual([]);
  });

  it("f16 decoding matches known values and round-trips through the encoder", () => {
    expect(f16BitsToNumber(0x3c00)).toBe(1);
    expect(f16BitsToNumber(0xc000)).toBe(-2);
    expect(f16BitsToNumber(0x7bff)).toBe(65504);
    expect(f16BitsToNumber(0x0001)).toBe(2 ** -24);
    expect(f16BitsToNumber(0x0400)).toBe(2 ** -14);
    expect(f16BitsToNumber(0x7c00)).toBe(Infinity);
    expect(Number.isNaN(f16BitsToNumber(0x7e00))).toBe(true);
    expect(Object.is(f16BitsToNumber(0x8000), -0)).toBe(true);
    const all = f16ToF32(Uint16Array.from({ length: 65536 }, (_, i) => i));
    const bad: number[] = [];
    for (let h = 0; h < 65536; h++) if (!Number.isNaN(all[h]) && toF16Bits(all[h]) !== h) bad.push(h);
    expect(bad).toEqual([]);
  });

  it("f32 → f16 rounds to nearest even, with subnormals, overflow and NaN", () => {
    // boundaries
    expect(toF16Bits(65504)).toBe(0x7bff);
    expect(toF16Bits(65519.99)).toBe(0x7bff);
    expect(toF16Bits(65520)).toBe(0x7c00); // halfway to 2^16: ties to even → Inf
    expect(toF16Bits(-1e6)).toBe(0xfc00);
    expect(toF16Bits(2 ** -25)).toBe(0); // half of the smallest subnormal: ties to even → 0
    expect(toF16Bits(2 ** -25 * 1.0001)).toBe(1);
    expect(toF16Bits(3 * 2 ** -25)).toBe(2); // 1.5 units → 2 (even)
    expect(toF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie between 1 and 1+2^-10 → 1 (even)
    expect(toF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → 1+2^-9 (even)
    expect(toF16Bits(NaN) & 0x7c00).toBe(0x7c00);
    expect(toF16Bits(NaN) & 0x3ff).not.toBe(0);
    // random values across the whole f16 range (normal and subnormal)
    const rng = new Rng("f16");
    const xs = new Float32Array(20000);
    for (let i = 0; i < xs.length; i++) xs[i] = (rng.uniform() < 0.5 ? -1 : 1) * 2 ** (rng.uniform() * 42 - 26) * (1 + rng.uniform());
    const hs = f32ToF16(xs);
    const bad: string[] = [];
    for (let i = 0; i < xs.length; i++) {
      if (hs[i] !== toF16Bits(xs[i])) bad.push(`bulk/scalar differ at ${xs[i]}`);
      const f = nearestEvenFailure(xs[i], hs[i], f16BitsToNumber, 65520);
      if (f) bad.push(f);
    }
    expect(bad).toEqual([]);
  });

  it("f32 → bf16 rounds to nearest even; bf16 → f16 rounds once", () => {
    expect(toBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie → even (1)
    expect(toBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(toBf16Bits(Infinity)).toBe(0x7f80);
    expect(Number.isNaN(bf16BitsToNumber(toBf16Bits(NaN)))).toBe(true);
    const rng = new Rng("bf16");
    const xs = new Float32Array(20000);
    for (let i = 0; i < xs.length; i++) xs[i] = (rng.uniform() < 0.5 ? -1 : 1) * 2 ** (rng.uniform() * 200 - 100) * (1 + rng.uniform());
    const hs = f32ToBf16(xs);
    const bad: string[] = [];
    for (let i = 0; i < xs.length; i++) {
      const f = nearestEvenFailure(xs[i], hs[i], bf16BitsToNumber, Infinity);
      if (f) bad.push(f);
    }
    // bf16 → f16 equals f16 rounding of the exact bf16 value
    const f16 = bf16ToF16(hs);
    for (let i = 0; i < hs.length; i++) if (f16[i] !== toF16Bits(bf16BitsToNumber(hs[i]))) bad.push(`bf16→f16 at ${hs[i]}`);
    expect(bad).toEqual([]);
  });
});
