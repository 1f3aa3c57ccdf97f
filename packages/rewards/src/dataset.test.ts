// Agreement with the expected verdicts of the shared answer-case collection, and self-consistency on every
// MATH-500 / GSM8K reference solution. The data lives in the sibling folder ../shared (never copied into the repo).
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { verify, type VerifyOptions } from "./index.js";

const DATA = fileURLToPath(new URL("../../../../shared/data/", import.meta.url));
const haveData = existsSync(`${DATA}answer_cases_dev.jsonl`) && existsSync(`${DATA}solution_extraction_cases.jsonl`);
if (!haveData) console.log(`[dataset.test] skipped: shared test data not found at ${DATA}`);

interface Row {
  pred: string;
  gold: string;
  equal: boolean;
  category: string;
  source: string;
  config?: { precision?: number; allow_set_relation_comp?: boolean; strict?: boolean; match_types?: Array<"latex" | "expr"> };
}

const load = (name: string): Row[] =>
  readFileSync(`${DATA}${name}`, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as Row);

/** The upstream grader options a row was produced with, mapped onto ours (README "Options"). */
function optionsFor(row: Row): VerifyOptions {
  const c = row.config ?? {};
  const o: VerifyOptions = {};
  if (c.precision !== undefined) o.floatPrecision = c.precision;
  if (c.allow_set_relation_comp !== undefined) o.allowSetRelation = c.allow_set_relation_comp;
  if (c.strict !== undefined) o.strictVariables = c.strict;
  if (c.match_types !== undefined) o.matchTypes = c.match_types;
  return o;
}

describe.skipIf(!haveData)("answer_cases_dev.jsonl", () => {
  it("agrees with the expected verdict on ≥ 95 % of the cases, with zero false positives", () => {
    const rows = load("answer_cases_dev.jsonl");
    const per = new Map<string, { n: number; ok: number; fp: number; fn: number }>();
    const falsePositives: string[] = [];
    const misses: string[] = [];
    for (const row of rows) {
      const r = verify(row.pred, row.gold, optionsFor(row));
      const s = per.get(row.category) ?? { n: 0, ok: 0, fp: 0, fn: 0 };
      s.n++;
      if (r.correct === row.equal) s.ok++;
      else if (r.correct) {
        s.fp++;
        falsePositives.push(`${row.source}: ${JSON.stringify(row.pred).slice(0, 80)} vs ${JSON.stringify(row.gold).slice(0, 80)} (${r.reason})`);
      } else {
        s.fn++;
        misses.push(`${row.source}: ${JSON.stringify(r.predicted)} vs ${JSON.stringify(r.gold)} (${r.reason})`);
      }
      per.set(row.category, s);
    }
    const total = [...per.values()].reduce((a, s) => ({ n: a.n + s.n, ok: a.ok + s.ok }), { n: 0, ok: 0 });
    const lines = [...per.entries()]
      .sort((a, b) => b[1].n - a[1].n)
      .map(([c, s]) => `  ${c.padEnd(18)} ${String(s.ok).padStart(3)}/${String(s.n).padEnd(3)} ${((100 * s.ok) / s.n).toFixed(1).padStart(5)} %  FP ${s.fp}  FN ${s.fn}`);
    console.log(
      `answer_cases_dev: ${total.ok}/${total.n} = ${((100 * total.ok) / total.n).toFixed(1)} % agreement, ` +
        `${falsePositives.length} false positives\n${lines.join("\n")}` +
        (misses.length ? `\nmisses:\n  ${misses.join("\n  ")}` : ""),
    );
    expect(falsePositives, falsePositives.join("\n")).toEqual([]);
    expect(total.ok / total.n).toBeGreaterThanOrEqual(0.95);
  });
});

describe.skipIf(!haveData)("solution_extraction_cases.jsonl", () => {
  it("every MATH-500 and GSM8K reference solution verifies against its own gold", () => {
    const rows = load("solution_extraction_cases.jsonl");
    expect(rows.length).toBe(1819);
    const failures = rows
      .map((row) => ({ row, r: verify(row.pred, row.gold) }))
      .filter(({ r }) => !r.correct)
      .map(({ row, r }) => `${row.source}: gold ${JSON.stringify(row.gold)} predicted ${JSON.stringify(r.predicted)} (${r.reason})`);
    expect(failures, failures.join("\n")).toEqual([]);
  });

  it("a solution never matches another problem's gold unless the two golds are themselves equivalent", () => {
    // Negative control for false positives: pair solution i with gold i+k.
    const rows = load("solution_extraction_cases.jsonl");
    const wrong: string[] = [];
    let accepted = 0;
    for (const k of [1, 7]) {
      for (let i = 0; i < rows.length; i++) {
        const other = rows[(i + k) % rows.length];
        if (other.category !== rows[i].category) continue;
        if (!verify(rows[i].pred, other.gold).correct) continue;
        accepted++;
        // accepted only if the golds agree: the same answer written the same or an equivalent way
        if (!verify(rows[i].gold, other.gold).correct) wrong.push(`${rows[i].source} vs gold of ${other.source} (${other.gold})`);
      }
    }
    console.log(`cross-pair control: ${accepted} accepted pairs, all with equivalent golds: ${wrong.length === 0}`);
    expect(wrong, wrong.join("\n")).toEqual([]);
  });
});

describe.skipIf(!haveData)("raw benchmark files", () => {
  it("GSM8K test: the full `answer` field verifies against the number after ####, and not against that number + 1", () => {
    const rows = readFileSync(`${DATA}gsm8k_test.jsonl`, "utf8")
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as { answer: string });
    let bad = 0;
    for (const r of rows) {
      const gold = (r.answer.split("####").pop() ?? "").trim().replace(/,/g, "");
      const off = (BigInt(gold) + 1n).toString();
      if (!verify(r.answer, gold).correct || verify(r.answer, off).correct) bad++;
    }
    expect(bad).toBe(0);
  });

  it("MATH-500: the `answer` field equals the last box of `solution`", () => {
    const rows = readFileSync(`${DATA}math500_test.jsonl`, "utf8")
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as { solution: string; answer: string });
    const bad = rows.filter((r) => !verify(r.solution, `$${r.answer}$`).correct).map((r) => r.answer);
    expect(bad).toEqual([]);
  });
});
