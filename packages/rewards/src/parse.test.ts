import { describe, expect, it } from "vitest";
import { show } from "./ast.js";
import { ParseError } from "./limits.js";
import { normalizeAnswer } from "./normalize.js";
import { parseAnswer } from "./parse.js";
import { toVal } from "./structure.js";

const tree = (s: string) => show(parseAnswer(normalizeAnswer(s, "gold")));
const kind = (s: string) => toVal(parseAnswer(normalizeAnswer(s, "gold"))).k;

describe("LaTeX conventions", () => {
  it.each([
    ["\\frac12", "(1)/(2)"],
    ["\\frac123", "(1)/(2)*3"],
    ["\\frac{3}4", "(3)/(4)"],
    ["\\sqrt3", "sqrt(3)"],
    ["\\sqrt12", "sqrt(1)*2"],
    ["\\sqrt[3]{x}", "nthroot(x,3)"],
    ["2x2", "2*x*2"],
    ["x^23", "x^(23)"],
    ["x^2y", "x^(2)*y"],
    ["2^3^2", "2^(3^(2))"],
    ["-2^2", "-2^(2)"],
    ["\\sin x y", "sin(x*y)"],
    ["\\sin^2 x", "sin(x)^(2)"],
    ["\\sin^{-1} x", "asin(x)"],
    ["\\log x", "log(x,10)"],
    ["\\ln x", "ln(x)"],
    ["\\log_2 8", "log(8,2)"],
    ["log(x)", "ln(x)"],
    ["log(x, 3)", "log(x,3)"],
    ["1\\frac12", "1+1/2"],
    ["7 3/4", "7+3/4"],
    ["a_{37}", "a_37"],
    ["204_5", "204_5"],
    ["1500E-1", "1500E-1"],
    ["x!", "x!"],
    ["|x|", "abs(x)"],
    ["\\theta", "\\theta"],
    ["theta", "\\theta"],
  ])("%s → %s", (src, want) => expect(tree(src)).toBe(want));

  it.each([["2 3"], ["\\frac{1}"], ["(1,2"], ["\\dots"], ["x \\to 0"], ["\\int x dx"]])("%s does not parse", (src) => {
    expect(() => parseAnswer(normalizeAnswer(src, "gold"))).toThrow(ParseError);
  });

  it("caps nesting depth instead of overflowing the stack", () => {
    expect(() => parseAnswer("(".repeat(500) + "1" + ")".repeat(500))).toThrow(ParseError);
  });
});

describe("answer kinds", () => {
  it.each([
    ["3", "expr"],
    ["(1,2)", "list"],
    ["[0,1)", "interval"],
    ["(-\\infty, 2)", "interval"],
    ["(0,1) \\cup (2,3)", "union"],
    ["\\{1,2\\}", "list"],
    ["\\begin{pmatrix}1&2\\end{pmatrix}", "matrix"],
    ["x = 3", "assign"],
    ["2x + 4y = 3", "rel"],
    ["x > 3", "rel"],
    ["a = 1, b = 2", "record"],
    ["x \\in [0,1]", "member"],
    ["204_5", "base"],
    ["7:32", "ratio"],
    ["\\text{Evelyn}", "text"],
    ["1 \\pm \\sqrt 2", "list"],
  ])("%s is %s", (src, k) => expect(kind(src)).toBe(k));

  it("bare lists are ordered; and/or enumerations, ± and lists of points are not", () => {
    const ordered = (s: string) => {
      const v = toVal(parseAnswer(normalizeAnswer(s, "gold")));
      return v.k === "list" ? v.ordered : null;
    };
    expect(ordered("1, 2, 3")).toBe(true);
    expect(ordered("1, 2 and 3")).toBe(false);
    expect(ordered("(1,2), (3,4)")).toBe(false);
    expect(ordered("1 \\pm 2")).toBe(false);
  });
});
