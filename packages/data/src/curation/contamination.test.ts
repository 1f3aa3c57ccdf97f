import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { haveShared, SHARED_DATA } from "../fixtures/shared-data.js";
import { numericGrade } from "../fixtures/graders.js";
import { loadDataset } from "../load.js";
import type { MathRecord } from "../types.js";
import { filterParsableAnswers } from "./answers.js";
import { checkContamination, ngramHashes } from "./contamination.js";
import { OnnxEmbedder, buildHashEmbeddingModel, hashTokenizer } from "./embeddings.js";

const rec = (id: string, problem: string, answer = "1"): MathRecord => ({ id, problem, answer, source: "t" });

describe("n-gram contamination", () => {
  it("flags copies, containments and light edits, not unrelated problems", async () => {
    const evalSet = [
      rec("e1", "A farmer has 7 cows and each cow has 4 legs. How many legs do the cows have in total on the farm?"),
      rec("e2", "Sam shares 18 stickers equally among his 6 friends at school. How many stickers does each friend get from Sam?"),
    ];
    const train = [
      rec("copy", "A farmer has 7 cows and each cow has 4 legs. How many legs do the cows have in total on the farm?"),
      rec("inside", "Answer the question below. Sam shares 18 stickers equally among his 6 friends at school. How many stickers does each friend get from Sam? Show your work."),
      rec("edited", "A farmer has 9 cows and each cow has 4 legs. How many legs do the cows have in total on the farm?"),
      rec("other", "A class has 15 boys and 20 girls. How many students are in the class?"),
    ];
    const r = await checkContamination(train, { toy: evalSet });
    expect(r.hits.map((h) => [h.id, h.evalId, h.evalSet])).toEqual([
      ["copy", "e1", "toy"],
      ["inside", "e2", "toy"],
      ["edited", "e1", "toy"],
    ]);
    expect(r.hits[0].ngramOverlap).toBe(1);
    expect(r.hits[1].ngramOverlap).toBe(1);
    expect(r.hits[2].ngramOverlap).toBeGreaterThan(0.5);
    expect(r.hits[2].ngramOverlap).toBeLessThan(1);
    expect(r.clean.map((x) => x.id)).toEqual(["other"]);
    // Stricter threshold lets the edited copy through.
    const strict = await checkContamination(train, { toy: evalSet }, { ngramThreshold: 0.9 });
    expect(strict.hits.map((h) => h.id)).toEqual(["copy", "inside"]);
    expect(ngramHashes("one two", 8).size).toBe(1);
    expect(ngramHashes("a b c d e f g h i", 8).size).toBe(2);
  });

  it("also compares embeddings when given an embedder", async () => {
    const fixture = JSON.parse(readFileSync(new URL("../fixtures/paraphrases.json", import.meta.url), "utf8")) as { records: { id: string; group: string | null; problem: string }[] };
    const evalSet = fixture.records.filter((r) => r.id.endsWith("a")).map((r) => rec(r.id, r.problem));
    const train = fixture.records.filter((r) => !r.id.endsWith("a")).map((r) => rec(r.id, r.problem));
    const embedder = await OnnxEmbedder.create(buildHashEmbeddingModel(), { tokenizer: hashTokenizer() });
    const r = await checkContamination(train, { fixture: evalSet }, { embedder, embeddingThreshold: 0.8 });
    const flagged = r.hits.map((h) => h.id).sort();
    expect(flagged).toEqual(train.filter((t) => fixture.records.find((f) => f.id === t.id)!.group !== null).map((t) => t.id).sort());
    for (const h of r.hits) {
      expect(h.evalId.slice(0, 2)).toBe(h.id.slice(0, 2)); // g1b → g1a, …
      expect(h.by).toContain("embedding");
      expect(h.similarity!).toBeGreaterThanOrEqual(0.8);
    }
    await embedder.release();
  });
});

describe.skipIf(!haveShared("gsm8k_train.jsonl", "gsm8k_test.jsonl", "math500_test.jsonl"))("contamination on GSM8K / MATH-500", () => {
  it("finds injected test problems in a training set, and the real train/test overlap", async () => {
    const train = (await loadDataset(SHARED_DATA + "gsm8k_train.jsonl")).records;
    const test = (await loadDataset(SHARED_DATA + "gsm8k_test.jsonl")).records;
    const math = (await loadDataset(SHARED_DATA + "math500_test.jsonl")).records;
    const leaked = test.slice(100, 120).map((t, i) => ({
      ...t,
      id: `leak-${i}`,
      // Half verbatim, half with a prefix and one number changed.
      problem: i % 2 === 0 ? t.problem : `Solve this: ${t.problem.replace(/\d+/, (m) => String(Number(m) + 1))}`,
    }));
    const mixed = [...train.slice(0, 300), ...leaked];
    const r = await checkContamination(mixed, { gsm8k_test: test, math500: math });
    expect(r.hits.map((h) => h.id)).toEqual(leaked.map((l) => l.id));
    r.hits.forEach((h, i) => expect(h.evalId).toBe(test[100 + i].id));
    expect(r.clean).toHaveLength(300);
    // The full GSM8K train set against both test sets: two train problems share a template with
    // test problem 603 (same wording, different numbers); nothing overlaps MATH-500.
    const full = await checkContamination(train, { gsm8k_test: test, math500: math });
    expect(full.hits.map((h) => [h.id, h.evalId])).toEqual([
      ["gsm8k_train:1315", "gsm8k_test:603"],
      ["gsm8k_train:5163", "gsm8k_test:603"],
    ]);
  });
});

describe("answer check", () => {
  it("drops problems whose gold the verifier cannot parse and counts the reasons", async () => {
    const recs = [rec("a", "p", "12"), rec("b", "p", "\\frac{1}{2}"), rec("c", "p", "1,000"), rec("d", "p", "x")];
    const r = await filterParsableAnswers(recs, { grade: numericGrade });
    expect(r.kept.map((x) => x.id)).toEqual(["a", "c"]);
    expect(r.dropped.map((d) => [d.record.id, d.reason])).toEqual([
      ["b", "gold not parseable"],
      ["d", "gold not parseable"],
    ]);
    expect(r.reasons).toEqual({ "gold not parseable": 2 });
    const throwing = await filterParsableAnswers([rec("e", "p", "1")], { grade: () => { throw new Error("boom"); } });
    expect(throwing.reasons).toEqual({ "verifier error: boom": 1 });
    const boolean = await filterParsableAnswers([rec("f", "p", "1"), rec("g", "p", "2")], { grade: (_p, g) => g === "1" });
    expect(boolean.dropped.map((d) => [d.record.id, d.reason])).toEqual([["g", "not equal to itself"]]);
  });
});
