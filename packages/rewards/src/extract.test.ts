import { describe, expect, it } from "vitest";
import { captureAfter, findBoxes, findMarkers, findMathSpans, finalBoxGroup, lastBold, lastNumber, unwrapWholeMath } from "./extract.js";
import { cutAtSpecialTokens, repairControlChars, splitThink, unescapeIfDoubled } from "./text.js";

describe("math spans", () => {
  it("finds $…$, $$…$$, \\(…\\), \\[…\\] in order and skips escaped dollars", () => {
    const s = "a $x$ b $$y\nz$$ c \\(u\\) d \\[v\\] e \\$5 and $p \\$ q$";
    expect(findMathSpans(s).map((m) => m.content)).toEqual(["x", "y\nz", "u", "v", "p \\$ q"]);
  });
  it("\\(…\\) stays on one line; $…$ may break lines; a lone $ is currency", () => {
    expect(findMathSpans("Answer \\( \n 9 \n \\)").map((m) => m.content)).toEqual([]);
    expect(findMathSpans("costs $5 and\nthen $6").map((m) => m.content)).toEqual([]);
    expect(findMathSpans("Answer \\[ \n 9 \n \\]").map((m) => m.content.trim())).toEqual(["9"]);
    // `$…$` may break lines inside a paragraph (not across a blank line)
    expect(findMathSpans("The answer is $\n 9 \n$.").map((m) => m.content.trim())).toEqual(["9"]);
    expect(findMathSpans("so $x =\n3$").map((m) => m.content)).toEqual(["x =\n3"]);
    expect(findMathSpans("costs $5.\n\nThen $x$").map((m) => m.content)).toEqual(["x"]);
  });
  it("unwraps a whole-string environment only", () => {
    expect(unwrapWholeMath(" $\\frac12$. ")).toBe("\\frac12");
    expect(unwrapWholeMath("$125$ miles")).toBeNull();
  });
});

describe("boxes", () => {
  it("keeps outer boxes only and marks an unclosed one", () => {
    const b = findBoxes("\\boxed{\\boxed{1}} x \\fbox{2} \\boxed{3");
    expect(b.map((x) => x.content)).toEqual(["\\boxed{1}", "2", null]);
  });
  it("merges boxes separated by a short separator, Math-Verify style", () => {
    const s1 = "\\boxed{1}, \\boxed{2} and \\boxed{3}";
    expect(finalBoxGroup(findBoxes(s1), s1)).toEqual(["1", "2", "3"]);
    const s2 = "\\boxed{1} papers and \\boxed{2} bins";
    expect(finalBoxGroup(findBoxes(s2), s2)).toEqual(["1", "2"]);
    const s3 = "\\boxed{200}. Then the next six months give \\boxed{255}";
    expect(finalBoxGroup(findBoxes(s3), s3)).toEqual(["255"]);
    const s4 = "\\boxed{840} \\boxed{840}";
    expect(finalBoxGroup(findBoxes(s4), s4)).toEqual(["840"]);
  });
});

describe("markers, bold, numbers", () => {
  it("captures after 'final answer is' / 'answer:' / '####'", () => {
    const s = "Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.";
    const m = findMarkers(s);
    expect(m.map((x) => x.kind)).toEqual(["final", "final"]);
    expect(captureAfter(s, m[1].capStart)).toEqual({ text: "\\frac{1}{2}", math: true });
    const g = "so on.\n#### 1,450,000";
    expect(captureAfter(g, findMarkers(g)[0].capStart)).toEqual({ text: "1,450,000", math: false });
    const p = "The answer is 7.78. Done";
    expect(captureAfter(p, findMarkers(p)[0].capStart)?.text).toBe("7.78");
  });
  it("last bold and last number", () => {
    expect(lastBold("x **12** then **73**")?.text).toBe("73");
    expect(lastNumber("so 5-3 = 2, total 1,000.99m²")?.text).toBe("1,000.99");
    expect(lastNumber("AZYUK2A")).toBeNull();
    expect(lastNumber("It is -5 degrees")?.text).toBe("-5");
    expect(lastNumber("P(A) = 2/3.")?.text).toBe("2/3");
  });
});

describe("text repairs", () => {
  it("turns control characters from non-raw Python literals back into commands", () => {
    expect(repairControlChars("\\\u000crac{1}{2}")).toBe("\\frac{1}{2}");
    expect(repairControlChars("\u0009ext{a}")).toBe("\\text{a}");
    expect(repairControlChars("a\u0000b")).toBe("a b");
    expect(repairControlChars("tab\there")).toBe("tab here");
  });
  it("undoes one level of escaping only when every command is doubled", () => {
    expect(unescapeIfDoubled("\\\\boxed{\\\\frac{1}{2}}.\\n\\nDone")).toBe("\\boxed{\\frac{1}{2}}.\n\nDone");
    expect(unescapeIfDoubled("\\begin{pmatrix}1\\\\2\\end{pmatrix}")).toBe("\\begin{pmatrix}1\\\\2\\end{pmatrix}");
    expect(unescapeIfDoubled("\\\\dfrac{1}{2} + \\frac{1}{3}")).toBe("\\\\dfrac{1}{2} + \\frac{1}{3}");
  });
  it("cuts at chat special tokens and splits think blocks", () => {
    expect(cutAtSpecialTokens("answer 12 <|im_end|> user: more")).toBe("answer 12 ");
    expect(cutAtSpecialTokens("<|im_start|>assistant\nx")).toBe("assistant\nx");
    expect(splitThink("<think>a</think>b")).toEqual({ answerPart: "b", closed: true, unclosed: false });
    expect(splitThink("<think>a")).toEqual({ answerPart: "", closed: false, unclosed: true });
  });
});
