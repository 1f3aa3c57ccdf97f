// `pnpm bench <name> [args]` → runs benchmarks/<name>/index.ts with tsx (after the workspace build).
// `pnpm bench` alone lists the benchmarks.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const names = readdirSync(here, { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(here, d.name, "index.ts")))
  .map((d) => d.name);
const [name, ...rest] = process.argv.slice(2);
if (!name || !names.includes(name)) {
  console.error(`${name ? `unknown benchmark "${name}". ` : ""}usage: pnpm bench <name> [options]\nbenchmarks: ${names.join(", ")}`);
  process.exit(name ? 2 : 0);
}
const tsx = join(here, "node_modules", ".bin", "tsx");
const r = spawnSync(existsSync(tsx) ? tsx : "tsx", [join(here, name, "index.ts"), ...rest], { stdio: "inherit" });
process.exit(r.status ?? 1);
