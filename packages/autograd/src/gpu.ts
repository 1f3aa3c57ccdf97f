// The WebGPU backend: every primitive is a kernel launch from @nr/kernels, recorded into the device's open command
// encoder (no readback inside a step except `read` and `sumSquares`). Storage is a pooled GpuBuffer; f32 tensors
// hold f32, u32 tensors hold u32, f16 tensors hold f16.
import * as K from "@nr/kernels";
import type { Gpu, GpuBuffer } from "@nr/kernels";
import type { AdamWStep, AttentionDims, Backend, FloatDType, MatmulOptions, Storage } from "./backend.js";
import type { DType } from "./tensor.js";

const B = (s: Storage) => s as GpuBuffer;
// f16 buffers are whole 32-bit words (the cast kernels pack two halves per word, so an odd count needs the pad).
const bytesOf = (n: number, dtype: DType) => Math.max(4, dtype === "f16" ? Math.ceil(n / 2) * 4 : n * 4);

export class GpuBackend implements Backend {
  readonly name: string;

  constructor(readonly gpu: Gpu) {
    this.name = `webgpu (${gpu.adapterName})`;
  }

  alloc(n: number, dtype: DType): Storage {
    return this.gpu.alloc(bytesOf(n, dtype), `tensor-${dtype}`);
  }
  upload(values: ArrayLike<number>, dtype: DType): Storage {
    const data = dtype === "u32" ? Uint32Array.from(values) : dtype === "f16" ? K.toF16Array(values) : Float32Array.from(values);
    if (data.length === 0) return this.gpu.alloc(4, "empty");
    return this.gpu.upload(data, `tensor-${dtype}`);
  }
  async read(s: Storage, n: number, dtype: DType): Promise<Float64Array> {
    if (n === 0) return new Float64Array(0);
    const raw = dtype === "u32" ? await this.gpu.readU32(B(s), n) : dtype === "f16" ? await this.gpu.readF16(B(s), n) : await this.gpu.readF32(B(s), n);
    return Float64Array.from(raw);
  }
  free(s: Storage) {
    this.gpu.release(B(s));
  }
  fill(s: Storage, value: number, n: number) {
    if (n > 0) K.fill(this.gpu, { buf: B(s), n, value });
  }
  axpy(alpha: number, x: Storage, y: Storage, n: number) {
    K.axpy(this.gpu, { x: B(x), y: B(y), n, alpha });
  }
  mul(a: Storage, b: Storage, out: Storage, n: number) {
    K.mul(this.gpu, { a: B(a), b: B(b), out: B(out), n });
  }
  add(a: Storage, b: Storage, out: Storage, n: number) {
    if (a === b) {
      // x + x: the add kernel refuses aliased inputs, so out = 0 + 2·x.
      this.fill(out, 0, n);
      K.axpy(this.gpu, { x: B(a), y: B(out), n, alpha: 2 });
      return;
    }
    K.add(this.gpu, { a: B(a), b: B(b), out: B(out), n });
  }
  scale(x: Storage, alpha: number, n: number) {
    if (n > 0) K.scale(this.gpu, { buf: B(x), n, alpha });
  }
  /** Σx² via the on-GPU norm kernel; one 4-byte readback (a sync point). */
  async sumSquares(x: Storage, n: number): Promise<number> {
    if (n === 0) return 0;
    const out = this.gpu.alloc(4, "sumsq");
    K.gradNorm(this.gpu, { grads: B(x), n, out });
    const [norm] = await this.gpu.readF32(out, 1);
    this.gpu.release(out);
    return norm * norm;
  }
  async sumSquaresMany(xs: ReadonlyArray<readonly [Storage, number]>): Promise<number> {
    const live = xs.filter(([, n]) => n > 0);
    if (live.length === 0) return 0;
    // One norm per tensor, gathered into one buffer: a single read-back instead of one sync per parameter.
    const all = this.gpu.alloc(live.length * 4, "sumsq_all");
    const one = live.map(([x, n], i) => {
      const out = this.gpu.alloc(4, "sumsq");
      K.gradNorm(this.gpu, { grads: B(x), n, out });
      this.gpu.copy(out, 0, all, i * 4, 4);
      return out;
    });
    const norms = await this.gpu.readF32(all, live.length);
    for (const o of one) this.gpu.release(o);
    this.gpu.release(all);
    let s = 0;
    for (const v of norms) s += v * v;
    return s;
  }
  matmul(a: Storage, b: Storage, c: Storage, o: MatmulOptions) {
    K.matmul(this.gpu, { a: B(a), b: B(b), c: B(c), ...o, outDtype: "f32" });
  }
  cast(x: Storage, out: Storage, n: number, from: FloatDType, to: FloatDType) {
    if (from === to) throw new Error(`cast: from and to are both ${from}`);
    // The bit-exact integer kernels of @nr/kernels (round to nearest even, overflow → ±Inf as tensor.half()).
    if (n > 0) K.cast(this.gpu, { src: B(x), dst: B(out), n, kind: from === "f32" ? "f32->f16" : "f16->f32" });
  }
  biasAdd(y: Storage, bias: Storage, M: number, N: number) {
    K.biasAdd(this.gpu, { y: B(y), bias: B(bias), M, N });
  }
  biasGrad(dy: Storage, dbias: Storage, M: number, N: number) {
    K.biasGrad(this.gpu, { dy: B(dy), dbias: B(dbias), M, N, accumulate: true });
  }
  rmsnorm(x: Storage, w: Storage, y: Storage, rstd: Storage, rows: number, H: number, eps: number) {
    K.rmsNorm(this.gpu, { x: B(x), w: B(w), y: B(y), rstd: B(rstd), rows, H, eps });
  }
  rmsnormBackward(dy: Storage, x: Storage, w: Storage, rstd: Storage, dx: Storage, dw: Storage, rows: number, H: number) {
    K.rmsNormBackward(this.gpu, { dy: B(dy), x: B(x), w: B(w), rstd: B(rstd), dx: B(dx), dw: B(dw), rows, H, accumulateDw: true });
  }
  rope(x: Storage, pos: Storage, out: Storage, tokens: number, heads: number, D: number, theta: number, inverse: boolean) {
    const args = { q: B(x), qOut: B(out), positions: B(pos), tokens, Hq: heads, D, theta };
    if (inverse) K.ropeBackward(this.gpu, args);
    else K.rope(this.gpu, args);
  }
  swiglu(gate: Storage, up: Storage, h: Storage, n: number) {
    K.swiglu(this.gpu, { gate: B(gate), up: B(up), h: B(h), M: 1, I: n });
  }
  swigluBackward(dh: Storage, gate: Storage, up: Storage, dgate: Storage, dup: Storage, n: number) {
    K.swigluBackward(this.gpu, { dh: B(dh), gate: B(gate), up: B(up), dgate: B(dgate), dup: B(dup), M: 1, I: n });
  }
  attention(q: Storage, k: Storage, v: Storage, keyValid: Storage, o: Storage, lse: Storage, d: AttentionDims) {
    K.attention(this.gpu, { q: B(q), k: B(k), v: B(v), o: B(o), lse: B(lse), kvValid: B(keyValid), B: d.B, T: d.T, Hq: d.Hq, Hkv: d.Hkv, D: d.D, scale: d.scale });
  }
  attentionBackward(dO: Storage, q: Storage, k: Storage, v: Storage, keyValid: Storage, o: Storage, lse: Storage, dq: Storage, dk: Storage, dv: Storage, d: AttentionDims) {
    K.attentionBackward(this.gpu, { q: B(q), k: B(k), v: B(v), o: B(o), lse: B(lse), dO: B(dO), dq: B(dq), dk: B(dk), dv: B(dv), kvValid: B(keyValid), B: d.B, T: d.T, Hq: d.Hq, Hkv: d.Hkv, D: d.D, scale: d.scale });
  }
  embedding(ids: Storage, table: Storage, out: Storage, M: number, H: number, tableDtype: FloatDType = "f32") {
    const V = Math.floor(B(table).bytes / (tableDtype === "f16" ? 2 : 4) / H);
    K.embedding(this.gpu, { ids: B(ids), table: B(table), out: B(out), M, V, H, dtype: tableDtype });
  }
  embeddingBackward(ids: Storage, dy: Storage, dtable: Storage, M: number, H: number, V: number) {
    K.embeddingBackward(this.gpu, { ids: B(ids), dOut: B(dy), dTable: B(dtable), M, V, H, accumulate: true });
  }
  lmHead(h: Storage, W: Storage, targets: Storage, logp: Storage, entropy: Storage, lse: Storage, M: number, H: number, V: number, temperature: number, wDtype: FloatDType = "f32") {
    K.lmHeadForward(this.gpu, { h: B(h), w: B(W), targets: B(targets), logp: B(logp), entropy: B(entropy), lse: B(lse), M, V, H, temperature, wDtype });
  }
  lmHeadBackward(h: Storage, W: Storage, targets: Storage, lse: Storage, entropy: Storage, gLogp: Storage, gEnt: Storage, dh: Storage, M: number, H: number, V: number, temperature: number, dW?: Storage, wDtype: FloatDType = "f32") {
    K.lmHeadBackward(this.gpu, { h: B(h), w: B(W), targets: B(targets), lse: B(lse), entropy: B(entropy), gLogp: B(gLogp), gEntropy: B(gEnt), dh: B(dh), M, V, H, temperature, dw: dW ? B(dW) : undefined, wDtype });
  }
  adamw(p: Storage, g: Storage, m: Storage, v: Storage, n: number, h: AdamWStep) {
    if (n === 0) return;
    K.adamW(this.gpu, { params: B(p), grads: B(g), m: B(m), v: B(v), n, step: h.step, lr: h.lr, beta1: h.beta1, beta2: h.beta2, eps: h.eps, weightDecay: h.weightDecay });
  }
}
