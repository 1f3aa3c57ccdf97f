/**
 * Worker-thread entry for `createVerifier`: receives `{ id, prediction, gold, options }`, answers `{ id, result }`.
 * Compiled to dist/worker.js; the pool loads that file (a Worker needs JavaScript).
 */
import { parentPort } from "node:worker_threads";
import { verify, type VerifyOptions } from "./verify.js";

interface Request {
  id: number;
  prediction: string;
  gold: string;
  options?: VerifyOptions;
}

if (parentPort) {
  const port = parentPort;
  port.on("message", (m: Request) => {
    const t0 = performance.now();
    const result = verify(m.prediction, m.gold, m.options);
    port.postMessage({ id: m.id, result, ms: performance.now() - t0 });
  });
  port.postMessage({ ready: true });
}
