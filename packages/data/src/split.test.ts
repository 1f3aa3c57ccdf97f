import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { invalidUtf8Offset, loadDataset } from "./load.js";
import { dropHeldOutDuplicates, splitHeldOut } from "./split.js";
import type { MathRecord } from "./types.js";
import { Rng } from "./util.js";
import { writeParquet } from "./fixtures/parquet-writer.js";

const seed = Number(process.env.NR_SEED ?? Date.now() % 1_000_000);
const WORDS = ["apples", "trains", "marbles", "coins", "buses", "pencils", "books", "birds", "cakes", "boxes", "miles", "hours"];

/** `n` records with distinct, unrelated questions (random words and numbers). */
function records(n: number, rng: Rng): MathRecord[] {
  return Array.from({ length: n }, (_, i) => {
    const w = Array.from({ length: 12 }, () => `${rng.pick(WORDS)}${rng.int(0, 999)}`);
    return { id: `f:${i + 1}`, problem: `Q${i}: ${w.join(" ")}?`, answer: String(i), source: "f" };
  });
}

describe(`seeded held-out split (NR_SEED=${seed})`, () => {
  it("splits into disjoint parts of the asked size, in file order, the same for the same seed", async () => {
    const rng = new Rng(seed);
    const n = rng.int(20, 300);
    const k = rng.int(1, Math.floor(n / 2));
    const recs = records(n, rng);
    const a = await splitHeldOut(recs, k, 7);
    expect(a.heldOut).toHaveLength(k);
    expect(a.train).toHaveLength(n - k);
    expect(a.leaks).toEqual([]);
    const ids = new Set(a.heldOut.map((r) => r.id));
    expect(a.train.some((r) => ids.has(r.id))).toBe(false);
    expect([...a.train, ...a.heldOut].map((r) => r.id).sort()).toEqual(recs.map((r) => r.id).sort());
    const order = (rs: MathRecord[]) => rs.map((r) => Number(r.id.slice(2)));
    expect(order(a.heldOut)).toEqual([...order(a.heldOut)].sort((x, y) => x - y));
    expect((await splitHeldOut(recs, k, 7)).heldOut.map((r) => r.id)).toEqual(a.heldOut.map((r) => r.id));
    // Another seed picks other records (for k of n ≥ 20 the chance of the same pick is negligible).
    expect((await splitHeldOut(recs, Math.max(3, k), 8)).heldOut.map((r) => r.id)).not.toEqual((await splitHeldOut(recs, Math.max(3, k), 7)).heldOut.map((r) => r.id));
    // Not the last k records (what a "hold out the tail" split would give).
    expect(a.heldOut.map((r) => r.id)).not.toEqual(recs.slice(n - k).map((r) => r.id));
  });

  it("drops train questions that repeat a held-out one, exactly (after normalising) or nearly, and names it", async () => {
    const rng = new Rng(seed + 1);
    const base = records(40, rng);
    const heldOut = base.slice(0, 10);
    const exact = { ...heldOut[3], id: "f:101", problem: `  ${heldOut[3].problem.toUpperCase().replace("?", " ?!")} ` };
    const words = heldOut[5].problem.split(" ");
    words[words.length - 1] = "changed?";
    const near = { ...heldOut[5], id: "f:102", problem: words.join(" ") };
    const train = [...base.slice(10), exact, near];
    const r = await dropHeldOutDuplicates(train, heldOut);
    expect(r.leaks).toEqual([
      { id: "f:101", heldOutId: heldOut[3].id, by: "exact" },
      { id: "f:102", heldOutId: heldOut[5].id, by: "ngram", overlap: expect.any(Number) },
    ]);
    expect(r.leaks[1].overlap).toBeGreaterThanOrEqual(0.5);
    expect(r.train.map((x) => x.id)).toEqual(base.slice(10).map((x) => x.id));
  });

  it("refuses a held-out size that leaves no train record", async () => {
    const recs = records(4, new Rng(seed));
    await expect(splitHeldOut(recs, 4, 0)).rejects.toThrow(/cannot hold out 4 of 4 records/);
    await expect(splitHeldOut(recs, 0, 0)).rejects.toThrow(/cannot hold out 0 of 4/);
  });
});

describe(`invalid UTF-8 (NR_SEED=${seed})`, () => {
  /** Reference: the WHATWG decoder's first U+FFFD, mapped back to a byte offset through the valid prefix. */
  function referenceOffset(bytes: Uint8Array): number {
    const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
    const i = text.indexOf("\ufffd");
    return i < 0 ? -1 : Buffer.byteLength(text.slice(0, i), "utf8");
  }

  it("finds the first bad byte like the WHATWG decoder on random byte strings", () => {
    const rng = new Rng(seed);
    const pieces = [[0x41], [0xc3, 0xa9], [0xe2, 0x82, 0xac], [0xf0, 0x9f, 0x98, 0x80], [0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0xff], [0xf0, 0x9f]];
    let bad = 0;
    for (let t = 0; t < 2000; t++) {
      const parts = Array.from({ length: rng.int(0, 12) }, () => (rng.float() < 0.85 ? rng.pick(pieces.slice(0, 4)) : rng.pick(pieces)));
      const bytes = Uint8Array.from(parts.flat());
      const want = referenceOffset(bytes);
      expect(invalidUtf8Offset(bytes), Buffer.from(bytes).toString("hex")).toBe(want);
      if (want >= 0) bad++;
    }
    expect(bad).toBeGreaterThan(100);
  });

  it("loadDataset reports the line and the byte offset in the file, and skips only that row when asked", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nr-utf8-"));
    const f = join(dir, "rows.jsonl");
    const good = (q: string) => `{"question":"${q}","answer":"1\\n#### 1"}\n`;
    const bytes = Buffer.concat([Buffer.from(good("caf\u00e9 one")), Buffer.from('{"question":"caf'), Buffer.from([0xe9, 0x20]), Buffer.from('two","answer":"1\\n#### 1"}\n'), Buffer.from(good("three"))]);
    writeFileSync(f, bytes);
    const offset = Buffer.byteLength(good("caf\u00e9 one")) + '{"question":"caf'.length;
    await expect(loadDataset(f, { onBadRow: "error" })).rejects.toThrow(`${f}:2: invalid UTF-8 at byte offset ${offset} (byte 0xe9)`);
    const skipped = await loadDataset(f);
    expect(skipped.records.map((r) => r.problem)).toEqual(["caf\u00e9 one", "three"]);
    expect(skipped.badRows).toEqual([{ file: f, line: 2, reason: `invalid UTF-8 at byte offset ${offset} (byte 0xe9); re-encode the file as UTF-8`, snippet: '{"question":"caf\ufffd two","answer":"1\\n#### 1"}' }]);
  });

  it("a Parquet string column with invalid UTF-8: that row is reported (column, offset in the value), never decoded to U+FFFD", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nr-utf8-pq-"));
    const f = join(dir, "rows.parquet");
    const bad = Uint8Array.from([...Buffer.from("caf"), 0xe9, ...Buffer.from(" two")]);
    writeParquet(f, [
      { name: "question", kind: "string", values: ["caf\u00e9 one", bad, "three"] },
      { name: "answer", kind: "string", values: ["1\n#### 1", "1\n#### 1", "1\n#### 1"] },
    ]);
    await expect(loadDataset(f, { onBadRow: "error" })).rejects.toThrow(`${f}:2: invalid UTF-8 in question at byte offset 3 of the value (byte 0xe9)`);
    const { records, badRows } = await loadDataset(f);
    expect(records.map((r) => r.problem)).toEqual(["caf\u00e9 one", "three"]);
    expect(badRows).toHaveLength(1);
  });

  it("a single file has only the split its name says; a fake Parquet file is named", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nr-split-"));
    writeFileSync(join(dir, "gsm_test.jsonl"), '{"question":"a?","answer":"1\\n#### 1"}\n');
    writeFileSync(join(dir, "fake.parquet"), "not parquet");
    expect((await loadDataset(join(dir, "gsm_test.jsonl"), { split: "test" })).records).toHaveLength(1);
    await expect(loadDataset(join(dir, "gsm_test.jsonl"), { split: "train" })).rejects.toThrow(/gsm_test\.jsonl: a single file has no split "train" \(its name says "test"\)/);
    await expect(loadDataset(join(dir, "fake.parquet"))).rejects.toThrow(`${join(dir, "fake.parquet")}: not a readable Parquet file`);
  });
});
