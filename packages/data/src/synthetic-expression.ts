/**
 * The expression kind of the synthetic task: a short chain of additions and subtractions written as one line,
 * `7 + 5 - 3 + 9 = ?`, evaluated left to right (no precedence question with + and - only). Its worked solution has one
 * known fact per line, each line's left operand the line above's result (`7 + 5 = 12`, `12 - 3 = 9`, `9 + 9 = 18`),
 * so working it out is one habit shared by every problem, while a direct answer needs the whole chain at once.
 */
import type { SyntheticStep } from "./synthetic.js";
import type { Rng } from "./util.js";

/** Range of an expression chain: every operand in [2, maxOperand], every value (start and results) in [1, maxValue]. */
export interface ExpressionRange {
  maxOperand: number;
  maxValue: number;
}

/** One chain of `steps` operations, or null when the draw cannot continue inside the range. */
export function draftExpression(rng: Rng, steps: number, r: ExpressionRange): SyntheticStep[] | null {
  let cur = rng.int(2, Math.min(r.maxOperand, r.maxValue));
  const out: SyntheticStep[] = [];
  for (let s = 0; s < steps; s++) {
    const ops: ("add" | "sub")[] = [];
    if (cur + 2 <= r.maxValue) ops.push("add");
    if (cur >= 3) ops.push("sub");
    if (ops.length === 0) return null;
    const op = rng.pick(ops);
    const n = op === "add" ? rng.int(2, Math.min(r.maxOperand, r.maxValue - cur)) : rng.int(2, Math.min(r.maxOperand, cur - 1));
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
