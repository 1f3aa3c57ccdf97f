// The exact and numeric evaluators, checked against mathjs as an independent oracle on random expressions.
import { all, create } from "mathjs";
import { describe, expect, it } from "vitest";
import { mulberry32 as rng } from "./random.js";
import { exactEval, newState, numEval } from "./evaluate.js";
import { Budget, LIMITS, SizeLimit } from "./limits.js";
import { normalizeAnswer } from "./normalize.js";
import { parseAnswer } from "./parse.js";
import { CQ, Q } from "./rational.js";

const math = create(all, {});
const mathFrac = create(all, { number: "Fraction" });

describe("Q and CQ", () => {
  it("exact arithmetic, reduced, with a sign on the numerator", () => {
    expect(Q.of(6n, -4n).toString()).toBe("-3/2");
    expect(Q.parseDecimal("0.25")?.add(Q.of(1n, 3n)).toString()).toBe("7/12");
    expect(Q.parseDecimal("1.5e-3")?.toString()).toBe("3/2000");
    expect(Q.parseDecimal(".5")?.toString()).toBe("1/2");
    expect(Q.of(2n).powInt(-3n).toString()).toBe("1/8");
    expect(Q.of(49n, 4n).sqrt()?.toString()).toBe("7/2");
    expect(Q.of(2n).sqrt()).toBeNull();
    const i = CQ.I;
    expect(i.mul(i).toString()).toBe("-1");
    expect(new CQ(Q.of(1n), Q.of(1n)).div(new CQ(Q.of(1n), Q.of(-1n))).toString()).toBe("0+1i");
  });
  it("refuses oversized results before computing them", () => {
    expect(() => Q.of(3n).powInt(1_000_000n)).toThrow(SizeLimit);
    expect(() => Q.of(1n << BigInt(LIMITS.MAX_BITS))).toThrow(SizeLimit);
    expect(Q.of(-1n).powInt(10n ** 30n).toString()).toBe("1");
    expect(Q.parseDecimal("9".repeat(LIMITS.MAX_LITERAL_DIGITS + 1))).toBeNull();
  });
  it("converts huge and tiny rationals to doubles without NaN", () => {
    expect(Q.of(2n).powInt(2000n).toNumber()).toBe(Infinity);
    expect(Q.of(1n, 2n ** 1100n).toNumber()).toBe(0);
    expect(Q.of(3n * 2n ** 900n, 2n ** 901n).toNumber()).toBe(1.5);
  });
});

// ---------------------------------------------------------------- differential test against mathjs

interface Gen {
  latex: string;
  plain: string;
  rational: boolean;
}

function gen(r: () => number, depth: number, symbols: boolean): Gen {
  if (depth === 0 || r() < 0.2) {
    const c = r();
    if (symbols && c < 0.3) {
      const v = r() < 0.5 ? "x" : "y";
      return { latex: v, plain: v, rational: true };
    }
    if (c < 0.8) {
      const n = String(1 + Math.floor(r() * 12));
      return { latex: n, plain: n, rational: true };
    }
    const d = (r() * 5).toFixed(2);
    return { latex: d, plain: d, rational: true };
  }
  const a = gen(r, depth - 1, symbols);
  const b = gen(r, depth - 1, symbols);
  const k = Math.floor(r() * 10);
  const both = a.rational && b.rational;
  switch (k) {
    case 0:
      return { latex: `${a.latex}+${b.latex}`, plain: `(${a.plain})+(${b.plain})`, rational: both };
    case 1:
      return { latex: `${a.latex}-(${b.latex})`, plain: `(${a.plain})-(${b.plain})`, rational: both };
    case 2:
      return { latex: `(${a.latex})\\cdot(${b.latex})`, plain: `(${a.plain})*(${b.plain})`, rational: both };
    case 3:
      return { latex: `\\frac{${a.latex}}{${b.latex}}`, plain: `(${a.plain})/(${b.plain})`, rational: both };
    case 4: {
      const e = Math.floor(r() * 5) - 1;
      return { latex: `(${a.latex})^{${e}}`, plain: `(${a.plain})^(${e})`, rational: a.rational };
    }
    case 5:
      return { latex: `\\sqrt{${a.latex}}`, plain: `sqrt(${a.plain})`, rational: false };
    case 6:
      return { latex: `\\sin(${a.latex})`, plain: `sin(${a.plain})`, rational: false };
    case 7:
      return { latex: `\\ln(${a.latex})`, plain: `log(${a.plain})`, rational: false };
    case 8:
      return { latex: `e^{${a.latex}}`, plain: `exp(${a.plain})`, rational: false };
    default:
      return { latex: `\\arctan(${a.latex})`, plain: `atan(${a.plain})`, rational: false };
  }
}

const toNode = (latex: string) => parseAnswer(normalizeAnswer(latex, "gold"));

describe("evaluators vs mathjs", () => {
  it("exact values equal mathjs Fraction-mode evaluation on 1,500 random rational expressions", () => {
    const r = rng(7);
    let compared = 0;
    for (let k = 0; k < 1500; k++) {
      const g = gen(r, 4, false);
      if (!g.rational) continue;
      let theirs: { s: bigint; n: bigint; d: bigint } | null = null;
      try {
        theirs = mathFrac.evaluate(g.plain) as { s: bigint; n: bigint; d: bigint };
      } catch {
        theirs = null; // division by zero
      }
      let ours: CQ | null = null;
      try {
        ours = exactEval(toNode(g.latex), null, new Budget());
      } catch {
        ours = null;
      }
      if (!theirs || typeof theirs.n !== "bigint" || !ours) continue;
      compared++;
      expect(ours.re.toString(), g.latex).toBe(Q.of(theirs.s * theirs.n, theirs.d).toString());
    }
    expect(compared).toBeGreaterThan(300);
  });

  it("numeric values match mathjs evaluate() at random points on 3,000 random expressions", () => {
    const r = rng(11);
    let compared = 0;
    for (let k = 0; k < 3000; k++) {
      const g = gen(r, 4, true);
      const x = 0.2 + 3 * r();
      const y = 0.2 + 3 * r();
      let theirs: unknown;
      try {
        theirs = math.evaluate(g.plain, { x, y });
      } catch {
        continue;
      }
      const tv = typeof theirs === "number" ? { re: theirs, im: 0 } : (theirs as { re: number; im: number });
      if (typeof tv?.re !== "number" || !Number.isFinite(tv.re) || !Number.isFinite(tv.im)) continue;
      const st = newState();
      const ours = numEval(toNode(g.latex), new Map([["x", { re: x, im: 0 }], ["y", { re: y, im: 0 }]]), st, new Budget());
      if (!Number.isFinite(ours.re) || !Number.isFinite(ours.im)) continue;
      // sin of a 1e40 argument is noise in both libraries: the comparer treats such values by their error scale too
      if (st.scale > 1e6) continue;
      compared++;
      const err = Math.hypot(ours.re - tv.re, ours.im - tv.im);
      expect(err, `${g.latex} at x=${x}, y=${y}: ours ${ours.re}+${ours.im}i, mathjs ${tv.re}+${tv.im}i`).toBeLessThanOrEqual(
        1e-9 * Math.max(1, Math.hypot(tv.re, tv.im)),
      );
    }
    expect(compared).toBeGreaterThan(1500);
  });
});
