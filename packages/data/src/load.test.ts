import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { writeParquet } from "./fixtures/parquet-writer.js";
import { haveShared, SHARED_DATA } from "./fixtures/shared-data.js";
import { detectLayout, splitGsm8kAnswer, stripCalculatorAnnotations } from "./fields.js";
import { formatBadRows, listSplits, loadDataset, splitOfFile } from "./load.js";
import { DatasetError } from "./types.js";

const tmp = () => mkdtempSync(join(tmpdir(), "nr-data-load-"));
const jsonl = (rows: unknown[]) => rows.map((r) => (typeof r === "string" ? r : JSON.stringify(r))).join("\n") + "\n";

describe.skipIf(!haveShared("gsm8k_train.jsonl", "gsm8k_test.jsonl", "math500_test.jsonl"))("real datasets in ../shared/data", () => {
  it("loads GSM8K train and test with every row valid", async () => {
    const train = await loadDataset(SHARED_DATA + "gsm8k_train.jsonl");
    const test = await loadDataset(SHARED_DATA + "gsm8k_test.jsonl");
    expect(train.records.length).toBe(7473);
    expect(test.records.length).toBe(1319);
    expect(train.badRows).toEqual([]);
    expect(test.badRows).toEqual([]);
    expect(train.layouts[SHARED_DATA + "gsm8k_train.jsonl"]).toBe("gsm8k");
    const first = train.records[0];
    expect(first.id).toBe("gsm8k_train:1");
    expect(first.source).toBe("gsm8k_train");
    expect(first.problem.startsWith("Natalia sold clips to 48 of her friends")).toBe(true);
    expect(first.answer).toBe("72");
    // Calculator annotations and the #### line are removed from the solution.
    expect(first.solution).toBe("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.");
    expect(first.meta?.rawAnswer).toContain("#### 72");
    // Thousands separators in gold answers (14 test rows) are removed; negatives (2 rows) kept.
    const withComma = test.records.filter((r) => /####\s*-?\d{1,3}(,\d{3})+/.test(String(r.meta?.rawAnswer)));
    expect(withComma.length).toBe(14);
    for (const r of withComma) expect(r.answer).toMatch(/^-?\d+$/);
    expect(test.records.filter((r) => r.answer.startsWith("-")).length).toBe(2);
    expect(test.records.every((r) => /^-?\d+(\.\d+)?$/.test(r.answer))).toBe(true);
  });

  it("loads MATH-500 with ids, answers and subject/level metadata", async () => {
    const { records, badRows, layouts } = await loadDataset(SHARED_DATA + "math500_test.jsonl");
    expect(records.length).toBe(500);
    expect(badRows).toEqual([]);
    expect(Object.values(layouts)).toEqual(["math"]);
    const r = records[0];
    expect(r.id).toBe("test/precalculus/807.json");
    expect(r.answer).toBe("\\left( 3, \\frac{\\pi}{2} \\right)");
    expect(r.meta).toEqual({ subject: "Precalculus", level: 2 });
    expect(new Set(records.map((x) => x.id)).size).toBe(500);
    // The answer field equals the last \boxed{} of the solution in all 500 rows (SOURCES.md);
    // dropping the answer field must therefore give the same answers.
    const fromSolution = await loadDataset(SHARED_DATA + "math500_test.jsonl", { fields: { problem: "problem", solution: "solution", answerFromSolution: true } });
    expect(fromSolution.records.map((x) => x.answer)).toEqual(records.map((x) => x.answer));
  });

  it("loads a dataset folder by split and respects limit", async () => {
    const splits = await listSplits(SHARED_DATA);
    expect(splits.train).toEqual(["gsm8k_train.jsonl"]);
    expect(splits.test).toContain("gsm8k_test.jsonl");
    await expect(loadDataset(SHARED_DATA)).rejects.toThrow(/several splits/);
    const limited = await loadDataset(SHARED_DATA, { split: "train", limit: 10 });
    expect(limited.records.length).toBe(10);
    expect(limited.records[0].source).toBe("data");
  });
});

describe("malformed rows", () => {
  const dir = tmp();
  const file = join(dir, "bad.jsonl");
  writeFileSync(
    file,
    jsonl([
      { question: "Ann has 2 pens and buys 3 more. How many pens?", answer: "2 + 3 = 5\n#### 5" },
      "{not json",
      { question: "Missing answer field" },
      "", // a blank line is not a row
      { question: "Empty answer", answer: "Some work\n#### " },
      { question: "No marker", answer: "The answer is 4" },
      [1, 2, 3],
      { question: "Bob has 10 cards and gives away 4. How many are left?", answer: "10 - 4 = 6\n#### 6" },
    ]),
  );

  it("skips and reports each bad row with file, line and reason", async () => {
    const { records, badRows } = await loadDataset(file);
    expect(records.map((r) => r.answer)).toEqual(["5", "6"]);
    expect(records.map((r) => r.id)).toEqual(["bad:1", "bad:8"]);
    expect(badRows.map((b) => [b.line, b.reason.split(":")[0]])).toEqual([
      [2, "malformed JSON"],
      [3, 'missing field "answer"'],
      [5, "empty answer"],
      [6, 'no "####" in field "answer"'],
      [7, "row is not a JSON object"],
    ]);
    for (const b of badRows) expect(b.file).toBe(file);
    expect(badRows[0].snippet).toBe("{not json");
    const text = formatBadRows(badRows);
    expect(text.split("\n")[0]).toBe("5 bad rows skipped:");
    expect(text).toContain(`${file}:3: missing field "answer"`);
  });

  it("throws a DatasetError with file and line when onBadRow is error", async () => {
    const err = await loadDataset(file, { onBadRow: "error" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatasetError);
    expect((err as DatasetError).report.line).toBe(2);
    expect((err as Error).message).toMatch(new RegExp(`bad\\.jsonl:2: malformed JSON`));
  });

  it("reports rows of a JSON array file by position", async () => {
    const f = join(dir, "arr.json");
    writeFileSync(f, JSON.stringify([{ prompt: "1+1?", answer: 2 }, { prompt: "", answer: "3" }, { prompt: "2+2?", answer: "  " }]));
    const { records, badRows } = await loadDataset(f);
    expect(records).toEqual([{ id: "arr:1", problem: "1+1?", answer: "2", source: "arr" }]);
    expect(badRows.map((b) => [b.line, b.reason])).toEqual([
      [2, "empty problem"],
      [3, "empty answer"],
    ]);
  });

  it("fails clearly when the layout cannot be detected", async () => {
    const f = join(dir, "odd.jsonl");
    writeFileSync(f, jsonl([{ text: "x", label: 1 }]));
    await expect(loadDataset(f)).rejects.toThrow(/cannot detect the layout from fields \[text, label\]/);
  });
});

describe("layouts and field maps", () => {
  it("detects the common layouts", () => {
    expect(detectLayout(["question", "answer"], { question: "q", answer: "x\n#### 3" })).toBe("gsm8k");
    expect(detectLayout(["question", "answer"], { question: "q", answer: "3" })).toBe("question-answer");
    expect(detectLayout(["problem", "solution", "answer", "subject", "level", "unique_id"])).toBe("math");
    expect(detectLayout(["problem", "solution", "level", "type"])).toBe("math");
    expect(detectLayout(["problem", "solution", "answer", "problem_type", "uuid", "messages", "generations"])).toBe("openr1");
    expect(detectLayout(["prompt", "answer"])).toBe("prompt-answer");
    expect(detectLayout(["text"])).toBeNull();
  });

  it("splits GSM8K answers and strips calculator annotations", () => {
    expect(splitGsm8kAnswer("a = <<2*3=6>>6\n#### 1,234")).toEqual({ solution: "a = <<2*3=6>>6", answer: "1234" });
    expect(splitGsm8kAnswer("no marker")).toBeNull();
    expect(stripCalculatorAnnotations("He pays 5*2 = $<<5*2=10>>10.")).toBe("He pays 5*2 = $10.");
  });

  it("maps OpenR1-Math rows, original MATH rows and chat prompts", async () => {
    const dir = tmp();
    const openr1 = join(dir, "openr1.jsonl");
    const messages = [
      { role: "user", content: "Find x if 2x = 6." },
      { role: "assistant", content: "<think>\nDivide by 2.\n</think>\n\\boxed{3}" },
    ];
    writeFileSync(
      openr1,
      jsonl([
        { problem: "Find x if 2x = 6.", solution: "x = 3, so $\\boxed{3}$.", answer: "3", uuid: "u-1", problem_type: "Algebra", messages, generations: ["long"], correctness_math_verify: [true] },
        { problem: "Find y.", solution: "It is $\\boxed{\\frac{1}{2}}$.", answer: "", uuid: "u-2", problem_type: "Algebra", messages },
      ]),
    );
    const r = await loadDataset(openr1);
    expect(r.layouts[openr1]).toBe("openr1");
    expect(r.records[0]).toEqual({
      id: "u-1",
      problem: "Find x if 2x = 6.",
      answer: "3",
      solution: "x = 3, so $\\boxed{3}$.",
      source: "openr1",
      meta: { problem_type: "Algebra", messages },
    });
    // Empty answer field: the last \boxed{} of the solution is used.
    expect(r.records[1].answer).toBe("\\frac{1}{2}");

    const math = join(dir, "algebra.jsonl");
    writeFileSync(math, jsonl([{ problem: "Compute $1+1$.", level: "Level 1", type: "Algebra", solution: "We get $\\boxed{2}$." }, { problem: "No box", level: "Level 1", type: "Algebra", solution: "two" }]));
    const m = await loadDataset(math);
    expect(m.records.map((x) => [x.id, x.answer, x.meta])).toEqual([["algebra:1", "2", { level: "Level 1", type: "Algebra" }]]);
    expect(m.badRows.map((b) => b.reason)).toEqual(['missing field "answer"']);

    const chat = join(dir, "chat.jsonl");
    writeFileSync(chat, jsonl([{ prompt: [{ role: "system", content: "be brief" }, { role: "user", content: "What is 3*4?" }], answer: 12, extra: { gold: "twelve" } }]));
    const c = await loadDataset(chat);
    expect(c.records[0]).toMatchObject({ problem: "What is 3*4?", answer: "12" });
  });

  it("uses an explicit field map with dot paths, meta selection and answer formats", async () => {
    const dir = tmp();
    const f = join(dir, "custom.jsonl");
    writeFileSync(f, jsonl([{ q: { text: "Sum 2 and 2." }, key: 7, out: "so \\boxed{4}", tag: "easy", n: 1 }]));
    const { records, layouts } = await loadDataset(f, {
      fields: { problem: "q.text", answer: "out", answerFormat: "boxed", id: "key", meta: ["tag"] },
      source: "mine",
    });
    expect(layouts[f]).toBe("custom");
    expect(records).toEqual([{ id: "7", problem: "Sum 2 and 2.", answer: "4", source: "mine", meta: { tag: "easy" } }]);
    // A layout plus a partial override.
    const g = join(dir, "gsm.jsonl");
    writeFileSync(g, jsonl([{ question: "q?", answer: "w\n#### 3", idx: "a1" }]));
    const over = await loadDataset(g, { layout: "gsm8k", fields: { id: "idx" } });
    expect(over.records[0].id).toBe("a1");
  });
});

describe("Parquet and dataset folders", () => {
  it("reads an HF-style folder of Parquet shards with splits", async () => {
    const dir = tmp();
    mkdirSync(join(dir, "data"));
    writeParquet(join(dir, "data", "train-00000-of-00002.parquet"), [
      { name: "problem", kind: "string", values: ["What is 2+2?", "What is 3*3?"] },
      { name: "solution", kind: "string", values: ["$\\boxed{4}$", "$\\boxed{9}$"] },
      { name: "answer", kind: "string", values: ["4", null], optional: true },
      { name: "level", kind: "int64", values: [1, 2] },
    ]);
    writeParquet(join(dir, "data", "train-00001-of-00002.parquet"), [
      { name: "problem", kind: "string", values: ["What is 5-1?", ""] },
      { name: "solution", kind: "string", values: ["$\\boxed{4}$", "none"] },
      { name: "answer", kind: "string", values: ["4", "1"], optional: true },
      { name: "level", kind: "int64", values: [3, 4] },
    ]);
    writeParquet(join(dir, "data", "test-00000-of-00001.parquet"), [
      { name: "problem", kind: "string", values: ["What is 1+0?"] },
      { name: "solution", kind: "string", values: ["$\\boxed{1}$"] },
      { name: "answer", kind: "string", values: ["1"] },
      { name: "level", kind: "int64", values: [1] },
    ]);
    expect(Object.keys(await listSplits(dir)).sort()).toEqual(["test", "train"]);
    const train = await loadDataset(dir, { split: "train", source: "toy" });
    expect(train.files.map((f) => f.slice(dir.length + 1))).toEqual(["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]);
    expect(train.records.map((r) => [r.id, r.answer, r.meta?.level, r.source])).toEqual([
      ["train-00000-of-00002:1", "4", 1, "toy"],
      ["train-00000-of-00002:2", "9", 2, "toy"], // null answer → last \boxed{} of the solution
      ["train-00001-of-00002:1", "4", 3, "toy"],
    ]);
    expect(train.badRows).toHaveLength(1);
    expect(train.badRows[0]).toMatchObject({ file: join(dir, "data", "train-00001-of-00002.parquet"), line: 2, reason: "empty problem" });
    const test = await loadDataset(dir, { split: "test" });
    expect(test.records).toHaveLength(1);
    await expect(loadDataset(dir, { split: "validation" })).rejects.toThrow(/no split "validation"/);
    await expect(loadDataset(join(dir, "data", "train-00001-of-00002.parquet"), { onBadRow: "error" })).rejects.toThrow(/train-00001-of-00002\.parquet:2: empty problem/);
  });

  it("names splits from file names", () => {
    expect(splitOfFile("data/train-00000-of-00001.parquet")).toBe("train");
    expect(splitOfFile("gsm8k_test.jsonl")).toBe("test");
    expect(splitOfFile("main/validation.jsonl")).toBe("validation");
    expect(splitOfFile("default/train/0000.parquet")).toBe("train");
    expect(splitOfFile("extended.parquet")).toBe("extended");
  });
});
