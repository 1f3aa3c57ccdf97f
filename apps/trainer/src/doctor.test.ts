import { describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { doctor } from "./doctor.js";

describe("nr doctor", () => {
  it("reports the adapter, features, limits and a correct matmul", async () => {
    const r = await doctor();
    expect(r.adapter.length).toBeGreaterThan(0);
    expect(r.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 * 2 ** 20);
    expect(r.matmul.ok).toBe(true);
    expect(r.matmul.maxAbsError).toBeLessThan(1e-2);
    expect(r.matmul.gflops).toBeGreaterThan(0);
  });

  const cli = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
  it.skipIf(!existsSync(cli))("the CLI rejects an unknown command with exit code 2", () => {
    let code = 0;
    try {
      execFileSync(process.execPath, [cli, "nonsense"], { stdio: "pipe" });
    } catch (e) {
      code = (e as { status: number }).status;
    }
    expect(code).toBe(2);
  });

  it("a backend that does not exist gives an error that says what to install", async () => {
    await expect(doctor({ backend: "no-such-backend" })).rejects.toThrow(/No WebGPU adapter/);
  });
});
