/**
 * Exact rationals (BigInt numerator/denominator, always reduced, denominator > 0) and Gaussian rationals
 * (re + im·i). Every constructor checks the bit budget, so no operation can grow without bound.
 */
import { LIMITS, SizeLimit } from "./limits.js";

const bitLength = (x: bigint): number => (x === 0n ? 0 : (x < 0n ? -x : x).toString(16).length * 4);
const { MAX_BITS, MAX_LITERAL_DIGITS } = LIMITS;
const BOUND = 1n << BigInt(MAX_BITS);

function gcd(a: bigint, b: bigint): bigint {
  if (a < 0n) a = -a;
  if (b < 0n) b = -b;
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

export class Q {
  private constructor(
    readonly n: bigint,
    readonly d: bigint,
  ) {}

  static readonly ZERO = new Q(0n, 1n);
  static readonly ONE = new Q(1n, 1n);

  static of(n: bigint, d: bigint = 1n): Q {
    if (d === 0n) throw new RangeError("division by zero");
    if (d < 0n) {
      n = -n;
      d = -d;
    }
    if (n >= BOUND || n <= -BOUND || d >= BOUND) throw new SizeLimit("rational size");
    const g = gcd(n, d);
    return g === 1n ? new Q(n, d) : new Q(n / g, d / g);
  }

  static int(v: number | bigint): Q {
    return Q.of(BigInt(v), 1n);
  }

  /** Parses an unsigned decimal literal: `12`, `0.25`, `.5`, `1.5e-3`. Returns null when malformed or too long. */
  static parseDecimal(s: string): Q | null {
    const m = /^(\d*)(?:\.(\d*))?(?:[eE]([-+]?\d{1,4}))?$/.exec(s);
    if (!m || (m[1] === "" && (m[2] === undefined || m[2] === ""))) return null;
    const int = m[1] || "0";
    const frac = m[2] ?? "";
    if (int.length + frac.length > MAX_LITERAL_DIGITS) return null;
    let exp = m[3] ? Number(m[3]) : 0;
    exp -= frac.length;
    const digits = BigInt(int + frac);
    if (Math.abs(exp) * 3.33 > MAX_BITS) return null;
    return exp >= 0 ? Q.of(digits * 10n ** BigInt(exp)) : Q.of(digits, 10n ** BigInt(-exp));
  }

  get isZero(): boolean {
    return this.n === 0n;
  }
  get isInt(): boolean {
    return this.d === 1n;
  }
  get sign(): number {
    return this.n === 0n ? 0 : this.n < 0n ? -1 : 1;
  }
  add(o: Q): Q {
    return this.d === o.d ? Q.of(this.n + o.n, this.d) : Q.of(this.n * o.d + o.n * this.d, this.d * o.d);
  }
  sub(o: Q): Q {
    return this.add(o.neg());
  }
  mul(o: Q): Q {
    return Q.of(this.n * o.n, this.d * o.d);
  }
  div(o: Q): Q {
    if (o.n === 0n) throw new RangeError("division by zero");
    return Q.of(this.n * o.d, this.d * o.n);
  }
  neg(): Q {
    return new Q(-this.n, this.d);
  }
  abs(): Q {
    return this.n < 0n ? this.neg() : this;
  }
  eq(o: Q): boolean {
    return this.n === o.n && this.d === o.d;
  }
  cmp(o: Q): number {
    const l = this.n * o.d;
    const r = o.n * this.d;
    return l === r ? 0 : l < r ? -1 : 1;
  }
  floor(): Q {
    let q = this.n / this.d;
    if (this.n < 0n && q * this.d !== this.n) q -= 1n;
    return Q.of(q);
  }
  ceil(): Q {
    return this.neg().floor().neg();
  }
  /** Integer power; refuses results above the bit budget before computing them. */
  powInt(e: bigint): Q {
    if (e === 0n) return Q.ONE;
    if (this.n === 0n) {
      if (e < 0n) throw new RangeError("division by zero");
      return Q.ZERO;
    }
    const ae = e < 0n ? -e : e;
    if (this.d === 1n && (this.n === 1n || this.n === -1n)) return this.n === 1n || ae % 2n === 0n ? Q.ONE : Q.of(-1n);
    const bits = Math.max(bitLength(this.n), bitLength(this.d));
    // |n|,|d| of 1 stay 1 whatever the exponent.
    if (bits > 1 && Number(ae) * (bits - 1) > MAX_BITS) throw new SizeLimit("power size");
    if (ae > BigInt(MAX_BITS) && bits > 1) throw new SizeLimit("power size");
    const n = this.n ** ae;
    const d = this.d ** ae;
    return e < 0n ? Q.of(d, n) : Q.of(n, d);
  }
  /** Exact square root when numerator and denominator are perfect squares, else null. */
  sqrt(): Q | null {
    if (this.n < 0n) return null;
    const rn = isqrt(this.n);
    const rd = isqrt(this.d);
    return rn * rn === this.n && rd * rd === this.d ? Q.of(rn, rd) : null;
  }
  /** Nearest double, also for operands far outside the double range (gives ±Infinity or 0 then). */
  toNumber(): number {
    const bn = bitLength(this.n);
    const bd = bitLength(this.d);
    if (bn < 1000 && bd < 1000) {
      const v = Number(this.n) / Number(this.d);
      if (Number.isFinite(v) && v !== 0) return v;
      if (this.n === 0n) return 0;
    }
    const sn = Math.max(0, bn - 64);
    const sd = Math.max(0, bd - 64);
    const mant = Number(this.n >> BigInt(sn)) / Number(this.d >> BigInt(sd));
    const e = sn - sd;
    if (e > 2000) return mant > 0 ? Infinity : -Infinity;
    if (e < -2000) return 0;
    return mant * 2 ** e;
  }
  toString(): string {
    return this.d === 1n ? this.n.toString() : `${this.n}/${this.d}`;
  }
}

function isqrt(n: bigint): bigint {
  if (n < 2n) return n;
  const approx = Math.sqrt(Number(n));
  // beyond the double range start from 2^(bits/2), above the root
  let x = Number.isFinite(approx) ? BigInt(Math.floor(approx)) : 1n << BigInt(Math.ceil(bitLength(n) / 2) + 1);
  if (x === 0n) x = 1n;
  // Newton from a float estimate; a handful of steps even for large n.
  for (let i = 0; i < 200; i++) {
    const y = (x + n / x) >> 1n;
    if (y >= x && x * x <= n && (x + 1n) * (x + 1n) > n) return x;
    x = y;
  }
  while (x * x > n) x -= 1n;
  while ((x + 1n) * (x + 1n) <= n) x += 1n;
  return x;
}

/** Gaussian rational re + im·i. */
export class CQ {
  constructor(
    readonly re: Q,
    readonly im: Q = Q.ZERO,
  ) {}
  static real(q: Q): CQ {
    return new CQ(q);
  }
  static readonly I = new CQ(Q.ZERO, Q.ONE);
  get isReal(): boolean {
    return this.im.isZero;
  }
  get isZero(): boolean {
    return this.re.isZero && this.im.isZero;
  }
  add(o: CQ): CQ {
    return new CQ(this.re.add(o.re), this.im.add(o.im));
  }
  sub(o: CQ): CQ {
    return new CQ(this.re.sub(o.re), this.im.sub(o.im));
  }
  neg(): CQ {
    return new CQ(this.re.neg(), this.im.neg());
  }
  mul(o: CQ): CQ {
    if (this.im.isZero && o.im.isZero) return new CQ(this.re.mul(o.re));
    return new CQ(this.re.mul(o.re).sub(this.im.mul(o.im)), this.re.mul(o.im).add(this.im.mul(o.re)));
  }
  div(o: CQ): CQ {
    if (o.im.isZero) {
      if (o.re.isZero) throw new RangeError("division by zero");
      return new CQ(this.re.div(o.re), this.im.div(o.re));
    }
    const den = o.re.mul(o.re).add(o.im.mul(o.im));
    const num = this.mul(new CQ(o.re, o.im.neg()));
    return new CQ(num.re.div(den), num.im.div(den));
  }
  powInt(e: bigint): CQ {
    if (this.im.isZero) return new CQ(this.re.powInt(e));
    if (e < 0n) return new CQ(Q.ONE).div(this.powInt(-e));
    const bits = Math.max(bitLength(this.re.n), bitLength(this.re.d), bitLength(this.im.n), bitLength(this.im.d));
    if (Number(e) * Math.max(1, bits) > MAX_BITS) throw new SizeLimit("power size");
    let result = new CQ(Q.ONE);
    let base: CQ = this;
    let k = e;
    while (k > 0n) {
      if (k & 1n) result = result.mul(base);
      k >>= 1n;
      if (k > 0n) base = base.mul(base);
    }
    return result;
  }
  eq(o: CQ): boolean {
    return this.re.eq(o.re) && this.im.eq(o.im);
  }
  toString(): string {
    return this.im.isZero ? this.re.toString() : `${this.re}+${this.im}i`;
  }
}
