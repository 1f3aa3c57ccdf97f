// Runs the pipeline in a child process for the kill-and-resume test: `node --import tsx child-run.ts CONFIG.json CWD [RESUME_DIR]`.
import { readFileSync } from "node:fs";
import { runPipeline } from "./pipeline.js";

const [configPath, cwd, resumeDir] = process.argv.slice(2);
const config = JSON.parse(readFileSync(configPath, "utf8"));
await runPipeline(config, { cwd, resumeDir, log: (l) => process.stdout.write(`${l}\n`) });
