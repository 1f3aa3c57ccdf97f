// `nr bench [name] [-- args]`: run one benchmark of the repository's suite (benchmarks/<name>/index.ts through
// benchmarks/run.mjs), or list them. Results land in benchmarks/results/<name>.json.
import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Argv, CommandModule } from "yargs";
import { consoleIo, type CommandIo } from "./eval.js";
import { closest } from "../run/config.js";
import { UsageError } from "./common.js";

/** The repository's benchmarks/ folder (holding run.mjs), found upwards from this module and from cwd. */
export function benchmarksDir(): string | undefined {
  for (const start of [dirname(fileURLToPath(import.meta.url)), process.cwd()]) {
    for (let d = start; ; d = dirname(d)) {
      if (existsSync(join(d, "benchmarks", "run.mjs"))) return join(d, "benchmarks");
      if (dirname(d) === d) break;
    }
  }
  return undefined;
}

/** Benchmark names: the folders of benchmarks/ with an index.ts (what run.mjs accepts). */
export function listBenchmarks(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && existsSync(join(dir, e.name, "index.ts")))
    .map((e) => e.name)
    .sort();
}

export interface BenchArgs {
  name?: string;
  args?: (string | number)[];
}

/** Runs the benchmark (stdio inherited) and resolves to its exit code; with no name, lists the benchmarks. */
export async function runBench(a: BenchArgs, io: CommandIo = consoleIo, o: { dir?: string; stdio?: "inherit" | "pipe"; onOutput?: (chunk: string) => void } = {}): Promise<number> {
  const dir = o.dir ?? benchmarksDir();
  if (!dir) throw new UsageError("no benchmarks/run.mjs found above this install or the current folder: run nr bench from a checkout of the repository");
  const names = listBenchmarks(dir);
  if (!a.name) {
    io.log(`benchmarks (nr bench <name>; results in ${join(dir, "results")}/<name>.json):\n${names.map((n) => `  ${n}`).join("\n")}`);
    return 0;
  }
  if (!names.includes(a.name)) {
    const hint = closest(a.name, names);
    throw new UsageError(`unknown benchmark "${a.name}"${hint ? `; did you mean "${hint}"?` : ""} (available: ${names.join(", ")})`);
  }
  const child = spawn(process.execPath, [join(dir, "run.mjs"), a.name, ...(a.args ?? []).map(String)], { cwd: dirname(dir), stdio: o.stdio === "pipe" ? ["ignore", "pipe", "pipe"] : "inherit" });
  if (o.stdio === "pipe") {
    child.stdout!.on("data", (b: Buffer) => o.onOutput?.(b.toString()));
    child.stderr!.on("data", (b: Buffer) => o.onOutput?.(b.toString()));
  }
  return new Promise((res, rej) => {
    child.on("error", rej);
    child.on("close", (code, signal) => res(code ?? (signal ? 128 : 1)));
  });
}

export const benchCommand: CommandModule<object, BenchArgs> = {
  command: "bench [name] [args..]",
  describe: "Run a benchmark of the suite (benchmarks/<name>) or list them; results in benchmarks/results/<name>.json",
  builder: (y) =>
    y
      .positional("name", { type: "string", describe: "benchmark to run (none: list them)" })
      .positional("args", { type: "string", array: true, describe: "passed to the benchmark (put them after --)" })
      .example("$0 bench", "list the benchmarks")
      .example("$0 bench matmul", "the matmul benchmark vs onnxruntime-node, with a printed table") as unknown as Argv<BenchArgs>,
  handler: async (a) => {
    const code = await runBench(a);
    if (code !== 0) process.exitCode = code;
  },
};
