/**
 * Reward functions for the RL trainer: correctness (0/1 or ±1), an optional format bonus for
 * `<think>…</think>` followed by a boxed answer, and a GSM8K mode. Length terms (GRPO-LEAD, DAPO) live in @nr/algos.
 */
import { extractBoxed } from "./extract.js";
import { verify, type VerifyOptions, type VerifyResult } from "./verify.js";

export interface FormatOptions {
  /** Require the `</think>` that closes a reasoning block (default true). The opening `<think>` may sit in the prompt. */
  requireThink?: boolean;
}

/**
 * The format the system prompt asks for: one reasoning block closed by `</think>` (non-empty), then a complete
 * `\boxed{…}` after it. With `requireThink: false` only the boxed answer is required.
 */
export function formatOk(response: string, options: FormatOptions = {}): boolean {
  if (typeof response !== "string") return false;
  const requireThink = options.requireThink ?? true;
  const close = response.indexOf("</think>");
  if (requireThink) {
    if (close < 0 || response.indexOf("</think>", close + 1) >= 0) return false;
    const open = response.indexOf("<think>");
    if (open > close || (open >= 0 && response.indexOf("<think>", open + 1) >= 0)) return false;
    const reasoning = response.slice(open >= 0 ? open + 7 : 0, close);
    if (reasoning.trim() === "") return false;
  }
  const after = close >= 0 ? response.slice(close + 8) : response;
  return extractBoxed(after) !== null;
}

export interface RewardOptions extends VerifyOptions {
  /** `"binary"`: correct 1, wrong 0 (default). `"signed"`: correct +1, wrong −1 (DeepScaleR, DAPO). */
  scheme?: "binary" | "signed";
  /** Added when `formatOk` holds (LPRO: `r = 1[correct] + 0.1·1[format]`). Default 0. */
  formatBonus?: number;
  /** rllm-style gate: a response that fails the format gets `formatFailureReward` whatever its answer. Default false. */
  requireFormat?: boolean;
  /** Reward for a failed format under `requireFormat` (default 0). */
  formatFailureReward?: number;
  /** Reward when the verifier could not decide (timeout, worker crash). Default NaN: the trainer excludes it. */
  unscorableReward?: number;
  /** Format rule (default: `</think>` required when `formatBonus` or `requireFormat` is used). */
  format?: FormatOptions;
}

export interface RewardResult {
  reward: number;
  correct: boolean;
  formatOk: boolean;
  unscorable: boolean;
  verify: VerifyResult;
}

/** Turns a verification result (from `verify` or a `createVerifier` pool) into the trainer's reward. */
export function rewardFromResult(result: VerifyResult, response: string, options: RewardOptions = {}): RewardResult {
  const fmt = formatOk(response, options.format);
  const unscorable = result.unscorable === true;
  const correct = result.correct && !unscorable;
  let reward: number;
  if (unscorable) reward = options.unscorableReward ?? NaN;
  else if (options.requireFormat && !fmt) reward = options.formatFailureReward ?? 0;
  else {
    const scheme = options.scheme ?? "binary";
    reward = correct ? 1 : scheme === "signed" ? -1 : 0;
    if (fmt && options.formatBonus) reward += options.formatBonus;
  }
  return { reward, correct, formatOk: fmt, unscorable, verify: result };
}

/** Verifies one completion against its gold answer and returns the reward with its parts. */
export function mathReward(response: string, gold: string, options: RewardOptions = {}): RewardResult {
  return rewardFromResult(verify(response, gold, options), response, options);
}

/** `mathReward` in GSM8K mode (`#### N` golds, last-number fallback, numeric comparison). */
export function gsm8kReward(response: string, gold: string, options: RewardOptions = {}): RewardResult {
  return mathReward(response, gold, { ...options, mode: "gsm8k" });
}

/** Correctness only: 1/0 (binary) or +1/−1 (signed). */
export function correctnessReward(response: string, gold: string, options: RewardOptions = {}): number {
  return mathReward(response, gold, { ...options, formatBonus: 0, requireFormat: false }).reward;
}

/** The format term alone: `bonus` when `formatOk`, else 0. */
export function formatReward(response: string, bonus = 1, options: FormatOptions = {}): number {
  return formatOk(response, options) ? bonus : 0;
}
