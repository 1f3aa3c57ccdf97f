// The full-size random checkpoint generator, at small sizes: HF file layout (one file or shards + index cut by size),
// every stored byte equal to the unchunked draw rounded to bf16, the config kept field for field, tokenizer copied.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { openCheckpoint } from "./checkpoint.js";
import { parameterSpecs } from "./config.js";
import { initialValueChunks, initialValues } from "./generate.js";
import { writeRandomCheckpoint } from "./random-checkpoint.js";
import { encodeFloats, INDEX_FILE, SafetensorsCheckpoint, SINGLE_FILE } from "./safetensors.js";

let dir: string;
beforeAll(async () => (dir = await mkdtemp(join(tmpdir(), "nr-random-ck-"))));
afterAll(async () => rm(dir, { recursive: true, force: true }));

// The published Qwen2.5-Math-1.5B-Instruct config.json (kept for the scale bench) with the sizes cut down to awkward
// ones; the vocabulary stays 151,936 and every other field as published.
const published = fileURLToPath(new URL("../../../benchmarks/scale/qwen2.5-math-1.5b-instruct.config.json", import.meta.url));
const QWEN = { ...JSON.parse(readFileSync(published, "utf8")), hidden_size: 24, intermediate_size: 40, num_attention_heads: 3, num_hidden_layers: 3, num_key_value_heads: 1 };

describe("writeRandomCheckpoint", () => {
  it("shards by size with an index above maxShardBytes; each stored tensor is the seeded draw in bf16, byte for byte", async () => {
    const out = join(dir, "sharded");
    const cfgFile = join(dir, "config-in.json");
    await writeFile(cfgFile, JSON.stringify(QWEN));
    let last = 0;
    const ck = await writeRandomCheckpoint(out, cfgFile, { seed: 7, maxShardBytes: 3_000_000, onProgress: (d) => (last = d) });
    // the embedding alone is 151936 × 24 × 2 = 7.3 MB: over the limit, a file of its own
    expect(ck.files).toContain(INDEX_FILE);
    expect(ck.files.filter((f) => f.endsWith(".safetensors")).length).toBeGreaterThanOrEqual(2);
    expect(last).toBe(ck.weightBytes);
    const index = JSON.parse(await readFile(join(out, INDEX_FILE), "utf8"));
    expect(index.metadata.total_size).toBe(ck.weightBytes);
    const written = JSON.parse(await readFile(join(out, "config.json"), "utf8"));
    expect(written).toEqual(QWEN);
    const src = await SafetensorsCheckpoint.open(out);
    try {
      for (const p of parameterSpecs(ck.config)) {
        const raw = await src.readRaw(p.name);
        const want = encodeFloats(initialValues(p, 7), "BF16");
        expect(Buffer.from(raw).equals(Buffer.from(want)), p.name).toBe(true);
      }
    } finally {
      await src.close();
    }
    const opened = await openCheckpoint(out); // validates every tensor against the config
    expect(opened.report.unexpected).toEqual([]);
    await opened.tensors.close();
  });

  it("writes one model.safetensors when everything fits a shard; copies the tokenizer folder; f32 on request", async () => {
    const tok = join(dir, "tok");
    await mkdir(tok, { recursive: true });
    await writeFile(join(tok, "tokenizer.json"), '{"model":{}}');
    await writeFile(join(tok, "merges.txt"), "a b\n");
    const out = join(dir, "single");
    const small = { ...QWEN, vocab_size: 301, tie_word_embeddings: false };
    const ck = await writeRandomCheckpoint(out, small, { seed: 1, dtype: "f32", tokenizerDir: tok });
    expect(ck.files).toContain(SINGLE_FILE);
    expect(existsSync(join(out, INDEX_FILE))).toBe(false);
    expect(await readFile(join(out, "merges.txt"), "utf8")).toBe("a b\n");
    expect((await stat(join(out, SINGLE_FILE))).size).toBeGreaterThan(ck.weightBytes);
    const src = await SafetensorsCheckpoint.open(out);
    const head = parameterSpecs(ck.config).find((p) => p.role === "lmHead")!;
    expect(Array.from(await src.readF32(head.name))).toEqual(Array.from(Float32Array.from(initialValues(head, 1))));
    await src.close();
  });

  it("chunked draws equal the whole draw (the RNG stream runs on across chunks)", () => {
    const p = { name: "x", shape: [7, 13], role: "embed" as const, layer: null, kind: "embedding" as const };
    const chunks = [...initialValueChunks(p, 3, {}, 10)];
    expect(chunks.length).toBe(10);
    expect(Array.from(chunks.flatMap((c) => Array.from(c)))).toEqual(Array.from(initialValues(p, 3)));
  });

  it("names the file when the config cannot be read", async () => {
    await expect(writeRandomCheckpoint(join(dir, "x"), join(dir, "nope.json"))).rejects.toThrow(/nope\.json: cannot read the model config \(ENOENT\)/);
    await writeFile(join(dir, "bad.json"), "{");
    await expect(writeRandomCheckpoint(join(dir, "x"), join(dir, "bad.json"))).rejects.toThrow(/bad\.json: not valid JSON/);
  });
});
