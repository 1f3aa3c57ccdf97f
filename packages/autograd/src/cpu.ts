// The float64 CPU reference backend: plain loops, written for clarity, used by gradchecks (finite differences) and
// as the oracle the GPU backend is compared with. Storage is a Float64Array (integer tensors hold exact integers).
import { f16BitsToF32, f32ToF16Bits, nf4DequantizeReference, nf4HostScales, type Nf4HostState, type Nf4MatmulMode } from "@nr/kernels";
import type { AdamWStep, AttentionDims, Backend, FloatDType, MatmulOptions, Nf4Operand, Storage } from "./backend.js";
import type { DType } from "./tensor.js";

const A = (s: Storage) => s as Float64Array;
/**
 * The f16 value of x: rounded to f32 first, then to f16 (nearest even), as the GPU converts its f32 storage; ±Inf
 * beyond the f16 range.
 */
const toF16 = (x: number) => f16BitsToF32(f32ToF16Bits(x));

export class CpuBackend implements Backend {
  readonly name = "cpu-f64";
  /** Each host NF4 weight dequantised once (a frozen base is multiplied many times). */
  private readonly dequantised = new WeakMap<Nf4HostState, Float64Array>();

  alloc(n: number): Storage {
    return new Float64Array(n).fill(NaN); // poisoned: an op that forgets an element shows up as NaN
  }
  upload(values: ArrayLike<number>, dtype: DType): Storage {
    const out = Float64Array.from(values);
    if (dtype === "u32") for (let i = 0; i < out.length; i++) out[i] = out[i] >>> 0;
    if (dtype === "f16") for (let i = 0; i < out.length; i++) out[i] = toF16(out[i]);
    return out;
  }
  copyColumns(src: Storage, dst: Storage, M: number, srcCols: number, dstCols: number, srcCol0: number, dstCol0: number, cols: number, accumulate: boolean) {
    const s = A(src), d = A(dst);
    for (let m = 0; m < M; m++) {
      for (let j = 0; j < cols; j++) {
        const i = m * dstCols + dstCol0 + j;
        d[i] = (accumulate ? d[i] : 0) + s[m * srcCols + srcCol0 + j];
      }
    }
  }
  allocRows(rows: number, cols: number): Storage {
    return this.alloc(rows * cols);
  }
  writeRows(s: Storage, row0: number, values: ArrayLike<number>, cols: number, dtype: DType) {
    A(s).set(A(this.upload(values, dtype)), row0 * cols);
  }
  allocLike(_like: Storage, n: number): Storage {
    return this.alloc(n);
  }
  /** f16 tensors hold f16 values (as float64): f32 → f16 rounds to nearest even, f16 → f32 copies. */
  cast(x: Storage, out: Storage, n: number, _from: FloatDType, to: FloatDType) {
    const xs = A(x), o = A(out);
    for (let i = 0; i < n; i++) o[i] = to === "f16" ? toF16(xs[i]) : xs[i];
  }
  async read(s: Storage, n: number): Promise<Float64Array> {
    return A(s).slice(0, n);
  }
  free(): void {}
  fill(s: Storage, value: number, n: number) {
    A(s).fill(value, 0, n);
  }
  axpy(alpha: number, x: Storage, y: Storage, n: number) {
    const xs = A(x), ys = A(y);
    for (let i = 0; i < n; i++) ys[i] += alpha * xs[i];
  }
  mul(a: Storage, b: Storage, out: Storage, n: number) {
    const as = A(a), bs = A(b), o = A(out);
    for (let i = 0; i < n; i++) o[i] = as[i] * bs[i];
  }
  add(a: Storage, b: Storage, out: Storage, n: number) {
    const as = A(a), bs = A(b), o = A(out);
    for (let i = 0; i < n; i++) o[i] = as[i] + bs[i];
  }
  scale(x: Storage, alpha: number, n: number) {
    const xs = A(x);
    for (let i = 0; i < n; i++) xs[i] *= alpha;
  }
  adamw(p: Storage, g: Storage, m: Storage, v: Storage, n: number, h: AdamWStep) {
    const ps = A(p), gs = A(g), ms = A(m), vs = A(v);
    const bc1 = 1 - h.beta1 ** h.step, bc2 = 1 - h.beta2 ** h.step;
    for (let i = 0; i < n; i++) {
      ps[i] -= h.lr * h.weightDecay * ps[i];
      ms[i] = h.beta1 * ms[i] + (1 - h.beta1) * gs[i];
      vs[i] = h.beta2 * vs[i] + (1 - h.beta2) * gs[i] * gs[i];
      ps[i] -= (h.lr * (ms[i] / bc1)) / (Math.sqrt(vs[i] / bc2) + h.eps);
    }
  }
  async sumSquaresMany(xs: ReadonlyArray<readonly [Storage, number]>) {
    let s = 0;
    for (const [x, n] of xs) s += await this.sumSquares(x, n);
    return s;
  }
  async sumSquares(x: Storage, n: number) {
    let s = 0;
    const xs = A(x);
    for (let i = 0; i < n; i++) s += xs[i] * xs[i];
    return s;
  }

  // Operand dtype does not matter here: f16 tensors already hold their f16 values (see upload / cast).
  matmul(a: Storage, b: Storage, c: Storage, o: MatmulOptions) {
    const { M, N, K } = o;
    const as = A(a), bs = A(b), cs = A(c);
    const alpha = o.alpha ?? 1;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += as[o.transA ? k * M + m : m * K + k] * bs[o.transB ? n * K + k : k * N + n];
        cs[m * N + n] = (o.accumulate ? cs[m * N + n] : 0) + alpha * s + (o.bias ? A(o.bias)[n] : 0);
      }
    }
  }
  /** Dequantise exactly as bitsandbytes does (f32 code · f32 block scale), then the float64 matmul. */
  nf4Matmul(a: Storage, w: Nf4Operand, out: Storage, o: { M: number; mode: Nf4MatmulMode; accumulate?: boolean }) {
    if (!("shape" in w)) throw new Error("nf4Matmul: the CPU backend takes an NF4 weight in its host form (Nf4HostState, e.g. from downloadNf4 or parseBnbNf4), not GPU buffers");
    const [N, K] = w.shape;
    let deq = this.dequantised.get(w);
    if (!deq) {
      deq = Float64Array.from(nf4DequantizeReference(w.packed, nf4HostScales(w), N * K, w.blocksize, w.quantMap));
      this.dequantised.set(w, deq);
    }
    if (o.mode === "forward") this.matmul(a, deq, out, { M: o.M, N, K, transB: true, accumulate: o.accumulate });
    else this.matmul(a, deq, out, { M: o.M, N: K, K: N, accumulate: o.accumulate });
  }

  biasAdd(y: Storage, bias: Storage, M: number, N: number) {
    const ys = A(y), b = A(bias);
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) ys[m * N + n] += b[n];
  }
  biasGrad(dy: Storage, dbias: Storage, M: number, N: number) {
    const d = A(dy), db = A(dbias);
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) db[n] += d[m * N + n];
  }

  rmsnorm(x: Storage, w: Storage, y: Storage, rstd: Storage, rows: number, H: number, eps: number) {
    const xs = A(x), ws = A(w), ys = A(y), rs = A(rstd);
    for (let r = 0; r < rows; r++) {
      let ss = 0;
      for (let i = 0; i < H; i++) ss += xs[r * H + i] ** 2;
      const inv = 1 / Math.sqrt(ss / H + eps);
      rs[r] = inv;
      for (let i = 0; i < H; i++) ys[r * H + i] = xs[r * H + i] * inv * ws[i];
    }
  }
  rmsnormBackward(dy: Storage, x: Storage, w: Storage, rstd: Storage, dx: Storage, dw: Storage, rows: number, H: number) {
    const d = A(dy), xs = A(x), ws = A(w), rs = A(rstd), dxs = A(dx), dws = A(dw);
    for (let r = 0; r < rows; r++) {
      const inv = rs[r];
      // y_i = x_i·inv·w_i, inv = (mean(x²)+eps)^(-1/2): dx_i = inv·(g_i − x_i·inv²·Σ_j g_j x_j / H) with g = dy∘w
      let dot = 0;
      for (let i = 0; i < H; i++) dot += d[r * H + i] * ws[i] * xs[r * H + i];
      for (let i = 0; i < H; i++) {
        const g = d[r * H + i] * ws[i];
        dxs[r * H + i] = inv * (g - (xs[r * H + i] * inv * inv * dot) / H);
        dws[i] += d[r * H + i] * xs[r * H + i] * inv;
      }
    }
  }

  rope(x: Storage, pos: Storage, out: Storage, tokens: number, heads: number, D: number, theta: number, inverse: boolean) {
    const xs = A(x), ps = A(pos), o = A(out);
    const half = D / 2;
    for (let t = 0; t < tokens; t++) {
      for (let h = 0; h < heads; h++) {
        const base = (t * heads + h) * D;
        for (let i = 0; i < half; i++) {
          const angle = ps[t] * Math.pow(theta, (-2 * i) / D) * (inverse ? -1 : 1);
          const c = Math.cos(angle), s = Math.sin(angle);
          const a = xs[base + i], b = xs[base + i + half];
          o[base + i] = a * c - b * s;
          o[base + i + half] = b * c + a * s;
        }
      }
    }
  }

  swiglu(gate: Storage, up: Storage, h: Storage, n: number) {
    const g = A(gate), u = A(up), o = A(h);
    for (let i = 0; i < n; i++) o[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
  }
  swigluBackward(dh: Storage, gate: Storage, up: Storage, dgate: Storage, dup: Storage, n: number) {
    const d = A(dh), g = A(gate), u = A(up), dg = A(dgate), du = A(dup);
    for (let i = 0; i < n; i++) {
      const s = 1 / (1 + Math.exp(-g[i]));
      du[i] = d[i] * g[i] * s;
      dg[i] = d[i] * u[i] * s * (1 + g[i] * (1 - s));
    }
  }

  attention(q: Storage, k: Storage, v: Storage, keyValid: Storage, o: Storage, lse: Storage, d: AttentionDims) {
    const { B, T, Hq, Hkv, D, scale } = d;
    const qs = A(q), ks = A(k), vs = A(v), kv = A(keyValid), os = A(o), ls = A(lse);
    const group = Hq / Hkv;
    const p = new Float64Array(T);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < Hq; h++) {
        const hk = Math.floor(h / group);
        for (let t = 0; t < T; t++) {
          let mx = -Infinity;
          for (let s = 0; s <= t; s++) {
            if (!kv[b * T + s]) { p[s] = -Infinity; continue; }
            let dot = 0;
            for (let i = 0; i < D; i++) dot += qs[((b * T + t) * Hq + h) * D + i] * ks[((b * T + s) * Hkv + hk) * D + i];
            p[s] = dot * scale;
            mx = Math.max(mx, p[s]);
          }
          const oBase = ((b * T + t) * Hq + h) * D;
          if (mx === -Infinity) { // every key masked: output 0, lse −inf (no gradient flows)
            for (let i = 0; i < D; i++) os[oBase + i] = 0;
            ls[(b * Hq + h) * T + t] = -Infinity;
            continue;
          }
          let sum = 0;
          for (let s = 0; s <= t; s++) sum += p[s] === -Infinity ? 0 : Math.exp(p[s] - mx);
          const l = mx + Math.log(sum);
          ls[(b * Hq + h) * T + t] = l;
          for (let i = 0; i < D; i++) os[oBase + i] = 0;
          for (let s = 0; s <= t; s++) {
            if (p[s] === -Infinity) continue;
            const w = Math.exp(p[s] - l);
            for (let i = 0; i < D; i++) os[oBase + i] += w * vs[((b * T + s) * Hkv + hk) * D + i];
          }
        }
      }
    }
  }

  attentionBackward(dO: Storage, q: Storage, k: Storage, v: Storage, keyValid: Storage, o: Storage, lse: Storage, dq: Storage, dk: Storage, dv: Storage, d: AttentionDims) {
    const { B, T, Hq, Hkv, D, scale } = d;
    const dos = A(dO), qs = A(q), ks = A(k), vs = A(v), kv = A(keyValid), os = A(o), ls = A(lse);
    const dqs = A(dq), dks = A(dk), dvs = A(dv);
    dqs.fill(0, 0, B * T * Hq * D);
    dks.fill(0, 0, B * T * Hkv * D);
    dvs.fill(0, 0, B * T * Hkv * D);
    const group = Hq / Hkv;
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < Hq; h++) {
        const hk = Math.floor(h / group);
        for (let t = 0; t < T; t++) {
          const l = ls[(b * Hq + h) * T + t];
          if (l === -Infinity) continue;
          const qb = ((b * T + t) * Hq + h) * D;
          let delta = 0; // Δ = Σ_i dO_i·O_i
          for (let i = 0; i < D; i++) delta += dos[qb + i] * os[qb + i];
          for (let s = 0; s <= t; s++) {
            if (!kv[b * T + s]) continue;
            const kb = ((b * T + s) * Hkv + hk) * D;
            let dot = 0;
            for (let i = 0; i < D; i++) dot += qs[qb + i] * ks[kb + i];
            const p = Math.exp(dot * scale - l);
            let dp = 0;
            for (let i = 0; i < D; i++) dp += dos[qb + i] * vs[kb + i];
            const ds = p * (dp - delta) * scale;
            for (let i = 0; i < D; i++) {
              dvs[kb + i] += p * dos[qb + i];
              dqs[qb + i] += ds * ks[kb + i];
              dks[kb + i] += ds * qs[qb + i];
            }
          }
        }
      }
    }
  }

  embedding(ids: Storage, table: Storage, out: Storage, M: number, H: number) {
    const is = A(ids), tb = A(table), o = A(out);
    for (let m = 0; m < M; m++) for (let i = 0; i < H; i++) o[m * H + i] = tb[is[m] * H + i];
  }
  embeddingBackward(ids: Storage, dy: Storage, dtable: Storage, M: number, H: number, V: number) {
    const is = A(ids), d = A(dy), dt = A(dtable);
    for (let m = 0; m < M; m++) {
      const id = is[m];
      if (id < 0 || id >= V) continue;
      for (let i = 0; i < H; i++) dt[id * H + i] += d[m * H + i];
    }
  }

  private logits(h: Float64Array, W: Float64Array, m: number, H: number, V: number, temperature: number): Float64Array {
    const z = new Float64Array(V);
    for (let v = 0; v < V; v++) {
      let s = 0;
      for (let i = 0; i < H; i++) s += h[m * H + i] * W[v * H + i];
      z[v] = s / temperature;
    }
    return z;
  }

  lmHead(h: Storage, W: Storage, targets: Storage, logp: Storage, entropy: Storage, lse: Storage, M: number, H: number, V: number, temperature: number) {
    const hs = A(h), ws = A(W), ts = A(targets), lp = A(logp), en = A(entropy), ls = A(lse);
    for (let m = 0; m < M; m++) {
      const z = this.logits(hs, ws, m, H, V, temperature);
      let mx = -Infinity;
      for (let v = 0; v < V; v++) mx = Math.max(mx, z[v]);
      let sum = 0;
      for (let v = 0; v < V; v++) sum += Math.exp(z[v] - mx);
      const l = mx + Math.log(sum);
      let pz = 0;
      for (let v = 0; v < V; v++) pz += Math.exp(z[v] - l) * z[v];
      ls[m] = l;
      lp[m] = z[ts[m]] - l;
      en[m] = l - pz;
    }
  }

  lmHeadBackward(h: Storage, W: Storage, targets: Storage, lse: Storage, _entropy: Storage, gLogp: Storage, gEnt: Storage, dh: Storage, M: number, H: number, V: number, temperature: number, dW?: Storage) {
    const hs = A(h), ws = A(W), ts = A(targets), ls = A(lse), gl = A(gLogp), ge = A(gEnt), d = A(dh);
    const dw = dW ? A(dW) : null;
    for (let m = 0; m < M; m++) {
      const z = this.logits(hs, ws, m, H, V, temperature);
      let pz = 0;
      const p = new Float64Array(V);
      for (let v = 0; v < V; v++) {
        p[v] = Math.exp(z[v] - ls[m]);
        pz += p[v] * z[v];
      }
      for (let i = 0; i < H; i++) d[m * H + i] = 0;
      for (let v = 0; v < V; v++) {
        // ∂logp/∂z_v = [v = target] − p_v ; ∂H/∂z_v = −p_v·(z_v − Σ p·z)
        const dz = gl[m] * ((v === ts[m] ? 1 : 0) - p[v]) - ge[m] * p[v] * (z[v] - pz);
        const dl = dz / temperature;
        for (let i = 0; i < H; i++) d[m * H + i] += dl * ws[v * H + i];
        if (dw) for (let i = 0; i < H; i++) dw[v * H + i] += dl * hs[m * H + i];
      }
    }
  }
}
