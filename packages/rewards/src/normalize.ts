/**
 * String-level normalisation of an extracted answer, before tokenising.
 * Everything here is a rewrite that cannot change which mathematical object is meant:
 * delimiters, spacing commands, font commands, thousands separators, degree marks, currency, trailing units.
 */
import { findBoxes, unwrapWholeMath } from "./extract.js";

/** Unit words removed when they trail a number (both sides). Plurals are matched by an optional `s`/`es`. */
const UNIT_WORDS = [
  "centimeter", "centimetre", "millimeter", "millimetre", "kilometer", "kilometre", "meter", "metre", "cm", "mm", "km",
  "inch", "inches", "foot", "feet", "ft", "yard", "yd", "mile", "mi", "sq", "square", "cubic", "units", "unit",
  "gram", "kilogram", "milligram", "kg", "mg", "lb", "lbs", "pound", "ounce", "oz", "ton", "tonne",
  "second", "sec", "minute", "min", "hour", "hr", "hrs", "day", "week", "month", "year", "yr", "yrs",
  "liter", "litre", "milliliter", "millilitre", "ml", "gallon", "gal", "quart", "pint",
  "dollar", "cent", "yuan", "euro", "usd", "rupee", "degree", "deg", "radian", "mph", "kph", "kmh",
  "m/s", "km/h", "km/hr", "cm/s", "ft/s", "mi/h",
];
const UNIT_ALT = [...UNIT_WORDS]
  .sort((a, b) => b.length - a.length)
  .map((w) => w.replace("/", "\\/"))
  .join("|");
/** A point where an answer element ends: end of string, a separator, or a closing bracket. */
const TERM = String.raw`(?=\s*(?:$|[,;)\]]|\\\}|\\\\|&|\band\b|\bor\b))`;
const UNIT_RE = new RegExp(String.raw`([\d}).])\s*(?:${UNIT_ALT})(?:e?s)?(?:\s*(?:\^\s*\{?[23]\}?|²|³))?(?![A-Za-z])` + TERM, "gi");
/** Units that are single letters (`3s`, `5m`, `2h`): only stripped from predictions, never from a gold answer. */
const LETTER_UNIT_RE = new RegExp(String.raw`(\d)\s*[msghl](?:\s*(?:\^\s*\{?[23]\}?|²|³))?(?![A-Za-z])` + TERM, "g");
/** `\text{ …words…}` right after a number: a unit (hendrycks drops everything after `\text{ `). */
const TEXT_UNIT_RE = new RegExp(
  String.raw`([\d}).])\s*\\text\{\s*([A-Za-z][A-Za-z .'/-]{0,40}?)\s*\}(?:\s*(?:\^\s*\{?[23]\}?|²|³))?` + TERM,
  "g",
);

const VULGAR: Record<string, string> = {
  "½": "1/2", "⅓": "1/3", "⅔": "2/3", "¼": "1/4", "¾": "3/4", "⅕": "1/5", "⅖": "2/5", "⅗": "3/5", "⅘": "4/5",
  "⅙": "1/6", "⅚": "5/6", "⅐": "1/7", "⅛": "1/8", "⅜": "3/8", "⅝": "5/8", "⅞": "7/8", "⅑": "1/9", "⅒": "1/10", "↉": "0/3",
};
const SUPERSCRIPT: Record<string, string> = {
  "⁰": "0", "¹": "1", "²": "2", "³": "3", "⁴": "4", "⁵": "5", "⁶": "6", "⁷": "7", "⁸": "8", "⁹": "9", "⁺": "+", "⁻": "-",
  "⁽": "(", "⁾": ")", "ⁿ": "n", "ⁱ": "i",
};
const SUBSCRIPT: Record<string, string> = {
  "₀": "0", "₁": "1", "₂": "2", "₃": "3", "₄": "4", "₅": "5", "₆": "6", "₇": "7", "₈": "8", "₉": "9", "₊": "+", "₋": "-",
};
const runOf = (table: Record<string, string>) => new RegExp(`[${Object.keys(table).join("")}]+`, "g");
const spell = (table: Record<string, string>, run: string) => [...run].map((c) => table[c]).join("");

const UNICODE: Array<[RegExp, string | ((m: string) => string)]> = [
  // `2½` is the mixed number 2 + 1/2 (the parser reads a digit followed by \frac as one), `½` alone 1/2
  [/[½⅓⅔¼¾⅕⅖⅗⅘⅙⅚⅐⅛⅜⅝⅞⅑⅒↉]/g, (c) => `\\frac{${VULGAR[c].replace("/", "}{")}}`],
  [/\u2044/g, "/"],
  [runOf(SUPERSCRIPT), (r) => `^{${spell(SUPERSCRIPT, r)}}`],
  [runOf(SUBSCRIPT), (r) => `_{${spell(SUBSCRIPT, r)}}`],
  [/\u2217/g, "*"],
  [/[\u2212\u2012\u2013\u2014]/g, "-"],
  [/×/g, "\\times "],
  [/[·⋅∙]/g, "\\cdot "],
  [/÷/g, "\\div "],
  [/≤|⩽/g, "\\le "],
  [/≥|⩾/g, "\\ge "],
  [/≠/g, "\\ne "],
  [/≈/g, "\\approx "],
  [/√/g, "\\sqrt"],
  [/π/g, "\\pi "],
  [/∞/g, "\\infty "],
  [/∪/g, "\\cup "],
  [/∩/g, "\\cap "],
  [/∅/g, "\\emptyset "],
  [/±/g, "\\pm "],
  [/∓/g, "\\mp "],
  [/∈/g, "\\in "],
  [/ℝ/g, "\\mathbb{R}"],
  [/…/g, "\\dots "],
  [/[“”]/g, '"'],
  [/[‘’]/g, "'"],
  [/\u00a0/g, " "],
];

export type Side = "pred" | "gold";

/** Strips math delimiters and a box that wraps the whole answer, repeatedly. */
export function stripWrappers(s: string): string {
  let t = s.trim();
  for (let k = 0; k < 6; k++) {
    const inner = unwrapWholeMath(t);
    if (inner !== null) {
      t = inner.trim();
      continue;
    }
    const boxes = findBoxes(t);
    if (boxes.length === 1 && boxes[0].start === 0 && boxes[0].content !== null) {
      const rest = t.slice(boxes[0].end).trim();
      if (rest === "" || /^[.,;]$/.test(rest)) {
        t = boxes[0].content.trim();
        continue;
      }
    }
    break;
  }
  return t;
}

/** Normalises an extracted answer string (LaTeX or plain). */
export function normalizeAnswer(raw: string, side: Side): string {
  let t = stripWrappers(raw);
  // Each group runs only when its trigger character is present (this function runs on every candidate).
  if (/[^\x00-\x7f]/.test(t))
    for (const [re, rep] of UNICODE) {
      re.lastIndex = 0;
      if (re.test(t)) t = typeof rep === "string" ? t.replace(re, rep) : t.replace(re, rep);
    }
  const bs = t.indexOf("\\") >= 0;
  if (bs) {
    t = t.replace(/\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits|nonumber)(?![A-Za-z])/g, "");
    t = t.replace(/\\(?:left|right)\s*\./g, "");
    t = t.replace(/\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|Biggl|Biggr|bigg|Bigg|big|Big|middle)(?![A-Za-z])/g, "");
    // Thousands separators: `10,\!080`, `11,\! 111`, `1\,000`.
    t = t.replace(/(\d)\s*,\s*\\!\s*(?=\d{3}(?!\d))/g, "$1");
    t = t.replace(/(\d)\\[,;: ](?=\d{3}(?!\d))/g, "$1");
    t = t.replace(/(?<!\\)\\!/g, "");
    t = t.replace(/(?<!\\)\\q?quad(?![a-z])/g, " \\quad ");
    t = t.replace(/(?<!\\)\\[,:; >]/g, " ");
    // Outside an environment `\\` is no row break: `\\frac` is a doubled backslash (hendrycks turns `\\` into `\`).
    if (t.indexOf("\\begin") < 0) t = t.replace(/\\\\(?=[A-Za-z])/g, "\\").replace(/\\\\/g, " ");
    t = t.replace(/\\[dtc]frac(?![A-Za-z])/g, "\\frac").replace(/\\[dt]binom(?![A-Za-z])/g, "\\binom");
    t = t.replace(
      /\\(?:textbf|textit|textnormal|textrm|textsf|texttt|textup|textmd|mathrm|mathit|mathsf|mathtt|mathbf|mathnormal|boldsymbol|bm|mbox|hbox|emph)\s*\{/g,
      "\\text{",
    );
    t = t.replace(/\\text\s+\{/g, "\\text{");
    t = t.replace(/\\text\{\s*(and|or)\s*\}/gi, " $1 ");
    t = t.replace(/\\text\{\s*,?\s*(and|or)\s*\}/gi, ", $1 ");
  }
  // `\text{10 cm}`: a number inside the text wrapper is math, the unit is stripped below
  if (bs) t = t.replace(/\\text\{\s*([-+]?\d[\d.,]*)(\s*[A-Za-z][A-Za-z ./]*)?\s*\}/g, (_a, num: string, unit?: string) => `${num}${unit ?? ""}`);
  if (t.indexOf("{,}") >= 0) t = t.replace(/(\d)\{,\}(?=\d{3}(?!\d))/g, "$1");
  if (t.indexOf("~") >= 0) t = t.replace(/~/g, " ");
  // Degree marks: `90^\circ`, `90^{\circ}`, `90°`, `\degree`.
  if (bs || t.indexOf("°") >= 0) {
    // kept as a marker: dropped by the parser, except inside sin/cos/… where it means ·π/180
    t = t.replace(/\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree(?![A-Za-z])|°/g, "\\degree ");
    t = t.replace(/\^\s*\{\s*\}/g, "");
  }
  // Percent.
  if (bs) t = t.replace(/\\%/g, "%");
  const letters = /[A-Za-z]/.test(t);
  if (letters) {
    t = t.replace(/\s*\\text\{\s*(?:percent|percentage|pct)\s*\}/gi, "%");
    t = t.replace(/([\d}])\s*(?:percentage|percent|pct)(?![A-Za-z])/gi, "$1%");
  }
  // Currency.
  if (t.indexOf("$") >= 0) t = t.replace(/\\\$|\$/g, "");
  if (/[€£¥]/.test(t)) t = t.replace(/[€£¥]/g, "");
  if (letters) t = t.replace(/(?<![A-Za-z])(?:USD|EUR|GBP|CAD|AUD|INR|Rs\.?)\s*(?=[-+]?\.?\d)/g, "");
  if (bs) t = t.replace(/\\(?:euro|pounds|yen|textdollar)(?![A-Za-z])/g, "");
  // Units after a number at the end of an element.
  if (letters) {
    if (bs) t = t.replace(TEXT_UNIT_RE, (all, lead: string, word: string) => (/^(and|or)$/i.test(word.trim()) ? all : lead));
    t = t.replace(UNIT_RE, "$1");
    if (side === "pred") t = t.replace(LETTER_UNIT_RE, "$1");
  }
  t = t.replace(/\s+/g, " ").trim();
  // Sentence punctuation left at the end.
  t = trimTrailingPunctuation(t);
  // A lone number with thousands separators: `1,000`, `58,500`, `1 000 000`. (`32, 349` with a space is a list.)
  if (/^[-+]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?%?$/.test(t)) t = t.replace(/,/g, "");
  else if (/^[-+]?[1-9]\d{0,2}(?: \d{3})+(?:\.\d+)?$/.test(t)) t = t.replace(/ /g, "");
  return t;
}

/** Drops sentence punctuation and spaces at the end (a loop: the regex form backtracks on long runs). */
function trimTrailingPunctuation(t: string): string {
  let end = t.length;
  while (end > 0 && ".;,: \t\n".includes(t[end - 1])) end--;
  return t.slice(0, end).trim();
}

/**
 * Key for the fast path "the two answers are written the same way": whitespace removed, except that
 * a comma followed by a space stays distinguishable (`32, 349` is a list, `32,349` is a number).
 */
export function stringKey(normalized: string): string {
  return normalized.replace(/,\s+/g, ",\u0001").replace(/\s+/g, "").replace(/\\text\{([^{}]*)\}/g, "$1");
}
