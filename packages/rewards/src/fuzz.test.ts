// Robustness: 10^5 random and adversarial inputs. No exception may escape `verify`, no internal error may occur
// (only "budget exceeded" is an allowed outcome), and no call may exceed the per-call ceiling.
//
// The work bound is by construction (limits.ts): responses are cut to their last 60,000 characters, an answer
// longer than 1,500 characters or 1,200 tokens is compared as a string, parser depth ≤ 60, ≤ 2,000 nodes,
// numeric literals ≤ 400 digits on the exact path, exact intermediates ≤ 40,000 bits, n! for n ≤ 3,000,
// ≤ 4 ± signs, ≤ 64 list items, ≤ 400,000 evaluation steps per call, ≤ 16 extraction candidates.
// Measured on an idle core: typical calls take well under 1 ms and the adversarial ones tens of ms; the assert
// uses a generous ceiling because this machine is shared.
import { describe, expect, it } from "vitest";
import { mulberry32 as rng } from "./random.js";
import { extractBoxed, verify } from "./index.js";

const CEILING_MS = Number(process.env.NR_FUZZ_CEILING_MS ?? 2000);
const TOTAL = Number(process.env.NR_FUZZ_N ?? 100_000);

const PIECES = [
  "\\boxed{", "\\fbox{", "}", "{", "\\frac", "\\dfrac", "\\sqrt", "\\sqrt[3]", "^", "_", "(", ")", "[", "]", "\\{", "\\}", ",", ";",
  "=", "<", ">", "\\le", "\\ge", "\\ne", "\\approx", "\\pm", "\\mp", "\\cdot", "\\times", "+", "-", "*", "/", "!", "%", "\\%", ".",
  "0", "1", "2", "3", "7", "9", "10", "0.5", ".25", "1,000", "12345678901234567890", "x", "y", "a", "b", "n", "i", "e", "I", "E",
  "\\pi", "\\infty", "\\text{", "\\text{ cm}", "\\mathrm{", "\\left(", "\\right)", "\\left|", "\\right|", "|", "$", "$$", "\\(",
  "\\)", "\\[", "\\]", "\\begin{pmatrix}", "\\end{pmatrix}", "\\begin{array}{cc}", "\\end{array}", "&", "\\\\", "\\cup", "\\cap",
  "\\in", ":", " and ", " or ", "####", "The answer is ", "Final Answer: The final answer is ", "</think>", "<think>", "**",
  "\\sin", "\\cos", "\\log", "\\ln", "_5", "^\\circ", "°", " degrees", " percent", "\\$", "€", "\\mathbb{R}", "\\emptyset",
  "\\quad", "\\!", "\\,", "{,}", "\u0000", "\u000c", "\t", "\n", "\r", "\u2212", "√", "π", "∞", "≤", "±", "²", "日本", "😀",
  "\\", "\\\\frac", "<|im_end|>", "\\overline{", "\\sum_{k=1}^{n}", "\\binom", "\\lfloor", "\\rfloor", "'", '"',
];

function soup(r: () => number, maxLen: number): string {
  const n = 1 + Math.floor(r() * maxLen);
  let s = "";
  for (let k = 0; k < n; k++) s += PIECES[Math.floor(r() * PIECES.length)];
  return s;
}

/** A random, mostly well-formed expression: exercises the evaluators rather than the error paths. */
function expr(r: () => number, depth: number): string {
  const leaf = () => {
    const c = r();
    if (c < 0.35) return String(Math.floor(r() * 20) - 5);
    if (c < 0.55) return ["x", "y", "a", "\\pi", "e", "i", "n"][Math.floor(r() * 7)];
    if (c < 0.7) return (r() * 10).toFixed(Math.floor(r() * 4));
    return `\\frac{${Math.floor(r() * 9) + 1}}{${Math.floor(r() * 9) + 1}}`;
  };
  if (depth <= 0 || r() < 0.25) return leaf();
  const a = expr(r, depth - 1);
  const b = expr(r, depth - 1);
  switch (Math.floor(r() * 12)) {
    case 0:
      return `${a}+${b}`;
    case 1:
      return `${a}-${b}`;
    case 2:
      return `${a}\\cdot ${b}`;
    case 3:
      return `\\frac{${a}}{${b}}`;
    case 4:
      return `(${a})^{${Math.floor(r() * 7) - 2}}`;
    case 5:
      return `\\sqrt{${a}}`;
    case 6:
      return `\\sin(${a})`;
    case 7:
      return `(${a}, ${b})`;
    case 8:
      return `${a} = ${b}`;
    case 9:
      return `${a}^{${b}}`;
    case 10:
      return `\\{${a}, ${b}\\}`;
    default:
      return `\\log(${a}) \\pm ${b}`;
  }
}

const N = 100_000;
const ADVERSARIAL: string[] = [
  "{".repeat(N) + "}".repeat(N),
  "(".repeat(N) + "1" + ")".repeat(N),
  "\\boxed{" + "(".repeat(20_000) + "1" + ")".repeat(20_000) + "}",
  "\\frac{".repeat(5000) + "1" + "}{2}".repeat(5000),
  "\\sqrt{".repeat(5000) + "2" + "}".repeat(5000),
  "x^{".repeat(5000) + "2" + "}".repeat(5000),
  "9".repeat(N),
  "\\boxed{" + "9".repeat(N) + "}",
  "\\boxed{0." + "3".repeat(N) + "}",
  "9^9^9^9",
  "\\boxed{9^{9^{9^{9}}}}",
  "\\boxed{10^{10^{100}}}",
  "\\boxed{(10^{100})!}",
  "\\boxed{2^{2^{2^{2^{2^{2}}}}}}",
  "\\boxed{x^{9999999999}}",
  "\\boxed{(x+1)^{5000}}",
  "\\boxed{3000!}",
  "\\boxed{\\binom{10^{9}}{5\\cdot 10^{8}}}",
  "\\boxed{1}".repeat(N / 9),
  "\\boxed{1}, ".repeat(N / 11),
  "\\boxed{".repeat(N / 7),
  "}".repeat(N),
  "$".repeat(N),
  "\\(".repeat(N / 2),
  "\\[".repeat(N / 2),
  "a".repeat(N) + "!",
  "1,".repeat(N / 2),
  "1.".repeat(N / 2),
  "answer is ".repeat(N / 10),
  "The final answer is ".repeat(N / 20),
  "####".repeat(N / 4),
  "\\text{".repeat(N / 6),
  "\\left(".repeat(N / 6),
  "-".repeat(N) + "1",
  "+-".repeat(N / 2) + "1",
  "\\pm 1 ".repeat(200),
  "1" + "+1".repeat(5000),
  "\\{" + Array.from({ length: 500 }, (_, i) => i).join(",") + "\\}",
  "\\begin{pmatrix}" + "1&".repeat(500) + "1\\end{pmatrix}",
  "\\begin{pmatrix}" + "1\\\\".repeat(500) + "1\\end{pmatrix}",
  "\u0000\u0001\u0002\u000c\t\r".repeat(N / 6),
  "\\\\".repeat(N / 2),
  "**".repeat(N / 2),
  "<think>".repeat(N / 7),
  "</think>".repeat(N / 8),
  "<|im_end|>".repeat(N / 10),
  "\\".repeat(N),
  "x".repeat(N),
  "xy".repeat(700),
  "\\frac12".repeat(10_000),
  "1/0",
  "0^{-1}",
  "\\frac{1}{0}",
  "\\sqrt{-1}^{\\sqrt{-1}}",
  "e^{e^{e^{e^{e^{e}}}}}",
  "\\ln(0)",
  "\\log_1 5",
  "\\tan(\\pi/2)",
  "0.".padEnd(N, "0") + "1",
  "1e99999",
  "1E-99999",
  "\\boxed{" + "1 \\cdot ".repeat(3000) + "1}",
  "(((a+b)+c)+d)".repeat(300),
  "\\boxed{" + Array.from({ length: 200 }, (_, i) => `(${i},${i + 1})`).join(",") + "}",
];

describe("fuzz", () => {
  it(`${TOTAL.toLocaleString("en")} random + adversarial inputs: no exception, no internal error, every call under ${CEILING_MS} ms`, () => {
    const r = rng(20240611);
    const golds = ["1", "\\frac{1}{2}", "x+1", "(1,2)", "[0,1)", "\\{1,2\\}", "x = 3", "\\text{Evelyn}", "#### 18", "\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}"];
    const times: number[] = [];
    const errors: string[] = [];
    let slowest = { ms: 0, input: "" };
    let budgetStops = 0;
    const run = (pred: string, gold: string) => {
      const t0 = performance.now();
      let res;
      try {
        res = verify(pred, gold);
      } catch (e) {
        errors.push(`threw ${String(e)} on ${JSON.stringify(pred.slice(0, 80))}`);
        return;
      }
      const ms = performance.now() - t0;
      times.push(ms);
      if (ms > slowest.ms) slowest = { ms, input: pred.slice(0, 60) };
      if (typeof res.correct !== "boolean" || typeof res.reason !== "string") errors.push(`bad result for ${JSON.stringify(pred.slice(0, 80))}`);
      if (res.reason.startsWith("error:")) {
        if (/budget exceeded/.test(res.reason)) budgetStops++;
        else errors.push(`${res.reason} on ${JSON.stringify(pred.slice(0, 80))} vs ${JSON.stringify(gold.slice(0, 40))}`);
      }
    };
    for (const a of ADVERSARIAL) {
      run(a, "1");
      run("1", a);
      run(a, a);
      extractBoxed(a);
    }
    let n = times.length;
    while (n < TOTAL) {
      const k = r();
      let pred: string;
      let gold: string;
      if (k < 0.45) {
        pred = soup(r, 24);
        gold = r() < 0.5 ? soup(r, 12) : golds[Math.floor(r() * golds.length)];
      } else if (k < 0.9) {
        pred = expr(r, 4);
        gold = r() < 0.5 ? expr(r, 3) : pred.replace(/x/g, "(x)");
      } else {
        pred = `<think>${soup(r, 10)}</think> The answer is $\\boxed{${expr(r, 3)}}$.`;
        gold = expr(r, 3);
      }
      run(pred, gold);
      n++;
    }
    times.sort((a, b) => a - b);
    const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))];
    console.log(
      `fuzz: ${times.length} calls, p50 ${q(0.5).toFixed(3)} ms, p99 ${q(0.99).toFixed(3)} ms, p99.99 ${q(0.9999).toFixed(2)} ms, ` +
        `max ${slowest.ms.toFixed(1)} ms (${JSON.stringify(slowest.input)}), budget stops ${budgetStops}`,
    );
    expect(errors.slice(0, 20), errors.slice(0, 20).join("\n")).toEqual([]);
    expect(times.length).toBeGreaterThanOrEqual(TOTAL);
    expect(slowest.ms).toBeLessThan(CEILING_MS);
  });
});
