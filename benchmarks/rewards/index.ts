// `pnpm bench rewards [--min-ms 3000] [--baseline DIR]`: single-thread verifications/s and p99 latency of @nr/rewards' `verify`
// on MATH-500 (reference solution vs its answer), GSM8K (reference solution vs its #### number) and reward-hack probes
// (ill-conditioned answers vs ordinary golds: false positives, latency), and agreement
// with the expected verdicts of shared/data/answer_cases_dev.jsonl. Peer, measured in the same run on the same
// inputs: a TypeScript port of the MATH paper's `is_equiv` string-normalisation grader (./hendrycks.ts).
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import { verify, type VerifyOptions } from "@nr/rewards";
import { type BenchRow, higherIsBetter, lowerIsBetter, writeResults } from "../lib/report.js";
import { gsm8kAnswer, isEquiv, peerAnswer } from "./hendrycks.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const minMs = Number(arg("min-ms", "3000"));
// `--baseline DIR`: another build of @nr/rewards (e.g. an older commit's packages/rewards/dist) measured in the same
// run, alternating with ours on the same pairs: the before/after ratio a loaded machine cannot fake.
const baselineDir = arg("baseline", "");
const baseline = baselineDir ? ((await import(pathToFileURL(`${baselineDir}/index.js`).href)) as { verify: typeof verify }) : null;
const DATA = fileURLToPath(new URL("../../../shared/data/", import.meta.url));
if (!existsSync(DATA)) {
  console.error(`rewards bench: the shared data folder is missing (${DATA})`);
  process.exit(1);
}
const jsonl = <T>(name: string): T[] =>
  readFileSync(`${DATA}${name}`, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as T);

interface Pair {
  pred: string;
  gold: string;
}

const math500 = jsonl<{ solution: string; answer: string }>("math500_test.jsonl").map((r) => ({ pred: r.solution, gold: r.answer }));
const gsm8k = jsonl<{ answer: string }>("gsm8k_test.jsonl").map((r) => ({
  pred: r.answer,
  gold: (r.answer.split("####").pop() ?? "").trim().replaceAll(",", ""),
}));

interface Timing {
  perSecond: number;
  p50: number;
  p99: number;
  max: number;
  calls: number;
  correct: number;
}

/** Repeats the whole set (after one warm-up pass) until `minMs` elapsed; per-call latencies from performance.now. */
function measure(pairs: Pair[], fn: (p: Pair) => boolean): Timing {
  for (const p of pairs) fn(p);
  const lat: number[] = [];
  let correct = 0;
  let busy = 0;
  const start = performance.now();
  do {
    correct = 0;
    for (const p of pairs) {
      const t0 = performance.now();
      const ok = fn(p);
      const dt = performance.now() - t0;
      busy += dt;
      lat.push(dt);
      if (ok) correct++;
    }
  } while (performance.now() - start < minMs);
  lat.sort((a, b) => a - b);
  const q = (f: number) => lat[Math.min(lat.length - 1, Math.floor(f * lat.length))];
  return { perSecond: (lat.length / busy) * 1000, p50: q(0.5), p99: q(0.99), max: lat[lat.length - 1], calls: lat.length, correct };
}

// Reward-hack probes (issue #17): ill-conditioned or overflowing answers against ordinary golds. Every pair is unequal,
// so "correct" counts false positives; the latency of the certified evaluation on these inputs is reported too.
const EXPLOITS = [
  "\\sin(10^{20})", "\\cos(10^{300})", "\\sqrt{10^{40}+1}-10^{20}", "1e309", "\\tan(10^{100})", "e^{1000}-e^{999}",
  "(1+10^{-30})^{10^{30}}", "\\sin(\\sin(\\sin(10^{50})))", "(10^{30}+\\pi)-10^{30}-3", "2^{2^{2^{2^{2}}}}",
];
const exploitPairs: Pair[] = EXPLOITS.flatMap((e) =>
  [...math500.slice(0, 50).map((p) => p.gold), ...gsm8k.slice(0, 50).map((p) => `#### ${p.gold}`)].map((gold) => ({
    pred: `<think>ok</think> The answer is \\boxed{${e}}.`,
    gold,
  })),
);

const ours = (p: Pair) => verify(p.pred, p.gold).correct;
const peerMath = (p: Pair) => isEquiv(peerAnswer(p.pred), p.gold);
const peerGsm = (p: Pair) => isEquiv(gsm8kAnswer(p.pred), p.gold);

const PEER = "hendrycks is_equiv (TS port, same run)";
const rows: BenchRow[] = [];
for (const [name, pairs, peerFn] of [
  ["MATH-500 solution vs answer", math500, peerMath],
  ["GSM8K test solution vs #### answer", gsm8k, peerGsm],
  [`exploit probes (${EXPLOITS.length} × 100 golds, none equal)`, exploitPairs, peerMath],
] as const) {
  const a = measure(pairs, ours);
  const b = measure(pairs, peerFn);
  console.log(
    `${name}: ours ${a.perSecond.toFixed(0)}/s (p50 ${a.p50.toFixed(3)} ms, p99 ${a.p99.toFixed(3)} ms, max ${a.max.toFixed(2)} ms, ` +
      `${a.correct}/${pairs.length} verified) | peer ${b.perSecond.toFixed(0)}/s (p99 ${b.p99.toFixed(4)} ms, ${b.correct}/${pairs.length})`,
  );
  rows.push(higherIsBetter(name, "verifications/s (single thread)", a.perSecond, PEER, b.perSecond, { calls: a.calls, target: 2000 }));
  rows.push(lowerIsBetter(name, "p99 latency ms", a.p99, PEER, b.p99, { p50: a.p50, max: a.max }));
  if (baseline) {
    const before = measure(pairs, (p) => baseline.verify(p.pred, p.gold).correct);
    const after = measure(pairs, ours);
    console.log(
      `${name}: baseline ${before.perSecond.toFixed(0)}/s (p99 ${before.p99.toFixed(3)} ms, max ${before.max.toFixed(2)} ms, ${before.correct} equal) → ` +
        `ours ${after.perSecond.toFixed(0)}/s (p99 ${after.p99.toFixed(3)} ms, max ${after.max.toFixed(2)} ms, ${after.correct} equal): ratio ${(after.perSecond / before.perSecond).toFixed(2)}`,
    );
    rows.push(higherIsBetter(name, "verifications/s vs --baseline build", after.perSecond, `baseline ${baselineDir}`, before.perSecond, { baselineEqual: before.correct }));
  }
  if (pairs === exploitPairs) rows.push(lowerIsBetter(name, "false positives", a.correct, PEER, b.correct, { max: a.max }));
  else rows.push(higherIsBetter(name, "self-agreement %", (100 * a.correct) / pairs.length, PEER, (100 * b.correct) / pairs.length));
}

// Agreement with the expected verdicts (the upstream grader options a row carries are passed on, as in the tests).
interface Case {
  pred: string;
  gold: string;
  equal: boolean;
  category: string;
  config?: { precision?: number; allow_set_relation_comp?: boolean; strict?: boolean; match_types?: Array<"latex" | "expr"> };
}
const cases = jsonl<Case>("answer_cases_dev.jsonl");
const optionsFor = (c: Case): VerifyOptions => ({
  floatPrecision: c.config?.precision,
  allowSetRelation: c.config?.allow_set_relation_comp,
  strictVariables: c.config?.strict,
  matchTypes: c.config?.match_types,
});
let ok = 0;
let fp = 0;
let peerOk = 0;
let peerFp = 0;
for (const c of cases) {
  const mine = verify(c.pred, c.gold, optionsFor(c)).correct;
  const theirs = isEquiv(peerAnswer(c.pred), peerAnswer(c.gold));
  if (mine === c.equal) ok++;
  else if (mine) fp++;
  if (theirs === c.equal) peerOk++;
  else if (theirs) peerFp++;
}
console.log(`answer_cases_dev (${cases.length} cases): ours ${ok} agree, ${fp} false positives | peer ${peerOk} agree, ${peerFp} false positives`);
rows.push(
  higherIsBetter("answer_cases_dev.jsonl", "agreement with expected verdict %", (100 * ok) / cases.length, PEER, (100 * peerOk) / cases.length, {
    falsePositives: fp,
    peerFalsePositives: peerFp,
    n: cases.length,
  }),
);

writeResults("rewards", null, rows, {
  note: "single thread, compiled @nr/rewards (dist); verifications/s = calls / summed per-call time after a warm-up pass; ratio > 1 = ours better",
  node: process.version,
});
