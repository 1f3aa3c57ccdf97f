import { defineConfig, mergeConfig } from "vitest/config";
import base from "../../configs/vitest.base.ts";

// The worker pool and CLI tests run the compiled dist/ (a Worker needs JavaScript): build it first when stale.
export default mergeConfig(base, defineConfig({ test: { globalSetup: ["./scripts/ensure-built.mjs"] } }));
