// `pnpm bench scaleout`: throughput of one RL step's rollouts sent to 1 and 2 local `nr serve` workers (the
// trainer's rl.rollout.servers path: adapter written and loaded in place on every worker, prompts as token ids,
// n = G per request) against the trainer's default — the WebGpuGenerator in the trainer's own process — in the same
// run, on the committed tiny model (models/nr-tiny-math) with a rank-16 adapter of nonzero weights.
// Rates are completion tokens per second of wall time (best of --iters); the publish row is the time to write the
// adapter and load it on every worker. Workers here share this machine's cores with each other and the trainer, so
// the numbers measure the overhead of going through HTTP, not a speed-up (that needs one GPU per worker).
//   pnpm bench scaleout [--prompts 8] [--G 8] [--new 40] [--iters 2]
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createGpu } from "@nr/kernels";
import { Engine, GpuBackend } from "@nr/autograd";
import { loadDecoder, loadTokenizer } from "@nr/model";
import { LoraModel } from "@nr/lora";
import { randomizeAdapter } from "@nr/lora/testing";
import { WebGpuGenerator, type PromptSpec } from "@nr/rollout";
import { RemoteRollout } from "../../apps/trainer/src/train/remote-rollout.js";
import { higherIsBetter, lowerIsBetter, writeResults, type BenchRow } from "../lib/report.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return Number(i >= 0 ? process.argv[i + 1] : dflt);
};
const [PROMPTS, G, NEW, ITERS] = [arg("prompts", "8"), arg("G", "8"), arg("new", "40"), arg("iters", "2")];
for (const [k, v] of Object.entries({ prompts: PROMPTS, G, new: NEW, iters: ITERS })) if (!Number.isInteger(v) || v < 1) throw new Error(`--${k}: expected a positive integer (got ${v})`);
const here = fileURLToPath(new URL(".", import.meta.url));
const MODEL = join(here, "..", "..", "models", "nr-tiny-math");
const CLI = join(here, "..", "..", "apps", "trainer", "src", "cli.ts");

function startWorker(root: string): Promise<{ proc: ChildProcess; url: string }> {
  const args = ["--import", "tsx", CLI, "serve", "--model", MODEL, "--port", "0", "--allow-runtime-lora", "--lora-root", root, "--max-batch", String(PROMPTS * G), "--context-length", "256", "--quiet"];
  const proc = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NR_API_KEY: "" } });
  let out = "";
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve({ proc, url: m[1] });
    };
    proc.stdout!.on("data", onData);
    proc.stderr!.on("data", onData);
    proc.on("exit", (code) => reject(new Error(`nr serve exited with ${code}:\n${out}`)));
  });
}

const root = mkdtempSync(join(tmpdir(), "nr-bench-scaleout-"));
const workers = await Promise.all([startWorker(root), startWorker(root)]);
const gpu = await createGpu();
try {
  const e = new Engine(new GpuBackend(gpu));
  const { decoder } = await loadDecoder(e, MODEL);
  const tok = await loadTokenizer(MODEL);
  const lora = new LoraModel(decoder);
  lora.addAdapter("policy", { r: 16, alpha: 32, seed: 1 });
  randomizeAdapter(lora, "policy", 7, 0.05);
  const words = ["apples", "pens", "books", "coins", "cards", "stones", "shells", "cups"];
  const prompts: PromptSpec[] = Array.from({ length: PROMPTS }, (_, i) => ({ promptIds: tok.encode(`Q: Sam has ${i + 3} ${words[i % words.length]} and buys ${(i * 5) % 9 + 2} more. How many ${words[i % words.length]} does Sam have now?\nA: `), n: G }));
  const sampling = { temperature: 1, maxNewTokens: NEW };
  const tokens = (out: { tokenIds: number[] }[][]) => out.flat().reduce((a, q) => a + q.tokenIds.length, 0);
  /** Best tokens/s over ITERS calls (each with its own seed, so no call repeats another). */
  const rate = async (run: (seed: number) => Promise<{ tokenIds: number[] }[][]>) => {
    let best = 0;
    for (let it = 0; it < ITERS; it++) {
      const t0 = performance.now();
      const n = tokens(await run(1000 + it));
      best = Math.max(best, n / ((performance.now() - t0) / 1000));
    }
    return best;
  };
  lora.select("policy");
  const gen = new WebGpuGenerator(e, decoder, tok);
  const local = await rate((seed) => gen.generateIds(prompts, { ...sampling, seed }));
  const rows: BenchRow[] = [];
  const remote = async (urls: string[]) => {
    const r = new RemoteRollout({ servers: urls, adapterDir: join(root, "adapter"), baseModel: MODEL, timeoutMs: 600_000, stopTokenIds: tok.stopTokenIds, log: () => {} });
    let publishMs = Infinity;
    const tps = await rate(async (seed) => {
      const t0 = performance.now();
      await r.publish(lora, "policy", seed);
      publishMs = Math.min(publishMs, performance.now() - t0);
      return r.generateIds(prompts, { ...sampling, seed });
    });
    return { tps, publishMs };
  };
  const one = await remote([workers[0].url]);
  const two = await remote(workers.map((w) => w.url));
  const peer = "local WebGpuGenerator (trainer process)";
  rows.push(higherIsBetter("1 nr serve worker", "completion tokens/s (step incl. adapter publish)", one.tps, peer, local));
  rows.push(higherIsBetter("2 nr serve workers", "completion tokens/s (step incl. adapter publish)", two.tps, peer, local));
  rows.push(higherIsBetter("2 workers vs 1", "completion tokens/s", two.tps, "1 nr serve worker", one.tps));
  rows.push(lowerIsBetter("adapter publish, 1 worker", "ms", one.publishMs, "-", null));
  rows.push(lowerIsBetter("adapter publish, 2 workers", "ms", two.publishMs, "-", null));
  writeResults("scaleout", { vendor: "webgpu", architecture: process.arch, description: gpu.adapterName, backend: "dawn" }, rows, { prompts: PROMPTS, G, maxNewTokens: NEW, iters: ITERS, model: "models/nr-tiny-math", loraRank: 16 });
} finally {
  for (const w of workers) w.proc.kill("SIGKILL");
  gpu.destroy();
  rmSync(root, { recursive: true, force: true });
}
