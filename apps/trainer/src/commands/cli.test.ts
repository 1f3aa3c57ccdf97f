// The `nr` subcommands' flags (in-process yargs: --help with examples, required flags, choices) and the built binary
// (bad input exits 2 with a message that names the problem; `nr bench` lists / rejects names). No GPU work here;
// the handlers' own checks are tested in commands.test.ts.
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import yargs from "yargs";
import { benchCommand, benchmarksDir, listBenchmarks, runBench } from "./bench.js";
import { curateCommand } from "./curate.js";
import { evalCommand } from "./eval.js";
import { generateCommand } from "./generate.js";

const cli = fileURLToPath(new URL("../../dist/cli.js", import.meta.url));
const nr = (...args: string[]) => {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

describe.skipIf(!existsSync(cli))("nr (built CLI)", () => {
  it("bad input exits 2 with a message naming what was wrong", () => {
    const dir = mkdtempSync(join(tmpdir(), "nr-cli-"));
    try {
      let r = nr("eval", "--model", join(dir, "nope"));
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/nr: --model .*nope: no such folder/);
      writeFileSync(join(dir, "config.json"), "{}");
      writeFileSync(join(dir, "tokenizer.json"), "{}");
      r = nr("eval", "--model", dir, "--n", "abc");
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/--n NaN: expected an integer >= 1/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("train-style dotted overrides still reach train/sft/rl, and only them", () => {
    const r = nr("train", "--rl.G", "x");
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--rl\.G "x" is not allowed/);
    // `--model` / `--seed` are eval's own flags (for train they are config aliases).
    expect(nr("eval", "--model", "/no/such/dir", "--seed", "3").err).toMatch(/--model \/no\/such\/dir: no such folder/);
  });

  it("nr bench lists the suite; an unknown name is refused with a suggestion", () => {
    const dir = benchmarksDir();
    expect(dir).toBeDefined();
    const names = listBenchmarks(dir!);
    expect(names).toEqual(readdirSync(dir!, { withFileTypes: true }).filter((e) => e.isDirectory() && existsSync(join(dir!, e.name, "index.ts"))).map((e) => e.name).sort());
    expect(names.length).toBeGreaterThan(0);
    const r = nr("bench");
    expect(r.code).toBe(0);
    for (const n of names) expect(r.out).toContain(`  ${n}\n`);
    const bad = nr("bench", `${names[0]}x`);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain(`unknown benchmark "${names[0]}x"; did you mean "${names[0]}"?`);
  });
});

/** Parse in-process (no exit) with the command modules; resolves with what yargs printed and any error. */
function parseWith(args: string[]): Promise<{ output: string; error: string | null }> {
  const y = yargs().scriptName("nr").command(evalCommand).command(generateCommand).command(curateCommand).command(benchCommand).strict().help();
  return new Promise((res) => {
    y.parse(args, {}, (err, _argv, output) => res({ output, error: err ? err.message : null }));
  });
}

describe("the subcommands' yargs definitions", () => {
  it.each(["eval", "generate", "curate", "bench"])("nr %s --help shows its options and an example", async (cmd) => {
    const { output } = await parseWith([cmd, "--help"]);
    expect(output).toContain(`nr ${cmd}`);
    expect(output).toContain("Examples:");
  });

  it("required flags and choices are enforced before anything runs", async () => {
    expect((await parseWith(["eval"])).error).toMatch(/Missing required argument: model/);
    expect((await parseWith(["curate", "--data", "x.jsonl"])).error).toMatch(/Missing required argument: out/);
    expect((await parseWith(["eval", "--model", "m", "--prompt-format", "xml"])).error).toMatch(/Invalid values:[\s\S]*prompt-format/);
    expect((await parseWith(["generate", "--model", "m", "--quant", "int8"])).error).toMatch(/Invalid values:[\s\S]*quant/);
  });
});

describe("runBench", () => {
  it("spawns <benchmarks>/run.mjs with the name and the extra arguments, and passes its exit code through", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nr-bench-"));
    try {
      mkdirSync(join(dir, "fake"));
      writeFileSync(join(dir, "fake", "index.ts"), "");
      mkdirSync(join(dir, "no-index"));
      writeFileSync(join(dir, "run.mjs"), `console.log("ran " + JSON.stringify(process.argv.slice(2)) + " in " + process.cwd()); process.exit(3);`);
      const lines: string[] = [];
      expect(await runBench({}, { log: (l) => lines.push(l), err: () => {} }, { dir })).toBe(0);
      expect(lines.join("\n")).toMatch(/\n {2}fake$/);
      let out = "";
      const code = await runBench({ name: "fake", args: ["--min-ms", 10] }, { log: () => {}, err: () => {} }, { dir, stdio: "pipe", onOutput: (c) => (out += c) });
      expect(code).toBe(3);
      expect(out.trim()).toBe(`ran ["fake","--min-ms","10"] in ${dirname(dir)}`);
      await expect(runBench({ name: "no-index" }, { log: () => {}, err: () => {} }, { dir })).rejects.toThrow(/unknown benchmark "no-index" .*available: fake/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
