// The run module: training config (schema, presets, overrides), the run folder (logs, summary, checkpoints), report.html.
export * from "./config.js";
export * from "./folder.js";
export * from "./report.js";
