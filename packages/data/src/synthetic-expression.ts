/**
 * The expression kind of the synthetic task: a short chain of additions and subtractions written as one line,
 * `7 + 5 - 3 + 9 = ?`, evaluated left to right (no precedence question with + and - only). Its worked solution has one
 * known fact per line, each line's left operand the line above's result (`7 + 5 = 12`, `12 - 3 = 9`, `9 + 9 = 18`),
 * so working it out is one habit shared by every problem, while a direct answer needs the whole chain at once.
 * Every number written in a chain is different (`7 + 5 - 3`, never `5 + 5 - 3`): a worked line finds its operand in
 * the question by the value it last used (the operand just before it), and a repeated value would make that lookup
 * ambiguous for a small model — measured: a base pre-trained on chains with repeats copied 11 % of operands right.
 */
import type { SyntheticStep } from "./synthetic.js";
import type { Rng } from "./util.js";

/** Range of an expression chain: every operand in [2, maxOperand], every value (start and results) in [1, maxValue]. */
export interface ExpressionRange {
  maxOperand: number;
  maxValue: number;
}

/**
 * One chain of `steps` operations whose written numbers (start and operands) are all different, or null when the draw
 * cannot continue inside the range.
 */
export function draftExpression(rng: Rng, steps: number, r: ExpressionRange): SyntheticStep[] | null {
  let cur = rng.int(2, Math.min(r.maxOperand, r.maxValue));
  const written = new Set([cur]);
  const out: SyntheticStep[] = [];
  for (let s = 0; s < steps; s++) {
    const ops: ("add" | "sub")[] = [];
    if (cur + 2 <= r.maxValue) ops.push("add");
    if (cur >= 3) ops.push("sub");
    if (ops.length === 0) return null;
    const op = rng.pick(ops);
    const hi = op === "add" ? Math.min(r.maxOperand, r.maxValue - cur) : Math.min(r.maxOperand, cur - 1);
    const fresh = Array.from({ length: Math.max(0, hi - 1) }, (_, i) => i + 2).filter((n) => !written.has(n));
    if (fresh.length === 0) return null;
    const n = rng.pick(fresh);
    written.add(n);
    const after = op === "add" ? cur + n : cur - n;
    out.push({ op, operand: n, before: cur, after });
    cur = after;
  }
  return out;
}

/** The problem text of a chain: `7 + 5 - 3 = ?`. */
export function expressionText(steps: readonly SyntheticStep[]): string {
  return `${steps[0].before}${steps.map((s) => ` ${s.op === "add" ? "+" : "-"} ${s.operand}`).join("")} = ?`;
}
