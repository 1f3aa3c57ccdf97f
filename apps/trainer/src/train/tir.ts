// The TIR sandbox of a run or an eval: a warm @nr/sandbox pool and the tool hook that runs a completion's python
// blocks (TirTool). Attached to a generator, every completion it makes is tool-integrated; RL steps pass the same
// hook with their prompts. One place for the limits both use.
import type { TirStats, TirTool } from "@nr/sandbox";
import type { TokenizerLike, WebGpuGenerator } from "@nr/rollout";

/** Per completion at most 4 calls of 5 s, output cut at 512 characters (the order of Qwen2.5-Math's evaluation). */
export const TIR_LIMITS = { maxCalls: 4, maxOutputChars: 512, timeoutMs: 5000 };

export interface TirSandbox {
  tool: TirTool;
  /** One line: calls per completion, errors, timeouts, skipped blocks. */
  describe(): string;
  close(): Promise<void>;
}

export async function startTirSandbox(tokenizer: TokenizerLike, log: (line: string) => void): Promise<TirSandbox> {
  const { SandboxPool, TirTool } = await import("@nr/sandbox");
  const t0 = performance.now();
  const pool = new SandboxPool({ workers: 1, timeoutMs: TIR_LIMITS.timeoutMs });
  await pool.warm();
  log(`tir: Python sandbox warm in ${((performance.now() - t0) / 1000).toFixed(1)} s (preloaded: ${pool.config.preload.join(", ") || "nothing"}); at most ${TIR_LIMITS.maxCalls} calls per completion, ${TIR_LIMITS.timeoutMs} ms each, output cut at ${TIR_LIMITS.maxOutputChars} characters`);
  const tool = new TirTool(pool, tokenizer, TIR_LIMITS);
  return { tool, describe: () => describeTirStats(tool.stats), close: () => pool.close() };
}

export function describeTirStats(s: TirStats): string {
  return `tir: ${s.calls} tool calls in ${s.completions} completions (${(s.calls / Math.max(1, s.completions)).toFixed(2)} per completion), ${s.errors} errors, ${s.timeouts} timeouts, ${s.skipped} blocks past the per-completion limit`;
}

/** TIR rollouts (sequences with a toolMask): tool calls per completion (runs of tool tokens) and the tool-token share. */
export function toolUseMetrics(seqs: { tokenIds: number[]; toolMask?: number[] }[]): Record<string, number> {
  const withTool = seqs.filter((s) => s.toolMask);
  if (withTool.length === 0) return {};
  let calls = 0, toolTokens = 0, tokens = 0;
  for (const s of withTool) {
    s.toolMask!.forEach((m, j) => {
      toolTokens += m;
      if (m && (j === 0 || !s.toolMask![j - 1])) calls++;
    });
    tokens += s.tokenIds.length;
  }
  return { "tir/calls_per_completion": calls / withTool.length, "tir/tool_token_frac": tokens ? toolTokens / tokens : 0 };
}

/**
 * data.prompt tir in `nr train`: the sandbox, attached to the generator so every rollout and eval completion is
 * tool-integrated. Remote rollout servers cannot reach this process's sandbox: refused. `close()` logs the counts.
 */
export async function startRunTir(gen: Pick<WebGpuGenerator, "tool" | "tokenizer">, remoteRollouts: boolean, log: (line: string) => void): Promise<TirSandbox> {
  if (remoteRollouts) throw new Error("data.prompt tir: python runs in this process's sandbox, which remote rollouts (rl.rollout) cannot reach; drop rl.rollout or use another data.prompt");
  const tir = await startTirSandbox(gen.tokenizer, log);
  gen.tool = tir.tool;
  const close = async () => {
    gen.tool = null;
    log(tir.describe());
    await tir.close();
  };
  return { ...tir, close };
}

/** The RL step's metrics.jsonl fields for TIR (none without it). */
export function tirMetrics(tir: TirSandbox | null, extra: Record<string, number>): Record<string, number> {
  if (!tir) return {};
  return { tir_calls_per_completion: extra["tir/calls_per_completion"] ?? 0, tir_tool_token_frac: extra["tir/tool_token_frac"] ?? 0, tir_errors: tir.tool.stats.errors, tir_timeouts: tir.tool.stats.timeouts };
}
