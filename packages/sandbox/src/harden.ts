// What closes the worker thread around the interpreter. Used only inside worker.ts.
//
// Pyodide under Node is not a sandbox by itself (measured with 314.0.8): `os.system("ls")` runs a host shell
// (Emscripten's system() calls child_process through the module's own `require`), `socket`/`urllib` reach a real
// server (Emscripten's SOCKFS opens a WebSocket with the `ws` package), `js.*` is the worker's globalThis, and
// `pyodide_js` is the API object (mountNodeFS mounts host folders). So the boundary is built in layers, each of
// which stops the attempts the tests make on its own where it can:
//   1. Node modules: the CommonJS loader refuses every module once the interpreter is up (system(), SOCKFS's `ws`
//      and anything else that calls `require` later get an exception), and refuses the network and process
//      modules even during boot.
//   2. JavaScript reachable from Python: the `js` module is an empty object with no prototype, `pyodide_js` is
//      unregistered, the API's host-facing methods (mountNodeFS, useNodeSockFS, loadPackage, FS.mount) throw,
//      code generation from strings (eval, Function, which Emscripten's emscripten_run_script and any
//      `obj.constructor.constructor("…")` trick need) throws, and the worker's network globals are deleted.
//   3. Memory: WebAssembly.Memory.grow refuses to pass the limit, so Python sees MemoryError.
//   4. Python: an import hook refuses the modules that only reach outside (sockets, processes, ctypes, the JS
//      bridge), and os's process functions raise. This layer gives fast, clear errors; it is not the boundary
//      (Python code can undo it), layers 1–3 are.
import { createRequire } from "node:module";

/** Node modules the interpreter may load while it boots (pyodide's loader and Emscripten's runtime need these). */
const BOOT_MODULES = new Set(["fs", "path", "url", "crypto", "vm", "module", "fs/promises", "util", "os", "tty", "stream", "events", "buffer"]);

/** Step 1: patch the CommonJS loader of this worker thread (the `require` Emscripten made with createRequire). */
export function restrictNodeModules(): { seal(): void } {
  const Module = createRequire(import.meta.url)("node:module") as { _load: (request: string, ...rest: unknown[]) => unknown };
  const load = Module._load;
  let sealed = false;
  Module._load = function guardedLoad(request: string, ...rest: unknown[]) {
    const name = String(request).replace(/^node:/, "");
    if (sealed || !BOOT_MODULES.has(name)) throw new Error(`sandbox: the Node module '${request}' is not available to sandboxed code`);
    return load.call(this, request, ...rest);
  };
  return { seal: () => void (sealed = true) };
}

/** Step 3: no WebAssembly memory (the interpreter's heap) grows past `limitBytes`; Emscripten's malloc then fails. */
export function limitWasmMemory(limitBytes: number): void {
  // (no DOM lib in this project's tsconfig: the one method used is typed here)
  type WasmMemory = { buffer: ArrayBuffer; grow(deltaPages: number): number };
  const proto = (globalThis as unknown as { WebAssembly: { Memory: { prototype: WasmMemory } } }).WebAssembly.Memory.prototype;
  const grow = proto.grow;
  proto.grow = function limitedGrow(this: WasmMemory, deltaPages: number) {
    if (this.buffer.byteLength + deltaPages * 65536 > limitBytes) throw new RangeError("sandbox: memory limit");
    return grow.call(this, deltaPages);
  };
}

interface PyodideApiLike {
  unregisterJsModule(name: string): void;
  FS: { mount: unknown; filesystems: Record<string, unknown> };
  [method: string]: unknown;
}

/** Step 2, after the interpreter and its preloaded modules are up. */
export function sealJavaScript(py: PyodideApiLike): void {
  py.unregisterJsModule("pyodide_js");
  const refuse = (what: string) => () => {
    throw new Error(`sandbox: ${what} is disabled`);
  };
  for (const m of ["mountNodeFS", "mountNativeFS", "useNodeSockFS", "loadPackage", "loadPackagesFromImports", "registerJsModule", "setStdout", "setStderr", "setStdin"]) py[m] = refuse(m);
  py.FS.mount = refuse("FS.mount");
  delete py.FS.filesystems.NODEFS;
  const g = globalThis as Record<string, unknown>;
  for (const name of ["require", "fetch", "WebSocket", "XMLHttpRequest", "EventSource", "Request", "Response", "Headers", "Worker", "SharedWorker", "importScripts", "navigator"]) {
    try {
      delete g[name];
    } catch {
      g[name] = undefined;
    }
  }
  forbidCodeFromStrings();
}

/** eval, Function and the constructors reachable from any function object all throw. */
function forbidCodeFromStrings(): void {
  const refuse = function refusedCodeGeneration(): never {
    throw new EvalError("sandbox: code generation from strings is disabled");
  };
  const protos = [function () {}, async function () {}, function* () {}, async function* () {}].map((f) => Object.getPrototypeOf(f) as object);
  for (const proto of protos) Object.defineProperty(proto, "constructor", { value: refuse, writable: false, configurable: false });
  const g = globalThis as Record<string, unknown>;
  Object.defineProperty(g, "eval", { value: refuse, writable: false, configurable: false });
  Object.defineProperty(g, "Function", { value: refuse, writable: false, configurable: false });
}

/**
 * Step 4, and the function the worker calls per run. Before every run the interpreter-wide state a previous run may
 * have changed is put back as it was at warm-up (the import guard and import machinery, sys.path, the standard
 * streams, builtins, the sys.modules entries, the working folder, the environment, the recursion limit): one run
 * cannot blind or break the next. Each run gets fresh `__main__` globals. Imported modules stay loaded (that is
 * what makes a warm call cheap), so attributes a run sets on a module (`math.pi = 3`) do persist on that worker.
 * The traceback shows the user's frames only.
 */
export const PYTHON_RUNNER = String.raw`
import sys, os, posix, traceback, builtins

_BLOCKED_ROOTS = {"js", "pyodide_js", "pyodide", "_pyodide", "_pyodide_core", "micropip", "pyodide_http",
    "socket", "_socket", "ssl", "_ssl", "select", "selectors", "asyncio", "subprocess", "_posixsubprocess",
    "multiprocessing", "ctypes", "_ctypes", "urllib.request", "http.client", "ftplib", "smtplib", "webbrowser"}
_PROCESS_FUNCTIONS = ("system", "popen", "fork", "forkpty", "execv", "execve", "execl", "execle", "execlp",
    "execlpe", "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "spawnle", "posix_spawn", "posix_spawnp",
    "kill", "killpg")

def _blocked(name):
    return any(name == b or name.startswith(b + ".") for b in _BLOCKED_ROOTS)

class _SandboxImportGuard:
    def find_spec(self, name, path=None, target=None):
        if _blocked(name):
            raise ImportError(f"{name} is disabled in the sandbox (no network, no processes, no host access)")
        return None

_GUARD = _SandboxImportGuard()

def _no_process(*args, **kwargs):
    raise PermissionError("processes are disabled in the sandbox")

_SAVED = dict(
    meta_path=[f for f in sys.meta_path], path=list(sys.path), path_hooks=list(sys.path_hooks),
    streams=(sys.stdin, sys.stdout, sys.stderr), builtins=dict(builtins.__dict__),
    modules={k: v for k, v in sys.modules.items() if not _blocked(k)},  # (never keep a reference to the JS bridge)
    cwd=os.getcwd(), environ=dict(os.environ), recursion=sys.getrecursionlimit())

def _restore():
    sys.meta_path = [_GUARD] + _SAVED["meta_path"]
    sys.path = list(_SAVED["path"])
    sys.path_hooks = list(_SAVED["path_hooks"])
    sys.stdin, sys.stdout, sys.stderr = _SAVED["streams"]
    builtins.__dict__.clear()
    builtins.__dict__.update(_SAVED["builtins"])
    for name, mod in _SAVED["modules"].items():
        if sys.modules.get(name) is not mod:
            sys.modules[name] = mod
    os.chdir(_SAVED["cwd"])
    os.environ.clear()
    os.environ.update(_SAVED["environ"])
    sys.setrecursionlimit(_SAVED["recursion"])

def _guard():
    _restore()
    for m in [m for m in sys.modules if _blocked(m)]:
        del sys.modules[m]
    for mod in (os, posix):
        for f in _PROCESS_FUNCTIONS:
            if hasattr(mod, f):
                setattr(mod, f, _no_process)

def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass

def __nr_run(src):
    _guard()
    g = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(src, "<sandbox>", "exec"), g)
        return None
    except SystemExit as e:
        if e.code is None or e.code == 0:
            return None
        return ("SystemExit", f"SystemExit: {e.code}\n")
    except BaseException as e:
        return (type(e).__name__, "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next)))
    finally:
        _flush()

__nr_run
`;
