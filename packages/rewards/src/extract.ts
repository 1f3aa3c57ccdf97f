/**
 * Finding the final answer in a model response or a reference solution.
 *
 * Every scanner here is linear in the input (indexOf walks, brace counting, regexes without nested quantifiers).
 * The caller decides which candidate wins by trying them in order and keeping the first that parses.
 */

export interface Box {
  /** Index of the backslash of `\boxed` / `\fbox`. */
  start: number;
  /** Index just past the closing brace (or past the space-form content). */
  end: number;
  /** Content, or null when the braces never close (truncated generation). */
  content: string | null;
}

const BOX_NAMES = ["\\boxed", "\\fbox"];

/** Index of the brace matching the `{` at `open`, or -1. Escaped braces `\{`, `\}` do not count. */
export function matchBrace(s: string, open: number): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const ch = s.charCodeAt(i);
    if (ch === 92 /* \ */) {
      i++;
      continue;
    }
    if (ch === 123 /* { */) depth++;
    else if (ch === 125 /* } */) {
      depth--;
      if (depth === 0) return i;
    }
  }
  return -1;
}

function readBoxAt(s: string, at: number, nameLen: number): Box {
  let j = at + nameLen;
  while (j < s.length && (s[j] === " " || s[j] === "\t" || s[j] === "\n")) j++;
  if (s[j] === "{") {
    const close = matchBrace(s, j);
    if (close < 0) return { start: at, end: s.length, content: null };
    return { start: at, end: close + 1, content: s.slice(j + 1, close) };
  }
  // Space form `\boxed 5`: up to the next `$`, newline or end (lm-eval / verl behaviour).
  if (j === at + nameLen) return { start: at, end: j, content: null };
  let k = j;
  while (k < s.length && s[k] !== "$" && s[k] !== "\n") k++;
  let content = s.slice(j, k).trim();
  content = content.replace(/[.,;]+$/, "").trim();
  return { start: at, end: k, content: content === "" ? null : content };
}

function isBoxNameAt(s: string, i: number, name: string): boolean {
  const next = s.charCodeAt(i + name.length);
  // `\boxedx` is another command; letters may not follow the name.
  return !((next >= 65 && next <= 90) || (next >= 97 && next <= 122));
}

/** All outermost boxes in order of appearance (boxes nested inside another box are part of its content). */
export function findBoxes(s: string): Box[] {
  const out: Box[] = [];
  // next occurrence of each name at or after the scan position (re-searched only when passed: linear overall)
  const next = BOX_NAMES.map((n) => s.indexOf(n));
  let i = 0;
  for (let guard = 0; guard < 100_000; guard++) {
    let best = -1;
    let which = -1;
    for (let k = 0; k < BOX_NAMES.length; k++) {
      if (next[k] >= 0 && next[k] < i) next[k] = s.indexOf(BOX_NAMES[k], i);
      if (next[k] >= 0 && (best < 0 || next[k] < best)) {
        best = next[k];
        which = k;
      }
    }
    if (best < 0) break;
    const name = BOX_NAMES[which];
    if (!isBoxNameAt(s, best, name)) {
      i = best + name.length;
      continue;
    }
    const box = readBoxAt(s, best, name.length);
    out.push(box);
    if (box.content === null && box.end === s.length) break;
    i = Math.max(box.end, best + name.length);
  }
  return out;
}

/** Position of the last `\boxed`/`\fbox` occurrence (nested or not), or -1. */
function lastBoxStart(s: string): { at: number; name: string } {
  let at = -1;
  let name = "";
  for (const n of BOX_NAMES) {
    let k = s.lastIndexOf(n);
    while (k >= 0 && !isBoxNameAt(s, k, n)) k = k > 0 ? s.lastIndexOf(n, k - 1) : -1;
    if (k > at) {
      at = k;
      name = n;
    }
  }
  return { at, name };
}

/**
 * Content of the last complete `\boxed{…}` / `\fbox{…}` (also the space form `\boxed 5`).
 * Null when there is none, or when the last one is unbalanced (a truncated generation must not yield the rest of the text).
 */
export function extractBoxed(text: string): string | null {
  const { at, name } = lastBoxStart(text);
  if (at < 0) return null;
  const box = readBoxAt(text, at, name.length);
  return box.content === null ? null : box.content.trim();
}

/** Whether the last box occurrence in the text is unbalanced (the answer was cut off). */
export function lastBoxUnbalanced(text: string): boolean {
  const { at, name } = lastBoxStart(text);
  if (at < 0) return false;
  return readBoxAt(text, at, name.length).content === null;
}

/**
 * The final boxed answer, Math-Verify style: walking back from the last box, an earlier box joins the answer
 * when the text between them is a separator (shorter than 10 characters, or shorter than 70 and containing
 * `,` `;` `and` `or`), with no sentence break in between. Identical consecutive boxes collapse.
 */
export function finalBoxGroup(boxes: Box[], s: string): string[] {
  const usable = boxes.filter((b) => b.content !== null);
  if (usable.length === 0) return [];
  const group: Box[] = [usable[usable.length - 1]];
  for (let k = usable.length - 2; k >= 0 && group.length < 32; k--) {
    const gapRaw = s.slice(usable[k].end, group[0].start);
    if (!isSeparatorGap(gapRaw)) break;
    group.unshift(usable[k]);
  }
  const contents: string[] = [];
  for (const b of group) {
    const c = (b.content as string).trim();
    if (contents.length === 0 || norm(contents[contents.length - 1]) !== norm(c)) contents.push(c);
  }
  return contents;
}

const norm = (x: string) => x.replace(/\s+/g, "");

function isSeparatorGap(gapRaw: string): boolean {
  if (gapRaw.length >= 70) return false;
  const gap = gapRaw
    .replace(/\\[()[\]]|\$/g, " ")
    .replace(/\\q?quad/g, " ")
    .replace(/\\text\{\s*(and|or)\s*\}/g, " $1 ")
    .trim();
  // A full stop followed by more text is a sentence break: "\boxed{200}. Then … \boxed{255}".
  if (/[.!?]\s+\S/.test(gap) || /\n\s*\n/.test(gapRaw)) return false;
  if (gapRaw.length < 10) return true;
  return /[,;]|\band\b|\bor\b/i.test(gap);
}

export interface Span {
  start: number;
  end: number;
  content: string;
  display: boolean;
}

/**
 * Math spans `$…$`, `$$…$$`, `\(…\)`, `\[…\]` in order. `\(…\)` must sit on one line (Math-Verify's rule);
 * an inline `$…$` may break lines but not paragraphs, and a `$` without a partner in its paragraph is a currency sign.
 */
export function findMathSpans(s: string, max = 10_000): Span[] {
  const out: Span[] = [];
  let closeParen = -2; // cached index of the next `\)` at or after the scan position (-1: none left)
  let closeBracket = -2;
  const nextFrom = (needle: string, from: number, cache: number): number => {
    if (cache === -1) return -1;
    if (cache >= from) return cache;
    let k = s.indexOf(needle, from);
    // skip `\\)` that is really an escaped backslash followed by `)`
    while (k > 0 && s[k - 1] === "\\" && k + 1 < s.length) k = s.indexOf(needle, k + 1);
    return k;
  };
  for (let i = 0; i < s.length && out.length < max; i++) {
    const ch = s[i];
    if (ch === "\\") {
      const nx = s[i + 1];
      if (nx === "(") {
        closeParen = nextFrom("\\)", i + 2, closeParen);
        if (closeParen < 0) {
          i++;
          continue;
        }
        const content = s.slice(i + 2, closeParen);
        // `\(…\)` stays on one line (Math-Verify); only `$…$` may be broken across lines
        if (content.indexOf("\n") >= 0) {
          i++;
          continue;
        }
        out.push({ start: i, end: closeParen + 2, content, display: false });
        i = closeParen + 1;
        continue;
      }
      if (nx === "[") {
        closeBracket = nextFrom("\\]", i + 2, closeBracket);
        if (closeBracket < 0) {
          i++;
          continue;
        }
        out.push({ start: i, end: closeBracket + 2, content: s.slice(i + 2, closeBracket), display: true });
        i = closeBracket + 1;
        continue;
      }
      i++; // skip the escaped character (`\$`, `\\`, …)
      continue;
    }
    if (ch !== "$") continue;
    if (s[i + 1] === "$") {
      let k = s.indexOf("$$", i + 2);
      while (k > 0 && s[k - 1] === "\\") k = s.indexOf("$$", k + 1);
      if (k < 0) {
        i++;
        continue;
      }
      out.push({ start: i, end: k + 2, content: s.slice(i + 2, k), display: true });
      i = k + 1;
      continue;
    }
    // inline: the next unescaped `$` in the same paragraph (models break lines inside `$…$`; a blank line ends it)
    let k = i + 1;
    let found = -1;
    let multiline = false;
    while (k < s.length) {
      const c2 = s[k];
      if (c2 === "\n") {
        if (endsParagraph(s, k)) break;
        multiline = true;
      }
      if (c2 === "\\") {
        k += 2;
        continue;
      }
      if (c2 === "$") {
        found = k;
        break;
      }
      k++;
    }
    // No partner: currency. Across lines, `$5 … $6` (a digit right after the opening or the closing sign) is currency too.
    if (found < 0 || (multiline && (isDigitAt(s, i + 1) || isDigitAt(s, found + 1)))) continue;
    out.push({ start: i, end: found + 1, content: s.slice(i + 1, found), display: false });
    i = found;
  }
  return out;
}

const isDigitAt = (s: string, k: number): boolean => k < s.length && s[k] >= "0" && s[k] <= "9";

/** Whether the newline at `k` is followed by an empty line (or the end). */
function endsParagraph(s: string, k: number): boolean {
  let j = k + 1;
  while (j < s.length && (s[j] === " " || s[j] === "\t" || s[j] === "\r")) j++;
  return j >= s.length || s[j] === "\n";
}

/** If the whole (trimmed) string is one math environment, its content; else null. */
export function unwrapWholeMath(s: string): string | null {
  const t = s.trim();
  if (t.length < 2) return null;
  const spans = findMathSpans(t, 2);
  if (spans.length === 1 && spans[0].start === 0) {
    const rest = t.slice(spans[0].end).trim();
    if (rest === "" || /^[.,;:!]$/.test(rest)) return spans[0].content.trim();
  }
  return null;
}

export interface Marker {
  /** Where the marker phrase starts. */
  pos: number;
  /** Where its captured answer starts. */
  capStart: number;
  kind: "final" | "answer" | "hashes";
}

const MARKER_RE = /final\s{0,3}answer(?:\s{1,3}is)?|answer\s{1,3}is|answer\s{0,3}[:：]|####|答案是/gi;

export function findMarkers(s: string): Marker[] {
  const out: Marker[] = [];
  MARKER_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = MARKER_RE.exec(s)) !== null && out.length < 5000) {
    const txt = m[0].toLowerCase();
    const kind = txt === "####" ? "hashes" : txt.startsWith("final") ? "final" : "answer";
    out.push({ pos: m.index, capStart: m.index + m[0].length, kind });
  }
  return out;
}

/**
 * Math spans joined only by a separator (`$2$ and $3$`, `$a=1$, $b=2$`) form one answer; Math-Verify merges up to 6.
 * Returns the group ending at `spans[last]`.
 */
export function spanGroupEndingAt(s: string, spans: Span[], last: number): Span[] {
  const group = [spans[last]];
  for (let k = last - 1; k >= 0 && group.length < 6; k--) {
    const gap = s.slice(spans[k].end, group[0].start);
    if (gap.length > 12 || !/^\s*(?:[,;]|,?\s*(?:and|or))\s*$/i.test(gap)) break;
    group.unshift(spans[k]);
  }
  return group;
}

/** The spans starting at `spans[first]` joined by separators (the forward version of spanGroupEndingAt). */
function spanGroupFrom(s: string, spans: Span[], first: number): Span[] {
  const group = [spans[first]];
  for (let k = first + 1; k < spans.length && group.length < 6; k++) {
    const gap = s.slice(group[group.length - 1].end, spans[k].start);
    if (gap.length > 12 || !/^\s*(?:[,;]|,?\s*(?:and|or))\s*$/i.test(gap)) break;
    group.push(spans[k]);
  }
  return group;
}

/** The answer text after a marker: a box, math span(s), or plain text up to the end of the sentence. */
export function captureAfter(s: string, from: number): { text: string; math: boolean; more?: string[] } | null {
  let i = from;
  const limit = Math.min(s.length, from + 400);
  while (i < limit && /[\s*:：_]/.test(s[i])) i++;
  if (s.startsWith("is ", i)) i += 3;
  while (i < limit && /[\s*:：]/.test(s[i])) i++;
  if (i >= s.length) return null;
  for (const name of BOX_NAMES) {
    if (s.startsWith(name, i)) {
      const box = readBoxAt(s, i, name.length);
      return box.content === null ? null : { text: box.content, math: true };
    }
  }
  if (s[i] === "$" || (s[i] === "\\" && (s[i + 1] === "(" || s[i + 1] === "["))) {
    const window = s.slice(i, Math.min(s.length, i + 2000));
    const spans = findMathSpans(window, 8);
    if (spans.length >= 1 && spans[0].start === 0) {
      const inner = spans[0].content;
      const box = findBoxes(inner);
      if (box.length > 0 && box[box.length - 1].content !== null) return { text: box[box.length - 1].content as string, math: true };
      const group = spanGroupFrom(window, spans, 0);
      return group.length > 1 ? { text: inner, math: true, more: group.slice(1).map((g) => g.content) } : { text: inner, math: true };
    }
  }
  // Plain text up to a sentence end.
  let j = i;
  while (j < limit) {
    const ch = s[j];
    if (ch === "\n") break;
    if (ch === "." && !/\d/.test(s[j + 1] ?? "") ) break;
    if ((ch === "!" && s[j + 1] !== "=") || ch === "?") break;
    if (s.startsWith(" I hope", j)) break;
    j++;
  }
  let text = s.slice(i, j).trim();
  text = text.replace(/\*+$/, "").replace(/^\*+/, "").trim();
  if (text === "") return null;
  return { text, math: false };
}

/**
 * The last number-like token in plain text (GSM8K convention): signs, thousands separators, decimals, `a/b`.
 * A number glued to a preceding letter (`AZYUK2A`) is not a number.
 */
const NUMBER_RE = /(?<![A-Za-z0-9_.\\^])-?(?:\d+(?:,\d+)*(?:\.\d+)?|\.\d+)(?:\/\d+)?/g;

export interface NumberMatch {
  text: string;
  start: number;
  end: number;
}

export function findNumbers(s: string, max = 200_000): NumberMatch[] {
  const out: NumberMatch[] = [];
  NUMBER_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = NUMBER_RE.exec(s)) !== null && out.length < max) {
    let text = m[0];
    // "1,2,3" lists keep their commas; a trailing comma is punctuation.
    text = text.replace(/,+$/, "");
    out.push({ text, start: m.index, end: m.index + m[0].length });
  }
  return out;
}

export function lastNumber(s: string): NumberMatch | null {
  const all = findNumbers(s);
  return all.length ? all[all.length - 1] : null;
}

/** The content of the last markdown bold `**…**` (short, one line), or null. */
export function lastBold(s: string): { text: string; pos: number } | null {
  let k2 = s.lastIndexOf("**");
  for (let tries = 0; tries < 4 && k2 > 0; tries++) {
    const k1 = s.lastIndexOf("**", k2 - 1);
    if (k1 < 0) return null;
    const inner = s.slice(k1 + 2, k2).trim();
    if (inner !== "" && inner.length <= 120 && inner.indexOf("\n") < 0 && !/answer/i.test(inner)) return { text: inner, pos: k1 };
    k2 = k1;
  }
  return null;
}
