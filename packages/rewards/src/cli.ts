#!/usr/bin/env node
/**
 * nr-verify PRED GOLD [--gsm8k] [--precision N] [--unordered] [--allow-set-relation] [--require-think]
 * Prints the VerifyResult as JSON. Exit code 0 when correct, 1 when not, 2 on a usage error.
 * PRED or GOLD given as `-` is read from standard input (only one of them).
 */
import { readFileSync } from "node:fs";
import { verify, type VerifyOptions } from "./verify.js";

const USAGE = `usage: nr-verify PRED GOLD [options]
  PRED, GOLD   a model response / an answer (LaTeX or plain); "-" reads that one from stdin
  --gsm8k                 GSM8K mode (#### golds, last-number fallback)
  --precision N           decimals that must agree for decimal approximations (default 6)
  --unordered             compare bare lists a, b, c as sets
  --allow-set-relation    accept an inequality for an interval gold
  --require-think         require a closed <think>…</think> block
prints the result as JSON; exit 0 = correct, 1 = not correct, 2 = usage error`;

export function main(argv: string[]): number {
  const positional: string[] = [];
  const options: VerifyOptions = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "-h" || a === "--help") {
      process.stdout.write(USAGE + "\n");
      return 0;
    } else if (a === "--gsm8k") options.mode = "gsm8k";
    else if (a === "--unordered") options.unorderedLists = true;
    else if (a === "--allow-set-relation") options.allowSetRelation = true;
    else if (a === "--require-think") options.requireThink = true;
    else if (a === "--precision") {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0 || v > 15) {
        process.stderr.write(`nr-verify: --precision needs an integer 0..15\n${USAGE}\n`);
        return 2;
      }
      options.floatPrecision = v;
    } else if (a.startsWith("--")) {
      process.stderr.write(`nr-verify: unknown option ${a}\n${USAGE}\n`);
      return 2;
    } else positional.push(a);
  }
  if (positional.length !== 2 || (positional[0] === "-" && positional[1] === "-")) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const [pred, gold] = positional.map((p) => (p === "-" ? readFileSync(0, "utf8") : p));
  const result = verify(pred, gold, options);
  process.stdout.write(JSON.stringify(result, null, 2) + "\n");
  return result.correct ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
