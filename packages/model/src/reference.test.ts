import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateModel } from "./generate.js";
import { loadModel, type LoadedModel, type WeightMap } from "./checkpoint.js";
import { makeModelConfig, paramName } from "./config.js";
import { applyRope, defaultPositionIds, referenceForward, ropeInvFreq, rmsNorm } from "./reference.js";

let root: string;
const models: Record<string, LoadedModel> = {};
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "nr-ref-"));
  const init = { std: 0.15 };
  for (const [key, cfg] of [
    ["qwen2", { architecture: "qwen2", hiddenSize: 32, numLayers: 2, numHeads: 4, numKvHeads: 2 }],
    ["qwen3", { architecture: "qwen3", hiddenSize: 32, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 12, tieWordEmbeddings: true }],
    ["llama", { architecture: "llama", hiddenSize: 32, numLayers: 2, numHeads: 4, numKvHeads: 4, attentionBias: true }],
  ] as const) {
    const g = await generateModel(join(root, key), cfg, { seed: 11, dtype: "f32", init, tokenizer: false, });
    models[key] = await loadModel(g.dir);
  }
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function row(r: ReturnType<typeof referenceForward>, b: number, t: number): Float64Array {
  const V = r.shape[2];
  const T = r.shape[1];
  return r.logits.subarray((b * T + t) * V, (b * T + t + 1) * V);
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe("float64 reference forward", () => {
  it("default position ids follow HF generate (cumsum of the mask − 1, padding → 1)", () => {
    expect(defaultPositionIds(2, 4)).toEqual([
      [0, 1, 2, 3],
      [0, 1, 2, 3],
    ]);
    expect(defaultPositionIds(1, 5, [[0, 0, 1, 1, 1]])).toEqual([[1, 1, 0, 1, 2]]);
  });

  it("RMSNorm and RoPE match hand-computed values", () => {
    // [3, 4] with weight [1, 2] on dim 2: rms = sqrt((9 + 16)/2) = sqrt(12.5)
    const y = rmsNorm(Float64Array.of(3, 4), 2, Float64Array.of(1, 2), 0);
    expect(y[0]).toBeCloseTo(3 / Math.sqrt(12.5), 14);
    expect(y[1]).toBeCloseTo(8 / Math.sqrt(12.5), 14);
    // D = 4, θ = 100: invFreq = [1, 0.1]; position 2 rotates (x0, x2) by 2 rad and (x1, x3) by 0.2 rad
    const x = Float64Array.of(1, 0, 0, 1);
    applyRope(x, 1, 1, 4, [2], ropeInvFreq(4, 100));
    expect([...x].map((v) => +v.toFixed(12))).toEqual([Math.cos(2), -Math.sin(0.2), Math.sin(2), Math.cos(0.2)].map((v) => +v.toFixed(12)));
  });

  for (const arch of ["qwen2", "qwen3", "llama"]) {
    it(`${arch}: left padding and batch neighbours do not change a sequence's logits`, () => {
      const m = models[arch];
      const seq = [3, 17, 42, 99, 7, 120];
      const alone = referenceForward(m, [seq]);
      expect(alone.shape).toEqual([1, 6, m.config.vocabSize]);
      const other = [5, 6, 7, 8, 9, 10, 11, 12, 13];
      const batch = referenceForward(m, [[0, 0, 0, ...seq], other], { attentionMask: [[0, 0, 0, 1, 1, 1, 1, 1, 1], other.map(() => 1)] });
      for (let t = 0; t < seq.length; t++) expect(maxDiff(row(batch, 0, t + 3), row(alone, 0, t))).toBeLessThan(1e-12);
      const otherAlone = referenceForward(m, [other]);
      for (let t = 0; t < other.length; t++) expect(maxDiff(row(batch, 1, t), row(otherAlone, 0, t))).toBeLessThan(1e-12);
      // logits are not trivially small: the comparison above means something
      expect(Math.max(...alone.logits.map(Math.abs))).toBeGreaterThan(0.5);
    });

    it(`${arch}: causal (later tokens do not change earlier logits) and relative (shifting all positions changes nothing)`, () => {
      const m = models[arch];
      const a = referenceForward(m, [[1, 2, 3, 4, 5]]);
      const b = referenceForward(m, [[1, 2, 3, 200, 201]]);
      for (let t = 0; t < 3; t++) expect(maxDiff(row(a, 0, t), row(b, 0, t))).toBe(0);
      expect(maxDiff(row(a, 0, 3), row(b, 0, 3))).toBeGreaterThan(1e-3);
      const shifted = referenceForward(m, [[1, 2, 3, 4, 5]], { positionIds: [[100, 101, 102, 103, 104]] });
      expect(maxDiff(shifted.logits, a.logits)).toBeLessThan(1e-10);
      // but positions matter: a permutation of positions changes the logits
      const perm = referenceForward(m, [[1, 2, 3, 4, 5]], { positionIds: [[0, 2, 1, 3, 4]] });
      expect(maxDiff(perm.logits, a.logits)).toBeGreaterThan(1e-3);
    });
  }

  it("GQA maps query head h to kv head ⌊h / (Hq/Hkv)⌋: equals MHA with duplicated k/v heads", () => {
    const gqa = models.qwen2; // 4 query heads, 2 kv heads, head dim 8
    const c = gqa.config;
    const mha = makeModelConfig({ ...c, numKvHeads: 4 });
    const D = c.headDim;
    const H = c.hiddenSize;
    const weights: WeightMap = new Map(gqa.weights);
    const dup = (w: Float32Array | Float64Array, rowLen: number) => {
      const out = new Float64Array(w.length * 2);
      for (let hk = 0; hk < c.numKvHeads; hk++)
        for (let r = 0; r < 2; r++) out.set(w.subarray(hk * D * rowLen, (hk + 1) * D * rowLen), (hk * 2 + r) * D * rowLen);
      return out;
    };
    for (let l = 0; l < c.numLayers; l++) {
      for (const role of ["k", "v"] as const) weights.set(paramName(role, l), dup(gqa.weights.get(paramName(role, l))!, H));
      for (const role of ["kBias", "vBias"] as const) weights.set(paramName(role, l), dup(gqa.weights.get(paramName(role, l))!, 1));
    }
    const ids = [[4, 8, 15, 16, 23, 42]];
    const a = referenceForward(gqa, ids);
    const b = referenceForward({ config: mha, weights }, ids);
    expect(maxDiff(a.logits, b.logits)).toBeLessThan(1e-12);
  });

  it("tied embeddings equal an untied model whose lm_head is the embedding", () => {
    const tied = models.qwen3;
    const untied = makeModelConfig({ ...tied.config, tieWordEmbeddings: false });
    const weights: WeightMap = new Map(tied.weights);
    weights.set("lm_head.weight", tied.weights.get("model.embed_tokens.weight")!);
    const ids = [[1, 2, 3]];
    expect(maxDiff(referenceForward(tied, ids).logits, referenceForward({ config: untied, weights }, ids).logits)).toBe(0);
  });

  it("returns hidden states and rejects bad inputs", () => {
    const m = models.llama;
    const r = referenceForward(m, [[1, 2]], { outputHiddenStates: true });
    expect(r.hiddenStates!.length).toBe(m.config.numLayers + 1);
    expect([...r.hiddenStates![0].subarray(0, m.config.hiddenSize)]).toEqual([...m.weights.get("model.embed_tokens.weight")!.subarray(m.config.hiddenSize, 2 * m.config.hiddenSize)]);
    expect(() => referenceForward(m, [[1, m.config.vocabSize]])).toThrowError(/token id \d+ out of range/);
    expect(() => referenceForward(m, [[1, 2], [3]])).toThrowError(/rows differ in length/);
    const partial: WeightMap = new Map(m.weights);
    partial.delete("model.layers.1.mlp.up_proj.weight");
    expect(() => referenceForward({ config: m.config, weights: partial }, [[1]])).toThrowError(/missing weight model\.layers\.1\.mlp\.up_proj\.weight/);
  });
});
