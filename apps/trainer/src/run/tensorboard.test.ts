// TensorBoard events files are read back here with an independent TFRecord + protobuf reader (bitwise CRC-32C,
// hand-decoded wire format): every record's checksums must hold and every scalar must come back at its step.
import { describe, expect, it } from "vitest";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { StepMetrics } from "./folder.js";
import { crc32c, TensorBoardSink } from "./tensorboard.js";

/** Bit-by-bit CRC-32C (no table), as the reference for the writer's table-driven one. */
function crc32cBitwise(data: Uint8Array): number {
  let c = ~0 >>> 0;
  for (const byte of data) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0x82f63b78 & -(c & 1));
  }
  return ~c >>> 0;
}
const mask = (c: number) => (((c >>> 15) | (c << 17)) + 0xa282ead8) >>> 0;

interface Field {
  no: number;
  wire: number;
  value: bigint | Uint8Array | DataView;
}

function fields(buf: Uint8Array): Field[] {
  const out: Field[] = [];
  let i = 0;
  const varint = () => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const b = buf[i++];
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (i < buf.length) {
    const k = Number(varint());
    const [no, wire] = [k >> 3, k & 7];
    if (wire === 0) out.push({ no, wire, value: varint() });
    else if (wire === 1) (out.push({ no, wire, value: new DataView(buf.buffer, buf.byteOffset + i, 8) }), (i += 8));
    else if (wire === 5) (out.push({ no, wire, value: new DataView(buf.buffer, buf.byteOffset + i, 4) }), (i += 4));
    else if (wire === 2) {
      const n = Number(varint());
      out.push({ no, wire, value: buf.subarray(i, i + n) });
      i += n;
    } else throw new Error(`wire type ${wire}`);
  }
  return out;
}

interface Event {
  wallTime: number;
  step: number;
  fileVersion?: string;
  scalars: Record<string, number>;
}

function readEvents(path: string): Event[] {
  const b = new Uint8Array(readFileSync(path));
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const out: Event[] = [];
  for (let off = 0; off < b.length; ) {
    const len = Number(dv.getBigUint64(off, true));
    expect(dv.getUint32(off + 8, true)).toBe(mask(crc32cBitwise(b.subarray(off, off + 8))));
    const data = b.subarray(off + 12, off + 12 + len);
    expect(dv.getUint32(off + 12 + len, true)).toBe(mask(crc32cBitwise(data)));
    off += 16 + len;
    const ev: Event = { wallTime: NaN, step: 0, scalars: {} };
    for (const f of fields(data)) {
      if (f.no === 1) ev.wallTime = (f.value as DataView).getFloat64(0, true);
      else if (f.no === 2) ev.step = Number(f.value as bigint);
      else if (f.no === 3) ev.fileVersion = new TextDecoder().decode(f.value as Uint8Array);
      else if (f.no === 5) {
        for (const v of fields(f.value as Uint8Array)) {
          const parts = fields(v.value as Uint8Array);
          const tag = new TextDecoder().decode(parts.find((p) => p.no === 1)!.value as Uint8Array);
          ev.scalars[tag] = (parts.find((p) => p.no === 2)!.value as DataView).getFloat32(0, true);
        }
      }
    }
    out.push(ev);
  }
  return out;
}

describe("TensorBoard sink", () => {
  it("CRC-32C: the standard check value, and table = bitwise on random bytes", () => {
    expect(crc32c(new TextEncoder().encode("123456789"))).toBe(0xe3069283);
    for (const n of [0, 1, 7, 64, 1001]) {
      const d = Uint8Array.from({ length: n }, () => Math.floor(Math.random() * 256));
      expect(crc32c(d)).toBe(crc32cBitwise(d));
    }
  });

  it("writes tfevents records that read back: file_version first, then each row's scalars at its step", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nr-tb-"));
    try {
      let t = 1_700_000_000.25;
      const sink = new TensorBoardSink(dir, { now: () => (t += 1) });
      const rows: StepMetrics[] = [];
      for (let s = 1; s <= 30; s++) rows.push({ step: s, phase: s <= 10 ? "sft" : "rl", loss: Math.exp(-s / 7) + Math.random() * 1e-3, ...(s > 10 ? { reward: s / 30, entropy: 1 - s / 60 } : {}) });
      rows.push({ step: 30, phase: "eval", eval_accuracy: 0.375, eval_label: "after RL" });
      rows.push({ step: 2 ** 40, phase: "rl", reward: -1.5 }); // a step beyond 32 bits
      rows.push({ step: 31, phase: "rl", note: "no scalars here" }); // nothing to write
      for (const r of rows) sink.log(r);
      await sink.close();
      expect(() => sink.log(rows[0])).toThrow(/closed/);
      const events = readEvents(sink.path);
      expect(events[0].fileVersion).toBe("brain.Event:2");
      expect(events[0].wallTime).toBe(1_700_000_002.25); // now() #1 named the file, #2 stamped file_version
      const written = rows.filter((r) => Object.keys(r).some((k) => k !== "step" && k !== "phase" && typeof r[k] === "number"));
      expect(events.length).toBe(1 + written.length);
      written.forEach((r, i) => {
        const ev = events[i + 1];
        expect(ev.step).toBe(r.step);
        expect(ev.wallTime).toBe(1_700_000_003.25 + i);
        const want = Object.fromEntries(Object.entries(r).filter(([k, v]) => k !== "step" && k !== "phase" && typeof v === "number").map(([k, v]) => [`${r.phase}/${k}`, Math.fround(v as number)]));
        expect(ev.scalars).toEqual(want);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
