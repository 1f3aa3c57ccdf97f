/**
 * Tokeniser and recursive-descent parser for answers written in LaTeX or in plain (mathjs/sympy-like) syntax.
 *
 * LaTeX conventions: `\frac12` and `\sqrt3` take one token (`\frac123` = ½·3); `\log` is base 10, `\ln` natural;
 * `\sin x y` takes the implicit product `x y` as argument; `x_{12}` is a symbol name; `204_5` is a base-5 numeral.
 * Plain conventions: `log(x)` is natural, `log(x, b)` base b; `2e3` and `1500E-1` are scientific notation.
 * Depth, token and node counts are capped (limits.ts); anything unsupported throws ParseError.
 */
import { type Node, type RelOp, renameSymbols } from "./ast.js";
import { LIMITS, ParseError } from "./limits.js";

const { MAX_TOKENS, MAX_NODES, MAX_DEPTH, MAX_ITEMS, MAX_LITERAL_DIGITS, MAX_ANSWER_CHARS } = LIMITS;
import { matchBrace } from "./extract.js";
import { Q } from "./rational.js";

export type Tok =
  | { k: "num"; v: string; sp: boolean }
  | { k: "id"; v: string; sp: boolean }
  | { k: "word"; v: string; sp: boolean }
  | { k: "cmd"; v: string; sp: boolean; env?: string }
  | { k: "op"; v: string; sp: boolean }
  | { k: "text"; v: string; sp: boolean }
  | { k: "sep"; v: string; sp: boolean };

/** Plain-text function names (and their LaTeX command twins) with their canonical names. */
const FUNCS: Record<string, string> = {
  sin: "sin", cos: "cos", tan: "tan", sec: "sec", csc: "csc", cot: "cot", cosec: "csc", ctg: "cot", tg: "tan",
  arcsin: "asin", arccos: "acos", arctan: "atan", arccot: "acot", arcsec: "asec", arccsc: "acsc",
  asin: "asin", acos: "acos", atan: "atan", acot: "acot", asec: "asec", acsc: "acsc",
  sinh: "sinh", cosh: "cosh", tanh: "tanh", sech: "sech", csch: "csch", coth: "coth",
  arsinh: "asinh", arcsinh: "asinh", asinh: "asinh", arcosh: "acosh", arccosh: "acosh", acosh: "acosh",
  artanh: "atanh", arctanh: "atanh", atanh: "atanh", arcoth: "acoth", arccoth: "acoth", acoth: "acoth",
  exp: "exp", ln: "ln", log: "log", lg: "log10", log10: "log10", log2: "log2", sqrt: "sqrt", cbrt: "cbrt",
  abs: "abs", factorial: "factorial", max: "max", min: "min", floor: "floor", ceil: "ceil", ceiling: "ceil",
  mod: "mod", gcd: "gcd", lcm: "lcm", sign: "sign", sgn: "sign", binom: "binom", nthRoot: "nthroot", nthroot: "nthroot",
  round: "round", gamma: "gamma", combinations: "binom", nCr: "binom", pow: "pow", square: "square", cube: "cube",
};
const INVERSE: Record<string, string> = {
  sin: "asin", cos: "acos", tan: "atan", cot: "acot", sec: "asec", csc: "acsc",
  sinh: "asinh", cosh: "acosh", tanh: "atanh", coth: "acoth",
};
const CONST_WORDS: Record<string, "pi" | "inf"> = { pi: "pi", Infinity: "inf", infinity: "inf", inf: "inf", oo: "inf", infty: "inf" };
const GREEK = new Set(
  (
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi omicron rho varrho " +
    "sigma varsigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega ell"
  ).split(" "),
);
/** Short letter runs that are words, not products of variables. */
const TEXT_WORDS = new Set(
  "yes no odd all not the is are for any one two six ten nor but may can has was off per dne none so we it if of to be by get let now its our you".split(" "),
);
const REL_CMDS: Record<string, RelOp> = {
  le: "<=", leq: "<=", leqslant: "<=", leqq: "<=", ge: ">=", geq: ">=", geqslant: ">=", geqq: ">=", lt: "<", gt: ">",
  ne: "!=", neq: "!=", approx: "~", simeq: "~", thickapprox: "~", in: "in", colon: ":",
};
const PERIODIC = new Set(["sin", "cos", "tan", "sec", "csc", "cot"]);
const MATRIX_ENVS = new Set(["pmatrix", "bmatrix", "Bmatrix", "vmatrix", "Vmatrix", "matrix", "smallmatrix", "array"]);
/** Commands that can start an operand (for implicit multiplication). */
const PRIMARY_CMDS = new Set([
  "frac", "sqrt", "binom", "pi", "infty", "begin", "mathbb", "emptyset", "varnothing", "lfloor", "lceil", "langle", "lvert",
  "vert", "text", "sum", "prod",
]);
/** Command prefixes split off a glued unknown command (`\quadx`, `\pix`). */
const GLUE_PREFIXES = ["qquad", "quad", "cdot", "times", "infty", "pi", "pm", "mp"];

const isLetter = (c: string) => (c >= "a" && c <= "z") || (c >= "A" && c <= "Z");
const isDigit = (c: string) => c >= "0" && c <= "9";

function knownCommand(name: string): boolean {
  return (
    name in FUNCS ||
    name in REL_CMDS ||
    GREEK.has(name) ||
    PRIMARY_CMDS.has(name) ||
    [
      "cdot", "times", "div", "ast", "pm", "mp", "cup", "cap", "setminus", "mod", "bmod", "end", "rfloor", "rceil", "rangle",
      "rvert", "operatorname", "dots", "ldots", "cdots", "hline", "neg", "to", "implies", "Rightarrow", "infty", "degree",
    ].includes(name)
  );
}

/** Tokenises a normalised answer. Throws ParseError when it exceeds the token cap. */
export function tokenize(src: string): Tok[] {
  const toks: Tok[] = [];
  let i = 0;
  let sp = false;
  let envDepth = 0;
  const push = (t: Tok) => {
    if (toks.length >= MAX_TOKENS) throw new ParseError("too many tokens");
    toks.push(t);
    sp = false;
  };
  while (i < src.length) {
    const ch = src[i];
    if (ch === " " || ch === "\n" || ch === "\t") {
      sp = true;
      i++;
      continue;
    }
    if (isDigit(ch) || (ch === "." && isDigit(src[i + 1] ?? ""))) {
      let j = i;
      while (j < src.length && isDigit(src[j])) j++;
      if (src[j] === "." && isDigit(src[j + 1] ?? "")) {
        j++;
        while (j < src.length && isDigit(src[j])) j++;
      } else if (src[j] === "." && j > i && !isLetter(src[j + 1] ?? "")) {
        // "5." → 5 (trailing dot)
      }
      // scientific notation: 2.5e3, 1500E-1 (only when digits follow)
      if ((src[j] === "e" || src[j] === "E") && j > i) {
        let k = j + 1;
        if (src[k] === "+" || src[k] === "-") k++;
        if (isDigit(src[k] ?? "")) {
          while (k < src.length && isDigit(src[k])) k++;
          if (!isLetter(src[k] ?? "")) j = k;
        }
      }
      push({ k: "num", v: src.slice(i, j), sp });
      i = j;
      continue;
    }
    if (isLetter(ch)) {
      let j = i;
      while (j < src.length && isLetter(src[j])) j++;
      let run = src.slice(i, j);
      // log10(x), log2(x)
      if (run === "log" && /^(?:10|2)\(/.test(src.slice(j, j + 3))) {
        const digits = src[j] === "1" ? "10" : "2";
        run += digits;
        j += digits.length;
      }
      i = j;
      pushLetters(run);
      continue;
    }
    if (ch === "\\") {
      const nx = src[i + 1] ?? "";
      if (isLetter(nx)) {
        let j = i + 1;
        while (j < src.length && isLetter(src[j])) j++;
        let name = src.slice(i + 1, j);
        i = j;
        if (name === "text" || name === "operatorname") {
          let k = i;
          while (src[k] === " ") k++;
          if (src[k] !== "{") {
            if (name === "text") continue;
            throw new ParseError("\\operatorname without braces");
          }
          const close = matchBrace(src, k);
          if (close < 0) throw new ParseError("unbalanced \\text");
          const content = src.slice(k + 1, close).trim();
          i = close + 1;
          if (name === "operatorname") {
            const fname = content.replace(/\s+/g, "");
            if (fname in FUNCS) push({ k: "cmd", v: fname, sp });
            else push({ k: "word", v: fname.toLowerCase(), sp });
            continue;
          }
          pushText(content);
          continue;
        }
        if (name === "begin" || name === "end") {
          let k = i;
          while (src[k] === " ") k++;
          let env = "";
          if (src[k] === "{") {
            const close = src.indexOf("}", k);
            if (close < 0) throw new ParseError("unbalanced environment");
            env = src.slice(k + 1, close).trim().replace(/\*$/, "");
            i = close + 1;
          }
          envDepth += name === "begin" ? 1 : -1;
          push({ k: "cmd", v: name, sp, env });
          continue;
        }
        if (name === "mathbb" || name === "mathcal" || name === "mathfrak") {
          let k = i;
          while (src[k] === " ") k++;
          let arg = src[k] ?? "";
          if (arg === "{") {
            const close = matchBrace(src, k);
            if (close < 0) throw new ParseError("unbalanced \\mathbb");
            arg = src.slice(k + 1, close).trim();
            i = close + 1;
          } else i = k + 1;
          push({ k: "cmd", v: "mathbb", sp, env: arg });
          continue;
        }
        if (!knownCommand(name)) {
          const prefix = GLUE_PREFIXES.find((p) => name.startsWith(p) && name.length > p.length);
          if (prefix) {
            const rest = name.slice(prefix.length);
            name = prefix;
            if (prefix === "quad" || prefix === "qquad") {
              push({ k: "sep", v: "quad", sp: true });
              pushLetters(rest);
              continue;
            }
            push({ k: "cmd", v: name, sp });
            pushLetters(rest);
            continue;
          }
        }
        if (name === "quad" || name === "qquad") {
          // wide space between two answers (`x=1 \quad y=2`) separates them like a comma
          if (toks.length > 0 && toks[toks.length - 1].k !== "sep") push({ k: "sep", v: "quad", sp: true });
          else sp = true;
          continue;
        }
        push({ k: "cmd", v: name, sp });
        continue;
      }
      // one-character escapes
      i += 2;
      if (nx === "{" || nx === "}") push({ k: "op", v: "\\" + nx, sp });
      else if (nx === "\\") push({ k: "op", v: "\\\\", sp });
      else if (nx === "%") push({ k: "op", v: "%", sp });
      else if (nx === "|") push({ k: "op", v: "|", sp });
      else if (nx === "$" || nx === "," || nx === ";" || nx === ":" || nx === "!" || nx === " " || nx === "") sp = true;
      else throw new ParseError(`unknown escape \\${nx}`);
      continue;
    }
    // multi-character operators
    const two = src.slice(i, i + 2);
    if (two === "<=" || two === ">=" || two === "!=" || two === "==" || two === "**" || two === "=>" || two === "->") {
      if (two === "=>" || two === "->") throw new ParseError("implication");
      push({ k: "op", v: two === "==" ? "=" : two === "**" ? "^" : two, sp });
      i += 2;
      continue;
    }
    if ("+-*/^_!()[]{}|,;=<>:'%".includes(ch)) {
      push({ k: "op", v: ch, sp });
      i++;
      continue;
    }
    if (ch === "&") {
      if (envDepth > 0) push({ k: "op", v: "&", sp });
      i++;
      continue;
    }
    if (ch === "." || ch === "?" || ch === '"' || ch === "`") {
      // stray punctuation inside an answer
      i++;
      sp = true;
      continue;
    }
    throw new ParseError(`unexpected character ${JSON.stringify(ch)}`);
  }
  return toks;

  function pushLetters(run: string): void {
    if (run === "") return;
    const lower = run.toLowerCase();
    if (lower === "and" || lower === "or") return push({ k: "sep", v: lower, sp });
    if (run in FUNCS || run in CONST_WORDS || (lower in CONST_WORDS && run.length > 2)) return push({ k: "id", v: run in FUNCS || run in CONST_WORDS ? run : lower, sp });
    if (run.length === 1) return push({ k: "id", v: run, sp });
    // plain Greek names (`theta`, `alpha_1`, `nu`) are the LaTeX symbols (a whole letter run only: `beta`, not `b·e·t·a`)
    if (GREEK.has(run)) return push({ k: "cmd", v: run, sp });
    // `NO`, `BO`, `ABC` in capitals are points (`\\frac{NO}{BO}`); a text answer `NO` still matches by its spelling
    if (run.length <= 3 && (!TEXT_WORDS.has(lower) || /^[A-Z]+$/.test(run))) {
      for (const c of run) push({ k: "id", v: c, sp });
      return;
    }
    push({ k: "word", v: lower, sp });
  }

  function pushText(content: string): void {
    if (content === "") return;
    // `\text{13}`, `\text{(C)}`, `\text{e}`: math inside a text wrapper.
    if (!/[A-Za-z]{2}/.test(content)) {
      const inner = tokenize(content);
      for (let k = 0; k < inner.length; k++) push(k === 0 ? { ...inner[k], sp } : inner[k]);
      return;
    }
    const s = content.replace(/\s+/g, " ").toLowerCase();
    if (s === "and" || s === "or") return push({ k: "sep", v: s, sp });
    push({ k: "text", v: s, sp });
  }
}

type Closer = (t: Tok | undefined) => boolean;
const END: Closer = (t) => t === undefined;

class Parser {
  private pos = 0;
  private depth = 0;
  private absDepth = 0;
  private nodes = 0;
  /** Inside the argument of sin/cos/…: a degree mark converts to radians there. */
  private trig = 0;
  constructor(private readonly toks: Tok[]) {}

  private peek(o = 0): Tok | undefined {
    return this.toks[this.pos + o];
  }
  private next(): Tok {
    const t = this.toks[this.pos++];
    if (!t) throw new ParseError("unexpected end");
    return t;
  }
  private isOp(v: string, o = 0): boolean {
    const t = this.peek(o);
    return t !== undefined && t.k === "op" && t.v === v;
  }
  private isCmd(v: string, o = 0): boolean {
    const t = this.peek(o);
    return t !== undefined && t.k === "cmd" && t.v === v;
  }
  private expectOp(v: string): void {
    if (!this.isOp(v)) throw new ParseError(`expected ${v}`);
    this.pos++;
  }
  private mk<T extends Node>(n: T): T {
    if (++this.nodes > MAX_NODES) throw new ParseError("too many nodes");
    return n;
  }
  private enter(): void {
    if (++this.depth > MAX_DEPTH) throw new ParseError("nesting too deep");
  }
  private leave(): void {
    this.depth--;
  }

  parseAll(): Node {
    const { items, seps } = this.parseSeq(END);
    if (this.pos < this.toks.length) throw new ParseError(`unexpected ${this.toks[this.pos].v}`);
    if (items.length === 0) throw new ParseError("empty");
    if (items.length === 1) return items[0];
    return this.mk({ t: "seq", items, seps });
  }

  /** Items separated by `,` `;` `and` `or`, up to a closer (not consumed). */
  private parseSeq(isCloser: Closer): { items: Node[]; seps: string[] } {
    const items: Node[] = [];
    const seps: string[] = [];
    let pending: string | null = null;
    for (;;) {
      const t = this.peek();
      if (isCloser(t)) break;
      if (t === undefined) throw new ParseError("missing closing bracket");
      if ((t.k === "op" && (t.v === "," || t.v === ";")) || t.k === "sep") {
        this.pos++;
        const v = t.v;
        pending = pending === null ? v : rankSep(pending) >= rankSep(v) ? pending : v;
        continue;
      }
      if (items.length > 0) {
        if (pending === null) throw new ParseError(`unexpected ${t.v}`);
        seps.push(pending);
      }
      pending = null;
      if (items.length >= MAX_ITEMS) throw new ParseError("too many items");
      items.push(this.parseRel());
    }
    return { items, seps };
  }

  private parseRel(): Node {
    const first = this.parseExpr();
    const terms: Node[] = [first];
    const ops: RelOp[] = [];
    for (;;) {
      const op = this.relOp();
      if (op === null) break;
      terms.push(this.parseExpr());
      ops.push(op);
      if (ops.length > 16) throw new ParseError("relation chain too long");
    }
    return ops.length === 0 ? first : this.mk({ t: "rel", terms, ops });
  }

  private relOp(): RelOp | null {
    const t = this.peek();
    if (!t) return null;
    if (t.k === "op") {
      const map: Record<string, RelOp> = { "=": "=", "<": "<", ">": ">", "<=": "<=", ">=": ">=", "!=": "!=", ":": ":" };
      const r = map[t.v];
      if (r) {
        this.pos++;
        return r;
      }
      return null;
    }
    if (t.k === "cmd") {
      if (t.v === "to" || t.v === "implies" || t.v === "Rightarrow") throw new ParseError("arrow");
      const r = REL_CMDS[t.v];
      if (r) {
        this.pos++;
        return r;
      }
    }
    return null;
  }

  private parseExpr(): Node {
    this.enter();
    let left = this.parseTerm();
    for (;;) {
      const t = this.peek();
      if (!t) break;
      if (t.k === "op" && (t.v === "+" || t.v === "-")) {
        this.pos++;
        const right = this.parseTerm();
        left = this.mk(t.v === "+" ? { t: "add", a: left, b: right } : { t: "sub", a: left, b: right });
      } else if (t.k === "cmd" && (t.v === "pm" || t.v === "mp")) {
        this.pos++;
        const right = this.parseTerm();
        left = this.mk({ t: "pm", a: left, b: right, mp: t.v === "mp" });
      } else if (t.k === "cmd" && (t.v === "cup" || t.v === "cap" || t.v === "setminus")) {
        this.pos++;
        const right = this.parseTerm();
        left = this.mk({ t: "setop", op: t.v, a: left, b: right });
      } else break;
    }
    this.leave();
    return left;
  }

  private parseTerm(): Node {
    let left = this.parseUnary();
    for (;;) {
      const t = this.peek();
      if (!t) break;
      if ((t.k === "op" && t.v === "*") || (t.k === "cmd" && (t.v === "cdot" || t.v === "times" || t.v === "ast"))) {
        this.pos++;
        left = this.combine("mul", left, this.parseUnary());
      } else if ((t.k === "op" && t.v === "/") || (t.k === "cmd" && t.v === "div")) {
        this.pos++;
        left = this.combine("div", left, this.parseUnary());
      } else if (t.k === "cmd" && (t.v === "mod" || t.v === "bmod")) {
        this.pos++;
        const right = this.parseUnary();
        left = this.mk({ t: "fn", name: "mod", args: [left, right] });
      } else if (this.startsImplicit(t, left)) {
        left = this.combine("mul", left, this.parsePower());
      } else break;
    }
    return left;
  }

  /** Multiplication/division; text joins text (a phrase), never a number. */
  private combine(op: "mul" | "div", a: Node, b: Node): Node {
    if (a.t === "text" || b.t === "text") {
      const wordy = (n: Node) => n.t === "text" || n.t === "sym";
      if (op === "mul" && wordy(a) && wordy(b)) {
        const s = (n: Node) => (n.t === "text" ? n.s : n.t === "sym" ? n.name.toLowerCase() : "");
        return this.mk({ t: "text", s: `${s(a)} ${s(b)}` });
      }
      throw new ParseError("text inside an expression");
    }
    return this.mk(op === "mul" ? { t: "mul", a, b } : { t: "div", a, b });
  }

  private startsImplicit(t: Tok, left: Node): boolean {
    switch (t.k) {
      case "num":
        // "2 3" is not a product; "3 1\frac12" is 3·(1½).
        if (left.t === "num" || left.t === "neg") return this.isCmd("frac", 1) ? true : false;
        return true;
      case "id":
      case "text":
      case "word":
        return true;
      case "cmd":
        return PRIMARY_CMDS.has(t.v) || t.v in FUNCS || GREEK.has(t.v);
      case "op":
        return t.v === "(" || (t.v === "|" && (this.absDepth === 0 || this.barOpensInside())) || t.v === "\\{";
      default:
        return false;
    }
  }

  /**
   * Inside `|…|`, a bar right after a closing bar opens a new one when enough bars remain to close it and every
   * enclosing one: `||x||y||` is |(|x|·|y|)|, while `|a|b|c|` keeps reading as |a|·b·|c|.
   */
  private barOpensInside(): boolean {
    const prev = this.toks[this.pos - 1];
    const after = this.peek(1);
    if (!prev || prev.k !== "op" || prev.v !== "|" || !after || (after.k === "op" && after.v !== "(" && after.v !== "-")) return false;
    let bars = 0;
    for (let k = this.pos; k < this.toks.length; k++) {
      const u = this.toks[k];
      if (u.k === "op" && u.v === "|") bars++;
    }
    return bars >= this.absDepth + 2;
  }

  private parseUnary(): Node {
    const t = this.peek();
    if (t && t.k === "op" && (t.v === "-" || t.v === "+")) {
      this.pos++;
      this.enter();
      const a = this.parseUnary();
      this.leave();
      return t.v === "-" ? this.mk({ t: "neg", a }) : a;
    }
    if (t && t.k === "cmd" && (t.v === "pm" || t.v === "mp")) {
      this.pos++;
      this.enter();
      const b = this.parseUnary();
      this.leave();
      return this.mk({ t: "pm", a: null, b, mp: t.v === "mp" });
    }
    return this.parsePower();
  }

  private parsePower(): Node {
    this.enter();
    let base = this.parsePostfix();
    if (this.isOp("^")) {
      this.pos++;
      const e = this.parseExponent();
      base = this.mk({ t: "pow", a: base, b: e });
      base = this.postfixOps(base);
    }
    this.leave();
    return base;
  }

  /** Exponent: a braced group, or a (signed) single operand with its own right-associative power. */
  private parseExponent(): Node {
    this.enter();
    try {
      const t = this.peek();
      if (!t) throw new ParseError("missing exponent");
      if (t.k === "op" && (t.v === "-" || t.v === "+")) {
        this.pos++;
        const a = this.parseExponent();
        return t.v === "-" ? this.mk({ t: "neg", a }) : a;
      }
      if (t.k === "op" && t.v === "{") return this.braceArg();
      const p = this.parsePostfix();
      if (this.isOp("^")) {
        this.pos++;
        return this.mk({ t: "pow", a: p, b: this.parseExponent() });
      }
      return p;
    } finally {
      this.leave();
    }
  }

  private parsePostfix(): Node {
    return this.postfixOps(this.parsePrimary());
  }

  private postfixOps(p: Node): Node {
    for (;;) {
      if (this.isOp("!")) {
        this.pos++;
        if (p.t === "text") throw new ParseError("factorial of text");
        p = this.mk({ t: "fact", a: p });
      } else if (this.isOp("%")) {
        this.pos++;
        p = this.mk({ t: "pct", a: p });
      } else if (this.isCmd("degree")) {
        this.pos++;
        if (this.trig > 0) p = this.mk({ t: "mul", a: p, b: this.mk({ t: "div", a: { t: "const", name: "pi" }, b: this.numNode("180") }) });
      } else if (this.isOp("'")) {
        this.pos++;
        if (p.t !== "sym") throw new ParseError("prime");
        p = this.mk({ t: "sym", name: p.name + "'" });
      } else break;
    }
    return p;
  }

  /** `{…}` holding exactly one item. */
  private braceArg(): Node {
    this.expectOp("{");
    this.enter();
    const { items } = this.parseSeq((t) => t !== undefined && t.k === "op" && t.v === "}");
    this.expectOp("}");
    this.leave();
    if (items.length !== 1) throw new ParseError("group must hold one item");
    return items[0];
  }

  /** One LaTeX macro argument: a braced group, or a single token (`\frac12` → 1 then 2). */
  private latexArg(): Node {
    const t = this.peek();
    if (!t) throw new ParseError("missing argument");
    if (t.k === "op" && t.v === "{") return this.braceArg();
    if (t.k === "num") {
      if (/^\d\d/.test(t.v) && !t.v.includes(".") && !/[eE]/.test(t.v)) {
        this.toks[this.pos] = { k: "num", v: t.v.slice(1), sp: false };
        return this.numNode(t.v[0]);
      }
      this.pos++;
      return this.numNode(t.v);
    }
    if (t.k === "id" && t.v.length === 1) {
      this.pos++;
      return this.letterNode(t.v);
    }
    if (t.k === "cmd" || (t.k === "op" && t.v === "(")) return this.parsePrimary();
    throw new ParseError("bad macro argument");
  }

  private numNode(raw: string): Node {
    const q = Q.parseDecimal(raw);
    if (q === null && raw.replace(/\D/g, "").length <= MAX_LITERAL_DIGITS) throw new ParseError(`bad number ${raw}`);
    return this.mk({ t: "num", q, raw, dec: raw.includes(".") });
  }

  private letterNode(v: string): Node {
    if (v === "e") return this.mk({ t: "const", name: "e" });
    if (v === "i" || v === "I") return this.mk({ t: "const", name: "i" });
    return this.mk({ t: "sym", name: v });
  }

  /** Subscript text after `_`: a braced group verbatim, else one token. */
  private subscript(): string {
    const t = this.peek();
    if (!t) throw new ParseError("missing subscript");
    if (t.k === "op" && t.v === "{") {
      let depth = 0;
      let s = "";
      for (;;) {
        const u = this.next();
        if (u.k === "op" && u.v === "{") depth++;
        else if (u.k === "op" && u.v === "}") depth--;
        if (depth === 0) break;
        if (!(u.k === "op" && u.v === "{" && depth === 1)) s += u.k === "cmd" ? `\\${u.v}` : u.v;
        if (s.length > 80) throw new ParseError("subscript too long");
      }
      return s;
    }
    this.pos++;
    if (t.k === "cmd") return `\\${t.v}`;
    return t.v;
  }

  private parsePrimary(): Node {
    const t = this.next();
    switch (t.k) {
      case "num":
        return this.numberPrimary(t);
      case "id":
        return this.idPrimary(t);
      case "word":
        if (t.v in FUNCS) return this.functionCall(FUNCS[t.v], false);
        return this.mk({ t: "text", s: t.v });
      case "text":
        return this.mk({ t: "text", s: t.v });
      case "cmd":
        return this.cmdPrimary(t);
      case "op":
        return this.opPrimary(t);
      default:
        throw new ParseError(`unexpected ${t.v}`);
    }
  }

  private numberPrimary(t: Tok): Node {
    // base-b numeral: 204_5, 4210_{5}
    if (this.isOp("_")) {
      if (!/^\d+$/.test(t.v)) throw new ParseError("subscript on a decimal");
      this.pos++;
      const sub = this.subscript();
      if (!/^\d+$/.test(sub)) throw new ParseError("bad base");
      const base = Number(sub);
      if (base < 2 || base > 36) throw new ParseError("bad base");
      for (const d of t.v) if (Number(d) >= base) throw new ParseError("digit out of base");
      return this.mk({ t: "base", digits: t.v.replace(/^0+(?=\d)/, ""), base });
    }
    const intLit = /^\d+$/.test(t.v);
    // mixed number 1\frac12 (integer literal directly followed by a numeric \frac)
    if (intLit && this.isCmd("frac")) {
      const save = this.pos;
      this.pos++;
      try {
        const a = this.latexArg();
        const b = this.latexArg();
        if (a.t === "num" && b.t === "num" && /^\d+$/.test(a.raw) && /^\d+$/.test(b.raw) && a.q && b.q && !b.q.isZero) {
          const whole = this.numNode(t.v);
          if (whole.t === "num" && whole.q) {
            return this.mk({ t: "num", q: whole.q.add(a.q.div(b.q)), raw: `${t.v}+${a.raw}/${b.raw}`, dec: false });
          }
        }
      } catch (e) {
        if (!(e instanceof ParseError)) throw e;
      }
      this.pos = save;
    }
    // plain mixed number "7 3/4"
    const n1 = this.peek();
    if (intLit && n1 && n1.k === "num" && n1.sp && /^\d+$/.test(n1.v) && this.isOp("/", 1)) {
      const n2 = this.peek(2);
      const after = this.peek(3);
      if (n2 && n2.k === "num" && /^\d+$/.test(n2.v) && (after === undefined || !(after.k === "op" && after.v === "^"))) {
        const w = Q.parseDecimal(t.v);
        const a = Q.parseDecimal(n1.v);
        const b = Q.parseDecimal(n2.v);
        if (w && a && b && !b.isZero) {
          this.pos += 3;
          return this.mk({ t: "num", q: w.add(a.div(b)), raw: `${t.v}+${n1.v}/${n2.v}`, dec: false });
        }
      }
    }
    return this.numNode(t.v);
  }

  private idPrimary(t: Tok): Node {
    const v = t.v;
    if (v in FUNCS && !(GREEK.has(v) && !this.isOp("("))) return this.functionCall(FUNCS[v], false);
    if (v in CONST_WORDS) return this.mk({ t: "const", name: CONST_WORDS[v] });
    if (v.length !== 1) throw new ParseError(`unknown name ${v}`);
    if (this.isOp("_")) {
      this.pos++;
      const sub = this.subscript();
      return this.mk({ t: "sym", name: `${v}_${sub}` });
    }
    return this.letterNode(v);
  }

  private cmdPrimary(t: Tok & { k: "cmd" }): Node {
    const v = t.v;
    if (v === "gamma" && !this.isOp("(")) return this.mk({ t: "sym", name: "\\gamma" });
    if (v === "Gamma" && this.isOp("(")) return this.functionCall("gamma", true);
    if (v === "degree") return this.parsePrimary();
    if (v === "frac") {
      const a = this.latexArg();
      const b = this.latexArg();
      return this.mk({ t: "div", a, b });
    }
    if (v === "binom") {
      const a = this.latexArg();
      const b = this.latexArg();
      return this.mk({ t: "fn", name: "binom", args: [a, b] });
    }
    if (v === "sqrt") {
      let index: Node | null = null;
      if (this.isOp("[")) {
        this.pos++;
        const { items } = this.parseSeq((u) => u !== undefined && u.k === "op" && u.v === "]");
        this.expectOp("]");
        if (items.length !== 1) throw new ParseError("bad root index");
        index = items[0];
      }
      const arg = this.latexArg();
      if (index === null) return this.mk({ t: "fn", name: "sqrt", args: [arg] });
      return this.mk({ t: "fn", name: "nthroot", args: [arg, index] });
    }
    if (v === "pi") return this.mk({ t: "const", name: "pi" });
    if (v === "infty") return this.mk({ t: "const", name: "inf" });
    if (v === "emptyset" || v === "varnothing") return this.mk({ t: "empty" });
    if (v === "mathbb") {
      if (t.env === "R") return this.mk({ t: "reals" });
      throw new ParseError(`\\mathbb{${t.env}}`);
    }
    if (GREEK.has(v)) {
      if (this.isOp("_")) {
        this.pos++;
        return this.mk({ t: "sym", name: `\\${v}_${this.subscript()}` });
      }
      return this.mk({ t: "sym", name: `\\${v}` });
    }
    if (v in FUNCS) return this.functionCall(FUNCS[v], true);
    if (v === "lfloor" || v === "lceil") {
      const close = v === "lfloor" ? "rfloor" : "rceil";
      const inner = this.parseExpr();
      if (!this.isCmd(close)) throw new ParseError(`expected \\${close}`);
      this.pos++;
      return this.mk({ t: "fn", name: v === "lfloor" ? "floor" : "ceil", args: [inner] });
    }
    if (v === "lvert" || v === "vert") {
      this.absDepth++;
      const inner = this.parseExpr();
      this.absDepth--;
      if (!(this.isCmd("rvert") || this.isCmd("vert") || this.isOp("|"))) throw new ParseError("expected closing bar");
      this.pos++;
      return this.mk({ t: "fn", name: "abs", args: [inner] });
    }
    if (v === "langle") {
      const { items } = this.parseSeq((u) => u !== undefined && u.k === "cmd" && u.v === "rangle");
      this.pos++;
      return this.mk({ t: "tuple", items, open: "(", close: ")", semis: false });
    }
    if (v === "begin") return this.matrix(t.env ?? "");
    if (v === "sum" || v === "prod") return this.bigOperator(v);
    throw new ParseError(`unsupported \\${v}`);
  }

  /**
   * `\\sum_{k=a}^{b} term` (or `\\prod`): the term is the product that follows (`\\sum_{k=1}^n 2k + 1` is (Σ 2k) + 1).
   * The index is renamed `#k` inside the term so that it is never a free variable of the answer.
   */
  private bigOperator(name: "sum" | "prod"): Node {
    if (!this.isOp("_")) throw new ParseError(`\\${name} without limits`);
    this.pos++;
    const low = this.braceArg();
    if (low.t !== "rel" || low.terms.length !== 2 || low.ops[0] !== "=" || low.terms[0].t !== "sym") throw new ParseError(`\\${name} needs _{k=…}`);
    if (!this.isOp("^")) throw new ParseError(`\\${name} without an upper limit`);
    this.pos++;
    const high = this.parseExponent();
    const index = `#${low.terms[0].name}`;
    const term = renameSymbols(this.parseTerm(), new Map([[low.terms[0].name, index]]));
    return this.mk({ t: "fn", name, args: [{ t: "sym", name: index }, low.terms[1], high, term] });
  }

  private matrix(env: string): Node {
    if (!MATRIX_ENVS.has(env)) throw new ParseError(`environment ${env}`);
    if (env === "array" && this.isOp("{")) {
      // column spec
      let depth = 0;
      do {
        const u = this.next();
        if (u.k === "op" && u.v === "{") depth++;
        else if (u.k === "op" && u.v === "}") depth--;
      } while (depth > 0);
    }
    const rows: Node[][] = [[]];
    let cellOpen = true;
    for (;;) {
      const t = this.peek();
      if (!t) throw new ParseError("unterminated matrix");
      if (t.k === "cmd" && t.v === "end") {
        this.pos++;
        break;
      }
      if (t.k === "cmd" && t.v === "hline") {
        this.pos++;
        continue;
      }
      if (t.k === "op" && t.v === "&") {
        this.pos++;
        if (cellOpen) throw new ParseError("empty matrix cell");
        cellOpen = true;
        continue;
      }
      if (t.k === "op" && t.v === "\\\\") {
        this.pos++;
        if (cellOpen && rows[rows.length - 1].length > 0) throw new ParseError("empty matrix cell");
        rows.push([]);
        cellOpen = true;
        continue;
      }
      if (!cellOpen) throw new ParseError("matrix cell needs a separator");
      const row = rows[rows.length - 1];
      if (row.length >= MAX_ITEMS) throw new ParseError("matrix too large");
      row.push(this.parseExpr());
      cellOpen = false;
    }
    while (rows.length > 0 && rows[rows.length - 1].length === 0) rows.pop();
    if (rows.length === 0 || rows.length > MAX_ITEMS) throw new ParseError("bad matrix");
    const width = rows[0].length;
    if (rows.some((r) => r.length !== width)) throw new ParseError("ragged matrix");
    return this.mk({ t: "matrix", rows });
  }

  private opPrimary(t: Tok): Node {
    const v = t.v;
    if (v === "(" || v === "[") {
      this.enter();
      const { items, seps } = this.parseSeq((u) => u !== undefined && u.k === "op" && (u.v === ")" || u.v === "]"));
      const close = this.next().v;
      this.leave();
      if (items.length === 0) throw new ParseError("empty brackets");
      if (items.length === 1) {
        if ((v === "(" && close === ")") || (v === "[" && close === "]")) return this.mk({ t: "group", a: items[0] });
      }
      return this.mk({ t: "tuple", items, open: v, close, semis: seps.includes(";") });
    }
    if (v === "{") {
      this.enter();
      const { items } = this.parseSeq((u) => u !== undefined && u.k === "op" && u.v === "}");
      this.expectOp("}");
      this.leave();
      if (items.length === 0) return this.mk({ t: "empty" });
      if (items.length === 1) return items[0];
      return this.mk({ t: "set", items, explicit: false });
    }
    if (v === "\\{") {
      this.enter();
      const { items } = this.parseSeq((u) => u !== undefined && u.k === "op" && u.v === "\\}");
      this.expectOp("\\}");
      this.leave();
      if (items.length === 0) return this.mk({ t: "empty" });
      return this.mk({ t: "set", items, explicit: true });
    }
    if (v === "|") {
      this.absDepth++;
      this.enter();
      const inner = this.parseExpr();
      this.leave();
      this.absDepth--;
      this.expectOp("|");
      return this.mk({ t: "fn", name: "abs", args: [inner] });
    }
    throw new ParseError(`unexpected ${v}`);
  }

  /** A function name was read; handles `^{-1}`, powers, `\log_b`, and the argument forms. */
  private functionCall(name: string, latex: boolean): Node {
    let power: Node | null = null;
    let base: Node | null = null;
    for (let k = 0; k < 2; k++) {
      if (this.isOp("^")) {
        this.pos++;
        const p = this.parseExponent();
        if (p.t === "neg" && p.a.t === "num" && p.a.raw === "1" && INVERSE[name]) name = INVERSE[name];
        else power = p;
      } else if (this.isOp("_") && name === "log") {
        this.pos++;
        base = this.latexArg();
      }
    }
    const periodic = PERIODIC.has(name);
    if (periodic) this.trig++;
    try {
      return this.functionArgs(name, latex, power, base);
    } finally {
      if (periodic) this.trig--;
    }
  }

  private functionArgs(name: string, latex: boolean, power: Node | null, base: Node | null): Node {
    let args: Node[];
    if (this.isOp("(")) {
      this.pos++;
      this.enter();
      const { items } = this.parseSeq((u) => u !== undefined && u.k === "op" && u.v === ")");
      this.expectOp(")");
      this.leave();
      if (items.length === 0) throw new ParseError("no arguments");
      args = items;
      // `\sin(x) y`: the parenthesised argument is the whole argument.
    } else if (this.isOp("{")) {
      args = [this.braceArg()];
    } else {
      // LaTeX style: the implicit product that follows, stopping at operators and at other functions.
      let arg = this.parsePower();
      for (;;) {
        const t = this.peek();
        if (!t) break;
        const isFn = (t.k === "cmd" || t.k === "id" || t.k === "word") && t.v in FUNCS;
        if (isFn || !this.startsImplicit(t, arg) || (t.k === "op" && t.v === "(" && false)) break;
        arg = this.combine("mul", arg, this.parsePower());
      }
      args = [arg];
    }
    let node: Node;
    if (name === "log") {
      if (base) node = this.mk({ t: "fn", name: "log", args: [args[0], base] });
      else if (args.length === 2) node = this.mk({ t: "fn", name: "log", args });
      else if (latex) node = this.mk({ t: "fn", name: "log", args: [args[0], this.numNode("10")] });
      else node = this.mk({ t: "fn", name: "ln", args: [args[0]] });
    } else if (name === "log10") node = this.mk({ t: "fn", name: "log", args: [args[0], this.numNode("10")] });
    else if (name === "log2") node = this.mk({ t: "fn", name: "log", args: [args[0], this.numNode("2")] });
    else if (name === "pow" && args.length === 2) node = this.mk({ t: "pow", a: args[0], b: args[1] });
    else if ((name === "square" || name === "cube") && args.length === 1)
      node = this.mk({ t: "pow", a: args[0], b: this.numNode(name === "square" ? "2" : "3") });
    else node = this.mk({ t: "fn", name, args });
    if (power) node = this.mk({ t: "pow", a: node, b: power });
    return node;
  }
}

function rankSep(s: string): number {
  return s === ";" ? 3 : s === "and" || s === "or" ? 2 : s === "," ? 1 : 0;
}

/** Parses a normalised answer string into a tree. Throws ParseError. */
export function parseAnswer(src: string): Node {
  if (src.length > MAX_ANSWER_CHARS) throw new ParseError("answer too long");
  const toks = tokenize(src);
  if (toks.length === 0) throw new ParseError("empty");
  return new Parser(toks).parseAll();
}
