// Shared vitest settings. GPU tests on lavapipe are slow and share one device per file,
// so files run in forked processes and timeouts are generous.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts"],
    pool: "forks",
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ["default"],
    passWithNoTests: true,
  },
});
