/**
 * Two evaluators over the expression tree:
 * - exact: Gaussian rationals (BigInt); null when the expression is not exactly evaluable (π, sin, √2, …);
 * - numeric: complex doubles with principal branches, plus an error-scale estimate for deciding "zero".
 * Both tick the per-call budget on every node, and the exact one refuses oversized intermediates.
 */
import type { Node } from "./ast.js";
import * as Cx from "./complex.js";
import type { C } from "./complex.js";
import { type Budget, LIMITS, Signal, SizeLimit } from "./limits.js";
import { CQ, Q } from "./rational.js";

/** Raised for a division by zero or another undefined exact value. */
export class UndefinedValue extends Signal {
  override readonly name = "UndefinedValue";
}

/** Exact value, or null when the tree is outside the exact fragment. */
export function exactEval(n: Node, env: Map<string, CQ> | null, budget: Budget): CQ | null {
  budget.tick();
  switch (n.t) {
    case "num":
      return n.q ? CQ.real(n.q) : null;
    case "const":
      return n.name === "i" ? CQ.I : null;
    case "sym":
      return env?.get(n.name) ?? null;
    case "group":
      return exactEval(n.a, env, budget);
    case "neg": {
      const a = exactEval(n.a, env, budget);
      return a && a.neg();
    }
    case "pct": {
      const a = exactEval(n.a, env, budget);
      return a && a.div(CQ.real(Q.int(100)));
    }
    case "add":
    case "sub":
    case "mul":
    case "div": {
      const a = exactEval(n.a, env, budget);
      if (!a) return null;
      const b = exactEval(n.b, env, budget);
      if (!b) return null;
      try {
        if (n.t === "add") return a.add(b);
        if (n.t === "sub") return a.sub(b);
        if (n.t === "mul") return a.mul(b);
        return a.div(b);
      } catch (e) {
        if (e instanceof RangeError) throw new UndefinedValue("division by zero");
        throw e;
      }
    }
    case "pow":
      return exactPow(n, env, budget);
    case "fact": {
      const a = exactEval(n.a, env, budget);
      return a && exactFactorial(a);
    }
    case "fn":
      return exactFn(n.name, n.args, env, budget);
    default:
      return null;
  }
}

function hasSymbol(n: Node): boolean {
  switch (n.t) {
    case "sym":
      return true;
    case "num":
    case "const":
      return false;
    case "add":
    case "sub":
    case "mul":
    case "div":
    case "pow":
      return hasSymbol(n.a) || hasSymbol(n.b);
    case "neg":
    case "group":
    case "pct":
    case "fact":
      return hasSymbol(n.a);
    case "fn":
      return n.args.some(hasSymbol);
    default:
      return true;
  }
}

function exactPow(n: Node & { t: "pow" }, env: Map<string, CQ> | null, budget: Budget): CQ | null {
  // A symbolic exponent would make the exact path a statement about integers only; leave it to the numeric path.
  if (env && hasSymbol(n.b)) return null;
  const e = exactEval(n.b, env, budget);
  if (!e || !e.isReal) return null;
  const base = exactEval(n.a, env, budget);
  if (!base) return null;
  try {
    if (e.re.isInt) return base.powInt(e.re.n);
    // rational exponent p/q on a positive rational that is a perfect q-th power: 8^{2/3} = 4
    if (!base.isReal || base.re.sign <= 0 || e.re.d > 12n) return null;
    const root = exactRoot(base.re, Number(e.re.d));
    return root ? CQ.real(root.powInt(e.re.n)) : null;
  } catch (err) {
    if (err instanceof RangeError) throw new UndefinedValue("0 to a negative power");
    throw err;
  }
}

/** Exact k-th root of a non-negative rational, or null. */
export function exactRoot(q: Q, k: number): Q | null {
  if (q.sign < 0) return null;
  if (k === 2) return q.sqrt();
  const rn = intRoot(q.n, k);
  const rd = intRoot(q.d, k);
  return rn !== null && rd !== null ? Q.of(rn, rd) : null;
}

function intRoot(n: bigint, k: number): bigint | null {
  if (n < 2n) return n;
  const approx = Q.of(n).toNumber() ** (1 / k);
  // past 2^53 the float estimate cannot pin the root down exactly; the exact path gives up there
  if (!Number.isFinite(approx) || approx > 2 ** 50) return null;
  const base = BigInt(Math.round(approx));
  for (const cand of [base - 1n, base, base + 1n]) if (cand >= 0n && cand ** BigInt(k) === n) return cand;
  return null;
}

function exactFactorial(a: CQ): CQ | null {
  if (!a.isReal || !a.re.isInt) return null;
  const k = a.re.n;
  if (k < 0n) throw new UndefinedValue("factorial of a negative integer");
  if (k > BigInt(LIMITS.MAX_FACTORIAL)) throw new SizeLimit("factorial size");
  let r = 1n;
  for (let i = 2n; i <= k; i++) r *= i;
  return CQ.real(Q.of(r));
}

function realArgs(args: Node[], env: Map<string, CQ> | null, budget: Budget): Q[] | null {
  const out: Q[] = [];
  for (const a of args) {
    const v = exactEval(a, env, budget);
    if (!v || !v.isReal) return null;
    out.push(v.re);
  }
  return out;
}

function exactFn(name: string, args: Node[], env: Map<string, CQ> | null, budget: Budget): CQ | null {
  switch (name) {
    case "sqrt": {
      const v = realArgs(args, env, budget);
      if (!v || v.length !== 1) return null;
      const r = v[0].sqrt();
      return r && CQ.real(r);
    }
    case "nthroot":
    case "cbrt": {
      const v = realArgs(args, env, budget);
      if (!v) return null;
      const k = name === "cbrt" ? Q.int(3) : v[1];
      if (!k || !k.isInt || k.n < 2n || k.n > 12n) return null;
      const x = v[0];
      if (x.sign < 0) {
        if (k.n % 2n === 0n) return null;
        const r = exactRoot(x.neg(), Number(k.n));
        return r && CQ.real(r.neg());
      }
      const r = exactRoot(x, Number(k.n));
      return r && CQ.real(r);
    }
    case "abs": {
      const v = exactEval(args[0], env, budget);
      if (!v) return null;
      if (v.isReal) return CQ.real(v.re.abs());
      return null;
    }
    case "floor":
    case "ceil":
    case "sign": {
      const v = realArgs(args, env, budget);
      if (!v || v.length !== 1) return null;
      if (name === "sign") return CQ.real(Q.int(v[0].sign));
      return CQ.real(name === "floor" ? v[0].floor() : v[0].ceil());
    }
    case "factorial": {
      const v = exactEval(args[0], env, budget);
      return v && exactFactorial(v);
    }
    case "binom": {
      const v = realArgs(args, env, budget);
      if (!v || v.length !== 2 || !v[0].isInt || !v[1].isInt) return null;
      const nn = v[0].n;
      const kk = v[1].n;
      if (kk < 0n || nn < 0n || kk > nn) return kk < 0n || kk > nn ? CQ.real(Q.ZERO) : null;
      if (nn > BigInt(LIMITS.MAX_FACTORIAL)) throw new SizeLimit("binomial size");
      let r = 1n;
      const k2 = kk < nn - kk ? kk : nn - kk;
      for (let i = 1n; i <= k2; i++) r = (r * (nn - k2 + i)) / i;
      return CQ.real(Q.of(r));
    }
    case "mod": {
      const v = realArgs(args, env, budget);
      if (!v || v.length !== 2) return null;
      if (v[1].isZero) throw new UndefinedValue("mod 0");
      return CQ.real(v[0].sub(v[1].mul(v[0].div(v[1]).floor())));
    }
    case "max":
    case "min": {
      const v = realArgs(args, env, budget);
      if (!v || v.length === 0) return null;
      let best = v[0];
      for (const x of v) if ((name === "max" ? x.cmp(best) : best.cmp(x)) > 0) best = x;
      return CQ.real(best);
    }
    case "sum":
    case "prod":
      return exactBigOperator(name, args, env, budget);
    case "gcd":
    case "lcm": {
      const v = realArgs(args, env, budget);
      if (!v || v.length < 2 || v.some((x) => !x.isInt)) return null;
      const g2 = (x: bigint, y: bigint): bigint => {
        while (y !== 0n) [x, y] = [y, x % y];
        return x < 0n ? -x : x;
      };
      let acc = v[0].n < 0n ? -v[0].n : v[0].n;
      for (const x of v.slice(1)) {
        const b = x.n < 0n ? -x.n : x.n;
        if (name === "gcd") acc = g2(acc, b);
        else {
          const g = g2(acc, b);
          acc = g === 0n ? 0n : (acc / g) * b;
        }
      }
      return CQ.real(Q.of(acc));
    }
    default:
      return null;
  }
}

/** Terms a `\\sum`/`\\prod` may have to be evaluated term by term (exactly or with error bounds). */
export const MAX_TERMS = 1000;

/** The integer range of a `\\sum`/`\\prod` with concrete limits, or null (symbolic or too long). */
export function bigOperatorRange(lo: number | bigint, hi: number | bigint): [number, number] | null {
  const a = Number(lo);
  const b = Number(hi);
  if (!Number.isSafeInteger(a) || !Number.isSafeInteger(b) || b - a + 1 > MAX_TERMS) return null;
  return [a, b];
}

function exactBigOperator(name: "sum" | "prod", args: Node[], env: Map<string, CQ> | null, budget: Budget): CQ | null {
  const [index, lo, hi, term] = args;
  if (args.length !== 4 || index.t !== "sym") return null;
  const limits = realArgs([lo, hi], env, budget);
  if (!limits || !limits[0].isInt || !limits[1].isInt) return null;
  const range = bigOperatorRange(limits[0].n, limits[1].n);
  if (!range) return null;
  const inner = new Map(env ?? []);
  let acc = CQ.real(name === "sum" ? Q.ZERO : Q.ONE);
  for (let k = range[0]; k <= range[1]; k++) {
    inner.set(index.name, CQ.real(Q.int(k)));
    const v = exactEval(term, inner, budget);
    if (!v) return null;
    acc = name === "sum" ? acc.add(v) : acc.mul(v);
  }
  return acc;
}

/** State of one numeric evaluation. */
export interface NumState {
  /** Largest magnitude that took part in a cancellation (sum operands, periodic-function arguments). */
  scale: number;
  /** A finite input produced an infinite or NaN value: the double range was exceeded. */
  overflow: boolean;
  /** The tree contains `\infty`. */
  infinite: boolean;
}

export const newState = (): NumState => ({ scale: 0, overflow: false, infinite: false });

const track = (st: NumState, out: C, ...ins: C[]): C => {
  if (!Cx.isFiniteC(out) && ins.every(Cx.isFiniteC) && !Number.isNaN(out.re)) st.overflow = true;
  return out;
};

export function numEval(n: Node, env: Map<string, C>, st: NumState, budget: Budget): C {
  budget.tick();
  switch (n.t) {
    case "num":
      return Cx.c(n.q ? n.q.toNumber() : Number(n.raw));
    case "const":
      if (n.name === "pi") return Cx.c(Math.PI);
      if (n.name === "e") return Cx.c(Math.E);
      if (n.name === "i") return Cx.c(0, 1);
      st.infinite = true;
      return Cx.c(Infinity);
    case "sym":
      return env.get(n.name) ?? Cx.NAN;
    case "group":
      return numEval(n.a, env, st, budget);
    case "neg":
      return Cx.neg(numEval(n.a, env, st, budget));
    case "pct":
      return Cx.div(numEval(n.a, env, st, budget), Cx.c(100));
    case "add":
    case "sub": {
      const a = numEval(n.a, env, st, budget);
      const b = numEval(n.b, env, st, budget);
      st.scale = Math.max(st.scale, Cx.absC(a), Cx.absC(b));
      return track(st, n.t === "add" ? Cx.add(a, b) : Cx.sub(a, b), a, b);
    }
    case "mul": {
      const a = numEval(n.a, env, st, budget);
      const b = numEval(n.b, env, st, budget);
      return track(st, Cx.mul(a, b), a, b);
    }
    case "div": {
      const a = numEval(n.a, env, st, budget);
      const b = numEval(n.b, env, st, budget);
      return track(st, Cx.div(a, b), a, b);
    }
    case "pow": {
      const b = numEval(n.b, env, st, budget);
      // e^x through exp: pow(E, x) would carry the rounding of E into every digit
      if (n.a.t === "const" && n.a.name === "e") return track(st, Cx.exp(b), b);
      const a = numEval(n.a, env, st, budget);
      return track(st, Cx.pow(a, b), a, b);
    }
    case "fact": {
      const a = numEval(n.a, env, st, budget);
      return track(st, Cx.gamma(Cx.add(a, Cx.c(1))), a);
    }
    case "fn":
      return numFn(n.name, n.args.map((a) => numEval(a, env, st, budget)), st);
    default:
      return Cx.NAN;
  }
}

const UNARY: Record<string, (z: C) => C> = {
  sqrt: Cx.sqrt, cbrt: Cx.cbrt, exp: Cx.exp, ln: Cx.log, sin: Cx.sin, cos: Cx.cos, tan: Cx.tan, sec: Cx.sec, csc: Cx.csc,
  cot: Cx.cot, asin: Cx.asin, acos: Cx.acos, atan: Cx.atan, acot: Cx.acot, asec: Cx.asec, acsc: Cx.acsc, sinh: Cx.sinh,
  cosh: Cx.cosh, tanh: Cx.tanh, sech: Cx.sech, csch: Cx.csch, coth: Cx.coth, asinh: Cx.asinh, acosh: Cx.acosh,
  atanh: Cx.atanh, acoth: (z: C) => Cx.atanh(Cx.div(Cx.c(1), z)), gamma: Cx.gamma,
  factorial: (z: C) => Cx.gamma(Cx.add(z, Cx.c(1))),
};
const PERIODIC = new Set(["sin", "cos", "tan", "sec", "csc", "cot"]);

const realOf = (z: C): number => (Math.abs(z.im) <= 1e-12 * Math.max(1, Math.abs(z.re)) ? z.re : NaN);

function numFn(name: string, a: C[], st: NumState): C {
  const f = UNARY[name];
  if (f && a.length === 1) {
    if (PERIODIC.has(name)) st.scale = Math.max(st.scale, Cx.absC(a[0]));
    return track(st, f(a[0]), a[0]);
  }
  const r = a.map(realOf);
  switch (name) {
    case "log":
      if (a.length !== 2) return Cx.NAN;
      return track(st, Cx.div(Cx.log(a[0]), Cx.log(a[1])), ...a);
    case "nthroot":
      return a.length === 2 ? track(st, Cx.nthRoot(a[0], a[1]), ...a) : Cx.NAN;
    case "abs":
      return a.length === 1 ? Cx.c(Cx.absC(a[0])) : Cx.NAN;
    case "floor":
      return Cx.c(Math.floor(r[0]));
    case "ceil":
      return Cx.c(Math.ceil(r[0]));
    case "round":
      return Cx.c(Math.round(r[0]));
    case "sign":
      return Cx.c(Math.sign(r[0]));
    case "mod":
      return r.length === 2 && r[1] !== 0 ? Cx.c(r[0] - r[1] * Math.floor(r[0] / r[1])) : Cx.NAN;
    case "max":
      return Cx.c(Math.max(...r));
    case "min":
      return Cx.c(Math.min(...r));
    case "binom": {
      if (r.length !== 2) return Cx.NAN;
      const g = Cx.gammaReal;
      return track(st, Cx.c(g(r[0] + 1) / (g(r[1] + 1) * g(r[0] - r[1] + 1))), ...a);
    }
    case "gcd":
    case "lcm": {
      if (!r.every(Number.isInteger)) return Cx.NAN;
      let acc = Math.abs(r[0]);
      for (const x of r.slice(1)) {
        let p = acc;
        let q = Math.abs(x);
        while (q) [p, q] = [q, p % q];
        acc = name === "gcd" ? p : p === 0 ? 0 : (acc / p) * Math.abs(x);
      }
      return Cx.c(acc);
    }
    default:
      return Cx.NAN;
  }
}
