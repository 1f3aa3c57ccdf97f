import { readFileSync } from "node:fs";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { MathRecord } from "../types.js";
import { OnnxEmbedder, WordPieceTokenizer, buildHashEmbeddingModel, cosine, hashTokenizer, normalize } from "./embeddings.js";
import { dedupExact, dedupNear, normalizeText } from "./dedup.js";

interface FixtureRow {
  id: string;
  group: string | null;
  answer: string;
  problem: string;
}
const fixture = JSON.parse(readFileSync(new URL("../fixtures/paraphrases.json", import.meta.url), "utf8")) as { records: FixtureRow[] };
const records: MathRecord[] = fixture.records.map((r) => ({ id: r.id, problem: r.problem, answer: r.answer, source: "fixture" }));
const groupOf = new Map(fixture.records.map((r) => [r.id, r.group]));

let embedder: OnnxEmbedder;
beforeAll(async () => {
  // The model is generated here (ONNX protobuf via onnx-proto) and run with onnxruntime-node on CPU.
  const dir = mkdtempSync(join(tmpdir(), "nr-data-emb-"));
  const path = join(dir, "hash-embedding.onnx");
  writeFileSync(path, buildHashEmbeddingModel({ vocabSize: 4096, dim: 128, seed: 0 }));
  embedder = await OnnxEmbedder.create(path, { tokenizer: hashTokenizer({ vocabSize: 4096 }), sessionOptions: { intraOpNumThreads: 1 } });
});

describe("exact dedup", () => {
  it("removes records equal after normalisation and names the kept one", () => {
    const recs: MathRecord[] = [
      { id: "a", problem: "What is $2+2$?", answer: "4", source: "t" },
      { id: "b", problem: "  what is 2+2 ? ", answer: "4", source: "t" },
      { id: "c", problem: "What is 2+3?", answer: "5", source: "t" },
      { id: "d", problem: "WHAT IS 2+2", answer: "4", source: "t" },
    ];
    const r = dedupExact(recs);
    expect(r.kept.map((x) => x.id)).toEqual(["a", "c"]);
    expect(r.removed.map((x) => [x.record.id, x.duplicateOf])).toEqual([
      ["b", "a"],
      ["d", "a"],
    ]);
    expect(normalizeText("Compute  $\\left(1,2\\right)$.")).toBe("compute 1 2");
  });
});

describe("embeddings from the generated ONNX model", () => {
  it("are unit vectors, independent of batch padding, and the model uses the attention mask", async () => {
    const texts = ["short one", records[0].problem, records[4].problem];
    const together = await embedder.embed(texts);
    for (const [i, t] of texts.entries()) {
      const [alone] = await embedder.embed([t]);
      expect(alone.length).toBe(128);
      expect(cosine(alone, alone)).toBeCloseTo(1, 5);
      for (let d = 0; d < 128; d++) expect(together[i][d]).toBeCloseTo(alone[d], 5);
    }
    expect(embedder.inputNames).toEqual(["input_ids", "attention_mask"]);
  });

  it("put paraphrases close and distinct problems apart", async () => {
    const v = await embedder.embed(records.map((r) => r.problem));
    let minSame = Infinity;
    let maxOther = -Infinity;
    for (let i = 0; i < records.length; i++)
      for (let j = i + 1; j < records.length; j++) {
        const c = cosine(v[i], v[j]);
        const g = groupOf.get(records[i].id);
        if (g !== null && g === groupOf.get(records[j].id)) minSame = Math.min(minSame, c);
        else maxOther = Math.max(maxOther, c);
      }
    expect(minSame).toBeGreaterThan(0.9);
    expect(maxOther).toBeLessThan(0.5);
  });

  it("supports models with token_type_ids", async () => {
    const e = await OnnxEmbedder.create(buildHashEmbeddingModel({ dim: 32, tokenTypeIds: true }), { tokenizer: (t) => ({ inputIds: hashTokenizer()(t) as number[], tokenTypeIds: [] }) });
    expect(e.inputNames).toEqual(["input_ids", "attention_mask", "token_type_ids"]);
    const [a, b] = await e.embed(["three red apples", "apples red three"]);
    expect(cosine(a, b)).toBeCloseTo(1, 5);
    await e.release();
  });
});

describe("near dedup", () => {
  it("keeps one record per paraphrase group and every distinct problem", async () => {
    const r = await dedupNear(records, { embedder, threshold: 0.8 });
    const keptGroups = r.kept.map((x) => groupOf.get(x.id));
    const groups = new Set(fixture.records.map((x) => x.group).filter((g) => g !== null));
    expect(keptGroups.filter((g) => g !== null).sort()).toEqual([...groups].sort());
    expect(r.kept.filter((x) => groupOf.get(x.id) === null)).toHaveLength(fixture.records.filter((x) => x.group === null).length);
    // The first member of each group is the one kept; each removed record names a kept one of its group.
    for (const g of groups) expect(r.kept.find((x) => groupOf.get(x.id) === g)!.id).toBe(`${g}a`);
    for (const d of r.removed) {
      expect(groupOf.get(d.duplicateOf)).toBe(groupOf.get(d.record.id));
      expect(d.similarity!).toBeGreaterThanOrEqual(0.8);
    }
  });

  it("can require equal answers (keeps same-story problems that ask something else)", async () => {
    const story: MathRecord[] = [
      { id: "x1", problem: "Maria has 12 marbles. She finds 5 more marbles in the garden. How many marbles does Maria have now?", answer: "17", source: "t" },
      { id: "x2", problem: "Maria has some marbles. She finds 5 more marbles in the garden and now has 17 marbles. How many marbles did Maria have?", answer: "12", source: "t" },
    ];
    expect((await dedupNear(story, { embedder, threshold: 0.8 })).kept).toHaveLength(1);
    expect((await dedupNear(story, { embedder, threshold: 0.8, requireSameAnswer: true })).kept).toHaveLength(2);
  });
});

describe("WordPiece tokenizer", () => {
  const vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "how", "many", "apple", "##s", "does", "ann", "have", "?", "cafe", "un", "##aff", "##able", "1", "##2", "."];
  const wp = new WordPieceTokenizer(vocab, { maxLength: 8 });

  it("lower-cases, strips accents, splits punctuation and word pieces", () => {
    expect(wp.basicTokens("How many Apples? Café.")).toEqual(["how", "many", "apples", "?", "cafe", "."]);
    expect(wp.wordPieces("unaffable")).toEqual([13, 14, 15]);
    expect(wp.wordPieces("apples")).toEqual([6, 7]);
    expect(wp.wordPieces("xyz")).toEqual([1]);
    expect(wp.encode("How many apples?")).toEqual([2, 4, 5, 6, 7, 11, 3]);
    // Truncated to maxLength with [SEP] kept.
    expect(wp.encode("how many apples does ann have 12 ?")).toEqual([2, 4, 5, 6, 7, 8, 9, 3]);
    expect(() => new WordPieceTokenizer(["a"])).toThrow(/\[UNK\]/);
  });

  it("drives the ONNX embedder", async () => {
    const e = await OnnxEmbedder.create(buildHashEmbeddingModel({ vocabSize: vocab.length, dim: 16 }), { tokenizer: new WordPieceTokenizer(vocab).tokenizer });
    const [a, b, c] = await e.embed(["How many apples does Ann have?", "Does Ann have how many APPLES?", "café"]);
    expect(cosine(a, b)).toBeCloseTo(1, 5); // same pieces, other order
    expect(cosine(a, c)).toBeLessThan(0.9);
    expect(normalize(new Float32Array([3, 4]))).toEqual(new Float32Array([0.6, 0.8]));
  });
});
