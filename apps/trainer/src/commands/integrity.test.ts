// Data and run integrity, on the built `nr` (issue #18): every bad setting or bad input is refused with exit code 2 and
// a message naming the key, file or file:line, before the model loads, and without changing anything on disk; one
// writer per run folder; no run overwritten without --overwrite; --resume with overrides. One miniature real run (on
// 48 GSM8K rows from ../shared) checks the held-out split, the bad-row count, --overwrite and a rescued --resume.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const cli = fileURLToPath(new URL("../../dist/cli.js", import.meta.url));
const MODEL = fileURLToPath(new URL("../../../../models/nr-tiny-math", import.meta.url));
const GSM8K = fileURLToPath(new URL("../../../../../shared/data/gsm8k_train.jsonl", import.meta.url));

const nr = (cwd: string, ...args: string[]) => {
  const r = spawnSync(process.execPath, [cli, ...args], { cwd, encoding: "utf8", timeout: 240_000, env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? "/tmp/xdg" } });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

/** Every file under `dir` with its bytes (as text) and mtime: equal snapshots mean nothing was written. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[relative(dir, p)] = `${statSync(p).mtimeMs} ${readFileSync(p, "latin1")}`;
    }
  };
  if (existsSync(dir)) walk(dir);
  return out;
}

const gsmRow = (q: string, a: number) => JSON.stringify({ question: q, answer: `${q.length} steps\n#### ${a}` });

/** A folder with small datasets of each kind of problem. */
function workdir(): string {
  const dir = mkdtempSync(join(tmpdir(), "nr-integrity-"));
  const rows = Array.from({ length: 12 }, (_, i) => gsmRow(`Question number ${i} about ${i * 7} pencils in a box of ${i + 30}?`, i));
  writeFileSync(join(dir, "good.jsonl"), rows.join("\n") + "\n");
  writeFileSync(join(dir, "malformed_mid.jsonl"), [...rows.slice(0, 5), '{"question": "broken', ...rows.slice(5)].join("\n") + "\n");
  writeFileSync(join(dir, "empty.jsonl"), "");
  writeFileSync(join(dir, "fake.parquet"), "this is not parquet");
  writeFileSync(join(dir, "nofields.jsonl"), '{"foo": 1, "bar": 2}\n');
  writeFileSync(join(dir, "latin1.jsonl"), Buffer.concat([Buffer.from(rows[0] + "\n"), Buffer.from('{"question":"caf'), Buffer.from([0xe9]), Buffer.from(' au lait?","answer":"1\\n#### 1"}\n')]));
  return dir;
}

// Each test works in a fresh folder of datasets (workdir), removed afterwards.
let dir: string;
beforeEach(() => {
  dir = workdir();
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe.skipIf(!existsSync(cli))("nr train refuses bad settings and data before the model loads (built CLI)", () => {
  it("each refusal exits 2 with a message naming the key or file:line, and writes nothing", () => {
    const before = snapshot(dir);
    const cases: [string[], RegExp][] = [
      [["--rl.temperature", "0"], /rl\.temperature = 0 is not allowed: RL samples .* needs a temperature > 0 \(e\.g\. --rl\.temperature 1\)/],
      [["--eval.sampleTemperature", "0", "--rl.temperature", "0"], /2 config problems:[\s\S]*rl\.temperature = 0[\s\S]*eval\.sampleTemperature = 0 is not allowed with eval\.samples = 8/],
      [["--rl.maxNewTokens", "100000"], /rl\.maxNewTokens = 100000 does not fit the model's 512-token context window \(max_position_embeddings in .*nr-tiny-chains\/config\.json\): set at most 511/],
      [["--eval.maxNewTokens", "600"], /eval\.maxNewTokens = 600 does not fit the model's 512-token context window/],
      [["--rl.microBatchRows", "1000"], /rl\.microBatchRows = 1000 exceeds the 64 completions per step/],
      [["--name", ""], /name = "" is not allowed: expected a plain folder name for runs\/<name>: letters, digits/],
      [["--name", "a b"], /name = "a b" is not allowed/],
      [["--data", "good.jsonl", "--data.evalSize", "7"], /data\.evalSize = 7 is too large for data\.source good\.jsonl \(12 usable records; at most half are held out\): set --data\.evalSize 6 or less/],
      [["--data", "malformed_mid.jsonl", "--data.evalSize", "2"], /malformed_mid\.jsonl:6: malformed JSON[\s\S]*\{"question": "broken[\s\S]*--data\.skipBadRows/],
      [["--data", "empty.jsonl"], /data\.source empty\.jsonl: no usable records in .*empty\.jsonl \(the file is empty\)/],
      [["--data", "fake.parquet"], /data\.source fake\.parquet: .*fake\.parquet: not a readable Parquet file/],
      [["--data", "nofields.jsonl"], /nofields\.jsonl: cannot detect the layout from fields \[foo, bar\]; rows need \{question, answer\}/],
      [["--data", "latin1.jsonl"], /latin1\.jsonl:2: invalid UTF-8 at byte offset \d+ \(byte 0xe9\)/],
      [["--data", "missing.jsonl"], /data\.source = "missing\.jsonl" does not exist/],
    ];
    for (const [args, message] of cases) {
      const r = nr(dir, "train", ...args);
      expect(r.code, `${args.join(" ")}\n${r.err}`).toBe(2);
      expect(r.err, args.join(" ")).toMatch(message);
      expect(r.out + r.err, args.join(" ")).not.toMatch(/adapter |pre-flight|eval base/); // refused before the GPU
    }
    expect(snapshot(dir)).toEqual(before);
    expect(existsSync(join(dir, "runs"))).toBe(false);
    // The UTF-8 offset is the file's: the bad byte sits right after the first row, its newline and `{"question":"caf`.
    const r = nr(dir, "train", "--data", "latin1.jsonl");
    const offset = Number(/byte offset (\d+)/.exec(r.err)![1]);
    expect(readFileSync(join(dir, "latin1.jsonl"))[offset]).toBe(0xe9);
  }, 240_000);

  it("an existing run is never overwritten without --overwrite; a locked folder is refused at once naming its holder", () => {
    const run = join(dir, "runs", "kov");
    mkdirSync(join(run, "checkpoints", "step-6"), { recursive: true });
    writeFileSync(join(run, "config.json"), "{}\n");
    writeFileSync(join(run, "metrics.jsonl"), '{"step":1}\n');
    writeFileSync(join(run, "checkpoints", "step-6", "checkpoint.json"), "{}\n");
    let before = snapshot(dir);
    let r = nr(dir, "train", "--name", "kov");
    expect(r.code).toBe(2);
    expect(r.err).toContain(`run folder ${run} already holds a run: pass --resume ${run} to continue it, --overwrite to delete it and start again, or choose another --name`);
    expect(snapshot(dir)).toEqual(before);
    // A live holder (this test process) on this host: refused, nothing touched, its lock kept.
    const lock = { pid: process.pid, host: hostname(), started: "2026-01-01T00:00:00.000Z", command: "nr train --name kov" };
    writeFileSync(join(run, "run.lock"), JSON.stringify(lock));
    before = snapshot(dir);
    for (const args of [["train", "--name", "kov", "--overwrite"], ["train", "--resume", run]]) {
      r = nr(dir, ...args);
      expect(r.code, r.err).toBe(2);
      expect(r.err).toContain(`run folder ${run} is in use by pid ${process.pid} on ${hostname()} (started 2026-01-01T00:00:00.000Z: nr train --name kov)`);
      expect(snapshot(dir)).toEqual(before);
    }
  }, 120_000);

  it("two nr train --name dup at once: one holds the folder, the other is refused at once naming it", async () => {
    const procs = [0, 1].map(() => spawn(process.execPath, [cli, "train", "--name", "dup", "--data", "good.jsonl", "--data.evalSize", "2"], { cwd: dir }));
    const exits = procs.map(
      (p) =>
        new Promise<{ pid: number; code: number | null; signal: NodeJS.Signals | null; err: string }>((res) => {
          let err = "";
          p.stderr!.on("data", (d) => (err += d));
          p.on("exit", (code, signal) => res({ pid: p.pid!, code, signal, err }));
        }),
    );
    const loser = await Promise.race(exits);
    const winner = procs.find((p) => p.pid !== loser.pid)!;
    expect(loser.code, loser.err).toBe(2);
    expect(loser.err).toContain(`run folder ${join(dir, "runs", "dup")} is in use by pid ${winner.pid} on ${hostname()}`);
    // The holder is still running (training); stopping it releases the lock on the way out.
    expect(JSON.parse(readFileSync(join(dir, "runs", "dup", "run.lock"), "utf8")).pid).toBe(winner.pid);
    winner.kill("SIGTERM");
    const w = await exits[procs.indexOf(winner)];
    expect(w.code ?? w.signal).not.toBe(0);
    expect(existsSync(join(dir, "runs", "dup", "run.lock"))).toBe(false);
    expect(JSON.parse(readFileSync(join(dir, "runs", "dup", "config.json"), "utf8")).name).toBe("dup");
  }, 120_000);

  it("--resume: a truncated config.json names its path; unsafe overrides are refused by name; a stale lock is taken over", async () => {
    const run = join(dir, "runs", "pr");
    mkdirSync(run, { recursive: true });
    writeFileSync(join(run, "config.json"), '{"name": "pr", "seed": 0, "mod');
    let r = nr(dir, "train", "--resume", run);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(new RegExp(`${run}/config\\.json is not a valid run config \\(.*JSON.*\\): restore it`));
    r = nr(dir, "train", "--resume", run, "--preset", "qwen2.5-math-1.5b-dr-grpo");
    expect(r.code).toBe(2);
    expect(r.err).toContain("--preset has no effect with --resume");
    // A run saved with rl.temperature 0 (before it was validated); its lock left by a dead process.
    const { DEFAULT_CONFIG } = await import("../run/config.js");
    writeFileSync(join(run, "config.json"), JSON.stringify({ ...DEFAULT_CONFIG, name: "pr", rl: { ...DEFAULT_CONFIG.rl, temperature: 0 } }));
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" }).stdout;
    writeFileSync(join(run, "run.lock"), JSON.stringify({ pid: Number(dead), host: hostname(), started: "2026-01-01T00:00:00.000Z" }));
    const saved = readFileSync(join(run, "config.json"), "utf8");
    r = nr(dir, "train", "--resume", run);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`took over the lock of pid ${dead}`);
    expect(r.err).toMatch(/rl\.temperature = 0 is not allowed[\s\S]*pass the fixed values with --resume, e\.g\. --rl\.temperature 1/);
    r = nr(dir, "train", "--resume", run, "--rl.temperature", "1", "--rl.G", "4", "--sft.lr", "0.001");
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--rl\.G 4: rl\.G cannot change on --resume \(the run so far was trained with 8\)/);
    expect(r.err).toMatch(/--sft\.lr 0\.001: sft\.lr cannot change on --resume/);
    expect(r.err).not.toMatch(/rl\.temperature cannot change/); // it fixes a validation problem: allowed
    expect(readFileSync(join(run, "config.json"), "utf8")).toBe(saved);
    expect(existsSync(join(run, "run.lock"))).toBe(false);
  }, 120_000);
});

describe.skipIf(!existsSync(cli))("other subcommands (built CLI)", () => {
  it("curate, eval and generate refuse an output that is their input (after resolving paths); a single file has no other split", () => {
    mkdirSync(join(dir, "splits"));
    writeFileSync(join(dir, "splits", "train.jsonl"), readFileSync(join(dir, "good.jsonl")));
    writeFileSync(join(dir, "splits", "test.jsonl"), readFileSync(join(dir, "good.jsonl")));
    const before = snapshot(dir);
    let r = nr(dir, "curate", "--data", "good.jsonl", "--out", `../${dir.split("/").pop()}/./good.jsonl`);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--out .*good\.jsonl is the --data file: writing it would replace the input/);
    r = nr(dir, "curate", "--data", "good.jsonl", "--out", "kept.jsonl", "--report", "good.jsonl");
    expect(r.err).toMatch(/--report .*good\.jsonl is the --data file/);
    for (const args of [["eval", "--model", MODEL, "--data", "good.jsonl", "--details", "./good.jsonl"], ["generate", "--model", MODEL, "--data", "good.jsonl", "--out", "good.jsonl"]]) {
      r = nr(dir, ...args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.err).toMatch(/--(details|out) .*good\.jsonl is the --data file/);
    }
    r = nr(dir, "eval", "--model", MODEL, "--data", "good.jsonl", "--out", "same.json", "--details", "same.json");
    expect(r.err).toMatch(/--out and --details name the same file/);
    r = nr(dir, "eval", "--model", MODEL, "--data", "splits");
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--data splits: splits: several splits \(test, train\); pick one with --split NAME/);
    r = nr(dir, "eval", "--model", MODEL, "--data", "good.jsonl", "--split", "test");
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/good\.jsonl: a single file has no split "test" \(its name says "good"\)/);
    // An adapter inside a run whose config.json is truncated: its prompt format cannot be known, so say which file.
    mkdirSync(join(dir, "runs", "t", "best"), { recursive: true });
    writeFileSync(join(dir, "runs", "t", "best", "adapter_config.json"), "{}");
    writeFileSync(join(dir, "runs", "t", "config.json"), '{"name": "t", "da');
    r = nr(dir, "eval", "--model", MODEL, "--adapter", "runs/t/best", "--data", "good.jsonl");
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/runs\/t\/config\.json \(the config of the run this adapter belongs to\) is not valid JSON/);
    rmSync(join(dir, "runs"), { recursive: true });
    r = nr(dir, "curate", "--data", "latin1.jsonl", "--out", "kept.jsonl");
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/latin1\.jsonl:2: invalid UTF-8 at byte offset \d+[\s\S]*--skip-bad-rows/);
    expect(snapshot(dir)).toEqual(before);
    r = nr(dir, "curate", "--data", "latin1.jsonl", "--out", "kept.jsonl", "--skip-bad-rows");
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/1 bad row skipped:\n {2}.*latin1\.jsonl:2: invalid UTF-8/);
    expect(readFileSync(join(dir, "kept.jsonl"), "utf8")).not.toContain("\ufffd");
  }, 120_000);
});

describe.skipIf(!existsSync(cli) || !existsSync(GSM8K))("a miniature nr train on one GSM8K-style file (built CLI, GPU)", () => {
  it("holds out a seeded split never trained on, counts skipped rows, --overwrite replaces, --resume rescues a config", () => {
    // 40 GSM8K rows, 8 of them repeated (exact duplicates across any split must leave train), one malformed row.
    const rows = readFileSync(GSM8K, "utf8").split("\n").slice(0, 40);
    writeFileSync(join(dir, "gsm.jsonl"), [...rows, ...rows.slice(0, 8), "{not json"].join("\n") + "\n");
    const run = join(dir, "runs", "mini");
    mkdirSync(join(run, "checkpoints", "step-99"), { recursive: true });
    writeFileSync(join(run, "metrics.jsonl"), '{"step":99}\n');
    const args = ["train", "--model", MODEL, "--data", "gsm.jsonl", "--data.evalSize", "10", "--data.skipBadRows", "--name", "mini", "--sft.steps", "1", "--sft.warmup", "0", "--sft.batchSize", "4", "--rl.steps", "1", "--rl.G", "2", "--rl.promptsPerStep", "2", "--rl.maxNewTokens", "4", "--eval.n", "2", "--eval.samples", "0", "--eval.every", "0", "--eval.maxNewTokens", "4", "--checkpoint.every", "1"];
    let r = nr(dir, ...args, "--overwrite");
    expect(r.code, r.err + r.out).toBe(0);
    expect(r.out).toContain("data: skipped 1 bad row of");
    expect(r.out).toMatch(/data: dropped \d+ train records? whose question repeats a held-out one/);
    const split = JSON.parse(readFileSync(join(run, "data_split.json"), "utf8"));
    expect(split).toMatchObject({ source: "gsm.jsonl", seed: 0, how: "seeded split of one file" });
    expect(split.eval).toHaveLength(10);
    const heldOut = new Set(split.eval);
    expect(split.train.filter((id: string) => heldOut.has(id))).toEqual([]);
    // No train question equals a held-out question (the 8 repeats sit on both sides unless dropped).
    const question = (id: string) => JSON.parse(readFileSync(join(dir, "gsm.jsonl"), "utf8").split("\n")[Number(id.split(":")[1]) - 1]).question;
    const heldOutQuestions = new Set(split.eval.map(question));
    expect(split.train.filter((id: string) => heldOutQuestions.has(question(id)))).toEqual([]);
    expect(split.train.length + split.eval.length + split.dropped.length).toBe(48);
    // --overwrite removed the old run's files.
    expect(existsSync(join(run, "checkpoints", "step-99"))).toBe(false);
    expect(readFileSync(join(run, "metrics.jsonl"), "utf8")).not.toContain('"step":99');
    // nr eval of the run's adapter on the same file evaluates the held-out records only (unless --include-train).
    const evalArgs = ["eval", "--model", MODEL, "--adapter", "runs/mini/best", "--data", "gsm.jsonl", "--skip-bad-rows", "--max-new-tokens", "2", "--out", "e.json"];
    r = nr(dir, ...evalArgs);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/the adapter's run held 10 records of gsm\.jsonl out \(.*data_split\.json\) and trained on \d+: evaluating 10 held-out ones/);
    expect(r.err).toMatch(/eval: 10 problems from/);
    r = nr(dir, ...evalArgs, "--include-train");
    expect(r.err).toMatch(/warning: \d+ of these 48 problems were trained on by the adapter's run/);
    expect(r.err).toMatch(/eval: 48 problems from/);
    // Same seed, same split: a second run of the same command would split identically (checked on --resume).
    // --resume after a hand edit that breaks the config: refused, then rescued by the override, which is recorded.
    const cfg = JSON.parse(readFileSync(join(run, "config.json"), "utf8"));
    writeFileSync(join(run, "config.json"), JSON.stringify({ ...cfg, rl: { ...cfg.rl, temperature: 0 } }));
    r = nr(dir, "train", "--resume", run, "--rl.temperature", "0.7", "--eval.every", "5");
    expect(r.code, r.err + r.out).toBe(0);
    const resumed = JSON.parse(readFileSync(join(run, "config.json"), "utf8"));
    expect(resumed.rl.temperature).toBe(0.7);
    expect(resumed.resumes).toEqual([{ step: 2, at: expect.any(String), changes: [{ key: "rl.temperature", from: 0, to: 0.7 }, { key: "eval.every", from: 0, to: 5 }] }]);
    expect(r.out).toContain("resume: from step 2: rl.temperature 0 → 0.7, eval.every 0 → 5 (recorded in config.json)");
    // And the finished run is not replaced by the same command without --overwrite.
    const before = snapshot(run);
    r = nr(dir, ...args);
    expect(r.code).toBe(2);
    expect(r.err).toContain("already holds a run");
    expect(snapshot(run)).toEqual(before);
  }, 400_000);
});
