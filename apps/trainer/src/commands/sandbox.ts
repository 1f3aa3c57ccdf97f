// `nr sandbox`: run Python in the sandbox that TIR rollouts use (@nr/sandbox) and print what it printed.
// Exit 0 when the code ran to its end; 1 on a Python error, a timeout or a limit, with the reason on stderr;
// 2 on bad flags.
import { existsSync, readFileSync, statSync } from "node:fs";
import type { Argv, CommandModule } from "yargs";
import type { WebGpuGenerator } from "@nr/rollout";
import { checkNumber, UsageError } from "./common.js";

export interface SandboxArgs {
  file?: string;
  code?: string;
  timeoutMs: number;
  memoryMb: number;
  outputKb: number;
}

export interface SandboxIo {
  out(s: string): void;
  err(s: string): void;
}
const processIo: SandboxIo = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

function readSource(a: SandboxArgs): string {
  if (a.code !== undefined && a.file !== undefined) throw new UsageError("pass either -c CODE or FILE, not both");
  if (a.code !== undefined) return a.code;
  if (a.file === undefined) throw new UsageError("nothing to run: pass -c CODE or a FILE of Python");
  if (!existsSync(a.file) || !statSync(a.file).isFile()) throw new UsageError(`${a.file}: no such file (expected a Python source file)`);
  return readFileSync(a.file, "utf8");
}

/** Runs the code once; returns the process exit code. */
export async function runSandbox(a: SandboxArgs, io: SandboxIo = processIo): Promise<number> {
  const source = readSource(a);
  checkNumber("timeout-ms", a.timeoutMs, { int: true, min: 1 });
  checkNumber("memory-mb", a.memoryMb, { int: true, min: 64, max: 4096 });
  checkNumber("output-kb", a.outputKb, { int: true, min: 1 });
  const { SandboxPool } = await import("@nr/sandbox");
  // sympy is imported at warm-up (outside the time limit) only when the code names it: a cold import takes seconds.
  const pool = new SandboxPool({ workers: 1, timeoutMs: a.timeoutMs, memoryLimitBytes: a.memoryMb * 2 ** 20, outputLimitBytes: a.outputKb * 1024, preload: /\bsympy\b/.test(source) ? undefined : [] });
  try {
    const r = await pool.run(source);
    io.out(r.stdout);
    io.err(r.stderr);
    if (r.status === "ok") return 0;
    io.err(`nr sandbox: ${r.status}: ${r.reason}\n`);
    return 1;
  } finally {
    await pool.close();
  }
}

/**
 * Starts a warm sandbox and makes every completion of `generator.generate()` tool-integrated (python blocks run,
 * their output appended). `close()` detaches it and stops the sandbox.
 */
export async function attachTirSandbox(generator: Pick<WebGpuGenerator, "tool" | "tokenizer">, log: (line: string) => void) {
  const { startTirSandbox } = await import("../train/tir.js");
  const tir = await startTirSandbox(generator.tokenizer, log);
  generator.tool = tir.tool;
  const close = async () => {
    generator.tool = null;
    await tir.close();
  };
  return { ...tir, close };
}

export const sandboxCommand: CommandModule<object, SandboxArgs> = {
  command: "sandbox [file]",
  describe: "Run Python in the TIR sandbox (CPython in WebAssembly: no network, no host files; time, memory and output limits)",
  builder: (y) =>
    y
      .positional("file", { type: "string", describe: "a Python source file to run" })
      .option("code", { alias: "c", type: "string", describe: "Python source to run" })
      .option("timeout-ms", { type: "number", default: 5000, describe: "wall-clock limit of the run (the interpreter is stopped)" })
      .option("memory-mb", { type: "number", default: 1024, describe: "memory limit of the interpreter (MiB)" })
      .option("output-kb", { type: "number", default: 64, describe: "stdout + stderr limit (KiB); past it the run stops" })
      .example("$0 sandbox -c 'print(sum(i*i for i in range(10)))'", "prints 285")
      .example("$0 sandbox -c 'import sympy as sp; x = sp.Symbol(\"x\"); print(sp.solve(x**2 - 2, x))'", "sympy is importable")
      .example("$0 sandbox solve.py --timeout-ms 2000", "a file, stopped after 2 s") as unknown as Argv<SandboxArgs>,
  handler: async (a) => {
    process.exitCode = await runSandbox(a);
  },
};
