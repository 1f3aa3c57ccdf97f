// report.html in a real browser: headless Chromium (Debian's `chromium`, or NR_CHROMIUM) opens the report of a
// small synthetic run folder with the network off, and
//   - the screenshot (decoded here with node:zlib) shows the charts: each series colour is on screen, and the
//     chart area is not background;
//   - --dump-dom returns every chart's SVG with its polylines and histogram bars as the browser parsed them;
//   - the browser console logged no error (checked against a page with a deliberate error, so the check can fail).
// Skips with one line when Chromium is not installed (scripts/setup.sh installs it on Debian).
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { deflateSync, inflateSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHROMIUM, HAVE_CHROMIUM, killProcessGroup } from "../chromium.testing.js";
import { DEFAULT_CONFIG } from "./config.js";
import { RunFolder } from "./folder.js";
import { REPORT_CHARTS, writeReport } from "./report.js";
import { fakeRun } from "./testing.js";

const SKIP_REASON = `${CHROMIUM} not installed (bash scripts/setup.sh installs Debian's chromium, or set NR_CHROMIUM)`;

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


/** Run headless Chromium on a file with the network off; resolves with stdout and stderr. */
function chromium(page: string, profile: string, extra: string[]): Promise<{ stdout: string; stderr: string }> {
  const args = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND", "--no-proxy-server",
    "--enable-logging=stderr", "--v=0", `--user-data-dir=${profile}`, ...extra, pathToFileURL(page).href,
  ];
  // Detached, so Chromium leads a process group: once the browser is done the whole group is killed, and no helper
  // (the network service rewrites its state file) goes on writing into the profile folder that afterAll removes.
  return new Promise((res, rej) => {
    const proc = spawn(CHROMIUM, args, { detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "", stderr = "";
    proc.stdout!.on("data", (d) => (stdout += d));
    proc.stderr!.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => killProcessGroup(proc), 60_000);
    // the browser's exit ends the group (its helpers hold the output pipes open, which would delay "close")
    proc.on("exit", () => killProcessGroup(proc));
    proc.on("close", (code, signal) => {
      clearTimeout(timer);
      if ((code !== 0 || signal) && !stdout && !/written to file/.test(stderr)) rej(new Error(`chromium failed (${signal ?? `exit ${code}`})\n${stderr}`));
      else res({ stdout, stderr });
    });
  });
}

/** Console messages the page produced (Chromium logs them as `INFO:CONSOLE…] "message", source: …`). */
const consoleLines = (stderr: string) => stderr.split("\n").filter((l) => /:CONSOLE[:(]/.test(l));

const near = (rgba: Uint8Array, i: number, hex: number, tol = 24) => Math.abs(rgba[i] - (hex >> 16)) < tol && Math.abs(rgba[i + 1] - ((hex >> 8) & 255)) < tol && Math.abs(rgba[i + 2] - (hex & 255)) < tol;

describe("the PNG decoder used below", () => {
  it("undoes all five filters", () => {
    const [w, h] = [13, 11];
    const rgb = new Uint8Array(w * h * 3).map((_, i) => (i * 97 + ((i * i) % 13)) & 255);
    const { width, height, rgba } = decodePng(encodePng(w, h, rgb));
    expect([width, height]).toEqual([w, h]);
    for (let i = 0; i < w * h; i++) expect([rgba[i * 4], rgba[i * 4 + 1], rgba[i * 4 + 2], rgba[i * 4 + 3]]).toEqual([rgb[i * 3], rgb[i * 3 + 1], rgb[i * 3 + 2], 255]);
  });
});

describe.skipIf(!HAVE_CHROMIUM)("report.html in headless Chromium", () => {
  let dir: string;
  let report: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "nr-browser-"));
    const { metrics, samples, summary } = fakeRun();
    const run = RunFolder.openDir(join(dir, "run"), {}, { ...DEFAULT_CONFIG, name: "browser" });
    metrics.forEach((m) => run.logMetrics(m));
    samples.forEach((s) => run.logSample(s));
    run.writeSummary(summary);
    run.close();
    report = writeReport(run.dir);
  });
  // retries: Chromium's helper processes can still be writing into the profile just after the browser exits
  afterAll(() => rmSync(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 }));

  it("the screenshot shows the charts: every series colour on screen, the chart area not background", async () => {
    const png = join(dir, "report.png");
    const [W, H] = [1200, 1700];
    const { stderr } = await chromium(report, join(dir, "profile-shot"), [`--screenshot=${png}`, `--window-size=${W},${H}`]);
    expect(existsSync(png)).toBe(true);
    expect(statSync(png).size).toBeGreaterThan(10_000);
    expect(consoleLines(stderr)).toEqual([]);
    const img = decodePng(readFileSync(png));
    expect([img.width, img.height]).toEqual([W, H]);
    const { count, dominantFraction } = distinctColours(img.rgba);
    expect(count).toBeGreaterThan(50); // text anti-aliasing + chart colours
    expect(dominantFraction).toBeLessThan(0.97); // not a blank page
    // Series colours (report.ts PALETTE): blue = the first series of every chart and the histogram bars, red = the
    // second series (eval accuracy, RL loss). Rows of the page where they appear are the chart area.
    const rowsWith = new Set<number>();
    let blue = 0;
    let red = 0;
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) {
        const i = (y * W + x) * 4;
        if (near(img.rgba, i, 0x2563eb)) (blue++, rowsWith.add(y));
        else if (near(img.rgba, i, 0xdc2626)) (red++, rowsWith.add(y));
      }
    expect(blue).toBeGreaterThan(2000);
    expect(red).toBeGreaterThan(100);
    const top = Math.min(...rowsWith);
    const bottom = Math.max(...rowsWith);
    expect(bottom - top).toBeGreaterThan(3 * 260); // at least four rows of 260-px charts are drawn
    let ink = 0;
    for (let y = top; y <= bottom; y++) for (let x = 0; x < W; x++) if (img.rgba[(y * W + x) * 4] < 235) ink++;
    expect(ink / ((bottom - top + 1) * W)).toBeGreaterThan(0.02);
  }, 90_000);

  it("--dump-dom: the browser parsed every chart's SVG with its data, and logged no console error", async () => {
    const { stdout, stderr } = await chromium(report, join(dir, "profile-dom"), ["--dump-dom"]);
    expect(consoleLines(stderr)).toEqual([]);
    const { metrics, samples } = fakeRun();
    for (const spec of REPORT_CHARTS) {
      const svg = new RegExp(`<svg class="chart" data-chart="${spec.id}"[\\s\\S]*?</svg>`).exec(stdout)?.[0];
      expect(svg, spec.id).toBeDefined();
      const lines = [...svg!.matchAll(/<polyline data-series="([^"]+)" data-n="(\d+)"/g)];
      expect(lines.length, spec.id).toBeGreaterThan(0);
      for (const [, label, n] of lines) {
        const [key, phase] = label.replace(/\)$/, "").split(" (");
        expect(Number(n), label).toBe(metrics.filter((m) => typeof m[key] === "number" && (!phase || m.phase === phase)).length);
      }
    }
    const hist = /<svg class="chart" data-chart="response_length_hist"[\s\S]*?<\/svg>/.exec(stdout)![0];
    const bars = [...hist.matchAll(/<rect class="bar" data-count="(\d+)"/g)].map((m) => Number(m[1]));
    expect(bars.reduce((a, b) => a + b, 0)).toBe(samples.length);
  }, 90_000);

  it("the console check can fail: a page with a script error is caught", async () => {
    const bad = join(dir, "bad.html");
    writeFileSync(bad, "<!doctype html><html><body><p>x</p><script>notDefinedAnywhere();</script></body></html>");
    const { stderr } = await chromium(bad, join(dir, "profile-bad"), ["--dump-dom"]);
    expect(consoleLines(stderr).join("\n")).toMatch(/Uncaught ReferenceError: notDefinedAnywhere is not defined/);
  }, 90_000);
});

if (!HAVE_CHROMIUM) describe("report.html in headless Chromium", () => it.skip(SKIP_REASON, () => {}));
