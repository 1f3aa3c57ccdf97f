import { describe, expect, it } from "vitest";
import { correctnessReward, formatOk, formatReward, gsm8kReward, mathReward, rewardFromResult } from "./index.js";

describe("formatOk", () => {
  it.each([
    ["<think>reasoning</think> so \\boxed{3}", true],
    ["reasoning in the prompt's open block</think>\n\\boxed{3}", true],
    ["<think></think>\\boxed{3}", false],
    ["<think>a</think> no box", false],
    ["<think>a \\boxed{3}</think> answer 3", false],
    ["<think>a</think><think>b</think>\\boxed{3}", false],
    ["\\boxed{3}", false],
    ["<think>a</think> \\boxed{3", false],
  ])("%s → %s", (text, ok) => expect(formatOk(text)).toBe(ok));

  it("only needs the box when the think block is not required", () => {
    expect(formatOk("\\boxed{3}", { requireThink: false })).toBe(true);
    expect(formatOk("no box", { requireThink: false })).toBe(false);
  });
});

describe("rewards", () => {
  const good = "<think>2+1</think> The answer is \\boxed{3}.";
  const wrongButFormatted = "<think>2+2</think> The answer is \\boxed{4}.";
  const rightNoFormat = "The answer is \\boxed{3}.";

  it("binary correctness by default, ±1 when signed", () => {
    expect(correctnessReward(good, "3")).toBe(1);
    expect(correctnessReward(wrongButFormatted, "3")).toBe(0);
    expect(correctnessReward(wrongButFormatted, "3", { scheme: "signed" })).toBe(-1);
    expect(correctnessReward(good, "3", { scheme: "signed" })).toBe(1);
  });

  it("LPRO-style r = 1[correct] + 0.1·1[format]", () => {
    const o = { formatBonus: 0.1 };
    expect(mathReward(good, "3", o).reward).toBeCloseTo(1.1);
    expect(mathReward(wrongButFormatted, "3", o).reward).toBeCloseTo(0.1);
    expect(mathReward(rightNoFormat, "3", o).reward).toBe(1);
    expect(mathReward("no answer at all", "3", o)).toMatchObject({ reward: 0, correct: false, formatOk: false });
  });

  it("rllm-style format gate", () => {
    const o = { requireFormat: true, formatFailureReward: -1 };
    expect(mathReward(rightNoFormat, "3", o).reward).toBe(-1);
    expect(mathReward(good, "3", o).reward).toBe(1);
  });

  it("GSM8K mode", () => {
    expect(gsm8kReward("She makes 9 * 2 = $18 every day.", "#### 18").reward).toBe(1);
    expect(gsm8kReward("She makes 9 * 2 = $18 every day, i.e. 126 a week.", "18").reward).toBe(0);
    expect(gsm8kReward("\\boxed{1,450,000}", "1,450,000").correct).toBe(true);
  });

  it("unscorable results are NaN by default (excluded by the trainer) or a chosen value", () => {
    const res = { correct: false, predicted: null, gold: null, reason: "timeout", unscorable: true };
    expect(Number.isNaN(rewardFromResult(res, good).reward)).toBe(true);
    expect(rewardFromResult(res, good, { unscorableReward: 0 }).reward).toBe(0);
  });

  it("formatReward is the format term alone", () => {
    expect(formatReward(good, 0.5)).toBe(0.5);
    expect(formatReward(rightNoFormat, 0.5)).toBe(0);
  });
});
