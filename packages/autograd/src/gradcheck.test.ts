// Every op and a 2-layer decoder: tape gradients vs central finite differences, all in float64 (CPU backend).
import { describe, expect, it } from "vitest";
import { CpuBackend } from "./cpu.js";
import { Engine, type Tensor } from "./tensor.js";
import { add, attention, embedding, linear, lmHeadLogprob, mul, rmsnorm, rope, scale, swiglu } from "./ops.js";

const seed = process.env.NR_SEED ? Number(process.env.NR_SEED) : (Math.random() * 2 ** 31) >>> 0;
let s = seed;
const rand = () => ((s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0), s / 2 ** 32);
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
