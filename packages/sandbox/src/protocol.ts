// The messages between a SandboxPool and its worker threads, and what one run returns.

/** How a run ended. Every status but "ok" comes with a one-line `reason`. */
export type SandboxStatus =
  | "ok" // the code ran to its end (or called sys.exit(0))
  | "error" // a Python exception (the traceback is in stderr, its last line in `reason`)
  | "timeout" // the wall-clock limit passed: the worker was terminated
  | "memory_limit" // the interpreter's memory would have grown past the limit (MemoryError)
  | "output_limit" // stdout + stderr passed the output limit (the rest was dropped, the code was stopped)
  | "crashed"; // the interpreter died (e.g. a WebAssembly stack overflow): the worker was replaced

export interface SandboxResult {
  status: SandboxStatus;
  stdout: string;
  stderr: string;
  /** One line: why the run did not end "ok". */
  reason?: string;
  /** Wall time of the run in the worker's interpreter (ms), not counting time queued for a free worker. */
  wallMs: number;
}

/** Sent once per worker in workerData. */
export interface WorkerConfig {
  /** Host folders whose .py files are copied (read once, then held in memory) into /opt/pylib of the sandbox. */
  pylibDirs: string[];
  /** Modules imported at warm-up, so a call that uses them costs milliseconds (e.g. ["sympy"]). */
  preload: string[];
  memoryLimitBytes: number;
  outputLimitBytes: number;
}

export interface RunRequest {
  id: number;
  code: string;
}

export interface RunReply {
  id: number;
  status: Exclude<SandboxStatus, "timeout" | "crashed">;
  stdout: string;
  stderr: string;
  reason?: string;
  wallMs: number;
  /** Size of the interpreter's WebAssembly memory after the run: the pool retires a worker that grew too big. */
  heapBytes: number;
}

export type WorkerMessage = { type: "ready"; bootMs: number; heapBytes: number } | ({ type: "result" } & RunReply) | { type: "fatal"; reason: string };
