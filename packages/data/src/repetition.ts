/**
 * The length-explosion guard: a completion whose last tokens are one block repeated over and over is looping (the
 * failure small reasoning models show on long budgets), and decoding it to the token cap only burns time. The
 * detector ends such a completion early with finish reason "repetition". The GPU generator (@nr/rollout) and the
 * scripted test generator honour it; a remote OpenAI-compatible server (vLLM) has no such stop and ignores it.
 *
 * A completion is looping when, for some period p ≤ maxPeriod, its last L tokens have period p (token i equals
 * token i − p throughout) with L ≥ minRepeats · p and L ≥ minTokens. The minimum span keeps legitimate short runs
 * ("0000", "= = =") from tripping it; the repeat count keeps a long period from tripping on a single echo.
 */

export interface RepetitionStop {
  /** Longest repeated block looked for, in tokens (default 64). */
  maxPeriod?: number;
  /** How many copies of the block in a row end the completion (default 4). */
  minRepeats?: number;
  /** The repeating tail must be at least this many tokens long (default 64). */
  minTokens?: number;
}

export const REPETITION_STOP_DEFAULTS: Required<RepetitionStop> = { maxPeriod: 64, minRepeats: 4, minTokens: 64 };

/** The settings with defaults filled in; throws naming the field when one is not a positive integer. */
export function resolveRepetitionStop(r: RepetitionStop): Required<RepetitionStop> {
  const out = { ...REPETITION_STOP_DEFAULTS, ...r };
  for (const [k, v] of Object.entries(out)) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`repetitionStop.${k} must be a positive integer (got ${v})`);
  }
  if (out.minRepeats < 2) throw new Error(`repetitionStop.minRepeats must be at least 2 (got ${out.minRepeats}): one copy is no repetition`);
  return out;
}

/**
 * Incremental detector, O(maxPeriod) per token: for every period p it keeps how many tokens in a row have equalled
 * the token p back, so the periodic tail of period p is that run plus p tokens long.
 */
export class RepeatDetector {
  private readonly opts: Required<RepetitionStop>;
  /** run[p]: consecutive most recent tokens equal to the token p positions earlier. */
  private readonly run: Int32Array;
  /** The last maxPeriod tokens, as a ring. */
  private readonly ring: Int32Array;
  private count = 0;

  constructor(settings: RepetitionStop = {}) {
    this.opts = resolveRepetitionStop(settings);
    this.run = new Int32Array(this.opts.maxPeriod + 1);
    this.ring = new Int32Array(this.opts.maxPeriod);
  }

  /** Appends one token; true when the completion is now looping. */
  push(token: number): boolean {
    const { maxPeriod, minRepeats, minTokens } = this.opts;
    let looping = false;
    for (let p = 1; p <= maxPeriod; p++) {
      if (p > this.count) {
        this.run[p] = 0;
        continue;
      }
      const back = this.ring[(this.count - p) % maxPeriod];
      this.run[p] = back === token ? this.run[p] + 1 : 0;
      const tail = this.run[p] + p;
      if (this.run[p] > 0 && tail >= minRepeats * p && tail >= minTokens) looping = true;
    }
    this.ring[this.count % maxPeriod] = token;
    this.count++;
    return looping;
  }
}

/** Index (exclusive) at which the detector first fires on `tokens`, or -1 when it never does. */
export function firstRepetition(tokens: readonly number[], settings: RepetitionStop = {}): number {
  const d = new RepeatDetector(settings);
  for (let i = 0; i < tokens.length; i++) if (d.push(tokens[i])) return i + 1;
  return -1;
}
