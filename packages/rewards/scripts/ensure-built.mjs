// vitest globalSetup: the worker pool runs dist/worker.js (a Worker needs JavaScript), so the package is
// (re)built when dist/ is missing or older than any source file. A no-op after `pnpm build`.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

function newestSource(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newestSource(p));
    else if (e.name.endsWith(".ts") && !e.name.endsWith(".test.ts")) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

export default function setup() {
  const outputs = ["index.js", "worker.js", "cli.js"].map((f) => join(root, "dist", f));
  const built = outputs.every(existsSync) ? Math.min(...outputs.map((f) => statSync(f).mtimeMs)) : 0;
  if (built >= newestSource(join(root, "src"))) return;
  const tsc = join(root, "node_modules", ".bin", process.platform === "win32" ? "tsc.cmd" : "tsc");
  console.log("[@nr/rewards] building dist/ for the worker-pool and CLI tests …");
  execFileSync(existsSync(tsc) ? tsc : "tsc", ["-p", "tsconfig.build.json"], { cwd: root, stdio: "inherit" });
}
