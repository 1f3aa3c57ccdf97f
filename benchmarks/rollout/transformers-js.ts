// The transformers.js peer of `pnpm bench rollout`: the benchmark's checkpoint exported by `nr export`'s folder
// writer (a KV-cache graph), loaded by @huggingface/transformers v3 (AutoModelForCausalLM on onnxruntime-node's CPU
// EP) and decoded greedily by its own generate() with its KV cache. Every row of a batch is one sequence (G
// completions of a prompt are G rows with the same prompt: transformers.js has no shared prefill). The end token is
// switched off (eos_token_id null), so every row decodes exactly `newTokens` tokens, as on our side.
// transformers.js times prefill and decode as one call: its prefill is a generate() of 1 new token, its decode time
// the rest of a full generate() (best of `iters` each).
import { join } from "node:path";
import { exportTransformersJs } from "@nr/model";

export interface TjsRun {
  tokens: number[][];
  prefillMs: number;
  decodeMs: number;
}

export interface TjsPeer {
  label: string;
  /** Greedy completions of `rows` (prompt ids, all the same length), best of `iters` timings. */
  greedy(rows: number[][], newTokens: number, iters: number): Promise<TjsRun>;
  release(): Promise<void>;
}

/** Exports `modelDir` into `workDir/tjs` and opens it in transformers.js; null (with the reason) when that fails. */
export async function openTransformersJsPeer(modelDir: string, workDir: string): Promise<{ peer: TjsPeer | null; error?: string }> {
  try {
    const tjs = await import("@huggingface/transformers");
    const dir = join(workDir, "tjs");
    await exportTransformersJs(modelDir, dir);
    const model = await tjs.AutoModelForCausalLM.from_pretrained(dir, { device: "cpu" });
    const generate = async (rows: number[][], n: number) => {
      const shape = [rows.length, rows[0].length];
      const input_ids = new tjs.Tensor("int64", BigInt64Array.from(rows.flat(), BigInt), shape);
      const attention_mask = new tjs.Tensor("int64", new BigInt64Array(rows.length * rows[0].length).fill(1n), shape);
      const t0 = performance.now();
      const out = (await model.generate({ input_ids, attention_mask, max_new_tokens: n, do_sample: false, eos_token_id: null } as never)) as InstanceType<typeof tjs.Tensor>;
      const ms = performance.now() - t0;
      return { ms, tokens: (out.tolist() as bigint[][]).map((r) => r.slice(rows[0].length).map(Number)) };
    };
    const peer: TjsPeer = {
      label: `transformers.js ${tjs.env.version} generate (KV cache, onnxruntime-node CPU EP)`,
      async greedy(rows, newTokens, iters) {
        let prefillMs = Infinity;
        let totalMs = Infinity;
        let tokens: number[][] = [];
        for (let i = 0; i < iters; i++) {
          prefillMs = Math.min(prefillMs, (await generate(rows, 1)).ms);
          const full = await generate(rows, newTokens);
          totalMs = Math.min(totalMs, full.ms);
          tokens = full.tokens;
        }
        return { tokens, prefillMs, decodeMs: Math.max(0, totalMs - prefillMs) };
      },
      release: async () => {
        await model.dispose();
      },
    };
    await peer.greedy([Array.from({ length: 8 }, (_, i) => i + 1)], 2, 1); // warm-up
    return { peer };
  } catch (e) {
    return { peer: null, error: `transformers.js peer unavailable: ${(e as Error).message}` };
  }
}
