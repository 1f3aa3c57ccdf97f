// The deploy demo (examples/deploy) in a real browser: models/nr-tiny-math is exported with `nr export`, served on
// 127.0.0.1 with transformers.js's own browser bundle and WASM files (the network is otherwise off), and headless
// Chromium, driven over the DevTools protocol, opens the page on WASM (and with NR_SCALE=1 on WebGPU). The page's
// greedy completion must equal `nr generate`'s for the same prompt, the page must log no error, and a screenshot of the output box must change
// when its text is removed (the text is really drawn). Skips with one line when Chromium is not installed.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHROMIUM, HAVE_CHROMIUM, killProcessGroup } from "../chromium.testing.js";
import { runExport } from "./export.js";
import { runGenerate, type GeneratedLine } from "./generate.js";

const MODEL = resolve(__dirname, "../../../../models/nr-tiny-chains"); // the embedded default's base
const DEMO = resolve(__dirname, "../../../../examples/deploy/serve.mjs");
// NR_DEPLOY_ADAPTER=DIR: export and compare the base with that adapter merged (how the README's screenshot of a
// trained model is made, with NR_DEPLOY_SCREENSHOT=FILE)
const ADAPTER = process.env.NR_DEPLOY_ADAPTER || undefined;
const PROBLEM = "7 + 5 - 3 + 9 = ?"; // the page's default prompt is this problem in the qa format
const quiet = { log: () => {}, err: () => {} };

/** A minimal DevTools-protocol client over --remote-debugging-pipe (fd 3: commands in, fd 4: replies out, \0-framed). */
class Cdp {
  private id = 0;
  private buf = "";
  private pending = new Map<number, { ok: (v: Record<string, unknown>) => void; fail: (e: Error) => void }>();
  readonly events: { method: string; params: Record<string, unknown> }[] = [];
  constructor(private proc: ChildProcess) {
    (proc.stdio[4] as NodeJS.ReadableStream).on("data", (d: Buffer) => {
      this.buf += d.toString("utf8");
      for (let end = this.buf.indexOf("\0"); end >= 0; end = this.buf.indexOf("\0")) {
        const msg = JSON.parse(this.buf.slice(0, end));
        this.buf = this.buf.slice(end + 1);
        if (msg.id !== undefined) {
          const p = this.pending.get(msg.id)!;
          this.pending.delete(msg.id);
          if (msg.error) p.fail(new Error(`CDP: ${JSON.stringify(msg.error)}`));
          else p.ok(msg.result);
        } else this.events.push(msg);
      }
    });
  }
  send(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<Record<string, unknown>> {
    const id = ++this.id;
    (this.proc.stdio[3] as NodeJS.WritableStream).write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + "\0");
    return new Promise((ok, fail) => this.pending.set(id, { ok, fail }));
  }
}

let root = "";
let server: { url: string; close(): Promise<void> } | null = null;
let want: GeneratedLine;
const browsers: { proc: ChildProcess; cdp: Cdp }[] = [];
afterAll(async () => {
  await server?.close();
  for (const b of browsers) await closeBrowser(b);
  // Not the test's subject: a profile folder that still cannot be removed is reported, not a failure.
  if (root) {
    try {
      rmSync(root, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    } catch (e) {
      console.warn(`export.browser.test: could not remove ${root}: ${(e as Error).message}`);
    }
  }
}, 60_000);

/**
 * Stop a Chromium and every process it started, so none of them writes into its profile folder afterwards (CI saw
 * the folder refilled for 20 s after a plain kill of the browser process): ask it to close over the DevTools pipe,
 * wait up to 5 s, then kill its whole process group (it runs as a group leader: spawned detached).
 */
async function closeBrowser({ proc, cdp }: { proc: ChildProcess; cdp: Cdp }): Promise<void> {
  const exited = new Promise<void>((done) => (proc.exitCode !== null || proc.signalCode !== null ? done() : proc.once("exit", () => done())));
  void cdp.send("Browser.close").catch(() => {});
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  killProcessGroup(proc);
  await exited;
}

/** Headless Chromium on an empty page, attached over the DevTools pipe. */
async function openBrowser(flags: string[], profile: string) {
  const base = ["--headless", "--no-sandbox", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--no-proxy-server", "--window-size=900,600"];
  // detached: Chromium leads its own process group, which closeBrowser kills as a whole
  const proc = spawn(CHROMIUM, [...base, ...flags, `--user-data-dir=${profile}`, "--remote-debugging-pipe", "about:blank"], { stdio: ["ignore", "ignore", "ignore", "pipe", "pipe"], detached: true });
  const cdp = new Cdp(proc);
  browsers.push({ proc, cdp });
  const { targetInfos } = (await cdp.send("Target.getTargets")) as { targetInfos: { targetId: string; type: string }[] };
  const { sessionId } = (await cdp.send("Target.attachToTarget", { targetId: targetInfos.find((t) => t.type === "page")!.targetId, flatten: true })) as { sessionId: string };
  const evaluate = async (expression: string) => ((await cdp.send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true }, sessionId)) as { result: { value: unknown } }).result.value;
  await cdp.send("Runtime.enable", {}, sessionId);
  await cdp.send("Page.enable", {}, sessionId);
  const shot = async (clip?: Record<string, number>) => Buffer.from(((await cdp.send("Page.captureScreenshot", { format: "png", ...(clip ? { clip } : {}) }, sessionId)) as { data: string }).data, "base64");
  return { cdp, sessionId, evaluate, shot };
}

// WASM with the GPU off; with NR_SCALE=1 also WebGPU on Chromium's SwiftShader adapter (a CPU implementation, so it
// runs on any machine, but loading compiles every shader on the CPU: about a minute here against 10 s for WASM).
const DEVICES: [string, string[]][] = [
  ["wasm", ["--disable-gpu"]],
  ...(process.env.NR_SCALE === "1" ? [["webgpu", ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader"]] as [string, string[]]] : []),
];

describe.skipIf(!HAVE_CHROMIUM)("deploy demo in headless Chromium (transformers.js)", () => {
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), "nr-deploy-"));
    const out = join(root, "model");
    await runExport({ model: MODEL, adapter: ADAPTER, out, dtype: "f32", overwrite: false }, quiet);
    [want] = await runGenerate({ model: MODEL, adapter: ADAPTER, prompt: [PROBLEM], samples: 1, temperature: 0, topP: 1, maxNewTokens: 48, seed: 0, batchSize: 1, promptFormat: "qa", skipBadRows: false, quiet: true }, quiet);
    const { startDeployServer } = await import(DEMO);
    server = await startDeployServer({ modelDir: out });
  }, 120_000);

  it.each(DEVICES)("device %s: the page generates nr generate's completion and draws it", async (device, flags) => {
    const { cdp, sessionId, evaluate, shot } = await openBrowser(flags, join(root, `profile-${device}`));
    // navigator.gpu exists only in secure contexts (127.0.0.1 is one, about:blank is not): ask from the server's origin
    await cdp.send("Page.navigate", { url: `${server!.url}no-such-page` }, sessionId);
    await new Promise((r) => setTimeout(r, 500));
    if (device === "webgpu" && !(await evaluate("navigator.gpu?.requestAdapter().then((a) => !!a) ?? false"))) {
      console.log(`skipped: this Chromium gives no WebGPU adapter with ${flags.join(" ")}`);
      return;
    }
    await cdp.send("Page.navigate", { url: `${server!.url}?prompt=${encodeURIComponent(want.prompt)}&max=48&device=${device}` }, sessionId);
    let state: unknown = "";
    for (const t0 = Date.now(); Date.now() - t0 < 120_000 && state !== "done" && state !== "error"; await new Promise((r) => setTimeout(r, 250))) state = await evaluate("document.body?.dataset.state ?? ''");
    const output = await evaluate("document.getElementById('output').textContent");
    console.log(`deploy page (${device}): ${await evaluate("document.getElementById('status').textContent")}; completion ${JSON.stringify(output)}`);
    expect(state).toBe("done");
    expect(output).toBe(want.completion);
    // onnxruntime-web prints its own warnings through console.error ("[W:onnxruntime:…] Some nodes were not assigned
    // to the preferred execution providers" on WebGPU: shape ops run on the CPU by design); anything else fails
    const text = (e: { params: Record<string, unknown> }) => JSON.stringify(e.params.args ?? e.params.exceptionDetails);
    const errors = cdp.events.filter((e) => e.method === "Runtime.exceptionThrown" || (e.method === "Runtime.consoleAPICalled" && e.params.type === "error" && !/\[W:onnxruntime:/.test(text(e))));
    expect(errors.map(text)).toEqual([]);

    const box = (await evaluate("(() => { const r = document.getElementById('output').getBoundingClientRect(); return { x: r.x, y: r.y, width: r.width, height: r.height, scale: 1 }; })()")) as Record<string, number>;
    const page = await shot();
    if (process.env.NR_DEPLOY_SCREENSHOT && device === "wasm") writeFileSync(process.env.NR_DEPLOY_SCREENSHOT, page);
    const withText = await shot(box);
    await evaluate("document.getElementById('output').textContent = ''");
    const empty = await shot(box);
    expect(page.subarray(1, 4).toString("latin1")).toBe("PNG");
    expect(withText.equals(empty)).toBe(false);
  }, 240_000);
});
if (!HAVE_CHROMIUM) console.log(`skipped: ${CHROMIUM} not installed (bash scripts/setup.sh installs Debian's chromium, or set NR_CHROMIUM)`);
