// Eval results as the trainer's log prints them.
import type { EvalRecord } from "./state.js";

/** `54.0% (avg@8 39.4%)`, or "—" for an eval that did not run. */
export const pct = (r: EvalRecord | null) => (r ? `${(100 * r.accuracy).toFixed(1)}%${r.samples ? ` (avg@${r.samples} ${(100 * (r.avgAtK ?? 0)).toFixed(1)}%)` : ""}` : "—");

/** `greedy 95.0% · avg@8 (T 1) 78.1% · pass@8 99.0%`. */
export function describeEval(r: EvalRecord, sampleTemperature: number): string {
  const think = r.thinkingRate === undefined ? "" : ` (${(100 * r.thinkingRate).toFixed(0)}% thinking)`;
  const g = `greedy ${(100 * r.accuracy).toFixed(1)}%${think}`;
  if (!r.samples) return g;
  return `${g} · avg@${r.samples} (T ${sampleTemperature}) ${(100 * (r.avgAtK ?? 0)).toFixed(1)}% · pass@${r.samples} ${(100 * (r.passAtK ?? 0)).toFixed(1)}%`;
}
