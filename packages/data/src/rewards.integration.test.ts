// Integration with the project's verifier (@nr/rewards' verify, through its built dist).
// Skipped, with a one-line reason, while @nr/rewards is not built or does not export verify yet.
import { describe, expect, it } from "vitest";
import { filterParsableAnswers } from "./curation/answers.js";
import { evaluate } from "./evaluate.js";
import { haveShared, SHARED_DATA } from "./fixtures/shared-data.js";
import { ScriptedGenerator } from "./generator.js";
import { defaultGrader } from "./grade.js";
import type { GradeFn } from "./grade.js";
import { loadDataset } from "./load.js";
import { generateSynthetic } from "./synthetic.js";

const verify: GradeFn | null = await defaultGrader().catch((e: Error) => {
  console.log(`skipping @nr/rewards integration: ${e.message.split("\n")[0]}`);
  return null;
});

describe.skipIf(!verify)("with @nr/rewards' verify", () => {
  it("is the default grader: synthetic answers grade correct, wrong ones not", async () => {
    const recs = generateSynthetic({ seed: 4, count: 20 });
    const gen = new ScriptedGenerator(({ request, index }) => {
      const r = recs.find((x) => request.prompt.includes(x.problem))!;
      return index === 0 ? `<think>\n${r.solution}\n</think>\n\\boxed{${r.answer}}` : `\\boxed{${Number(r.answer) + 1}}`;
    });
    const s = await evaluate(gen, recs, { greedy: false, samples: 2, progress: false, print: false });
    expect(s.results.every((r) => r.samples[0].correct && !r.samples[1].correct)).toBe(true);
    expect(s.passAtK[1]).toBeCloseTo(0.5, 12);
  });

  it.skipIf(!haveShared("gsm8k_test.jsonl", "math500_test.jsonl"))("parses the gold answers of GSM8K and MATH-500, and grades MATH-500 reference solutions", async () => {
    const gsm = (await loadDataset(SHARED_DATA + "gsm8k_test.jsonl")).records;
    const math = (await loadDataset(SHARED_DATA + "math500_test.jsonl")).records;
    const g = await filterParsableAnswers(gsm);
    expect(g.dropped).toEqual([]);
    const m = await filterParsableAnswers(math);
    console.log(`MATH-500 golds the verifier cannot use: ${m.dropped.length} ${JSON.stringify(m.reasons)}`);
    expect(m.kept.length).toBeGreaterThanOrEqual(475);
    // Reference solutions as "model output": every usable gold must be graded correct.
    const gen = new ScriptedGenerator(({ request }) => m.kept.find((r) => request.prompt.endsWith(`${r.problem}<|im_end|>\n<|im_start|>assistant\n`))!.solution!);
    const s = await evaluate(gen, m.kept, { progress: false, print: false, maxNewTokens: 100_000, batchSize: 64 });
    const wrong = s.results.filter((r) => !r.greedy!.correct).map((r) => r.id);
    console.log(`MATH-500 reference solutions graded wrong: ${wrong.length}`);
    expect(s.greedyPass1!).toBeGreaterThanOrEqual(0.97);
  });
});
