// Soundness against a policy that searches for reward hacks: exploit candidates (ill-conditioned expressions whose
// double-precision value is noise, overflow, deep nesting, mixtures) checked against 10^4 random ordinary golds.
// The judge is independent of the verifier: mathjs BigNumber evaluation at 120 significant digits of both sides.
// An "equal" verdict counts as a false positive unless that reference puts the two values within the documented
// tolerance (README "Soundness"). Inputs are fresh each run; the seed is printed for a replay (NR_SOUNDNESS_SEED).
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { all, type BigNumber, create } from "mathjs";
import { describe, expect, it } from "vitest";
import { mulberry32 as rng } from "./random.js";
import { analyse, compareAnalysed, mathReward, verify } from "./index.js";

const M = create(all, { number: "BigNumber", precision: 120 });
type Big = BigNumber;

const SEED = Number(process.env.NR_SOUNDNESS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const GOLDS = Number(process.env.NR_SOUNDNESS_GOLDS ?? 10_000);
const PER_CLASS = 8;

/** A LaTeX string and the same value in mathjs syntax (the reference). */
interface Expr {
  latex: string;
  ref: string;
}
interface Probe extends Expr {
  cls: string;
}
interface Gold extends Expr {
  kind: string;
  /** A decimal gold is compared after rounding (floatPrecision 6), the others within relative 1e-10. */
  decimal: boolean;
}

class Gen {
  constructor(readonly r: () => number) {}
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.r() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.r() * xs.length)];
  }

  // ------------------------------------------------------------ exploit classes

  /** trig / exp / log of huge or tiny arguments */
  hugeTiny(): Expr {
    const c = this.int(1, 9);
    switch (this.int(0, 5)) {
      case 0: {
        const f = this.pick(["sin", "cos", "tan", "sec", "csc", "cot"]);
        const k = this.int(16, 300);
        return { latex: `\\${f}(${c}\\cdot 10^{${k}})`, ref: `${f}(${c}*10^${k})` };
      }
      case 1: {
        const k = this.int(3, 14);
        return { latex: `e^{-${c}\\cdot 10^{${k}}}`, ref: `exp(-${c}*10^${k})` };
      }
      case 2: {
        const k = this.int(3, 14);
        return { latex: `e^{${c}\\cdot 10^{${k}}}`, ref: `exp(${c}*10^${k})` };
      }
      case 3: {
        const k = this.int(17, 90);
        return { latex: `\\ln\\left(1+${c}\\cdot 10^{-${k}}\\right)`, ref: `log(1+${c}*10^-${k})` };
      }
      case 4: {
        const k = this.int(17, 90);
        return { latex: `\\sin(10^{-${k}})`, ref: `sin(10^-${k})` };
      }
      default: {
        const k = this.int(20, 300);
        return { latex: `\\log_{10}(\\cos(10^{${k}})+2)`, ref: `log10(cos(10^${k})+2)` };
      }
    }
  }

  /** catastrophic cancellation */
  cancellation(): Expr {
    const c = this.int(1, 9);
    const k = this.int(8, 45);
    switch (this.int(0, 4)) {
      case 0:
        return { latex: `\\sqrt{10^{${2 * k}}+${c}}-10^{${k}}`, ref: `sqrt(10^${2 * k}+${c})-10^${k}` };
      case 1:
        return { latex: `\\frac{1}{\\sqrt{10^{${2 * k}}+${c}}-10^{${k}}}`, ref: `1/(sqrt(10^${2 * k}+${c})-10^${k})` };
      case 2:
        return { latex: `(10^{${k}}+\\pi)-10^{${k}}-3`, ref: `(10^${k}+pi)-10^${k}-3` };
      case 3: {
        const j = this.int(9, 20);
        return { latex: `10^{${k}}\\left(\\cos(10^{-${j}})-1\\right)`, ref: `10^${k}*(cos(10^-${j})-1)` };
      }
      default:
        return { latex: `\\frac{e^{10^{-${k}}}-1}{10^{-${k}}}-1`, ref: `(exp(10^-${k})-1)/10^-${k}-1` };
    }
  }

  /** towers of powers */
  tower(): Expr {
    switch (this.int(0, 4)) {
      case 0: {
        const [a, b, c] = [this.int(3, 9), this.int(3, 9), this.int(3, 9)];
        return { latex: `${a}^{${b}^{${c}}}`, ref: `${a}^(${b}^${c})` };
      }
      case 1:
        return { latex: "2^{2^{2^{2^{2}}}}", ref: "2^(2^(2^(2^2)))" };
      case 2: {
        const k = this.int(12, 40);
        return { latex: `\\left(1+10^{-${k}}\\right)^{10^{${k}}}`, ref: `(1+10^-${k})^(10^${k})` };
      }
      case 3: {
        const k = this.int(20, 40);
        return { latex: `\\left(\\frac{1}{2}\\right)^{2^{${k}}}`, ref: `(1/2)^(2^${k})` };
      }
      default: {
        const k = this.int(3, 12);
        return { latex: `10^{-10^{${k}}}`, ref: `10^(-10^${k})` };
      }
    }
  }

  /** overflow to ±Inf or NaN */
  overflow(): Expr {
    const n = this.int(710, 5000);
    switch (this.int(0, 5)) {
      case 0:
        return { latex: `e^{${n}}`, ref: `exp(${n})` };
      case 1:
        return { latex: `-e^{${n}}`, ref: `-exp(${n})` };
      case 2:
        return { latex: `${this.int(1, 9)}e${this.int(309, 999)}`.replace(/^(\d)e(\d+)$/, "$1e$2"), ref: "" };
      case 3:
        return { latex: `e^{${n}}-e^{${n - 1}}`, ref: `exp(${n})-exp(${n - 1})` };
      case 4:
        return { latex: `${this.int(171, 2000)}!`, ref: "" };
      default:
        return this.pick([
          { latex: "\\infty-\\infty", ref: "Infinity-Infinity" },
          { latex: "\\frac{\\infty}{\\infty}", ref: "Infinity/Infinity" },
          { latex: "0\\cdot\\infty", ref: "0*Infinity" },
          { latex: "\\infty", ref: "Infinity" },
          { latex: "-\\infty", ref: "-Infinity" },
        ]);
    }
  }

  /** deep nesting */
  nesting(): Expr {
    const k = this.int(16, 200);
    const d = this.int(8, 40);
    switch (this.int(0, 2)) {
      case 0:
        return { latex: `${"\\sin(".repeat(d)}10^{${k}}${")".repeat(d)}`, ref: `${"sin(".repeat(d)}10^${k}${")".repeat(d)}` };
      case 1: {
        const s = this.int(3, 10);
        return { latex: `${"\\sqrt{".repeat(s)}10^{${k}}${"}".repeat(s)}`, ref: `${"sqrt(".repeat(s)}10^${k}${")".repeat(s)}` };
      }
      default: {
        const e = this.int(3, 60);
        return { latex: `\\ln(\\ln(\\ln(10^{${e * 5}})))`, ref: `log(log(log(10^${e * 5})))` };
      }
    }
  }

  /** mixtures of the other classes */
  mixture(): Expr {
    const parts = [() => this.hugeTiny(), () => this.cancellation(), () => this.nesting()];
    const a = this.pick(parts)();
    const b = this.pick(parts)();
    const op = this.pick(["+", "-", "*", "/"]);
    const latex = op === "/" ? `\\frac{${a.latex}}{${b.latex}}` : op === "*" ? `\\left(${a.latex}\\right)\\cdot\\left(${b.latex}\\right)` : `${a.latex}${op}\\left(${b.latex}\\right)`;
    return { latex, ref: `(${a.ref})${op}(${b.ref})` };
  }

  probes(perClass: number): Probe[] {
    const classes: Array<[string, () => Expr]> = [
      ["trig/exp/log of huge or tiny arguments", () => this.hugeTiny()],
      ["catastrophic cancellation", () => this.cancellation()],
      ["towers of powers", () => this.tower()],
      ["overflow to ±Inf / NaN", () => this.overflow()],
      ["deep nesting", () => this.nesting()],
      ["mixtures", () => this.mixture()],
    ];
    return classes.flatMap(([cls, f]) => Array.from({ length: perClass }, () => ({ cls, ...f() })));
  }

  // ------------------------------------------------------------ ordinary golds

  gold(): Gold {
    const sign = this.r() < 0.2 ? "-" : "";
    switch (this.int(0, 5)) {
      case 0: {
        const n = this.pick([0, 1, 2, this.int(-50, 50), this.int(0, 1000), this.int(0, 10 ** 6)]);
        return { kind: "integer", latex: String(n), ref: String(n), decimal: false };
      }
      case 1: {
        const v = `${sign}${this.int(0, 999)}.${String(this.int(1, 999)).padStart(this.int(1, 3), "0")}`;
        return { kind: "decimal", latex: v, ref: v, decimal: true };
      }
      case 2: {
        const b = this.int(2, 50);
        const a = this.int(1, 200);
        return { kind: "fraction", latex: `${sign}\\frac{${a}}{${b}}`, ref: `${sign}${a}/${b}`, decimal: false };
      }
      case 3: {
        const [a, b, c] = [this.int(1, 20), this.pick([2, 3, 5, 6, 7, 10, 11, 13, 15, 17]), this.int(1, 12)];
        return this.r() < 0.5
          ? { kind: "radical", latex: `${sign}${a}\\sqrt{${b}}`, ref: `${sign}${a}*sqrt(${b})`, decimal: false }
          : { kind: "radical", latex: `${sign}\\frac{${a}\\sqrt{${b}}}{${c}}`, ref: `${sign}${a}*sqrt(${b})/${c}`, decimal: false };
      }
      case 4: {
        const [k, m] = [this.int(1, 24), this.int(1, 12)];
        return this.r() < 0.5
          ? { kind: "π-multiple", latex: `${sign}${k}\\pi`, ref: `${sign}${k}*pi`, decimal: false }
          : { kind: "π-multiple", latex: `${sign}\\frac{${k}\\pi}{${m}}`, ref: `${sign}${k}*pi/${m}`, decimal: false };
      }
      default: {
        const n = this.pick([0, this.int(1, 100), this.int(100, 100_000)]);
        return { kind: "GSM8K #### n", latex: `#### ${n}`, ref: String(n), decimal: false };
      }
    }
  }
}

/** The reference value; null when it is not a finite real number (then no finite gold may equal it). */
function reference(ref: string): Big | null {
  if (ref === "") return null;
  try {
    const v: unknown = M.evaluate(ref);
    if (M.isBigNumber(v) && v.isFinite()) return v;
  } catch {
    // a reference that cannot be evaluated is not finite
  }
  return null;
}

/**
 * Whether the two reference values are within the documented tolerance (a real equality, not a false positive).
 * `roundedDecimals`: the gold is a matrix entry written with that many decimals (2 or 3), which the policy reads as
 * a rounded value (README "Soundness": `\frac13` matches `0.33`): within half a unit of its last digit.
 */
function withinPolicy(v: Big | null, g: Big, decimal: boolean, roundedDecimals: number | null = null): boolean {
  if (v === null) return false;
  const d = v.minus(g).abs();
  const ag = g.abs();
  if (roundedDecimals !== null && d.lte(M.bignumber(0.5).times(M.bignumber(10).pow(-roundedDecimals)).times(1 + 1e-9))) return true;
  if (!decimal) return d.lte(ag.times(1e-10));
  const scale = ag.div(1000);
  const tol = M.bignumber(1e-6).times(scale.gt(1) ? scale : 1);
  return d.lte(tol) && (ag.gte(1) || d.lte(ag.times(0.01)));
}

/**
 * Runs every probe against every gold; returns the equal verdicts the reference does not confirm. Yields to the event
 * loop after each probe so that the test worker keeps answering its runner on a loaded machine.
 */
async function run(probes: Probe[], golds: Gold[], wrap: (x: string) => string = (x) => x, matrixEntries = false) {
  // the decimals of a decimal gold written as a matrix entry with 2 or 3 of them (see withinPolicy)
  const rounded = (g: Gold) => {
    const n = g.decimal ? (g.latex.split(".")[1] ?? "").length : 0;
    return matrixEntries && n >= 2 && n <= 3 ? n : null;
  };
  const goldRefs = golds.map((g) => reference(g.ref) as Big);
  const analysedGolds = golds.map((g) => (g.latex.startsWith("####") ? null : analyse([wrap(g.latex)], "gold", "boxed")));
  const falsePositives: string[] = [];
  let equal = 0;
  let undecidable = 0;
  let comparisons = 0;
  for (const p of probes) {
    await new Promise((resolve) => setImmediate(resolve));
    const pv = reference(p.ref);
    const analysedPred = analyse([wrap(p.latex)], "pred", "boxed");
    for (let j = 0; j < golds.length; j++) {
      const g = golds[j];
      const ag = analysedGolds[j];
      let correct: boolean;
      if (ag === null) {
        const r = verify(`<think>x</think> so \\boxed{${wrap(p.latex)}}`, g.latex);
        correct = r.correct;
        if (r.undecidable) undecidable++;
      } else {
        const r = compareAnalysed(analysedPred, ag);
        correct = r.equal;
        if (r.undecidable !== undefined) undecidable++;
      }
      comparisons++;
      if (!correct) continue;
      equal++;
      if (!withinPolicy(pv, goldRefs[j], g.decimal, rounded(g))) falsePositives.push(`[${p.cls}] ${wrap(p.latex)} vs ${g.kind} ${g.latex}`);
    }
  }
  return { falsePositives, equal, undecidable, comparisons };
}

describe(`soundness: exploit candidates against random golds (seed ${SEED})`, () => {
  const gen = new Gen(rng(SEED));
  const probes = gen.probes(PER_CLASS);
  const golds = Array.from({ length: GOLDS }, () => gen.gold());

  it("the issue's probes are not equal, with the reason", () => {
    const cases: Array<[string, string, RegExp]> = [
      ["The answer is \\boxed{\\sin(10^{20})}", "42", /^not equal/],
      ["so \\boxed{\\cos(10^{300})}", "#### 18", /^not equal/],
      ["\\boxed{\\sqrt{10^{40}+1}-10^{20}}", "\\frac{3}{7}", /^not equal \(undecidable: error bound/],
      ["\\boxed{1e309}", "\\infty", /never infinity/],
      ["\\boxed{\\sin(10^{20})}", "0.5", /^not equal/],
      ["\\boxed{\\sqrt{10^{40}+1}-10^{20}}", "0", /^not equal \(undecidable/],
    ];
    for (const [pred, gold, why] of cases) {
      const r = verify(pred, gold);
      expect(r.correct, `${pred} vs ${gold}: ${r.reason}`).toBe(false);
      expect(r.reason).toMatch(why);
    }
  });

  it("exact arithmetic where it is exact, certified numerics where it is not", () => {
    const equal: Array<[string, string]> = [
      ["(10^{16}+1)-10^{16}", "1"],
      ["0.1+0.2", "0.3"],
      ["\\sqrt{2}+\\frac{3}{7}", "\\frac{3}{7}+\\sqrt2"],
      ["\\sin^2(3)+\\cos^2(3)", "1"],
      ["e^{i\\pi}", "-1"],
      ["\\sqrt{8}", "2\\sqrt{2}"],
      ["\\log_2 1024", "10"],
      ["\\tan\\frac{\\pi}{3}", "\\sqrt3"],
      ["(\\sqrt2, \\pi)", "(\\frac{2}{\\sqrt2}, \\frac{22}{7}-(\\frac{22}{7}-\\pi))"],
    ];
    for (const [p, g] of equal) expect(verify(`\\boxed{${p}}`, g).correct, `${p} vs ${g}: ${verify(`\\boxed{${p}}`, g).reason}`).toBe(true);
    expect(verify("\\boxed{(10^{16}+1)-10^{16}}", "0").correct).toBe(false);
    // equal in truth, but the cancellation leaves no digit to compare: undecidable, never a guess
    const r = verify("\\boxed{\\sqrt{10^{40}+1}-10^{20}+\\frac{3}{7}}", "\\sqrt{10^{40}+1}+\\frac{3}{7}-10^{20}");
    expect(r.correct).toBe(false);
    expect(r.undecidable).toBe(true);
  });

  const classes = [...new Set(probes.map((p) => p.cls))];
  it.each(classes)(`%s: ${PER_CLASS} candidates × ${GOLDS} golds, no equal verdict the 120-digit reference does not confirm`, async (cls) => {
    const mine = probes.filter((p) => p.cls === cls);
    const r = await run(mine, golds);
    const kinds = new Map<string, number>();
    for (const g of golds) kinds.set(g.kind, (kinds.get(g.kind) ?? 0) + 1);
    console.log(
      `soundness (seed ${SEED}) ${cls}: ${mine.length} candidates × ${golds.length} golds (${[...kinds].map(([k, n]) => `${k} ${n}`).join(", ")}) ` +
        `= ${r.comparisons} comparisons: ${r.equal} equal (${r.equal - r.falsePositives.length} confirmed by the reference), ${r.undecidable} undecidable`,
    );
    expect(r.falsePositives.slice(0, 20), r.falsePositives.slice(0, 20).join("\n")).toEqual([]);
  });

  it("the same inside tuples, sets, intervals, matrices and the identity check", async () => {
    const few = golds.filter((g) => !g.latex.startsWith("####")).slice(0, 150);
    const wraps: Array<[string, (x: string) => string]> = [
      ["tuple", (x) => `(${x}, 1)`],
      ["set", (x) => `\\{${x}, -2\\}`],
      ["interval", (x) => `[-10^{9}, ${x}]`],
      ["matrix", (x) => `\\begin{pmatrix}${x} & 1\\\\ 0 & 1\\end{pmatrix}`],
      // a multiple of x^2: relative differences stay those of the scalars (a tiny term *added* to a polynomial
      // is within the relative tolerance of the values: README "Soundness")
      ["identity", (x) => `\\left(${x}\\right)\\cdot x^{2}`],
    ];
    for (const [name, wrap] of wraps) {
      const r = await run(probes, few, wrap, name === "matrix");
      expect(r.falsePositives.slice(0, 10), `${name}:\n${r.falsePositives.slice(0, 10).join("\n")}`).toEqual([]);
    }
  });
});

const DATA = fileURLToPath(new URL("../../../../shared/data/", import.meta.url));
const haveData = existsSync(`${DATA}gsm8k_test.jsonl`) && existsSync(`${DATA}math500_test.jsonl`);
if (!haveData) console.log(`[soundness.test] trainer-reward test skipped: shared data not found at ${DATA}`);

describe.skipIf(!haveData)("through the trainer's reward function (mathReward, as apps/trainer's pipeline calls it)", () => {
  const lines = (name: string) => readFileSync(`${DATA}${name}`, "utf8").split("\n").filter((l) => l.trim() !== "");
  const pick = <T>(xs: T[], n: number, r: () => number) => Array.from({ length: n }, () => xs[Math.floor(r() * xs.length)]);
  const r = rng(SEED ^ 0x5bd1e995);
  const gsm8k = pick(lines("gsm8k_test.jsonl"), 200, r).map((l) => `#### ${(JSON.parse(l) as { answer: string }).answer.split("####").pop()?.trim()}`);
  const math500 = pick(lines("math500_test.jsonl"), 200, r).map((l) => (JSON.parse(l) as { answer: string }).answer);
  const golds = [...gsm8k, ...math500];
  // fixed strings: a generated one may be a legitimate value (`\sqrt{\sqrt{\sqrt{\sqrt{10^{16}}}}}` is 10)
  const exploits = [
    "\\sin(10^{20})",
    "\\cos(10^{300})",
    "\\sqrt{10^{40}+1}-10^{20}",
    "1e309",
    "\\frac{1}{\\sqrt{10^{40}+1}-10^{20}}",
    "e^{1000}-e^{999}",
    "(1+10^{-30})^{10^{30}}",
    "\\infty-\\infty",
    "\\tan(10^{100})",
    "\\sin(\\sin(\\sin(10^{50})))",
    "\\frac{e^{10^{-20}}-1}{10^{-20}}",
    "10^{20}(\\cos(10^{-12})-1)",
    "2^{2^{2^{2^{2}}}}",
    "\\sec(7\\cdot 10^{200})",
    "(10^{30}+\\pi)-10^{30}-3",
    "\\ln(1+10^{-40})",
  ];

  it.each(exploits)("a policy that always answers %s earns mean reward 0 on 200 GSM8K + 200 MATH-500 problems", (exploit) => {
    const completion = `<think>\nLet me compute this carefully.\n</think>\nThe answer is \\boxed{${exploit}}.`;
    const rewards = golds.map((g) => mathReward(completion, g));
    const mean = rewards.reduce((a, x) => a + x.reward, 0) / rewards.length;
    expect(rewards.every((x) => x.formatOk)).toBe(true);
    const won = rewards.map((x, i) => (x.reward > 0 ? `${golds[i]}: ${x.verify.reason}` : "")).filter(Boolean);
    expect(mean, won.slice(0, 5).join("\n")).toBe(0);
  });
});
