// One table per policy decision (docs/rewards.md §3): every policy decision documented in README.md is pinned here.
import { describe, expect, it } from "vitest";
import { extractBoxed, verify, type VerifyOptions } from "./index.js";

type Case = [pred: string, gold: string, expected: boolean, options?: VerifyOptions];

function check(cases: Case[]) {
  it.each(cases)("%s  vs  %s  → %s", (pred, gold, expected, options) => {
    const r = verify(pred, gold, options);
    expect(r.correct, r.reason).toBe(expected);
  });
}

describe("extractBoxed", () => {
  it.each([
    ["The answer is \\boxed{5}.", "5"],
    ["\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"],
    ["first \\boxed{1} then \\boxed{2}", "2"],
    ["\\fbox{3}", "3"],
    ["so \\boxed 5$ done", "5"],
    ["\\boxed{\\{1,2\\}}", "\\{1,2\\}"],
    ["\\boxed{\\text{Evelyn}}", "\\text{Evelyn}"],
    ["\\boxed{\\boxed{7}}", "7"],
  ])("%s → %s", (text, want) => expect(extractBoxed(text)).toBe(want));

  it.each([["no box here"], ["\\boxed{1} and \\boxed{2"], ["\\boxed{\\frac{1}{2}"], ["\\boxedx{3}"]])("%s → null", (text) =>
    expect(extractBoxed(text)).toBeNull(),
  );
});

describe("boxed extraction in verify", () => {
  check([
    ["\\boxed{1}, \\boxed{2}", "\\{1,2\\}", true],
    ["\\boxed{1} and \\boxed{2}", "2", false],
    ["\\boxed{840}. Double-checking: \\boxed{840}", "840", true],
    ["$\\boxed{3}$", "3", true],
    ["\\[\\boxed{\\frac{1}{2}}\\]", "0.5", true],
    ["\\(\\boxed{x+1}\\)", "1+x", true],
    ["We get \\boxed{200}. Then, after six more months the total is \\boxed{255}", "255", true],
    ["We get \\boxed{200}. Then, after six more months the total is \\boxed{255}", "200", false],
    ["the answer is \\boxed{12", "12", false],
    ["<think>maybe \\boxed{3}</think> so \\boxed{4}", "4", true],
    ["<think>maybe \\boxed{3}</think> so \\boxed{4}", "3", false],
    ["<think>still thinking \\boxed{3}", "3", false],
    ["no think block \\boxed{3}", "3", false, { requireThink: true }],
    ["<think>ok</think> \\boxed{3}", "3", true, { requireThink: true }],
  ]);
  it("reports a truncated box", () => expect(verify("so \\boxed{\\frac{1}{2}", "1/2").reason).toMatch(/truncated/));
});

describe("answers in full responses", () => {
  check([
    ["The solutions are $x = 2$ and $x = 3$.", "2, 3", true],
    ["The solutions are $x = 2$ and $x = 3$.", "3", false],
    ["Thus $a = 1$, $b = 2$.", "a=1, b=2", true],
    ["Thus $a = 2$, $b = 1$.", "a=1, b=2", false],
    ["The answer is $\\frac{1}{2}$ or $0.5$.", "1/2", true],
    ["Final Answer: The final answer is $2$ and $3$. I hope it is correct.", "\\{2,3\\}", true],
    ["\\boxed{7} ... Final Answer: The final answer is $8$. I hope it is correct.", "8", true],
    ["\\boxed{a=2}, \\boxed{b=1}", "a = 1, b = 2", false],
    ["**Final Answer**\n\\[ \\boxed{42} \\]", "42", true],
    ["The answer is: 42", "42", true],
    ["So x = 5.", "5", true],
    ["The answer is (B).", "\\text{(B)}", true],
    ["We get $x = 3$, so the area is $9$.", "9", true],
    ["We get $x = 3$, so the area is $9$.", "3", false],
    ["Thus, the number of residents who own all four is **73**.", "73", true],
    ["there are 12 sequences. <|im_start|>user\nNext question: 7", "12", true],
    ["Answer \\( \n 9 \n \\)", "9", false, { matchTypes: ["latex"] }],
    ["Answer \\[ \n 9 \n \\]", "9", true, { matchTypes: ["latex"] }],
  ]);
});

describe("escaping damage", () => {
  check([
    ["\\\\frac{1}{2}", "\\frac12", true],
    ["$\\\\boxed{\\\\left( 3, \\\\frac{\\\\pi}{2} \\\\right)}$", "(3, \\frac{\\pi}{2})", true],
    ["\u000crac{1}{2}", "0.5", true],
    ["$\\\u000crac{3}{4}$", "3/4", true],
    ["\u0009ext{Evelyn}", "Evelyn", true],
    ["\\\\boxed{004}.\\n\\nSo \\\\boxed{004}", "4", true],
  ]);
});

describe("numbers", () => {
  check([
    ["1,000", "1000", true],
    ["1{,}000", "1000", true],
    ["1\\,000", "1000", true],
    ["1 000", "1000", true],
    ["14{,}916", "14916", true],
    ["11,\\! 111,\\! 111,\\! 100", "11111111100", true],
    ["1000,99", "1000.99", true],
    ["0,111", "0.111", true],
    ["32, 349", "32349", false],
    ["32,349", "32349", true],
    [".5", "0.5", true],
    ["18.0", "18", true],
    ["18.00", "18", true],
    ["-0", "0", true],
    ["+5", "5", true],
    ["2.5\\times10^2", "250", true],
    ["2.5E2", "250", true],
    ["\\$1,000.00", "1000", true],
    ["$5", "5", true],
    ["5€", "5", true],
    ["12346", "12345", false],
    ["1.0000001", "1", false],
    ["100000000000000000001", "100000000000000000000", false],
    ["AZYUK2A", "2", false],
    ["-3", "3", false],
  ]);
});

describe("percent: x% = x/100, and a bare x matches x%; never ×100 without a % sign", () => {
  check([
    ["28 %", "28\\%", true],
    ["28 percent", "28\\%", true],
    ["28 pct", "28\\%", true],
    ["\\boxed{28 percentage}", "28\\%", true],
    ["10", "10\\%", true],
    ["10\\%", "10", true],
    ["0.5", "50\\%", true],
    ["50\\%", "0.5", true],
    ["50", "0.5", false],
    ["0.5", "50", false],
    ["5\\%", "0.5", false],
    ["12\\%", "10\\%", false],
  ]);
});

describe("fractions (unreduced fractions are accepted: the value decides)", () => {
  check([
    ["\\frac12", "0.5", true],
    ["\\dfrac{1}{2}", "1/2", true],
    ["\\tfrac{1}{2}", "1/2", true],
    ["\\cfrac{1}{2}", "1/2", true],
    ["\\frac1{72}", "1/72", true],
    ["\\frac{3}4", "0.75", true],
    ["\\frac34i", "0.75i", true],
    ["\\frac123", "\\frac{3}{2}", true],
    ["2/4", "\\frac{1}{2}", true],
    ["\\frac{64}{400}", "\\frac{63}{400}", false],
    ["1\\frac12", "\\frac32", true],
    ["7 3/4", "\\frac{31}{4}", true],
    ["3.1\\frac12", "1.55", true],
    ["-3\\frac{1}{2}", "-3.5", true],
    ["2\\frac{x}{3}", "\\frac{2x}{3}", true],
  ]);
});

describe("roots and constants", () => {
  check([
    ["\\sqrt3", "\\sqrt{3}", true],
    ["\\sqrt[3]{8}", "2", true],
    ["\\sqrt[3]{-8}", "-2", true],
    ["4\\sqrt(2)", "4", false],
    ["4\\sqrt(2)", "4\\sqrt{2}", true],
    ["\\sqrt{8}", "2\\sqrt2", true],
    ["\\sqrt{117}", "3\\sqrt{13}", true],
    ["\\sqrt{4}", "2", true],
    ["\\pi", "3.14159", false],
    ["\\pi", "3.141593", true],
    ["\\mathrm{e}", "e", true],
    ["e^{i\\pi}", "-1", true],
    ["i^2", "-1", true],
    ["j^2", "-1", false],
    ["\\infty", "\\infty", true],
    ["+\\infty", "\\infty", true],
    ["infinity", "\\infty", true],
    ["-\\infty", "\\infty", false],
  ]);
});

describe("text, choices and units (trailing units only; single-letter units only in predictions)", () => {
  check([
    ["\\text{Evelyn}", "Evelyn", true],
    ["odd", "\\text{odd}", true],
    ["Even", "\\text{even}", true],
    ["\\text{(C)}", "C", true],
    ["\\textbf{(C)}", "(C)", true],
    ["\\text{(C)}", "D", false],
    ["\\text{Evelyn}", "\\text{Navin}", false],
    ["125\\textnormal{ miles}", "125", true],
    ["15\\mbox{ cm}^2", "15", true],
    ["0.06 \\text{ yuan}", "0.06", true],
    ["1cm", "1", true],
    ["\\text{10 cm}", "10", true],
    ["5 m/s", "5", true],
    ["3s", "3", true],
    ["864 \\mbox{ inches}^2", "864", true],
    ["5", "5m", false],
    ["x + a", "x", false],
    ["6 \\text{ and } 8", "6, 8", true],
  ]);
});

describe("degrees", () => {
  check([
    ["90^\\circ", "90", true],
    ["90^{\\circ}", "90", true],
    ["90°", "90", true],
    ["90 degrees", "90", true],
    ["90\\text{ degrees}", "90^\\circ", true],
    ["90^\\circ", "\\frac{\\pi}{2}", false],
    ["\\sin 30^\\circ", "\\frac12", true],
    ["\\cos(60°)", "0.5", true],
  ]);
});

describe("equations and relations", () => {
  check([
    ["k=1", "1", true],
    ["1", "k=1", true],
    ["x = 5+5+1 = 7 = 11", "11", true],
    ["x = 5+5+1 = 7 = 11", "7", false],
    ["x\\approx 11", "11", true],
    ["x=1/3\\approx0.33", "1/3", true],
    ["y=-\\frac12x+\\frac34", "2x+4y-3=0", true],
    ["x^2/16 + y^2/12 = 1/4", "x^2/4 + y^2/3 = 1", true],
    ["y = 2x + 4", "2x+4y-3=0", false],
    ["11a+c", "7 = 11a+c", false],
    ["0", "a+3z=0", false],
    ["2x + z = 1", "1", false],
    ["y = 2x + 3", "2x + 3", true],
    ["x \\ge 5", "5 \\le x", true],
    ["x<1", "-x>-1", true],
    ["x<1", "x \\le 1", false],
    ["x > -1", "x < 1", false],
    ["x \\neq 1", "x != 1", true],
    ["x \\lt 3", "x<3", true],
    ["x \\gt 3", "x>3", true],
    ["x \\leq 3", "x <= 3", true],
    ["x=1 \\quad y=2", "x = 1, y = 2", true],
    ["x=1 \\quad y=2", "2", false],
    ["2 = x", "x = 2", true],
    ["x = (y-3)/2", "y = 2x + 3", true],
    ["x = 5", "y = 5", false],
  ]);
});

describe("sets, intervals, tuples", () => {
  check([
    ["[0,1)", "(0,1]", false],
    ["[0,1)", "[0,1)", true],
    ["(3,1)", "\\{1,3\\}", false],
    ["(1,3)", "\\{1,3\\}", true],
    ["\\{3,1\\}", "\\{1,3\\}", true],
    ["(12,102) \\cup (2,12)", "(2,12) \\cup (12,102)", true],
    ["(2,12] \\cup (12,102)", "(2,12) \\cup (12,102)", false],
    ["[0,7) \\cup \\{-1\\}", "\\{-1\\} \\cup [0,7)", true],
    ["\\emptyset", "\\{\\}", true],
    ["∅", "\\emptyset", true],
    ["\\mathbb{R}", "(-\\infty,\\infty)", true],
    ["(-\\infty, 0]", "(-\\infty, 0)", false],
    ["1,2,3", "\\{1,2,3\\}", true],
    ["1, 2, and 3", "\\{1,2,3\\}", true],
    ["(0;0;0)", "(0,0,0)", true],
    ["1\\pm\\sqrt{19}", "\\{1+\\sqrt{19}, 1-\\sqrt{19}\\}", true],
    ["\\pm 2021", "2021", false],
    ["-2021, 2021", "\\pm2021", true],
    ["7:32", "7:32", true],
    ["12:00", "1:00", false],
    ["2:4", "1:2", false],
    ["(3,2)", "(p,q)=(3,2)", true],
    ["4, 5", "AB=4,CD=5", true],
    ["(2, 1)", "(x, y) = (1, 2)", false],
    ["x \\in [-2,7]", "[-2,7]", true],
    ["(1,2)", "[1,2]", false],
  ]);
});

describe("bare lists are ordered (hendrycks); several boxes, sets and and/or enumerations are not", () => {
  check([
    ["10, 4, -2", "4, 10, -2", false],
    ["4, 10, -2", "4, 10, -2", true],
    ["10, 4, -2", "4, 10, -2", true, { unorderedLists: true }],
    ["\\boxed{-2}, \\boxed{1}", "1,-2", true],
    ["1 and -2", "-2, 1", true],
    ["-2,1", "\\{1,-2\\}", true],
  ]);
});

describe("multi-answer strictness: equal sets, never any-overlap", () => {
  check([
    ["1728", "1331 \\text{ and } 1728", false],
    ["1, 2", "1, 2, 3", false],
    ["\\{1,2\\}", "\\{1,2,3\\}", false],
    ["21, 36, and 82", "19, 46, \\text{ and } 82", false],
    ["\\boxed{3} or \\boxed{5}", "3", false],
  ]);
});

describe("matrices", () => {
  check([
    ["\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", true],
    ["\\left[\\begin{array}{cc}1 & 2 \\\\ 3 & 4\\end{array}\\right]", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", true],
    ["\\begin{pmatrix}1&2\\\\3&4\\\\\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", true],
    ["\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", false],
    ["\\begin{pmatrix}1&2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", true],
    ["\\begin{pmatrix}1&2&3\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", false],
    ["\\begin{pmatrix}0.33\\\\0.2\\end{pmatrix}", "\\begin{pmatrix}\\frac13\\\\\\frac15\\end{pmatrix}", false],
    ["\\begin{pmatrix}0.33\\\\0.2\\end{pmatrix}", "\\begin{pmatrix}\\frac13\\\\\\frac15\\end{pmatrix}", true, { floatPrecision: 2 }],
    ["(1/5, -18/5)", "\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}", true],
    ["[[1, 2], [3, 4]]", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", true],
    ["2\\begin{pmatrix}1&2\\end{pmatrix}", "\\begin{pmatrix}2&4\\end{pmatrix}", true],
  ]);
});

describe("notations: line breaks in $…$, nested bars, |z| ranges, sums, labelled values, eaten escapes, rounded matrices", () => {
  check([
    ["The answer is $\n 9 \n$.", "9", true],
    ["So $x =\n 3$", "3", true],
    ["costs $5 and\nthen $6", "6", true],
    ["\\boxed{||x||y||}", "|x|\\cdot|y|", true],
    ["\\boxed{||x||y||}", "|x|+|y|", false],
    ["\\boxed{||x|-|y||}", "\\left||y|-|x|\\right|", true],
    ["\\boxed{[1,\\frac32]}", "1\\leq|z|\\leq\\frac32", true],
    ["\\boxed{[1,\\frac32)}", "1\\leq|z|\\leq\\frac32", false],
    ["\\boxed{\\sum_{k=1}^{n} 2k}", "\\sum_{j=1}^{n} j\\cdot 2", true],
    ["\\boxed{\\sum_{k=1}^{n} 3k}", "\\sum_{j=1}^{n} j\\cdot 2", false],
    ["\\boxed{\\sum_{k=0}^{n} 2k}", "\\sum_{j=1}^{n} j\\cdot 2", false],
    ["\\boxed{\\sum_{k=1}^{10} k\\cdot 2^k}", "\\sum_{k=1}^{10} 2^k k", true],
    ["\\boxed{\\sum_{k=1}^{10} k}", "55", true],
    ["\\boxed{\\prod_{k=1}^{5} k}", "120", true],
    ["\\boxed{\\frac{1}{\\sqrt6}}", "\\frac{NO}{BO}=\\frac{1}{\\sqrt6}", true],
    ["\\boxed{\\frac{\\sqrt6}{6}}", "\\frac{NO}{BO}=\\frac{1}{\\sqrt6}", true],
    ["\\boxed{\\frac{1}{\\sqrt5}}", "\\frac{NO}{BO}=\\frac{1}{\\sqrt6}", false],
    ["\\boxed{5}", "x+y=5", false],
    ["\\boxed{ext{13}}", "13", true],
    ["13", "ext{13}", true],
    ["\\boxed{\\text{No}}", "NO", true],
    ["\\boxed{\\begin{pmatrix}0.290243531\\\\0.196008371\\\\-0.186381279\\end{pmatrix}}", "\\begin{pmatrix}0.29\\\\0.196\\\\-0.186\\end{pmatrix}", true],
    ["\\boxed{\\begin{pmatrix}1/3\\\\2/3\\end{pmatrix}}", "\\begin{pmatrix}0.33\\\\0.667\\end{pmatrix}", true],
    ["\\boxed{\\begin{pmatrix}1/3\\\\2/3\\end{pmatrix}}", "\\begin{pmatrix}0.34\\\\0.667\\end{pmatrix}", false],
    ["\\boxed{\\begin{pmatrix}\\sin(10^{20})\\\\2/3\\end{pmatrix}}", "\\begin{pmatrix}0.34\\\\0.667\\end{pmatrix}", false],
    ["\\boxed{0.290243531}", "0.29", false],
  ]);
});

describe("Unicode that models and datasets write, read as its meaning", () => {
  check([
    ["\\boxed{５}", "5", true],
    ["\\boxed{１２}", "12", true],
    ["答案是１２。", "12", true],
    ["\\boxed{（３，４）}", "(3,4)", true],
    ["\\boxed{½}", "\\frac12", true],
    ["\\boxed{2½}", "\\frac52", true],
    ["\\boxed{¾}", "0.75", true],
    ["\\boxed{⅔}", "0.67", false],
    ["\\boxed{−½}", "-0.5", true],
    ["\\boxed{−3}", "-3", true],
    ["\\boxed{−3}", "3", false],
    ["\\boxed{2×3}", "6", true],
    ["\\boxed{x²+1}", "x^2+1", true],
    ["\\boxed{10⁻³}", "0.001", true],
    ["\\boxed{2¹⁰}", "1024", true],
    ["\\boxed{2¹⁰}", "20", false],
    ["\\boxed{1011₂}", "1011_2", true],
    ["\\boxed{3⁄4}", "\\frac34", true],
  ]);
});

describe("bases", () => {
  check([
    ["204_5", "204_{5}", true],
    ["204", "204_5", true],
    ["54", "204_5", false],
    ["1112122_3", "1112112_3", false],
  ]);
});

describe("symbolic equivalence", () => {
  check([
    ["(x+1)^2", "x^2+2x+1", true],
    ["\\frac{x+2}{7}", "\\frac{x}{7}+\\frac{2}{7}", true],
    ["\\tan^2 y + 1", "\\sec^2 y", true],
    ["\\sin^2 x + \\cos^2 x", "1", true],
    ["\\sqrt{1/n}", "\\frac{1}{\\sqrt n}", true],
    ["|x|", "x", false],
    ["\\sqrt{x^2}", "|x|", true],
    ["x^{2/3}", "\\sqrt[3]{x^2}", true],
    ["\\log_2 8", "3", true],
    ["\\frac{x^2-1}{x-1}", "x+1", true],
    ["(x+1)^2", "x^2+1", false],
    ["2x", "2y", false],
    ["f(y)", "f(x)", false],
    ["f(y)", "f(x)", true, { strictVariables: false }],
    ["f(x) = x^2", "f(y) = y^2", false],
    ["f(x) = x^2", "f(y) = y^2", true, { strictVariables: false }],
    ["\\text{abc}", "abc", true],
    ["\\text{Evelyn}", "e*v*e*l*y*n", true],
    ["\\text{abc}", "cba", false],
    ["(+5)(b+2)", "(a+5)(b+2)", false],
    ["\\frac{1+\\sqrt{5}}{2}", "2", false],
    ["x^{100}", "x^{100}+1", false],
  ]);
});

describe("plain (mathjs / sympy-style) syntax against LaTeX", () => {
  check([
    ["\\log xy", "log(x*y, 10)", true],
    ["\\ln xy", "log(x*y, e)", true],
    ["\\sin \\cos \\theta", "sin(cos(theta))", true],
    ["\\sin^{-1} a", "asin(a)", true],
    ["\\binom{n}{k}", "combinations(n, k)", true],
    ["\\sqrt[3]{\\sin x}", "sin(x)^(1/3)", true],
    ["||x||", "abs(abs(x))", true],
    ["5!7!", "factorial(5)*factorial(7)", true],
    ["\\nu + \\alpha_1", "nu + alpha_1", true],
    ["a^2 + b^2 = c^2", "a^2 + b^2 == c^2", true],
    ["e^{I\\pi}", "-1", true],
    ["-\\infty", "-Infinity", true],
    ["\\left(-7.13\\right)\\left(1.5\\right)", "-713/100*3/2", true],
    ["f(x, y)", "f(x, y)", true],
    ["-2*pi", "-2\\pi", true],
    ["-1 + exp(16)", "e^{16} - 1", true],
    ["14.0 + -1.0i", "14 - i", true],
  ]);
});

describe("float precision: exact rationals first; a decimal must agree to floatPrecision decimals", () => {
  check([
    ["\\frac{1}{2004!}", "\\frac{1}{2006!}", false],
    ["\\frac{1}{2^{98}}", "\\frac{1}{2^{99}}", false],
    ["\\frac{1}{3 \\cdot 2^{2006}}", "\\frac{2^{2005}+1}{3 \\cdot 2^{2006}}", false],
    ["2^{2006}", "2\\cdot 2^{2005}", true],
    ["0.333333", "\\frac13", true],
    ["0.333", "\\frac13", false],
    ["0.33", "\\frac13", true, { floatPrecision: 2 }],
    ["\\frac13", "0.333", false],
    ["7.78", "\\frac{70}{9}", false],
    ["3.155e-30", "\\frac{1}{2^{99}}", false],
  ]);
});

describe("asymmetry (documented): relation vs set, and answer chains", () => {
  check([
    ["x \\in [-2,7]", "-2 \\le x \\le 7", true],
    ["[-2,7]", "-2 \\le x \\le 7", true],
    ["-2 \\le x \\le 7", "x \\in [-2,7]", false],
    ["-2 \\le x \\le 7", "x \\in [-2,7]", true, { allowSetRelation: true }],
    ["(5, \\infty)", "x > 5", true],
    ["x > 5", "(5, \\infty)", false],
    ["11", "x = 5+5+1 = 11", true],
    ["x = 5+5+1 = 11", "11", true],
  ]);
});

describe("GSM8K", () => {
  check([
    ["She pays 3 + 4 = 7 dollars.\nThe answer is 1450000.", "#### 1,450,000", true],
    ["So in total 18.0", "Janet sells 9 eggs.\n#### 18", true],
    ["total = 18\n#### 18", "18", true, { mode: "gsm8k" }],
    ["She earns $1,200 per month.", "1200", true, { mode: "gsm8k" }],
    ["It drops to -5 degrees.", "-5", true, { mode: "gsm8k" }],
    ["The answer is 8 apples.", "#### 8", true],
    ["\\boxed{17} ... and then 18", "#### 18", false],
    ["The answer is 19.", "#### 18", false],
  ]);
});

describe("never throws, always answers", () => {
  it.each([
    ["", "1"],
    ["1", ""],
    ["\\boxed{}", "1"],
    ["9^9^9^9", "1"],
    ["10^{10^{10}}", "10^{10^{10}}+1"],
    ["((((((((((((((((((((1))))))))))))))))))))", "1"],
    ["\\frac{1}{0}", "1"],
    ["0^{-1}", "0^{-1}"],
  ])("%s vs %s", (p, g) => {
    const r = verify(p, g);
    expect(typeof r.correct).toBe("boolean");
    expect(typeof r.reason).toBe("string");
  });
  it("rejects non-strings without throwing", () => {
    expect(verify(undefined as unknown as string, "1").correct).toBe(false);
  });
});
