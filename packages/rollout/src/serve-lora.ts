// The adapters `nr serve` serves, and vLLM's runtime LoRA routes over them (/v1/load_lora_adapter,
// /v1/unload_lora_adapter): request checks with vLLM's messages, types and status codes, lora_path confined to a root,
// and the GPU change queued behind the requests that arrived before it (see serve.ts).
import { realpath } from "node:fs/promises";
import { isAbsolute, relative, resolve, sep } from "node:path";
import { ApiError } from "./serve-errors.js";

/**
 * Loading LoRA adapters while serving. `read` does the file work (and the checks that can refuse an adapter, as an
 * ApiError); `install` and `remove` change GPU state and are only called while no batch runs.
 */
export interface RuntimeLora<T = unknown> {
  read(name: string, path: string): Promise<T>;
  install(name: string, data: T): void;
  remove(name: string): void;
  /** lora_path must resolve (symlinks followed) to this folder or inside it; relative paths start here. */
  root?: string;
}

/** vLLM's error for the runtime LoRA routes: its type name and the HTTP status as code. */
export const loraError = (status: number, type: "InvalidUserInput" | "NotFoundError" | "BadRequestError", message: string, param: string | null = null) => new ApiError(status, message, param, status, type);

/** `lora_path` → an absolute real path, refused when it climbs with `..` or leaves `root` (symlinks followed). */
async function confinedPath(name: string, raw: string, root: string | undefined): Promise<string> {
  if (raw.split(/[\\/]/).includes("..")) throw loraError(400, "BadRequestError", `lora_path "${raw}" contains "..": give the adapter folder without parent steps`, "lora_path");
  const abs = resolve(root ?? process.cwd(), raw);
  let real: string;
  try {
    real = await realpath(abs);
  } catch {
    throw loraError(404, "NotFoundError", `Loading lora ${name} failed: No adapter found for ${raw}`, "lora_path");
  }
  if (root !== undefined) {
    const rootReal = await realpath(root);
    const rel = relative(rootReal, real);
    if (rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel)) throw loraError(400, "BadRequestError", `lora_path "${raw}" resolves to ${real}, outside this server's --lora-root ${rootReal}`, "lora_path");
  }
  return real;
}

type Body = Record<string, unknown>;

/** Served adapter names (with the folder a runtime load came from) and the load/unload requests that change them. */
export class ServedAdapters {
  private readonly served: Map<string, string | null>;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly baseModel: string,
    atStart: string[],
    private readonly lora: RuntimeLora | undefined,
    /** Runs a GPU change once the requests queued before it have finished. */
    private readonly control: (fn: () => void) => Promise<void>,
    private readonly log?: (line: string) => void,
  ) {
    this.served = new Map(atStart.map((a) => [a, null]));
  }

  get runtime(): boolean {
    return this.lora !== undefined;
  }

  has(name: string): boolean {
    return this.served.has(name);
  }

  names(): string[] {
    return [...this.served.keys()];
  }

  /** [name, the folder it was loaded from at runtime, or null when given at start]. */
  entries(): [string, string | null][] {
    return [...this.served];
  }

  /** Loads and unloads one at a time, in arrival order (a check and its change see no other change between them). */
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => {});
    return next;
  }

  /** POST /v1/load_lora_adapter {lora_name, lora_path, load_inplace}: vLLM's plain-text success message. */
  async load(b: Body): Promise<string> {
    const lora = this.lora!;
    const { lora_name: name, lora_path: path } = b;
    if (typeof name !== "string" || typeof path !== "string" || !name || !path) throw loraError(400, "InvalidUserInput", "Both 'lora_name' and 'lora_path' must be provided.");
    if (b.load_inplace !== undefined && b.load_inplace !== null && typeof b.load_inplace !== "boolean") throw loraError(400, "InvalidUserInput", `load_inplace must be true or false (got ${JSON.stringify(b.load_inplace)?.slice(0, 40)})`, "load_inplace");
    if (name === this.baseModel) throw loraError(400, "InvalidUserInput", `'${name}' is the base model's served name; pick another lora_name`, "lora_name");
    return this.serialized(async () => {
      if (this.served.has(name) && b.load_inplace !== true) throw loraError(400, "InvalidUserInput", `The lora adapter '${name}' has already been loaded. If you want to load the adapter in place, set 'load_inplace' to True.`);
      const real = await confinedPath(name, path, lora.root);
      const data = await lora.read(name, real);
      await this.control(() => lora.install(name, data));
      this.served.set(name, real);
      this.log?.(`loaded LoRA adapter '${name}' from ${real}`);
      return `Success: LoRA adapter '${name}' added successfully.`;
    });
  }

  /** POST /v1/unload_lora_adapter {lora_name}. */
  async unload(b: Body): Promise<string> {
    const name = b.lora_name;
    if (typeof name !== "string" || !name) throw loraError(400, "InvalidUserInput", "'lora_name' needs to be provided to unload a LoRA adapter.");
    return this.serialized(async () => {
      if (!this.served.has(name)) throw loraError(404, "NotFoundError", `The lora adapter '${name}' cannot be found.`, "lora_name");
      this.served.delete(name); // new requests for it get 404 now; queued ones finish before the weights go
      await this.control(() => this.lora!.remove(name));
      this.log?.(`unloaded LoRA adapter '${name}'`);
      return `Success: LoRA adapter '${name}' removed successfully.`;
    });
  }
}
