/**
 * From the parse tree to an answer *value*: what kind of mathematical object the answer is
 * (number/expression, ordered tuple, unordered set, interval, union, matrix, equation or inequality,
 * labelled assignment `x = …`, record `a = 1, b = 2`, membership `x \in S`, base-b numeral, ratio, text).
 */
import { isScalar, type Node, type RelOp, show, some } from "./ast.js";
import { LIMITS, ParseError } from "./limits.js";

export type Brackets = "none" | "()" | "[]";

export type Val =
  | { k: "expr"; e: Node }
  | { k: "text"; s: string }
  /** Ordered (tuple / bare list) or unordered (set, several boxes, an "and"/"or" enumeration, ± expansion). */
  | { k: "list"; items: Val[]; ordered: boolean; brackets: Brackets }
  | { k: "interval"; lo: Node; hi: Node; lc: boolean; hc: boolean }
  | { k: "union"; parts: Val[] }
  | { k: "matrix"; rows: Node[][] }
  | { k: "rel"; terms: Node[]; ops: RelOp[] }
  | { k: "assign"; label: string; value: Val }
  | { k: "record"; entries: Array<{ label: string; value: Val }> }
  | { k: "member"; label: string; set: Val }
  | { k: "base"; digits: string; base: number }
  | { k: "ratio"; parts: Node[] };

const isInf = (n: Node): boolean =>
  (n.t === "const" && n.name === "inf") || ((n.t === "neg" || n.t === "group") && isInf(n.a));

/** Expands every ± into the 2^k sign choices (k ≤ MAX_PM). */
export function expandPm(n: Node): Node[] {
  let count = 0;
  let mp = false;
  const walkCount = (m: Node): void => {
    if (m.t === "pm") {
      count++;
      if (m.mp) mp = true;
    }
  };
  visit(n, walkCount);
  if (count === 0) return [n];
  if (count > LIMITS.MAX_PM) throw new ParseError("too many ±");
  const out: Node[] = [];
  for (let mask = 0; mask < 1 << count; mask++) {
    let idx = 0;
    const rebuild = (m: Node): Node => {
      switch (m.t) {
        case "pm": {
          const plus = ((mask >> idx++) & 1) === 0;
          const useAdd = m.mp ? !plus : plus;
          const b = rebuild(m.b);
          if (m.a === null) return useAdd ? b : { t: "neg", a: b };
          const a = rebuild(m.a);
          return useAdd ? { t: "add", a, b } : { t: "sub", a, b };
        }
        case "add":
        case "sub":
        case "mul":
        case "div":
        case "pow":
          return { ...m, a: rebuild(m.a), b: rebuild(m.b) };
        case "neg":
        case "fact":
        case "pct":
        case "group":
          return { ...m, a: rebuild(m.a) };
        case "fn":
          return { ...m, args: m.args.map(rebuild) };
        default:
          return m;
      }
    };
    out.push(rebuild(n));
  }
  void mp;
  return out;
}

function visit(n: Node, f: (n: Node) => void): void {
  f(n);
  switch (n.t) {
    case "add":
    case "sub":
    case "mul":
    case "div":
    case "pow":
      visit(n.a, f);
      visit(n.b, f);
      break;
    case "neg":
    case "fact":
    case "pct":
    case "group":
      visit(n.a, f);
      break;
    case "pm":
      if (n.a) visit(n.a, f);
      visit(n.b, f);
      break;
    case "fn":
      n.args.forEach((a) => visit(a, f));
      break;
    default:
      break;
  }
}

const strip = (n: Node): Node => (n.t === "group" ? strip(n.a) : n);

/** Whether a tree can stand on the left of `=` as a name: `x`, `a_3`, `f(x)`, `(p,q)`, `\theta`. */
export function isLabel(n: Node): boolean {
  const m = strip(n);
  if (m.t === "sym") return true;
  if (m.t === "tuple" && m.open === "(" && m.items.every((x) => strip(x).t === "sym")) return true;
  // f(x), P(2): a single-letter symbol applied to symbols or numbers
  if (m.t === "mul" && m.a.t === "sym" && m.b.t === "group") {
    const arg = strip(m.b.a);
    return arg.t === "sym" || arg.t === "num";
  }
  // AB, ABC: a segment or angle named by capital letters; NO/BO: a ratio of two of them
  if (m.t === "mul" && isCapitalWord(m)) return true;
  if (m.t === "div" && isCapitalWord(strip(m.a)) && isCapitalWord(strip(m.b))) return true;
  if (m.t === "mul" && m.a.t === "sym" && m.b.t === "tuple" && m.b.open === "(")
    return m.b.items.every((x) => strip(x).t === "sym" || strip(x).t === "num");
  return false;
}

function isCapitalWord(n: Node): boolean {
  if (n.t === "sym") return /^[A-Z]$/.test(n.name);
  return n.t === "mul" && isCapitalWord(n.a) && isCapitalWord(n.b);
}

export const labelKey = (n: Node): string => show(strip(n)).replace(/[{}\s]/g, "");

function scalarVal(n: Node): Val {
  if (some(n, (m) => m.t === "matrix")) return { k: "matrix", rows: matrixValue(n) };
  if (!isScalar(n)) throw new ParseError("collection inside an expression");
  const variants = expandPm(n);
  if (variants.length === 1) return { k: "expr", e: n };
  return { k: "list", items: variants.map((e) => ({ k: "expr", e })), ordered: false, brackets: "none" };
}

/** Evaluates sums, differences, scalar multiples and products of literal matrices entry-wise (as trees). */
export function matrixValue(n: Node): Node[][] {
  const m = strip(n);
  switch (m.t) {
    case "matrix":
      return m.rows;
    case "add":
    case "sub": {
      const a = matrixValue(m.a);
      const b = matrixValue(m.b);
      if (a.length !== b.length || a[0].length !== b[0].length) throw new ParseError("matrix shapes differ");
      return a.map((row, i) => row.map((x, j): Node => ({ t: m.t, a: x, b: b[i][j] }) as Node));
    }
    case "neg":
      return matrixValue(m.a).map((row) => row.map((x): Node => ({ t: "neg", a: x })));
    case "mul": {
      const am = some(m.a, (x) => x.t === "matrix");
      const bm = some(m.b, (x) => x.t === "matrix");
      if (am && bm) {
        const a = matrixValue(m.a);
        const b = matrixValue(m.b);
        if (a[0].length !== b.length) throw new ParseError("matrix shapes differ");
        if (a.length * b[0].length * b.length > 4096) throw new ParseError("matrix product too large");
        return a.map((row) =>
          b[0].map((_, j) => {
            let acc: Node = { t: "mul", a: row[0], b: b[0][j] };
            for (let k = 1; k < b.length; k++) acc = { t: "add", a: acc, b: { t: "mul", a: row[k], b: b[k][j] } };
            return acc;
          }),
        );
      }
      if (am && isScalar(m.b)) return matrixValue(m.a).map((row) => row.map((x): Node => ({ t: "mul", a: x, b: m.b })));
      if (bm && isScalar(m.a)) return matrixValue(m.b).map((row) => row.map((x): Node => ({ t: "mul", a: m.a, b: x })));
      throw new ParseError("unsupported matrix expression");
    }
    case "div":
      if (isScalar(m.b)) return matrixValue(m.a).map((row) => row.map((x): Node => ({ t: "div", a: x, b: m.b })));
      throw new ParseError("unsupported matrix expression");
    default:
      throw new ParseError("unsupported matrix expression");
  }
}

/** Converts a parsed answer to a value. */
export function toVal(n: Node): Val {
  switch (n.t) {
    case "seq":
      return listVal(n.items, n.seps);
    case "rel":
      return relVal(n);
    case "group":
      return isScalar(n.a) ? scalarVal(n) : toVal(n.a);
    case "tuple": {
      const mixed = n.open + n.close !== "()" && n.open + n.close !== "[]";
      if (n.items.length === 2 && (mixed || n.items.some(isInf)) && !n.semis) {
        const [lo, hi] = n.items;
        if (!isScalar(lo) || !isScalar(hi)) throw new ParseError("bad interval");
        return { k: "interval", lo, hi, lc: n.open === "[" && !isInf(lo), hc: n.close === "]" && !isInf(hi) };
      }
      if (mixed) throw new ParseError("mixed brackets");
      return { k: "list", items: n.items.map(toVal), ordered: true, brackets: (n.open + n.close) as Brackets };
    }
    case "set":
      return { k: "list", items: flattenUnordered(n.items.map(toVal)), ordered: false, brackets: "none" };
    case "setop": {
      if (n.op !== "cup") throw new ParseError(`set operation ${n.op}`);
      const parts: Val[] = [];
      const add = (m: Node) => {
        if (m.t === "setop" && m.op === "cup") {
          add(m.a);
          add(m.b);
        } else parts.push(setLike(toVal(m)));
      };
      add(n);
      return { k: "union", parts };
    }
    case "matrix":
      return { k: "matrix", rows: n.rows };
    case "text":
      return { k: "text", s: n.s };
    case "base":
      return { k: "base", digits: n.digits, base: n.base };
    case "reals":
      return { k: "interval", lo: { t: "neg", a: { t: "const", name: "inf" } }, hi: { t: "const", name: "inf" }, lc: false, hc: false };
    case "empty":
      return { k: "list", items: [], ordered: false, brackets: "none" };
    default:
      return scalarVal(n);
  }
}

/** A union part: intervals stay, a 2-tuple `(a,b)`/`[a,b]` is an interval, everything else a finite set. */
function setLike(v: Val): Val {
  if (v.k === "list" && v.ordered && v.items.length === 2 && v.brackets !== "none") {
    const [a, b] = v.items;
    if (a.k === "expr" && b.k === "expr") return { k: "interval", lo: a.e, hi: b.e, lc: v.brackets === "[]", hc: v.brackets === "[]" };
  }
  if (v.k === "interval" || v.k === "union") return v;
  if (v.k === "list") return { ...v, ordered: false };
  return { k: "list", items: [v], ordered: false, brackets: "none" };
}

function flattenUnordered(items: Val[]): Val[] {
  const out: Val[] = [];
  for (const v of items) {
    if (v.k === "list" && !v.ordered && v.brackets === "none" && v.items.every((x) => x.k === "expr")) out.push(...v.items);
    else out.push(v);
  }
  return out;
}

function relVal(n: Node & { t: "rel" }): Val {
  let terms = n.terms;
  let ops = n.ops;
  // `\approx`: after an `=` it is a decimal aside ("x = 1/3 ≈ 0.33"), otherwise it means "=".
  const firstApprox = ops.indexOf("~");
  if (firstApprox >= 0) {
    const eqBefore = ops.slice(0, firstApprox).some((o) => o === "=");
    if (eqBefore) {
      terms = terms.slice(0, firstApprox + 1);
      ops = ops.slice(0, firstApprox);
    } else ops = ops.map((o) => (o === "~" ? "=" : o));
  }
  if (ops.includes(":")) return ratioVal(terms, ops);
  if (ops.includes("in")) {
    if (ops.length !== 1 || !isLabel(terms[0])) throw new ParseError("membership");
    return { k: "member", label: labelKey(terms[0]), set: toVal(terms[1]) };
  }
  for (const t of terms) if (!isScalar(t) && !isLabel(t) && t.t !== "tuple" && t.t !== "matrix" && t.t !== "set") throw new ParseError("relation of collections");
  if (ops.every((o) => o === "=")) {
    if (isLabel(terms[0])) return { k: "assign", label: labelKey(terms[0]), value: toVal(terms[terms.length - 1]) };
    if (terms.length === 2 && isLabel(terms[1]) && strip(terms[1]).t === "sym" && !some(terms[0], (m) => m.t === "sym"))
      return { k: "assign", label: labelKey(terms[1]), value: toVal(terms[0]) };
  }
  for (const t of terms) if (!isScalar(t)) throw new ParseError("relation of collections");
  return { k: "rel", terms, ops };
}

function ratioVal(terms: Node[], ops: RelOp[]): Val {
  // split into `:`-chains joined by other operators
  const segs: Node[][] = [[terms[0]]];
  const joins: RelOp[] = [];
  ops.forEach((o, k) => {
    if (o === ":") segs[segs.length - 1].push(terms[k + 1]);
    else {
      joins.push(o);
      segs.push([terms[k + 1]]);
    }
  });
  for (const s of segs) for (const t of s) if (!isScalar(t)) throw new ParseError("ratio of collections");
  const asVal = (s: Node[]): Val => (s.length === 1 ? scalarVal(s[0]) : { k: "ratio", parts: s });
  if (joins.length === 0) return asVal(segs[0]);
  if (joins.length === 1 && joins[0] === "=" && segs[0].every(isLabel))
    return { k: "assign", label: segs[0].map(labelKey).join(":"), value: asVal(segs[1]) };
  throw new ParseError("ratio relation");
}

/** A top-level list `a, b; c and d`. */
function listVal(items: Node[], seps: string[]): Val {
  const hasSemi = seps.includes(";");
  const hasComma = seps.includes(",") || seps.includes("quad");
  if (hasSemi && hasComma) {
    // `p=5,q=2;p=7,q=2` and `1,2;3,4`: `;` separates alternatives, `,` the parts of one.
    const groups: Node[][] = [[items[0]]];
    seps.forEach((s, k) => {
      if (s === ";") groups.push([items[k + 1]]);
      else groups[groups.length - 1].push(items[k + 1]);
    });
    const vals = groups.map((g) => {
      if (g.length === 1) return toVal(g[0]);
      const inner = flatList(g.map(toVal), false);
      return inner.k === "list" ? { ...inner, ordered: true, brackets: "()" as Brackets } : inner;
    });
    return { k: "list", items: vals, ordered: false, brackets: "none" };
  }
  const unordered = seps.some((s) => s === "and" || s === "or");
  return flatList(items.map(toVal), unordered);
}

/** Several separately written answers (boxes, math spans) as one: a record, a labelled set, or an unordered list. */
export function joinAnswers(vals: Val[]): Val {
  return flatList(vals, true);
}

function flatList(vals: Val[], unorderedSeps: boolean): Val {
  let unordered = unorderedSeps;
  // ± inside an element makes the list a set of alternatives
  const flat: Val[] = [];
  for (const v of vals) {
    if (v.k === "list" && !v.ordered && v.brackets === "none" && v.items.every((x) => x.k === "expr")) {
      flat.push(...v.items);
      unordered = true;
    } else flat.push(v);
  }
  const assigns = flat.filter((v) => v.k === "assign") as Array<Val & { k: "assign" }>;
  if (assigns.length === flat.length) {
    const labels = assigns.map((a) => a.label);
    if (labels.every((l) => l === labels[0]))
      return { k: "assign", label: labels[0], value: { k: "list", items: flattenUnordered(assigns.map((a) => a.value)), ordered: false, brackets: "none" } };
    if (new Set(labels).size === labels.length) return { k: "record", entries: assigns.map((a) => ({ label: a.label, value: a.value })) };
    throw new ParseError("repeated labels");
  }
  if (flat[0].k === "assign" && assigns.length === 1) {
    // `n = 1, 2, 3`, `(x, y) = (5, 8) and (8, 5)`: the label covers the whole list of alternatives
    const first = flat[0];
    return { k: "assign", label: first.label, value: { k: "list", items: flattenUnordered([first.value, ...flat.slice(1)]), ordered: false, brackets: "none" } };
  }
  // a list of points is a set of solutions
  if (flat.length > 1 && flat.every((v) => v.k === "list" && v.ordered && v.brackets === "()")) unordered = true;
  return { k: "list", items: flat, ordered: !unordered, brackets: "none" };
}
