// `nr-verify` runs from dist/cli.js (built by vitest's globalSetup when stale), as npm users run it.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const cli = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
const run = (args: string[], input?: string) => spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", input });

describe("nr-verify", () => {
  it("starts with a shebang and is the package's bin", () => {
    expect(readFileSync(cli, "utf8").startsWith("#!/usr/bin/env node")).toBe(true);
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
    expect(pkg.bin["nr-verify"]).toBe("./dist/cli.js");
  });

  it("prints the VerifyResult as JSON and exits 0 when correct", () => {
    const r = run(["The answer is $\\boxed{\\frac{1}{2}}$.", "0.5"]);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ correct: true, predicted: "\\frac{1}{2}", gold: "0.5" });
    expect(typeof out.reason).toBe("string");
  });

  it("exits 1 when not correct", () => {
    const r = run(["\\boxed{3}", "6"]);
    expect(r.status).toBe(1);
    expect(JSON.parse(r.stdout).correct).toBe(false);
  });

  it("exits 2 on a usage error", () => {
    expect(run([]).status).toBe(2);
    expect(run(["only-one"]).status).toBe(2);
    expect(run(["a", "b", "c"]).status).toBe(2);
    expect(run(["1", "1", "--bogus"]).status).toBe(2);
    expect(run(["1", "1", "--precision", "x"]).status).toBe(2);
  });

  it("passes options and reads one side from stdin", () => {
    expect(run(["0.33", "1/3", "--precision", "2"]).status).toBe(0);
    expect(run(["10, 4, -2", "4, 10, -2"]).status).toBe(1);
    expect(run(["10, 4, -2", "4, 10, -2", "--unordered"]).status).toBe(0);
    expect(run(["-", "#### 18"], "Janet makes 9 * 2 = 18 dollars.\nThe answer is 18.").status).toBe(0);
  });
});
