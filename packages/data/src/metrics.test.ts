import { describe, expect, it } from "vitest";
import { answerKey, lengthStats, majorityVote, passAtK, quantile } from "./metrics.js";

function binom(n: number, k: number): bigint {
  if (k < 0 || k > n) return 0n;
  let r = 1n;
  for (let i = 1; i <= k; i++) r = (r * BigInt(n - k + i)) / BigInt(i);
  return r;
}
/** 1 − C(n−c,k)/C(n,k) from exact big-integer binomials, to 1e-15. */
function closedForm(n: number, c: number, k: number): number {
  const scale = 10n ** 18n;
  return 1 - Number((binom(n - c, k) * scale) / binom(n, k)) / 1e18;
}

describe("pass@k", () => {
  it("matches known values", () => {
    expect(passAtK(10, 1, 1)).toBeCloseTo(0.1, 15);
    expect(passAtK(4, 2, 2)).toBeCloseTo(5 / 6, 15);
    expect(passAtK(5, 0, 3)).toBe(0);
    expect(passAtK(2, 1, 2)).toBe(1);
    expect(passAtK(8, 8, 1)).toBe(1);
    expect(passAtK(1000, 1, 100)).toBeCloseTo(0.1, 12);
  });

  it("equals the closed form 1 − C(n−c,k)/C(n,k) for every n ≤ 24, and for large n", () => {
    for (let n = 1; n <= 24; n++)
      for (let c = 0; c <= n; c++)
        for (let k = 1; k <= n; k++) expect(Math.abs(passAtK(n, c, k) - closedForm(n, c, k))).toBeLessThan(1e-12);
    // Binomials here overflow doubles (C(400,200) ≈ 1e119), the product form does not.
    for (const [n, c, k] of [[400, 7, 200], [400, 200, 64], [256, 1, 128], [1024, 3, 16]]) expect(Math.abs(passAtK(n, c, k) - closedForm(n, c, k))).toBeLessThan(1e-12);
  });

  it("equals the average over all k-subsets on a small case", () => {
    // n=6, c=2, k=3: fraction of 3-subsets of 6 that contain one of the 2 correct samples.
    const correct = [true, false, true, false, false, false];
    let hit = 0;
    let all = 0;
    for (let a = 0; a < 6; a++) for (let b = a + 1; b < 6; b++) for (let d = b + 1; d < 6; d++) {
      all++;
      if (correct[a] || correct[b] || correct[d]) hit++;
    }
    expect(passAtK(6, 2, 3)).toBeCloseTo(hit / all, 14);
  });

  it("rejects bad arguments", () => {
    expect(() => passAtK(4, 1, 5)).toThrow(/k ≤ n/);
    expect(() => passAtK(4, 5, 1)).toThrow();
    expect(() => passAtK(4, 1, 0)).toThrow();
    expect(() => passAtK(4.5, 1, 1)).toThrow(/integers/);
  });
});

describe("majority vote", () => {
  it("breaks ties by the earliest first occurrence", async () => {
    const v = await majorityVote(["7", "5", "5", "7"]);
    expect(v).toMatchObject({ answer: "7", index: 0, votes: 2, tie: true });
    const w = await majorityVote(["5", "7", "7", "5"]);
    expect(w).toMatchObject({ answer: "5", index: 0, votes: 2, tie: true });
    const x = await majorityVote([null, "9", "3", "3", "9"]);
    expect(x).toMatchObject({ answer: "9", index: 1, tie: true });
  });

  it("counts votes, ignores missing answers, and normalises answer strings", async () => {
    const v = await majorityVote([null, "3", "$4$", "4", " 4. ", ""]);
    expect(v).toMatchObject({ answer: "$4$", index: 2, votes: 3, tie: false });
    expect(v.groups.map((g) => g.members)).toEqual([[1], [2, 3, 4]]);
    expect(await majorityVote([null, null])).toMatchObject({ answer: null, index: -1, votes: 0 });
    expect(answerKey("1,000")).toBe("1000");
    expect(answerKey("\\left( 3, \\pi \\right)")).toBe("(3,\\pi)");
  });

  it("merges groups with an equivalence function", async () => {
    const eq = (a: string, b: string) => Number(a.replace(/\\frac\{(\d+)\}\{(\d+)\}/, (_m, p, q) => String(p / q))) === Number(b.replace(/\\frac\{(\d+)\}\{(\d+)\}/, (_m, p, q) => String(p / q)));
    const answers = ["2", "\\frac{1}{2}", "0.5", "2", "0.50"];
    expect((await majorityVote(answers)).answer).toBe("2");
    const v = await majorityVote(answers, eq);
    expect(v).toMatchObject({ answer: "\\frac{1}{2}", votes: 3, tie: false });
  });
});

describe("length statistics", () => {
  it("summarises lengths with power-of-two buckets", () => {
    const s = lengthStats([10, 20, 30, 40, 100]);
    expect(s).toMatchObject({ count: 5, mean: 40, min: 10, max: 100, p50: 30 });
    expect(s.std).toBeCloseTo(Math.sqrt((900 + 400 + 100 + 0 + 3600) / 5), 12);
    expect(s.histogram).toEqual([
      { upTo: 16, count: 1 },
      { upTo: 32, count: 2 },
      { upTo: 64, count: 1 },
      { upTo: 128, count: 1 },
    ]);
    expect(quantile([1, 2, 3, 4], 0.9)).toBeCloseTo(3.7, 12);
    expect(lengthStats([]).count).toBe(0);
  });
});
