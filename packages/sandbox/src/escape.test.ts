// Escape attempts against a real interpreter: each must fail, fast, and leave no trace on the host. The network
// attempts aim at a real HTTP server on 127.0.0.1 that must see no connection at all. Several attempts first
// remove the sandbox's Python import guard (which Python code can do) to show that the JavaScript-side layers
// hold on their own.
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SandboxPool } from "../dist/index.js";

const UNGUARD = "import sys\nsys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != '_SandboxImportGuard']\n";
/** The import guard also drops pyodide's own modules from sys.modules; the garbage collector still finds them. */
const FIND_MODULE = "import gc\ndef find_module(name):\n    return [m for m in gc.get_objects() if type(m).__name__ == 'module' and m.__name__ == name][0]\n";
let pool: SandboxPool;
let server: Server;
let port = 0;
const connections: string[] = [];

beforeAll(async () => {
  server = createServer((req, res) => res.end("reached"));
  server.on("connection", (s) => connections.push(`${s.remoteAddress}:${s.remotePort}`));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as { port: number }).port;
  pool = new SandboxPool({ workers: 1, preload: [], pylibDirs: [], timeoutMs: 10_000, memoryLimitBytes: 384 << 20, outputLimitBytes: 4096 });
  await pool.warm();
});
afterAll(async () => {
  await pool?.close();
  server?.close();
});

/** Runs an attempt; it must not end "ok" and must not print the marker that means it got through. */
async function attempt(code: string) {
  const r = await pool.run(code);
  expect(r.status, `${code}\n→ ${r.stdout}${r.stderr}`).not.toBe("ok");
  expect(r.stdout).not.toContain("ESCAPED");
  return r;
}

describe("network: a local server sees no connection", () => {
  const url = () => `http://127.0.0.1:${port}/`;
  it.each([
    ["urllib", () => `import urllib.request\nprint('ESCAPED', urllib.request.urlopen('${url()}', timeout=3).read())`],
    ["socket", () => `import socket\ns = socket.create_connection(('127.0.0.1', ${port}), timeout=3)\nprint('ESCAPED')`],
    ["http.client", () => `import http.client\nc = http.client.HTTPConnection('127.0.0.1', ${port}, timeout=3)\nc.request('GET', '/')\nprint('ESCAPED', c.getresponse().read())`],
    ["socket without the import guard", () => `${UNGUARD}import socket\ns = socket.create_connection(('127.0.0.1', ${port}), timeout=3)\ns.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\nprint('ESCAPED', s.recv(100))`],
    ["urllib without the import guard", () => `${UNGUARD}import urllib.request\nprint('ESCAPED', urllib.request.urlopen('${url()}', timeout=3).read())`],
    ["js.fetch", () => `${UNGUARD}import js\nprint('ESCAPED', js.fetch('${url()}'))`],
    ["pyodide.http", () => `${UNGUARD}import pyodide.http\nprint('ESCAPED', pyodide.http.open_url('${url()}').read())`],
    ["pyodide.http found by the garbage collector", () => `${FIND_MODULE}print('ESCAPED', find_module('pyodide.http').open_url('${url()}').read())`],
    ["run_js found by the garbage collector", () => `${FIND_MODULE}print('ESCAPED', find_module('pyodide.code').run_js("fetch('${url()}')"))`],
    ["Function from a converted object", () => `${FIND_MODULE}F = find_module('pyodide.ffi').to_js({}).constructor.constructor\nprint('ESCAPED', F("return fetch('${url()}')")())`],
    ["ctypes → emscripten_run_script", () => `${UNGUARD}import ctypes\nctypes.CDLL(None).emscripten_run_script(b"fetch('${url()}')")\nprint('ESCAPED')`],
    ["the pyodide API (useNodeSockFS)", () => `${UNGUARD}import pyodide_js\npyodide_js.useNodeSockFS()\nprint('ESCAPED')`],
  ])("%s", async (_name, code) => {
    await attempt(code());
    await new Promise((r) => setTimeout(r, 100));
    expect(connections).toEqual([]);
  });
});

describe("host: processes, files, JavaScript", () => {
  const marker = join(tmpdir(), `nr-sandbox-escape-${process.pid}`);
  it.each([
    ["os.system", `import os\nos.system('touch ${marker}')\nprint('ESCAPED')`],
    ["os.system after reloading posix", `${UNGUARD}import importlib, posix\nimportlib.reload(posix)\nr = posix.system('touch ${marker}')\nprint('ESCAPED' if r == 0 else r)\nraise SystemExit(1)`],
    ["subprocess", `import subprocess\nsubprocess.run(['touch', '${marker}'])\nprint('ESCAPED')`],
    ["subprocess without the import guard", `${UNGUARD}import subprocess\nsubprocess.run(['touch', '${marker}'])\nprint('ESCAPED')`],
    ["ctypes", `import ctypes\nprint('ESCAPED', ctypes.CDLL(None))`],
    ["eval through ctypes", `${UNGUARD}import ctypes\nctypes.CDLL(None).emscripten_run_script(b"require('child_process').execSync('touch ${marker}')")\nprint('ESCAPED')`],
    ["/etc/passwd", `print('ESCAPED', open('/etc/passwd').read())`],
    ["this package's source", `print('ESCAPED', open('${join(process.cwd(), "package.json")}').read())`],
    ["the pyodide API (mountNodeFS)", `${UNGUARD}import pyodide_js\npyodide_js.mountNodeFS('/host', '/')\nprint('ESCAPED')`],
    ["a JS object found by the garbage collector", `${UNGUARD}import gc\nfor o in gc.get_objects():\n    if 'JsProxy' in type(o).__name__ and hasattr(o, 'mountNodeFS'):\n        o.mountNodeFS('/host', '/')\n        print('ESCAPED')\nraise SystemExit(1)`],
    ["globalThis.process via Function", `${FIND_MODULE}print('ESCAPED', find_module('pyodide.ffi').to_js([]).constructor.constructor('return process.env')())`],
    ["pyodide's JsProxy of the API found by the garbage collector", `${FIND_MODULE}api = find_module('_pyodide._importhook')\nfor v in list(vars(api).values()):\n    for o in getattr(v, '__dict__', {}).values():\n        if hasattr(o, 'mountNodeFS'):\n            o.mountNodeFS('/host', '/')\n            print('ESCAPED')\nraise SystemExit(1)`],
  ])("%s", async (_name, code) => {
    await attempt(code);
    expect(existsSync(marker)).toBe(false);
  });

  it("no JS proxy of the pyodide API is reachable from the garbage collector (and using one would fail)", async () => {
    const hunt = "import gc\nfound = 0\nfor o in gc.get_objects():\n    vals = list(o.values()) if isinstance(o, dict) else list(o) if isinstance(o, (list, tuple)) else []\n    for v in vals:\n        try:\n            if 'Js' in type(v).__name__ and hasattr(v, 'mountNodeFS'):\n                found += 1\n                v.mountNodeFS('/host', '/')\n                print('ESCAPED')\n        except Exception:\n            pass\nprint('found', found)\nraise SystemExit(1)";
    const r = await attempt(`${UNGUARD}${hunt}`);
    expect(r.stdout).toBe("found 0\n");
  });

  it("lists only the sandbox's own folders, and writes stay in memory", async () => {
    const r = await pool.run("import os\nprint(sorted(os.listdir('/')))\nopen('/tmp/x', 'w').write('y')\nprint(open('/tmp/x').read())");
    expect(r.status).toBe("ok");
    const listed = r.stdout.split("\n")[0];
    for (const hostDir of ["'etc'", "'usr'", "'work'", "'root'", "'var'"]) expect(listed).not.toContain(hostDir);
    expect(r.stdout.split("\n")[1]).toBe("y");
    expect(existsSync("/tmp/x") && readFileSync("/tmp/x", "utf8") === "y").toBe(false);
  });
});

describe("limits", () => {
  it("stops an infinite loop at the wall-clock limit and the next call finds a warm interpreter", async () => {
    const before = pool.started;
    const r = await pool.run("while True:\n    pass", { timeoutMs: 1500 });
    expect(r.status).toBe("timeout");
    expect(r.wallMs).toBeGreaterThanOrEqual(1500);
    expect(r.wallMs).toBeLessThan(5000);
    expect(pool.started).toBe(before + 1);
    const next = await pool.run("print(6 * 7)");
    expect([next.status, next.stdout]).toEqual(["ok", "42\n"]);
  });

  it.each([
    ["10 GB at once", "x = bytearray(10 * 1024**3)", ["error", "memory_limit"]],
    ["a list of 10 G items", "x = [0] * (10 * 1024**3)", ["error", "memory_limit"]],
    ["growing past the limit", "a = []\nwhile True:\n    a.append(bytearray(32 * 1024**2))", ["memory_limit"]],
  ])("refuses memory: %s", async (_name, code, statuses) => {
    const r = await attempt(code);
    expect(statuses).toContain(r.status);
    expect(r.wallMs).toBeLessThan(5000);
    const next = await pool.run("print('alive')");
    expect(next.stdout).toBe("alive\n");
  });

  it("cuts output at the limit: printing 100 MB", async () => {
    const r = await attempt("print('x' * 100_000_000)\nprint('ESCAPED')");
    expect(r.status).toBe("output_limit");
    expect(r.stdout.length + r.stderr.length).toBeLessThanOrEqual(4096);
    expect(r.stdout.startsWith("xxxx")).toBe(true);
  });

  it("cuts output at the limit: a print loop", async () => {
    const r = await attempt("while True:\n    print('spam')");
    expect(r.status).toBe("output_limit");
    expect(r.stdout.length).toBeLessThanOrEqual(4096);
  });

  it("turns unbounded recursion into RecursionError", async () => {
    const r = await attempt("def f(n):\n    return f(n + 1)\nf(0)");
    expect(r.status).toBe("error");
    expect(r.reason).toMatch(/^RecursionError/);
  });
});
