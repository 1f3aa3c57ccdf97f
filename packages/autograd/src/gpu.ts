// The WebGPU backend: every primitive is a kernel launch from @nr/kernels, recorded into the device's open command
// encoder (no readback inside a step except `read` and `sumSquares`). Storage is a pooled GpuBuffer; f32 tensors
// hold f32, u32 tensors hold u32, f16 tensors hold f16. A matrix made with `allocRows` (an embedding table, an LM
// head) that would not fit one storage binding is held as `RowShards` instead: row blocks, each its own buffer
// within maxStorageBufferBindingSize. The embedding and LM-head kernels take the shards as they are; element-wise
// primitives (fill, axpy, scale, AdamW, norms, read) run shard by shard over storages of the same layout (a table,
// its gradient and its moments, made with `allocLike`); any other primitive refuses a sharded operand.
import * as K from "@nr/kernels";
import type { Gpu, GpuBuffer } from "@nr/kernels";
import type { AdamWStep, AttentionDims, Backend, FloatDType, MatmulOptions, Nf4Operand, Storage } from "./backend.js";
import type { DType } from "./tensor.js";

/**
 * A [rows, cols] matrix held as row shards: shard i holds rows [i·rowsPerShard, min(rows, (i+1)·rowsPerShard)),
 * each in its own pooled buffer that fits one storage binding.
 */
export class RowShards {
  constructor(
    readonly shards: GpuBuffer[],
    readonly rowsPerShard: number,
    readonly rows: number,
    readonly cols: number,
  ) {}
  /** Elements held by shard i. */
  elems(i: number): number {
    return Math.min(this.rowsPerShard, this.rows - i * this.rowsPerShard) * this.cols;
  }
}

/** A [rows, cols] matrix storage as the kernels take it: one buffer, or its row shards and rows per shard. */
export function rowsArg(s: Storage): { buffers: GpuBuffer | GpuBuffer[]; shardRows?: number } {
  return s instanceof RowShards ? { buffers: s.shards, shardRows: s.rowsPerShard } : { buffers: s as GpuBuffer };
}

const B = (s: Storage) => {
  if (s instanceof RowShards) throw new Error(`webgpu backend: a row-sharded tensor (${s.rows} × ${s.cols} in ${s.shards.length} shards) reached an op that takes only whole buffers; only the embedding, the LM head and element-wise updates take sharded tables`);
  return s as GpuBuffer;
};
/** The (buffer, element count) pieces of a storage of n elements: its shards, or itself. */
function parts(s: Storage, n: number): Array<[GpuBuffer, number]> {
  if (!(s instanceof RowShards)) return [[s as GpuBuffer, n]];
  if (n !== s.rows * s.cols) throw new Error(`webgpu backend: ${n} elements asked of a ${s.rows} × ${s.cols} sharded tensor`);
  return s.shards.map((b, i) => [b, s.elems(i)]);
}
/** Pieces of several storages with the same layout, shard by shard. */
function zipParts(n: number, ...ss: Storage[]): Array<[GpuBuffer[], number]> {
  const each = ss.map((s) => parts(s, n));
  const [first] = each;
  if (each.some((p) => p.length !== first.length || p.some(([, k], i) => k !== first[i][1]))) {
    throw new Error("webgpu backend: element-wise op over tensors with different row shards (make gradients and moments with allocLike)");
  }
  return first.map(([, k], i) => [each.map((p) => p[i][0]), k]);
}
// f16 buffers are whole 32-bit words (the cast kernels pack two halves per word, so an odd count needs the pad).
const bytesOf = (n: number, dtype: DType) => Math.max(4, dtype === "f16" ? Math.ceil(n / 2) * 4 : n * 4);

export class GpuBackend implements Backend {
  readonly name: string;

  /** Bytes a row shard may hold: the binding limit, or the smaller `maxShardBytes` given (tests exercise sharding with it). */
  readonly shardBytes: number;

  constructor(readonly gpu: Gpu, opts: { maxShardBytes?: number } = {}) {
    this.name = `webgpu (${gpu.adapterName})`;
    this.shardBytes = Math.min(opts.maxShardBytes ?? Infinity, gpu.limits.maxStorageBufferBindingSize ?? Infinity, gpu.limits.maxBufferSize ?? Infinity);
  }

  allocRows(rows: number, cols: number, dtype: DType): Storage {
    const rowsPerShard = K.tableShardRows(rows, cols, dtype === "f16" ? 2 : 4, this.shardBytes);
    if (rowsPerShard >= rows) return this.alloc(rows * cols, dtype);
    const shards: GpuBuffer[] = [];
    for (let r0 = 0; r0 < rows; r0 += rowsPerShard) shards.push(this.gpu.alloc(bytesOf(Math.min(rowsPerShard, rows - r0) * cols, dtype), `table-shard-${dtype}`));
    return new RowShards(shards, rowsPerShard, rows, cols);
  }
  writeRows(s: Storage, row0: number, values: ArrayLike<number>, cols: number, dtype: DType) {
    const count = values.length / cols;
    if (!Number.isInteger(count)) throw new Error(`writeRows: ${values.length} values are not whole rows of ${cols}`);
    const data = dtype === "u32" ? Uint32Array.from(values) : dtype === "f16" ? K.toF16Array(values) : Float32Array.from(values);
    const esz = dtype === "f16" ? 2 : 4;
    const put = (buf: GpuBuffer, firstRow: number, r0: number, r1: number) => {
      const offset = (r0 - firstRow) * cols * esz;
      if (offset % 4 !== 0) throw new Error(`writeRows: row ${r0} of ${cols} f16 values starts mid-word; write from an even row`);
      this.gpu.write(buf, data.subarray((r0 - row0) * cols, (r1 - row0) * cols), offset);
    };
    if (!(s instanceof RowShards)) return put(s as GpuBuffer, 0, row0, row0 + count);
    if (row0 + count > s.rows) throw new Error(`writeRows: rows [${row0}, ${row0 + count}) beyond the ${s.rows} rows of the table`);
    for (let i = Math.floor(row0 / s.rowsPerShard); i < s.shards.length && i * s.rowsPerShard < row0 + count; i++) {
      const first = i * s.rowsPerShard;
      put(s.shards[i], first, Math.max(row0, first), Math.min(row0 + count, first + s.rowsPerShard));
    }
  }
  allocLike(like: Storage, n: number, dtype: DType): Storage {
    if (!(like instanceof RowShards)) return this.alloc(n, dtype);
    const shards = like.shards.map((_, i) => this.gpu.alloc(bytesOf(like.elems(i), dtype), `table-shard-${dtype}`));
    return new RowShards(shards, like.rowsPerShard, like.rows, like.cols);
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
    if (s instanceof RowShards) {
      const out = new Float64Array(n);
      let at = 0;
      for (const [buf, k] of parts(s, n)) (out.set(await this.read(buf, k, dtype), at), (at += k));
      return out;
    }
    const raw = dtype === "u32" ? await this.gpu.readU32(B(s), n) : dtype === "f16" ? await this.gpu.readF16(B(s), n) : await this.gpu.readF32(B(s), n);
    return Float64Array.from(raw);
  }
  free(s: Storage) {
    if (s instanceof RowShards) this.gpu.release(...s.shards);
    else this.gpu.release(B(s));
  }
  fill(s: Storage, value: number, n: number) {
    if (n > 0) for (const [buf, k] of parts(s, n)) K.fill(this.gpu, { buf, n: k, value });
  }
  axpy(alpha: number, x: Storage, y: Storage, n: number) {
    for (const [[xb, yb], k] of zipParts(n, x, y)) K.axpy(this.gpu, { x: xb, y: yb, n: k, alpha });
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
    if (n > 0) for (const [buf, k] of parts(x, n)) K.scale(this.gpu, { buf, n: k, alpha });
  }
  /** Σx² via the on-GPU norm kernel; one readback (a sync point). */
  async sumSquares(x: Storage, n: number): Promise<number> {
    return this.sumSquaresMany([[x, n]]);
  }
  async sumSquaresMany(xs: ReadonlyArray<readonly [Storage, number]>): Promise<number> {
    // a sharded tensor contributes one norm per shard
    const live = xs.flatMap(([s, n]) => (n > 0 ? parts(s, n) : []));
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
    K.matmul(this.gpu, { a: B(a), b: B(b), c: B(c), ...o, bias: o.bias ? B(o.bias) : undefined, outDtype: "f32" });
  }
  nf4Matmul(a: Storage, w: Nf4Operand, out: Storage, o: { M: number; mode: K.Nf4MatmulMode; accumulate?: boolean }) {
    if ("shape" in w) throw new Error("nf4Matmul: the GPU backend takes an NF4 weight on the device (uploadNf4 / quantizeNf4), not its host form");
    K.nf4Matmul(this.gpu, { mode: o.mode, a: B(a), w, out: B(out), M: o.M, accumulate: o.accumulate });
  }
  cast(x: Storage, out: Storage, n: number, from: FloatDType, to: FloatDType) {
    if (from === to) throw new Error(`cast: from and to are both ${from}`);
    // The bit-exact integer kernels of @nr/kernels (round to nearest even, overflow → ±Inf as tensor.half()).
    if (n > 0) K.cast(this.gpu, { src: B(x), dst: B(out), n, kind: from === "f32" ? "f32->f16" : "f16->f32" });
  }
  copyColumns(src: Storage, dst: Storage, M: number, srcCols: number, dstCols: number, srcCol0: number, dstCol0: number, cols: number, accumulate: boolean) {
    K.copyColumns(this.gpu, { src: B(src), dst: B(dst), M, srcCols, dstCols, srcCol0, dstCol0, cols, accumulate });
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
    const V = table instanceof RowShards ? table.rows : Math.floor(B(table).bytes / (tableDtype === "f16" ? 2 : 4) / H);
    const t = rowsArg(table);
    K.embedding(this.gpu, { ids: B(ids), table: t.buffers, tableShardRows: t.shardRows, out: B(out), M, V, H, dtype: tableDtype });
  }
  embeddingBackward(ids: Storage, dy: Storage, dtable: Storage, M: number, H: number, V: number) {
    const t = rowsArg(dtable);
    K.embeddingBackward(this.gpu, { ids: B(ids), dOut: B(dy), dTable: t.buffers, tableShardRows: t.shardRows, M, V, H, accumulate: true });
  }
  lmHead(h: Storage, W: Storage, targets: Storage, logp: Storage, entropy: Storage, lse: Storage, M: number, H: number, V: number, temperature: number, wDtype: FloatDType = "f32") {
    const w = rowsArg(W);
    K.lmHeadForward(this.gpu, { h: B(h), w: w.buffers, wShardRows: w.shardRows, targets: B(targets), logp: B(logp), entropy: B(entropy), lse: B(lse), M, V, H, temperature, wDtype });
  }
  lmHeadBackward(h: Storage, W: Storage, targets: Storage, lse: Storage, entropy: Storage, gLogp: Storage, gEnt: Storage, dh: Storage, M: number, H: number, V: number, temperature: number, dW?: Storage, wDtype: FloatDType = "f32") {
    const w = rowsArg(W);
    // dW is made with allocLike(W), so it is sharded exactly like W
    const dw = dW === undefined ? undefined : rowsArg(dW).buffers;
    K.lmHeadBackward(this.gpu, { h: B(h), w: w.buffers, wShardRows: w.shardRows, targets: B(targets), lse: B(lse), entropy: B(entropy), gLogp: B(gLogp), gEntropy: B(gEnt), dh: B(dh), M, V, H, temperature, dw, wDtype });
  }
  adamw(p: Storage, g: Storage, m: Storage, v: Storage, n: number, h: AdamWStep) {
    if (n === 0) return;
    for (const [[pb, gb, mb, vb], k] of zipParts(n, p, g, m, v)) {
      K.adamW(this.gpu, { params: pb, grads: gb, m: mb, v: vb, n: k, step: h.step, lr: h.lr, beta1: h.beta1, beta2: h.beta2, eps: h.eps, weightDecay: h.weightDecay });
    }
  }
}
