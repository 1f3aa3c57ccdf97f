/**
 * Hard bounds that keep every `verify` call's work finite, whatever the input.
 * They are deliberately generous for real answers and tight for adversarial strings.
 */
export const LIMITS = {
  /** A response longer than this keeps only its last MAX_RESPONSE_CHARS characters (answers sit at the end). */
  MAX_RESPONSE_CHARS: 60_000,
  /** An extracted answer longer than this is compared as a string only (no parsing). */
  MAX_ANSWER_CHARS: 1_500,
  /** Tokens per answer. */
  MAX_TOKENS: 1_200,
  /** Parser recursion depth (nesting of brackets, fractions, exponents). */
  MAX_DEPTH: 60,
  /** AST nodes per answer. */
  MAX_NODES: 2_000,
  /** Digits of one numeric literal that the exact (BigInt) path accepts; longer literals are undecidable. */
  MAX_LITERAL_DIGITS: 400,
  /** Bits of any exact intermediate (numerator or denominator). `2^{2006}` needs 2,007; `2006!` ~19,000. */
  MAX_BITS: 40_000,
  /** Largest n for an exact n!. */
  MAX_FACTORIAL: 3_000,
  /** ± signs expanded per expression (2^k variants). */
  MAX_PM: 4,
  /** Elements per list, set, tuple or matrix. */
  MAX_ITEMS: 64,
  /** Evaluation steps (node visits, exact and numeric) per `verify` call. */
  MAX_STEPS: 400_000,
} as const;

/** Thrown when a call runs out of its budget; `verify` turns it into `correct: false`. */
export class BudgetError extends Error {
  constructor(what: string) {
    super(`budget exceeded: ${what}`);
    this.name = "BudgetError";
  }
}

/**
 * Control-flow signals thrown and caught inside the package. They deliberately do not extend Error:
 * capturing a stack trace on every rejected parse would dominate the cost of extraction.
 */
export class Signal {
  readonly name: string = "Signal";
  constructor(readonly message: string) {}
  toString(): string {
    return `${this.name}: ${this.message}`;
  }
}

/** Thrown when one exact intermediate would exceed its size cap; the caller falls back to doubles. */
export class SizeLimit extends Signal {
  override readonly name = "SizeLimit";
}

/** Thrown for input the parser does not understand; the caller falls back to string comparison. */
export class ParseError extends Signal {
  override readonly name = "ParseError";
}

/** A per-call step counter. */
export class Budget {
  steps = 0;
  constructor(readonly maxSteps: number = LIMITS.MAX_STEPS) {}

  tick(n = 1): void {
    this.steps += n;
    if (this.steps > this.maxSteps) throw new BudgetError("evaluation steps");
  }
}
