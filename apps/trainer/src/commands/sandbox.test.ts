// `nr sandbox` through the built binary (exit codes and streams as a user sees them): a computation, sympy, an
// escape attempt, a runaway loop, bad flags. The runs go concurrently: each starts its own interpreter (seconds each
// on a busy 2-core machine, hence the longer timeouts).
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { findPythonLibs } from "@nr/sandbox";
import { runEval } from "./eval.js";

const cli = fileURLToPath(new URL("../../dist/cli.js", import.meta.url));
const committedModel = fileURLToPath(new URL("../../../../models/nr-tiny-math", import.meta.url));
const hasSympy = findPythonLibs().some((d) => d.endsWith("sympy"));

function nr(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [cli, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "", err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    p.on("close", (code) => resolve({ code, out, err }));
  });
}

describe.skipIf(!existsSync(cli))("nr sandbox (built CLI)", () => {
  it("runs code and files; reports errors, escapes and timeouts with a non-zero exit and the reason", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nr-sandbox-cli-"));
    try {
      // A file that computes, prints, then tries to read a host file: its output, then exit 1 with the reason.
      const file = join(dir, "collatz.py");
      writeFileSync(file, "def steps(n):\n    k = 0\n    while n != 1:\n        n = n // 2 if n % 2 == 0 else 3 * n + 1\n        k += 1\n    return k\nprint(max(range(1, 1000), key=steps))\nprint(open('/etc/passwd').read())\n");
      const [escape, loop, both] = await Promise.all([
        nr("sandbox", file),
        nr("sandbox", "-c", "while True:\n    pass", "--timeout-ms", "1500"),
        nr("sandbox", file, "-c", "print(1)"),
      ]);
      expect([escape.code, escape.out]).toEqual([1, "871\n"]);
      expect(escape.err).toContain("nr sandbox: error: FileNotFoundError: [Errno 44] No such file or directory: '/etc/passwd'");
      expect(loop.code).toBe(1);
      expect(loop.err).toContain("nr sandbox: timeout: the code ran past the 1500 ms wall-clock limit");
      expect(both.code).toBe(2);
      expect(both.err).toContain("pass either -c CODE or FILE, not both");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);

  it.skipIf(!hasSympy)("imports sympy", async () => {
    const r = await nr("sandbox", "-c", "import sympy as sp\nx = sp.Symbol('x')\nprint(sp.solve(x**2 - 2, x))\nprint(sp.factorint(2**32 + 1))");
    expect(r.err).toBe("");
    expect([r.code, r.out]).toEqual([0, "[-sqrt(2), sqrt(2)]\n{641: 1, 6700417: 1}\n"]);
  }, 300_000);
});

describe("nr eval --prompt-format tir", () => {
  it("runs on the committed model with the TIR prompt and the sandbox attached, and reports tool use", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nr-eval-tir-"));
    const lines: string[] = [];
    const io = { log: (l: string) => lines.push(l), err: (l: string) => lines.push(l) };
    try {
      const rep = await runEval({ model: committedModel, data: "synthetic", n: 3, samples: 1, temperature: 0, topP: 1, maxNewTokens: 16, seed: 0, batchSize: 4, promptFormat: "tir", out: join(dir, "eval.json"), skipBadRows: false, progress: false }, io);
      expect(rep.promptFormat).toBe("tir");
      expect(rep.summary.problems).toBe(3);
      // The tiny model was never taught to write python: the tool saw its 3 completions and ran nothing.
      expect(rep.tool).toEqual({ completions: 3, calls: 0, errors: 0, timeouts: 0, skipped: 0 });
      expect(lines.join("\n")).toMatch(/TIR system prompt/);
      expect(lines.join("\n")).toMatch(/tir: 0 tool calls in 3 completions/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
