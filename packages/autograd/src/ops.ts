// Differentiable ops. Each op runs its forward through the backend and, right next to it, records the backward
// closure that accumulates into its inputs' gradients (only for inputs that require them).
import { nf4Shape, type Nf4Operand } from "./backend.js";
import type { Tensor } from "./tensor.js";

function same(a: Tensor, b: Tensor, op: string) {
  if (a.size !== b.size) throw new Error(`${op}: shapes [${a.shape}] and [${b.shape}] differ`);
}

/** y = x·Wᵀ (+ bias): x [M, K], W [N, K] (nn.Linear layout), bias [N]. */
export function linear(x: Tensor, W: Tensor, bias?: Tensor | null): Tensor {
  const e = x.engine, B = e.backend;
  const K = x.shape[x.shape.length - 1];
  const M = x.size / K;
  const [N, K2] = W.shape;
  if (K !== K2) throw new Error(`linear: x has ${K} features but W is [${W.shape}] (expects [N, ${K}])`);
  if (bias && bias.size !== N) throw new Error(`linear: bias has ${bias.size} elements, W has ${N} rows`);
  const y = e.empty([...x.shape.slice(0, -1), N], "f32", "linear");
  // An f32 bias rides in the matmul's store (one dispatch fewer per biased projection: decode is dispatch-bound).
  const fused = bias?.dtype === "f32";
  B.matmul(x.storage, W.storage, y.storage, { M, N, K, transB: true, bias: fused ? bias.storage : undefined });
  if (bias && !fused) B.biasAdd(y.storage, bias.storage, M, N);
  if (e.needsGrad(x, W, bias)) {
    y.requiresGrad = true;
    e.record("linear", () => {
      if (!y.grad) return;
      const dy = y.grad.storage;
      if (x.requiresGrad) B.matmul(dy, W.storage, e.gradOf(x).storage, { M, N: K, K: N, accumulate: true }); // dx += dy·W
      if (W.requiresGrad) B.matmul(dy, x.storage, e.gradOf(W).storage, { M: N, N: K, K: M, transA: true, accumulate: true }); // dW += dyᵀ·x
      if (bias?.requiresGrad) B.biasGrad(dy, e.gradOf(bias).storage, M, N);
    });
  }
  return y;
}

/**
 * y = cast_f16(x)·Wᵀ (+ bias) over a frozen f16 weight W [N, K] (nn.Linear layout): the activations are cast to
 * f16 right before the matmul (the f16 path of a `torch_dtype=float16` base), products accumulate in f32, y and the
 * bias are f32. An activation beyond the f16 range becomes ±Inf (as `tensor.half()`; never clamped), so an overflow
 * shows up as a non-finite loss. Backward (straight through the cast): dx += dy·W with dy kept in f32 and W widened to f32 in a
 * transient buffer the size of W (released at once) — no f16 rounding or underflow of small gradients, so no loss
 * scaling is needed; dbias += Σ dy when the bias is trainable. W itself gets no gradient (a frozen base).
 * On the float64 CPU backend the same function: x rounded to its f16 value, products in float64.
 */
export function linearF16(x: Tensor, W: Tensor, bias?: Tensor | null): Tensor {
  const e = x.engine, B = e.backend;
  const K = x.shape[x.shape.length - 1];
  const M = x.size / K;
  const [N, K2] = W.shape;
  if (W.dtype !== "f16") throw new Error(`linearF16: W must be an f16 tensor (got ${W.dtype}); use linear for f32 weights`);
  if (x.dtype !== "f32") throw new Error(`linearF16: x must be f32 (got ${x.dtype}); it is cast to f16 inside`);
  if (W.requiresGrad) throw new Error(`linearF16: the f16 weight "${W.name}" is a frozen base and cannot require a gradient; train LoRA adapters on it, or load the weights in f32 to train them`);
  if (K !== K2) throw new Error(`linearF16: x has ${K} features but W is [${W.shape}] (expects [N, ${K}])`);
  if (bias && bias.size !== N) throw new Error(`linearF16: bias has ${bias.size} elements, W has ${N} rows`);
  const y = e.empty([...x.shape.slice(0, -1), N], "f32", "linearF16");
  const x16 = e.empty(x.shape, "f16", "linearF16.x16");
  B.cast(x.storage, x16.storage, x.size, "f32", "f16");
  const fused = bias?.dtype === "f32";
  B.matmul(x16.storage, W.storage, y.storage, { M, N, K, transB: true, dtype: "f16", bias: fused ? bias.storage : undefined });
  // Released now, reused only by work recorded later (the queue runs in order): no [M, K] f16 copy is kept.
  x16.dispose();
  if (bias && !fused) B.biasAdd(y.storage, bias.storage, M, N);
  if (e.needsGrad(x, bias)) {
    y.requiresGrad = true;
    e.record("linearF16", () => {
      if (!y.grad) return;
      const dy = y.grad.storage;
      if (x.requiresGrad) {
        const w32 = e.empty(W.shape, "f32", "linearF16.w32");
        B.cast(W.storage, w32.storage, W.size, "f16", "f32");
        B.matmul(dy, w32.storage, e.gradOf(x).storage, { M, N: K, K: N, accumulate: true }); // dx += dy·W
        w32.dispose();
      }
      if (bias?.requiresGrad) B.biasGrad(dy, e.gradOf(bias).storage, M, N);
    });
  }
  return y;
}

/**
 * y = x·deq(W)ᵀ (+ bias) over a frozen NF4 weight W [N, K] (QLoRA's base): the backend's fused NF4 product, so W is
 * never widened in full. Backward: dx += dy·deq(W); W gets no gradient, and neither may the bias (a frozen base).
 */
export function nf4Linear(x: Tensor, W: Nf4Operand, bias?: Tensor | null): Tensor {
  const e = x.engine, B = e.backend;
  const [N, K] = nf4Shape(W);
  const k = x.shape[x.shape.length - 1];
  if (k !== K) throw new Error(`nf4Linear: x has ${k} features but the NF4 weight is [${N}, ${K}]`);
  if (x.dtype !== "f32") throw new Error(`nf4Linear: x must be f32 (got ${x.dtype})`);
  if (bias && bias.size !== N) throw new Error(`nf4Linear: bias has ${bias.size} elements, the weight has ${N} rows`);
  if (bias?.requiresGrad) throw new Error(`nf4Linear: the bias "${bias.name}" of a frozen NF4 base cannot require a gradient`);
  const M = x.size / K;
  const y = e.empty([...x.shape.slice(0, -1), N], "f32", "nf4linear");
  B.nf4Matmul(x.storage, W, y.storage, { M, mode: "forward" });
  if (bias) B.biasAdd(y.storage, bias.storage, M, N);
  if (e.needsGrad(x)) {
    y.requiresGrad = true;
    e.record("nf4linear", () => {
      if (y.grad) B.nf4Matmul(y.grad.storage, W, e.gradOf(x).storage, { M, mode: "inputGrad", accumulate: true });
    });
  }
  return y;
}

/**
 * y += s·h·Bᵀ in place (LoRA's low-rank term added into the base projection's fresh output y [M, N]; h = x·Aᵀ
 * [M, r], B [N, r]). Backward: dh += s·dy·B, dB += s·dyᵀ·h. Nothing [M, N]-sized is allocated: only h is kept. In
 * place is sound only while nothing recorded so far reads y's values in its backward (a linear layer's backward
 * reads its output's gradient, never its values), and y's gradient is also the sum's. Returns y.
 */
export function addLowRankInPlace(y: Tensor, h: Tensor, B: Tensor, s: number): Tensor {
  const e = y.engine, be = e.backend;
  const [N, r] = B.shape;
  const M = y.size / N;
  if (!Number.isInteger(M) || y.shape[y.shape.length - 1] !== N) throw new Error(`addLowRankInPlace: y is [${y.shape}] but B is [${B.shape}] (expects y [..., ${N}])`);
  if (h.size !== M * r) throw new Error(`addLowRankInPlace: h has ${h.size} elements, expected [${M}, ${r}]`);
  be.matmul(h.storage, B.storage, y.storage, { M, N, K: r, transB: true, alpha: s, accumulate: true });
  if (e.needsGrad(h, B)) {
    y.requiresGrad = true;
    e.record("lora", () => {
      if (!y.grad) return;
      if (h.requiresGrad) be.matmul(y.grad.storage, B.storage, e.gradOf(h).storage, { M, N: r, K: N, alpha: s, accumulate: true });
      if (B.requiresGrad) be.matmul(y.grad.storage, h.storage, e.gradOf(B).storage, { M: N, N: r, K: M, transA: true, alpha: s, accumulate: true });
    });
  }
  return y;
}

/** a + b (same shape). */
export function add(a: Tensor, b: Tensor): Tensor {
  same(a, b, "add");
  const e = a.engine;
  const y = e.empty(a.shape, "f32", "add");
  e.backend.add(a.storage, b.storage, y.storage, a.size);
  if (e.needsGrad(a, b)) {
    y.requiresGrad = true;
    e.record("add", () => {
      if (!y.grad) return;
      if (a.requiresGrad) e.backend.axpy(1, y.grad.storage, e.gradOf(a).storage, a.size);
      if (b.requiresGrad) e.backend.axpy(1, y.grad.storage, e.gradOf(b).storage, b.size);
    });
  }
  return y;
}

/** a ∘ b (same shape); e.g. a dropout mask. */
export function mul(a: Tensor, b: Tensor): Tensor {
  same(a, b, "mul");
  const e = a.engine, B = e.backend;
  const y = e.empty(a.shape, "f32", "mul");
  B.mul(a.storage, b.storage, y.storage, a.size);
  if (e.needsGrad(a, b)) {
    y.requiresGrad = true;
    e.record("mul", () => {
      if (!y.grad) return;
      const t = e.empty(a.shape, "f32");
      if (a.requiresGrad) {
        B.mul(y.grad.storage, b.storage, t.storage, a.size);
        B.axpy(1, t.storage, e.gradOf(a).storage, a.size);
      }
      if (b.requiresGrad) {
        B.mul(y.grad.storage, a.storage, t.storage, a.size);
        B.axpy(1, t.storage, e.gradOf(b).storage, b.size);
      }
      t.dispose();
    });
  }
  return y;
}

/** alpha·x. */
export function scale(x: Tensor, alpha: number): Tensor {
  const e = x.engine;
  const y = e.zeros(x.shape, "scale");
  e.backend.axpy(alpha, x.storage, y.storage, x.size);
  if (e.needsGrad(x)) {
    y.requiresGrad = true;
    e.record("scale", () => {
      if (y.grad) e.backend.axpy(alpha, y.grad.storage, e.gradOf(x).storage, x.size);
    });
  }
  return y;
}

/** RMSNorm over the last dimension with weight w [H]. */
export function rmsnorm(x: Tensor, w: Tensor, eps: number): Tensor {
  const e = x.engine, B = e.backend;
  const H = x.shape[x.shape.length - 1];
  if (w.size !== H) throw new Error(`rmsnorm: weight has ${w.size} elements, rows have ${H}`);
  const rows = x.size / H;
  const y = e.empty(x.shape, "f32", "rmsnorm");
  const rstd = e.empty([rows], "f32", "rmsnorm.rstd");
  B.rmsnorm(x.storage, w.storage, y.storage, rstd.storage, rows, H, eps);
  if (e.needsGrad(x, w)) {
    y.requiresGrad = true;
    e.record("rmsnorm", () => {
      if (!y.grad) return;
      const dx = e.empty(x.shape, "f32");
      const dw = w.requiresGrad ? e.gradOf(w) : e.zeros([H]);
      B.rmsnormBackward(y.grad.storage, x.storage, w.storage, rstd.storage, dx.storage, dw.storage, rows, H);
      if (x.requiresGrad) B.axpy(1, dx.storage, e.gradOf(x).storage, x.size);
      dx.dispose();
      if (!w.requiresGrad) dw.dispose();
    });
  }
  return y;
}

/** Rotate-half RoPE on x [..., heads, D] with one position per token (pos: u32 tensor of tokens). */
export function rope(x: Tensor, pos: Tensor, theta: number): Tensor {
  const e = x.engine, B = e.backend;
  const D = x.shape[x.shape.length - 1];
  const heads = x.shape[x.shape.length - 2];
  const tokens = x.size / (heads * D);
  if (pos.size !== tokens) throw new Error(`rope: ${pos.size} positions for ${tokens} tokens`);
  const y = e.empty(x.shape, "f32", "rope");
  B.rope(x.storage, pos.storage, y.storage, tokens, heads, D, theta, false);
  if (e.needsGrad(x)) {
    y.requiresGrad = true;
    e.record("rope", () => {
      if (!y.grad) return;
      const dx = e.empty(x.shape, "f32"); // the rotation is orthogonal: its adjoint rotates by −angle
      B.rope(y.grad.storage, pos.storage, dx.storage, tokens, heads, D, theta, true);
      B.axpy(1, dx.storage, e.gradOf(x).storage, x.size);
      dx.dispose();
    });
  }
  return y;
}

/** silu(gate)·up. */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  same(gate, up, "swiglu");
  const e = gate.engine, B = e.backend;
  const h = e.empty(gate.shape, "f32", "swiglu");
  B.swiglu(gate.storage, up.storage, h.storage, gate.size);
  if (e.needsGrad(gate, up)) {
    h.requiresGrad = true;
    e.record("swiglu", () => {
      if (!h.grad) return;
      const dg = e.empty(gate.shape, "f32");
      const du = e.empty(up.shape, "f32");
      B.swigluBackward(h.grad.storage, gate.storage, up.storage, dg.storage, du.storage, gate.size);
      if (gate.requiresGrad) B.axpy(1, dg.storage, e.gradOf(gate).storage, gate.size);
      if (up.requiresGrad) B.axpy(1, du.storage, e.gradOf(up).storage, up.size);
      dg.dispose();
      du.dispose();
    });
  }
  return h;
}

/** Causal GQA attention. q [B,T,Hq,D], k/v [B,T,Hkv,D], keyValid u32 [B,T]. Returns [B,T,Hq,D]. */
export function attention(q: Tensor, k: Tensor, v: Tensor, keyValid: Tensor, scale?: number): Tensor {
  const e = q.engine, Bk = e.backend;
  const [B, T, Hq, D] = q.shape;
  const Hkv = k.shape[2];
  if (Hq % Hkv !== 0) throw new Error(`attention: ${Hq} query heads are not a multiple of ${Hkv} key/value heads`);
  if (keyValid.size !== B * T) throw new Error(`attention: keyValid has ${keyValid.size} entries, expected B·T = ${B * T}`);
  const dims = { B, T, Hq, Hkv, D, scale: scale ?? 1 / Math.sqrt(D) };
  const o = e.empty(q.shape, "f32", "attention");
  const lse = e.empty([B, Hq, T], "f32", "attention.lse");
  Bk.attention(q.storage, k.storage, v.storage, keyValid.storage, o.storage, lse.storage, dims);
  if (e.needsGrad(q, k, v)) {
    o.requiresGrad = true;
    e.record("attention", () => {
      if (!o.grad) return;
      const dq = e.empty(q.shape), dk = e.empty(k.shape), dv = e.empty(v.shape);
      Bk.attentionBackward(o.grad.storage, q.storage, k.storage, v.storage, keyValid.storage, o.storage, lse.storage, dq.storage, dk.storage, dv.storage, dims);
      if (q.requiresGrad) Bk.axpy(1, dq.storage, e.gradOf(q).storage, q.size);
      if (k.requiresGrad) Bk.axpy(1, dk.storage, e.gradOf(k).storage, k.size);
      if (v.requiresGrad) Bk.axpy(1, dv.storage, e.gradOf(v).storage, v.size);
      dq.dispose(); dk.dispose(); dv.dispose();
    });
  }
  return o;
}

/**
 * Column blocks side by side: parts [..., n_i] → [..., Σ n_i] (the outputs of a linear layer held as row blocks of
 * its weight). Backward hands each part its columns of the gradient.
 */
export function concatColumns(parts: Tensor[]): Tensor {
  const e = parts[0].engine, B = e.backend;
  const lead = parts[0].shape.slice(0, -1);
  const M = parts[0].size / parts[0].shape[parts[0].shape.length - 1];
  const widths = parts.map((p) => p.shape[p.shape.length - 1]);
  if (parts.some((p, i) => p.size !== M * widths[i] || p.dtype !== "f32")) throw new Error("concatColumns: parts must be f32 with the same leading dimensions");
  const N = widths.reduce((a, b) => a + b, 0);
  const y = e.empty([...lead, N], "f32", "concatColumns");
  const offsets = widths.map((_, i) => widths.slice(0, i).reduce((a, b) => a + b, 0));
  parts.forEach((p, i) => B.copyColumns(p.storage, y.storage, M, widths[i], N, 0, offsets[i], widths[i], false));
  if (e.needsGrad(...parts)) {
    y.requiresGrad = true;
    e.record("concatColumns", () => {
      if (!y.grad) return;
      parts.forEach((p, i) => p.requiresGrad && B.copyColumns(y.grad!.storage, e.gradOf(p).storage, M, N, widths[i], offsets[i], 0, widths[i], true));
    });
  }
  return y;
}

/** Rows of table [V, H] picked by ids (u32 [M]) → [M, H]. */
export function embedding(ids: Tensor, table: Tensor): Tensor {
  const e = table.engine, B = e.backend;
  const [V, H] = table.shape;
  const M = ids.size;
  if (table.dtype === "u32") throw new Error("embedding: the table must be f32 or f16");
  if (table.dtype === "f16" && table.requiresGrad) throw new Error(`embedding: the f16 table "${table.name}" is frozen and cannot require a gradient`);
  const y = e.empty([...ids.shape, H], "f32", "embedding");
  B.embedding(ids.storage, table.storage, y.storage, M, H, table.dtype === "f16" ? "f16" : "f32");
  if (e.needsGrad(table)) {
    y.requiresGrad = true;
    e.record("embedding", () => {
      if (y.grad) B.embeddingBackward(ids.storage, y.grad.storage, e.gradOf(table).storage, M, H, V);
    });
  }
  return y;
}

/**
 * Fused LM head: per-token log-prob of `targets` and entropy under softmax(h·Wᵀ / temperature), never holding the
 * [tokens × vocab] logits. Returns { logp [M], entropy [M] }; backward takes upstream grads for both.
 */
export function lmHeadLogprob(h: Tensor, W: Tensor, targets: Tensor, temperature = 1): { logp: Tensor; entropy: Tensor } {
  const e = h.engine, B = e.backend;
  const H = h.shape[h.shape.length - 1];
  const M = h.size / H;
  const [V, H2] = W.shape;
  if (H !== H2) throw new Error(`lmHeadLogprob: hidden size ${H} but W is [${W.shape}]`);
  if (targets.size !== M) throw new Error(`lmHeadLogprob: ${targets.size} targets for ${M} rows`);
  if (W.dtype === "u32") throw new Error("lmHeadLogprob: W must be f32 or f16");
  if (W.dtype === "f16" && W.requiresGrad) throw new Error(`lmHeadLogprob: the f16 head "${W.name}" is frozen and cannot require a gradient`);
  const wDtype = W.dtype === "f16" ? "f16" : "f32";
  const logp = e.empty([M], "f32", "logp");
  const entropy = e.empty([M], "f32", "entropy");
  const lse = e.empty([M], "f32", "lse");
  B.lmHead(h.storage, W.storage, targets.storage, logp.storage, entropy.storage, lse.storage, M, H, V, temperature, wDtype);
  if (e.needsGrad(h, W)) {
    logp.requiresGrad = true;
    entropy.requiresGrad = true;
    e.record("lmHeadLogprob", () => {
      if (!logp.grad && !entropy.grad) return;
      const gl = logp.grad ?? e.zeros([M]);
      const ge = entropy.grad ?? e.zeros([M]);
      const dh = e.empty(h.shape, "f32");
      // A trainable head (full fine-tuning / pre-training; tied with the embedding when they are one tensor) gets
      // dW += dlogitsᵀ·h accumulated straight into its gradient.
      B.lmHeadBackward(h.storage, W.storage, targets.storage, lse.storage, entropy.storage, gl.storage, ge.storage, dh.storage, M, H, V, temperature, W.requiresGrad ? e.gradOf(W).storage : undefined, wDtype);
      if (h.requiresGrad) B.axpy(1, dh.storage, e.gradOf(h).storage, h.size);
      dh.dispose();
      if (!logp.grad) gl.dispose();
      if (!entropy.grad) ge.dispose();
    });
  }
  return { logp, entropy };
}
