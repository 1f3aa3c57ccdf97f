// The autograd decoder (the code that runs on the GPU) against the independent float64 reference forward
// (reference.ts), on generated Qwen2 / Qwen3 / Llama checkpoints with left padding.
import { describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CpuBackend, Engine } from "@nr/autograd";
import { generateModel } from "./generate.js";
import { loadModel } from "./checkpoint.js";
import { referenceForward } from "./reference.js";
import { loadDecoder } from "./load.js";
import { makeBatch } from "./decoder.js";

const ROWS = [
  [5, 9, 2, 17, 3, 8],
  [11, 4, 30],
];
const TEMPERATURE = 0.7;

/** logp of the next token and entropy at temperature T from reference logits, per position of the padded batch. */
function referenceLogpEntropy(logits: Float64Array, V: number, idsPadded: number[][], T: number) {
  const out: { logp: number; entropy: number }[] = [];
  idsPadded.forEach((row, b) =>
    row.forEach((_, t) => {
      const z = Array.from(logits.subarray((b * row.length + t) * V, (b * row.length + t + 1) * V), (x) => x / T);
      const mx = Math.max(...z);
      const lse = mx + Math.log(z.reduce((s, v) => s + Math.exp(v - mx), 0));
      const target = row[t + 1] ?? 0;
      const pz = z.reduce((s, v) => s + Math.exp(v - lse) * v, 0);
      out.push({ logp: z[target] - lse, entropy: lse - pz });
    }),
  );
  return out;
}

for (const architecture of ["qwen2", "qwen3", "llama"] as const) {
  describe(`decoder (${architecture}) vs float64 reference`, () => {
    it("per-token log-probs and entropies match with left padding", async () => {
      const dir = await mkdtemp(join(tmpdir(), `nr-dec-${architecture}-`));
      try {
        await generateModel(dir, { architecture, hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 4, numKvHeads: 2, vocabSize: 64, tieWordEmbeddings: architecture !== "llama" }, { seed: 7, dtype: "f32", tokenizer: false });
        const engine = new Engine(new CpuBackend());
        const { decoder, config } = await loadDecoder(engine, dir);
        const batch = makeBatch(engine, ROWS, { leftPad: true });
        const { logp, entropy } = decoder.forward(batch, { temperature: TEMPERATURE });
        const got = { logp: await logp.read(), entropy: await entropy.read() };

        const T = batch.T;
        const padded = ROWS.map((r) => [...new Array(T - r.length).fill(0), ...r]);
        const mask = ROWS.map((r) => [...new Array(T - r.length).fill(0), ...new Array(r.length).fill(1)]);
        const positions = ROWS.map((r) => [...new Array(T - r.length).fill(0), ...r.map((_, i) => i)]);
        const ref = referenceForward(await loadModel(dir), padded, { attentionMask: mask, positionIds: positions });
        const want = referenceLogpEntropy(ref.logits, config.vocabSize, padded, TEMPERATURE);
        let compared = 0;
        want.forEach((w, i) => {
          if (!batch.lossMask[i]) return; // padding and last positions have no target
          compared++;
          // Both are float64 implementations of the same math: agreement to 1e-9 is expected.
          expect(got.logp[i]).toBeCloseTo(w.logp, 9);
          expect(got.entropy[i]).toBeCloseTo(w.entropy, 9);
        });
        expect(compared).toBe(ROWS[0].length - 1 + ROWS[1].length - 1);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });
}
