import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { evaluate, formatEvalTable } from "./evaluate.js";
import { ScriptedGenerator } from "./generator.js";
import type { GradeFn } from "./grade.js";
import { readJsonl } from "./jsonl.js";
import { passAtK } from "./metrics.js";
import { ChatTemplate, buildPrompt } from "./prompts.js";
import type { MathRecord } from "./types.js";
import { lastBoxed } from "./util.js";

/** Exact-match grader on the last \boxed{} (stands in for @nr/rewards' verify). */
const exactGrade: GradeFn = (prediction, gold) => {
  const predicted = lastBoxed(prediction);
  return { correct: predicted !== null && predicted.trim() === gold, predicted, reason: predicted === null ? "no answer" : "compared" };
};

const records: MathRecord[] = [0, 1, 2, 3, 4].map((i) => ({ id: `p${i}`, problem: `What is ${i} + ${i}?`, answer: String(2 * i), source: "toy" }));
/** Problem i: sample j is correct iff j < correctCounts[i]; greedy correct iff i is even. */
const correctCounts = [0, 1, 3, 8, 4];

function scripted() {
  return new ScriptedGenerator(({ request, index }) => {
    const i = Number(/What is (\d+)/.exec(request.prompt)![1]);
    const gold = 2 * i;
    if (request.temperature === 0) return i % 2 === 0 ? `Double it. \\boxed{${gold}}` : `Hmm. \\boxed{${gold + 1}}`;
    if (index < correctCounts[i]) return `${i}+${i}=${gold} \\boxed{${gold}}`;
    // Wrong samples: problem 4's wrong answers all agree on 9 (4 votes vs 4 correct: tie, correct came first).
    if (i === 4) return `\\boxed{9}`;
    return index % 3 === 0 ? "I give up" : `\\boxed{${gold + 1 + (index % 2)}}`;
  });
}

describe("evaluate", () => {
  it("computes greedy pass@1, avg@n, pass@k, maj@k, lengths, and writes JSONL", async () => {
    const out = join(mkdtempSync(join(tmpdir(), "nr-data-eval-")), "sub", "eval.jsonl");
    const gen = scripted();
    const printed: string[] = [];
    const s = await evaluate(gen, records, {
      samples: 8,
      grade: exactGrade,
      equivalent: false,
      batchSize: 2,
      seed: 100,
      outputPath: out,
      progress: false,
      print: (t) => printed.push(t),
      name: "toy",
    });
    expect(s.problems).toBe(5);
    expect(s.greedyPass1).toBeCloseTo(3 / 5, 12);
    expect(s.avgAtN).toBeCloseTo((0 + 1 + 3 + 8 + 4) / 40, 12);
    expect(Object.keys(s.passAtK)).toEqual(["1", "2", "4", "8"]);
    for (const k of [1, 2, 4, 8]) expect(s.passAtK[k]).toBeCloseTo(correctCounts.reduce((a, c) => a + passAtK(8, c, k), 0) / 5, 12);
    expect(s.passAtK[8]).toBeCloseTo(4 / 5, 12);
    // maj@8: p0 wrong (no correct), p1 wrong answers outvote the single correct one, p2: 3 correct vs
    // wrong answers split, p3 all correct, p4 tie 4–4 broken by first occurrence (correct first).
    expect(s.results.map((r) => r.majAtK[8].correct)).toEqual([false, false, true, true, true]);
    expect(s.results[4].majAtK[8]).toMatchObject({ answer: "8", votes: 4, tie: true });
    expect(s.majAtK[8]).toBeCloseTo(3 / 5, 12);
    // Batching: 2 problems per call, 2 requests (greedy + sampled) per problem, seeds base + index.
    expect(gen.calls.map((c) => c.length)).toEqual([4, 4, 2]);
    expect(gen.calls[0][0]).toMatchObject({ n: 1, temperature: 0, seed: 100, maxNewTokens: 1024 });
    expect(gen.calls[0][1]).toMatchObject({ n: 8, temperature: 0.6, topP: 0.95, seed: 100 });
    expect(gen.calls[2][1].seed).toBe(104);
    expect(gen.calls[0][0].prompt).toBe(buildPrompt(ChatTemplate.chatml(), records[0].problem));
    // Lengths are in tokens (the fake reports them: one per character).
    expect(s.length.unit).toBe("tokens");
    expect(s.length.greedy!.mean).toBeCloseTo(s.results.reduce((a, r) => a + [...r.greedy!.text].length, 0) / 5, 12);
    expect(s.length.sampled!.count).toBe(40);
    expect(s.finishReasons).toEqual({ eos: 45, stop: 0, length: 0, repetition: 0 });
    // Per-problem JSONL.
    const lines = await readJsonl<{ id: string; prompt: string; gold: string; samples: { text: string; predicted: string | null; correct: boolean }[]; greedy: { correct: boolean } }>(out);
    expect(lines.map((l) => l.id)).toEqual(["p0", "p1", "p2", "p3", "p4"]);
    expect(lines[3].samples.every((x) => x.correct)).toBe(true);
    expect(lines[0].samples[0]).toMatchObject({ text: "I give up", predicted: null, correct: false });
    expect(lines[2].greedy.correct).toBe(true);
    // Summary table.
    expect(printed).toHaveLength(1);
    expect(printed[0]).toBe(formatEvalTable(s));
    expect(printed[0]).toContain("greedy pass@1");
    expect(printed[0]).toMatch(/avg@8\s+40\.0%/);
    expect(printed[0]).toMatch(/maj@8\s+60\.0%/);
  });

  it("groups equivalent answers for maj@k with the grader", async () => {
    // Samples "1/2", "0.5", "3": string keys differ, the grader says 1/2 ≡ 0.5.
    const gen = new ScriptedGenerator(({ index }) => ["\\boxed{3}", "\\boxed{1/2}", "\\boxed{0.5}", "\\boxed{3}", "\\boxed{0.5}"][index]);
    const grade: GradeFn = (p, g) => {
      const v = (x: string) => (x.includes("/") ? Number(x.split("/")[0]) / Number(x.split("/")[1]) : Number(x));
      const predicted = lastBoxed(p);
      return { correct: predicted !== null && v(predicted) === v(g), predicted };
    };
    const rec: MathRecord[] = [{ id: "h", problem: "Half?", answer: "0.5", source: "t" }];
    const withEq = await evaluate(gen, rec, { greedy: false, samples: 5, majKs: [3, 5], grade, progress: false, print: false });
    expect(withEq.results[0].majAtK[5]).toMatchObject({ answer: "1/2", votes: 3, correct: true });
    expect(withEq.results[0].majAtK[3]).toMatchObject({ answer: "1/2", votes: 2, correct: true });
    const noEq = await evaluate(gen, rec, { greedy: false, samples: 5, majKs: [5], grade, equivalent: false, progress: false, print: false });
    expect(noEq.results[0].majAtK[5]).toMatchObject({ answer: "3", votes: 2, tie: true, correct: false });
    expect(noEq.greedyPass1).toBeUndefined();
  });

  it("reports stop and length finishes, character lengths, and validates options", async () => {
    const gen = new ScriptedGenerator(({ index }) => (index === 0 ? "\\boxed{2} END more" : "x".repeat(50)), { countTokens: (t) => t.split(/\s+/).filter(Boolean).length });
    const s = await evaluate(gen, [{ id: "a", problem: "1+1?", answer: "2", source: "t" }], {
      greedy: false,
      samples: 2,
      stop: ["END"],
      maxNewTokens: 3,
      grade: exactGrade,
      progress: false,
      print: false,
    });
    expect(s.results[0].samples.map((x) => [x.finishReason, x.correct])).toEqual([
      ["stop", true],
      ["eos", false],
    ]);
    const long = new ScriptedGenerator(() => "one two three four five \\boxed{2}", { countTokens: (t) => t.split(/\s+/).filter(Boolean).length });
    const t = await evaluate(long, [{ id: "a", problem: "1+1?", answer: "2", source: "t" }], { maxNewTokens: 3, grade: exactGrade, progress: false, print: false });
    expect(t.results[0].greedy).toMatchObject({ text: "one two three ", finishReason: "length", correct: false, length: 3 });
    expect(t.finishReasons.length).toBe(1);
    // A generator that reports no token counts: lengths in characters.
    const noTokens = { generate: async (reqs: { n: number }[]) => reqs.map((r) => ({ completions: Array.from({ length: r.n }, () => ({ text: "\\boxed{2}", finishReason: "eos" as const })) })) };
    const u = await evaluate(noTokens, [{ id: "a", problem: "1+1?", answer: "2", source: "t" }], { grade: exactGrade, progress: false, print: false });
    expect(u.length.unit).toBe("chars");
    expect(u.length.greedy!.mean).toBe(9);
    await expect(evaluate(long, [], { greedy: false, grade: exactGrade })).rejects.toThrow(/nothing to do/);
    await expect(evaluate(long, [], { samples: 4, ks: [8], grade: exactGrade })).rejects.toThrow(/k=8/);
  });
  it("the repetition guard ends a looping completion early, passes through to the generator and is counted", async () => {
    const loop = "So the answer is 4. " .repeat(40); // 20-character block
    const gen = new ScriptedGenerator(({ index }) => (index === 0 ? "\\boxed{2}" : loop));
    const rec = [{ id: "a", problem: "1+1?", answer: "2", source: "t" }];
    const guard = { maxPeriod: 32, minRepeats: 3, minTokens: 40 };
    const s = await evaluate(gen, rec, { greedy: false, samples: 2, maxNewTokens: 2000, repetitionStop: guard, grade: exactGrade, progress: false, print: false });
    expect(gen.calls[0][0].repetitionStop).toEqual(guard);
    const looped = s.results[0].samples[1];
    expect(looped.finishReason).toBe("repetition");
    expect(looped.length).toBe(60); // the first character at which 3 copies (≥ 40 characters) of the block repeat
    expect(s.finishReasons).toEqual({ eos: 1, stop: 0, length: 0, repetition: 1 });
    expect(formatEvalTable(s)).toMatch(/stopped looping \(repetition\)\s+50/);
    // without the guard the same completion runs to the cap
    const off = await evaluate(gen, rec, { greedy: false, samples: 2, maxNewTokens: 2000, grade: exactGrade, progress: false, print: false });
    expect(off.results[0].samples[1]).toMatchObject({ finishReason: "eos", length: 800 });
    await expect(evaluate(gen, rec, { repetitionStop: { minRepeats: 1 }, grade: exactGrade, progress: false, print: false })).rejects.toThrow(/minRepeats/);
  });
  it("passes prompt ids and the one-completion temperature through, with per-problem seeds (nr train's eval)", async () => {
    const gen = scripted();
    const ids = (r: MathRecord) => [7, Number(r.id.slice(1))];
    const s = await evaluate(gen, records, { promptIds: ids, greedyTemperature: 0.5, samples: 2, temperature: 1, seed: 40, batchSize: 2, grade: exactGrade, progress: false, print: false });
    const reqs = gen.calls.flat();
    const first = reqs.filter((_, k) => k % 2 === 0);
    expect(first.map((r) => [r.promptIds, r.temperature, r.n, r.seed])).toEqual(records.map((r, i) => [[7, i], 0.5, 1, 40 + i]));
    expect(reqs.filter((_, k) => k % 2 === 1).map((r) => [r.promptIds, r.temperature, r.n, r.seed])).toEqual(records.map((r, i) => [[7, i], 1, 2, 40 + i]));
    expect(s.problems).toBe(5);
    // Without the options: no ids, greedy at temperature 0.
    const plain = scripted();
    await evaluate(plain, records.slice(0, 1), { grade: exactGrade, progress: false, print: false });
    expect(plain.calls[0][0]).not.toHaveProperty("promptIds");
    expect(plain.calls[0][0].temperature).toBe(0);
  });
});
