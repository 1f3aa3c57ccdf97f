// Exit 0 when Dawn finds a usable (non-null) WebGPU adapter, 1 when it finds none.
// Used by scripts/setup.sh before the workspace is built, so it is plain JS.
import { createRequire } from "node:module";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = mkdtempSync(join(tmpdir(), "nr-xdg-"));
const require = createRequire(new URL("../packages/kernels/package.json", import.meta.url));
const { create, globals } = await import(require.resolve("webgpu"));
Object.assign(globalThis, globals);
try {
  const adapter = await create([]).requestAdapter();
  if (!adapter) {
    console.log("probe: Dawn found no WebGPU adapter");
    process.exit(1);
  }
  const info = adapter.info;
  console.log(`probe: adapter found: ${info.vendor} ${info.architecture} ${info.description}`.trim());
  process.exit(0);
} catch (err) {
  console.log(`probe: Dawn failed: ${err instanceof Error ? err.message : err}`);
  process.exit(1);
}
