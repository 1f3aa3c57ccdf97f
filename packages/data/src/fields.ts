import type { MathRecord } from "./types.js";
import { lastBoxed } from "./util.js";

/** The built-in row layouts. */
export type Layout = "gsm8k" | "math" | "openr1" | "prompt-answer" | "question-answer";

/**
 * How to read a row. Field names are top-level keys, or dot paths into nested objects
 * and arrays (`"extra.gold"`, `"messages.0.content"`).
 */
export interface FieldMap {
  /** Field with the problem text. A chat-style list of `{role, content}` messages is accepted: the last user message is taken. */
  problem: string;
  /** Field with the gold answer. */
  answer?: string;
  /** Field with a worked solution. */
  solution?: string;
  /** Field with a row id (string or number). */
  id?: string;
  /**
   * How the answer field is written:
   * - `"plain"` (default): the value itself;
   * - `"gsm8k"`: the text after the last `####` (thousands separators removed, the full text kept as `meta.rawAnswer`);
   * - `"boxed"`: the content of the last `\boxed{}` in the field.
   */
  answerFormat?: "plain" | "gsm8k" | "boxed";
  /** When the answer field is missing or empty, use the last `\boxed{}` of the solution. */
  answerFromSolution?: boolean;
  /** Remove GSM8K calculator annotations (`<<48/2=24>>`) from the solution. Default true for `gsm8k`. */
  stripCalculatorAnnotations?: boolean;
  /**
   * Fields copied into `meta`. Default: every other top-level field whose value is a string,
   * number or boolean (large nested columns such as OpenR1's `generations` are left out).
   */
  meta?: string[];
  /** Extra fields copied into `meta` on top of the default scalar fields (e.g. OpenR1 `messages`). */
  extraMeta?: string[];
}

/** The field maps of the built-in layouts. */
export const LAYOUTS: Readonly<Record<Layout, Readonly<FieldMap>>> = {
  /** GSM8K: `question`, `answer` = worked solution ending in `#### 72`. */
  gsm8k: { problem: "question", answer: "answer", solution: "answer", answerFormat: "gsm8k", stripCalculatorAnnotations: true },
  /** MATH / MATH-500: `problem`, `solution`, `answer` (MATH-500) or only the `\boxed{}` in `solution` (original MATH). */
  math: { problem: "problem", answer: "answer", solution: "solution", id: "unique_id", answerFromSolution: true },
  /** OpenR1-Math: `problem`, `solution`, `answer`, `messages`, `uuid`. */
  openr1: { problem: "problem", answer: "answer", solution: "solution", id: "uuid", answerFromSolution: true, extraMeta: ["messages"] },
  /** `{prompt, answer}` (prompt may be a chat message list). */
  "prompt-answer": { problem: "prompt", answer: "answer" },
  /** `{question, answer}` where the answer is the bare final answer (no `####`). */
  "question-answer": { problem: "question", answer: "answer" },
};

/** Reads a dot path (`a.b.0.c`) from a value. */
export function getPath(row: unknown, path: string): unknown {
  if (row && typeof row === "object" && path in (row as Record<string, unknown>)) return (row as Record<string, unknown>)[path];
  let cur: unknown = row;
  for (const part of path.split(".")) {
    if (cur === null || cur === undefined || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/**
 * Picks the layout of a dataset from the field names of its first row (or its Parquet columns)
 * and, for `question`/`answer` data, from whether the first answer contains `####`.
 * Returns null when no built-in layout fits.
 */
export function detectLayout(fields: readonly string[], sample?: Record<string, unknown>): Layout | null {
  const has = (k: string) => fields.includes(k);
  if (has("problem") && has("messages") && (has("answer") || has("solution"))) return "openr1";
  if (has("problem") && (has("answer") || has("solution"))) return "math";
  if (has("question") && has("answer")) {
    const a = sample?.answer;
    if (sample === undefined || (typeof a === "string" && a.includes("####"))) return "gsm8k";
    return "question-answer";
  }
  if (has("prompt") && has("answer")) return "prompt-answer";
  return null;
}

/** The text of a problem field: a string, a number, or a chat message list (last user turn). */
function problemText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    for (let i = v.length - 1; i >= 0; i--) {
      const m = v[i] as { role?: unknown; content?: unknown } | null;
      if (m && typeof m === "object" && m.role === "user" && typeof m.content === "string") return m.content;
    }
  }
  return undefined;
}

function scalarText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "bigint") return String(v);
  return undefined;
}

/** `1,234` → `1234` for plain numbers with thousands separators; anything else unchanged. */
export function stripThousands(s: string): string {
  return /^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$/.test(s) ? s.replace(/,/g, "") : s;
}

/** Splits a GSM8K answer field into the worked solution and the final answer after `####`. */
export function splitGsm8kAnswer(text: string): { solution: string; answer: string } | null {
  const i = text.lastIndexOf("####");
  if (i < 0) return null;
  return { solution: text.slice(0, i).trim(), answer: stripThousands(text.slice(i + 4).trim()) };
}

/** Removes GSM8K calculator annotations: `48/2 = <<48/2=24>>24` → `48/2 = 24`. */
export function stripCalculatorAnnotations(text: string): string {
  return text.replace(/<<[^<>]*>>/g, "");
}

function toPlain(v: unknown): unknown {
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (Array.isArray(v)) return v.map(toPlain);
  if (v && typeof v === "object" && !(v instanceof Date)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = toPlain(x);
    return out;
  }
  return v;
}

/** Where a row came from, for ids. */
export interface RowContext {
  /** Record source (dataset name or file stem). */
  source: string;
  /** Prefix for generated ids (file stem). */
  idPrefix: string;
  /** 1-based line/row number. */
  line: number;
}

/**
 * Maps one raw row to a {@link MathRecord}, or returns the reason it cannot
 * (`missing field "question"`, `empty answer`, …).
 */
export function mapRow(row: unknown, map: FieldMap, ctx: RowContext): MathRecord | { error: string } {
  if (!row || typeof row !== "object" || Array.isArray(row)) return { error: "row is not a JSON object" };
  const r = row as Record<string, unknown>;
  const rawProblem = getPath(r, map.problem);
  if (rawProblem === undefined || rawProblem === null) return { error: `missing field "${map.problem}"` };
  const problem = problemText(rawProblem);
  if (problem === undefined) return { error: `field "${map.problem}" is not text or a chat message list` };
  if (problem.trim() === "") return { error: "empty problem" };

  let solution: string | undefined;
  if (map.solution) {
    const s = getPath(r, map.solution);
    if (typeof s === "string" && s.trim() !== "") solution = s;
  }

  let answer: string | undefined;
  const meta: Record<string, unknown> = {};
  if (map.answer) {
    const raw = getPath(r, map.answer);
    const text = scalarText(raw);
    if (raw !== undefined && raw !== null && text === undefined) return { error: `field "${map.answer}" is not text or a number` };
    if (text !== undefined) {
      switch (map.answerFormat ?? "plain") {
        case "plain":
          answer = text.trim();
          break;
        case "gsm8k": {
          const parts = splitGsm8kAnswer(text);
          if (!parts) return { error: `no "####" in field "${map.answer}"` };
          answer = parts.answer;
          meta.rawAnswer = text;
          if (map.solution === map.answer) solution = parts.solution;
          break;
        }
        case "boxed":
          answer = lastBoxed(text)?.trim();
          if (answer === undefined) return { error: `no \\boxed{} in field "${map.answer}"` };
          break;
      }
    } else if (!map.answerFromSolution) {
      return { error: `missing field "${map.answer}"` };
    }
  }
  if ((answer === undefined || answer === "") && map.answerFromSolution && solution) {
    const b = lastBoxed(solution);
    if (b !== null) answer = b.trim();
  }
  if (answer === undefined) return { error: map.answer ? `missing field "${map.answer}"` : "no answer field mapped" };
  if (answer === "") return { error: "empty answer" };
  if (solution !== undefined && map.stripCalculatorAnnotations) solution = stripCalculatorAnnotations(solution);

  const rawId = map.id ? scalarText(getPath(r, map.id)) : undefined;
  const id = rawId !== undefined && rawId !== "" ? rawId : `${ctx.idPrefix}:${ctx.line}`;

  const used = new Set([map.problem, map.answer, map.solution, map.id].filter((x): x is string => !!x));
  if (map.meta) {
    for (const k of map.meta) {
      const v = getPath(r, k);
      if (v !== undefined) meta[k] = toPlain(v);
    }
  } else {
    for (const [k, v] of Object.entries(r)) {
      if (used.has(k)) continue;
      if (typeof v === "string" || typeof v === "number" || typeof v === "boolean" || typeof v === "bigint") meta[k] = toPlain(v);
    }
  }
  for (const k of map.extraMeta ?? []) {
    const v = getPath(r, k);
    if (v !== undefined && v !== null) meta[k] = toPlain(v);
  }
  const rec: MathRecord = { id, problem, answer, source: ctx.source };
  if (solution !== undefined) rec.solution = solution;
  if (Object.keys(meta).length > 0) rec.meta = meta;
  return rec;
}
