export * from "./lora.js";
export * from "./peft.js";
export * from "./merge.js";
export * from "./peft-host.js";
export * from "./host.js";
export * from "./memory.js";
