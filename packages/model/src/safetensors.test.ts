import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  SafetensorsCheckpoint,
  SafetensorsError,
  SafetensorsFile,
  encodeFloats,
  writeSafetensors,
  writeSafetensorsCheckpoint,
  type TensorToWrite,
} from "./safetensors.js";
import { f16BitsToNumber, f32ToF16, roundToBf16, toF16Bits } from "./dtypes.js";
import { Rng } from "./generate.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "nr-st-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function randomF32(n: number, seed: string, scale = 1): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => scale * rng.normal());
}

/** A hand-made file: 8-byte length + header JSON (unpadded) + data. */
function rawFile(header: unknown, data: Uint8Array, headerLen?: number): Uint8Array {
  const h = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLen ?? h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

describe("safetensors writer and reader", () => {
  it("round-trips all dtypes with metadata; header padded to 8, each tensor aligned to its element size", async () => {
    const f32 = randomF32(6, "a");
    const tensors: TensorToWrite[] = [
      { name: "u8", dtype: "U8", shape: [3], data: Uint8Array.of(1, 2, 255) },
      { name: "f32", dtype: "F32", shape: [2, 3], data: f32 },
      { name: "bf16", dtype: "BF16", shape: [2, 3], data: encodeFloats(f32, "BF16") },
      { name: "f16", dtype: "F16", shape: [3, 2], data: () => encodeFloats(f32, "F16") },
      { name: "f64", dtype: "F64", shape: [2], data: Float64Array.of(Math.PI, -1e300) },
      { name: "i64", dtype: "I64", shape: [2], data: BigInt64Array.of(-5n, 1n << 40n) },
      { name: "i32", dtype: "I32", shape: [1, 1], data: Int32Array.of(-7) },
      { name: "scalar", dtype: "F32", shape: [], data: Float32Array.of(2.5) },
      { name: "empty", dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
    ];
    const path = join(dir, "all.safetensors");
    await writeSafetensors(path, tensors, { format: "pt", note: "hi" });
    const bytes = await readFile(path);
    const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    expect(header.__metadata__).toEqual({ format: "pt", note: "hi" });
    const f = await SafetensorsFile.open(path);
    try {
      expect(f.metadata()).toEqual({ format: "pt", note: "hi" });
      expect(new Set(f.names())).toEqual(new Set(tensors.map((t) => t.name)));
      for (const name of f.names()) {
        const info = f.info(name);
        expect(info.fileOffset % ({ U8: 1, I32: 4, F32: 4, BF16: 2, F16: 2, F64: 8, I64: 8 } as Record<string, number>)[info.dtype]).toBe(0);
      }
      expect(await f.readF32("f32")).toEqual(f32);
      expect([...(await f.readF32("bf16"))]).toEqual([...f32].map(roundToBf16));
      expect([...(await f.readF32("f16"))]).toEqual([...f32].map((x) => f16BitsToNumber(toF16Bits(x))));
      expect(await f.readF16("f32")).toEqual(f32ToF16(f32));
      expect([...(await f.readF16("f64"))].map(f16BitsToNumber)).toEqual([3.140625, -Infinity]);
      expect([...(await f.readTyped("i64"))]).toEqual([-5n, 1n << 40n]);
      expect([...(await f.readTyped("i32"))]).toEqual([-7]);
      expect([...(await f.readRaw("u8"))]).toEqual([1, 2, 255]);
      expect([...(await f.readF32("scalar"))]).toEqual([2.5]);
      expect((await f.readF32("empty")).length).toBe(0);
      expect(f.info("f16").shape).toEqual([3, 2]);
      await expect(f.readF32("i32")).rejects.toThrowError(/\[tensor i32\]: dtype I32 is not a floating type/);
    } finally {
      await f.close();
    }
  });

  it("chunked conversion and row ranges give the same values as whole reads", async () => {
    const rows = 37;
    const cols = 53;
    const vals = randomF32(rows * cols, "chunks", 3);
    const path = join(dir, "chunks.safetensors");
    await writeSafetensors(path, [
      { name: "w", dtype: "BF16", shape: [rows, cols], data: encodeFloats(vals, "BF16") },
      { name: "x", dtype: "F32", shape: [rows, cols], data: vals },
    ]);
    const f = await SafetensorsFile.open(path);
    try {
      const whole = await f.readF32("w");
      expect(await f.readF32("w", { chunkBytes: 24 })).toEqual(whole);
      expect(await f.readF16("w", { chunkBytes: 8 })).toEqual(await f.readF16("w"));
      expect(await f.readF16("x", { chunkBytes: 40 })).toEqual(f32ToF16(vals));
      expect(await f.readF32("w", { rows: { start: 5, count: 3 } })).toEqual(whole.subarray(5 * cols, 8 * cols));
      expect(await f.readF32("x", { rows: { start: 36, count: 1 } })).toEqual(vals.subarray(36 * cols));
      await expect(f.readF32("w", { rows: { start: 36, count: 2 } })).rejects.toThrowError(/rows \[36, 38\) out of range for shape \[37, 53\]/);
    } finally {
      await f.close();
    }
  });

  it("opens a 3.2 GB checkpoint reading only its header, and reads tensors by offset", async () => {
    // a sparse file: header + tiny tensor + a [49152, 32768] BF16 tensor (3.2 GB) that is never read whole
    const path = join(dir, "big.safetensors");
    const big = 49152 * 32768 * 2;
    const small = encodeFloats(Float32Array.of(1, 2, 3, 4), "F32");
    const header = {
      __metadata__: { format: "pt" },
      small: { dtype: "F32", shape: [4], data_offsets: [0, 16] },
      "model.embed_tokens.weight": { dtype: "BF16", shape: [49152, 32768], data_offsets: [16, 16 + big] },
    };
    const head = rawFile(header, small);
    await writeFile(path, head);
    await truncate(path, head.length + big);
    const before = process.memoryUsage();
    const f = await SafetensorsFile.open(path);
    try {
      expect(f.fileSize).toBeGreaterThan(3e9);
      expect([...(await f.readF32("small"))]).toEqual([1, 2, 3, 4]);
      const rows = await f.readF32("model.embed_tokens.weight", { rows: { start: 49150, count: 2 } });
      expect(rows.length).toBe(2 * 32768);
      expect(rows.every((x) => x === 0)).toBe(true);
      const after = process.memoryUsage();
      expect(after.arrayBuffers - before.arrayBuffers).toBeLessThan(64 << 20);
      expect(after.rss - before.rss).toBeLessThan(256 << 20);
    } finally {
      await f.close();
    }
  });

  it("writes and reads sharded checkpoints with an index", async () => {
    const sub = join(dir, "sharded");
    await rm(sub, { recursive: true, force: true });
    await import("node:fs/promises").then((m) => m.mkdir(sub));
    const tensors: TensorToWrite[] = Array.from({ length: 7 }, (_, i) => ({
      name: `t${i}`,
      dtype: "F16" as const,
      shape: [i + 1, 4],
      data: encodeFloats(randomF32((i + 1) * 4, `s${i}`), "F16"),
    }));
    const files = await writeSafetensorsCheckpoint(sub, tensors, { shards: 3 });
    expect(files).toEqual(["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "model.safetensors.index.json"]);
    const index = JSON.parse(await readFile(join(sub, "model.safetensors.index.json"), "utf8"));
    expect(index.metadata.total_size).toBe(tensors.reduce((s, t) => s + t.shape[0] * 4 * 2, 0));
    expect(Object.keys(index.weight_map).sort()).toEqual(tensors.map((t) => t.name).sort());
    const ck = await SafetensorsCheckpoint.open(sub);
    try {
      expect(ck.files.length).toBe(3);
      for (const t of tensors) expect(new Uint8Array((await ck.readF16(t.name)).buffer)).toEqual(t.data);
      await expect(ck.readF32("nope")).rejects.toThrowError(/model\.safetensors\.index\.json \[tensor nope\]: missing tensor/);
    } finally {
      await ck.close();
    }
    // an index naming a shard that is not there, or a tensor the shard does not hold
    await writeFile(join(sub, "model.safetensors.index.json"), JSON.stringify({ weight_map: { ...index.weight_map, t9: "model-00009-of-00009.safetensors" } }));
    await expect(SafetensorsCheckpoint.open(sub)).rejects.toThrowError(/shard model-00009-of-00009\.safetensors listed in weight_map does not exist/);
    await writeFile(join(sub, "model.safetensors.index.json"), JSON.stringify({ weight_map: { ...index.weight_map, t0: "model-00003-of-00003.safetensors" } }));
    await expect(SafetensorsCheckpoint.open(sub)).rejects.toThrowError(/weight_map puts tensor t0 in model-00003-of-00003\.safetensors, which does not hold it/);
  });

  describe("validation errors name the file and the tensor", () => {
    const cases: [string, Uint8Array, RegExp][] = [
      ["shorter than the length field", Uint8Array.of(1, 2, 3), /truncated header: file is 3 bytes/],
      ["header length beyond file size", rawFile({}, new Uint8Array(0), 1000), /header length 1000 goes beyond the file size/],
      ["corrupt JSON", rawFile('{"a": {"dtype": "F32",', new Uint8Array(0)), /corrupt header: invalid JSON/],
      ["header not an object", rawFile("[1, 2, 3]", new Uint8Array(0)), /corrupt header: not a JSON object/],
      ["unknown dtype", rawFile({ w: { dtype: "Q4_K", shape: [2], data_offsets: [0, 2] } }, new Uint8Array(2)), /\[tensor w\]: unknown dtype "Q4_K"/],
      ["span differs from shape", rawFile({ w: { dtype: "F32", shape: [2, 2], data_offsets: [0, 12] } }, new Uint8Array(12)), /\[tensor w\]: data_offsets \[0, 12\] span 12 bytes but shape \[2, 2\] of F32 needs 16/],
      ["offsets out of range (truncated data)", rawFile({ w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, new Uint8Array(10)), /\[tensor w\]: data_offsets \[0, 16\] out of range: the data region holds 10 bytes \(file truncated\?\)/],
      [
        "overlapping tensors",
        rawFile({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [2], data_offsets: [4, 12] } }, new Uint8Array(12)),
        /data of tensors a and b overlap/,
      ],
      ["bad shape", rawFile({ w: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4)), /\[tensor w\]: corrupt header: shape \[-1\]/],
      ["bad metadata", rawFile({ __metadata__: { n: 1 } }, new Uint8Array(0)), /__metadata__\.n must be a string/],
    ];
    for (const [what, bytes, re] of cases) {
      it(what, async () => {
        const path = join(dir, `bad-${what.replace(/\W+/g, "_")}.safetensors`);
        await writeFile(path, bytes);
        const err = await SafetensorsFile.open(path).then(
          () => null,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(SafetensorsError);
        expect((err as Error).message).toMatch(re);
        expect((err as Error).message.startsWith(path)).toBe(true);
      });
    }

    it("a file truncated after opening fails the read with the tensor named", async () => {
      const path = join(dir, "shrinks.safetensors");
      await writeSafetensors(path, [{ name: "w", dtype: "F32", shape: [1024], data: new Float32Array(1024) }]);
      const f = await SafetensorsFile.open(path);
      try {
        await truncate(path, f.fileSize - 100);
        await expect(f.readF32("w")).rejects.toThrowError(/\[tensor w\]: truncated file/);
      } finally {
        await f.close();
      }
    });

    it("a missing file or folder", async () => {
      await expect(SafetensorsFile.open(join(dir, "none.safetensors"))).rejects.toThrowError(/none\.safetensors: cannot open/);
      await expect(SafetensorsCheckpoint.open(dir)).rejects.toThrowError(/no model\.safetensors or model\.safetensors\.index\.json in this folder/);
    });
  });
});
