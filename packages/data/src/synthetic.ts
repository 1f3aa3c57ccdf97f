/**
 * The synthetic task: small multi-step arithmetic word problems (a miniature GSM8K) with worked
 * solutions, deterministic by seed, in two problem-text-disjoint splits. It is the default training
 * data of the embedded demo, so its language is deliberately small and regular: 8 names, 8 objects,
 * a dozen sentence patterns, digits, and `+ - * /` in the worked steps.
 */
import type { MathRecord } from "./types.js";
import { Rng, fnv1a } from "./util.js";
import { sftTarget } from "./prompts.js";
import { draftExpression, expressionText, type ExpressionRange } from "./synthetic-expression.js";

export const SYNTHETIC_NAMES = ["Ann", "Ben", "Cal", "Dan", "Eve", "Fay", "Gus", "Ivy"] as const;
export const SYNTHETIC_OBJECTS = ["apples", "pens", "books", "coins", "cards", "eggs", "shells", "stamps"] as const;

export type SyntheticOp = "add" | "sub" | "mul" | "div";
export type SyntheticSplit = "train" | "heldout";
/**
 * `"words"`: word problems (`Ann has 5 pens. …`); `"expression"`: a chain of + and - on one line (`7 + 5 - 3 = ?`,
 * see synthetic-expression.ts).
 */
export type SyntheticKind = "words" | "expression";
export const SYNTHETIC_KINDS: readonly SyntheticKind[] = ["words", "expression"];

/** Difficulty and size controls. */
export interface SyntheticOptions {
  /** Base seed; the same options and seed give the same problems. Default 0. */
  seed?: number;
  /** Number of problems. */
  count: number;
  /** `"train"` (default) or `"heldout"`; see {@link syntheticSplitOf}. */
  split?: SyntheticSplit;
  /** Arithmetic steps per problem, inclusive range. Default 1..4. */
  minSteps?: number;
  maxSteps?: number;
  /** Largest number added, subtracted or used to start (default 20). */
  maxOperand?: number;
  /** Largest multiplier/divisor (default 4; at least 2). */
  maxFactor?: number;
  /** Largest value any intermediate result may take (default 100). */
  maxValue?: number;
  /** Operations allowed (default all four). */
  ops?: readonly SyntheticOp[];
  /** Fraction of problem texts (by hash) that belong to the held-out split (default 0.1). */
  heldOutFraction?: number;
  /** Which problems: word problems (default) or one-line + / - chains (only add and sub; maxFactor unused). */
  kind?: SyntheticKind;
}

/**
 * One step of a problem: `before op operand = after`. The opening step of a "bags" problem is
 * `bags * perBag = total`.
 */
export interface SyntheticStep {
  op: SyntheticOp;
  operand: number;
  before: number;
  after: number;
}

/**
 * Which split a problem text belongs to: held out when `fnv1a(text) mod 10000 < heldOutFraction·10000`.
 * Because it depends only on the text, train and held-out sets never share a problem, whatever
 * seeds, counts or difficulty settings produced them.
 */
export function syntheticSplitOf(problem: string, heldOutFraction = 0.1): SyntheticSplit {
  return fnv1a(problem) % 10000 < Math.round(heldOutFraction * 10000) ? "heldout" : "train";
}

type Family = "has" | "box" | "bags" | "expression";

interface Draft {
  family: Family;
  sentences: string[];
  question: string;
  steps: SyntheticStep[];
}

const SYMBOL: Record<SyntheticOp, string> = { add: "+", sub: "-", mul: "*", div: "/" };

function sentenceFor(family: Family, op: SyntheticOp, a: string, b: string, obj: string, n: number, rng: Rng): string {
  const box = family === "box";
  switch (op) {
    case "add":
      return box
        ? rng.pick([`${a} puts ${n} more ${obj} in the box.`, `${b} adds ${n} more ${obj} to the box.`])
        : rng.pick([`${a} buys ${n} more ${obj}.`, `${b} gives ${a} ${n} more ${obj}.`, `${a} finds ${n} more ${obj}.`]);
    case "sub":
      return box
        ? rng.pick([`${a} takes ${n} ${obj} out of the box.`, `${b} takes ${n} ${obj} out of the box.`])
        : rng.pick([`${a} gives ${n} ${obj} to ${b}.`, `${a} loses ${n} ${obj}.`, `${a} sells ${n} ${obj}.`]);
    case "mul":
      return box ? `Then the box has ${n} times as many ${obj}.` : `Then ${a} has ${n} times as many ${obj}.`;
    case "div":
      return box ? `${a} splits the ${obj} in the box into ${n} equal groups and leaves one group in the box.` : `${a} splits the ${obj} into ${n} equal groups and keeps one group.`;
  }
}

function draft(rng: Rng, steps: number, o: Required<Omit<SyntheticOptions, "seed" | "count" | "split" | "heldOutFraction" | "kind">>): Draft | null {
  const family: Family = rng.pick(["has", "box", "bags"] as const);
  const a = rng.pick(SYNTHETIC_NAMES);
  let b = rng.pick(SYNTHETIC_NAMES);
  while (b === a) b = rng.pick(SYNTHETIC_NAMES);
  const obj = rng.pick(SYNTHETIC_OBJECTS);
  const list: SyntheticStep[] = [];
  const sentences: string[] = [];
  let cur: number;
  let remaining = steps;
  if (family === "bags") {
    // The opening sentence is itself a step: bags * per-bag (only when multiplication is allowed).
    if (!o.ops.includes("mul")) return null;
    const bags = rng.int(2, o.maxFactor);
    const per = rng.int(2, Math.max(2, Math.min(o.maxOperand, Math.floor(o.maxValue / bags))));
    cur = bags * per;
    if (cur > o.maxValue) return null;
    sentences.push(`${a} has ${bags} bags with ${per} ${obj} in each bag.`);
    list.push({ op: "mul", operand: per, before: bags, after: cur });
    remaining--;
  } else {
    cur = rng.int(2, Math.min(o.maxOperand, o.maxValue));
    sentences.push(family === "box" ? `There are ${cur} ${obj} in the box.` : `${a} has ${cur} ${obj}.`);
  }
  for (let s = 0; s < remaining; s++) {
    const feasible: SyntheticOp[] = [];
    for (const op of o.ops) {
      // Added and subtracted amounts are at least 2 (so every count in the text is plural).
      if (op === "add" && cur + 2 <= o.maxValue) feasible.push(op);
      if (op === "sub" && cur >= 3) feasible.push(op);
      if (op === "mul" && cur * 2 <= o.maxValue) feasible.push(op);
      if (op === "div" && cur >= 2 && divisors(cur, o.maxFactor).length > 0) feasible.push(op);
    }
    // Avoid the same operation twice in a row when another is possible (more varied chains).
    const last = list.length > 0 ? list[list.length - 1].op : null;
    const varied = feasible.filter((op) => op !== last);
    if (feasible.length === 0) return null;
    const op = rng.pick(varied.length > 0 ? varied : feasible);
    let n: number;
    if (op === "add") n = rng.int(2, Math.min(o.maxOperand, o.maxValue - cur));
    else if (op === "sub") n = rng.int(2, Math.min(o.maxOperand, cur - 1));
    else if (op === "mul") n = rng.int(2, Math.max(2, Math.min(o.maxFactor, Math.floor(o.maxValue / cur))));
    else n = rng.pick(divisors(cur, o.maxFactor));
    const next = op === "add" ? cur + n : op === "sub" ? cur - n : op === "mul" ? cur * n : cur / n;
    list.push({ op, operand: n, before: cur, after: next });
    sentences.push(sentenceFor(family, op, a, b, obj, n, rng));
    cur = next;
  }
  const question = family === "box" ? `How many ${obj} are in the box now?` : `How many ${obj} does ${a} have now?`;
  return { family, sentences, question, steps: list };
}

/** An expression chain as a draft (no sentences: the text is the expression itself). */
function expressionDraft(rng: Rng, steps: number, r: ExpressionRange): Draft | null {
  const list = draftExpression(rng, steps, r);
  return list && { family: "expression", sentences: [], question: "", steps: list };
}

function divisors(n: number, maxFactor: number): number[] {
  const out: number[] = [];
  for (let k = 2; k <= maxFactor; k++) if (n % k === 0) out.push(k);
  return out;
}

/** The worked solution: one `before op operand = after` line per step. */
export function syntheticSolution(steps: readonly SyntheticStep[]): string {
  return steps.map((s) => `${s.before} ${SYMBOL[s.op]} ${s.operand} = ${s.after}`).join("\n");
}

/**
 * Generates `count` distinct problems of one split. Each record has the problem, the integer answer,
 * the worked solution (one equation per line, used inside `<think>…</think>` by {@link syntheticSftTarget}),
 * and `meta: { steps, ops, family, split }`. Ids are `syn-<hash of the problem text>`.
 */
export function generateSynthetic(options: SyntheticOptions): MathRecord[] {
  const o = {
    minSteps: options.minSteps ?? 1,
    maxSteps: options.maxSteps ?? 4,
    maxOperand: options.maxOperand ?? 20,
    maxFactor: Math.max(2, options.maxFactor ?? 4),
    maxValue: options.maxValue ?? 100,
    ops: options.ops ?? (["add", "sub", "mul", "div"] as const),
  };
  if (o.minSteps < 1 || o.maxSteps < o.minSteps) throw new Error(`synthetic: bad step range ${o.minSteps}..${o.maxSteps}`);
  if (o.ops.length === 0) throw new Error("synthetic: no operations allowed");
  const kind = options.kind ?? "words";
  if (!SYNTHETIC_KINDS.includes(kind)) throw new Error(`synthetic: unknown kind "${kind}"; expected ${SYNTHETIC_KINDS.join(" or ")}`);
  if (kind === "expression" && options.ops?.some((op) => op === "mul" || op === "div")) throw new Error("synthetic: the expression kind chains + and - only (left to right needs no precedence); drop mul and div from ops");
  if (o.maxOperand < 2 || o.maxValue < 4) throw new Error("synthetic: maxOperand must be ≥ 2 and maxValue ≥ 4");
  const split = options.split ?? "train";
  const frac = options.heldOutFraction ?? 0.1;
  if (!(frac > 0 && frac < 1)) throw new Error("synthetic: heldOutFraction must be in (0, 1)");
  const seed = options.seed ?? 0;
  // Each split draws from its own stream (so asking for more held-out problems does not change the train set).
  const rng = new Rng(fnv1a(`${seed}:${split}`));
  const seen = new Set<string>();
  const out: MathRecord[] = [];
  const maxAttempts = 1000 + options.count * (split === "heldout" ? Math.ceil(50 / frac) : 50);
  for (let attempt = 0; out.length < options.count; attempt++) {
    if (attempt >= maxAttempts) throw new Error(`synthetic: found only ${out.length} of ${options.count} distinct ${split} problems; widen the difficulty settings`);
    const steps = rng.int(o.minSteps, o.maxSteps);
    const d = kind === "expression" ? expressionDraft(rng, steps, o) : draft(rng, steps, o);
    if (!d || d.steps.length !== steps) continue;
    const problem = kind === "expression" ? expressionText(d.steps) : `${d.sentences.join(" ")} ${d.question}`;
    if (seen.has(problem) || syntheticSplitOf(problem, frac) !== split) continue;
    seen.add(problem);
    const answer = String(d.steps[d.steps.length - 1].after);
    out.push({
      id: `syn-${fnv1a(problem).toString(16).padStart(8, "0")}`,
      problem,
      answer,
      solution: syntheticSolution(d.steps),
      source: "synthetic",
      meta: { steps: d.steps.length, ops: d.steps.map((s) => s.op), family: d.family, split },
    });
  }
  return out;
}

/**
 * Every one-operation expression of the range (`a + b = ?`, `a - b = ?` for a in [2, maxValue], b in [2, maxOperand],
 * result in [1, maxValue]) as records of the split their text belongs to: the facts the chains are built from.
 * `nr pretrain --fact-copies` puts all of them (both splits) in the base's corpus, so a task built on them must hold
 * out chains of two or more operations (`minSteps` ≥ 2).
 */
export function expressionFacts(r: ExpressionRange, heldOutFraction = 0.1): MathRecord[] {
  const out: MathRecord[] = [];
  for (let a = 2; a <= r.maxValue; a++) {
    for (let b = 2; b <= r.maxOperand; b++) {
      for (const op of ["add", "sub"] as const) {
        const after = op === "add" ? a + b : a - b;
        if (after < 1 || after > r.maxValue) continue;
        const steps: SyntheticStep[] = [{ op, operand: b, before: a, after }];
        const problem = expressionText(steps);
        const split = syntheticSplitOf(problem, heldOutFraction);
        out.push({ id: `syn-${fnv1a(problem).toString(16).padStart(8, "0")}`, problem, answer: String(after), solution: syntheticSolution(steps), source: "synthetic", meta: { steps: 1, ops: [op], family: "expression", split } });
      }
    }
  }
  return out;
}

/** The SFT target of a synthetic record: `<think>\n{equations}\n</think>\n\boxed{answer}`. */
export function syntheticSftTarget(record: MathRecord): string {
  if (!record.solution) throw new Error(`record ${record.id} has no solution`);
  return sftTarget(record.solution, record.answer);
}

/** The words of the sentence patterns (besides names and objects). */
const PATTERN_WORDS =
  "has bags with in each bag There are the box buys more gives finds puts adds to takes out of loses sells Then times as many splits into equal groups and leaves one group keeps How does have now".split(" ");

/** Every word (split on spaces and punctuation) the synthetic problems can use, sorted. */
export function syntheticWords(): string[] {
  return [...new Set([...SYNTHETIC_NAMES, ...SYNTHETIC_OBJECTS, ...PATTERN_WORDS])].sort();
}

/**
 * Every character that can appear in synthetic problems, solutions, SFT targets (`<think>`, `\boxed{}`)
 * and the plain prompt format (`Question:`/`Answer:`), sorted — enough for a character-level tokenizer.
 */
export function syntheticAlphabet(): string[] {
  const text = [...syntheticWords(), "Question Answer think boxed"].join(" ");
  return [...new Set([..."0123456789 .?:\n+-*/=<>\\{}", ...text])].sort();
}
