// report.html: one self-contained page (inline CSS + inline SVG, no scripts, no network) with the summary table on top,
// line charts of the per-step metrics (reward, accuracy, response length, KL, entropy, loss) from metrics.jsonl, a
// histogram of response lengths from samples.jsonl, the last few samples and the resolved config.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { TrainConfig } from "./config.js";
import { readJsonlFile, writeFileAtomic, type EvalResult, type RunSummary, type SampleRecord, type StepMetrics } from "./folder.js";

export interface ChartSpec {
  id: string;
  title: string;
  /** Metric names plotted (first names are the canonical ones; later ones are accepted aliases). */
  keys: string[];
}

/** The charts, in page order. Each key found in metrics.jsonl becomes a series per phase. */
export const REPORT_CHARTS: readonly ChartSpec[] = [
  { id: "reward", title: "Reward (mean over completions)", keys: ["reward", "reward_mean"] },
  { id: "accuracy", title: "Accuracy", keys: ["accuracy", "eval_accuracy", "eval_avg_at_k", "train_accuracy"] },
  { id: "response_length", title: "Response length (tokens; eval: correct completions only)", keys: ["response_length", "completion_length", "eval_correct_length"] },
  { id: "thinking_rate", title: "Thinking rate (share of completions with a non-empty <think>)", keys: ["thinking_rate", "eval_thinking_rate"] },
  { id: "kl", title: "KL to reference", keys: ["kl"] },
  { id: "entropy", title: "Entropy (nats/token)", keys: ["entropy"] },
  { id: "loss", title: "Loss", keys: ["loss"] },
];

export interface Series {
  label: string;
  points: [x: number, y: number][];
}

export interface ReportInput {
  metrics: readonly StepMetrics[];
  samples?: readonly SampleRecord[];
  summary?: RunSummary | null;
  config?: TrainConfig | null;
  title?: string;
  /** Most points drawn per series (longer series are bucket-averaged); default 2000. */
  maxPoints?: number;
}

const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

/** Series of one chart: per key present, per phase (phase named only when the key occurs in more than one). */
export function chartSeries(metrics: readonly StepMetrics[], spec: ChartSpec): Series[] {
  const out: Series[] = [];
  for (const key of spec.keys) {
    const byPhase = new Map<string, [number, number][]>();
    metrics.forEach((row, i) => {
      const v = row[key];
      if (typeof v !== "number" || !Number.isFinite(v)) return;
      const x = typeof row.step === "number" && Number.isFinite(row.step) ? row.step : i;
      const phase = typeof row.phase === "string" ? row.phase : "";
      if (!byPhase.has(phase)) byPhase.set(phase, []);
      byPhase.get(phase)!.push([x, v]);
    });
    for (const [phase, pts] of byPhase) {
      pts.sort((a, b) => a[0] - b[0]);
      out.push({ label: byPhase.size > 1 && phase ? `${key} (${phase})` : key, points: pts });
    }
  }
  return out;
}

function downsample(pts: [number, number][], max: number): [number, number][] {
  if (pts.length <= max) return pts;
  const out: [number, number][] = [];
  const per = pts.length / max;
  for (let b = 0; b < max; b++) {
    const lo = Math.floor(b * per);
    const hi = Math.max(lo + 1, Math.floor((b + 1) * per));
    let sx = 0;
    let sy = 0;
    for (let i = lo; i < hi; i++) [sx, sy] = [sx + pts[i][0], sy + pts[i][1]];
    out.push([sx / (hi - lo), sy / (hi - lo)]);
  }
  return out;
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

export function fmtNum(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1);
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(a >= 100 ? 4 : 3)));
}

const W = 560;
const H = 260;
const M = { l: 56, r: 16, t: 30, b: 40 };

function extent(vals: number[]): [number, number] {
  let lo = Math.min(...vals);
  let hi = Math.max(...vals);
  if (lo === hi) {
    const d = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    [lo, hi] = [lo - d, hi + d];
  } else {
    const pad = (hi - lo) * 0.05;
    [lo, hi] = [lo - pad, hi + pad];
  }
  return [lo, hi];
}

function axes(xlo: number, xhi: number, ylo: number, yhi: number, sx: (x: number) => number, sy: (y: number) => number, xLabel: string): string {
  const parts: string[] = [];
  for (const t of niceTicks(ylo, yhi)) {
    if (t < ylo || t > yhi) continue;
    const y = sy(t).toFixed(1);
    parts.push(`<line x1="${M.l}" y1="${y}" x2="${W - M.r}" y2="${y}" class="grid"/><text x="${M.l - 6}" y="${y}" class="ytick">${fmtNum(t)}</text>`);
  }
  for (const t of niceTicks(xlo, xhi, 6)) {
    if (t < xlo || t > xhi) continue;
    const x = sx(t).toFixed(1);
    parts.push(`<line x1="${x}" y1="${H - M.b}" x2="${x}" y2="${H - M.b + 4}" class="axis"/><text x="${x}" y="${H - M.b + 16}" class="xtick">${fmtNum(t)}</text>`);
  }
  parts.push(`<line x1="${M.l}" y1="${H - M.b}" x2="${W - M.r}" y2="${H - M.b}" class="axis"/><line x1="${M.l}" y1="${M.t}" x2="${M.l}" y2="${H - M.b}" class="axis"/>`);
  parts.push(`<text x="${(M.l + W - M.r) / 2}" y="${H - 6}" class="xlabel">${escapeHtml(xLabel)}</text>`);
  return parts.join("");
}

function noData(id: string, title: string, what: string): string {
  return `<svg class="chart" data-chart="${id}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${escapeHtml(title)}"><text x="12" y="20" class="title">${escapeHtml(title)}</text><text x="${W / 2}" y="${H / 2}" class="empty">no ${escapeHtml(what)} logged</text></svg>`;
}

/** An inline SVG line chart (x = step). Each series is a polyline with data-series / data-n attributes. */
export function lineChartSvg(id: string, title: string, series: readonly Series[], o: { maxPoints?: number; xLabel?: string } = {}): string {
  const drawn = series.map((s) => ({ label: s.label, points: downsample([...s.points], o.maxPoints ?? 2000) })).filter((s) => s.points.length > 0);
  if (drawn.length === 0) return noData(id, title, "values");
  const xs = drawn.flatMap((s) => s.points.map((p) => p[0]));
  const ys = drawn.flatMap((s) => s.points.map((p) => p[1]));
  const [xlo, xhi] = Math.min(...xs) === Math.max(...xs) ? [Math.min(...xs) - 1, Math.max(...xs) + 1] : [Math.min(...xs), Math.max(...xs)];
  const [ylo, yhi] = extent(ys);
  const sx = (x: number) => M.l + ((x - xlo) / (xhi - xlo)) * (W - M.l - M.r);
  const sy = (y: number) => H - M.b - ((y - ylo) / (yhi - ylo)) * (H - M.t - M.b);
  const body: string[] = [axes(xlo, xhi, ylo, yhi, sx, sy, o.xLabel ?? "step")];
  drawn.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    const pts = s.points.map(([x, y]) => `${sx(x).toFixed(2)},${sy(y).toFixed(2)}`).join(" ");
    const last = s.points[s.points.length - 1];
    body.push(`<polyline data-series="${escapeHtml(s.label)}" data-n="${s.points.length}" points="${pts}" fill="none" stroke="${color}" stroke-width="1.8" stroke-linejoin="round"><title>${escapeHtml(s.label)}: last ${fmtNum(last[1])} at step ${fmtNum(last[0])}</title></polyline>`);
    if (s.points.length <= 40) for (const [x, y] of s.points) body.push(`<circle cx="${sx(x).toFixed(2)}" cy="${sy(y).toFixed(2)}" r="2.4" fill="${color}"/>`);
    body.push(`<rect x="${M.l + 8 + i * 130}" y="${M.t - 14}" width="10" height="10" fill="${color}"/><text x="${M.l + 22 + i * 130}" y="${M.t - 5}" class="legend">${escapeHtml(s.label)}</text>`);
  });
  return `<svg class="chart" data-chart="${id}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${escapeHtml(title)}"><text x="12" y="14" class="title">${escapeHtml(title)}</text>${body.join("")}</svg>`;
}

/** Response length of a sample: tokens when logged, else characters of the completion. */
export function sampleLength(s: SampleRecord): { value: number; unit: "tokens" | "chars" } | null {
  for (const k of ["response_length", "completion_tokens", "length"]) {
    const v = s[k];
    if (typeof v === "number" && Number.isFinite(v)) return { value: v, unit: "tokens" };
  }
  return typeof s.completion === "string" ? { value: s.completion.length, unit: "chars" } : null;
}

/** Equal-width histogram: `bins` counts over [lo, hi] with integer-friendly edges. */
export function histogram(values: readonly number[], maxBins = 24): { edges: number[]; counts: number[] } {
  if (values.length === 0) return { edges: [], counts: [] };
  const lo = Math.floor(Math.min(...values));
  const hi = Math.max(...values);
  const width = Math.max(1, Math.ceil((hi - lo + 1) / maxBins));
  const n = Math.max(1, Math.ceil((hi - lo + 1) / width));
  const counts = new Array<number>(n).fill(0);
  for (const v of values) counts[Math.min(n - 1, Math.floor((v - lo) / width))]++;
  return { edges: Array.from({ length: n + 1 }, (_, i) => lo + i * width), counts };
}

export function histogramSvg(id: string, title: string, values: readonly number[], unit: string): string {
  if (values.length === 0) return noData(id, title, "samples");
  const { edges, counts } = histogram(values);
  const cmax = Math.max(...counts);
  const xlo = edges[0];
  const xhi = edges[edges.length - 1];
  const sx = (x: number) => M.l + ((x - xlo) / (xhi - xlo)) * (W - M.l - M.r);
  const sy = (y: number) => H - M.b - (y / (cmax * 1.05)) * (H - M.t - M.b);
  const bars = counts.map((c, i) => {
    const x0 = sx(edges[i]);
    const x1 = sx(edges[i + 1]);
    return `<rect class="bar" data-count="${c}" x="${(x0 + 0.5).toFixed(2)}" y="${sy(c).toFixed(2)}" width="${Math.max(0.5, x1 - x0 - 1).toFixed(2)}" height="${(H - M.b - sy(c)).toFixed(2)}" fill="${PALETTE[0]}"><title>[${edges[i]}, ${edges[i + 1]}): ${c}</title></rect>`;
  });
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return `<svg class="chart" data-chart="${id}" data-n="${values.length}" data-bins="${counts.join(",")}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${escapeHtml(title)}"><text x="12" y="14" class="title">${escapeHtml(title)}</text>${axes(xlo, xhi, 0, cmax * 1.05, sx, sy, `${unit} (n = ${values.length}, mean ${fmtNum(mean)})`)}${bars.join("")}</svg>`;
}

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#111827;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}.sub{color:#6b7280;margin:0 0 16px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #e5e7eb;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#059669}.down{color:#dc2626}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #e5e7eb;border-radius:6px;background:#fff}
.chart .title{font-weight:600;font-size:13px;fill:#111827}.chart .grid{stroke:#f1f5f9}.chart .axis{stroke:#9ca3af}
.chart text{font-size:11px;fill:#4b5563}.chart .ytick{text-anchor:end;dominant-baseline:middle}.chart .xtick,.chart .xlabel{text-anchor:middle}
.chart .empty{text-anchor:middle;fill:#9ca3af;font-size:13px}.chart .legend{font-size:11px}
pre{background:#f9fafb;border:1px solid #e5e7eb;padding:8px;overflow:auto;max-height:480px;white-space:pre-wrap;word-break:break-word;margin:0}
td pre{max-height:200px;border:0;padding:0;background:none}.ok{color:#059669;font-weight:600}.bad{color:#dc2626;font-weight:600}
`;

function pct(e: { accuracy: number; n: number } | null | undefined): string {
  return e ? `${(100 * e.accuracy).toFixed(1)}% <span class="sub">(n = ${e.n})</span>` : "—";
}

function summaryTable(summary: RunSummary | null | undefined, config: TrainConfig | null | undefined, metrics: readonly StepMetrics[]): string {
  const rows: [string, string][] = [];
  if (config) rows.push(["run", escapeHtml(config.name)]);
  const algo = summary?.algo ?? (config ? (config.rl.enabled ? config.rl.algo : "sft") : undefined);
  if (algo) rows.push(["algorithm", escapeHtml(String(algo))]);
  if (config) rows.push(["model", escapeHtml(config.model.dir ?? `generated ${JSON.stringify(config.model.generate)}`)]);
  const steps = summary?.steps ?? (metrics.length ? Math.max(...metrics.map((m) => (typeof m.step === "number" ? m.step : 0))) : undefined);
  if (steps !== undefined) rows.push(["steps", `${steps}${summary?.sft_steps !== undefined || summary?.rl_steps !== undefined ? ` <span class="sub">(SFT ${summary?.sft_steps ?? "?"}, RL ${summary?.rl_steps ?? "?"})</span>` : ""}`]);
  if (summary) {
    const s = Math.round(summary.wall_seconds);
    rows.push(["wall time", `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m ${String(s % 60).padStart(2, "0")}s`]);
  }
  const head = `<table class="summary"><tbody>${rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("")}</tbody></table>`;
  if (!summary) return `${head}<p class="sub">No summary.json yet (run in progress or interrupted).</p>`;
  const delta = (a: { accuracy: number } | null, b: { accuracy: number } | null) => {
    if (!a || !b) return "";
    const d = 100 * (b.accuracy - a.accuracy);
    return `<span class="${d >= 0 ? "up" : "down"}">${d >= 0 ? "+" : ""}${d.toFixed(1)} pt</span>`;
  };
  // Greedy pass@1 always; avg@k / pass@k columns when the evals sampled (eval.samples > 0).
  const all = [summary.eval_base, summary.eval_before, summary.eval_after];
  const k = all.map((e) => (typeof e?.samples === "number" ? e.samples : 0)).find((x) => x > 0) ?? 0;
  const temp = all.map((e) => e?.sample_temperature).find((x) => typeof x === "number");
  const at = (e: EvalResult | null, key: "avg_at_k" | "pass_at_k") => (e && typeof e[key] === "number" ? { accuracy: e[key] as number, n: e.n } : null);
  const short = (x: { accuracy: number } | null) => (x ? `${(100 * x.accuracy).toFixed(1)}%` : "—"); // n is in the greedy cell
  const row = (label: string, key: "eval_base" | "eval_before" | "eval_after", prev: EvalResult | null) => {
    const e = summary[key];
    const cells = [`<td class="num" data-eval="${key}">${pct(e)}</td><td>${delta(prev, e)}</td>`];
    if (k > 0) cells.push(`<td class="num" data-eval="${key}_avg">${short(at(e, "avg_at_k"))}</td><td>${delta(at(prev, "avg_at_k"), at(e, "avg_at_k"))}</td><td class="num">${short(at(e, "pass_at_k"))}</td>`);
    return `<tr><td>${label}</td>${cells.join("")}</tr>`;
  };
  const sampledHead = k > 0 ? `<th>avg@${k}${temp !== undefined ? ` (T ${temp})` : ""}</th><th>change</th><th>pass@${k}</th>` : "";
  const evals = `<table class="evals"><thead><tr><th>held-out accuracy</th><th>greedy</th><th>change</th>${sampledHead}</tr></thead><tbody>
${row("base model (before SFT)", "eval_base", null)}
${row("after SFT (before RL)", "eval_before", summary.eval_base)}
${row("after RL", "eval_after", summary.eval_before)}
</tbody></table>`;
  return head + evals;
}

function samplesTable(samples: readonly SampleRecord[], max = 8): string {
  if (samples.length === 0) return `<p class="sub">No samples logged.</p>`;
  const last = samples.slice(-max);
  const cut = (s: unknown, n: number) => {
    const t = typeof s === "string" ? s : s === undefined ? "" : JSON.stringify(s);
    return escapeHtml(t.length > n ? `${t.slice(0, n)}…` : t);
  };
  const rows = last.map((s) => {
    const verdict = s.correct === true ? `<span class="ok">correct</span>` : s.correct === false ? `<span class="bad">wrong</span>` : "";
    return `<tr><td class="num">${cut(s.step, 12)}</td><td><pre>${cut(s.prompt, 400)}</pre></td><td><pre>${cut(s.completion, 800)}</pre></td><td>${cut(s.gold, 40)}</td><td>${verdict}${typeof s.reward === "number" ? ` ${fmtNum(s.reward)}` : ""}</td></tr>`;
  });
  return `<table class="samples"><thead><tr><th>step</th><th>prompt</th><th>completion</th><th>gold</th><th>reward</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

/** The whole page as a string. */
export function renderReport(input: ReportInput): string {
  const { metrics, samples = [], summary, config } = input;
  const title = input.title ?? `Nano-Reasoner run${config ? `: ${config.name}` : ""}`;
  const charts = REPORT_CHARTS.map((spec) => lineChartSvg(spec.id, spec.title, chartSeries(metrics, spec), { maxPoints: input.maxPoints }));
  const lens = samples.map(sampleLength).filter((x): x is NonNullable<typeof x> => x !== null);
  const unit = lens.length && lens.every((l) => l.unit === "tokens") ? "tokens" : "characters";
  const truncated = samples.filter((s) => s.finish_reason === "length").length;
  charts.push(histogramSvg("response_length_hist", `Response lengths (samples${truncated ? `; ${truncated} hit max_new_tokens` : ""})`, lens.map((l) => l.value), unit));
  const generated = new Date().toISOString().replace("T", " ").slice(0, 19);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(title)}</title><style>${CSS}</style></head>
<body>
<h1>${escapeHtml(title)}</h1>
<p class="sub">${metrics.length} metric rows, ${samples.length} samples; generated ${generated} UTC</p>
${summaryTable(summary, config, metrics)}
<h2>Training curves</h2>
<div class="charts">
${charts.join("\n")}
</div>
<h2>Latest samples</h2>
${samplesTable(samples)}
${config ? `<h2>Config</h2><details><summary>resolved config.json</summary><pre>${escapeHtml(JSON.stringify(config, null, 2))}</pre></details>` : ""}
</body></html>
`;
}

/** Read a run folder's files, write `<runDir>/report.html` atomically, return its path. */
export function writeReport(runDir: string, o: { title?: string; maxPoints?: number } = {}): string {
  const readJson = <T>(f: string): T | null => (existsSync(join(runDir, f)) ? (JSON.parse(readFileSync(join(runDir, f), "utf8")) as T) : null);
  const html = renderReport({
    metrics: readJsonlFile<StepMetrics>(join(runDir, "metrics.jsonl")),
    samples: readJsonlFile<SampleRecord>(join(runDir, "samples.jsonl")),
    summary: readJson<RunSummary>("summary.json"),
    config: readJson<TrainConfig>("config.json"),
    ...o,
  });
  const path = join(runDir, "report.html");
  writeFileAtomic(path, html);
  return path;
}
