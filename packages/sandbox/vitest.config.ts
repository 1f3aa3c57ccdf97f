import { defineConfig, mergeConfig } from "vitest/config";
import base from "../../configs/vitest.base.ts";

// The tests drive the compiled dist/ (a worker thread needs JavaScript); `pnpm test` here builds it first.
export default mergeConfig(base, defineConfig({}));
