/**
 * Complex double arithmetic for the randomised numeric identity test (principal branches).
 * Real inputs inside a real function's domain take the real Math.* path, so real answers keep full precision.
 */
export interface C {
  re: number;
  im: number;
}

export const c = (re: number, im = 0): C => ({ re, im });
export const NAN: C = { re: NaN, im: NaN };
export const isFiniteC = (z: C): boolean => Number.isFinite(z.re) && Number.isFinite(z.im);
export const absC = (z: C): number => Math.hypot(z.re, z.im);

export const add = (a: C, b: C): C => ({ re: a.re + b.re, im: a.im + b.im });
export const sub = (a: C, b: C): C => ({ re: a.re - b.re, im: a.im - b.im });
export const neg = (a: C): C => ({ re: -a.re, im: -a.im });
export const mul = (a: C, b: C): C =>
  a.im === 0 && b.im === 0 ? { re: a.re * b.re, im: 0 } : { re: a.re * b.re - a.im * b.im, im: a.re * b.im + a.im * b.re };

export function div(a: C, b: C): C {
  if (b.im === 0) {
    if (b.re === 0) return NAN;
    return { re: a.re / b.re, im: a.im / b.re };
  }
  // Smith's algorithm avoids overflow in |b|^2.
  if (Math.abs(b.re) >= Math.abs(b.im)) {
    const r = b.im / b.re;
    const den = b.re + b.im * r;
    return { re: (a.re + a.im * r) / den, im: (a.im - a.re * r) / den };
  }
  const r = b.re / b.im;
  const den = b.re * r + b.im;
  return { re: (a.re * r + a.im) / den, im: (a.im * r - a.re) / den };
}

export function exp(z: C): C {
  const m = Math.exp(z.re);
  if (z.im === 0) return { re: m, im: 0 };
  return { re: m * Math.cos(z.im), im: m * Math.sin(z.im) };
}

export function log(z: C): C {
  if (z.im === 0 && z.re > 0) return { re: Math.log(z.re), im: 0 };
  if (z.re === 0 && z.im === 0) return { re: -Infinity, im: 0 };
  // a signed zero from real arithmetic (-0) must not select the lower branch: ln(-1) = iπ
  return { re: Math.log(absC(z)), im: Math.atan2(z.im === 0 ? 0 : z.im, z.re) };
}

export function sqrt(z: C): C {
  if (z.im === 0) return z.re >= 0 ? { re: Math.sqrt(z.re), im: 0 } : { re: 0, im: Math.sqrt(-z.re) };
  const r = absC(z);
  const re = Math.sqrt((r + z.re) / 2);
  const im = Math.sqrt((r - z.re) / 2);
  return { re, im: z.im < 0 ? -im : im };
}

/** Real cube root for real input (so `\sqrt[3]{-8} = -2`), principal root otherwise. */
export function cbrt(z: C): C {
  if (z.im === 0) return { re: Math.cbrt(z.re), im: 0 };
  return pow(z, c(1 / 3));
}

/** n-th root: real for real input when n is an odd integer, principal otherwise. */
export function nthRoot(z: C, n: C): C {
  if (z.im === 0 && n.im === 0 && Number.isInteger(n.re) && n.re !== 0) {
    const k = n.re;
    if (z.re >= 0) return { re: z.re ** (1 / k), im: 0 };
    if (Math.abs(k) % 2 === 1) return { re: -((-z.re) ** (1 / k)), im: 0 };
  }
  return pow(z, div(c(1), n));
}

export function pow(a: C, b: C): C {
  if (b.im === 0) {
    if (a.im === 0) {
      if (a.re >= 0 || Number.isInteger(b.re)) return { re: Math.pow(a.re, b.re), im: 0 };
    } else if (Number.isInteger(b.re) && Math.abs(b.re) <= 64) {
      let r = c(1);
      let base = a;
      let k = Math.abs(b.re);
      while (k > 0) {
        if (k & 1) r = mul(r, base);
        base = mul(base, base);
        k >>= 1;
      }
      return b.re < 0 ? div(c(1), r) : r;
    }
  }
  if (a.re === 0 && a.im === 0) {
    if (b.re > 0) return c(0);
    return NAN;
  }
  return exp(mul(b, log(a)));
}

const I: C = { re: 0, im: 1 };
const ONE: C = { re: 1, im: 0 };

export function sin(z: C): C {
  if (z.im === 0) return { re: Math.sin(z.re), im: 0 };
  return { re: Math.sin(z.re) * Math.cosh(z.im), im: Math.cos(z.re) * Math.sinh(z.im) };
}
export function cos(z: C): C {
  if (z.im === 0) return { re: Math.cos(z.re), im: 0 };
  return { re: Math.cos(z.re) * Math.cosh(z.im), im: -Math.sin(z.re) * Math.sinh(z.im) };
}
export const tan = (z: C): C => (z.im === 0 ? c(Math.tan(z.re)) : div(sin(z), cos(z)));
export const sec = (z: C): C => div(ONE, cos(z));
export const csc = (z: C): C => div(ONE, sin(z));
export const cot = (z: C): C => div(cos(z), sin(z));
export function sinh(z: C): C {
  if (z.im === 0) return c(Math.sinh(z.re));
  return { re: Math.sinh(z.re) * Math.cos(z.im), im: Math.cosh(z.re) * Math.sin(z.im) };
}
export function cosh(z: C): C {
  if (z.im === 0) return c(Math.cosh(z.re));
  return { re: Math.cosh(z.re) * Math.cos(z.im), im: Math.sinh(z.re) * Math.sin(z.im) };
}
export const tanh = (z: C): C => (z.im === 0 ? c(Math.tanh(z.re)) : div(sinh(z), cosh(z)));
export const sech = (z: C): C => div(ONE, cosh(z));
export const csch = (z: C): C => div(ONE, sinh(z));
export const coth = (z: C): C => div(cosh(z), sinh(z));

export function asin(z: C): C {
  if (z.im === 0 && Math.abs(z.re) <= 1) return c(Math.asin(z.re));
  // -i log(iz + sqrt(1 - z^2))
  const w = log(add(mul(I, z), sqrt(sub(ONE, mul(z, z)))));
  return { re: w.im, im: -w.re };
}
export function acos(z: C): C {
  if (z.im === 0 && Math.abs(z.re) <= 1) return c(Math.acos(z.re));
  return sub(c(Math.PI / 2), asin(z));
}
export function atan(z: C): C {
  if (z.im === 0) return c(Math.atan(z.re));
  // (i/2) log((i + z)/(i - z))
  const w = log(div(add(I, z), sub(I, z)));
  return { re: -w.im / 2, im: w.re / 2 };
}
export const acot = (z: C): C => (z.im === 0 && z.re !== 0 ? c(Math.atan(1 / z.re)) : atan(div(ONE, z)));
export const asec = (z: C): C => acos(div(ONE, z));
export const acsc = (z: C): C => asin(div(ONE, z));
export function asinh(z: C): C {
  if (z.im === 0) return c(Math.asinh(z.re));
  return log(add(z, sqrt(add(mul(z, z), ONE))));
}
export function acosh(z: C): C {
  if (z.im === 0 && z.re >= 1) return c(Math.acosh(z.re));
  return log(add(z, mul(sqrt(add(z, ONE)), sqrt(sub(z, ONE)))));
}
export function atanh(z: C): C {
  if (z.im === 0 && Math.abs(z.re) < 1) return c(Math.atanh(z.re));
  const w = log(div(add(ONE, z), sub(ONE, z)));
  return { re: w.re / 2, im: w.im / 2 };
}

// Lanczos approximation (g = 7, n = 9), accurate to ~1e-15 for real arguments.
const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
  12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
];

/** Gamma function for real arguments; NaN at poles and for complex input. */
export function gammaReal(x: number): number {
  if (!Number.isFinite(x)) return x === Infinity ? Infinity : NaN;
  if (Number.isInteger(x)) {
    if (x <= 0) return NaN;
    if (x > 171) return Infinity;
    let r = 1;
    for (let k = 2; k < x; k++) r *= k;
    return r;
  }
  if (x < 0.5) return Math.PI / (Math.sin(Math.PI * x) * gammaReal(1 - x));
  if (x > 171.6) return Infinity;
  const xm = x - 1;
  let a = LANCZOS[0];
  const t = xm + 7.5;
  for (let i = 1; i < 9; i++) a += LANCZOS[i] / (xm + i);
  return Math.sqrt(2 * Math.PI) * Math.pow(t, xm + 0.5) * Math.exp(-t) * a;
}

export const gamma = (z: C): C => (z.im === 0 ? c(gammaReal(z.re)) : NAN);
