// How the host waits for the GPU. dawn.node resolves its promises (mapAsync, onSubmittedWorkDone) by ticking the
// device from a native callback it re-queues with the global setImmediate for as long as any of them is pending: the
// main thread spins at 100 % of a core for the whole wait. On a discrete GPU that only wastes a host core. On an
// adapter that computes on the CPU (lavapipe, SwiftShader) the spinning thread competes with the very threads doing
// the GPU's work: on a 2-core machine a 1024³ matmul loop measured 1.5 s of main-thread CPU in 5.3–6.4 s of wall
// time, and 0.14–0.18 s with the back-off below, 20–25 % less wall time (measured on a loaded machine; compare
// with NR_GPU_WAIT=spin, which keeps dawn.node's polling).
//
// The back-off: dawn.node's tick callbacks (native, unbound, unnamed functions) that it re-queues from inside a tick
// keep running at once for the first 0.5 ms of a wait, then from timers whose delay grows with the wait (1 ms, up
// to 4 ms after 32 ms): a wait costs at most ~1/8 of its length in extra latency. Callbacks queued by JavaScript
// (or bound functions) are never delayed. Installed once per process, for CPU adapters only; NR_GPU_WAIT=spin keeps
// dawn.node's own polling.

type Immediate = (fn: (...args: unknown[]) => void, ...args: unknown[]) => unknown;

/** Immediate ticks of one wait before the timers take over, in ms. */
const SPIN_MS = 0.5;
/** The longest timer delay between ticks, in ms. */
const MAX_DELAY_MS = 4;

let installed = false;
const stats = { waits: 0, immediateTicks: 0, timerTicks: 0 };

/** True for the callbacks dawn.node queues to tick its device: native code, not a bound function, no name. */
function isDawnTick(fn: unknown): fn is (...args: unknown[]) => void {
  return typeof fn === "function" && fn.name === "" && Function.prototype.toString.call(fn).includes("[native code]");
}

/** The timer delay for a tick `waited` ms into a wait (0: run at once). */
export function tickDelay(waited: number): number {
  if (waited < SPIN_MS) return 0;
  return Math.min(MAX_DELAY_MS, 1 + Math.floor(waited / 8));
}

/** Replaces the global setImmediate with the back-off for dawn.node's ticks (idempotent). */
export function installGpuWaitBackoff(): void {
  if (installed || process.env.NR_GPU_WAIT === "spin") return;
  installed = true;
  const immediate = globalThis.setImmediate as unknown as Immediate;
  let inTick = false;
  let waitStart = 0;
  const run = (...[fn, args]: unknown[]) => {
    const tick = fn as (...a: unknown[]) => void;
    inTick = true;
    try {
      tick(...(args as unknown[]));
    } finally {
      inTick = false;
    }
  };
  const patched = function (fn: unknown, ...args: unknown[]) {
    if (!isDawnTick(fn)) return immediate(fn as (...a: unknown[]) => void, ...args);
    const now = performance.now();
    // a tick queued from outside a tick starts a wait (dawn.node's first pending promise)
    if (!inTick) {
      waitStart = now;
      stats.waits++;
    }
    const delay = tickDelay(now - waitStart);
    if (delay === 0) {
      stats.immediateTicks++;
      return immediate(run, fn, args);
    }
    stats.timerTicks++;
    return setTimeout(run, delay, fn, args);
  };
  // keep setImmediate's own properties (util.promisify.custom) on the replacement
  Object.assign(patched, immediate);
  globalThis.setImmediate = patched as unknown as typeof globalThis.setImmediate;
}

/** Counts since installation: waits, and the ticks run at once or from timers. */
export function gpuWaitStats(): Readonly<typeof stats> & { installed: boolean } {
  return { ...stats, installed };
}
