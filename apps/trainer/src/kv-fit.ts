// One layer's KV cache is one storage binding (K and V each [rows × tokens × kv heads × head dim] f32): whether a
// generation's rows × tokens fit the adapter's limit, and if not, a message with the most rows / tokens that would
// and the keys or flags that set them. Pure (no GPU import): the CLI's commands call it before any GPU work.
import type { ModelConfig } from "@nr/model";

/** Bytes of one layer's K (or V) cache, f32, for `rows` sequences of `tokens` tokens: one storage binding. */
export function kvLayerBytes(m: Pick<ModelConfig, "numKvHeads" | "headDim">, rows: number, tokens: number): number {
  return rows * tokens * m.numKvHeads * m.headDim * 4;
}

/**
 * Null when one layer's K/V cache for `rows` × `tokens` fits one binding of `limit` bytes; else a message saying what
 * (`what`), the size, the most rows / tokens that would fit, and the keys or flags that set them (`knobs`).
 */
export function kvCacheProblem(m: Pick<ModelConfig, "numKvHeads" | "headDim">, what: string, rows: number, tokens: number, limit: number, knobs: string): string | null {
  const bytes = kvLayerBytes(m, rows, tokens);
  if (bytes <= limit) return null;
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const maxRows = Math.floor(limit / kvLayerBytes(m, 1, tokens));
  const maxTokens = Math.floor(limit / kvLayerBytes(m, rows, 1));
  return (
    `${what}: one layer's K (and V) cache for ${rows} sequences × ${tokens} tokens is ${mib(bytes)} in one binding, over this adapter's ` +
    `maxStorageBufferBindingSize (${mib(limit)}); at most ${maxRows} sequences of ${tokens} tokens or ${rows} of ${maxTokens} tokens fit. Lower ${knobs}.`
  );
}
