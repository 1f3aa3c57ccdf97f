// The peer: a TypeScript port of the MATH paper's string-normalisation grader (hendrycks/math
// `modeling/math_equivalence.py`), with its extraction
// (`last_boxed_only_string` + `remove_boxed`). Python behaviours are kept: an IndexError/AssertionError inside
// the normalisation makes `is_equiv` fall back to raw string equality; `int()` accepts surrounding spaces and a sign.

class PyError extends Error {}

/** `last_boxed_only_string`: rfind("\\boxed"), else rfind("\\fbox"), then brace counting (escapes are not special). */
export function lastBoxedOnlyString(s: string): string | null {
  let idx = s.lastIndexOf("\\boxed");
  if (idx < 0) {
    idx = s.lastIndexOf("\\fbox");
    if (idx < 0) return null;
  }
  let open = 0;
  for (let i = idx; i < s.length; i++) {
    if (s[i] === "{") open++;
    if (s[i] === "}") {
      open--;
      if (open === 0) return s.slice(idx, i + 1);
    }
  }
  return null;
}

/** `remove_boxed`: requires the literal `\boxed{` … `}` (so `\fbox{}` yields None). */
export function removeBoxed(s: string | null): string | null {
  if (s === null) return null;
  const left = "\\boxed{";
  return s.startsWith(left) && s.endsWith("}") ? s.slice(left.length, -1) : null;
}

function fixFracs(string: string): string {
  const substrs = string.split("\\frac");
  let out = substrs[0];
  for (const substr of substrs.slice(1)) {
    out += "\\frac";
    if (substr[0] === "{") out += substr;
    else {
      if (substr.length < 2) return string;
      const a = substr[0];
      const b = substr[1];
      if (b !== "{") out += `{${a}}{${b}}` + substr.slice(2);
      else out += `{${a}}${b}` + substr.slice(2);
    }
  }
  return out;
}

/** Python int(): optional surrounding whitespace and sign, decimal digits. */
function pyInt(s: string): bigint | null {
  return /^\s*[+-]?\d+\s*$/.test(s) ? BigInt(s.trim()) : null;
}

function fixASlashB(string: string): string {
  const parts = string.split("/");
  if (parts.length !== 2) return string;
  const a = pyInt(parts[0]);
  const b = pyInt(parts[1]);
  if (a === null || b === null || string !== `${a}/${b}`) return string;
  return `\\frac{${a}}{${b}}`;
}

function removeRightUnits(string: string): string {
  // "\\text{ " only ever occurs (at least in the val set) when describing units
  if (string.includes("\\text{ ")) {
    const splits = string.split("\\text{ ");
    if (splits.length !== 2) throw new PyError("assert len(splits) == 2");
    return splits[0];
  }
  return string;
}

function fixSqrt(string: string): string {
  if (!string.includes("\\sqrt")) return string;
  const splits = string.split("\\sqrt");
  let out = splits[0];
  for (const split of splits.slice(1)) {
    if (split.length === 0) throw new PyError("IndexError: string index out of range");
    out += split[0] !== "{" ? `\\sqrt{${split[0]}}${split.slice(1)}` : `\\sqrt${split}`;
  }
  return out;
}

function stripString(input: string): string {
  let string = input.replaceAll("\n", "");
  string = string.replaceAll("\\!", "");
  string = string.replaceAll("\\\\", "\\");
  string = string.replaceAll("tfrac", "frac");
  string = string.replaceAll("dfrac", "frac");
  string = string.replaceAll("\\left", "");
  string = string.replaceAll("\\right", "");
  string = string.replaceAll("^{\\circ}", "");
  string = string.replaceAll("^\\circ", "");
  string = string.replaceAll("\\$", "");
  string = removeRightUnits(string);
  string = string.replaceAll("\\%", "");
  string = string.replaceAll(" .", " 0.");
  string = string.replaceAll("{.", "{0.");
  if (string.length === 0) return string;
  if (string[0] === ".") string = "0" + string;
  const eq = string.split("=");
  if (eq.length === 2 && eq[0].length <= 2) string = eq[1];
  string = fixSqrt(string);
  string = string.replaceAll(" ", "");
  string = fixFracs(string);
  if (string === "0.5") string = "\\frac{1}{2}";
  string = fixASlashB(string);
  return string;
}

/** `is_equiv(str1, str2)`: equality of the normalised strings; raw equality when normalisation raises. */
export function isEquiv(str1: string | null, str2: string | null): boolean {
  if (str1 === null && str2 === null) return true;
  if (str1 === null || str2 === null) return false;
  try {
    return stripString(str1) === stripString(str2);
  } catch (e) {
    if (e instanceof PyError) return str1 === str2;
    throw e;
  }
}

/** The peer's whole pipeline on a response: the last box's content (the raw text when there is no box). */
export function peerAnswer(text: string): string {
  return removeBoxed(lastBoxedOnlyString(text)) ?? text;
}

/** GSM8K convention (openai/grade-school-math `extract_answer`): `#### (-?[0-9.,]+)`, commas removed. */
export function gsm8kAnswer(text: string): string | null {
  const m = /#### (-?[0-9.,]+)/.exec(text);
  return m ? m[1].trim().replaceAll(",", "") : null;
}
