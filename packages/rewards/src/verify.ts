/**
 * `verify(prediction, gold)`: extract the final answer from both sides, normalise, decide equivalence.
 * Synchronous and bounded (limits.ts); never throws: any internal failure is `correct: false` with a reason.
 */
import { Comparer, type CompareOptions } from "./compare.js";
import {
  captureAfter,
  findBoxes,
  findMarkers,
  findMathSpans,
  findNumbers,
  finalBoxGroup,
  spanGroupEndingAt,
  lastBold,
  lastBoxUnbalanced,
  unwrapWholeMath,
} from "./extract.js";
import { Budget, LIMITS, ParseError, Signal, SizeLimit } from "./limits.js";
import { normalizeAnswer, type Side, stringKey } from "./normalize.js";
import { parseAnswer } from "./parse.js";
import { freeSymbols, type Node, renameSymbols } from "./ast.js";
import { joinAnswers, toVal, type Val } from "./structure.js";
import { cleanText, cutAtSpecialTokens, splitThink } from "./text.js";

export type MatchType = "latex" | "expr";

export interface VerifyOptions {
  /**
   * `"math"`: MATH/Math-Verify extraction (boxes, "final answer is", math spans, last number).
   * `"gsm8k"`: boxes, `#### N`, "the answer is", then the last number; math spans are ignored (`$` is currency).
   * `"auto"` (default): `"gsm8k"` when the gold contains `####`, else `"math"`.
   */
  mode?: "auto" | "math" | "gsm8k";
  /** Decimals that must agree when one side is a decimal approximation of the other (default 6). */
  floatPrecision?: number;
  /** Accept an inequality prediction for an interval gold (default false; the reverse is always accepted). */
  allowSetRelation?: boolean;
  /** Variable names must match (default true); false allows renaming `f(y)` → `f(x)`. */
  strictVariables?: boolean;
  /** Where answers may come from in the prediction (default both): LaTeX (boxes, math spans) and plain expressions (numbers). */
  matchTypes?: MatchType[];
  /** Require a closed `<think>…</think>` block before the answer (rllm's format gate; default false). */
  requireThink?: boolean;
  /** Compare bare lists `a, b, c` as multisets (default false: a bare list is ordered, as in the hendrycks tests). */
  unorderedLists?: boolean;
}

export interface VerifyResult {
  correct: boolean;
  /** The answer extracted from the prediction (several boxes are joined with ", "), or null. */
  predicted: string | null;
  /** The answer extracted from the gold, or null. */
  gold: string | null;
  /** Why: how the answers were found and which comparison decided. */
  reason: string;
  /** Set when the result could not be computed (timeout, crash in a worker, internal error). */
  unscorable?: boolean;
  /** Set when the arithmetic could not decide (error bound wider than the tolerance): graded not equal. */
  undecidable?: boolean;
}

interface Resolved extends CompareOptions {
  mode: "auto" | "math" | "gsm8k";
  latex: boolean;
  expr: boolean;
  requireThink: boolean;
}

function resolve(o: VerifyOptions): Resolved {
  const mt = o.matchTypes ?? ["latex", "expr"];
  return {
    mode: o.mode ?? "auto",
    floatPrecision: o.floatPrecision ?? 6,
    allowSetRelation: o.allowSetRelation ?? false,
    strictVariables: o.strictVariables ?? true,
    unorderedLists: o.unorderedLists ?? false,
    latex: mt.includes("latex"),
    expr: mt.includes("expr"),
    requireThink: o.requireThink ?? false,
  };
}

/** One extraction candidate: several texts mean several boxes forming one unordered answer. */
interface Candidate {
  texts: string[];
  method: string;
  /** Accept only when it parses to a plausible answer (fallback candidates). */
  strict: boolean;
}

export interface Analysed {
  display: string;
  method: string;
  key: string;
  /** The parsed value (computed on first use: the string fast path often decides without it). */
  readonly val: Val | null;
  /** The parse trees (one per text), or null when one does not parse. */
  nodes(): Node[] | null;
}

/** Normalises one answer (several texts: several boxes, one unordered answer); parsing is deferred to `val`. */
export function analyse(texts: string[], side: Side, method: string): Analysed {
  const norms = texts.map((t) => normalizeAnswer(t, side));
  const key = norms.map(stringKey).join("\u0002");
  let cachedNodes: Array<Node | null> | undefined;
  let cached: Val | null | undefined;
  const nodes = (): Array<Node | null> => (cachedNodes ??= norms.map(parseNode));
  return {
    display: texts.map((t) => t.trim()).join(", "),
    method,
    key,
    get val(): Val | null {
      if (cached === undefined) cached = valOf(nodes());
      return cached;
    },
    nodes: () => {
      const n = nodes();
      return n.every((x) => x !== null) ? (n as Node[]) : null;
    },
  };
}

function parseNode(norm: string): Node | null {
  if (norm === "" || norm.length > LIMITS.MAX_ANSWER_CHARS) return null;
  try {
    return parseAnswer(norm);
  } catch (e) {
    if (e instanceof ParseError || e instanceof SizeLimit) return null;
    throw e;
  }
}

/** One value from the trees of one answer (several trees: an unordered answer). */
function valOf(nodes: Array<Node | null>): Val | null {
  const vals = nodes.map((n) => {
    if (n === null) return null;
    try {
      return toVal(n);
    } catch (e) {
      if (e instanceof ParseError || e instanceof SizeLimit) return null;
      throw e;
    }
  });
  if (vals.length === 1) return vals[0];
  return vals.every((v) => v !== null) ? joinAnswers(vals as Val[]) : null;
}

const MATH_WORDS = new Set(
  "sin cos tan sec csc cot log sqrt frac text pi infty cdot times left right begin end pmatrix bmatrix array mathbb dfrac tfrac boxed and exp sinh cosh tanh arcsin arccos arctan pct percent mbox textbf mathrm operatorname emptyset cup cap quad leq geq neq approx".split(
    " ",
  ),
);

/** More than three ordinary words (outside LaTeX commands): a sentence, not an answer. */
function looksLikeProse(s: string): boolean {
  const re = /(?<![\\A-Za-z])[A-Za-z]{3,}/g;
  let words = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    if (!MATH_WORDS.has(m[0].toLowerCase()) && ++words > 3) return true;
  }
  return false;
}

const wordCount = (s: string) => s.split(/\s+/).filter((w) => /[a-z]{2}/i.test(w)).length;

function plausible(a: Analysed, method: string): boolean {
  if (a.val === null) return false;
  if (a.val.k === "text") return method !== "math span" && wordCount(a.val.s) <= 3;
  return true;
}

interface Prepared {
  text: string;
  failure?: string;
}

/** Cleans a response and cuts it to the part that is graded (after `</think>`, before a chat special token). */
function preparePrediction(text: string, o: Resolved): Prepared {
  const cleaned = cutAtSpecialTokens(cleanText(text, LIMITS.MAX_RESPONSE_CHARS));
  const think = splitThink(cleaned);
  if (think.unclosed) return { text: "", failure: "no answer: <think> is never closed" };
  if (o.requireThink && !think.closed) return { text: "", failure: "format: no </think>" };
  const s = think.answerPart;
  if (lastBoxUnbalanced(s)) return { text: "", failure: "no answer: the last \\boxed{ is never closed (truncated)" };
  return { text: s };
}

/** Candidates in priority order, produced lazily so that the common case (a box) costs one scan. */
function* predictionCandidates(s: string, o: Resolved, gsm8k: boolean): Generator<Candidate> {
  const boxes = findBoxes(s);
  const lastBoxEnd = boxes.length ? boxes[boxes.length - 1].end : -1;
  // only the last few markers matter (and a text repeating "answer is" must not cost one parse per repetition)
  const markers = findMarkers(s).slice(-4);
  const useCapture = (c: { text: string; math: boolean } | null) => c !== null && (c.math ? o.latex : o.expr);

  // "The final answer is X" after the last box overrides it (Math-Verify's priority 0).
  for (let k = markers.length - 1; k >= 0; k--) {
    const m = markers[k];
    if (m.kind !== "final" || m.pos < lastBoxEnd) continue;
    const cap = captureAfter(s, m.capStart);
    if (cap && useCapture(cap)) yield { texts: [cap.text, ...(cap.more ?? [])], method: "final answer", strict: true };
  }
  const group = finalBoxGroup(boxes, s);
  if (group.length > 0) yield { texts: group, method: group.length > 1 ? "boxed (several)" : "boxed", strict: false };
  if (!gsm8k) {
    const whole = unwrapWholeMath(s);
    if (whole !== null) yield { texts: [whole], method: "math span", strict: false };
  }
  const trimmed = s.trim();
  if (trimmed.length > 0 && trimmed.length <= 400 && !/\n\s*\n/.test(trimmed) && !looksLikeProse(trimmed)) yield { texts: [trimmed], method: "whole answer", strict: true };
  for (let k = markers.length - 1; k >= 0; k--) {
    const m = markers[k];
    const cap = captureAfter(s, m.capStart);
    if (!cap || !(useCapture(cap) || gsm8k)) continue;
    const method = m.kind === "hashes" ? "####" : m.kind === "final" ? "final answer" : "answer is";
    yield { texts: [cap.text, ...(cap.more ?? [])], method, strict: true };
    if (o.expr || gsm8k) {
      const nums = findNumbers(cap.text);
      if (nums.length) yield { texts: [nums[nums.length - 1].text], method: `${method} (number)`, strict: true };
    }
  }
  const bold = lastBold(s);
  if (bold) yield { texts: [bold.text], method: "bold", strict: true };
  // Rightmost math span or number.
  const tail: Array<{ end: number; cand: Candidate; span: boolean }> = [];
  if (o.latex && !gsm8k) {
    const spans = findMathSpans(s);
    let taken = 0;
    for (let k = spans.length - 1; k >= 0 && taken < 3; k--) {
      const c = spans[k].content;
      if (!/[0-9]|\\[a-zA-Z]/.test(c)) continue;
      taken++;
      // `$x = 2$ and $x = 3$`: spans joined by a separator are one answer
      const group = spanGroupEndingAt(s, spans, k);
      tail.push({ end: spans[k].end, cand: { texts: group.map((g) => g.content), method: "math span", strict: true }, span: true });
      k -= group.length - 1;
    }
  }
  if (o.expr || gsm8k) {
    const nums = findNumbers(s);
    if (nums.length) {
      const n = nums[nums.length - 1];
      tail.push({ end: n.end, cand: { texts: [n.text], method: "last number", strict: true }, span: false });
    }
  }
  tail.sort((a, b) => b.end - a.end || (a.span === b.span ? 0 : a.span ? -1 : 1));
  for (const t of tail) yield t.cand;
}

function* goldCandidates(text: string): Generator<Candidate> {
  const s = cleanText(text, LIMITS.MAX_RESPONSE_CHARS);
  const hashes = s.lastIndexOf("####");
  if (hashes >= 0) {
    const line = s.slice(hashes + 4).split("\n")[0].trim();
    if (line !== "") yield { texts: [line], method: "####", strict: false };
  }
  if (lastBoxUnbalanced(s)) return;
  const group = finalBoxGroup(findBoxes(s), s);
  if (group.length > 0) yield { texts: group, method: group.length > 1 ? "boxed (several)" : "boxed", strict: false };
  const whole = unwrapWholeMath(s);
  if (whole !== null) yield { texts: [whole], method: "math span", strict: false };
  const t = s.trim();
  if (t !== "" && t.length <= 300) yield { texts: [t], method: "whole answer", strict: false };
  // A long solution without a box: the prediction's fallbacks.
  for (const c of predictionCandidates(t, resolve({}), false)) if (c.strict) yield c;
}

function pick(cands: Iterable<Candidate>, side: Side): Analysed | null {
  let lastResort: Analysed | null = null;
  let tried = 0;
  for (const c of cands) {
    if (++tried > 16) break;
    if (c.texts.every((x) => x.trim() === "")) continue;
    const a = analyse(c.texts, side, c.method);
    if (!c.strict || plausible(a, c.method)) return a;
    // An answer-shaped string that does not parse (`\angle ABC`) is still compared as a string, if nothing parses.
    if (lastResort === null && a.val === null && c.method !== "last number" && !looksLikeProse(c.texts.join(" "))) lastResort = a;
  }
  return lastResort;
}

/** Non-strict variables: the prediction's symbols renamed onto the gold's (same count, sorted order): `f(y)` → `f(x)`. */
function renamedToGold(p: Analysed, g: Analysed): Val | null {
  const pn = p.nodes();
  const gn = g.nodes();
  if (!pn || !gn) return null;
  const syms = (ns: Node[]) => [...new Set(ns.flatMap((n) => freeSymbols(n)))].sort();
  const ps = syms(pn);
  const gs = syms(gn);
  if (ps.length !== gs.length || ps.join("\u0000") === gs.join("\u0000")) return null;
  const map = new Map(ps.map((s, i) => [s, gs[i]]));
  return valOf(pn.map((n) => renameSymbols(n, map)));
}

/** Compares two analysed answers. */
export function compareAnalysed(p: Analysed, g: Analysed, options: VerifyOptions = {}): { equal: boolean; how: string; undecidable?: string } {
  const o = resolve(options);
  if (p.key !== "" && p.key === g.key) return { equal: true, how: "same normalised string" };
  let pv = p.val;
  const gv = g.val;
  if (!o.strictVariables && pv && gv) pv = renamedToGold(p, g) ?? pv;
  if (pv && gv) {
    const cmp = new Comparer(o, new Budget());
    const equal = cmp.vals(pv, gv);
    const how = cmp.how || "structure";
    return !equal && cmp.undecidable !== null ? { equal, how, undecidable: cmp.undecidable } : { equal, how };
  }
  const equal = p.key !== "" && p.key.toLowerCase() === g.key.toLowerCase();
  return { equal, how: pv || gv ? "one side does not parse" : "unparsed strings" };
}

/**
 * Extracts the final answers and decides whether the prediction matches the gold.
 * `prediction` may be a full model response; `gold` a full solution, `$…$`-wrapped, boxed, `#### N`, or plain.
 */
export function verify(prediction: string, gold: string, options: VerifyOptions = {}): VerifyResult {
  let predicted: string | null = null;
  let goldAnswer: string | null = null;
  try {
    if (typeof prediction !== "string" || typeof gold !== "string") {
      return { correct: false, predicted: null, gold: null, reason: "error: prediction and gold must be strings" };
    }
    const o = resolve(options);
    const gsm8k = o.mode === "gsm8k" || (o.mode === "auto" && gold.includes("####"));
    const g = pick(goldCandidates(gold), "gold");
    if (!g) return { correct: false, predicted: null, gold: null, reason: "no answer found in the gold" };
    goldAnswer = g.display;
    const prep = preparePrediction(prediction, o);
    if (prep.failure) return { correct: false, predicted: null, gold: goldAnswer, reason: prep.failure };
    const p = pick(predictionCandidates(prep.text, o, gsm8k), "pred");
    if (!p) return { correct: false, predicted: null, gold: goldAnswer, reason: "no answer found in the prediction" };
    predicted = p.display;
    const { equal, how, undecidable } = compareAnalysed(p, g, options);
    const where = `[${p.method} vs gold ${g.method}]`;
    if (undecidable !== undefined) {
      const detail = how.startsWith("undecidable") ? "" : ` (${how})`;
      return { correct: false, predicted, gold: goldAnswer, reason: `not equal (undecidable: ${undecidable})${detail} ${where}`, undecidable: true };
    }
    return { correct: equal, predicted, gold: goldAnswer, reason: `${equal ? "equal" : "not equal"}: ${how} ${where}` };
  } catch (e) {
    const msg = e instanceof Error || e instanceof Signal ? `${e.name}: ${e.message}` : String(e);
    return { correct: false, predicted, gold: goldAnswer, reason: `error: ${msg}`, unscorable: true };
  }
}
