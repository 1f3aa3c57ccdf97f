// The decoder on the WebGPU backend against the same decoder on the float64 CPU backend (itself checked against the
// independent reference in decoder.test.ts): per-token log-probs, entropies and trainable-parameter gradients, with
// gradient checkpointing off and on; checkpointing must lower the peak of the buffer pool.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { gpuSuite } from "@nr/kernels/testing";
import { CpuBackend, Engine, GpuBackend, type Tensor } from "@nr/autograd";
import { generateModel } from "./generate.js";
import { loadDecoder } from "./load.js";
import { makeBatch } from "./decoder.js";

const suite = gpuSuite("decoder gpu", { beforeAll, afterAll }, { tmpDir: true });

const ROWS = [
  [5, 9, 2, 17, 3, 8, 40, 41, 7],
  [11, 4, 30, 2],
  [1, 2, 3, 4, 5, 6],
];

async function run(backend: CpuBackend | GpuBackend, modelDir: string, checkpoint: boolean) {
  const e = new Engine(backend);
  // Full fine-tuning here (every weight trainable) so the gradients of every op reach a parameter.
  const { decoder } = await loadDecoder(e, modelDir, { trainable: true });
  decoder.weights.lmHead.requiresGrad = false; // the fused head trains no weight (frozen base head)
  const params: Tensor[] = [decoder.weights.embed, decoder.weights.finalNorm, ...decoder.weights.layers.flatMap((L) => [L.inputNorm, L.postAttentionNorm, ...[L.q, L.k, L.v, L.o, L.gate, L.up, L.down].flatMap((p) => {
    const d = p as unknown as { weight: Tensor; bias: Tensor | null };
    return d.bias ? [d.weight, d.bias] : [d.weight];
  })])];
  const b = makeBatch(e, ROWS, { leftPad: true });
  const res = decoder.forward(b, { temperature: 0.8, checkpoint });
  const logp = await res.logp.read();
  const entropy = await res.entropy.read();
  const gl = Array.from(b.lossMask, (m, i) => (m ? Math.sin(i + 1) : 0));
  const ge = Array.from(b.lossMask, (m, i) => (m ? 0.3 * Math.cos(i) : 0));
  decoder.backward(res, gl, ge);
  const grads = await Promise.all(params.map((p) => p.grad!.read()));
  return { logp, entropy, grads, mask: b.lossMask, names: params.map((p) => p.name) };
}

for (const architecture of ["qwen2", "qwen3"] as const) {
  describe(`decoder on the GPU (${architecture})`, () => {
    it("log-probs, entropies and parameter gradients match the float64 CPU backend; checkpointing changes nothing", async () => {
      const modelDir = join(suite.dir, architecture);
      await generateModel(modelDir, { architecture, hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, vocabSize: 48, tieWordEmbeddings: false }, { seed: 11, dtype: "f32", tokenizer: false, init: { std: 0.2 } });
      const cpu = await run(new CpuBackend(), modelDir, false);
      const g0 = await run(new GpuBackend(suite.gpu), modelDir, false);
      const g1 = await run(new GpuBackend(suite.gpu), modelDir, true);
      // f32 GPU vs float64: |Δlogp| ≤ 1e-4 (values ~ −4), gradients within 1e-3 of their tensor's max magnitude.
      cpu.logp.forEach((w, i) => cpu.mask[i] && expect(Math.abs(g0.logp[i] - w), `logp[${i}]`).toBeLessThan(1e-4));
      cpu.entropy.forEach((w, i) => cpu.mask[i] && expect(Math.abs(g0.entropy[i] - w), `entropy[${i}]`).toBeLessThan(1e-4));
      cpu.grads.forEach((gw, j) => {
        const scale = Math.max(1e-6, ...Array.from(gw, Math.abs));
        gw.forEach((w, i) => {
          expect(Math.abs(g0.grads[j][i] - w), `${cpu.names[j]}[${i}] gpu ${g0.grads[j][i]} cpu ${w}`).toBeLessThan(1e-3 * scale);
          expect(Math.abs(g1.grads[j][i] - g0.grads[j][i]), `checkpointed ${cpu.names[j]}[${i}]`).toBeLessThan(1e-5 * scale);
        });
      });
    });
  });
}

describe("gradient checkpointing on the GPU", () => {
  it("lowers the peak of GPU memory for a forward + backward (measured on the buffer pool)", async () => {
    const modelDir = join(suite.dir, "mem");
    await generateModel(modelDir, { architecture: "qwen2", hiddenSize: 64, intermediateSize: 256, numLayers: 4, numHeads: 4, numKvHeads: 2, vocabSize: 64, tieWordEmbeddings: true }, { seed: 1, dtype: "f32", tokenizer: false });
    const e = new Engine(new GpuBackend(suite.gpu));
    const { decoder } = await loadDecoder(e, modelDir);
    // Train only the final norm so the backward walks every layer (input grads) with few parameter grads.
    decoder.weights.finalNorm.requiresGrad = true;
    const rows = Array.from({ length: 4 }, (_, b) => Array.from({ length: 64 }, (_, t) => (b * 7 + t * 3) % 64));
    const peaks: number[] = [];
    for (const checkpoint of [false, true]) {
      suite.gpu.pool.trim();
      suite.gpu.pool.resetPeak();
      const base = suite.gpu.pool.getStats().allocatedBytes;
      await e.scope(async () => {
        const b = makeBatch(e, rows);
        const res = decoder.forward(b, { checkpoint });
        decoder.backward(res, Array.from(b.lossMask, (m) => -m));
        await decoder.weights.finalNorm.grad!.read();
      });
      decoder.weights.finalNorm.grad?.dispose();
      decoder.weights.finalNorm.grad = null;
      peaks.push(suite.gpu.pool.getStats().peakAllocatedBytes - base);
    }
    console.log(`pool peak for fwd+bwd (4 layers, 4×64 tokens): ${(peaks[0] / 2 ** 20).toFixed(2)} MiB without checkpointing, ${(peaks[1] / 2 ** 20).toFixed(2)} MiB with`);
    expect(peaks[1]).toBeLessThan(peaks[0] * 0.8);
  });
});

describe("Decoder.step (generation against a KV cache)", () => {
  // NF4: every projection through the fused NF4 matmul (on CPU adapters the broadcast GEMV of gemv-cpu.ts), against
  // the float64 forward of the same NF4 model on the CPU backend.
  for (const [architecture, quant] of [["qwen2", "none"], ["qwen3", "none"], ["qwen2", "nf4"]] as const) {
    it(`${architecture}${quant === "nf4" ? " NF4" : ""}: chunked prefill and decode steps at per-row positions equal the float64 full-sequence forward`, async () => {
      // Head dim 32: the subgroup-tile attention on CPU adapters, the row kernel elsewhere.
      const modelDir = join(suite.dir, `step-${architecture}-${quant}`);
      await generateModel(modelDir, { architecture, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 6, numKvHeads: 2, headDim: 32, vocabSize: 50, tieWordEmbeddings: false }, { seed: 5, dtype: "f32", tokenizer: false, init: { std: 0.2 } });
      const seqs = [[5, 9, 2, 17, 3, 8, 40, 41], [11, 4, 30, 2, 1, 6]];
      const cpuE = new Engine(new CpuBackend());
      const { decoder: cpuDec } = await loadDecoder(cpuE, modelDir, { quant });
      const H = 64, Tmax = 11;
      const want = await Promise.all(seqs.map((s) => cpuDec.hidden(makeBatch(cpuE, [s])).read()));
      const e = new Engine(new GpuBackend(suite.gpu));
      const { decoder } = await loadDecoder(e, modelDir, { quant });
      const caches = decoder.weights.layers.map(() => ({ k: suite.gpu.alloc(2 * Tmax * 2 * 32 * 4, "k"), v: suite.gpu.alloc(2 * Tmax * 2 * 32 * 4, "v") }));
      for (const c of caches) suite.gpu.fill32(c.k, 0x7fc00000), suite.gpu.fill32(c.v, 0x7fc00000); // unread slots stay NaN
      // Row 0: 3-token prefill, then a 2-token chunk, then single tokens. Row 1: 3 junk tokens, then restarts at
      // position 0 (its stale cache entries past its length must be ignored) and decodes one token per step.
      const plan: Array<{ T: number; starts: number[]; tokens: number[][] }> = [{ T: 3, starts: [0, 0], tokens: [seqs[0].slice(0, 3), [7, 7, 7]] }];
      plan.push({ T: 2, starts: [3, 0], tokens: [seqs[0].slice(3, 5), [seqs[1][0], 1]] });
      for (let i = 0; i < 3; i++) plan.push({ T: 1, starts: [5 + i, 1 + i], tokens: [[seqs[0][5 + i]], [seqs[1][1 + i]]] });
      let worst = 0;
      for (const st of plan) {
        const got = await e.scope(async () => e.noGrad(() => decoder.step({ tokens: st.tokens.flat(), starts: st.starts, B: 2, T: st.T, caches, Tmax })).read());
        st.starts.forEach((p, b) => {
          const n = b === 1 && st.T === 2 ? 1 : st.T; // row 1's second token of the chunk is junk past its restart
          if (b === 1 && st.tokens[1][0] === 7) return;
          for (let t = 0; t < n; t++) for (let d = 0; d < H; d++) {
            const err = Math.abs(got[(b * st.T + t) * H + d] - want[b][(p + t) * H + d]);
            worst = Math.max(worst, err);
            expect(err, `${architecture} row ${b} position ${p + t} dim ${d}`).toBeLessThan(2e-4);
          }
        });
      }
      console.log(`Decoder.step ${architecture}: worst |step − float64 forward| of the hidden states ${worst.toExponential(2)}`);
      for (const c of caches) suite.gpu.release(c.k, c.v);
    });
  }
});
