import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DEFAULT_CONFIG } from "./config.js";
import { RunFolder } from "./folder.js";
import { REPORT_CHARTS, histogram, niceTicks, renderReport, writeReport } from "./report.js";
import { fakeRun } from "./testing.js";

const attr = (tag: string, name: string) => new RegExp(`${name}="([^"]*)"`).exec(tag)?.[1];

describe("report.html", () => {
  it("is self-contained and renders each chart's data", () => {
    const { metrics, samples, summary } = fakeRun();
    const config = { ...structuredClone(DEFAULT_CONFIG), output: { dir: "runs", wandb: { project: "p", baseUrl: "https://api.wandb.ai" } } };
    const html = renderReport({ metrics, samples, summary, config });
    // No resource loads at all: no scripts, links, images, iframes, CSS url()/@import, and no http(s) src/href.
    expect(html).not.toMatch(/<(script|link|img|iframe|object|embed)\b/i);
    expect(html).not.toMatch(/\b(src|href|xlink:href)\s*=\s*["']?\s*(https?:)?\/\//i);
    expect(html).not.toMatch(/url\(|@import/i);
    expect(html.replace("https://api.wandb.ai", "")).not.toMatch(/https?:\/\//); // the only URL is the config text
    // Summary table on top, before the first chart.
    expect(html.indexOf(`data-eval="eval_after">72.0%`)).toBeGreaterThan(0);
    expect(html.indexOf("data-eval")).toBeLessThan(html.indexOf("<svg"));
    expect(html).toContain(`<span class="up">+47.0 pt</span>`);
    // Each chart exists and its polylines carry exactly the logged points, placed in order of value.
    for (const spec of REPORT_CHARTS) {
      const svg = new RegExp(`<svg class="chart" data-chart="${spec.id}"[\\s\\S]*?</svg>`).exec(html)?.[0];
      expect(svg, spec.id).toBeDefined();
      const lines = [...svg!.matchAll(/<polyline[^>]*>/g)].map((m) => m[0]);
      expect(lines.length, spec.id).toBeGreaterThan(0);
      for (const line of lines) {
        const label = attr(line, "data-series")!;
        const [key, phase] = label.replace(/\)$/, "").split(" (");
        const expected = metrics.filter((m) => typeof m[key] === "number" && (!phase || m.phase === phase));
        expect(Number(attr(line, "data-n")), label).toBe(expected.length);
        const pts = attr(line, "points")!.split(" ").map((p) => p.split(",").map(Number));
        expect(pts.length).toBe(expected.length);
        // x increases with step; larger values are drawn higher (smaller y).
        for (let i = 1; i < pts.length; i++) {
          expect(pts[i][0]).toBeGreaterThan(pts[i - 1][0]);
          const dv = (expected[i][key] as number) - (expected[i - 1][key] as number);
          if (Math.abs(dv) > 1e-9) expect(Math.sign(pts[i][1] - pts[i - 1][1])).toBe(-Math.sign(dv));
        }
      }
    }
    // Accuracy has train (rl) and eval series; loss has an sft and an rl series.
    expect(html).toMatch(/data-series="accuracy" data-n="40"/);
    expect(html).toMatch(/data-series="eval_accuracy" data-n="4"/);
    expect(html).toMatch(/data-series="loss \(sft\)" data-n="20"/);
    expect(html).toMatch(/data-series="loss \(rl\)" data-n="40"/);
    // The thinking rate of the RL samples and of the greedy eval completions.
    expect(html).toMatch(/data-chart="thinking_rate"[^]*?data-series="thinking_rate" data-n="40"[^]*?data-series="eval_thinking_rate" data-n="4"/);
    // Histogram of sample lengths: counts add up to the samples.
    const hist = /<svg class="chart" data-chart="response_length_hist" data-n="(\d+)" data-bins="([\d,]+)"/.exec(html)!;
    expect(Number(hist[1])).toBe(samples.length);
    expect(hist[2].split(",").map(Number).reduce((a, b) => a + b, 0)).toBe(samples.length);
    expect(html).toContain("8 hit max_new_tokens");
    // Sample text is escaped.
    expect(html).toContain("Ann has 119 &lt;apples&gt; &amp; Ben");
    expect(html).not.toContain("<apples>");
  });

  it("shows avg@k and pass@k beside greedy when the evals sampled", () => {
    const { metrics, summary } = fakeRun();
    const plain = renderReport({ metrics, summary });
    expect(plain).not.toContain("avg@");
    const sampled = (accuracy: number, avg: number, pass: number) => ({ accuracy, n: 200, samples: 8, avg_at_k: avg, pass_at_k: pass, sample_temperature: 1 });
    const html = renderReport({ metrics, summary: { ...summary, eval_base: sampled(0.05, 0.02, 0.1), eval_before: sampled(0.25, 0.125, 0.5), eval_after: sampled(0.72, 0.6, 0.9) } });
    expect(html).toContain("<th>avg@8 (T 1)</th>");
    expect(html).toContain("<th>pass@8</th>");
    expect(html).toContain(`data-eval="eval_before_avg">12.5%`);
    expect(html).toContain(`data-eval="eval_after_avg">60.0%`);
    expect(html).toContain(`<span class="up">+47.5 pt</span>`); // avg@8: 12.5 → 60.0
    expect(html).toContain(`data-eval="eval_after">72.0%`); // greedy unchanged beside it
  });

  it("empty charts say so; helpers", () => {
    const html = renderReport({ metrics: [{ step: 1, phase: "sft", loss: 1 }] });
    expect(html).toMatch(/data-chart="kl"[^]*?no values logged/);
    expect(html).toMatch(/data-chart="response_length_hist"[^]*?no samples logged/);
    expect(html).toContain("No summary.json yet");
    expect(histogram([1, 2, 2, 3, 10], 5)).toEqual({ edges: [1, 3, 5, 7, 9, 11], counts: [3, 1, 0, 0, 1] });
    expect(niceTicks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(3, 97)).toEqual([20, 40, 60, 80]);
  });

  it("writeReport reads a run folder", () => {
    const { metrics, samples, summary } = fakeRun();
    const run = RunFolder.openDir(join(mkdtempSync(join(tmpdir(), "nr-rep-")), "r"), {}, DEFAULT_CONFIG);
    metrics.forEach((m) => run.logMetrics(m));
    samples.forEach((s) => run.logSample(s));
    run.writeSummary(summary);
    run.close();
    const path = writeReport(run.dir);
    expect(path).toBe(run.reportPath);
    const html = readFileSync(path, "utf8");
    expect(html).toContain("Nano-Reasoner run: default");
    expect(html).toMatch(/data-series="reward" data-n="40"/);
  });
});
