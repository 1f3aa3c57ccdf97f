// One sandboxed interpreter in a worker thread: boot pyodide with the limits in place, copy the allowed host
// Python libraries into its in-memory file system, import the preloaded modules, seal (harden.ts), then run one
// request at a time. The wall-clock limit is the pool's job (it terminates this thread).
import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, sep } from "node:path";
import { parentPort, workerData } from "node:worker_threads";
import { limitWasmMemory, PYTHON_RUNNER, restrictNodeModules, sealJavaScript } from "./harden.js";
import type { RunReply, RunRequest, WorkerConfig, WorkerMessage } from "./protocol.js";

const config = workerData as WorkerConfig;
const port = parentPort!;
const post = (m: WorkerMessage) => port.postMessage(m);

/** Where the host libraries live inside the sandbox (on sys.path). */
const PYLIB = "/opt/pylib";

interface FsLike {
  mkdirTree(path: string): void;
  writeFile(path: string, data: Uint8Array): void;
}

/** Copies the .py files of a host package folder (no tests, no caches) into the in-memory file system. */
function copyPackage(FS: FsLike, hostDir: string, dest: string): void {
  FS.mkdirTree(dest);
  for (const e of readdirSync(hostDir, { withFileTypes: true })) {
    if (e.name === "tests" || e.name === "__pycache__") continue;
    const from = join(hostDir, e.name);
    if (e.isDirectory()) copyPackage(FS, from, `${dest}/${e.name}`);
    else if (e.isFile() && e.name.endsWith(".py")) FS.writeFile(`${dest}/${e.name}`, readFileSync(from));
  }
}

/** Collects stdout + stderr up to the output limit; past it the write fails (Python gets OSError) and the run stops. */
class OutputCapture {
  stdout: number[][] = [];
  stderr: number[][] = [];
  bytes = 0;
  overflowed = false;
  constructor(private readonly limit: number) {}
  writer(stream: "stdout" | "stderr") {
    return {
      write: (buf: Uint8Array): number => {
        const into = this[stream];
        if (this.bytes + buf.length > this.limit) {
          // The first write past the limit fails (Python gets OSError "File too large", which ends the run unless caught); later
          // ones are dropped quietly, so the runner's final flush cannot fail.
          if (this.overflowed) return buf.length;
          into.push(Array.from(buf.subarray(0, Math.max(0, this.limit - this.bytes))));
          this.bytes = this.limit;
          this.overflowed = true;
          // (a Node-style errno code makes pyodide raise it as OSError without logging a JS stack)
          throw Object.assign(new Error("sandbox: output limit"), { code: "EFBIG" });
        }
        this.bytes += buf.length;
        into.push(Array.from(buf));
        return buf.length;
      },
    };
  }
  reset(): void {
    this.stdout = [];
    this.stderr = [];
    this.bytes = 0;
    this.overflowed = false;
  }
  static text(chunks: number[][]): string {
    return Buffer.from(chunks.flat()).toString("utf8");
  }
}

async function boot() {
  const t0 = performance.now();
  const mark = (what: string) => process.env.NR_SANDBOX_DEBUG && console.error(`[sandbox] ${what} at ${(performance.now() - t0).toFixed(0)} ms`);
  const modules = restrictNodeModules();
  limitWasmMemory(config.memoryLimitBytes);
  const { loadPyodide } = await import("pyodide");
  const capture = new OutputCapture(config.outputLimitBytes);
  // indexURL given: pyodide otherwise finds its files from a stack trace, which source-mapping loaders (tsx) change.
  const indexURL = dirname(createRequire(import.meta.url).resolve("pyodide/package.json")) + sep;
  const py = await loadPyodide({ indexURL, jsglobals: Object.freeze(Object.create(null)), env: { HOME: "/home/sandbox" }, stdout: () => {}, stderr: () => {} });
  mark("pyodide loaded");
  py.setStdout(capture.writer("stdout"));
  py.setStderr(capture.writer("stderr"));
  py.setStdin({ stdin: () => null }); // stdin is empty: input() raises EOFError (never reads the host's stdin)
  const FS = py.FS as unknown as FsLike;
  for (const dir of config.pylibDirs) copyPackage(FS, dir, `${PYLIB}/${dir.split(/[\\/]/).filter(Boolean).pop()}`);
  py.runPython(`import sys; sys.path.insert(0, ${JSON.stringify(PYLIB)})`);
  mark("libraries copied");
  for (const m of config.preload) py.runPython(`import ${m}`);
  mark("preloaded");
  const runner = py.runPython(PYTHON_RUNNER, { globals: py.toPy({}) }) as (src: string) => { toJs(): [string, string] } | undefined;
  modules.seal();
  sealJavaScript(py as never);
  capture.reset();
  const heap = () => (py as unknown as { _module: { HEAP8: Int8Array } })._module.HEAP8.buffer.byteLength;
  return { runner, capture, heap, bootMs: performance.now() - t0 };
}

function run(vm: Awaited<ReturnType<typeof boot>>, req: RunRequest): RunReply {
  const t0 = performance.now();
  vm.capture.reset();
  const failure = vm.runner(req.code)?.toJs();
  const wallMs = performance.now() - t0;
  const stdout = OutputCapture.text(vm.capture.stdout);
  let stderr = OutputCapture.text(vm.capture.stderr);
  const base = { id: req.id, stdout, wallMs, heapBytes: vm.heap() };
  if (vm.capture.overflowed) return { ...base, stderr, status: "output_limit", reason: `output passed ${config.outputLimitBytes} bytes (stdout + stderr); the rest was dropped and the code stopped` };
  if (!failure) return { ...base, stderr, status: "ok" };
  const [type, traceback] = failure;
  stderr += traceback;
  const last = traceback.trim().split("\n").pop() ?? type;
  if (type === "MemoryError") return { ...base, stderr, status: "memory_limit", reason: `MemoryError: the sandbox's memory limit is ${config.memoryLimitBytes} bytes` };
  return { ...base, stderr, status: "error", reason: last };
}

try {
  const vm = await boot();
  port.on("message", (req: RunRequest) => {
    try {
      post({ type: "result", ...run(vm, req) });
    } catch (e) {
      // A JavaScript-level failure inside the interpreter (a wasm stack overflow, a fatal pyodide error): this
      // interpreter is not trusted again; the pool replaces the worker.
      post({ type: "fatal", reason: String((e as Error)?.message ?? e).split("\n")[0] });
    }
  });
  post({ type: "ready", bootMs: vm.bootMs, heapBytes: vm.heap() });
} catch (e) {
  post({ type: "fatal", reason: `the interpreter did not start: ${String((e as Error)?.message ?? e).split("\n")[0]}` });
}
