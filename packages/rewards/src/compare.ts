/**
 * Equivalence of two answer values (prediction vs gold): structure first, then numbers.
 *
 * Scalars: exact Gaussian-rational comparison when both sides are exactly evaluable (never a tolerance on an
 * integer gold); a decimal literal on either side switches to "equal after rounding to `floatPrecision`
 * decimals"; expressions with variables are compared by exact evaluation at random integer points
 * (Schwartz–Zippel: a polynomial/rational-function identity test) and otherwise by complex-double evaluation at
 * random positive reals (negatives too when abs/floor/… appear), with a relative tolerance plus an error-scale term.
 */
import { freeSymbols, type Node, show, some } from "./ast.js";
import { type Ball, ballEval, decide, div, exactBall, isKnown, relTol, type Verdict } from "./ball.js";
import * as Cx from "./complex.js";
import { exactEval, newState, numEval, UndefinedValue } from "./evaluate.js";
import { type Budget, SizeLimit } from "./limits.js";
import { mulberry32 } from "./random.js";
import { CQ, Q } from "./rational.js";
import type { Val } from "./structure.js";

export interface CompareOptions {
  /** Decimals that must agree when one side is a decimal approximation (Math-Verify `float_rounding`). */
  floatPrecision: number;
  /** Accept a relation prediction (`-2 \le x \le 7`) for a set/interval gold (`[-2,7]`). */
  allowSetRelation: boolean;
  /** Variables must have the same names (`f(x)` ≠ `f(y)`); when false, renaming is allowed. */
  strictVariables: boolean;
  /** Compare bare lists `a, b, c` as multisets instead of in order. */
  unorderedLists: boolean;
}

const hasDecimal = (n: Node): boolean => some(n, (m) => m.t === "num" && m.dec);
const EXACT_MEMO = new WeakMap<Node, CQ | null | UndefinedValue | SizeLimit>();
const BALL_MEMO = new WeakMap<Node, Ball>();
const NO_VARIABLES = new Map<string, Ball>();
const hasInf = (n: Node): boolean => some(n, (m) => m.t === "const" && m.name === "inf");
const hasHugeLiteral = (n: Node): boolean => some(n, (m) => m.t === "num" && !Number.isFinite(m.q ? m.q.toNumber() : Number(m.raw)));
const PIECEWISE = new Set(["abs", "floor", "ceil", "sign", "round", "mod", "max", "min"]);
const isPiecewise = (n: Node): boolean => some(n, (m) => m.t === "fn" && PIECEWISE.has(m.name));
const isGaussianInt = (v: CQ): boolean => v.re.isInt && v.im.isInt;

function renameSyms(n: Node, map: Map<string, string>): Node {
  switch (n.t) {
    case "sym":
      return map.has(n.name) ? { t: "sym", name: map.get(n.name) as string } : n;
    case "add":
    case "sub":
    case "mul":
    case "div":
    case "pow":
      return { ...n, a: renameSyms(n.a, map), b: renameSyms(n.b, map) };
    case "neg":
    case "fact":
    case "pct":
    case "group":
      return { ...n, a: renameSyms(n.a, map) };
    case "fn":
      return { ...n, args: n.args.map((a) => renameSyms(a, map)) };
    default:
      return n;
  }
}

const textKey = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, "");

export class Comparer {
  /** How the last top-level decision was reached. */
  how = "";
  /** Why the last undecidable numeric comparison could not be decided (a "not equal" it explains), or null. */
  undecidable: string | null = null;
  private readonly rng: () => number;

  constructor(
    readonly opts: CompareOptions,
    readonly budget: Budget,
  ) {
    this.rng = mulberry32(0x2545f491);
  }

  private set(how: string, result: boolean): boolean {
    this.how = how;
    return result;
  }

  /** An undecidable comparison is "not equal", with the reason kept for the verdict. */
  private undecided(why: string): boolean {
    this.undecidable = why;
    return this.set(`undecidable: ${why}`, false);
  }

  private certified(v: Verdict, how: string): boolean {
    if (v.verdict === "undecidable") return this.undecided(v.why);
    return this.set(how, v.verdict === "equal");
  }

  // ------------------------------------------------------------------ values

  vals(p0: Val, g0: Val): boolean {
    this.budget.tick();
    const p = unwrapSingleton(this.dedupeSet(p0));
    const g = unwrapSingleton(this.dedupeSet(g0));
    if (p.k === "member" && g.k === "member") return p.label === g.label && this.vals(p.set, g.set);
    if (p.k === "member") return this.vals(p.set, g);
    if (g.k === "member") return this.vals(p, g.set);

    if (p.k === "assign" && g.k === "assign") {
      if (p.label === g.label) return this.vals(p.value, g.value);
      // `x = (y-3)/2` for `y = 2x + 3`: the same equation solved for another variable
      if (p.value.k === "expr" && g.value.k === "expr" && /^[A-Za-z\\][\w\\']*$/.test(p.label) && /^[A-Za-z\\][\w\\']*$/.test(g.label))
        return this.relations(p, g);
      return this.set("different variable names", false);
    }
    if (p.k === "assign" && g.k !== "rel" && g.k !== "record") return this.vals(p.value, g);
    if (g.k === "assign" && p.k !== "rel" && p.k !== "record") return this.vals(p, g.value);

    if (p.k === "record" || g.k === "record") return this.records(p, g);
    if (p.k === "rel" || g.k === "rel") return this.relations(p, g);
    if (p.k === "text" || g.k === "text") {
      if (p.k === "text" && g.k === "text") return this.set("text", textKey(p.s) === textKey(g.s));
      // `\text{abc}` is the symbol abc, which plain input spells a·b·c (Math-Verify: Evelyn = e*v*e*l*y*n)
      const t = (p.k === "text" ? p : g) as Val & { k: "text" };
      const o = p.k === "text" ? g : p;
      const spelled = o.k === "expr" ? spell(o.e) : null;
      if (spelled !== null && spelled.length >= 2) return this.set("text vs spelled symbol", spelled.toLowerCase() === textKey(t.s));
      return this.set("text vs math", false);
    }
    if (p.k === "base" || g.k === "base") return this.bases(p, g);
    if (p.k === "ratio" || g.k === "ratio") {
      if (p.k !== "ratio" || g.k !== "ratio" || p.parts.length !== g.parts.length) return this.set("ratio shape", false);
      return p.parts.every((x, i) => this.scalar(x, g.parts[i])) && this.set("ratio", true);
    }
    if (p.k === "matrix" || g.k === "matrix") return this.matrices(p, g);
    if (p.k === "interval" || g.k === "interval" || p.k === "union" || g.k === "union") return this.sets(p, g);
    if (p.k === "list" && g.k === "list") return this.lists(p, g);
    if (p.k === "list" || g.k === "list") return this.decimalComma(p, g);
    if (p.k === "expr" && g.k === "expr") return this.scalar(p.e, g.e);
    return this.set("different kinds", false);
  }

  /** `0,111` / `2,74` / `1000,99` (a two-item list of digit strings) read as a decimal comma against a decimal. */
  private decimalComma(p: Val, g: Val): boolean {
    const asDecimal = (v: Val): Q | null => {
      if (v.k !== "list" || !v.ordered || v.brackets !== "none" || v.items.length !== 2) return null;
      const [a, b] = v.items;
      if (a.k !== "expr" || b.k !== "expr" || a.e.t !== "num" || b.e.t !== "num") return null;
      if (!/^\d+$/.test(a.e.raw) || !/^\d+$/.test(b.e.raw)) return null;
      return Q.parseDecimal(`${a.e.raw}.${b.e.raw}`);
    };
    const decLiteral = (v: Val): Q | null => (v.k === "expr" && v.e.t === "num" && v.e.dec ? v.e.q : null);
    const a = asDecimal(p) ?? decLiteral(p);
    const b = asDecimal(g) ?? decLiteral(g);
    if (a && b && (asDecimal(p) !== null) !== (asDecimal(g) !== null)) return this.set("decimal comma", a.eq(b));
    return this.set("list vs single value", false);
  }

  private bases(p: Val, g: Val): boolean {
    const value = (digits: string, base: number): bigint => {
      let v = 0n;
      for (const d of digits) v = v * BigInt(base) + BigInt(parseInt(d, 36));
      return v;
    };
    if (p.k === "base" && g.k === "base") return this.set("base numeral", value(p.digits, p.base) === value(g.digits, g.base));
    const b = (p.k === "base" ? p : g) as Val & { k: "base" };
    const o = p.k === "base" ? g : p;
    if (o.k === "expr" && o.e.t === "num" && /^\d+$/.test(o.e.raw)) {
      const digits = o.e.raw.replace(/^0+(?=\d)/, "");
      // the subscript omitted (`204` for `204_5`), or a base-10 numeral
      if (digits === b.digits) return this.set("base digits", true);
      if (b.base === 10 && o.e.q) return this.set("base 10", o.e.q.eq(Q.of(value(b.digits, 10))));
    }
    return this.set("base numeral", false);
  }

  private matrices(p: Val, g: Val): boolean {
    const grid = (v: Val): Node[][] | null => {
      if (v.k === "matrix") return v.rows;
      // an ordered tuple is a column vector
      if (v.k === "list" && v.ordered && v.brackets !== "[]" && v.items.every((x) => x.k === "expr"))
        return v.items.map((x) => [(x as Val & { k: "expr" }).e]);
      return null;
    };
    let a = grid(p) ?? nestedGrid(p);
    let b = grid(g) ?? nestedGrid(g);
    if (!a || !b) return this.set("matrix vs other", false);
    if (a.length === 1 && b.length > 1 && b[0].length === 1) a = a[0].map((x) => [x]);
    if (b.length === 1 && a.length > 1 && a[0].length === 1) b = b[0].map((x) => [x]);
    if (a.length !== b.length || a[0].length !== b[0].length) return this.set("matrix shape", false);
    for (let i = 0; i < a.length; i++)
      for (let j = 0; j < a[i].length; j++) if (!this.scalar(a[i][j], b[i][j]) && !this.roundedEntry(a[i][j], b[i][j])) return this.set("matrix entry", false);
    return this.set("matrix", true);
  }

  /** A gold matrix entry written with 2 or 3 decimals is that value rounded: the entry must round to it (±half a unit). */
  private roundedEntry(p: Node, g: Node): boolean {
    const d = decimalsOf(g);
    if (d === null || d < 2 || d > 3 || d >= this.opts.floatPrecision || hasInf(p) || freeSymbols(p).length > 0) return false;
    const v = decide(this.ballConst(p), this.ballConst(g), 0.5 * 10 ** -d * (1 + 1e-9));
    return this.certified(v, `matrix entry rounded to ${d} decimals`);
  }

  private records(p: Val, g: Val): boolean {
    if (p.k === "record" && g.k === "record") {
      if (p.entries.length !== g.entries.length) return this.set("record size", false);
      for (const e of p.entries) {
        const other = g.entries.find((x) => x.label === e.label);
        if (!other || !this.vals(e.value, other.value)) return this.set("record entry", false);
      }
      return this.set("record", true);
    }
    const r = (p.k === "record" ? p : g) as Val & { k: "record" };
    const o = p.k === "record" ? g : p;
    if (o.k !== "list") return this.set("record vs other", false);
    const asList: Val = { k: "list", items: r.entries.map((e) => e.value), ordered: true, brackets: "none" };
    return p.k === "record" ? this.lists(asList, o) : this.lists(o, asList);
  }

  private lists(p: Val & { k: "list" }, g: Val & { k: "list" }): boolean {
    if (p.ordered && g.ordered) {
      const bothBracketed = p.brackets !== "none" && g.brackets !== "none";
      if (this.opts.unorderedLists && p.brackets === "none" && g.brackets === "none") return this.multiset(p.items, g.items);
      if (p.items.length !== g.items.length) return this.set("tuple length", false);
      if (bothBracketed && p.brackets !== g.brackets && p.items.length === 2) return this.set("brackets differ", false);
      for (let i = 0; i < p.items.length; i++) if (!this.vals(p.items[i], g.items[i])) return this.set("tuple element", false);
      return this.set("tuple", true);
    }
    if (!p.ordered && !g.ordered) return this.multiset(p.items, g.items);
    const ord = p.ordered ? p : g;
    if (ord.brackets === "none" || this.opts.unorderedLists) return this.multiset(p.items, g.items);
    // A parenthesised tuple against a set: element by element in the written order (Math-Verify).
    if (p.items.length !== g.items.length) return this.set("size", false);
    for (let i = 0; i < p.items.length; i++) if (!this.vals(p.items[i], g.items[i])) return this.set("tuple vs set", false);
    return this.set("tuple vs set", true);
  }

  /** Several boxes / an enumeration that repeat one value (`\\boxed{15\\frac{39}{40}}, or \\boxed{\\frac{639}{40}}`) are one answer. */
  private dedupeSet(v: Val): Val {
    if (v.k !== "list" || v.ordered || v.items.length < 2) return v;
    const items = this.dedupe(v.items);
    return items.length === v.items.length ? v : { ...v, items };
  }

  /** Cheap canonical key: the exact value of a constant, else the printed tree. */
  private key(v: Val): string {
    if (v.k === "expr") {
      try {
        const q = exactEval(v.e, null, this.budget);
        if (q) return `=${q.toString()}`;
      } catch (e) {
        if (!(e instanceof UndefinedValue || e instanceof SizeLimit)) throw e;
      }
      return show(v.e);
    }
    return JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x instanceof Q ? x.toString() : x));
  }

  /** Removes repeated elements: identical keys always, equivalent ones pairwise for small sets. */
  private dedupe(items: Val[]): Val[] {
    const seen = new Set<string>();
    const byKey: Val[] = [];
    for (const v of items) {
      const k = this.key(v);
      if (!seen.has(k)) {
        seen.add(k);
        byKey.push(v);
      }
    }
    if (byKey.length > 16) return byKey;
    const out: Val[] = [];
    for (const v of byKey) if (!out.some((u) => this.vals(u, v))) out.push(v);
    return out;
  }

  /** Same elements with the same multiplicities after removing duplicates; never "any overlap". */
  private multiset(a0: Val[], b0: Val[]): boolean {
    const a = this.dedupe(a0);
    const b = this.dedupe(b0);
    if (a.length !== b.length) return this.set("set size", false);
    const used = new Array<boolean>(b.length).fill(false);
    // identical keys first (cheap), then the full comparison for what is left
    const bKeys = b.map((v) => this.key(v));
    const rest: Val[] = [];
    for (const x of a) {
      const k = this.key(x);
      const j = bKeys.findIndex((bk, idx) => !used[idx] && bk === k);
      if (j >= 0) used[j] = true;
      else rest.push(x);
    }
    for (const x of rest) {
      let hit = -1;
      for (let j = 0; j < b.length && hit < 0; j++) if (!used[j] && this.vals(x, b[j])) hit = j;
      if (hit < 0) return this.set("set element", false);
      used[hit] = true;
    }
    return this.set("set", true);
  }

  // ------------------------------------------------------------------ sets and intervals

  private setParts(v: Val): Val[] | null {
    if (v.k === "interval") return [v];
    if (v.k === "union") {
      const out: Val[] = [];
      for (const p of v.parts) {
        const q = this.setParts(p);
        if (!q) return null;
        out.push(...q);
      }
      return out;
    }
    if (v.k === "list" && v.ordered && v.items.length === 2 && v.brackets !== "none") {
      const [a, b] = v.items;
      if (a.k === "expr" && b.k === "expr") return [{ k: "interval", lo: a.e, hi: b.e, lc: v.brackets === "[]", hc: v.brackets === "[]" }];
    }
    if (v.k === "list" && !v.ordered) return v.items.length === 0 ? [] : [v];
    return null;
  }

  private sets(p: Val, g: Val): boolean {
    const a = this.setParts(p);
    const b = this.setParts(g);
    if (!a || !b) return this.set("set vs other", false);
    if (a.length !== b.length) return this.set("union parts", false);
    const used = new Array<boolean>(b.length).fill(false);
    for (const x of a) {
      let hit = -1;
      for (let j = 0; j < b.length && hit < 0; j++) if (!used[j] && this.setPart(x, b[j])) hit = j;
      if (hit < 0) return this.set("interval", false);
      used[hit] = true;
    }
    return this.set("interval", true);
  }

  private setPart(x: Val, y: Val): boolean {
    if (x.k === "interval" && y.k === "interval")
      return x.lc === y.lc && x.hc === y.hc && this.scalar(x.lo, y.lo) && this.scalar(x.hi, y.hi);
    if (x.k === "list" && y.k === "list") return this.multiset(x.items, y.items);
    return false;
  }

  // ------------------------------------------------------------------ relations

  private relations(p: Val, g: Val): boolean {
    const asRel = (v: Val): (Val & { k: "rel" }) | null => {
      if (v.k === "rel") return v;
      if (v.k === "assign" && v.value.k === "expr") return { k: "rel", terms: [{ t: "sym", name: v.label }, v.value.e], ops: ["="] };
      return null;
    };
    const pr = asRel(p);
    const gr = asRel(g);
    if (pr && gr) return this.relRel(pr, gr);
    if (p.k === "rel") {
      const chain = constantChain(p);
      if (chain) return this.vals({ k: "expr", e: chain }, g);
      if (this.opts.allowSetRelation && isSetValue(g)) {
        const s = relToSet(p);
        if (s) return this.vals(s, g);
      }
      return this.set("relation vs value", false);
    }
    if (g.k === "rel") {
      const chain = constantChain(g);
      if (chain) return this.vals(p, { k: "expr", e: chain });
      // a set/interval prediction for a relation gold is accepted (the reverse only with allowSetRelation)
      if (isSetValue(p)) {
        const s = relToSet(g);
        if (s) return this.vals(p, s);
      }
    }
    return this.set("relation vs value", false);
  }

  private relRel(p: Val & { k: "rel" }, g: Val & { k: "rel" }): boolean {
    const sp = relToSet(p);
    const sg = relToSet(g);
    if (sp && sg) return relVar(p) === relVar(g) && this.vals(sp, sg);
    const eqs = (r: Val & { k: "rel" }) => r.ops.every((o) => o === "=");
    if (eqs(p) && eqs(g)) {
      const f = diff(p.terms[0], p.terms[p.terms.length - 1]);
      const h = diff(g.terms[0], g.terms[g.terms.length - 1]);
      return this.set("equation", this.proportional(f, h, false));
    }
    const pa = atoms(p);
    const ga = atoms(g);
    if (!pa || !ga || pa.length !== ga.length) return this.set("relation shape", false);
    const used = new Array<boolean>(ga.length).fill(false);
    for (const x of pa) {
      let hit = -1;
      for (let j = 0; j < ga.length && hit < 0; j++) {
        const y = ga[j];
        if (used[j] || x.kind !== y.kind) continue;
        if (this.proportional(x.f, y.f, x.kind !== "ne")) hit = j;
      }
      if (hit < 0) return this.set("inequality", false);
      used[hit] = true;
    }
    return this.set("inequality", true);
  }

  /** Whether f = c·h for a constant c ≠ 0 (c > 0 when `positive`). */
  private proportional(f: Node, h: Node, positive: boolean): boolean {
    const syms = union(freeSymbols(f), freeSymbols(h));
    if (syms.length === 0) return false;
    let ratio: CQ | null = null;
    let valid = 0;
    let exactPossible = true;
    for (let k = 0; k < 10 && valid < 4 && exactPossible; k++) {
      const env = new Map(syms.map((s) => [s, CQ.real(Q.int(this.randInt()))]));
      let a: CQ | null;
      let b: CQ | null;
      try {
        a = exactEval(f, env, this.budget);
        b = a && exactEval(h, env, this.budget);
      } catch (e) {
        if (e instanceof UndefinedValue) continue;
        if (e instanceof SizeLimit) {
          exactPossible = false;
          break;
        }
        throw e;
      }
      if (!a || !b) {
        exactPossible = false;
        break;
      }
      if (b.isZero) {
        if (a.isZero) continue;
        return false;
      }
      const r = a.div(b);
      if (r.isZero) return false;
      if (ratio === null) {
        ratio = r;
        if (positive && !(r.isReal && r.re.sign > 0)) return false;
      } else if (!r.eq(ratio)) return false;
      valid++;
    }
    if (exactPossible) return valid >= 3;
    // numeric, with certified error bounds: points where a ratio cannot be pinned down are skipped
    let first: Ball | null = null;
    valid = 0;
    const neg = isPiecewise(f) || isPiecewise(h);
    for (let k = 0; k < 12 && valid < 6; k++) {
      const env = this.realPoint(syms, neg && k % 2 === 1);
      const r = div(ballEval(f, env, this.budget), ballEval(h, env, this.budget));
      const m = Math.hypot(r.re, r.im);
      if (!isKnown(r) || m - r.rad <= 0) continue;
      if (first === null) {
        if (positive) {
          const surelyNot = r.re + r.rad < 0 || Math.abs(r.im) - r.rad > 1e-9 * m;
          if (surelyNot) return false;
          if (r.re - r.rad <= 0 || Math.abs(r.im) > r.rad + 1e-9 * m) continue;
        }
        first = r;
      } else {
        const v = decide(r, first, 1e-8 * Math.hypot(first.re, first.im));
        if (v.verdict === "different") return false;
        if (v.verdict === "undecidable") {
          this.undecidable = v.why;
          continue;
        }
      }
      valid++;
    }
    return valid >= 3;
  }

  // ------------------------------------------------------------------ scalars

  scalar(p: Node, g: Node): boolean {
    this.budget.tick();
    this.undecidable = null;
    const topPct = (n: Node): boolean => n.t === "pct" || (n.t === "neg" && topPct(n.a));
    if (topPct(p) || topPct(g)) {
      // a percentage is x/100, and a bare x also matches x% (hendrycks: `10\%` = `10`); never ×100 without a % sign
      if (this.scalarCore(p, g)) return true;
      return this.scalarCore(stripPct(p), stripPct(g));
    }
    return this.scalarCore(p, g);
  }

  private scalarCore(p: Node, g0: Node): boolean {
    let g = g0;
    if (show(p) === show(g)) return this.set("identical", true);
    const decimals = hasDecimal(p) || hasDecimal(g);
    if (this.bigOperators(p, g, decimals)) return true;
    let ps = freeSymbols(p);
    const gs = freeSymbols(g);
    if (!this.opts.strictVariables && ps.join(",") !== gs.join(",") && ps.length === gs.length) {
      const map = new Map(gs.map((s, i) => [s, ps[i]]));
      g = renameSyms(g, map);
    }
    ps = union(ps, freeSymbols(g));
    if (ps.length === 0) return this.constants(p, g, decimals);
    return this.identity(p, g, ps, decimals);
  }

  /**
   * Two sums (or products) with the same limits whose terms are the same function of the index (`\\sum_{k=1}^n 2k`
   * vs `\\sum_{j=1}^n j\\cdot 2`): equal without evaluating them, which symbolic limits would not allow.
   */
  private bigOperators(p: Node, g: Node, decimals: boolean): boolean {
    const sp = stripGroup(p);
    const sg = stripGroup(g);
    if (sp.t !== "fn" || sg.t !== "fn" || sp.name !== sg.name || (sp.name !== "sum" && sp.name !== "prod")) return false;
    const [ip, lp, hp, tp] = sp.args;
    const [ig, lg, hg, tg0] = sg.args;
    if (ip.t !== "sym" || ig.t !== "sym" || !this.scalar(lp, lg) || !this.scalar(hp, hg)) return false;
    const tg = renameSyms(tg0, new Map([[ig.name, ip.name]]));
    const syms = union(union(freeSymbols(tp), freeSymbols(tg)), [ip.name]);
    return this.identity(tp, tg, syms, decimals) && this.set(`${sp.name} term by term`, true);
  }

  private constants(p: Node, g: Node, decimals: boolean): boolean {
    if (hasInf(p) || hasInf(g)) return this.infinities(p, g);
    let ep: CQ | null = null;
    let eg: CQ | null = null;
    try {
      ep = this.exactConst(p);
      eg = this.exactConst(g);
    } catch (e) {
      if (e instanceof UndefinedValue) return this.set("undefined value", false);
      if (!(e instanceof SizeLimit)) throw e;
      ep = eg = null;
    }
    if (ep && eg) {
      if (ep.eq(eg)) return this.set("exact", true);
      if (!decimals) return this.set("exact", false);
      if (isGaussianInt(eg) && !hasDecimal(g)) return this.set("exact (integer gold)", false);
      // the exact difference, rounded once: no cancellation in doubles
      const d = ep.sub(eg);
      const diff: Ball = { re: d.re.toNumber(), im: d.im.toNumber(), rad: 0, real: d.isReal };
      diff.rad = 1e-15 * Math.hypot(diff.re, diff.im);
      const gold = exactBall(eg.re.toNumber(), eg.im.toNumber());
      return this.certified(decide(diff, exactBall(0), this.roundingTol(gold)), "rounded decimal");
    }
    if (decimals && eg && isGaussianInt(eg) && !hasDecimal(g)) return this.set("exact (integer gold)", false);
    const a = this.ballConst(p);
    const b = this.ballConst(g);
    if (decimals) return this.certified(decide(a, b, this.roundingTol(b)), "rounded decimal");
    return this.certified(decide(a, b, relTol(a, b)), "numeric");
  }

  /**
   * The exact value of a constant tree, remembered per tree: one parsed answer compared with many (several boxes,
   * set elements, a batch against one gold) is evaluated once. Only outcomes that do not depend on the budget are kept.
   */
  private exactConst(n: Node): CQ | null {
    const hit = EXACT_MEMO.get(n);
    if (hit !== undefined) {
      if (hit instanceof UndefinedValue || hit instanceof SizeLimit) throw hit;
      return hit;
    }
    try {
      const v = exactEval(n, null, this.budget);
      EXACT_MEMO.set(n, v);
      return v;
    } catch (e) {
      if (e instanceof UndefinedValue || e instanceof SizeLimit) EXACT_MEMO.set(n, e);
      throw e;
    }
  }

  private ballConst(n: Node): Ball {
    let b = BALL_MEMO.get(n);
    if (b === undefined) {
      b = ballEval(n, NO_VARIABLES, this.budget);
      BALL_MEMO.set(n, b);
    }
    return b;
  }

  /** `\infty` only equals an infinity of the same sign: a finite number, however large, is never infinite. */
  private infinities(p: Node, g: Node): boolean {
    if (hasInf(p) !== hasInf(g)) return this.set("infinity on one side only (a finite value is never infinity)", false);
    if (hasHugeLiteral(p) || hasHugeLiteral(g)) return this.undecided("a literal beyond the double range next to infinity");
    const sa = newState();
    const sb = newState();
    const a = numEval(p, new Map(), sa, this.budget);
    const b = numEval(g, new Map(), sb, this.budget);
    const inf = (z: Cx.C) => !Number.isFinite(z.re) && !Number.isNaN(z.re) && z.im === 0;
    if (inf(a) && inf(b) && !sa.overflow && !sb.overflow) return this.set("infinity", a.re === b.re);
    return this.set("infinity", false);
  }

  private identity(p: Node, g: Node, syms: string[], decimals: boolean): boolean {
    // exact evaluation at random integer points: a polynomial / rational-function identity test
    let valid = 0;
    let exactPossible = true;
    for (let k = 0; k < 10 && valid < 4; k++) {
      const env = new Map(syms.map((s) => [s, CQ.real(Q.int(this.randInt()))]));
      let a: CQ | null;
      let b: CQ | null;
      try {
        a = exactEval(p, env, this.budget);
        b = a && exactEval(g, env, this.budget);
      } catch (e) {
        if (e instanceof UndefinedValue) continue;
        if (e instanceof SizeLimit) {
          exactPossible = false;
          break;
        }
        throw e;
      }
      if (!a || !b) {
        exactPossible = false;
        break;
      }
      if (!a.eq(b)) {
        if (!decimals) return this.set("polynomial identity", false);
        exactPossible = false;
        break;
      }
      valid++;
    }
    if (exactPossible && valid >= 3) return this.set("polynomial identity", true);
    // numeric identity at random positive reals (and negatives when piecewise functions appear), certified:
    // a point where the error bound is too wide is skipped, and a point where the values certainly differ decides
    valid = 0;
    let why = "no point could be evaluated";
    const neg = isPiecewise(p) || isPiecewise(g);
    const tries = 14;
    for (let k = 0; k < tries && valid < 6; k++) {
      const env = this.realPoint(syms, neg && k % 2 === 1);
      const a = ballEval(p, env, this.budget);
      const b = ballEval(g, env, this.budget);
      if (!isKnown(a) && !isKnown(b)) continue;
      const v = decide(a, b, decimals ? this.roundingTol(b) : relTol(a, b));
      if (v.verdict === "different") return this.set("numeric identity", false);
      if (v.verdict === "undecidable") {
        why = v.why;
        continue;
      }
      valid++;
    }
    if (valid >= 3) return this.set("numeric identity", true);
    return this.undecided(`numeric identity decided at ${valid} of ${tries} random points (${why})`);
  }

  /**
   * Tolerance when one side is a decimal approximation: `floatPrecision` decimals (relative 1e-3 of that above
   * 1000), and 1 % for values below 1 so that tiny magnitudes (`1/2^{99}`) are not all "0.000000". Taken at the
   * smallest magnitude the gold's ball allows.
   */
  private roundingTol(gold: Ball): number {
    const mb = Math.max(0, Math.hypot(gold.re, gold.im) - gold.rad);
    const tol = 10 ** -this.opts.floatPrecision * Math.max(1, mb / 1000);
    return (mb < 1 ? Math.min(tol, 0.01 * mb) : tol) * (1 + 1e-9);
  }

  private randInt(): number {
    // avoid 0 and ±1, where many distinct expressions agree
    const v = 2 + Math.floor(this.rng() * 9000);
    return this.rng() < 0.5 ? -v : v;
  }

  private realPoint(syms: string[], negative: boolean): Map<string, Ball> {
    const env = new Map<string, Ball>();
    for (const s of syms) {
      const mag = this.rng() < 0.5 ? 0.2 + 0.75 * this.rng() : 1.1 + 2.2 * this.rng();
      env.set(s, exactBall(negative ? -mag : mag));
    }
    return env;
  }
}

/** mathjs/numpy matrix syntax `[[1, 2], [3, 4]]`. */
function nestedGrid(v: Val): Node[][] | null {
  if (v.k !== "list" || !v.ordered || v.items.length === 0) return null;
  const rows: Node[][] = [];
  for (const r of v.items) {
    if (r.k !== "list" || !r.ordered || r.brackets !== "[]" || !r.items.every((x) => x.k === "expr")) return null;
    rows.push(r.items.map((x) => (x as Val & { k: "expr" }).e));
  }
  return rows.every((r) => r.length === rows[0].length) ? rows : null;
}

/** The letters of a product of single-letter symbols (`e*v*e*l*y*n` → "evelyn"), else null. */
function spell(n: Node): string | null {
  if (n.t === "sym") return /^[A-Za-z]$/.test(n.name) ? n.name : null;
  if (n.t === "const" && (n.name === "e" || n.name === "i")) return n.name;
  if (n.t === "mul") {
    const a = spell(n.a);
    const b = a === null ? null : spell(n.b);
    return a !== null && b !== null ? a + b : null;
  }
  return null;
}

const stripGroup = (n: Node): Node => (n.t === "group" ? stripGroup(n.a) : n);

/** Digits after the point of a plain decimal literal (`0.29` → 2, `-1.186` → 3), else null. */
function decimalsOf(n: Node): number | null {
  if (n.t === "neg") return decimalsOf(n.a);
  if (n.t !== "num" || !n.dec || !/^\d*\.\d+$/.test(n.raw)) return null;
  return n.raw.length - n.raw.indexOf(".") - 1;
}

function union(a: string[], b: string[]): string[] {
  return [...new Set([...a, ...b])].sort();
}

function stripPct(n: Node): Node {
  if (n.t === "pct") return n.a;
  if (n.t === "neg") return { t: "neg", a: stripPct(n.a) };
  return n;
}

const diff = (a: Node, b: Node): Node => ({ t: "sub", a, b });

export function unwrapSingleton(v: Val): Val {
  let cur = v;
  for (let k = 0; k < 8; k++) {
    if (cur.k === "list" && cur.items.length === 1 && (!cur.ordered || cur.brackets === "none")) cur = cur.items[0];
    else if (cur.k === "record" && cur.entries.length === 1) cur = { k: "assign", label: cur.entries[0].label, value: cur.entries[0].value };
    else break;
  }
  return cur;
}

const isSetValue = (v: Val): boolean =>
  v.k === "interval" || v.k === "union" || (v.k === "list" && (!v.ordered || (v.items.length === 2 && v.brackets !== "none")));

/** `5+5+1 = 11` (no variables): a computation whose value is its last term. */
function constantChain(r: Val & { k: "rel" }): Node | null {
  if (!r.ops.every((o) => o === "=")) return null;
  if (r.terms.some((t) => some(t, (m) => m.t === "sym"))) return null;
  return r.terms[r.terms.length - 1];
}

const isConstNode = (n: Node) => !some(n, (m) => m.t === "sym");
const symName = (n: Node): string | null => (n.t === "sym" ? n.name : n.t === "group" ? symName(n.a) : null);
/** The quantity a one-variable range describes: a variable, or its absolute value (`1 \\le |z| \\le 2`). */
const rangeName = (n: Node): string | null => {
  if (n.t === "fn" && n.name === "abs" && n.args.length === 1) {
    const s = symName(n.args[0]);
    return s === null ? null : `|${s}|`;
  }
  return symName(n);
};

function relVar(r: Val & { k: "rel" }): string | null {
  for (const t of r.terms) {
    const s = rangeName(t);
    if (s) return s;
  }
  return null;
}

/** A one-variable inequality (or chain) as the set it describes: `x > 5` → (5, ∞), `-2 \le x \le 7` → [-2, 7]. */
export function relToSet(r: Val & { k: "rel" }): Val | null {
  const negInf: Node = { t: "neg", a: { t: "const", name: "inf" } };
  const posInf: Node = { t: "const", name: "inf" };
  const flip: Record<string, string> = { "<": ">", ">": "<", "<=": ">=", ">=": "<=", "!=": "!=" };
  if (r.terms.length === 2) {
    let [a, b] = r.terms;
    let op: string = r.ops[0];
    if (rangeName(b) && isConstNode(a) && !rangeName(a)) {
      [a, b] = [b, a];
      op = flip[op] ?? op;
    }
    if (!rangeName(a) || !isConstNode(b)) return null;
    switch (op) {
      case "<":
        return { k: "interval", lo: negInf, hi: b, lc: false, hc: false };
      case "<=":
        return { k: "interval", lo: negInf, hi: b, lc: false, hc: true };
      case ">":
        return { k: "interval", lo: b, hi: posInf, lc: false, hc: false };
      case ">=":
        return { k: "interval", lo: b, hi: posInf, lc: true, hc: false };
      case "!=":
        return {
          k: "union",
          parts: [
            { k: "interval", lo: negInf, hi: b, lc: false, hc: false },
            { k: "interval", lo: b, hi: posInf, lc: false, hc: false },
          ],
        };
      default:
        return null;
    }
  }
  if (r.terms.length === 3) {
    const [a, x, b] = r.terms;
    if (!rangeName(x) || !isConstNode(a) || !isConstNode(b)) return null;
    const [o1, o2] = r.ops;
    const up = (o: string) => o === "<" || o === "<=";
    const down = (o: string) => o === ">" || o === ">=";
    if (up(o1) && up(o2)) return { k: "interval", lo: a, hi: b, lc: o1 === "<=", hc: o2 === "<=" };
    if (down(o1) && down(o2)) return { k: "interval", lo: b, hi: a, lc: o2 === ">=", hc: o1 === ">=" };
  }
  return null;
}

interface Atom {
  f: Node;
  kind: "lt" | "le" | "ne";
}

/** A relation as atoms `f < 0`, `f ≤ 0`, `f ≠ 0`. */
function atoms(r: Val & { k: "rel" }): Atom[] | null {
  const out: Atom[] = [];
  for (let k = 0; k < r.ops.length; k++) {
    const a = r.terms[k];
    const b = r.terms[k + 1];
    switch (r.ops[k]) {
      case "<":
        out.push({ f: diff(a, b), kind: "lt" });
        break;
      case "<=":
        out.push({ f: diff(a, b), kind: "le" });
        break;
      case ">":
        out.push({ f: diff(b, a), kind: "lt" });
        break;
      case ">=":
        out.push({ f: diff(b, a), kind: "le" });
        break;
      case "!=":
        out.push({ f: diff(a, b), kind: "ne" });
        break;
      default:
        return null;
    }
  }
  return out;
}
