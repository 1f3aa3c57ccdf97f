// TensorBoard event files, written directly (no TensorFlow): a TFRecord stream of `Event` protobufs.
//   record  = u64 length (LE) · u32 masked_crc32c(length bytes) · data · u32 masked_crc32c(data)
//   masked  = ((crc >>> 15) | (crc << 17)) + 0xa282ead8   (mod 2³²), CRC-32C = Castagnoli, reflected 0x82F63B78
//   Event   = { 1: double wall_time, 2: int64 step, 3: string file_version | 5: Summary summary }
//   Summary = { 1: repeated Value },  Value = { 1: string tag, 2: float simple_value }
// The first event carries file_version "brain.Event:2"; then one event per metrics row with all its scalars.
import { closeSync, mkdirSync, openSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { metricScalars, type MetricsSink, type StepMetrics } from "./folder.js";

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32C (Castagnoli) of `data`. */
export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC32C_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** The TFRecord checksum: CRC-32C rotated right by 15 bits plus a constant. */
export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord: length, its masked CRC, the data, the data's masked CRC. */
export function tfRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(16 + data.length);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(data.length), true);
  dv.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  dv.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

// ---- a minimal protobuf encoder (only what Event needs) -----------------------------------------------------------

function varint(v: bigint | number, out: number[]): void {
  let x = BigInt.asUintN(64, BigInt(v));
  while (x >= 0x80n) {
    out.push(Number(x & 0x7fn) | 0x80);
    x >>= 7n;
  }
  out.push(Number(x));
}

const key = (field: number, wire: number, out: number[]) => varint((field << 3) | wire, out);

function bytesField(field: number, bytes: Uint8Array | number[], out: number[]) {
  key(field, 2, out);
  varint(bytes.length, out);
  for (const b of bytes) out.push(b);
}

function doubleField(field: number, v: number, out: number[]) {
  key(field, 1, out);
  const b = new Uint8Array(8);
  new DataView(b.buffer).setFloat64(0, v, true);
  out.push(...b);
}

function floatField(field: number, v: number, out: number[]) {
  key(field, 5, out);
  const b = new Uint8Array(4);
  new DataView(b.buffer).setFloat32(0, v, true);
  out.push(...b);
}

const utf8 = (s: string) => new TextEncoder().encode(s);

/** An `Event` with `file_version` (the first record of every events file). */
export function fileVersionEvent(wallTime: number): Uint8Array {
  const out: number[] = [];
  doubleField(1, wallTime, out);
  bytesField(3, utf8("brain.Event:2"), out);
  return Uint8Array.from(out);
}

/** An `Event` at `step` whose summary holds one simple_value per tag. */
export function scalarsEvent(wallTime: number, step: number, scalars: Record<string, number>): Uint8Array {
  const summary: number[] = [];
  for (const [tag, v] of Object.entries(scalars)) {
    const value: number[] = [];
    bytesField(1, utf8(tag), value);
    floatField(2, v, value);
    bytesField(1, value, summary);
  }
  const out: number[] = [];
  doubleField(1, wallTime, out);
  key(2, 0, out);
  varint(step, out);
  bytesField(5, summary, out);
  return Uint8Array.from(out);
}

let fileCounter = 0;

/** Writes `events.out.tfevents.*` into a folder (`tensorboard --logdir <run>/tensorboard`). Each row is written at once. */
export class TensorBoardSink implements MetricsSink {
  readonly name = "tensorboard";
  readonly path: string;
  private fd: number | null;

  constructor(dir: string, o: { now?: () => number } = {}) {
    this.now = o.now ?? (() => Date.now() / 1000);
    mkdirSync(dir, { recursive: true });
    this.path = join(dir, `events.out.tfevents.${Math.floor(this.now())}.${hostname()}.${process.pid}.${fileCounter++}`);
    this.fd = openSync(this.path, "w");
    writeSync(this.fd, tfRecord(fileVersionEvent(this.now())));
  }

  private readonly now: () => number;

  log(row: StepMetrics): void {
    if (this.fd === null) throw new Error(`${this.path}: TensorBoard sink is closed`);
    const scalars = metricScalars(row);
    if (Object.keys(scalars).length === 0) return;
    writeSync(this.fd, tfRecord(scalarsEvent(this.now(), row.step, scalars)));
  }

  async close(): Promise<void> {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}
