#!/usr/bin/env node
// The `nr` command line. Subcommands arrive with their packages; each has --help.
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { doctor, printDoctor } from "./doctor.js";

await yargs(hideBin(process.argv))
  .scriptName("nr")
  .command(
    "doctor",
    "Show the WebGPU adapter, its features and limits, and run one checked matmul",
    (y) =>
      y
        .option("backend", { type: "string", describe: "Dawn backend (vulkan, metal, d3d12, null); env NR_BACKEND" })
        .option("adapter", { type: "string", describe: "substring of the adapter name to pick; env NR_ADAPTER" })
        .option("json", { type: "boolean", default: false, describe: "print the report as JSON" }),
    async (argv) => {
      const report = await doctor({ backend: argv.backend, adapter: argv.adapter });
      if (argv.json) console.log(JSON.stringify(report, null, 2));
      else printDoctor(report);
      if (!report.matmul.ok) process.exitCode = 1;
    },
  )
  .demandCommand(1, "Name a command; see --help.")
  .strict()
  .fail((msg, err, y) => {
    if (err) {
      console.error(`nr: ${err.message}`);
    } else {
      console.error(`nr: ${msg}\n`);
      y.showHelp();
    }
    process.exit(2);
  })
  .help()
  .parseAsync();
