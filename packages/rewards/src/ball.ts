/**
 * Certified numeric evaluation: every value is a ball (a complex midpoint and a radius) that is guaranteed to
 * contain the true value of the expression. The radius grows with the input errors (through bounds on each
 * function's derivative over the ball) and with the rounding of each double operation, so `\sin(10^{20})` (whose
 * argument is only known to about ±10^4) comes out as "somewhere in [-1, 1]" instead of one arbitrary double.
 *
 * A ball that cannot be bounded (overflow, a possible division by zero, a branch cut or a jump inside the ball)
 * is `unknown` with the reason; the comparison then says "undecidable", which never counts as equal.
 */
import type { Node } from "./ast.js";
import { gammaReal } from "./complex.js";
import { bigOperatorRange } from "./evaluate.js";
import type { Budget } from "./limits.js";

export interface Ball {
  re: number;
  im: number;
  /** Upper bound on |true value − (re + i·im)|; Infinity when unknown. */
  rad: number;
  /** The true value is known to be real (then im is 0 and rad bounds the real error). */
  real: boolean;
  /** Why the value is unknown (rad Infinity). */
  why?: string;
}

/** Twice the unit roundoff: a generous bound on the relative error of one correctly rounded operation. */
const EPS = 2 ** -52;
/** Absolute error floor of a computed value: covers underflow to zero and subnormal rounding. */
const TINY = 1e-300;

export const unknown = (why: string): Ball => ({ re: NaN, im: NaN, rad: Infinity, real: false, why });
export const isKnown = (b: Ball): boolean => Number.isFinite(b.rad) && Number.isFinite(b.re) && Number.isFinite(b.im);
export const exactBall = (re: number, im = 0): Ball => ({ re, im, rad: 0, real: im === 0 });
const mag = (b: Ball): number => Math.hypot(b.re, b.im);

/** A computed value: its propagated radius plus the rounding of the operation (`ulps` relative to `scale`). */
function computed(re: number, im: number, rad: number, real: boolean, scale: number, ulps = 2): Ball {
  if (!Number.isFinite(re) || !Number.isFinite(im)) return unknown("out of double range");
  const r = rad + ulps * EPS * scale + TINY;
  if (!Number.isFinite(r)) return unknown("error bound out of double range");
  return { re, im: real ? 0 : im, rad: r, real };
}

const passUnknown = (...bs: Ball[]): Ball | null => {
  for (const b of bs) if (!isKnown(b)) return b;
  return null;
};

// ------------------------------------------------------------------ arithmetic

export function add(a: Ball, b: Ball): Ball {
  const u = passUnknown(a, b);
  if (u) return u;
  const re = a.re + b.re;
  const im = a.im + b.im;
  return computed(re, im, a.rad + b.rad, a.real && b.real, Math.abs(re) + Math.abs(im));
}

export const neg = (a: Ball): Ball => (isKnown(a) ? { ...a, re: -a.re, im: -a.im } : a);
export const sub = (a: Ball, b: Ball): Ball => add(a, neg(b));

export function mul(a: Ball, b: Ball): Ball {
  const u = passUnknown(a, b);
  if (u) return u;
  const re = a.re * b.re - a.im * b.im;
  const im = a.re * b.im + a.im * b.re;
  const rad = mag(a) * b.rad + mag(b) * a.rad + a.rad * b.rad;
  return computed(re, im, rad, a.real && b.real, 2 * (Math.abs(a.re) + Math.abs(a.im)) * (Math.abs(b.re) + Math.abs(b.im)));
}

export function div(a: Ball, b: Ball): Ball {
  const u = passUnknown(a, b);
  if (u) return u;
  const mb = mag(b);
  if (mb - b.rad <= 0) return unknown(b.rad === 0 ? "division by zero" : "division by a value that may be 0");
  let re: number;
  let im: number;
  if (b.im === 0) {
    re = a.re / b.re;
    im = a.im / b.re;
  } else if (Math.abs(b.re) >= Math.abs(b.im)) {
    // Smith's algorithm: no overflow in |b|²
    const r = b.im / b.re;
    const den = b.re + b.im * r;
    re = (a.re + a.im * r) / den;
    im = (a.im - a.re * r) / den;
  } else {
    const r = b.re / b.im;
    const den = b.re * r + b.im;
    re = (a.re * r + a.im) / den;
    im = (a.im * r - a.re) / den;
  }
  const q = Math.hypot(re, im);
  // |a'/b' − a/b| ≤ (|a'−a| + |a/b|·|b'−b|) / |b'|, and |b'| ≥ |b| − rad(b)
  const rad = (a.rad + q * b.rad) / (mb - b.rad);
  return computed(re, im, rad, a.real && b.real, (Math.abs(a.re) + Math.abs(a.im)) / mb, b.im === 0 ? 2 : 8);
}

// ------------------------------------------------------------------ elementary functions

export function exp(z: Ball): Ball {
  if (!isKnown(z)) return z;
  const m = Math.exp(z.re);
  // |e^{z+δ} − e^z| = |e^z|·|e^δ − 1| ≤ |e^z|·(e^|δ| − 1)
  const rad = m * Math.expm1(z.rad);
  if (z.real) return computed(m, 0, rad, true, m);
  return computed(m * Math.cos(z.im), m * Math.sin(z.im), rad, false, m, 4);
}

export function log(z: Ball): Ball {
  if (!isKnown(z)) return z;
  const mz = mag(z);
  if (mz - z.rad <= 0) return unknown("logarithm of a value that may be 0");
  const rad = z.rad / (mz - z.rad);
  if (z.real && z.re > 0) {
    const l = Math.log(z.re);
    return computed(l, 0, rad, true, Math.abs(l));
  }
  // principal branch: a ball that touches the negative real axis could sit on either side of the cut
  if (!z.real && z.re < 0 && Math.abs(z.im) <= z.rad && z.rad > 0) return unknown("logarithm across its branch cut");
  const l = Math.log(mz);
  return computed(l, Math.atan2(z.im === 0 ? 0 : z.im, z.re), rad, false, Math.abs(l) + Math.PI, 4);
}

export function sqrt(z: Ball): Ball {
  if (!isKnown(z)) return z;
  if (z.real) {
    const x = z.re;
    const lo = x - z.rad;
    const hi = x + z.rad;
    // |√a − √b| ≤ √|a − b| on the real line (also across 0, where one root is imaginary)
    const holder = Math.sqrt(z.rad);
    if (lo >= 0) {
      const r = Math.sqrt(x);
      const rad = lo > 0 ? Math.min(holder, z.rad / (r + Math.sqrt(lo))) : holder;
      return computed(r, 0, rad, true, r);
    }
    if (hi <= 0) {
      const r = Math.sqrt(-x);
      const rad = hi < 0 ? Math.min(holder, z.rad / (r + Math.sqrt(-hi))) : holder;
      return computed(0, r, rad, false, r);
    }
    return computed(x >= 0 ? Math.sqrt(x) : 0, x < 0 ? Math.sqrt(-x) : 0, holder + Math.sqrt(Math.abs(x)), false, 1);
  }
  if (z.re < 0 && Math.abs(z.im) <= z.rad && z.rad > 0) return unknown("square root across its branch cut");
  const mz = mag(z);
  if (mz - z.rad <= 0) return unknown("square root near 0 of a complex value");
  const re = Math.sqrt((mz + z.re) / 2);
  const imAbs = Math.sqrt((mz - z.re) / 2);
  // analytic on the ball: |f(w) − f(z)| ≤ sup|f'|·|w − z|, |f'(w)| = 1/(2√|w|)
  return computed(re, z.im < 0 ? -imAbs : imAbs, z.rad / (2 * Math.sqrt(mz - z.rad)), false, Math.sqrt(mz), 6);
}

function sinCos(z: Ball, which: "sin" | "cos"): Ball {
  if (!isKnown(z)) return z;
  if (z.real) {
    const v = which === "sin" ? Math.sin(z.re) : Math.cos(z.re);
    // 1-Lipschitz, and a value in [-1, 1] is never further than 2 from the true one
    return computed(v, 0, Math.min(z.rad, 2), true, Math.abs(v) + 1e-16);
  }
  const { re: x, im: y } = z;
  const re = which === "sin" ? Math.sin(x) * Math.cosh(y) : Math.cos(x) * Math.cosh(y);
  const im = which === "sin" ? Math.cos(x) * Math.sinh(y) : -Math.sin(x) * Math.sinh(y);
  const ch = Math.cosh(Math.abs(y) + z.rad);
  return computed(re, im, z.rad * ch, false, Math.cosh(y), 6);
}

export const sin = (z: Ball): Ball => sinCos(z, "sin");
export const cos = (z: Ball): Ball => sinCos(z, "cos");

const ONE = exactBall(1);
const I = exactBall(0, 1);
const HALF = exactBall(0.5);

/** The real-line derivative bound `lip` on the ball, when the ball is real and inside the real domain. */
function realLipschitz(z: Ball, f: (x: number) => number, lip: number): Ball {
  if (!Number.isFinite(lip)) return unknown("function too steep near the value");
  const v = f(z.re);
  return computed(v, 0, z.rad * lip, true, Math.abs(v), 4);
}

/** Complex formulas through balls (their own bounds carry the errors, including branch cuts). */
const asinC = (z: Ball): Ball => {
  const w = log(add(mul(I, z), sqrt(sub(ONE, mul(z, z)))));
  return mul(neg(I), w);
};
const atanC = (z: Ball): Ball => mul(mul(I, HALF), log(div(add(I, z), sub(I, z))));

export function asin(z: Ball): Ball {
  if (!isKnown(z)) return z;
  const t = Math.abs(z.re) + z.rad;
  if (z.real && t < 1) return realLipschitz(z, Math.asin, 1 / Math.sqrt(1 - t * t));
  if (z.real && z.rad === 0 && Math.abs(z.re) <= 1) return computed(Math.asin(z.re), 0, 0, true, Math.PI / 2, 4);
  return asinC(z);
}

export function acos(z: Ball): Ball {
  if (!isKnown(z)) return z;
  const t = Math.abs(z.re) + z.rad;
  if (z.real && t < 1) return realLipschitz(z, Math.acos, 1 / Math.sqrt(1 - t * t));
  if (z.real && z.rad === 0 && Math.abs(z.re) <= 1) return computed(Math.acos(z.re), 0, 0, true, Math.PI, 4);
  return sub(computed(Math.PI / 2, 0, 0, true, 2), asin(z));
}

export function atan(z: Ball): Ball {
  if (!isKnown(z)) return z;
  if (z.real) return realLipschitz(z, Math.atan, 1);
  return atanC(z);
}

export function sinh(z: Ball): Ball {
  if (!isKnown(z)) return z;
  if (z.real) return realLipschitz(z, Math.sinh, Math.cosh(Math.abs(z.re) + z.rad));
  return mul(HALF, sub(exp(z), exp(neg(z))));
}

export function cosh(z: Ball): Ball {
  if (!isKnown(z)) return z;
  if (z.real) return realLipschitz(z, Math.cosh, Math.cosh(Math.abs(z.re) + z.rad));
  return mul(HALF, add(exp(z), exp(neg(z))));
}

export function asinh(z: Ball): Ball {
  if (!isKnown(z)) return z;
  if (z.real) return realLipschitz(z, Math.asinh, 1);
  return log(add(z, sqrt(add(mul(z, z), ONE))));
}

export function acosh(z: Ball): Ball {
  if (!isKnown(z)) return z;
  const lo = z.re - z.rad;
  if (z.real && lo > 1) return realLipschitz(z, Math.acosh, 1 / Math.sqrt(lo * lo - 1));
  if (z.real && z.rad === 0 && z.re >= 1) return computed(Math.acosh(z.re), 0, 0, true, Math.acosh(z.re), 4);
  return log(add(z, mul(sqrt(add(z, ONE)), sqrt(sub(z, ONE)))));
}

export function atanh(z: Ball): Ball {
  if (!isKnown(z)) return z;
  const t = Math.abs(z.re) + z.rad;
  if (z.real && t < 1) return realLipschitz(z, Math.atanh, 1 / (1 - t * t));
  return mul(HALF, log(div(add(ONE, z), sub(ONE, z))));
}

/** Γ on the positive reals, where it is convex: the deviation over [m−r, m+r] is bounded by the endpoint deviations. */
export function gamma(z: Ball): Ball {
  if (!isKnown(z)) return z;
  if (!z.real) return unknown("gamma of a complex value");
  const m = z.re;
  const g = gammaReal(m);
  if (!Number.isFinite(g)) return unknown("gamma out of range or at a pole");
  let rad = 0;
  if (z.rad > 0) {
    if (m - z.rad <= 0) return unknown("gamma near its poles");
    const lo = gammaReal(m - z.rad);
    const hi = gammaReal(m + z.rad);
    rad = Math.max(Math.abs(hi - g), Math.abs(g - lo)) * (1 + 1e-12);
  }
  // Lanczos (≈1e-15 relative), the reflection formula for negative arguments, and the endpoint evaluations: 1e-11 relative
  return computed(g, 0, rad + 1e-11 * Math.abs(g), true, Math.abs(g));
}

/** x^(1/n) for an integer n ≥ 2 on a real ball, the real root for odd n (∛−8 = −2). */
function realRoot(z: Ball, n: number): Ball {
  const x = z.re;
  if (x - z.rad < 0 && n % 2 === 0) return pow(z, div(ONE, exactBall(n)), true);
  const r = Math.sign(x) * Math.abs(x) ** (1 / n);
  const lo = Math.abs(x) - z.rad;
  // same sign: derivative bound; across 0: |a^(1/n) − b^(1/n)| ≤ 2·|a − b|^(1/n)
  const rad = lo > 0 ? Math.min(z.rad / (n * lo ** ((n - 1) / n)), 2 * z.rad ** (1 / n)) : 2 * z.rad ** (1 / n);
  return computed(r, 0, rad, true, Math.abs(r), 4);
}

export function nthRoot(z: Ball, n: Ball): Ball {
  const u = passUnknown(z, n);
  if (u) return u;
  if (n.real && n.rad === 0 && Number.isInteger(n.re) && n.re >= 2 && z.real) return realRoot(z, n.re);
  return pow(z, div(ONE, n));
}

const isExactInt = (b: Ball): boolean => b.real && b.rad === 0 && Number.isInteger(b.re);

/**
 * a^b. Integer exponents by repeated multiplication (exact for exact bases), a positive real base through
 * exp(b·ln a), anything else through the principal branch exp(b·log a).
 */
export function pow(a: Ball, b: Ball, principal = false): Ball {
  const u = passUnknown(a, b);
  if (u) return u;
  if (!principal && isExactInt(b) && Math.abs(b.re) <= 4096) {
    let result = ONE;
    let base = a;
    let k = Math.abs(b.re);
    while (k > 0) {
      if (k & 1) result = mul(result, base);
      k = Math.floor(k / 2);
      if (k > 0) base = mul(base, base);
      if (!isKnown(result) || !isKnown(base)) return unknown("out of double range");
    }
    return b.re < 0 ? div(ONE, result) : result;
  }
  if (a.rad === 0 && a.re === 0 && a.im === 0) {
    if (b.real && b.re - b.rad > 0) return exactBall(0);
    return unknown("0 to a power that may not be positive");
  }
  if (a.real && !principal && isExactInt(b)) {
    // a huge integer exponent of a real base: |a|^b with the sign of a^b
    const m = exp(mul(b, log(exactAbs(a))));
    return a.re < 0 && Math.abs(b.re) % 2 === 1 ? neg(m) : m;
  }
  return exp(mul(b, log(a)));
}

function exactAbs(a: Ball): Ball {
  return { ...a, re: Math.abs(a.re) };
}

export function abs(z: Ball): Ball {
  if (!isKnown(z)) return z;
  const m = mag(z);
  return computed(m, 0, z.rad, true, m);
}

/** A piecewise-constant function of a real ball: decided only when no jump lies inside the ball. */
function stepFn(z: Ball, f: (x: number) => number, name: string): Ball {
  if (!isKnown(z)) return z;
  if (!z.real) return unknown(`${name} of a complex value`);
  const w = z.rad * (1 + 4 * EPS) + (z.rad > 0 ? TINY : 0);
  const lo = f(z.re - w);
  const hi = f(z.re + w);
  if (lo !== hi || lo !== f(z.re)) return unknown(`${name} jumps inside the error bound`);
  return exactBall(lo);
}

export const floor = (z: Ball) => stepFn(z, Math.floor, "floor");
export const ceil = (z: Ball) => stepFn(z, Math.ceil, "ceil");
export const round = (z: Ball) => stepFn(z, Math.round, "round");
export const sign = (z: Ball) => stepFn(z, Math.sign, "sign");

export function maxMin(args: Ball[], which: "max" | "min"): Ball {
  const u = passUnknown(...args);
  if (u) return u;
  if (args.length === 0 || args.some((b) => !b.real)) return unknown(`${which} of complex values`);
  const pickFn = which === "max" ? Math.max : Math.min;
  // 1-Lipschitz in the largest input error
  return { re: pickFn(...args.map((b) => b.re)), im: 0, rad: Math.max(...args.map((b) => b.rad)), real: true };
}

export function gcdLcm(args: Ball[], which: "gcd" | "lcm"): Ball {
  const u = passUnknown(...args);
  if (u) return u;
  if (args.length < 2 || !args.every((b) => isExactInt(b) && Math.abs(b.re) <= Number.MAX_SAFE_INTEGER)) return unknown(`${which} of non-integers`);
  let acc = Math.abs(args[0].re);
  for (const x of args.slice(1)) {
    let p = acc;
    let q = Math.abs(x.re);
    while (q) [p, q] = [q, p % q];
    acc = which === "gcd" ? p : p === 0 ? 0 : (acc / p) * Math.abs(x.re);
  }
  return Number.isSafeInteger(acc) ? exactBall(acc) : unknown(`${which} too large`);
}

// ------------------------------------------------------------------ the tree

/** π and e rounded to the nearest double are within 1.3e-16 and 1.5e-16 of the true constants. */
const PI: Ball = { re: Math.PI, im: 0, rad: 1.3e-16, real: true };
const E: Ball = { re: Math.E, im: 0, rad: 1.5e-16, real: true };

function literal(n: Node & { t: "num" }): Ball {
  if (n.q) {
    const v = n.q.toNumber();
    if (!Number.isFinite(v)) return unknown(`${n.raw} is out of double range`);
    const exact = n.q.isInt && Number.isSafeInteger(Number(n.q.n));
    return exact ? exactBall(v) : { re: v, im: 0, rad: 4 * EPS * Math.abs(v) + TINY, real: true };
  }
  const v = Number(n.raw);
  return Number.isFinite(v) ? { re: v, im: 0, rad: 4 * EPS * Math.abs(v) + TINY, real: true } : unknown(`${n.raw} is not a finite number`);
}

const UNARY: Record<string, (z: Ball) => Ball> = {
  sqrt,
  exp,
  ln: log,
  sin,
  cos,
  tan: (z) => div(sin(z), cos(z)),
  sec: (z) => div(ONE, cos(z)),
  csc: (z) => div(ONE, sin(z)),
  cot: (z) => div(cos(z), sin(z)),
  asin,
  acos,
  atan,
  acot: (z) => atan(div(ONE, z)),
  asec: (z) => acos(div(ONE, z)),
  acsc: (z) => asin(div(ONE, z)),
  sinh,
  cosh,
  tanh: (z) => div(sinh(z), cosh(z)),
  sech: (z) => div(ONE, cosh(z)),
  csch: (z) => div(ONE, sinh(z)),
  coth: (z) => div(cosh(z), sinh(z)),
  asinh,
  acosh,
  atanh,
  acoth: (z) => atanh(div(ONE, z)),
  gamma,
  factorial: (z) => gamma(add(z, ONE)),
  cbrt: (z) => nthRoot(z, exactBall(3)),
  abs,
  floor,
  ceil,
  round,
  sign,
};

function fnBall(name: string, args: Ball[]): Ball {
  const f = UNARY[name];
  if (f && args.length === 1) return f(args[0]);
  switch (name) {
    case "log":
      return args.length === 2 ? div(log(args[0]), log(args[1])) : unknown("log with a missing base");
    case "nthroot":
      return args.length === 2 ? nthRoot(args[0], args[1]) : unknown("root with a missing index");
    case "mod":
      return args.length === 2 ? sub(args[0], mul(args[1], floor(div(args[0], args[1])))) : unknown("mod arity");
    case "max":
    case "min":
      return maxMin(args, name);
    case "gcd":
    case "lcm":
      return gcdLcm(args, name);
    case "binom": {
      if (args.length !== 2) return unknown("binomial arity");
      const [n, k] = args;
      return div(gamma(add(n, ONE)), mul(gamma(add(k, ONE)), gamma(add(sub(n, k), ONE))));
    }
    default:
      return unknown(`no certified evaluation of ${name}`);
  }
}

function bigOperatorBall(n: Node & { t: "fn" }, env: Map<string, Ball>, budget: Budget): Ball {
  const [index, lo, hi, term] = n.args;
  if (n.args.length !== 4 || index.t !== "sym") return unknown(`malformed ${n.name}`);
  const a = ballEval(lo, env, budget);
  const b = ballEval(hi, env, budget);
  const range = isExactInt(a) && isExactInt(b) ? bigOperatorRange(a.re, b.re) : null;
  if (!range) return unknown(`${n.name} over a range that is not a short run of integers`);
  const inner = new Map(env);
  let acc = exactBall(n.name === "sum" ? 0 : 1);
  for (let k = range[0]; k <= range[1]; k++) {
    inner.set(index.name, exactBall(k));
    const v = ballEval(term, inner, budget);
    acc = n.name === "sum" ? add(acc, v) : mul(acc, v);
    if (!isKnown(acc)) return acc;
  }
  return acc;
}

/** Certified value of a tree at the exact point `env`. `\infty` is unknown here (the caller compares it structurally). */
export function ballEval(n: Node, env: Map<string, Ball>, budget: Budget): Ball {
  budget.tick();
  switch (n.t) {
    case "num":
      return literal(n);
    case "const":
      if (n.name === "pi") return PI;
      if (n.name === "e") return E;
      if (n.name === "i") return I;
      return unknown("infinity is not a number");
    case "sym":
      return env.get(n.name) ?? unknown(`no value for ${n.name}`);
    case "group":
      return ballEval(n.a, env, budget);
    case "neg":
      return neg(ballEval(n.a, env, budget));
    case "pct":
      return div(ballEval(n.a, env, budget), exactBall(100));
    case "add":
    case "sub":
    case "mul":
    case "div": {
      const a = ballEval(n.a, env, budget);
      const b = ballEval(n.b, env, budget);
      return n.t === "add" ? add(a, b) : n.t === "sub" ? sub(a, b) : n.t === "mul" ? mul(a, b) : div(a, b);
    }
    case "pow": {
      const b = ballEval(n.b, env, budget);
      // e^x through exp: the rounding of e would otherwise be raised to the power
      if (n.a.t === "const" && n.a.name === "e") return exp(b);
      return pow(ballEval(n.a, env, budget), b);
    }
    case "fact":
      return gamma(add(ballEval(n.a, env, budget), ONE));
    case "fn":
      if (n.name === "sum" || n.name === "prod") return bigOperatorBall(n, env, budget);
      return fnBall(n.name, n.args.map((a) => ballEval(a, env, budget)));
    default:
      return unknown("not a number");
  }
}

export type Verdict = { verdict: "equal" | "different" } | { verdict: "undecidable"; why: string };

/**
 * Decides |a − b| ≤ tol with the balls' radii: "equal" when even the worst case is within, "different" when even the
 * best case is outside, otherwise "undecidable" with the bound that was too wide.
 */
export function decide(a: Ball, b: Ball, tol: number): Verdict {
  if (!isKnown(a) || !isKnown(b)) return { verdict: "undecidable", why: (isKnown(a) ? b.why : a.why) ?? "unknown value" };
  const d = Math.hypot(a.re - b.re, a.im - b.im);
  const r = (a.rad + b.rad) * (1 + 4 * EPS);
  if (d * (1 + 4 * EPS) + r <= tol) return { verdict: "equal" };
  if (d * (1 - 4 * EPS) - r > tol) return { verdict: "different" };
  return { verdict: "undecidable", why: `error bound ${fmt(r)} is not below the tolerance ${fmt(tol)}` };
}

const fmt = (x: number) => (x === 0 ? "0" : x.toExponential(1));

/** Relative tolerance of a numeric "equal" between two non-decimal values. */
export const REL_TOL = 1e-10;

/** Tolerance for values that should be the same number: relative to the larger certified lower bound of the magnitudes. */
export function relTol(a: Ball, b: Ball, rel = REL_TOL): number {
  const lower = (x: Ball) => Math.max(0, mag(x) - x.rad);
  return rel * Math.max(lower(a), lower(b));
}
