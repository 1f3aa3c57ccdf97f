import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { deflateSync, inflateSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { DEFAULT_CONFIG } from "./config.js";
import { RunFolder, type SampleRecord, type StepMetrics } from "./folder.js";
import { REPORT_CHARTS, histogram, niceTicks, renderReport, writeReport } from "./report.js";

const CHROMIUM = process.env.NR_CHROMIUM ?? "/usr/bin/chromium";

/** A plausible run: SFT steps 1..20 (loss), RL steps 21..60 (reward, accuracy, length, kl, entropy, loss), evals. */
function fakeRun() {
  const metrics: StepMetrics[] = [];
  for (let s = 1; s <= 20; s++) metrics.push({ step: s, phase: "sft", loss: 3 * Math.exp(-s / 8) + 0.2, lr: 1e-3 });
  for (let s = 21; s <= 60; s++) {
    const t = (s - 20) / 40;
    metrics.push({ step: s, phase: "rl", loss: 0.05 * Math.sin(s), reward: 0.3 + 0.5 * t, accuracy: 0.3 + 0.5 * t, response_length: 40 + 20 * t, kl: 0.002 * s, entropy: 1.2 - 0.6 * t });
    if (s % 10 === 0) metrics.push({ step: s, phase: "eval", eval_accuracy: 0.25 + 0.5 * t });
  }
  const samples: SampleRecord[] = [];
  for (let i = 0; i < 120; i++) samples.push({ step: 21 + (i % 40), phase: "rl", prompt: `Ann has ${i} <apples> & Ben…`, completion: `step ${i}\\boxed{${i}}`, gold: String(i), correct: i % 3 !== 0, reward: i % 3 !== 0 ? 1 : 0, response_length: 20 + ((i * 37) % 50), finish_reason: i % 17 === 0 ? "length" : "eos" });
  const summary = { wall_seconds: 321.4, eval_base: { accuracy: 0.05, n: 200 }, eval_before: { accuracy: 0.25, n: 200 }, eval_after: { accuracy: 0.72, n: 200 }, algo: "dr_grpo", steps: 60, sft_steps: 20, rl_steps: 40 };
  return { metrics, samples, summary };
}

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
    // Histogram of sample lengths: counts add up to the samples.
    const hist = /<svg class="chart" data-chart="response_length_hist" data-n="(\d+)" data-bins="([\d,]+)"/.exec(html)!;
    expect(Number(hist[1])).toBe(samples.length);
    expect(hist[2].split(",").map(Number).reduce((a, b) => a + b, 0)).toBe(samples.length);
    expect(html).toContain("8 hit max_new_tokens");
    // Sample text is escaped.
    expect(html).toContain("Ann has 119 &lt;apples&gt; &amp; Ben");
    expect(html).not.toContain("<apples>");
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

// ---------------------------------------------------------------------------------------------------------------
// Headless screenshot (needs Debian's chromium at /usr/bin/chromium, or NR_CHROMIUM)
// ---------------------------------------------------------------------------------------------------------------

/** Minimal PNG decoder for 8-bit greyscale/RGB/RGBA non-interlaced images: returns pixels as RGBA. */
function decodePng(buf: Buffer): { width: number; height: number; rgba: Uint8Array } {
  if (buf.readUInt32BE(0) !== 0x89504e47) throw new Error("not a PNG");
  let off = 8;
  let width = 0;
  let height = 0;
  let colorType = 0;
  const idat: Buffer[] = [];
  while (off < buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString("ascii", off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === "IHDR") {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      if (data[8] !== 8 || data[12] !== 0) throw new Error(`unsupported PNG: bit depth ${data[8]}, interlace ${data[12]}`);
      colorType = data[9];
    } else if (type === "IDAT") idat.push(data);
    else if (type === "IEND") break;
    off += 12 + len;
  }
  const channels = ({ 0: 1, 2: 3, 4: 2, 6: 4 } as Record<number, number>)[colorType];
  if (!channels) throw new Error(`unsupported PNG colour type ${colorType}`);
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const px = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)];
    const src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const row = y * stride;
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? px[row + x - channels] : 0;
      const b = y > 0 ? px[row - stride + x] : 0;
      const c = x >= channels && y > 0 ? px[row - stride + x - channels] : 0;
      let pred = 0;
      if (f === 1) pred = a;
      else if (f === 2) pred = b;
      else if (f === 3) pred = (a + b) >> 1;
      else if (f === 4) {
        const p = a + b - c;
        const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
        pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else if (f !== 0) throw new Error(`bad PNG filter ${f}`);
      px[row + x] = (src[x] + pred) & 255;
    }
  }
  const rgba = new Uint8Array(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    const s = px.subarray(i * channels, (i + 1) * channels);
    const [r, g, b, al] = channels === 1 ? [s[0], s[0], s[0], 255] : channels === 2 ? [s[0], s[0], s[0], s[1]] : channels === 3 ? [s[0], s[1], s[2], 255] : [s[0], s[1], s[2], s[3]];
    rgba.set([r, g, b, al], i * 4);
  }
  return { width, height, rgba };
}

/** Test-only encoder: RGB, row y uses filter y % 5, so the decoder's five filters are all exercised. */
function encodePng(width: number, height: number, rgb: Uint8Array): Buffer {
  const stride = width * 3;
  const raw = Buffer.alloc(height * (stride + 1));
  for (let y = 0; y < height; y++) {
    const f = y % 5;
    raw[y * (stride + 1)] = f;
    for (let x = 0; x < stride; x++) {
      const v = rgb[y * stride + x];
      const a = x >= 3 ? rgb[y * stride + x - 3] : 0;
      const b = y > 0 ? rgb[(y - 1) * stride + x] : 0;
      const c = x >= 3 && y > 0 ? rgb[(y - 1) * stride + x - 3] : 0;
      const p = a + b - c;
      const paeth = Math.abs(p - a) <= Math.abs(p - b) && Math.abs(p - a) <= Math.abs(p - c) ? a : Math.abs(p - b) <= Math.abs(p - c) ? b : c;
      const pred = [0, a, b, (a + b) >> 1, paeth][f];
      raw[y * (stride + 1) + 1 + x] = (v - pred) & 255;
    }
  }
  const chunk = (type: string, data: Buffer) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, "ascii");
    data.copy(out, 8);
    return out; // CRC left 0: decodePng does not check it
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr), chunk("IDAT", deflateSync(raw)), chunk("IEND", Buffer.alloc(0))]);
}

function distinctColours(rgba: Uint8Array): { count: number; dominantFraction: number } {
  const counts = new Map<number, number>();
  for (let i = 0; i < rgba.length; i += 4) {
    const k = (rgba[i] << 16) | (rgba[i + 1] << 8) | rgba[i + 2];
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return { count: counts.size, dominantFraction: Math.max(...counts.values()) / (rgba.length / 4) };
}

describe("report screenshot", () => {
  it("the PNG decoder undoes all five filters", () => {
    const [w, h] = [13, 11];
    const rgb = new Uint8Array(w * h * 3).map((_, i) => (i * 97 + ((i * i) % 13)) & 255);
    const { width, height, rgba } = decodePng(encodePng(w, h, rgb));
    expect([width, height]).toEqual([w, h]);
    for (let i = 0; i < w * h; i++) expect([rgba[i * 4], rgba[i * 4 + 1], rgba[i * 4 + 2], rgba[i * 4 + 3]]).toEqual([rgb[i * 3], rgb[i * 3 + 1], rgb[i * 3 + 2], 255]);
  });

  it("renders headless in chromium to a non-trivial PNG", async (ctx) => {
    ctx.skip(!existsSync(CHROMIUM), `${CHROMIUM} not installed (apt-get install chromium, or set NR_CHROMIUM)`);
    const dir = mkdtempSync(join(tmpdir(), "nr-shot-"));
    const { metrics, samples, summary } = fakeRun();
    const page = join(dir, "report.html");
    writeFileSync(page, renderReport({ metrics, samples, summary, config: DEFAULT_CONFIG }));
    const png = join(dir, "report.png");
    const profile = join(dir, "profile");
    const args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars", `--user-data-dir=${profile}`, `--screenshot=${png}`, "--window-size=1200,900", pathToFileURL(page).href];
    await new Promise<void>((res, rej) => execFile(CHROMIUM, args, { timeout: 60_000 }, (err, _out, stderr) => (err && !existsSync(png) ? rej(new Error(`chromium failed: ${err.message}\n${stderr}`)) : res())));
    expect(existsSync(png)).toBe(true);
    expect(statSync(png).size).toBeGreaterThan(10_000);
    const img = decodePng(readFileSync(png));
    expect([img.width, img.height]).toEqual([1200, 900]);
    const { count, dominantFraction } = distinctColours(img.rgba);
    expect(count).toBeGreaterThan(50); // text anti-aliasing + chart colours
    expect(dominantFraction).toBeLessThan(0.97); // not a blank page
    // The chart colours are on screen (the first series' blue, #2563eb, within anti-aliasing tolerance).
    let blue = 0;
    for (let i = 0; i < img.rgba.length; i += 4) if (Math.abs(img.rgba[i] - 0x25) < 24 && Math.abs(img.rgba[i + 1] - 0x63) < 24 && Math.abs(img.rgba[i + 2] - 0xeb) < 24) blue++;
    expect(blue).toBeGreaterThan(100);
    rmSync(dir, { recursive: true, force: true });
  }, 90_000);
});
