import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import * as core from "./core.js";
import * as main from "./index.js";

/** Static (value) imports of a source file: `import … from "x"` and `export … from "x"`, not `import type`. */
function staticImports(file: URL): string[] {
  const src = readFileSync(file, "utf8");
  const out: string[] = [];
  for (const m of src.matchAll(/^(import|export)\s+(type\s+)?[^;]*?from\s+"([^"]+)";/gms)) if (!m[2]) out.push(m[3]);
  return out;
}

describe("entry points", () => {
  it("@nr/data/core only reaches browser-safe modules", () => {
    const allowed = new Set(["@huggingface/jinja"]);
    const seen = new Set<string>();
    const external = new Set<string>();
    const visit = (url: URL) => {
      if (seen.has(url.href)) return;
      seen.add(url.href);
      for (const spec of staticImports(url)) {
        if (spec.startsWith(".")) visit(new URL(spec.replace(/\.js$/, ".ts"), url));
        else external.add(spec);
      }
    };
    visit(new URL("./core.ts", import.meta.url));
    expect(seen.size).toBeGreaterThan(8);
    expect([...external].filter((e) => !allowed.has(e))).toEqual([]);
  });

  it("the main entry re-exports all of core", () => {
    for (const name of Object.keys(core)) expect(main).toHaveProperty(name);
    for (const name of ["loadDataset", "curate", "OnnxEmbedder", "checkContamination", "writeJsonl"]) expect(typeof (main as Record<string, unknown>)[name]).toBe("function");
  });
});
