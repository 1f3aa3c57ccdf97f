import { describe, expect, it } from "vitest";
import { ScriptedGenerator } from "../generator.js";
import { numericGrade } from "../fixtures/graders.js";
import { solveSyntheticText } from "../fixtures/synthetic-solver.js";
import { ChatTemplate, buildPrompt } from "../prompts.js";
import { generateSynthetic, syntheticSftTarget } from "../synthetic.js";
import type { MathRecord } from "../types.js";
import { OnnxEmbedder, buildHashEmbeddingModel, hashTokenizer } from "./embeddings.js";
import { curate, formatCurationReport } from "./pipeline.js";

/**
 * A fake policy for the synthetic task: it reads the problem text, solves it, and answers correctly
 * with a probability that falls with the number of steps (the real generated model arrives later).
 */
const SOLVE_RATE = [0, 0.95, 0.7, 0.45, 0.12];
/** Steps of a synthetic problem from its text: the opening, one sentence per step, the question (a "bags" opening is itself a step). */
const stepsOf = (problem: string) => problem.split(/(?<=\.)\s/).length - 2 + (problem.includes(" bags with ") ? 1 : 0);
function fakePolicy() {
  return new ScriptedGenerator(({ request, rng }) => {
    const problem = /^Question: ([\s\S]*)\nAnswer: $/.exec(request.prompt)![1];
    const answer = solveSyntheticText(problem)!;
    const right = rng.float() < SOLVE_RATE[stepsOf(problem)];
    return right ? `<think>\n…\n</think>\n\\boxed{${answer}}` : `<think>\n…\n</think>\n\\boxed{${answer + 1 + rng.int(0, 3)}}`;
  });
}

describe("curation pipeline on the synthetic task", () => {
  it("runs answer check, exact and near dedup, contamination and the difficulty filter end to end", async () => {
    const train = generateSynthetic({ seed: 11, count: 240 });
    const heldout = generateSynthetic({ seed: 11, count: 60, split: "heldout" });
    const exactDups = train.slice(0, 5).map((r, i): MathRecord => ({ ...r, id: `dup-${i}`, problem: `  ${r.problem.toUpperCase()} ` }));
    const nearDups = train.slice(10, 15).map((r, i): MathRecord => ({ ...r, id: `near-${i}`, problem: r.problem.replace(/ now\?$/, "?") }));
    const leaks = heldout.slice(0, 5).map((r, i): MathRecord => ({ ...r, id: `leak-${i}` }));
    const badGold = [0, 1, 2].map((i): MathRecord => ({ ...train[20 + i], id: `bad-${i}`, problem: `${train[20 + i].problem} (copy)`, answer: "n/a" }));
    const input = [...train, ...exactDups, ...nearDups, ...leaks, ...badGold];
    for (const r of train) expect(stepsOf(r.problem)).toBe(r.meta!.steps);

    const embedder = await OnnxEmbedder.create(buildHashEmbeddingModel(), { tokenizer: hashTokenizer(), sessionOptions: { intraOpNumThreads: 1 } });
    const template = ChatTemplate.plain();
    const log: string[] = [];
    const result = await curate(input, {
      grade: numericGrade,
      // Template siblings with equal answers and near-identical wording would also merge at this threshold;
      // requireSameAnswer keeps same-template problems with different answers.
      nearDedup: { embedder, threshold: 0.95, requireSameAnswer: true },
      // Synthetic problems share long template phrases ("… into 2 equal groups and leaves one group in
      // the box"), so distinct problems can share half their 8-grams; only near-copies count here.
      contamination: { evalSets: { heldout }, ngramThreshold: 0.9 },
      difficulty: { generator: fakePolicy(), n: 8, minPass: 2, maxPass: 5, template, promptOptions: { style: "none" }, maxNewTokens: 256, progress: false, seed: 3 },
      log: (l) => log.push(l),
    });
    await embedder.release();

    const [answerCheck, exact, near, contamination, difficulty] = result.steps;
    expect(result.steps.map((s) => s.step)).toEqual(["answer-check", "exact-dedup", "near-dedup", "contamination", "difficulty"]);
    expect(answerCheck.removed.map((r) => [r.id, r.reason])).toEqual(badGold.map((b) => [b.id, "gold not parseable"]));
    expect(exact.removed.map((r) => [r.id, r.related])).toEqual(exactDups.map((d, i) => [d.id, train[i].id]));
    // Every injected near-duplicate goes, naming its original. A bag-of-words embedding also merges a
    // few template siblings (same answer, same words, numbers in another order); each must at least
    // have the same answer as the record it was merged into.
    for (const [i, d] of nearDups.entries()) expect(near.removed.find((r) => r.id === d.id)?.related).toBe(train[10 + i].id);
    const siblings = near.removed.filter((r) => !r.id.startsWith("near-"));
    const byId = new Map(train.map((r) => [r.id, r]));
    for (const s of siblings) expect(byId.get(s.id)!.answer).toBe(byId.get(s.related!)!.answer);
    expect(siblings.length).toBeLessThanOrEqual(3);
    expect(contamination.removed.map((r) => [r.id, r.related])).toEqual(leaks.map((l, i) => [l.id, `heldout:${heldout[i].id}`]));
    expect(contamination.after).toBe(240 - siblings.length);
    for (let i = 1; i < result.steps.length; i++) expect(result.steps[i].before).toBe(result.steps[i - 1].after);

    // Difficulty: every kept problem passed 2–5 of 8, with its pass rate recorded.
    const d = result.difficulty!;
    const pool = 240 - siblings.length;
    expect(d.histogram.reduce((a, b) => a + b, 0)).toBe(pool);
    expect(difficulty.after).toBe(d.kept.length);
    expect(d.kept.length + d.tooEasy.length + d.tooHard.length).toBe(pool);
    for (const r of d.kept) {
      const c = r.meta!.passCount as number;
      expect(c).toBeGreaterThanOrEqual(2);
      expect(c).toBeLessThanOrEqual(5);
      expect(r.meta!.passRate).toBe(c / 8);
      expect(r.meta!.passN).toBe(8);
      expect(d.passCounts[r.id]).toBe(c);
    }
    for (const r of d.tooEasy) expect(d.passCounts[r.id]).toBeGreaterThan(5);
    for (const r of d.tooHard) expect(d.passCounts[r.id]).toBeLessThan(2);
    // Pass rates follow the fake policy's skill: easy (1-step) problems are mostly too easy,
    // 4-step ones mostly too hard, and the kept set is dominated by 2–3 step problems.
    const byStep = (set: MathRecord[], k: number) => set.filter((r) => r.meta!.steps === k).length;
    expect(byStep(d.tooEasy, 1)).toBeGreaterThan(0.8 * byStep(train, 1));
    expect(byStep(d.tooHard, 4)).toBeGreaterThan(0.5 * byStep(train, 4));
    expect(byStep(d.kept, 2) + byStep(d.kept, 3)).toBeGreaterThan(0.7 * d.kept.length);
    expect(d.eval.avgAtN).toBeGreaterThan(0.4);
    expect(d.eval.avgAtN).toBeLessThan(0.7);
    // Prompts went through the template.
    expect(d.eval.results[0].prompt).toBe(buildPrompt(template, train[0].problem, { style: "none" }));
    // Kept records are ready for SFT in the target format.
    expect(syntheticSftTarget(d.kept[0])).toMatch(/^<think>\n[\s\S]+\n<\/think>\n\\boxed\{\d+\}$/);

    expect(log).toHaveLength(5);
    const report = formatCurationReport(result);
    expect(report).toContain("answer-check");
    expect(report).toContain("3 × gold not parseable");
    expect(report).toMatch(/pass-count histogram: 0:\d+ 1:\d+ 2:\d+/);
  });
});
