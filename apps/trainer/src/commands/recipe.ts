// `nr recipe list | show NAME | run NAME --model DIR --data DIR [--name N]`: a published recipe (recipes.ts) as one
// command. Each step is an nr command run as its own process (one model in memory at a time); every artefact lands in
// one run folder: curated.jsonl (+ report), <step>/ (nr train runs; best/ is the adapter), eval/<step>.json(l), and
// recipe.json with each step's command, status, seconds and measured training throughput and memory.
import { spawn } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Argv, CommandModule } from "yargs";
import { writeJsonAtomic } from "../run/files.js";
import { closest } from "../run/config/schema.js";
import { consoleIo, type CommandIo } from "./eval.js";
import { RECIPES, withFlags, type Recipe, type RecipeContext, type RecipeStep, type StepKind } from "./recipes.js";
import { UsageError } from "./common.js";

export interface RecipeArgs {
  action: string;
  recipe?: string;
  model?: string;
  data?: string;
  name?: string;
  out: string;
  train?: string;
  eval?: string;
  curate?: string;
  only?: string[];
  resume: boolean;
}

export function findRecipe(name: string | undefined): Recipe {
  const names = RECIPES.map((r) => r.name);
  const r = RECIPES.find((x) => x.name === name);
  if (r) return r;
  const hint = name ? closest(name, names) : undefined;
  throw new UsageError(`${name ? `unknown recipe "${name}"` : "name a recipe"}${hint ? `; did you mean "${hint}"?` : ""} (available: ${names.join(", ")})`);
}

/** Split a flag string ("--n 1 --rl.G=2") into arguments. */
const words = (s: string | undefined) => (s ?? "").trim().split(/\s+/).filter(Boolean).flatMap((w) => (/^--[^=]+=/.test(w) ? [w.slice(0, w.indexOf("=")), w.slice(w.indexOf("=") + 1)] : [w]));

/** A step's nr arguments with the user's extra flags for its kind. */
export function stepArgs(step: RecipeStep, ctx: RecipeContext, extra: Partial<Record<StepKind, string>>): string[] {
  return withFlags(step.args(ctx), words(extra[step.kind]));
}

const quote = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
export const commandLine = (args: readonly string[]) => ["nr", ...args].map(quote).join(" ");

/** The text of `nr recipe show`: what it reproduces, the data it expects, its steps as commands, what differs. */
export function describeRecipe(r: Recipe, ctx: RecipeContext, extra: Partial<Record<StepKind, string>> = {}): string {
  const lines = [`${r.name}: ${r.title}`, `  published (${r.model}): ${r.published}`, `  preset: configs/train/${r.preset}.json`, `  data folder (--data):`];
  for (const f of r.data) lines.push(`    ${f.file}: ${f.fields} — ${f.use}`);
  lines.push("  steps:");
  r.steps.forEach((s, i) => lines.push(`    ${i + 1}. ${s.id}: ${s.what}`, `       ${commandLine(stepArgs(s, ctx, extra))}`));
  if (r.next) lines.push(`  then (not run): ${commandLine(r.next(ctx))}`);
  for (const g of r.gaps) lines.push(`  differs from the publication: ${g}`);
  return lines.join("\n");
}

/** Median tokens/s and peak device memory of an nr train run's phases, from its metrics.jsonl. */
export function trainMeasurements(runDir: string): Record<string, number> {
  const file = join(runDir, "metrics.jsonl");
  if (!existsSync(file)) return {};
  const rows = readFileSync(file, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
  const out: Record<string, number> = {};
  const pick = (phase: string, key: string, as: string, f: (xs: number[]) => number) => {
    const xs = rows.filter((r) => r.phase === phase && typeof r[key] === "number" && Number.isFinite(r[key])).map((r) => r[key] as number);
    if (xs.length) out[as] = f(xs);
  };
  pick("sft", "tokens_per_s", "sft_tokens_per_s", median);
  pick("sft", "gpu_mem_mb", "sft_gpu_mem_mb", (xs) => Math.max(...xs));
  pick("rl", "generate_tokens_per_s", "rl_generate_tokens_per_s", median);
  pick("rl", "train_tokens_per_s", "rl_train_tokens_per_s", median);
  pick("rl", "gpu_mem_mb", "rl_gpu_mem_mb", (xs) => Math.max(...xs));
  return out;
}

export interface StepRecord {
  id: string;
  command: string;
  args: string[];
  status: "pending" | "done" | "failed";
  seconds?: number;
  measured?: Record<string, number>;
}

export interface RecipeRecord {
  recipe: string;
  model: string;
  data: string;
  extra: Partial<Record<StepKind, string>>;
  steps: StepRecord[];
  next?: string;
}

/** Run one nr command as a child process (the same CLI), its output passed through; resolves with the exit code. */
function runNr(args: string[]): Promise<number> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [process.argv[1], ...args], { stdio: "inherit" });
    child.on("error", fail);
    child.on("close", (code, signal) => done(code ?? (signal ? 128 : 1)));
  });
}

function checkInputs(a: RecipeArgs): { model: string; data: string } {
  if (!a.model) throw new UsageError("nr recipe run needs --model DIR (a downloaded HF checkpoint folder)");
  if (!a.data) throw new UsageError("nr recipe run needs --data DIR (the folder holding the files `nr recipe show NAME` lists)");
  const model = resolve(a.model);
  const data = resolve(a.data);
  if (!existsSync(join(model, "config.json"))) throw new UsageError(`--model ${a.model}: no config.json there (expected an HF checkpoint folder)`);
  if (!existsSync(data) || !statSync(data).isDirectory()) throw new UsageError(`--data ${a.data}: not a folder`);
  return { model, data };
}

/** `nr recipe run`: check the data folder, then run the steps in order, recording each in recipe.json. */
export async function runRecipe(a: RecipeArgs, io: CommandIo = consoleIo): Promise<RecipeRecord> {
  const r = findRecipe(a.recipe);
  const { model, data } = checkInputs(a);
  const missing = r.data.filter((f) => !existsSync(join(data, f.file)));
  if (missing.length) throw new UsageError(`--data ${a.data} lacks ${missing.map((f) => `${f.file} (${f.fields})`).join("; ")}: see nr recipe show ${r.name}`);
  const run = resolve(a.out, a.name ?? r.name);
  const recordPath = join(run, "recipe.json");
  const previous = existsSync(recordPath) ? (JSON.parse(readFileSync(recordPath, "utf8")) as RecipeRecord) : null;
  if (previous && !a.resume) throw new UsageError(`${run} already holds a recipe run: pass --resume to continue it (finished steps are skipped) or another --name`);
  if (previous && previous.recipe !== r.name) throw new UsageError(`${run} holds a run of recipe ${previous.recipe}, not ${r.name}`);
  const unknown = (a.only ?? []).filter((id) => !r.steps.some((s) => s.id === id));
  if (unknown.length) throw new UsageError(`--only ${unknown.join(",")}: no such step in ${r.name} (steps: ${r.steps.map((s) => s.id).join(", ")})`);
  const ctx: RecipeContext = { model, data, run };
  const extra = { train: a.train, eval: a.eval, curate: a.curate };
  const record: RecipeRecord = {
    recipe: r.name, model, data, extra,
    steps: r.steps.map((s) => {
      const args = stepArgs(s, ctx, extra);
      const before = previous?.steps.find((p) => p.id === s.id && p.status === "done");
      return before ?? { id: s.id, command: commandLine(args), args, status: "pending" };
    }),
    ...(r.next ? { next: commandLine(r.next(ctx)) } : {}),
  };
  writeJsonAtomic(recordPath, record);
  const todo = record.steps.filter((s) => s.status !== "done" && (!a.only || a.only.includes(s.id)));
  const t0 = performance.now();
  for (const [k, st] of todo.entries()) {
    const step = r.steps.find((s) => s.id === st.id)!;
    // A train step that failed before left its run folder behind; a resumed recipe starts it again.
    const args = step.kind === "train" && existsSync(join(run, step.id)) ? [...st.args, "--overwrite"] : st.args;
    const elapsed = (performance.now() - t0) / 1000;
    const eta = k > 0 ? ` — ~${Math.round((elapsed / k) * (todo.length - k))} s left at this pace` : "";
    io.err(`recipe ${r.name}: step ${k + 1}/${todo.length} ${st.id} (${elapsed.toFixed(0)} s so far${eta})\n  ${commandLine(args)}`);
    const ts = performance.now();
    const code = await runNr(args);
    st.seconds = (performance.now() - ts) / 1000;
    st.status = code === 0 ? "done" : "failed";
    if (step.kind === "train") st.measured = trainMeasurements(join(run, step.id));
    writeJsonAtomic(recordPath, record);
    if (code !== 0) throw new Error(`recipe ${r.name}: step ${st.id} failed (exit ${code}); fix it and continue with --resume (record: ${recordPath})`);
  }
  io.log(`recipe ${r.name}: ${record.steps.filter((s) => s.status === "done").length}/${record.steps.length} steps done in ${((performance.now() - t0) / 1000).toFixed(0)} s → ${run} (recipe.json)`);
  if (record.next) io.log(`next: ${record.next}`);
  return record;
}

export const recipeCommand: CommandModule<object, RecipeArgs> = {
  command: "recipe <action> [recipe]",
  describe: "A published recipe as one command: list, show NAME (data and steps), run NAME --model DIR --data DIR",
  builder: (y) =>
    y
      .positional("action", { choices: ["list", "show", "run"], describe: "list the recipes, show one's data and commands, or run it" })
      .positional("recipe", { type: "string", describe: `one of ${RECIPES.map((r) => r.name).join(", ")}` })
      .option("model", { type: "string", describe: "HF checkpoint folder (for show: fills the printed commands)" })
      .option("data", { type: "string", describe: "folder holding the files the recipe lists (see show)" })
      .option("name", { type: "string", describe: "run folder name under --out (default: the recipe's name)" })
      .option("out", { type: "string", default: "runs", describe: "parent folder of the run folder" })
      .option("train", { type: "string", describe: 'extra flags for every training step, written with "=": --train="--rl.steps 50 --eval.n 100"' })
      .option("eval", { type: "string", describe: 'extra flags for every eval step (replacing the step\'s own): --eval="--n 200"' })
      .option("curate", { type: "string", describe: 'extra flags for the curation step: --curate="--n 2000 --embedder DIR"' })
      .option("only", { type: "string", array: true, describe: "run only these step ids" })
      .option("resume", { type: "boolean", default: false, describe: "continue a recipe run: finished steps (recipe.json) are skipped" })
      .example("$0 recipe show nexus-lpro", "the data it expects and the commands it runs")
      .example("$0 recipe run nexus-lpro --model ~/Qwen2.5-Math-1.5B-Instruct --data ~/data", "curate, LPRO, evals into runs/nexus-lpro") as unknown as Argv<RecipeArgs>,
  handler: async (a) => {
    if (a.action === "list") {
      for (const r of RECIPES) console.log(`${r.name.padEnd(14)} ${r.title}\n${"".padEnd(14)} published: ${r.published}`);
      return;
    }
    const r = findRecipe(a.recipe);
    if (a.action === "show") {
      console.log(describeRecipe(r, { model: a.model ?? "MODEL", data: a.data ?? "DATA", run: resolve(a.out, a.name ?? r.name) }, { train: a.train, eval: a.eval, curate: a.curate }));
      return;
    }
    await runRecipe(a);
  },
};
