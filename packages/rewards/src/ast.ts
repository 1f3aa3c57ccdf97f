/** The expression tree produced by the parser (LaTeX and plain/mathjs-style input share it). */
import type { Q } from "./rational.js";

export type RelOp = "=" | "<" | ">" | "<=" | ">=" | "!=" | "~" | "in" | ":";

export type Node =
  /** Numeric literal; `q` is null when the literal is too long for the exact path; `dec` marks a decimal point. */
  | { t: "num"; q: Q | null; raw: string; dec: boolean }
  | { t: "sym"; name: string }
  | { t: "const"; name: "pi" | "e" | "i" | "inf" }
  | { t: "add"; a: Node; b: Node }
  | { t: "sub"; a: Node; b: Node }
  | { t: "mul"; a: Node; b: Node }
  | { t: "div"; a: Node; b: Node }
  | { t: "pow"; a: Node; b: Node }
  | { t: "neg"; a: Node }
  /** `a ± b` (a null for the unary form `±b`); `mp` for ∓. */
  | { t: "pm"; a: Node | null; b: Node; mp: boolean }
  | { t: "fn"; name: string; args: Node[] }
  | { t: "fact"; a: Node }
  | { t: "pct"; a: Node }
  /** A parenthesised single expression; kept so that `f(x)` can be recognised as a label. */
  | { t: "group"; a: Node }
  /** Bracketed list with at least two items, or a one-item list with mixed brackets. */
  | { t: "tuple"; items: Node[]; open: string; close: string; semis: boolean }
  /** `\{…\}` (explicit) or `{a, b}` (brace list). */
  | { t: "set"; items: Node[]; explicit: boolean }
  | { t: "setop"; op: "cup" | "cap" | "setminus"; a: Node; b: Node }
  | { t: "matrix"; rows: Node[][] }
  | { t: "rel"; terms: Node[]; ops: RelOp[] }
  /** Top-level list; `seps[k]` is the separator after item k: "," ";" "and" "or". */
  | { t: "seq"; items: Node[]; seps: string[] }
  | { t: "text"; s: string }
  | { t: "base"; digits: string; base: number }
  | { t: "reals" }
  | { t: "empty" };

export function walk(n: Node, visit: (n: Node) => void): void {
  visit(n);
  switch (n.t) {
    case "add":
    case "sub":
    case "mul":
    case "div":
    case "pow":
    case "setop":
      walk(n.a, visit);
      walk(n.b, visit);
      break;
    case "neg":
    case "fact":
    case "pct":
    case "group":
      walk(n.a, visit);
      break;
    case "pm":
      if (n.a) walk(n.a, visit);
      walk(n.b, visit);
      break;
    case "fn":
      for (const a of n.args) walk(a, visit);
      break;
    case "tuple":
    case "set":
    case "seq":
      for (const a of n.items) walk(a, visit);
      break;
    case "rel":
      for (const a of n.terms) walk(a, visit);
      break;
    case "matrix":
      for (const r of n.rows) for (const a of r) walk(a, visit);
      break;
    default:
      break;
  }
}

/** Free variables; the index of a `\\sum`/`\\prod` (named `#k` by the parser) is bound, not free. */
export function freeSymbols(n: Node): string[] {
  const out = new Set<string>();
  walk(n, (m) => {
    if (m.t === "sym" && m.name[0] !== "#") out.add(m.name);
  });
  return [...out].sort();
}

export function some(n: Node, pred: (n: Node) => boolean): boolean {
  let found = false;
  walk(n, (m) => {
    if (!found && pred(m)) found = true;
  });
  return found;
}

/** Whether the expression is a plain scalar expression (no collections, relations, text). */
export function isScalar(n: Node): boolean {
  return !some(
    n,
    (m) =>
      m.t === "tuple" ||
      m.t === "set" ||
      m.t === "setop" ||
      m.t === "matrix" ||
      m.t === "rel" ||
      m.t === "seq" ||
      m.t === "text" ||
      m.t === "base" ||
      m.t === "reals" ||
      m.t === "empty",
  );
}

/** A readable canonical string (used for labels and reasons). */
export function show(n: Node): string {
  switch (n.t) {
    case "num":
      return n.raw;
    case "sym":
      return n.name;
    case "const":
      return n.name === "inf" ? "oo" : n.name;
    case "add":
      return `(${show(n.a)}+${show(n.b)})`;
    case "sub":
      return `(${show(n.a)}-${show(n.b)})`;
    case "mul":
      return `${show(n.a)}*${show(n.b)}`;
    case "div":
      return `(${show(n.a)})/(${show(n.b)})`;
    case "pow":
      return `${show(n.a)}^(${show(n.b)})`;
    case "neg":
      return `-${show(n.a)}`;
    case "pm":
      return `${n.a ? show(n.a) : ""}${n.mp ? "∓" : "±"}${show(n.b)}`;
    case "fn":
      return `${n.name}(${n.args.map(show).join(",")})`;
    case "fact":
      return `${show(n.a)}!`;
    case "pct":
      return `${show(n.a)}%`;
    case "group":
      return `(${show(n.a)})`;
    case "tuple":
      return `${n.open}${n.items.map(show).join(",")}${n.close}`;
    case "set":
      return `{${n.items.map(show).join(",")}}`;
    case "setop":
      return `${show(n.a)} ${n.op} ${show(n.b)}`;
    case "matrix":
      return `[${n.rows.map((r) => r.map(show).join(",")).join(";")}]`;
    case "rel": {
      let s = show(n.terms[0]);
      for (let k = 0; k < n.ops.length; k++) s += n.ops[k] + show(n.terms[k + 1]);
      return s;
    }
    case "seq":
      return n.items.map(show).join(", ");
    case "text":
      return JSON.stringify(n.s);
    case "base":
      return `${n.digits}_${n.base}`;
    case "reals":
      return "R";
    case "empty":
      return "{}";
  }
}

/** Renames symbols throughout a tree (all node kinds). */
export function renameSymbols(n: Node, map: Map<string, string>): Node {
  const r = (m: Node) => renameSymbols(m, map);
  switch (n.t) {
    case "sym":
      return map.has(n.name) ? { t: "sym", name: map.get(n.name) as string } : n;
    case "add":
    case "sub":
    case "mul":
    case "div":
    case "pow":
    case "setop":
      return { ...n, a: r(n.a), b: r(n.b) };
    case "neg":
    case "fact":
    case "pct":
    case "group":
      return { ...n, a: r(n.a) };
    case "pm":
      return { ...n, a: n.a ? r(n.a) : null, b: r(n.b) };
    case "fn":
      return { ...n, args: n.args.map(r) };
    case "tuple":
    case "set":
    case "seq":
      return { ...n, items: n.items.map(r) } as Node;
    case "rel":
      return { ...n, terms: n.terms.map(r) };
    case "matrix":
      return { ...n, rows: n.rows.map((row) => row.map(r)) };
    default:
      return n;
  }
}
