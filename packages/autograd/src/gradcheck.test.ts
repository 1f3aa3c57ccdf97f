// Every op and a 2-layer decoder: tape gradients vs central finite differences, all in float64 (CPU backend).
import { NF4_CODE, nf4QuantizeReference, type Nf4HostState } from "@nr/kernels";
import { freshSeed, rng } from "@nr/kernels/testing";
import { describe, expect, it } from "vitest";
import { CpuBackend } from "./cpu.js";
import { Engine, type Tensor } from "./tensor.js";
import { add, addLowRankInPlace, attention, embedding, linear, linearF16, lmHeadLogprob, mul, nf4Linear, rmsnorm, rope, scale, swiglu, concatColumns } from "./ops.js";

const seed = freshSeed();
const rand = rng(seed);
const randn = (n: number, sc = 1) => Array.from({ length: n }, () => sc * (rand() * 2 - 1) * Math.sqrt(3));

const H_FD = 1e-5;
// Central differences in float64 have truncation error O(h²·f''') ≈ 1e-10 and rounding error ≈ 1e-16/h ≈ 1e-11:
// 1e-6 relative (to the gradient's scale) is a bound with margin; a wrong chain rule is off by O(1).
const RTOL = 1e-6;

/**
 * Build a scalar L = Σ coef ∘ outputs through `forward`, run the tape, and compare each parameter's gradient
 * with central differences of L.
 */
async function gradcheck(build: (e: Engine, params: Tensor[]) => Tensor[], paramShapes: number[][], maxChecks = 40) {
  const e = new Engine(new CpuBackend());
  const params = paramShapes.map((sh, i) => e.tensor(randn(sh.reduce((a, b) => a * b, 1), 0.7), sh, { requiresGrad: true, name: `p${i}` }));
  const outs = build(e, params);
  const coefs = outs.map((o) => randn(o.size));
  const loss = async () => {
    const o2 = e.noGrad(() => build(e, params));
    let L = 0;
    for (let j = 0; j < o2.length; j++) {
      const vals = await o2[j].read();
      for (let i = 0; i < vals.length; i++) L += coefs[j][i] * vals[i];
    }
    return L;
  };
  e.backward(outs.map((o, j) => [o, coefs[j]] as [Tensor, number[]]));
  for (const p of params) {
    const data = p.storage as Float64Array;
    const grad = p.grad ? await p.grad.read() : new Float64Array(p.size);
    const scaleG = Math.max(1e-3, ...Array.from(grad, Math.abs));
    const idx = Array.from({ length: Math.min(maxChecks, p.size) }, (_, i) => (p.size <= maxChecks ? i : Math.floor(rand() * p.size)));
    for (const i of idx) {
      const keep = data[i];
      data[i] = keep + H_FD;
      const up = await loss();
      data[i] = keep - H_FD;
      const down = await loss();
      data[i] = keep;
      const fd = (up - down) / (2 * H_FD);
      expect(Math.abs(fd - grad[i]), `${p.name}[${i}] tape ${grad[i]} vs finite difference ${fd} (seed ${seed})`).toBeLessThan(RTOL * scaleG + 1e-9);
    }
  }
}

describe(`gradcheck (float64, seed ${seed})`, () => {
  it("linear with bias", () => gradcheck((e, [x, w, b]) => [linear(x, w, b)], [[3, 5], [4, 5], [4]]));
  it("add and scale (fan-out accumulates)", () => gradcheck((e, [a, b]) => [add(a, scale(a, -2.5)), add(a, b)], [[7], [7]]));
  it("mul (both sides, and a ∘ a)", () => gradcheck((e, [a, b]) => [mul(a, b), mul(a, a)], [[9], [9]]));
  it("concatColumns (a part used twice)", () => gradcheck((e, [a, b]) => [concatColumns([a, b, a])], [[3, 2], [3, 5]]));
  it("rmsnorm", () => gradcheck((e, [x, w]) => [rmsnorm(x, w, 1e-6)], [[3, 6], [6]]));
  it("rope", () =>
    gradcheck((e, [x]) => {
      const pos = e.tensor([0, 3, 17, 1000], [4], { dtype: "u32" });
      return [rope(x, pos, 10000)];
    }, [[4, 2, 8]]));
  it("swiglu", () => gradcheck((e, [g, u]) => [swiglu(g, u)], [[11], [11]]));
  it("attention (GQA 4:2, left padding, causal)", () =>
    gradcheck((e, [q, k, v]) => {
      const valid = e.tensor([0, 1, 1, 1, 1, 1, 1, 1], [2, 4], { dtype: "u32" });
      return [attention(q, k, v, valid)];
    }, [[2, 4, 4, 3], [2, 4, 2, 3], [2, 4, 2, 3]], 60));
  it("embedding (repeated ids accumulate)", () =>
    gradcheck((e, [table]) => {
      const ids = e.tensor([2, 0, 2, 5], [4], { dtype: "u32" });
      return [embedding(ids, table)];
    }, [[6, 3]]));
  const headW = randn(9 * 4);
  it("fused LM head: log-prob and entropy at temperature 0.7", () =>
    gradcheck((e, [h]) => {
      const W = e.tensor(headW, [9, 4]);
      const t = e.tensor([1, 8, 0], [3], { dtype: "u32" });
      const { logp, entropy } = lmHeadLogprob(h, W, t, 0.7);
      return [logp, entropy];
    }, [[3, 4]]));
  it("fused LM head with a trainable weight, tied to the embedding (pre-training)", () =>
    gradcheck((e, [h, W]) => {
      const ids = e.tensor([3, 1, 3], [3], { dtype: "u32" });
      const t = e.tensor([1, 8, 0], [3], { dtype: "u32" });
      const { logp, entropy } = lmHeadLogprob(add(h, embedding(ids, W)), W, t, 0.9);
      return [logp, entropy];
    }, [[3, 4], [9, 4]]));
});

/** A host NF4 weight [N, K] (bitsandbytes' quantisation on the host, one f32 absmax per block of 64). */
function hostNf4(N: number, K: number): Nf4HostState {
  const q = nf4QuantizeReference(randn(N * K, 0.8), { blocksize: 64, doubleQuant: false });
  return { shape: [N, K], blocksize: 64, dtype: "float32", packed: q.packed, quantMap: NF4_CODE, absmax: q.absmax, nested: null };
}

describe(`NF4 base and LoRA's in-place low-rank term (float64, seed ${seed})`, () => {
  // K = 24 (a multiple of 8, not of the block size): blocks straddle rows; N·K = 312 leaves a partial last block.
  const W = hostNf4(13, 24);
  const bias = randn(13, 0.5);
  it("nf4Linear with a frozen bias: dx by finite differences", () =>
    gradcheck((e, [x]) => [nf4Linear(x, W, e.tensor(bias, [13]))], [[5, 24]]));
  it("addLowRankInPlace over a trainable dense base: dx (both paths), dW, dA, dB", () =>
    gradcheck((e, [x, w, A, B]) => [addLowRankInPlace(linear(x, w), linear(x, A), B, 0.75)], [[3, 6], [5, 6], [2, 6], [5, 2]]));
  it("addLowRankInPlace over an NF4 base (QLoRA): dx (both paths), dA, dB", () =>
    gradcheck((e, [x, A, B]) => [addLowRankInPlace(nf4Linear(x, W), linear(x, A), B, 2)], [[4, 24], [3, 24], [13, 3]]));
  it("nf4Linear refuses a trainable bias, a wrong width and GPU buffers", () => {
    const e = new Engine(new CpuBackend());
    const x = e.tensor(randn(2 * 24), [2, 24]);
    expect(() => nf4Linear(x, W, e.tensor(bias, [13], { requiresGrad: true, name: "b" }))).toThrow(/bias "b" of a frozen NF4 base/);
    expect(() => nf4Linear(e.tensor(randn(2 * 16), [2, 16]), W)).toThrow(/x has 16 features but the NF4 weight is \[13, 24\]/);
    const gpuForm = { N: 13, K: 24 } as unknown as Parameters<typeof nf4Linear>[1];
    expect(() => nf4Linear(x, gpuForm)).toThrow(/CPU backend takes an NF4 weight in its host form/);
  });
});

/**
 * The f16 value of x, written independently of the backends (which use @nr/kernels' bit conversion): 11 significant
 * bits with ties to even for normal values, a fixed 2⁻²⁴ spacing below 2⁻¹⁴, ±Inf from 65520 on.
 */
function f16Value(x: number): number {
  x = Math.fround(x); // the GPU rounds its f32 storage, so the reference starts from the f32 value too
  if (x === 0 || !Number.isFinite(x)) return x;
  const e = Math.max(Math.floor(Math.log2(Math.abs(x))), -14);
  const ulp = 2 ** (e - 10);
  const q = x / ulp;
  let r = Math.round(q);
  if (Math.abs(q - Math.trunc(q)) === 0.5) r = 2 * Math.round(q / 2); // ties to even
  const v = r * ulp;
  return Math.abs(v) >= 65520 ? Math.sign(v) * Infinity : v;
}

describe(`linearF16: frozen f16 weight, activations cast to f16 (float64, seed ${seed})`, () => {
  // Awkward shapes: K = 13 (odd), N = 6, M = 5; values spread so that the f16 rounding is visible.
  const [M, K, N] = [5, 13, 6];
  it("forward = round_f16(x)·round_f16(W)ᵀ + b; dx = dy·W (straight through the cast), dbias by finite differences", async () => {
    const e = new Engine(new CpuBackend());
    const xv = randn(M * K, 1.3), wv = randn(N * K, 0.9), bv = randn(N, 0.5);
    const x = e.tensor(xv, [M, K], { requiresGrad: true, name: "x" });
    const W = e.tensor(wv, [N, K], { dtype: "f16", name: "W" });
    const b = e.tensor(bv, [N], { requiresGrad: true, name: "b" });
    // the f16 tensor holds the f16 values
    (await W.read()).forEach((w, i) => expect(w, `W[${i}]`).toBe(f16Value(wv[i])));
    const y = linearF16(x, W, b);
    const yv = await y.read();
    let maxRounding = 0;
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let want = bv[n], exact = bv[n];
        for (let k = 0; k < K; k++) {
          want += f16Value(xv[m * K + k]) * f16Value(wv[n * K + k]);
          exact += xv[m * K + k] * wv[n * K + k];
        }
        expect(Math.abs(yv[m * N + n] - want), `y[${m},${n}] (seed ${seed})`).toBeLessThan(1e-12);
        maxRounding = Math.max(maxRounding, Math.abs(want - exact));
      }
    expect(maxRounding).toBeGreaterThan(1e-5); // the activations and weights really are rounded
    const dy = randn(M * N);
    e.backward([[y, dy]]);
    const dx = await x.grad!.read();
    for (let m = 0; m < M; m++)
      for (let k = 0; k < K; k++) {
        let want = 0;
        for (let n = 0; n < N; n++) want += dy[m * N + n] * f16Value(wv[n * K + k]);
        expect(Math.abs(dx[m * K + k] - want), `dx[${m},${k}] (seed ${seed})`).toBeLessThan(1e-12);
      }
    expect(W.grad).toBeNull();
    // the bias enters linearly: central differences of L = Σ dy∘y are exact up to float64 rounding
    const db = await b.grad!.read();
    const data = b.storage as Float64Array;
    for (let n = 0; n < N; n++) {
      const L = async () => {
        const out = await e.noGrad(() => linearF16(x, W, b)).read();
        return out.reduce((s, v, i) => s + v * dy[i], 0);
      };
      const keep = data[n];
      data[n] = keep + H_FD;
      const up = await L();
      data[n] = keep - H_FD;
      const down = await L();
      data[n] = keep;
      expect(Math.abs((up - down) / (2 * H_FD) - db[n]), `dbias[${n}]`).toBeLessThan(RTOL * Math.max(1, Math.abs(db[n])));
    }
  });

  it("is linear's gradient on the f16 values, inside a composed graph (rmsnorm → linearF16 → swiglu)", async () => {
    // The straight-through backward makes dx exactly the gradient of the same graph with an f32 copy of W's f16
    // values and no activation rounding: compare the two tapes.
    const xv = randn(4 * 8), nv = randn(8, 0.3).map((v) => 1 + v), w1 = randn(6 * 8, 0.5), w2 = randn(6 * 8, 0.5);
    const dy = randn(24);
    const grads: Float64Array[][] = [];
    for (const f16 of [true, false]) {
      const e = new Engine(new CpuBackend());
      const x = e.tensor(xv, [4, 8], { requiresGrad: true });
      const nw = e.tensor(nv, [8], { requiresGrad: true });
      const proj = (w: number[]) => (h: Tensor) => (f16 ? linearF16(h, e.tensor(w, [6, 8], { dtype: "f16" })) : linear(h, e.tensor(w.map(f16Value), [6, 8])));
      const h = rmsnorm(x, nw, 1e-6);
      const y = swiglu(proj(w1)(h), proj(w2)(h));
      e.backward([[y, dy]]);
      grads.push([await x.grad!.read(), await nw.grad!.read()]);
    }
    // swiglu reads the forward values, which differ by the activation rounding: relative 1e-2 leaves room for it
    // while a wrong chain rule (e.g. a transposed W) is off by O(1)
    grads[0].forEach((g, j) => {
      const sc = Math.max(...Array.from(grads[1][j], Math.abs));
      g.forEach((v, i) => expect(Math.abs(v - grads[1][j][i]), `grad ${j}[${i}]`).toBeLessThan(1e-2 * sc));
    });
  });

  it("refuses a trainable or non-f16 weight with the reason", () => {
    const e = new Engine(new CpuBackend());
    const x = e.tensor(randn(6), [2, 3]);
    expect(() => linearF16(x, e.tensor(randn(6), [2, 3], { dtype: "f16", requiresGrad: true, name: "q_proj" }))).toThrow(/"q_proj" is a frozen base/);
    expect(() => linearF16(x, e.tensor(randn(6), [2, 3]))).toThrow(/W must be an f16 tensor/);
    expect(() => linearF16(x, e.tensor(randn(8), [2, 4], { dtype: "f16" }))).toThrow(/x has 3 features/);
  });
});

/** A 2-layer Qwen2-shaped decoder built from the ops: the shape @nr/model's GPU decoder follows. */
function tinyDecoder(e: Engine, p: Tensor[], opts: { checkpoint: boolean }) {
  const [B, T, Hd, Hq, Hkv, D, I] = [2, 3, 8, 2, 1, 4, 12];
  const [embed, ...rest] = p;
  const ids = e.tensor([1, 4, 2, 0, 3, 3], [B * T], { dtype: "u32" });
  const pos = e.tensor([0, 1, 2, 0, 0, 1], [B * T], { dtype: "u32" }); // second row left-padded by one
  const valid = e.tensor([1, 1, 1, 0, 1, 1], [B, T], { dtype: "u32" });
  let x = embedding(ids, embed);
  for (let l = 0; l < 2; l++) {
    const [ln1, wq, bq, wk, bk, wv, bv, wo, ln2, wg, wu, wd] = rest.slice(l * 12, l * 12 + 12);
    const layer = (xin: Tensor) => {
      const h = rmsnorm(xin, ln1, 1e-6);
      const q = rope(e.view(linear(h, wq, bq), [B, T, Hq, D]), pos, 10000);
      const k = rope(e.view(linear(h, wk, bk), [B, T, Hkv, D]), pos, 10000);
      const v = e.view(linear(h, wv, bv), [B, T, Hkv, D]);
      const a = e.view(attention(q, k, v, valid), [B * T, Hq * D]);
      const x1 = add(xin, linear(a, wo));
      const h2 = rmsnorm(x1, ln2, 1e-6);
      return add(x1, linear(swiglu(linear(h2, wg), linear(h2, wu)), wd));
    };
    const xin = x; // the recompute closure must see this layer's input, not the loop variable
    x = opts.checkpoint ? e.checkpoint(() => [layer(xin)])[0] : layer(xin);
  }
  const finalNorm = rest[24];
  const targets = e.tensor([4, 2, 1, 1, 3, 0], [B * T], { dtype: "u32" });
  const { logp, entropy } = lmHeadLogprob(rmsnorm(x, finalNorm, 1e-6), e.tensor(LM_HEAD, [5, 8]), targets, 0.8);
  void Hd; void I;
  return [logp, entropy];
}

const LM_HEAD = randn(5 * 8); // untied, frozen

function tinyShapes(): number[][] {
  const [Hd, Hq, Hkv, D, I, V] = [8, 2, 1, 4, 12, 5];
  const layer = [[Hd], [Hq * D, Hd], [Hq * D], [Hkv * D, Hd], [Hkv * D], [Hkv * D, Hd], [Hkv * D], [Hd, Hq * D], [Hd], [I, Hd], [I, Hd], [Hd, I]];
  return [[V, Hd], ...layer, ...layer, [Hd]];
}

describe(`2-layer decoder gradients (float64, seed ${seed})`, () => {
  it("every parameter matches finite differences", () => gradcheck((e, p) => tinyDecoder(e, p, { checkpoint: false }), tinyShapes(), 12));

  it("gradient checkpointing on and off give the same gradients", async () => {
    const grads: Float64Array[][] = [];
    const init = tinyShapes().map((sh) => randn(sh.reduce((a, b) => a * b, 1), 0.7));
    for (const checkpoint of [false, true]) {
      const e = new Engine(new CpuBackend());
      const params = tinyShapes().map((sh, i) => e.tensor(init[i], sh, { requiresGrad: true }));
      const [logp, entropy] = tinyDecoder(e, params, { checkpoint });
      const tapeLength = e.tapeLength;
      e.backward([[logp, [1, -1, 0.5, 2, 0, 1]], [entropy, [0.3, 0, 0, 1, -1, 0]]]);
      const missing = params.filter((p) => !p.grad).map((_, i) => i);
      expect(missing, `parameters without a gradient (checkpoint ${checkpoint})`).toEqual([]);
      grads.push(await Promise.all(params.map((p) => p.grad!.read())));
      if (checkpoint) expect(tapeLength).toBeLessThan(10); // the layers' internals were not recorded
    }
    grads[0].forEach((g, i) => g.forEach((v, j) => expect(grads[1][i][j]).toBeCloseTo(v, 12)));
  });
});

describe("engine", () => {
  it("scope frees what it does not return, noGrad records nothing", async () => {
    const e = new Engine(new CpuBackend());
    const w = e.tensor([1, 2, 3, 4], [2, 2], { requiresGrad: true });
    const kept = e.scope(() => {
      const x = e.tensor([1, 1], [1, 2]);
      const y = linear(x, w);
      const tmp = scale(y, 2);
      void tmp;
      expect(e.tapeLength).toBe(2);
      return y;
    });
    expect(kept.isDisposed).toBe(false);
    e.clearTape();
    e.noGrad(() => linear(kept, w));
    expect(e.tapeLength).toBe(0);
  });
  it("errors name the problem", () => {
    const e = new Engine(new CpuBackend());
    expect(() => linear(e.tensor([1, 2, 3], [1, 3]), e.tensor([1, 2], [1, 2]))).toThrow(/x has 3 features but W is \[1,2\]/);
    expect(() => e.backward(e.tensor([1], [1]))).toThrow(/does not depend on any trainable tensor/);
  });
});
