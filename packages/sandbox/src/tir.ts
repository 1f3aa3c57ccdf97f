// Tool-integrated reasoning (the Qwen2.5-Math TIR format): when a completion closes a ```python block, the block
// runs in the sandbox and "```output\n…\n```\n" is appended; the model then goes on. A TirTool is a tool hook for
// @nr/rollout's generator (structurally: start() → a per-sequence session whose afterToken returns a promise of
// token ids to append, or null); this package does not depend on the generator.
import type { SandboxPool } from "./pool.js";
import type { SandboxResult } from "./protocol.js";

export interface TirTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string;
}

export interface TirOptions {
  /** Tool calls per completion; later blocks are not run (the model just goes on). Default 4. */
  maxCalls?: number;
  /** Characters of output inserted per call (longer output is cut, and says so). Default 512. */
  maxOutputChars?: number;
  /** Wall-clock limit per call (ms). Default: the pool's. */
  timeoutMs?: number;
}

/** Counts over every sequence started with this tool (for metrics: calls per completion, errors, timeouts). */
export interface TirStats {
  completions: number;
  calls: number;
  /** Calls that ended with a Python error, a memory/output limit or a crash. */
  errors: number;
  timeouts: number;
  /** Closed python blocks not run because the completion had used maxCalls. */
  skipped: number;
}

const OPEN = "```python";
const FENCE = "```";

/**
 * The code of the ```python block that `text` ends with (its closing fence is the last non-blank text), and where
 * the block starts; null when the text does not end by closing a python block.
 */
export function closedPythonBlock(text: string): { code: string; start: number } | null {
  const start = text.lastIndexOf(OPEN);
  if (start < 0) return null;
  const body = start + OPEN.length;
  const close = text.indexOf(FENCE, body);
  if (close < 0 || text.slice(close + FENCE.length).trim() !== "") return null;
  return { code: text.slice(body, close).replace(/^[^\n]*\n/, ""), start };
}

/**
 * What the model reads back: stdout (cut to `maxChars`, and saying so), then for a failed run the error's last line
 * (as Qwen2.5-Math's executor reports it; never cut away by long output).
 */
export function toolOutputText(r: SandboxResult, maxChars: number): string {
  let out = r.stdout.replace(/\n+$/, "");
  if (out.length > maxChars) out = `${out.slice(0, maxChars)}\n… (output cut at ${maxChars} characters)`;
  if (r.status === "ok") return out;
  const error = r.status === "timeout" ? `TimeoutError: ${r.reason}` : (r.reason ?? r.status);
  return (out ? `${out}\n` : "") + error.slice(0, 300);
}

export class TirTool {
  readonly stats: TirStats = { completions: 0, calls: 0, errors: 0, timeouts: 0, skipped: 0 };
  private readonly maxCalls: number;
  private readonly maxOutputChars: number;

  constructor(
    readonly pool: SandboxPool,
    readonly tokenizer: TirTokenizer,
    readonly opts: TirOptions = {},
  ) {
    this.maxCalls = opts.maxCalls ?? 4;
    this.maxOutputChars = opts.maxOutputChars ?? 512;
    if (!(Number.isInteger(this.maxCalls) && this.maxCalls >= 0)) throw new Error(`TirTool: maxCalls must be an integer >= 0 (got ${this.maxCalls})`);
    if (!(Number.isInteger(this.maxOutputChars) && this.maxOutputChars >= 1)) throw new Error(`TirTool: maxOutputChars must be an integer >= 1 (got ${this.maxOutputChars})`);
  }

  /** One session per generated sequence. */
  start(): { afterToken(tokenIds: readonly number[]): Promise<number[]> | null } {
    this.stats.completions++;
    let calls = 0;
    let lastBlock = -1;
    return {
      afterToken: (tokenIds) => {
        // Cheap test first: a fence can only have just closed if the last few tokens hold a backtick.
        if (!this.tokenizer.decode(tokenIds.slice(-4), { skipSpecialTokens: true }).includes("`")) return null;
        const text = this.tokenizer.decode(tokenIds, { skipSpecialTokens: true });
        const block = closedPythonBlock(text);
        if (!block || block.start === lastBlock) return null;
        lastBlock = block.start;
        if (calls >= this.maxCalls) {
          this.stats.skipped++;
          return null;
        }
        calls++;
        return this.call(block.code, text.endsWith("\n"));
      },
    };
  }

  private async call(code: string, atLineStart: boolean): Promise<number[]> {
    this.stats.calls++;
    const r = await this.pool.run(code, this.opts.timeoutMs !== undefined ? { timeoutMs: this.opts.timeoutMs } : {});
    if (r.status === "timeout") this.stats.timeouts++;
    else if (r.status !== "ok") this.stats.errors++;
    const text = `${atLineStart ? "" : "\n"}\`\`\`output\n${toolOutputText(r, this.maxOutputChars)}\n\`\`\`\n`;
    return this.tokenizer.encode(text, { addSpecialTokens: false });
  }
}
