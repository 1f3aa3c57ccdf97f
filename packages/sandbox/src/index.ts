export { SandboxPool, type SandboxOptions } from "./pool.js";
export { findPythonLibs, DEFAULT_PACKAGES } from "./pylib.js";
export type { SandboxResult, SandboxStatus } from "./protocol.js";
export { TirTool, closedPythonBlock, toolOutputText, type TirOptions, type TirStats, type TirTokenizer } from "./tir.js";
