// How the host waits for the GPU. dawn.node resolves its promises (mapAsync, onSubmittedWorkDone) by ticking the
// device from a native callback it re-queues with the global setImmediate for as long as any of them is pending: the
// main thread spins at 100 % of a core for the whole wait. On a discrete GPU that only wastes a host core. On an
// adapter that computes on the CPU (lavapipe, SwiftShader) the spinning thread competes with the very threads doing
// the GPU's work: on a 2-core machine a 1024³ matmul loop measured 1.5 s of main-thread CPU in 5.3–6.4 s of wall
// time, and 0.14–0.18 s with the back-off below, 20–25 % less wall time (measured on a loaded machine; compare
// with NR_GPU_WAIT=spin, which keeps dawn.node's polling).
//
// The back-off: dawn.node's tick callbacks (native, unbound, unnamed functions) that it re-queues from inside a tick
// keep running at once for the first 0.5 ms of a wait. Up to 16 ms into a wait (a decode step) each tick then first
// sleeps the main thread (Atomics.wait: no spinning, and sub-millisecond, which a timer cannot be) for 1/16 of the
// time waited so far, at least 0.25 ms: the GPU's finish is seen at most ~1/16 of the wait late. Past 16 ms (a
// training step) ticks run from timers whose delay grows with the wait (2 ms, up to 4 ms after 24 ms), so the event
// loop stays free: a wait costs at most ~1/8 of its length in extra latency. Measured on the 2-core machine, the
// time from submit to read-back of 54 small dispatches averaged 2.3–2.7 ms with the sleeps against 3.1–3.9 ms with
// timers from 0.5 ms on (three alternating runs of 30 each). Callbacks queued by JavaScript (or bound functions) are never delayed. Installed once
// per process, for CPU adapters only; NR_GPU_WAIT=spin keeps dawn.node's own polling.

type Immediate = (fn: (...args: unknown[]) => void, ...args: unknown[]) => unknown;

/** Immediate ticks of one wait before the sleeps take over, in ms. */
const SPIN_MS = 0.5;
/** Sleeps before each tick up to this far into a wait, timers after it, in ms. */
const SLEEP_UNTIL_MS = 16;
/** The shortest sleep before a tick, in ms. */
const MIN_SLEEP_MS = 0.25;
/** The longest timer delay between ticks, in ms. */
const MAX_DELAY_MS = 4;

let installed = false;
const stats = { waits: 0, immediateTicks: 0, sleptTicks: 0, timerTicks: 0 };
/** Atomics.wait's target: nobody ever notifies it, so a wait on it is a plain sleep. */
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

/** True for the callbacks dawn.node queues to tick its device: native code, not a bound function, no name. */
function isDawnTick(fn: unknown): fn is (...args: unknown[]) => void {
  return typeof fn === "function" && fn.name === "" && Function.prototype.toString.call(fn).includes("[native code]");
}

/** How a tick `waited` ms into a wait runs: at once, after a sleep of `sleepMs`, or from a timer of `timerMs`. */
export function tickWait(waited: number): { sleepMs: number; timerMs: number } {
  if (waited < SPIN_MS) return { sleepMs: 0, timerMs: 0 };
  if (waited < SLEEP_UNTIL_MS) return { sleepMs: Math.max(MIN_SLEEP_MS, waited / 16), timerMs: 0 };
  return { sleepMs: 0, timerMs: Math.min(MAX_DELAY_MS, 1 + Math.floor(waited / 8)) };
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
    const { sleepMs, timerMs } = tickWait(now - waitStart);
    if (timerMs > 0) {
      stats.timerTicks++;
      return setTimeout(run, timerMs, fn, args);
    }
    if (sleepMs > 0) {
      stats.sleptTicks++;
      Atomics.wait(SLEEPER, 0, 0, sleepMs);
    } else stats.immediateTicks++;
    return immediate(run, fn, args);
  };
  // keep setImmediate's own properties (util.promisify.custom) on the replacement
  Object.assign(patched, immediate);
  globalThis.setImmediate = patched as unknown as typeof globalThis.setImmediate;
}

/** Counts since installation: waits, and the ticks run at once, after a sleep or from timers. */
export function gpuWaitStats(): Readonly<typeof stats> & { installed: boolean } {
  return { ...stats, installed };
}
