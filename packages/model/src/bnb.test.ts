// The bitsandbytes checkpoint format against the GPU NF4 weights it stores: save → load → save is byte-identical and
// dequantises to the same values, a hand-built QLoRA tensor set loads as bnb defines it (its own maps and dtype),
// non-nested weights round-trip, bad tensor sets are refused with the tensor named, and the quant state's float is
// written as Python's json.dumps writes it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createDynamicMap,
  dequantizeNf4,
  downloadNf4,
  f32Bits,
  NF4_CODE,
  nf4Matmul,
  nf4MatmulReference,
  nf4QuantizeReference,
  quantizeNf4,
  releaseNf4,
  type Nf4SourceDtype,
} from "@nr/kernels";
import { compare, describeReport, gpuSuite, randInt, randn } from "@nr/kernels/testing";
import { bnbNf4Tensors, loadBnbNf4, parseBnbNf4, pythonFloatRepr, saveBnbNf4, type BnbTensor } from "./bnb.js";

const suite = gpuSuite("bnb format", { beforeAll, afterAll });
const { seed, rand } = suite;
const f32 = Math.fround;

/** Bit-identical (compare with a zero bound reports the first element that differs). */
function expectSame(got: ArrayLike<number>, want: ArrayLike<number>, what: string) {
  expect(got.length, `${what}: length`).toBe(want.length);
  const r = compare(got, want, 0);
  expect(r.ok, `${what}: ${describeReport(r)} (seed ${seed})`).toBe(true);
}

/** Round to bf16 (nearest even): the exact values and the bits to upload. */
function asBf16(vals: Float32Array): { exact: Float32Array; data: Uint16Array } {
  const data = Uint16Array.from(vals, (x) => {
    const b = f32Bits(x);
    return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
  });
  const exact = new Float32Array(new Uint32Array(Array.from(data, (h) => h << 16)).buffer);
  return { exact, data };
}

function quantizeOnGpu(values: Float32Array | Uint16Array, dtype: Nf4SourceDtype, N: number, K: number, opts: { doubleQuant?: boolean } = {}) {
  const input = suite.gpu.upload(values, "bnb_test_src");
  const w = quantizeNf4(suite.gpu, { input, dtype, N, K, ...opts });
  suite.gpu.release(input);
  return w;
}
describe("bitsandbytes checkpoint format", () => {
  it("save → load → save round trip: tensor names, dtypes, shapes, JSON, bytes and dequantised values", async () => {
    const N = 300;
    const K = 320;
    const { exact, data } = asBf16(randn(N * K, rand, 0.02));
    const w = quantizeOnGpu(data, "bf16", N, K);
    const name = "model.layers.0.mlp.up_proj.weight";
    const t = await saveBnbNf4(suite.gpu, w, name);
    const blocks = (N * K) / 64;
    expect(Object.keys(t)).toEqual([name, `${name}.absmax`, `${name}.quant_map`, `${name}.nested_absmax`, `${name}.nested_quant_map`, `${name}.quant_state.bitsandbytes__nf4`]);
    expect(t[name]).toMatchObject({ dtype: "U8", shape: [(N * K) / 2, 1] });
    expect(t[`${name}.absmax`]).toMatchObject({ dtype: "U8", shape: [blocks] });
    expect(t[`${name}.quant_map`]).toMatchObject({ dtype: "F32", shape: [16] });
    expect(t[`${name}.nested_absmax`]).toMatchObject({ dtype: "F32", shape: [Math.ceil(blocks / 256)] });
    expect(t[`${name}.nested_quant_map`]).toMatchObject({ dtype: "F32", shape: [256] });
    const offset = (await suite.gpu.readF32(w.double!.offset, 1))[0];
    const json = new TextDecoder().decode(t[`${name}.quant_state.bitsandbytes__nf4`].bytes);
    expect(json).toBe(`{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [${N}, ${K}], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": ${pythonFloatRepr(offset)}}`);
    expect(JSON.parse(json).nested_offset).toBe(offset);
    // The bytes are bnb's: the reference quantisation of the same weights (given the offset).
    const ref = nf4QuantizeReference(exact, { offset });
    expectSame(t[name].bytes, ref.packed, "saved packed");
    expectSame(t[`${name}.absmax`].bytes, ref.qabsmax!, "saved qabsmax");
    expectSame(new Float32Array(t[`${name}.nested_absmax`].bytes.slice().buffer), ref.absmax2!, "saved nested_absmax");

    const w2 = loadBnbNf4(suite.gpu, new Map(Object.entries(t)));
    expect([w2.N, w2.K, w2.blocksize, w2.dtype]).toEqual([N, K, 64, "bf16"]);
    const o1 = suite.gpu.alloc(N * K * 4);
    const o2 = suite.gpu.alloc(N * K * 4);
    dequantizeNf4(suite.gpu, w, o1);
    dequantizeNf4(suite.gpu, w2, o2);
    expectSame(await suite.gpu.readF32(o2, N * K), await suite.gpu.readF32(o1, N * K), "dequantised after reload");
    const t2 = await saveBnbNf4(suite.gpu, w2, name);
    for (const k of Object.keys(t)) expectSame(t2[k].bytes, t[k].bytes, `re-saved ${k}`);
    suite.gpu.release(o1, o2);
    releaseNf4(suite.gpu, w);
    releaseNf4(suite.gpu, w2);
  });

  it("loads a hand-built QLoRA-style tensor set as is (nested, blocksize 128, its own 8-bit map, torch.* dtype)", async () => {
    const N = 48;
    const K = 40;
    const n = N * K;
    const blocks = n / 128;
    const name = "model.layers.3.self_attn.q_proj.weight";
    const packed = Uint8Array.from({ length: n / 2 }, () => randInt(0, 255, rand));
    const qabsmax = Uint8Array.from({ length: blocks }, () => randInt(0, 255, rand));
    const absmax2 = Float32Array.of(f32(0.05 + rand()));
    const nmap = createDynamicMap({ fusedLinspace: false }); // not the default: the checkpoint's map must be used
    const offset = f32(0.0123);
    const f32b = (a: Float32Array): BnbTensor => ({ dtype: "F32", shape: [a.length], bytes: new Uint8Array(a.buffer.slice(0)) });
    const state = `{"quant_type": "nf4", "blocksize": 128, "dtype": "torch.float16", "shape": [${N}, ${K}], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": ${pythonFloatRepr(offset)}}`; // bnb writes offset.item()
    const tensors: Record<string, BnbTensor> = {
      [name]: { dtype: "U8", shape: [n / 2, 1], bytes: packed },
      [`${name}.absmax`]: { dtype: "U8", shape: [blocks], bytes: qabsmax },
      [`${name}.quant_map`]: f32b(NF4_CODE.slice()),
      [`${name}.nested_absmax`]: f32b(absmax2),
      [`${name}.nested_quant_map`]: f32b(nmap),
      [`${name}.quant_state.bitsandbytes__nf4`]: { dtype: "U8", shape: [state.length], bytes: new TextEncoder().encode(state) },
      "model.layers.3.self_attn.q_proj.bias": { dtype: "F16", shape: [N], bytes: new Uint8Array(2 * N) },
    };
    const w = loadBnbNf4(suite.gpu, tensors);
    expect([w.N, w.K, w.blocksize, w.dtype]).toEqual([N, K, 128, "f16"]);
    // bnb: scale[i] = nested_quant_map[qabsmax[i]]·nested_absmax[i/256] + offset, each op rounded to f32.
    const wantScales = Float32Array.from(qabsmax, (q) => f32(f32(nmap[q] * absmax2[0]) + f32(offset)));
    expectSame(await suite.gpu.readF32(w.scales, blocks), wantScales, "scales");
    const out = suite.gpu.alloc(n * 4);
    dequantizeNf4(suite.gpu, w, out);
    const deq = await suite.gpu.readF32(out, n);
    const wantDeq = Float32Array.from({ length: n }, (_, f) => f32(NF4_CODE[f & 1 ? packed[f >> 1] & 15 : packed[f >> 1] >> 4] * wantScales[Math.floor(f / 128)]));
    expectSame(deq, wantDeq, "dequantised checkpoint weight");
    suite.gpu.release(out);
    // The fused GEMM reads the same weight (blocksize 128).
    const M = 5;
    const x = randn(M * K, rand);
    const xb = suite.gpu.upload(x);
    const y = suite.gpu.alloc(M * N * 4);
    nf4Matmul(suite.gpu, { mode: "forward", a: xb, w, out: y, M });
    const r = compare(await suite.gpu.readF32(y, M * N), nf4MatmulReference(x, wantDeq, { M, N, K, mode: "forward" }), 1e-4);
    expect(r.ok, describeReport(r)).toBe(true);
    suite.gpu.release(xb, y);
    // Saved again: identical bytes, the dtype written without the "torch." prefix.
    const t2 = await saveBnbNf4(suite.gpu, w, name);
    for (const k of Object.keys(tensors).filter((k) => k.startsWith(`${name}`) && !k.endsWith("bitsandbytes__nf4"))) expectSame(t2[k].bytes, tensors[k].bytes, `re-saved ${k}`);
    expect(JSON.parse(new TextDecoder().decode(t2[`${name}.quant_state.bitsandbytes__nf4`].bytes))).toEqual({ ...JSON.parse(state), dtype: "float16" });
    releaseNf4(suite.gpu, w);
  });

  it("non-nested (fp32 absmax) weights load and save without nested tensors", async () => {
    const N = 8;
    const K = 64;
    const v = randn(N * K, rand);
    const w = quantizeOnGpu(v, "f32", N, K, { doubleQuant: false });
    const t = await saveBnbNf4(suite.gpu, w, "weight");
    expect(Object.keys(t)).toEqual(["weight", "weight.absmax", "weight.quant_map", "weight.quant_state.bitsandbytes__nf4"]);
    expect(t["weight.absmax"].dtype).toBe("F32");
    expect(new TextDecoder().decode(t["weight.quant_state.bitsandbytes__nf4"].bytes)).toBe(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [8, 64]}`);
    const s = parseBnbNf4(t);
    expect(s.nested).toBeNull();
    expectSame(s.absmax!, nf4QuantizeReference(v, { doubleQuant: false }).absmax, "absmax");
    expect(bnbNf4Tensors(s, "weight")["weight.absmax"].bytes).toEqual(t["weight.absmax"].bytes);
    const w2 = loadBnbNf4(suite.gpu, t);
    expectSame(await suite.gpu.readF32(w2.scales, w2.blocks), s.absmax!, "scales = absmax");
    const back = await downloadNf4(suite.gpu, w2);
    expectSame(back.packed, s.packed, "packed after upload/download");
    releaseNf4(suite.gpu, w);
    releaseNf4(suite.gpu, w2);
  });

  it("reports what is wrong with a tensor set", () => {
    const state = (o: object) => ({ dtype: "U8", shape: [1], bytes: new TextEncoder().encode(JSON.stringify(o)) });
    const base = {
      "w.weight": { dtype: "U8", shape: [32, 1], bytes: new Uint8Array(32) },
      "w.weight.absmax": { dtype: "U8", shape: [1], bytes: new Uint8Array(1) },
      "w.weight.quant_map": { dtype: "F32", shape: [16], bytes: new Uint8Array(64) },
      "w.weight.nested_absmax": { dtype: "F32", shape: [1], bytes: new Uint8Array(4) },
      "w.weight.quant_state.bitsandbytes__nf4": state({ quant_type: "nf4", blocksize: 64, dtype: "bfloat16", shape: [8, 8], nested_blocksize: 256, nested_offset: 0.1 }),
    };
    expect(() => parseBnbNf4(base)).toThrow(/missing tensor w\.weight\.nested_quant_map/);
    expect(() => parseBnbNf4({ ...base, "w.weight": { dtype: "U8", shape: [31, 1], bytes: new Uint8Array(31) } })).toThrow(/w\.weight holds 31 bytes.*needs 32/);
    const fp4 = { "w.weight": base["w.weight"], "w.weight.quant_state.bitsandbytes__fp4": state({ quant_type: "fp4", blocksize: 64, shape: [8, 8] }) };
    expect(() => parseBnbNf4(fp4)).toThrow(/FP4/);
    expect(() => parseBnbNf4({})).toThrow(/exactly one/);
  });

  it("writes nested_offset exactly as Python's json.dumps does", () => {
    const cases: Array<[number, string]> = [
      [0.1, "0.1"],
      [1e-5, "1e-05"],
      [0.0001, "0.0001"],
      [0.00012345, "0.00012345"],
      [1.2345e-5, "1.2345e-05"],
      [123, "123.0"],
      [1.5e16, "1.5e+16"],
      [f32(0.0123), "0.012299999594688416"],
      [-2.5, "-2.5"],
      [0, "0.0"],
    ];
    for (const [x, s] of cases) expect(pythonFloatRepr(x)).toBe(s);
  });
});
