// A model whose embedding / LM head do not fit one storage binding: loadDecoder on a GPU backend with a tiny
// artificial binding limit (maxShardBytes) holds them as row shards, and the decoder's log-probs, entropies and the
// input gradients that flow back through the whole stack match the float64 CPU decoder on the same checkpoint —
// tied f32 (NF4 base) and untied f16 tables.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { gpuSuite } from "@nr/kernels/testing";
import { CpuBackend, Engine, GpuBackend, RowShards } from "@nr/autograd";
import { generateModel } from "./generate.js";
import { dequantizedCopy, loadDecoder, RowBlockProjection } from "./load.js";
import { makeBatch, type Decoder } from "./decoder.js";

const suite = gpuSuite("shard load", { beforeAll, afterAll }, { tmpDir: true });

// vocab 517 × hidden 24: 49.6 kB of f32 table against 4 kB shards → 13 shards (the last short)
const CONFIG = { architecture: "qwen2" as const, hiddenSize: 24, intermediateSize: 40, numLayers: 2, numHeads: 3, numKvHeads: 1, headDim: 8, vocabSize: 517 };
const SHARD_BYTES = 4096;
const ROWS = [[5, 516, 2, 40, 3, 8, 400, 41, 7], [11, 4, 300, 2], [1, 42, 43, 44, 45, 46]];

async function run(d: Decoder) {
  const e = d.engine;
  d.weights.layers[0].inputNorm.requiresGrad = true;
  return e.scope(async () => {
    const b = makeBatch(e, ROWS, { leftPad: true });
    const res = d.forward(b, { temperature: 0.8 });
    d.backward(res, Array.from(b.lossMask, (m, i) => (m ? Math.sin(i + 1) : 0)), Array.from(b.lossMask, (m, i) => (m ? 0.3 * Math.cos(i) : 0)));
    return { logp: await res.logp.read(), entropy: await res.entropy.read(), dNorm: await d.weights.layers[0].inputNorm.grad!.read(), mask: b.lossMask };
  });
}

function close(got: Float64Array, want: Float64Array, tol: number, what: string, mask?: Float64Array) {
  const scale = Math.max(1, ...Array.from(want, Math.abs));
  want.forEach((w, i) => {
    if (mask && !mask[i]) return;
    expect(Math.abs(got[i] - w), `${what}[${i}]: gpu ${got[i]} cpu ${w}`).toBeLessThanOrEqual(tol * scale);
  });
}

describe("loadDecoder with tables over the binding limit", () => {
  // 1024-byte bindings also split the linear weights (gate/up [40, 24] bf16 = 1920 B) into row blocks of 16 rows
  const cases = [
    { name: "tied f32 table, NF4 base", tied: true, opts: { quant: "nf4" as const }, shardBytes: SHARD_BYTES },
    { name: "untied f16 tables", tied: false, opts: { dtype: "f16" as const }, shardBytes: SHARD_BYTES },
    { name: "NF4 linears in row blocks", tied: true, opts: { quant: "nf4" as const }, shardBytes: 1024 },
    { name: "f16 linears in row blocks, untied", tied: false, opts: { dtype: "f16" as const }, shardBytes: 1024 },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      if (c.opts.dtype === "f16" && !suite.gpu.hasF16) return;
      const modelDir = join(suite.dir, c.name.replace(/\W+/g, "-"));
      await generateModel(modelDir, { ...CONFIG, tieWordEmbeddings: c.tied }, { seed: 3, dtype: "bf16", tokenizer: false, init: { std: 0.2 } });
      const e = new Engine(new GpuBackend(suite.gpu, { maxShardBytes: c.shardBytes }));
      const { decoder } = await loadDecoder(e, modelDir, c.opts);
      for (const t of [decoder.weights.embed, decoder.weights.lmHead]) {
        expect(t.storage).toBeInstanceOf(RowShards);
        const s = t.storage as RowShards;
        expect(s.shards.length).toBeGreaterThanOrEqual(c.opts.dtype === "f16" ? 6 : 12);
        for (const b of s.shards) expect(b.bytes).toBeLessThanOrEqual(c.shardBytes);
      }
      const gate = decoder.weights.layers[1].gate;
      if (c.shardBytes < 1920) {
        expect(gate).toBeInstanceOf(RowBlockProjection);
        expect((gate as RowBlockProjection).blocks.map((b) => b.outFeatures)).toEqual([16, 16, 8]);
      } else expect(gate).not.toBeInstanceOf(RowBlockProjection);
      expect(decoder.weights.lmHead === decoder.weights.embed).toBe(c.tied);
      // the float64 reference on the very weights the GPU holds (NF4 dequantised, f16 values)
      const ref = await dequantizedCopy(decoder, new Engine(new CpuBackend()));
      const got = await run(decoder);
      const want = await run(ref);
      // f16: the GPU rounds activations to f16 before each projection, the dense reference does not
      const tol = c.opts.dtype === "f16" ? 3e-2 : 2e-3;
      close(got.logp, want.logp, tol, "logp", want.mask);
      close(got.entropy, want.entropy, tol, "entropy", want.mask);
      close(got.dNorm, want.dNorm, 3 * tol, "d inputNorm[0]");
    });
  }
});
