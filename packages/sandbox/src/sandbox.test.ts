// The sandbox computes what CPython computes: fresh random programs run in the sandbox and in the host's python3
// (an independent interpreter), and their outputs must match; sympy the same way when the host has it.
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findPythonLibs, SandboxPool } from "../dist/index.js";

const seed = Number(process.env.NR_SEED ?? Date.now() % 1e6);
console.log(`[sandbox.test] seed ${seed} (NR_SEED=${seed} replays it)`);
let state = seed + 1;
const rand = (n: number) => (state = (state * 48271) % 2147483647) % n; // MINSTD: exact in doubles

function hostPython(code: string): string | undefined {
  try {
    return execFileSync("python3", ["-c", code], { encoding: "utf8", timeout: 30_000 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}
const hasPython3 = hostPython("print(1)") === "1\n";
const libs = findPythonLibs();
const hasSympy = libs.some((d) => d.endsWith("sympy")) && hasPython3 && hostPython("import sympy; print(sympy.__version__)") !== undefined;

/** A random program: exact integer, rational and float arithmetic, strings, sorting, comprehension. */
function randomProgram(): string {
  const a = rand(10 ** 9) - 5 * 10 ** 8, b = rand(997) + 2, c = rand(50) + 3;
  return [
    "from fractions import Fraction",
    "import math, itertools",
    `a, b, c = ${a}, ${b}, ${c}`,
    "print(a ** c % (b * 7919), a // b, a % b, divmod(a, -b))",
    "print(Fraction(a, b) + Fraction(c, b + 1), math.comb(c + 20, c), math.gcd(a, b * c))",
    "print(repr(a / b), math.sqrt(abs(a)), round(math.sin(a) * 1e6, 3))",
    "print(sorted(range(c), key=lambda i: (i * a) % b)[:10])",
    "print(sum(1 for p in itertools.permutations(range(6)) if p[0] < p[-1]))",
    `print(${JSON.stringify("ab\u00e9x".repeat(3))}.upper()[::-1], f"{a:_}")`,
  ].join("\n");
}

let pool: SandboxPool;
beforeAll(async () => {
  pool = new SandboxPool({ workers: 2, preload: hasSympy ? ["sympy"] : [], pylibDirs: hasSympy ? libs : [] });
  await pool.warm();
});
afterAll(async () => pool?.close());

describe("results match the host's CPython", () => {
  it.skipIf(!hasPython3)("random programs (python3 on PATH as the reference)", async () => {
    for (let i = 0; i < 6; i++) {
      const code = randomProgram();
      const r = await pool.run(code);
      expect(r.status, r.stderr).toBe("ok");
      expect(r.stdout, code).toBe(hostPython(code));
    }
  });

  it.skipIf(!hasSympy)("sympy: solve, integrate, simplify, exact rationals", async () => {
    const k = rand(9) + 2, m = rand(7) + 1;
    const code = [
      "import sympy as sp",
      "x, y = sp.symbols('x y')",
      `print(sp.solve(x**2 - ${k}*x - ${m}, x))`,
      `print(sp.integrate(x**${k} * sp.exp(-x), (x, 0, sp.oo)))`,
      `print(sp.simplify(sp.sin(x)**2 + sp.cos(x)**2 + ${m}))`,
      `print(sp.Rational(${k}, ${m + k}) + sp.Rational(1, 3), sp.factorint(${k * 1009 * m}))`,
      `print(sp.N(sp.pi, ${10 + k}))`,
    ].join("\n");
    const r = await pool.run(code, { timeoutMs: 60_000 });
    expect(r.status, r.stderr).toBe("ok");
    expect(r.stdout).toBe(hostPython(code));
  });
});

describe("the pool", () => {
  it("runs calls concurrently on its workers and keeps their namespaces apart", async () => {
    const calls = Array.from({ length: 8 }, (_, i) => pool.run(`v = ${i}\nprint(v * v, 'w' in globals())`));
    const results = await Promise.all(calls);
    expect(results.map((r) => r.stdout)).toEqual(Array.from({ length: 8 }, (_, i) => `${i * i} False\n`));
    const leak = await pool.run("print(globals().get('v'))");
    expect(leak.stdout).toBe("None\n");
  });

  it("one run cannot break the next: streams, builtins, imports, sys.path, cwd and environment are put back", async () => {
    const vandal = "import sys, os, builtins\nos.chdir('/tmp')\nos.environ['X'] = '1'\nsys.path.clear()\nsys.meta_path.clear()\nsys.modules['fractions'] = None\nbuiltins.len = None\nsys.stdout = None\nsys.stderr = None";
    // Both workers get vandalised (two concurrent runs), then each must be whole again.
    await Promise.all([pool.run(vandal), pool.run(vandal)]);
    const check = "import os, fractions\nprint(len('abc'), fractions.Fraction(1, 3), os.getcwd(), os.environ.get('X'))";
    const after = await Promise.all([pool.run(check), pool.run(check)]);
    for (const r of after) expect([r.status, r.stdout]).toEqual(["ok", "3 1/3 /home/sandbox None\n"]);
  });

  it("reports a Python error with its traceback and its last line as the reason", async () => {
    const r = await pool.run("def f(d):\n    return 1 / d\nprint('before')\nf(0)");
    expect(r.status).toBe("error");
    expect(r.stdout).toBe("before\n");
    expect(r.reason).toBe("ZeroDivisionError: division by zero");
    expect(r.stderr).toContain('File "<sandbox>", line 2, in f');
    expect(r.stderr).not.toContain("__nr_run");
  });

  it("has an empty stdin: input() raises EOFError", async () => {
    const r = await pool.run("print(input())");
    expect([r.status, r.reason]).toEqual(["error", "EOFError: EOF when reading a line"]);
  });

  it("treats sys.exit(0) as success and sys.exit(2) as failure", async () => {
    expect((await pool.run("import sys\nprint('a')\nsys.exit(0)")).status).toBe("ok");
    const r = await pool.run("import sys\nsys.exit(2)");
    expect([r.status, r.reason]).toEqual(["error", "SystemExit: 2"]);
  });

  it("a timeout in one call leaves concurrent calls on other workers unharmed", async () => {
    const [slow, fast] = await Promise.all([pool.run("while True: pass", { timeoutMs: 800 }), pool.run("print(sum(range(10**5)))")]);
    expect(slow.status).toBe("timeout");
    expect(fast.stdout).toBe("4999950000\n");
  });
});

describe("close()", () => {
  // A boot timer left pending by close() kept `nr sandbox` alive for its whole 120 s after a timeout. In a fresh
  // process (vitest's own timers would blur the count here) the pool's timers are listed after a timeout replaced
  // the worker, and none after close().
  it("leaves no timer running, also right after a timeout replaced the worker", () => {
    const script = [
      `import { SandboxPool } from ${JSON.stringify(new URL("../dist/index.js", import.meta.url).href)};`,
      "const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;",
      "const p = new SandboxPool({ workers: 1, preload: [], pylibDirs: [] });",
      "const r = await p.run('while True: pass', { timeoutMs: 500 });",
      "const afterTimeout = timers();",
      "await p.close();",
      "console.log(JSON.stringify({ status: r.status, afterTimeout, afterClose: timers() }));",
    ].join("\n");
    const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 60_000 });
    expect(JSON.parse(out)).toEqual({ status: "timeout", afterTimeout: 1, afterClose: 0 });
  }, 120_000);
});
