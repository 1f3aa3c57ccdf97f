// `nr train`: model → (eval base) → SFT cold start → (eval) → RL with periodic eval → (eval) → summary + report, into
// runs/<name>/. Every `checkpoint.every` steps the whole trainer state is written atomically; `--resume` continues
// from the latest checkpoint and ends with the same bytes as an uninterrupted run (data order and sampling seeds are
// functions of (seed, step), so the counters are the RNG state). Guards: a non-finite loss or gradient skips the
// step; `guards.maxBadSteps` of them in a row roll back to the last good state; a pre-flight pass at the longest
// sequence length checks GPU memory before step 1.
// This file composes the phases: prepare.ts (checks before the GPU), the GPU session below, keeper.ts (state,
// checkpoints, guard, best/), run-eval.ts (held-out eval), sft-phase.ts, rl-phase.ts, then the summary.
import { resolve } from "node:path";
import { AdamW, type Tensor } from "@nr/autograd";
import type { LoraConfig, LoraTarget } from "@nr/lora";
import { openGpuSession, type GpuSession } from "../gpu-session.js";
import { writeReport, type Override, type TrainConfig } from "../run/index.js";
import { pct } from "./eval-lines.js";
import { grader } from "./grading.js";
import { preflight, trainKvCheck } from "./preflight.js";
import { prepareRun, type PreparedRun } from "./prepare.js";
import { Critic } from "./critic.js";
import { openRemoteRollout, takeRolloutKey } from "./remote-rollout.js";
import { addPolicyAdapter } from "./start-adapter.js";
import { startRunTir, type TirSandbox } from "./tir.js";
import { RunKeeper } from "./keeper.js";
import { runEvaluator } from "./run-eval.js";
import { runSftPhase } from "./sft-phase.js";
import { runAlgo, runRlPhase } from "./rl-phase.js";
import type { TrainSession } from "./session.js";
import type { EvalRecord } from "./state.js";

export interface PipelineResult {
  runDir: string;
  summary: Record<string, unknown>;
}

export interface PipelineOptions {
  cwd?: string;
  log?: (line: string) => void;
  /** Continue the run in this folder from its latest checkpoint (its config.json is used). */
  resumeDir?: string;
  /** With resumeDir: settings to change from here on (see run/resume.ts: only those safe mid-run, or fixing the config). */
  overrides?: readonly Override[];
  /** Replace an existing run of the same name (its folder's contents are deleted once the new run passes its checks). */
  overwrite?: boolean;
}

export { taskTokenizerWords } from "./prepare.js";

/**
 * Test hook: NR_INJECT_NAN="sft:3,rl:2" poisons the gradient of those (1-based, per phase) steps (the update is
 * skipped); "sft:3!" poisons the adapter weights before that step (every later step fails until a rollback).
 */
function injectedNanSteps(): Set<string> {
  return new Set((process.env.NR_INJECT_NAN ?? "").split(",").map((s) => s.trim()).filter(Boolean));
}

/**
 * Run `nr train`. With `resumeDir`, `configIn` is ignored (the run's config.json, with `opts.overrides` where allowed).
 * Every check that needs no GPU (config, data, split, tokens vs context window) runs before the run folder of a new
 * run is created and before the model is loaded.
 */
export async function runPipeline(configIn: TrainConfig | null, opts: PipelineOptions = {}): Promise<PipelineResult> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const cwd = opts.cwd ?? process.cwd();
  const t0 = performance.now();
  // The rollout servers' API key never reaches config.json.
  const rolloutKey = takeRolloutKey(configIn, opts.overrides);
  [configIn, opts] = [rolloutKey.config, { ...opts, overrides: rolloutKey.overrides }];
  const prepared = await prepareRun(configIn, opts, cwd, log);
  const { config, modelDir, inputs } = prepared;
  // QLoRA: with model.quant "nf4" the seven linear weights of every layer are quantised on the GPU at load (double
  // quantisation of the scales with model.doubleQuant) and stay frozen in 4 bits; LoRA trains on top of them.
  // the generation KV caches are checked against the adapter's binding limit before the weights load
  const beforeLoad = trainKvCheck(config, inputs.encodePrompt, prepared.data.train, prepared.data.heldout);
  const session: GpuSession = await openGpuSession({ modelDir, quant: config.model.quant, doubleQuant: config.model.doubleQuant, dtype: config.model.dtype, tokenizer: inputs.tok, beforeLoad });
  let tir: TirSandbox | null = null; // data.prompt tir: the sandbox that runs the completions' python blocks
  try {
    const { gpu, engine, decoder, generator: gen } = session;
    const lora = session.lora();
    const loraCfg: LoraConfig = { r: config.lora.r, alpha: config.lora.alpha, dropout: config.lora.dropout, targets: config.lora.targets as LoraTarget[], seed: config.seed };
    const policyParams = await addPolicyAdapter(lora, loraCfg, config.model.adapter && resolve(cwd, config.model.adapter), log);
    const remote = openRemoteRollout(config, { runDir: prepared.run.dir, baseModel: config.model.dir ?? modelDir, apiKey: rolloutKey.apiKey, stopTokenIds: inputs.tok.stopTokenIds, log });
    if (inputs.promptStyle === "tir") tir = await startRunTir(gen, remote !== null, log);
    const { grade, name: graderName } = await grader();
    log(`adapter ${gpu.adapterName}; base ${config.model.quant === "nf4" ? `NF4${config.model.doubleQuant ? " (double-quantised scales)" : ""}` : config.model.dtype}; verifier: ${graderName}; ${lora.parameterCount("policy")} trainable LoRA parameters; prompts: ${inputs.promptStyle}`);

    const sftOpt = new AdamW(policyParams, { lr: config.sft.lr, weightDecay: 0 });
    const algo = runAlgo({ config });
    const critic = algo.value.coef > 0 ? new Critic(lora, decoder, { ...loraCfg, seed: config.seed + 1 }) : undefined;
    const rlParams: Tensor[] = [...policyParams, ...(critic?.params ?? [])];
    const rlOpt = new AdamW(rlParams, { lr: config.rl.lr, weightDecay: 0 });
    const keeper = new RunKeeper({ run: prepared.run, config, lora, baseModel: config.model.dir ?? modelDir, log, t0, sft: { tensors: policyParams, optimizer: sftOpt }, rl: { tensors: rlParams, optimizer: rlOpt } });
    if (prepared.resumeFrom) await keeper.resume(prepared.resumeFrom);
    keeper.startClock();
    const evaluate = runEvaluator({ config, run: prepared.run, lora, gen, grade, encodePrompt: inputs.encodePrompt, problems: prepared.data.heldout.slice(0, config.eval.n), step: () => keeper.state.step, log });
    const s: TrainSession = { config, run: prepared.run, log, keeper, gpu, engine, decoder, lora, gen, inputs, train: prepared.data.train, policyParams, nanAt: injectedNanSteps(), evaluate };

    await beforeTraining(s);
    await runSftPhase(s, sftOpt);
    if (keeper.state.evalBefore === null) keeper.state.evalBefore = keeper.state.evalBase;
    await runRlPhase(s, { opt: rlOpt, algo, critic, remote, tir });
    await finishRun(s);
    return summarize(s, prepared, graderName);
  } finally {
    await tir?.close(); // logs the run's tool-call counts
    session.close();
  }
}

/** Pre-flight at the longest sequences of each phase (before step 1), the base model's eval, the first rollback target. */
async function beforeTraining(s: TrainSession): Promise<void> {
  const { keeper, lora, inputs } = s;
  if (keeper.state.step === 0) {
    const rlPromptLen = Math.max(1, ...s.train.slice(0, 256).map((r) => inputs.encodePrompt(r.problem).length));
    await preflight({ gpu: s.gpu, engine: s.engine, decoder: s.decoder, lora, config: s.config, sftExamples: inputs.sftExamples, rlPromptLen, pad: inputs.pad, log: s.log });
  }
  if (keeper.state.evalBase === null) keeper.state.evalBase = await lora.withAdapter(null, () => s.evaluate("base (no adapter)"));
  lora.select("policy");
  await keeper.markGood(true);
}

/** The "after RL" eval, best/ (the final adapter wins ties: it is the one trained longest), the last checkpoint. */
async function finishRun(s: TrainSession): Promise<void> {
  const { keeper, config } = s;
  const state = keeper.state;
  if (state.phase === "done") return;
  state.evalAfter = config.rl.enabled && config.rl.steps > 0 ? await s.evaluate("after RL") : state.evalBefore;
  if (state.evalAfter && (!state.best || state.evalAfter.accuracy >= state.best.accuracy)) await keeper.saveBest(state.evalAfter.accuracy);
  state.phase = "done";
  await keeper.checkpoint(true);
}

/** summary.json, report.html and the closing lines. */
async function summarize(s: TrainSession, prepared: PreparedRun, verifier: string): Promise<PipelineResult> {
  const { config, keeper, run, log } = s;
  const state = keeper.state;
  const ev = (r: EvalRecord | null) => (r ? { accuracy: r.accuracy, n: r.n, thinking_rate: r.thinkingRate, correct_length: r.correctLength, ...(r.samples ? { samples: r.samples, avg_at_k: r.avgAtK, pass_at_k: r.passAtK, sample_temperature: config.eval.sampleTemperature } : {}) } : null);
  const summary = {
    wall_seconds: keeper.elapsed(),
    eval_base: ev(state.evalBase),
    eval_before: ev(state.evalBefore),
    eval_after: ev(state.evalAfter),
    algo: config.rl.algo,
    steps: state.step,
    sft_steps: state.sftStep,
    rl_steps: state.rlStep,
    evals: state.evals,
    best: state.best,
    rollbacks: state.rollbacks,
    resumed: prepared.resumeFrom !== null,
    verifier,
    adapter: s.gpu.adapterName,
  };
  run.writeSummary(summary);
  await writeReport(run.dir);
  run.close();
  log(`done in ${summary.wall_seconds.toFixed(0)} s → ${run.dir} (report.html, metrics.jsonl, samples.jsonl, summary.json)`);
  log(`held-out accuracy: base ${pct(state.evalBase)} → after SFT ${pct(state.evalBefore)} → after RL ${pct(state.evalAfter)}`);
  return { runDir: run.dir, summary };
}
