// Node only. The node: modules are imported lazily so that evaluate() (which imports this module)
// stays usable in browsers when no outputPath is given.
import type { WriteStream } from "node:fs";

function dirname(p: string): string {
  const i = Math.max(p.lastIndexOf("/"), p.lastIndexOf("\\"));
  return i > 0 ? p.slice(0, i) : i === 0 ? p[0] : ".";
}

/** Writes values as JSON lines to a file, in order; `close()` flushes. Creates the parent folder. */
export class JsonlWriter {
  private stream: WriteStream | null = null;
  private readonly path: string;
  private count = 0;
  private closed = false;

  constructor(path: string) {
    this.path = path;
  }

  /** Lines written so far. */
  get lines(): number {
    return this.count;
  }

  async write(values: readonly unknown[]): Promise<void> {
    if (this.closed) throw new Error(`${this.path}: JsonlWriter already closed`);
    if (!this.stream) {
      const { mkdir } = await import("node:fs/promises");
      const { createWriteStream } = await import("node:fs");
      await mkdir(dirname(this.path), { recursive: true });
      this.stream = createWriteStream(this.path, { flags: "w" });
    }
    const text = values.map((v) => JSON.stringify(v)).join("\n");
    if (values.length === 0) return;
    this.count += values.length;
    const s = this.stream;
    await new Promise<void>((resolve, reject) => s.write(text + "\n", (e) => (e ? reject(e) : resolve())));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.stream) {
      // Nothing written: still leave an (empty) file behind.
      const { mkdir, writeFile } = await import("node:fs/promises");
      await mkdir(dirname(this.path), { recursive: true });
      await writeFile(this.path, "");
      return;
    }
    const s = this.stream;
    this.stream = null;
    await new Promise<void>((resolve, reject) => s.end((e?: Error | null) => (e ? reject(e) : resolve())));
  }
}

/** Writes values to a JSONL file (overwriting it). */
export async function writeJsonl(path: string, values: readonly unknown[]): Promise<void> {
  const { mkdir, writeFile } = await import("node:fs/promises");
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, values.map((v) => JSON.stringify(v) + "\n").join(""));
}

/** Reads a JSONL file strictly (throws on a malformed line, with its number). For datasets use loadDataset. */
export async function readJsonl<T = unknown>(path: string): Promise<T[]> {
  const { readFile } = await import("node:fs/promises");
  const out: T[] = [];
  const lines = (await readFile(path, "utf8")).split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() === "") continue;
    try {
      out.push(JSON.parse(lines[i]) as T);
    } catch (e) {
      throw new Error(`${path}:${i + 1}: ${(e as Error).message}`);
    }
  }
  return out;
}
