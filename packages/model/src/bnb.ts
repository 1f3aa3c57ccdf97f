// The bitsandbytes (QLoRA checkpoint) tensor format of an NF4 linear weight: parsing the tensors bnb's
// `Linear4bit._save_to_state_dict` writes into the host form @nr/kernels uploads, and writing them back byte for byte
// (the quant state is the JSON Python's json.dumps produces). The GPU side — quantise, dequantise, fused matmul,
// upload/download of the host form — is @nr/kernels' nf4.ts.
import { downloadNf4, uploadNf4, type Gpu, type Nf4HostState, type Nf4Weight } from "@nr/kernels";

const f32 = Math.fround;

/** One tensor of a checkpoint: safetensors dtype (U8, F32, F16, BF16; torch names also accepted), shape, raw bytes. */
export interface BnbTensor {
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

const STATE_KEY = "quant_state.bitsandbytes__nf4";

function getTensor(tensors: Map<string, BnbTensor> | Record<string, BnbTensor>, key: string): BnbTensor | undefined {
  return tensors instanceof Map ? tensors.get(key) : Object.prototype.hasOwnProperty.call(tensors, key) ? tensors[key] : undefined;
}

function normDtype(d: string): string {
  const x = d.toLowerCase().replace(/^torch\./, "");
  return ({ u8: "uint8", uint8: "uint8", f32: "float32", float32: "float32", float: "float32", f16: "float16", float16: "float16", half: "float16", bf16: "bfloat16", bfloat16: "bfloat16" } as Record<string, string>)[x] ?? x;
}

function f32View(t: BnbTensor, what: string): Float32Array {
  if (normDtype(t.dtype) !== "float32") throw new Error(`bitsandbytes NF4: ${what} has dtype ${t.dtype}, expected F32`);
  if (t.bytes.byteLength % 4) throw new Error(`bitsandbytes NF4: ${what} holds ${t.bytes.byteLength} bytes, not a whole number of f32`);
  return new Float32Array(t.bytes.slice().buffer); // copy: safetensors data may be unaligned
}

/**
 * Parse the tensors bitsandbytes writes for one `Linear4bit` weight (`<name>`, `<name>.absmax`, `<name>.quant_map`,
 * `<name>.nested_absmax`, `<name>.nested_quant_map`, `<name>.quant_state.bitsandbytes__nf4`). `name` defaults to the
 * one weight in the map that has a quant state. Throws a message naming the tensor on any inconsistency.
 */
export function parseBnbNf4(tensors: Map<string, BnbTensor> | Record<string, BnbTensor>, name?: string): Nf4HostState {
  const keys = tensors instanceof Map ? [...tensors.keys()] : Object.keys(tensors);
  if (name === undefined) {
    const states = keys.filter((k) => k === STATE_KEY || k.endsWith(`.${STATE_KEY}`));
    if (states.length !== 1) {
      const fp4 = keys.find((k) => k.endsWith("quant_state.bitsandbytes__fp4"));
      if (fp4) throw new Error(`bitsandbytes: ${fp4} is an FP4 weight; only NF4 is supported`);
      throw new Error(`parseBnbNf4: expected exactly one "*.${STATE_KEY}" tensor, found ${states.length}${states.length ? ` (${states.join(", ")}); pass the weight name` : ""}`);
    }
    name = states[0].slice(0, -(STATE_KEY.length + 1));
  }
  const need = (suffix: string) => {
    const t = getTensor(tensors, `${name}${suffix}`);
    if (!t) {
      if (suffix === `.${STATE_KEY}` && getTensor(tensors, `${name}.quant_state.bitsandbytes__fp4`)) throw new Error(`bitsandbytes: ${name} is an FP4 weight; only NF4 is supported`);
      throw new Error(`bitsandbytes NF4: missing tensor ${name}${suffix}`);
    }
    return t;
  };
  const stateT = need(`.${STATE_KEY}`);
  let state: Record<string, unknown>;
  try {
    state = JSON.parse(new TextDecoder().decode(stateT.bytes));
  } catch (err) {
    throw new Error(`bitsandbytes NF4: ${name}.${STATE_KEY} is not UTF-8 JSON (${(err as Error).message})`);
  }
  if (state.quant_type !== undefined && state.quant_type !== "nf4") throw new Error(`bitsandbytes: ${name} has quant_type ${String(state.quant_type)}; only nf4 is supported`);
  const shape = state.shape as number[];
  if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isInteger(d) && d > 0)) throw new Error(`bitsandbytes NF4: ${name} quant state shape ${JSON.stringify(shape)} is not [out_features, in_features]`);
  const blocksize = Number(state.blocksize);
  if (!(blocksize >= 8 && (blocksize & (blocksize - 1)) === 0)) throw new Error(`bitsandbytes NF4: ${name} blocksize ${String(state.blocksize)} is not a power of two ≥ 8`);
  const n = shape[0] * shape[1];
  const blocks = Math.ceil(n / blocksize);
  const w = need("");
  if (w.bytes.byteLength !== Math.ceil(n / 2)) throw new Error(`bitsandbytes NF4: ${name} holds ${w.bytes.byteLength} bytes, but a 4-bit [${shape.join(", ")}] needs ${Math.ceil(n / 2)}`);
  const quantMap = f32View(need(".quant_map"), `${name}.quant_map`);
  if (quantMap.length !== 16) throw new Error(`bitsandbytes NF4: ${name}.quant_map has ${quantMap.length} entries, expected 16`);
  const absT = need(".absmax");
  const nestedT = getTensor(tensors, `${name}.nested_absmax`);
  const dtype = normDtype(String(state.dtype ?? "float32"));
  if (nestedT || "nested_offset" in state) {
    if (!nestedT) throw new Error(`bitsandbytes NF4: missing tensor ${name}.nested_absmax (the quant state says nested)`);
    if (normDtype(absT.dtype) !== "uint8") throw new Error(`bitsandbytes NF4: ${name}.absmax has dtype ${absT.dtype}; nested (double-quantised) absmax must be U8`);
    if (absT.bytes.byteLength !== blocks) throw new Error(`bitsandbytes NF4: ${name}.absmax holds ${absT.bytes.byteLength} codes, expected ${blocks} blocks`);
    const nb = Number(state.nested_blocksize ?? 256);
    const absmax2 = f32View(nestedT, `${name}.nested_absmax`);
    if (absmax2.length !== Math.ceil(blocks / nb)) throw new Error(`bitsandbytes NF4: ${name}.nested_absmax has ${absmax2.length} values, expected ${Math.ceil(blocks / nb)}`);
    const nmap = f32View(need(".nested_quant_map"), `${name}.nested_quant_map`);
    if (nmap.length !== 256) throw new Error(`bitsandbytes NF4: ${name}.nested_quant_map has ${nmap.length} entries, expected 256`);
    const offset = Number(state.nested_offset);
    if (!Number.isFinite(offset)) throw new Error(`bitsandbytes NF4: ${name} quant state has no finite nested_offset`);
    return {
      shape: [shape[0], shape[1]],
      blocksize,
      dtype,
      packed: w.bytes.slice(),
      quantMap,
      absmax: null,
      nested: { qabsmax: absT.bytes.slice(), absmax2, quantMap: nmap, blocksize: nb, offset: f32(offset), dtype: normDtype(String(state.nested_dtype ?? "float32")) },
    };
  }
  const absmax = f32View(absT, `${name}.absmax`);
  if (absmax.length !== blocks) throw new Error(`bitsandbytes NF4: ${name}.absmax has ${absmax.length} values, expected ${blocks} blocks`);
  return { shape: [shape[0], shape[1]], blocksize, dtype, packed: w.bytes.slice(), quantMap, absmax, nested: null };
}

/** Python's repr() of a float (what json.dumps writes for `nested_offset`). */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (!Number.isFinite(x)) return x > 0 ? "Infinity" : "-Infinity";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const [mant, expStr] = x.toExponential().split("e");
  const exp = Number(expStr);
  const sign = mant.startsWith("-") ? "-" : "";
  const digits = mant.replace("-", "").replace(".", "");
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  }
  if (exp >= 0) {
    const int = digits.slice(0, exp + 1).padEnd(exp + 1, "0");
    return `${sign}${int}.${digits.slice(exp + 1) || "0"}`;
  }
  return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
}

/**
 * The tensors bitsandbytes writes for this weight (`Linear4bit._save_to_state_dict`), keyed `<name>`, `<name>.absmax`,
 * …, in bnb's order; the quant state is the UTF-8 JSON `json.dumps` produces.
 */
export function bnbNf4Tensors(s: Nf4HostState, name = "weight"): Record<string, BnbTensor> {
  const [N, K] = s.shape;
  const n = N * K;
  const bytesOf = (a: Float32Array) => new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
  const out: Record<string, BnbTensor> = {};
  out[name] = { dtype: "U8", shape: [Math.ceil(n / 2), 1], bytes: s.packed.slice(0, Math.ceil(n / 2)) };
  const blocks = Math.ceil(n / s.blocksize);
  if (s.nested) out[`${name}.absmax`] = { dtype: "U8", shape: [blocks], bytes: s.nested.qabsmax.slice(0, blocks) };
  else out[`${name}.absmax`] = { dtype: "F32", shape: [blocks], bytes: bytesOf(s.absmax!) };
  out[`${name}.quant_map`] = { dtype: "F32", shape: [16], bytes: bytesOf(s.quantMap) };
  let json = `{"quant_type": "nf4", "blocksize": ${s.blocksize}, "dtype": ${JSON.stringify(s.dtype)}, "shape": [${N}, ${K}]`;
  if (s.nested) {
    out[`${name}.nested_absmax`] = { dtype: "F32", shape: [s.nested.absmax2.length], bytes: bytesOf(s.nested.absmax2) };
    out[`${name}.nested_quant_map`] = { dtype: "F32", shape: [256], bytes: bytesOf(s.nested.quantMap) };
    json += `, "nested_blocksize": ${s.nested.blocksize}, "nested_dtype": ${JSON.stringify(s.nested.dtype)}, "nested_offset": ${pythonFloatRepr(s.nested.offset)}`;
  }
  json += "}";
  const js = new TextEncoder().encode(json);
  out[`${name}.${STATE_KEY}`] = { dtype: "U8", shape: [js.length], bytes: js };
  return out;
}

/** Load one bnb NF4 linear weight from its checkpoint tensors onto the GPU. */
export function loadBnbNf4(gpu: Gpu, tensors: Map<string, BnbTensor> | Record<string, BnbTensor>, name?: string): Nf4Weight {
  return uploadNf4(gpu, parseBnbNf4(tensors, name), name ?? "nf4");
}

/** The checkpoint tensors of a GPU NF4 weight (`name` = the weight's key, e.g. "model.layers.0.mlp.up_proj.weight"). */
export async function saveBnbNf4(gpu: Gpu, w: Nf4Weight, name = "weight"): Promise<Record<string, BnbTensor>> {
  return bnbNf4Tensors(await downloadNf4(gpu, w), name);
}
