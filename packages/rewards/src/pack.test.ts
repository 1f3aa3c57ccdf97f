// `npm pack` → install the tarball in an empty project → import, types, worker pool and bin work there.
// Needs the npm registry (mathjs is installed from it), so it only runs with NR_PACK_TEST=1.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const enabled = process.env.NR_PACK_TEST === "1";
if (!enabled) console.log("[pack.test] skipped: set NR_PACK_TEST=1 to pack and install the package (needs the npm registry)");

describe.skipIf(!enabled)("npm pack + install in an empty folder", () => {
  it("scripts/pack-check.sh passes", () => {
    const script = fileURLToPath(new URL("../scripts/pack-check.sh", import.meta.url));
    const r = spawnSync("bash", [script], { encoding: "utf8", timeout: 300_000 });
    console.log(r.stdout);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\[pack-check\] PASS/);
  });
});
