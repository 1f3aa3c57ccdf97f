// Sandbox call cost: warm @nr/sandbox calls (pyodide in a worker thread, kept warm by the pool) beside the usual
// peer, one `python3 -c CODE` subprocess per call, on the same machine in the same run. Calls are sequential (one
// in flight), so latency is what one TIR tool call waits. Rows: calls/s (ratio > 1: ours faster), p50 and p99
// latency (ratio = peer / ours).
//   pnpm bench sandbox [--calls N] [--sympy-calls N]
import { spawnSync } from "node:child_process";
import { SandboxPool } from "@nr/sandbox";
import { type BenchRow, higherIsBetter, lowerIsBetter, writeResults } from "../lib/report.js";

const arg = (name: string, d: number) => {
  const i = process.argv.indexOf(`--${name}`);
  const v = i > 0 ? Number(process.argv[i + 1]) : d;
  if (!(Number.isInteger(v) && v > 0)) throw new Error(`--${name} ${process.argv[i + 1]}: expected a positive integer`);
  return v;
};
const CALLS = arg("calls", 200);
const SYMPY_CALLS = arg("sympy-calls", 20);
const PEER = "python3 subprocess per call";

const CASES = [
  { name: "print", code: "print(6 * 7)", expect: "42\n", calls: CALLS },
  { name: "loop 1e5", code: "print(sum(i * i for i in range(100000)))", expect: "333328333350000\n", calls: CALLS },
  { name: "sympy solve", code: "import sympy as sp\nx = sp.Symbol('x')\nprint(sp.solve(x**2 - 5*x + 6, x))", expect: "[2, 3]\n", calls: SYMPY_CALLS },
];

function stats(ms: number[]) {
  const s = [...ms].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)];
  return { perSec: (1000 * ms.length) / ms.reduce((a, b) => a + b, 0), p50: q(0.5), p99: q(0.99) };
}

const python3 = spawnSync("python3", ["-c", "import sys; print(sys.version.split()[0])"], { encoding: "utf8" });
const peerVersion = python3.status === 0 ? python3.stdout.trim() : null;
if (!peerVersion) console.error("python3 is not on PATH: the peer columns stay empty");

const boot0 = performance.now();
const pool = new SandboxPool({ workers: 1, timeoutMs: 60_000 });
await pool.warm();
const bootMs = performance.now() - boot0;
console.error(`sandbox warm in ${(bootMs / 1000).toFixed(1)} s (pyodide, sympy copied and imported: ${pool.config.preload.join(", ") || "nothing preloaded"})`);

const rows: BenchRow[] = [];
for (const c of CASES) {
  const ours: number[] = [], peer: number[] = [];
  for (let i = 0; i < c.calls + 2; i++) {
    const t0 = performance.now();
    const r = await pool.run(c.code);
    const dt = performance.now() - t0;
    if (r.stdout !== c.expect) throw new Error(`${c.name}: the sandbox printed ${JSON.stringify(r.stdout)} (${r.status} ${r.reason ?? ""})`);
    if (i >= 2) ours.push(dt); // the first two calls warm this case's code paths
  }
  if (peerVersion) {
    for (let i = 0; i < c.calls; i++) {
      const t0 = performance.now();
      const r = spawnSync("python3", ["-c", c.code], { encoding: "utf8" });
      peer.push(performance.now() - t0);
      if (r.stdout !== c.expect) throw new Error(`${c.name}: python3 printed ${JSON.stringify(r.stdout)} ${r.stderr}`);
    }
  }
  const o = stats(ours), p = peer.length ? stats(peer) : null;
  console.error(`${c.name}: sandbox ${o.perSec.toFixed(1)} calls/s p50 ${o.p50.toFixed(2)} ms p99 ${o.p99.toFixed(2)} ms | ${PEER} ${p ? `${p.perSec.toFixed(1)} calls/s p50 ${p.p50.toFixed(2)} ms p99 ${p.p99.toFixed(2)} ms` : "-"}`);
  const extra = { calls: c.calls };
  rows.push(higherIsBetter(c.name, "calls/s", o.perSec, PEER, p?.perSec ?? null, extra));
  rows.push(lowerIsBetter(c.name, "p50 latency ms", o.p50, PEER, p?.p50 ?? null, extra));
  rows.push(lowerIsBetter(c.name, "p99 latency ms", o.p99, PEER, p?.p99 ?? null, extra));
}
await pool.close();

writeResults("sandbox", null, rows, {
  note: "sequential calls, one warm sandbox worker (pyodide 314 / Python 3.14) vs spawning python3 per call; the machine's load is not controlled, so compare the ratio, not the absolute numbers",
  node: process.version,
  peerPython: peerVersion,
  sandboxWarmMs: bootMs,
});
