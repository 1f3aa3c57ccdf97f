/**
 * Repairs applied to raw text before anything else: control characters left by non-raw Python literals,
 * one level of JSON-style escaping (`\\frac`, literal `\n`), chat special tokens, and `<think>` blocks.
 */

/** LaTeX command names used to recognise escaping damage (a command whose backslash became a control char, or doubled). */
const KNOWN_COMMANDS = new Set(
  (
    "boxed fbox frac dfrac tfrac cfrac left right sqrt text textbf textit textnormal mathrm mathbf mbox pi cdot times " +
    "le leq ge geq lt gt ne neq infty in cup cap begin end pm mp circ quad qquad approx ln log sin cos tan sec csc cot " +
    "alpha beta gamma delta theta lambda mu sigma phi omega angle div emptyset varnothing mathbb overline dots ldots " +
    "cdots binom dbinom operatorname displaystyle setminus prime vert lfloor rfloor lceil rceil to tau rho eta " +
    "exp arcsin arccos arctan sinh cosh tanh equiv hline end item"
  ).split(" "),
);

/** Control characters that stand for an escape sequence `\x` in a non-raw Python string. */
const CONTROL_ESCAPES: Record<string, string> = { "\f": "f", "\b": "b", "\u0007": "a", "\v": "v", "\t": "t", "\r": "r" };

/**
 * `"\frac"` written in a non-raw Python literal arrives as FORM FEED + `rac`; likewise TAB+`ext`, BS+`oxed`.
 * A control character directly followed by letters that complete a known command becomes that command again.
 * Every other control character (except newline) becomes a space.
 */
export function repairControlChars(s: string): string {
  // Fast path: nothing to do for the common case.
  if (!/[\u0000-\u0009\u000b-\u001f]/.test(s)) return s;
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    const code = ch.charCodeAt(0);
    if (ch === "\n" || code >= 32) {
      out += ch;
      continue;
    }
    const letter = CONTROL_ESCAPES[ch];
    if (letter !== undefined) {
      let j = i + 1;
      while (j < s.length && j - i < 16 && /[A-Za-z]/.test(s[j])) j++;
      const name = letter + s.slice(i + 1, j);
      if (j > i + 1 && hasKnownPrefix(name)) {
        // Drop backslashes that were meant to introduce this command.
        while (out.endsWith("\\")) out = out.slice(0, -1);
        out += "\\" + letter;
        continue;
      }
    }
    out += " ";
  }
  return out;
}

function hasKnownPrefix(name: string): boolean {
  for (let k = name.length; k >= 2; k--) if (KNOWN_COMMANDS.has(name.slice(0, k))) return true;
  return false;
}

/**
 * Undoes one level of escaping when the text shows it: LaTeX commands appear only with an even run of
 * backslashes (`\\frac`), never with a single one. Then `\\` → `\`, `\n` → newline, `\"` → `"`, `\t` → space.
 */
export function unescapeIfDoubled(s: string): string {
  if (s.indexOf("\\\\") < 0) return s;
  let doubled = 0;
  let single = 0;
  const re = /(?<!\\)(\\+)([A-Za-z]+)/g;
  let m: RegExpExecArray | null;
  let scanned = 0;
  while ((m = re.exec(s)) !== null && scanned++ < 5000) {
    if (!KNOWN_COMMANDS.has(m[2])) continue;
    if (m[1].length % 2 === 1) single++;
    else doubled++;
  }
  if (doubled === 0 || single > 0) return s;
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (ch !== "\\" || i + 1 >= s.length) {
      out += ch;
      continue;
    }
    const nx = s[i + 1];
    if (nx === "\\") out += "\\";
    else if (nx === "n") out += "\n";
    else if (nx === "t") out += " ";
    else if (nx === '"') out += '"';
    else {
      out += ch;
      continue;
    }
    i++;
  }
  return out;
}

/** Chat-template special tokens: text after one of them is a new turn, not part of the answer. */
const SPECIAL_TOKENS = ["<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|end|>", "</s>"];

/** Keeps the first non-blank segment before a chat special token. */
export function cutAtSpecialTokens(s: string): string {
  if (s.indexOf("<|") < 0 && s.indexOf("</s>") < 0) return s;
  let start = 0;
  for (let guard = 0; guard < 64; guard++) {
    let cut = -1;
    let len = 0;
    for (const t of SPECIAL_TOKENS) {
      const k = s.indexOf(t, start);
      if (k >= 0 && (cut < 0 || k < cut)) {
        cut = k;
        len = t.length;
      }
    }
    if (cut < 0) return s.slice(start);
    if (s.slice(start, cut).trim() !== "") return s.slice(start, cut);
    start = cut + len;
  }
  return s.slice(start);
}

export interface ThinkSplit {
  /** The part to grade: after the last `</think>`, or everything when there is no think block. */
  answerPart: string;
  /** Whether a `</think>` closed a reasoning block. */
  closed: boolean;
  /** Whether a `<think>` was opened but never closed (a truncated or malformed response). */
  unclosed: boolean;
}

export function splitThink(s: string): ThinkSplit {
  const close = s.lastIndexOf("</think>");
  if (close >= 0) return { answerPart: s.slice(close + 8), closed: true, unclosed: false };
  const open = s.indexOf("<think>");
  if (open >= 0) return { answerPart: "", closed: false, unclosed: true };
  return { answerPart: s, closed: false, unclosed: false };
}

/** Fullwidth forms (`１２`, `（３，４）`, `＋`) and the ideographic space, as models writing CJK text produce them, to ASCII. */
export function foldFullwidth(s: string): string {
  if (!/[\uff01-\uff5e\u3000]/.test(s)) return s;
  return s.replace(/[\uff01-\uff5e]/g, (c) => String.fromCharCode(c.charCodeAt(0) - 0xfee0)).replace(/\u3000/g, " ");
}

const EATEN: Record<string, string> = { ext: "\\text", rac: "\\frac", oxed: "\\boxed", egin: "\\begin" };
const EATEN_RE = /(?<![A-Za-z\\])(ext|rac|oxed|egin)\{/g;

/**
 * `\text{13}` whose `\t` became a TAB that a cleaning step then deleted arrives as `ext{13}` (likewise `rac{` for
 * `\frac{`, `oxed{`, `egin{`): a bare command tail at a word start followed by `{` gets its command back.
 */
export function repairEatenEscapes(s: string): string {
  if (s.indexOf("{") < 0 || !/(?<![A-Za-z\\])(?:ext|rac|oxed|egin)\{/.test(s)) return s;
  return s.replace(EATEN_RE, (_m, tail: string) => `${EATEN[tail]}{`);
}

/** All repairs in order; bounded to the tail of very long inputs. */
export function cleanText(s: string, maxChars: number): string {
  if (s.length > maxChars) s = s.slice(s.length - maxChars);
  return repairEatenEscapes(unescapeIfDoubled(repairControlChars(foldFullwidth(s))));
}
