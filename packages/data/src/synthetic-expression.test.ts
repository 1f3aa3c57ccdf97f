// The expression kind of the synthetic task, checked against an independent evaluation of each problem's text
// (tokens read left to right) rather than against the generator's own step list.
import { describe, expect, it } from "vitest";
import { expressionFacts, generateSynthetic, syntheticSftTarget } from "./synthetic.js";

/** Value of `a ± b ± c = ?`, read from the text alone. */
function evaluateText(text: string): number {
  const m = /^(.*) = \?$/.exec(text);
  if (!m) throw new Error(`not an expression problem: ${text}`);
  const tokens = m[1].split(" ");
  let value = Number(tokens[0]);
  for (let i = 1; i < tokens.length; i += 2) value = tokens[i] === "+" ? value + Number(tokens[i + 1]) : tokens[i] === "-" ? value - Number(tokens[i + 1]) : NaN;
  return value;
}

describe("synthetic expression task", () => {
  const range = { maxOperand: 9, maxValue: 20 };
  const opts = { kind: "expression" as const, minSteps: 2, maxSteps: 3, ...range };
  const train = generateSynthetic({ ...opts, seed: 4, count: 1500 });
  const heldout = generateSynthetic({ ...opts, seed: 4, count: 250, split: "heldout" });

  it("writes one-line chains whose answer is the text's value, every number inside the range", () => {
    for (const r of [...train, ...heldout]) {
      expect(r.problem).toMatch(/^\d+( [+-] \d+){2,3} = \?$/);
      expect(evaluateText(r.problem), r.problem).toBe(Number(r.answer));
      const numbers = r.problem.match(/\d+/g)!.map(Number);
      expect(numbers.slice(1).every((n) => n >= 2 && n <= range.maxOperand), r.problem).toBe(true);
      expect(new Set(numbers).size, `${r.problem}: every written number differs`).toBe(numbers.length);
      expect(r.meta?.family).toBe("expression");
    }
    expect(new Set(train.map((r) => r.problem)).size).toBe(train.length);
    expect(new Set(train.map((r) => r.meta?.steps))).toEqual(new Set([2, 3]));
  });

  it("works each chain one known fact per line, the left operand being the line above's result", () => {
    for (const r of train.slice(0, 400)) {
      const lines = r.solution!.split("\n");
      const operands = r.problem.match(/[+-] \d+/g)!;
      let prev = Number(r.problem.split(" ")[0]);
      lines.forEach((line, i) => {
        const [, a, op, b, c] = /^(\d+) ([+-]) (\d+) = (\d+)$/.exec(line)!;
        expect(Number(a)).toBe(prev);
        expect(`${op} ${b}`).toBe(operands[i]);
        expect(Number(c)).toBe(op === "+" ? Number(a) + Number(b) : Number(a) - Number(b));
        expect(Number(c) >= 1 && Number(c) <= range.maxValue, line).toBe(true);
        prev = Number(c);
      });
      expect(prev).toBe(Number(r.answer));
      expect(syntheticSftTarget(r)).toBe(`<think>\n${r.solution}\n</think>\n\\boxed{${r.answer}}`);
    }
  });

  it("keeps the splits disjoint and leaves the word task unchanged", () => {
    const held = new Set(heldout.map((r) => r.problem));
    expect(train.some((r) => held.has(r.problem))).toBe(false);
    expect(heldout.every((r) => r.meta?.split === "heldout")).toBe(true);
    expect(generateSynthetic({ seed: 4, count: 20, kind: "words" })).toEqual(generateSynthetic({ seed: 4, count: 20 }));
  });

  it("refuses operations a left-to-right chain cannot hold, and unknown kinds", () => {
    expect(() => generateSynthetic({ ...opts, count: 5, ops: ["add", "mul"] })).toThrow(/\+ and - only.*drop mul and div/);
    expect(() => generateSynthetic({ count: 5, kind: "sums" as never })).toThrow(/unknown kind "sums"/);
  });

  it("lists every one-operation fact of the range exactly once, with its split", () => {
    const facts = expressionFacts(range);
    let expected = 0;
    for (let a = 2; a <= range.maxValue; a++) for (let b = 2; b <= range.maxOperand; b++) expected += Number(a + b <= range.maxValue) + Number(a - b >= 1);
    expect(facts).toHaveLength(expected);
    expect(new Set(facts.map((f) => f.problem)).size).toBe(expected);
    for (const f of facts) {
      expect(evaluateText(f.problem)).toBe(Number(f.answer));
      expect(f.solution).toBe(`${f.problem.replace(" = ?", "")} = ${f.answer}`);
    }
    const split = new Set(facts.map((f) => f.meta?.split));
    expect(split).toEqual(new Set(["train", "heldout"]));
    // The one-operation problems the generator draws are among the facts, with the same split.
    const one = generateSynthetic({ ...range, kind: "expression", minSteps: 1, maxSteps: 1, count: 40 });
    const byText = new Map(facts.map((f) => [f.problem, f]));
    for (const r of one) expect(byText.get(r.problem)).toEqual(r);
  });
});
