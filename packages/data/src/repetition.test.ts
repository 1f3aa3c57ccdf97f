import { describe, expect, it } from "vitest";
import { RepeatDetector, firstRepetition, resolveRepetitionStop } from "./repetition.js";

/** Brute force: is the prefix t[0..n) looping under the definition (some p with a periodic tail long enough)? */
function loopingRef(t: readonly number[], n: number, maxPeriod: number, minRepeats: number, minTokens: number): boolean {
  for (let p = 1; p <= maxPeriod && p < n; p++) {
    let len = p;
    while (len < n && t[n - 1 - len] === t[n - 1 - len + p]) len++;
    if (len > p && len >= minRepeats * p && len >= minTokens) return true;
  }
  return false;
}

describe("RepeatDetector (the length-explosion guard)", () => {
  it("agrees with a brute-force check on every prefix of random sequences over small alphabets", () => {
    const seed = (Date.now() ^ 0x9e3779b9) >>> 0;
    let s = seed;
    const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    let fired = 0;
    for (let trial = 0; trial < 300; trial++) {
      const opts = { maxPeriod: 1 + Math.floor(rnd() * 9), minRepeats: 2 + Math.floor(rnd() * 3), minTokens: 1 + Math.floor(rnd() * 12) };
      const alphabet = 1 + Math.floor(rnd() * 3);
      // mix random stretches with copied blocks so loops of several periods occur
      const t: number[] = [];
      while (t.length < 80) {
        if (rnd() < 0.3 && t.length > 4) {
          const p = 1 + Math.floor(rnd() * Math.min(8, t.length));
          const reps = 1 + Math.floor(rnd() * 4);
          for (let r = 0; r < reps * p; r++) t.push(t[t.length - p]);
        } else t.push(Math.floor(rnd() * alphabet));
      }
      const d = new RepeatDetector(opts);
      for (let n = 1; n <= t.length; n++) {
        const got = d.push(t[n - 1]);
        if (got) fired++;
        expect(got, `seed ${seed} trial ${trial} n ${n} ${JSON.stringify(opts)}`).toBe(loopingRef(t, n, opts.maxPeriod, opts.minRepeats, opts.minTokens));
      }
    }
    expect(fired).toBeGreaterThan(100); // the comparison covered firing prefixes, not only quiet ones
  });

  it("stops a looping sentence at the first token that completes the minimum span, and not a varied text", () => {
    const sentence = [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]; // a 10-token block
    const prefix = [1, 2, 3, 4, 5];
    const looping = [...prefix, ...Array.from({ length: 10 }, () => sentence).flat()];
    // defaults: minRepeats 4, minTokens 64 → the tail must reach 64 tokens of period 10 → prefix 5 + 64 tokens
    expect(firstRepetition(looping)).toBe(5 + 64);
    const varied = Array.from({ length: 500 }, (_, i) => (i * 7919) % 1000);
    expect(firstRepetition(varied)).toBe(-1);
    // a run of one token needs the whole minimum span
    expect(firstRepetition(Array(63).fill(0))).toBe(-1);
    expect(firstRepetition(Array(64).fill(0))).toBe(64);
    // a period above maxPeriod is not looked for
    const long = Array.from({ length: 70 }, (_, i) => i);
    expect(firstRepetition([...long, ...long, ...long, ...long, ...long])).toBe(-1);
  });

  it("names the bad setting", () => {
    expect(() => resolveRepetitionStop({ maxPeriod: 0 })).toThrow(/repetitionStop\.maxPeriod/);
    expect(() => resolveRepetitionStop({ minTokens: 2.5 })).toThrow(/repetitionStop\.minTokens/);
    expect(() => resolveRepetitionStop({ minRepeats: 1 })).toThrow(/minRepeats must be at least 2/);
    expect(resolveRepetitionStop({ minRepeats: 3 })).toEqual({ maxPeriod: 64, minRepeats: 3, minTokens: 64 });
  });
});
