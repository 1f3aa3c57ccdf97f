// The GPU backend runs the very op code the CPU gradchecks verify: here each op's forward and its input/parameter
// gradients on the GPU must match the float64 CPU backend on the same random inputs.
import { downloadNf4, quantizeNf4, releaseNf4 } from "@nr/kernels";
import { gpuSuite } from "@nr/kernels/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CpuBackend } from "./cpu.js";
import { GpuBackend } from "./gpu.js";
import { Engine, type Tensor } from "./tensor.js";
import { add, addLowRankInPlace, attention, concatColumns, embedding, linear, linearF16, lmHeadLogprob, mul, nf4Linear, rmsnorm, rope, scale, swiglu } from "./ops.js";

const t = gpuSuite("autograd gpu", { beforeAll, afterAll });
const { seed, rand } = t;

const randn = (n: number) => Array.from({ length: n }, () => (rand() * 2 - 1) * 1.7);

type Build = (e: Engine, p: Tensor[]) => Tensor[];

/** Run build on both backends with the same parameters and upstream gradients; compare outputs and grads. */
async function sameOnBoth(build: Build, shapes: number[][], rtol = 2e-4) {
  const init = shapes.map((sh) => randn(sh.reduce((a, b) => a * b, 1)));
  const results: { outs: Float64Array[]; grads: Float64Array[] }[] = [];
  let ups: number[][] | null = null;
  for (const backend of [new CpuBackend(), new GpuBackend(t.gpu)]) {
    const e = new Engine(backend);
    const params = shapes.map((sh, i) => e.tensor(init[i], sh, { requiresGrad: true, name: `p${i}` }));
    const outs = build(e, params);
    ups ??= outs.map((o) => randn(o.size));
    e.backward(outs.map((o, i) => [o, ups![i]] as [Tensor, number[]]));
    results.push({
      outs: await Promise.all(outs.map((o) => o.read())),
      grads: await Promise.all(params.map((p) => (p.grad ? p.grad.read() : Promise.resolve(new Float64Array(p.size))))),
    });
    for (const p of params) p.dispose();
  }
  const [cpu, gpuRes] = results;
  const check = (want: Float64Array, got: Float64Array, what: string) => {
    const scaleV = Math.max(1, ...Array.from(want, Math.abs));
    want.forEach((w, i) => expect(Math.abs(got[i] - w), `${what}[${i}]: gpu ${got[i]} cpu ${w} (seed ${seed})`).toBeLessThanOrEqual(rtol * scaleV));
  };
  cpu.outs.forEach((w, i) => check(w, gpuRes.outs[i], `output ${i}`));
  cpu.grads.forEach((w, i) => check(w, gpuRes.grads[i], `grad of p${i}`));
}

describe(`GPU backend = float64 CPU backend (seed ${seed})`, () => {
  it("linear with bias (forward, dx, dW, dbias)", () => sameOnBoth((e, [x, w, b]) => [linear(x, w, b)], [[5, 12], [7, 12], [7]]));
  it("add + scale with fan-out", () => sameOnBoth((e, [a, b]) => [add(scale(a, 0.5), b), add(a, a)], [[300], [300]]));
  it("mul", () => sameOnBoth((e, [a, b]) => [mul(a, b)], [[77], [77]]));
  it("concatColumns", () => sameOnBoth((e, [a, b, c]) => [concatColumns([a, b, c])], [[5, 3], [5, 8], [5, 1]]));
  it("rmsnorm", () => sameOnBoth((e, [x, w]) => [rmsnorm(x, w, 1e-6)], [[6, 40], [40]]));
  it("rope with per-token positions", () =>
    sameOnBoth((e, [x]) => [rope(x, e.tensor([0, 5, 1, 77], [4], { dtype: "u32" }), 10000)], [[4, 3, 16]]));
  it("swiglu", () => sameOnBoth((e, [g, u]) => [swiglu(g, u)], [[130], [130]]));
  it("causal GQA attention with left padding (forward, dq, dk, dv)", () =>
    sameOnBoth((e, [q, k, v]) => [attention(q, k, v, e.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [2, 5], { dtype: "u32" }))], [[2, 5, 4, 8], [2, 5, 2, 8], [2, 5, 2, 8]]));
  it("embedding with repeated ids", () => sameOnBoth((e, [t]) => [embedding(e.tensor([3, 1, 3, 0, 6], [5], { dtype: "u32" }), t)], [[7, 8]]));
  const headW = randn(50 * 16);
  it("fused LM head (logp, entropy) at temperature 0.8", () =>
    sameOnBoth((e, [h]) => {
      const W = e.tensor(headW, [50, 16]);
      const { logp, entropy } = lmHeadLogprob(h, W, e.tensor([1, 49, 0], [3], { dtype: "u32" }), 0.8);
      return [logp, entropy];
    }, [[3, 16]]));
  it("fused LM head with a trainable weight tied to the embedding (dW from both uses)", () =>
    sameOnBoth((e, [h, W]) => {
      const ids = e.tensor([7, 2, 7, 49], [4], { dtype: "u32" });
      const { logp, entropy } = lmHeadLogprob(add(h, embedding(ids, W)), W, e.tensor([1, 49, 0, 7], [4], { dtype: "u32" }), 0.9);
      return [logp, entropy];
    }, [[4, 16], [50, 16]]));
});

describe(`f16 weights on the GPU = the float64 CPU backend (seed ${seed})`, () => {
  // The CPU backend rounds x and W to their f16 values exactly as the GPU does (round to nearest even from f32), so
  // the two differ only by f32 accumulation: the same 2e-4 relative bound as the f32 ops. Shapes: K odd (scalar
  // loads), K % 4 == 0 with more rows (vec4 and tiled/broadcast paths).
  for (const [M, K, N] of [[7, 13, 9], [37, 64, 24], [3, 40, 130]]) {
    const w = randn(N * K);
    it(`linearF16 [${M}×${K}]·[${N}×${K}]ᵀ + bias (forward, dx, dbias)`, () =>
      sameOnBoth((e, [x, b]) => [linearF16(x, e.tensor(w, [N, K], { dtype: "f16" }), b)], [[M, K], [N]]));
  }
  const table = randn(50 * 16);
  it("embedding and fused LM head over one f16 table (tied, frozen)", () =>
    sameOnBoth((e, [h]) => {
      const W = e.tensor(table, [50, 16], { dtype: "f16" });
      const ids = e.tensor([7, 2, 7, 49], [4], { dtype: "u32" });
      const { logp, entropy } = lmHeadLogprob(add(h, embedding(ids, W)), W, e.tensor([1, 49, 0, 7], [4], { dtype: "u32" }), 0.9);
      return [logp, entropy];
    }, [[4, 16]]));
});

describe(`NF4 weights: the fused GPU matmul = bitsandbytes dequantisation + float64 matmul (seed ${seed})`, () => {
  // Quantised on the GPU (double-quantised scales, as QLoRA) and read back: the CPU backend multiplies by the
  // host form of the very same codes. K is a multiple of 8 (the fused kernels' need) but not of the block size 64;
  // M = 1 and 3 take the decode-size paths, 37 the tiled one.
  for (const [M, K, N] of [[1, 40, 19], [3, 24, 70], [37, 136, 45]]) {
    it(`nf4Linear [${M}×${K}]·deq([${N}×${K}])ᵀ + bias, and LoRA on top (forward, dx, dA, dB)`, async () => {
      const input = t.gpu.upload(Float32Array.from(randn(N * K)), "nf4.src");
      const w = quantizeNf4(t.gpu, { input, dtype: "f32", N, K, doubleQuant: true });
      const host = await downloadNf4(t.gpu, w);
      const bias = randn(N);
      await sameOnBoth((e, [x, A, B]) => {
        const W = e.backend instanceof GpuBackend ? w : host;
        const b = e.tensor(bias, [N]);
        return [nf4Linear(x, W, b), addLowRankInPlace(nf4Linear(x, W), linear(x, A), B, 0.5)];
      }, [[M, K], [4, K], [N, 4]]);
      releaseNf4(t.gpu, w);
      t.gpu.release(input);
    });
  }
});

describe("AdamW and clipping on the GPU = the float64 CPU backend", () => {
  it("three AdamW steps with weight decay, and the clipped grad norm", async () => {
    const init = randn(1000);
    const grads = [randn(1000), randn(1000), randn(1000)];
    const finals: Float64Array[] = [];
    const norms: number[] = [];
    for (const backend of [new CpuBackend(), new GpuBackend(t.gpu)]) {
      const { AdamW } = await import("./optim.js");
      const e = new Engine(backend);
      const p = e.tensor(init, [1000], { requiresGrad: true, name: "p" });
      const opt = new AdamW([p], { lr: 0.01, weightDecay: 0.1 });
      for (const g of grads) {
        opt.zeroGrad();
        e.backward([[p, g]]);
        norms.push(await opt.clipGradNorm(5));
        opt.update(0.01);
      }
      finals.push(await p.read());
    }
    // f32 state and updates: |Δ| per step ≤ lr, so a 1e-5 absolute bound leaves margin over f32 rounding.
    finals[0].forEach((w, i) => expect(Math.abs(finals[1][i] - w), `p[${i}] (seed ${seed})`).toBeLessThan(1e-5));
    for (let k = 0; k < 3; k++) expect(norms[3 + k]).toBeCloseTo(norms[k], 3);
  });
});
