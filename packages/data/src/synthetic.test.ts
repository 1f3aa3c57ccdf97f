import { describe, expect, it } from "vitest";
import { solveSyntheticText } from "./fixtures/synthetic-solver.js";
import { parseSftTarget } from "./prompts.js";
import { SYNTHETIC_NAMES, generateSynthetic, syntheticAlphabet, syntheticSftTarget, syntheticSplitOf, syntheticWords } from "./synthetic.js";

describe("synthetic task", () => {
  const train = generateSynthetic({ seed: 1, count: 2000 });
  const heldout = generateSynthetic({ seed: 1, count: 300, split: "heldout" });

  it("is deterministic by seed and changes with it", () => {
    expect(generateSynthetic({ seed: 1, count: 50 })).toEqual(train.slice(0, 50));
    const other = generateSynthetic({ seed: 2, count: 50 });
    expect(other.map((r) => r.problem)).not.toEqual(train.slice(0, 50).map((r) => r.problem));
  });

  it("produces distinct problems whose answers match the text", () => {
    expect(train).toHaveLength(2000);
    expect(new Set(train.map((r) => r.problem)).size).toBe(2000);
    expect(new Set(train.map((r) => r.id)).size).toBe(2000);
    for (const r of [...train, ...heldout]) {
      expect(solveSyntheticText(r.problem), r.problem).toBe(Number(r.answer));
      expect(r.answer).toMatch(/^\d+$/);
      expect(r.source).toBe("synthetic");
    }
  });

  it("has worked solutions whose equations are correct and chain to the answer", () => {
    for (const r of train.slice(0, 500)) {
      const lines = r.solution!.split("\n");
      expect(lines).toHaveLength(r.meta!.steps as number);
      let prev: number | null = null;
      for (const line of lines) {
        const m = /^(\d+) ([-+*/]) (\d+) = (\d+)$/.exec(line);
        expect(m, line).not.toBeNull();
        const [a, op, b, c] = [Number(m![1]), m![2], Number(m![3]), Number(m![4])];
        expect(op === "+" ? a + b : op === "-" ? a - b : op === "*" ? a * b : a / b).toBe(c);
        if (prev !== null) expect(a).toBe(prev);
        prev = c;
      }
      expect(String(prev)).toBe(r.answer);
      const target = syntheticSftTarget(r);
      expect(parseSftTarget(target)).toEqual({ reasoning: r.solution, answer: r.answer });
    }
  });

  it("keeps train and held-out splits disjoint by problem text, across seeds", () => {
    const heldOther = generateSynthetic({ seed: 99, count: 300, split: "heldout" });
    const trainText = new Set(train.map((r) => r.problem));
    for (const r of [...heldout, ...heldOther]) {
      expect(trainText.has(r.problem)).toBe(false);
      expect(syntheticSplitOf(r.problem)).toBe("heldout");
      expect(r.meta!.split).toBe("heldout");
    }
    for (const r of train) expect(syntheticSplitOf(r.problem)).toBe("train");
    // About 10% of problem texts hash into the held-out split: of train problems made with a 1%
    // held-out fraction, about (10 - 1) / 99 ≈ 9% fall into the held-out split at 10%.
    const wide = generateSynthetic({ seed: 5, count: 4000, heldOutFraction: 0.01 });
    const share = wide.filter((r) => syntheticSplitOf(r.problem, 0.1) === "heldout").length / wide.length;
    expect(share).toBeGreaterThan(0.07);
    expect(share).toBeLessThan(0.11);
  });

  it("respects difficulty controls", () => {
    const easy = generateSynthetic({ seed: 3, count: 300, minSteps: 1, maxSteps: 1, maxOperand: 9, maxValue: 30, ops: ["add", "sub"] });
    for (const r of easy) {
      expect(r.meta!.steps).toBe(1);
      expect((r.meta!.ops as string[]).every((o) => o === "add" || o === "sub")).toBe(true);
      const nums = (r.problem.match(/\d+/g) ?? []).map(Number);
      expect(Math.max(...nums)).toBeLessThanOrEqual(9);
      expect(Number(r.answer)).toBeLessThanOrEqual(30);
    }
    const hard = generateSynthetic({ seed: 3, count: 300, minSteps: 4, maxSteps: 4, maxValue: 200 });
    for (const r of hard) {
      expect(r.meta!.steps).toBe(4);
      for (const line of r.solution!.split("\n")) expect(Number(line.split(" = ")[1])).toBeLessThanOrEqual(200);
    }
    // Steps are spread over the range.
    const counts = [1, 2, 3, 4].map((k) => train.filter((r) => r.meta!.steps === k).length);
    for (const c of counts) expect(c).toBeGreaterThan(300);
    expect(() => generateSynthetic({ count: 10, minSteps: 3, maxSteps: 2 })).toThrow(/bad step range/);
    expect(() => generateSynthetic({ count: 10_000, minSteps: 1, maxSteps: 1, maxOperand: 2, maxValue: 4, ops: ["add"] })).toThrow(/found only/);
  });

  it("uses a small vocabulary", () => {
    const alphabet = new Set(syntheticAlphabet());
    const words = new Set(syntheticWords());
    expect(alphabet.size).toBeLessThan(70);
    expect(words.size).toBeLessThan(60);
    const strayChars = new Set<string>();
    const strayWords = new Set<string>();
    for (const r of train) {
      for (const ch of r.problem + syntheticSftTarget(r)) if (!alphabet.has(ch)) strayChars.add(ch);
      for (const w of r.problem.split(/[^A-Za-z]+/)) if (w && !words.has(w)) strayWords.add(w);
    }
    expect([...strayChars]).toEqual([]);
    expect([...strayWords]).toEqual([]);
    expect(SYNTHETIC_NAMES.length).toBe(8);
  });
});
