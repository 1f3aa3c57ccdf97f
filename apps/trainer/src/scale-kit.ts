// What the NR_SCALE=1 tests (scale.test.ts, scale-recipes.test.ts) share: where the built CLI, ../shared/data and the
// published Qwen2.5-Math-1.5B-Instruct config.json are, why a run skips, the CLI as a child process, and the random
// full-size checkpoint they run on (NR_SCALE_MODEL=DIR reuses, or writes once into, a folder of the user's).
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { INDEX_FILE, SINGLE_FILE, writeRandomCheckpoint } from "@nr/model";

export const MIN = 60_000;
const repo = fileURLToPath(new URL("../../../", import.meta.url));
export const shared = join(repo, "..", "shared", "data");
const cli = join(repo, "apps", "trainer", "dist", "cli.js");
const config = join(repo, "benchmarks", "scale", "qwen2.5-math-1.5b-instruct.config.json");

/** Why the scale tests skip here (null: they run). */
export function scaleSkipReason(): string | null {
  if (process.env.NR_SCALE !== "1") return "NR_SCALE=1 not set";
  if (!existsSync(shared)) return `no ${shared}`;
  if (!existsSync(cli)) return "apps/trainer is not built";
  return null;
}

/**
 * Runs the built `nr` with `args` in `cwd`, echoing its output; resolves with the output, rejects with its tail on a
 * non-zero exit. `until` ends a long-running server: once it returns a promise, the child gets SIGTERM when that
 * promise settles (SIGKILL and a rejection when it fails).
 */
export function nrCli(args: string[], o: { cwd: string; until?: (out: string) => Promise<void> | undefined }): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args], { cwd: o.cwd, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let stopping = false;
    const onData = (d: Buffer) => {
      out += d.toString();
      process.stdout.write(d);
      const done = !stopping && o.until?.(out);
      if (done) {
        stopping = true;
        done.then(() => child.kill("SIGTERM"), (err) => (child.kill("SIGKILL"), reject(err)));
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("close", (code) => (code === 0 || stopping ? resolve(out) : reject(new Error(`nr ${args.join(" ")} exited ${code}:\n${out.slice(-3000)}`))));
  });
}

/** The random Qwen2.5-Math-1.5B-Instruct checkpoint (real tokenizer) in `cwd`, or in NR_SCALE_MODEL; written once. */
export async function scaleModel(cwd: string): Promise<string> {
  const model = process.env.NR_SCALE_MODEL ?? join(cwd, "qwen2.5-math-1.5b-random");
  if (!existsSync(join(model, SINGLE_FILE)) && !existsSync(join(model, INDEX_FILE))) {
    await writeRandomCheckpoint(model, config, { tokenizerDir: join(shared, "qwen2.5_tokenizer"), seed: 0 });
  }
  return model;
}
