// `nr train`: model → (eval base) → SFT cold start → (eval) → RL with periodic eval → (eval) → summary + report, into
// runs/<name>/. Every `checkpoint.every` steps the whole trainer state is written atomically; `--resume` continues
// from the latest checkpoint and ends with the same bytes as an uninterrupted run (data order and sampling seeds are
// functions of (seed, step), so the counters are the RNG state). Guards: a non-finite loss or gradient skips the
// step; `guards.maxBadSteps` of them in a row roll back to the last good state; a pre-flight pass at the longest
// sequence length checks GPU memory before step 1.
import { join, resolve } from "node:path";
import { createGpu } from "@nr/kernels";
import { AdamW, Engine, GpuBackend, learningRate, type Tensor } from "@nr/autograd";
import { loadDecoder } from "@nr/model";
import { LoraModel, savePeftAdapter, type LoraConfig, type LoraTarget } from "@nr/lora";
import { WebGpuGenerator } from "@nr/rollout";
import { preset, type AlgoName, type AlgoOverrides } from "@nr/algos";
import { mathReward } from "@nr/rewards";
import { ProgressBar, thinks } from "@nr/data";
import { writeReport, type Override, type TrainConfig } from "../run/index.js";
import { describeEval, pct } from "./eval-lines.js";
import { grader, isCorrect } from "./grading.js";
import { preflight } from "./preflight.js";
import { prepareRun } from "./prepare.js";
import { rlMaxNewTokens, sftSchedule, stageIndexAt } from "./schedule.js";
import { Critic, rlStep, seededPermutation, sftStep, type RlPrompt, type SftExampleIds } from "./loop.js";
import { openRemoteRollout, takeRolloutKey, withSamplerCorrection } from "./remote-rollout.js";
import { addPolicyAdapter } from "./start-adapter.js";
import { startRunTir, tirMetrics, type TirSandbox } from "./tir.js";
import { initialState, readTrainerStateJson, readTrainerTensors, restoreTensor, writeTrainerState, type EvalRecord, type TensorGroup, type TrainerState } from "./state.js";

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
  const { run, config, resumeFrom, data, modelDir, inputs } = await prepareRun(configIn, opts, cwd, log);
  const runDir = run.dir;
  const nanAt = injectedNanSteps();
  const { tok, promptStyle, encodePrompt, pad, eos, sftRecords, noThinkTargets } = inputs;
  const sftExamples: SftExampleIds[] = inputs.sftExamples;
  const { train, heldout } = data;

  const gpu = await createGpu();
  let tir: TirSandbox | null = null; // data.prompt tir: the sandbox that runs the completions' python blocks
  try {
    const engine = new Engine(new GpuBackend(gpu));
    // QLoRA: with model.quant "nf4" the seven linear weights of every layer are quantised on the GPU at load (double
    // quantisation of the scales with model.doubleQuant) and stay frozen in 4 bits; LoRA trains on top of them.
    const { decoder } = await loadDecoder(engine, modelDir, { quant: config.model.quant, doubleQuant: config.model.doubleQuant, dtype: config.model.dtype });
    const lora = new LoraModel(decoder);
    const loraCfg: LoraConfig = { r: config.lora.r, alpha: config.lora.alpha, dropout: config.lora.dropout, targets: config.lora.targets as LoraTarget[], seed: config.seed };
    const policyParams = await addPolicyAdapter(lora, loraCfg, config.model.adapter && resolve(cwd, config.model.adapter), log);
    const gen = new WebGpuGenerator(engine, decoder, tok);
    const remote = openRemoteRollout(config, { runDir, baseModel: config.model.dir ?? modelDir, apiKey: rolloutKey.apiKey, stopTokenIds: tok.stopTokenIds, log });
    if (promptStyle === "tir") tir = await startRunTir(gen, remote !== null, log);
    const { grade, name: graderName } = await grader();
    log(`adapter ${gpu.adapterName}; base ${config.model.quant === "nf4" ? `NF4${config.model.doubleQuant ? " (double-quantised scales)" : ""}` : config.model.dtype}; verifier: ${graderName}; ${lora.parameterCount("policy")} trainable LoRA parameters; prompts: ${promptStyle}`);

    const evalSet = heldout.slice(0, config.eval.n);

    // ---- state: fresh, or from the latest checkpoint
    let state: TrainerState = initialState();
    const sftOpt = new AdamW(policyParams, { lr: config.sft.lr, weightDecay: 0 });
    const algo = preset(config.rl.algo as AlgoName, config.rl.algoConfig as AlgoOverrides | undefined, "rl.algoConfig");
    const usesCritic = algo.value.coef > 0;
    const critic = usesCritic ? new Critic(lora, decoder, { ...loraCfg, seed: config.seed + 1 }) : undefined;
    const rlParams: Tensor[] = [...policyParams, ...(critic?.params ?? [])];
    const rlOpt = new AdamW(rlParams, { lr: config.rl.lr, weightDecay: 0 });
    const groups = (): TensorGroup[] => {
      const g: TensorGroup[] = state.phase === "sft" ? [{ name: "policy", tensors: policyParams, optimizer: sftOpt }] : [{ name: "rl", tensors: rlParams, optimizer: rlOpt }];
      if (state.reference) g.push({ name: "reference", tensors: lora.parameters(state.reference) });
      return g;
    };
    const ensureReference = async () => {
      // π_ref after an SFT cold start (or from model.adapter) is that adapter (a frozen copy), else the bare base.
      if (state.reference === null && (config.sft.enabled || config.model.adapter !== undefined)) {
        await lora.copyAdapter("policy", "reference");
        state.reference = "reference";
      }
      lora.select("policy");
    };
    if (resumeFrom) {
      const saved = readTrainerStateJson(resumeFrom);
      state = { ...saved };
      if (state.reference) await lora.copyAdapter("policy", state.reference);
      await readTrainerTensors(resumeFrom, groups(), saved.optimizers);
      if (saved.dropout) lora.setDropoutState(saved.dropout);
      lora.select("policy");
      log(`resumed at step ${state.step} (${state.phase}, SFT ${state.sftStep}, RL ${state.rlStep})`);
    }
    const wallSoFar = state.elapsedSeconds;
    const elapsed = () => wallSoFar + (performance.now() - t0) / 1000;

    // Last good state for the NaN guard: host copies of the current groups (refreshed at every checkpoint).
    type Snapshot = { values: Float32Array[][]; opt: Awaited<ReturnType<AdamW["state"]>>[] };
    let lastGood: Snapshot | null = null;
    const snapshot = async (): Promise<Snapshot> => {
      const gs = groups().filter((g) => g.optimizer);
      return { values: await Promise.all(gs.map(async (g) => Promise.all(g.tensors.map(async (t) => Float32Array.from(await t.read()))))), opt: await Promise.all(gs.map((g) => g.optimizer!.state())) };
    };
    const restore = (s: Snapshot) => {
      const gs = groups().filter((g) => g.optimizer);
      gs.forEach((g, i) => {
        g.tensors.forEach((t, j) => restoreTensor(t, s.values[i][j]));
        g.optimizer!.loadState(s.opt[i]);
      });
    };
    /** Count a skipped step; after maxBadSteps in a row, go back to the last good state. */
    const guard = async (skipped: boolean, what: string) => {
      if (!skipped) {
        state.badStreak = 0;
        return;
      }
      state.badStreak++;
      log(`guard: non-finite loss or gradient at ${what}: update skipped (${state.badStreak}/${config.guards.maxBadSteps} in a row)`);
      if (state.badStreak >= config.guards.maxBadSteps && lastGood) {
        restore(lastGood);
        state.rollbacks++;
        state.badStreak = 0;
        log(`guard: ${config.guards.maxBadSteps} bad steps in a row — rolled back the adapter and optimizer to the last good state (rollback #${state.rollbacks}); training continues with the next data`);
      }
    };

    const checkpoint = async (force = false) => {
      const every = config.checkpoint.every;
      if (!force && !(every > 0 && state.step > 0 && state.step % every === 0)) return;
      state.elapsedSeconds = elapsed();
      state.dropout = lora.dropoutState();
      await run.saveCheckpoint(
        state.step,
        async (tmp) => {
          await savePeftAdapter(lora, "policy", join(tmp, "adapter"), { baseModel: config.model.dir ?? modelDir });
          await writeTrainerState(tmp, state, groups());
        },
        { keepLast: config.checkpoint.keepLast, meta: { step: state.step, phase: state.phase } },
      );
      if (state.badStreak === 0) lastGood = await snapshot(); // never take a failing state as the rollback target
    };

    // best/ always holds the adapter state.best names.
    const saveBest = async (accuracy: number) => {
      const dir = join(runDir, "best");
      await savePeftAdapter(lora, "policy", dir, { baseModel: config.model.dir ?? modelDir });
      state.best = { step: state.step, accuracy, dir };
    };
    // Greedy pass@1 (eval.temperature), and with eval.samples = k also k samples per problem at eval.sampleTemperature:
    // avg@k (the sampled pass@1 that R1-style reports quote) and pass@k. Fixed seeds: every eval draws the same way.
    const evaluate = async (label: string): Promise<EvalRecord> => {
      lora.setTraining(false);
      const k = config.eval.samples;
      let correct = 0, sampledCorrect = 0, solved = 0, thinking = 0;
      const bar = new ProgressBar({ total: evalSet.length, label: `eval ${label}`, unit: "problems" });
      const chunk = 32;
      for (let i = 0; i < evalSet.length; i += chunk) {
        const part = evalSet.slice(i, i + chunk);
        const prompts = part.map((r) => encodePrompt(r.problem));
        const out = await gen.generateIds(prompts.map((promptIds) => ({ promptIds, n: 1 })), { temperature: config.eval.temperature, maxNewTokens: config.eval.maxNewTokens, seed: config.seed });
        for (let j = 0; j < part.length; j++) {
          if (isCorrect(await grade(out[j][0].text, part[j].answer))) correct++;
          if (thinks(out[j][0].text)) thinking++;
        }
        if (k > 0) {
          const sampled = await gen.generateIds(prompts.map((promptIds) => ({ promptIds, n: k })), { temperature: config.eval.sampleTemperature, topP: 1, maxNewTokens: config.eval.maxNewTokens, seed: config.seed + 1 + i });
          for (let j = 0; j < part.length; j++) {
            let c = 0;
            for (const s of sampled[j]) if (isCorrect(await grade(s.text, part[j].answer))) c++;
            sampledCorrect += c;
            if (c > 0) solved++;
          }
        }
        bar.tick(part.length);
      }
      bar.finish();
      const n = evalSet.length;
      const rec: EvalRecord = { step: state.step, label, accuracy: n ? correct / n : 0, n, thinkingRate: n ? thinking / n : 0 };
      if (k > 0) Object.assign(rec, { samples: k, avgAtK: n ? sampledCorrect / (n * k) : 0, passAtK: n ? solved / n : 0 });
      log(`eval ${label}: ${describeEval(rec, config.eval.sampleTemperature)} on ${n} held-out problems`);
      run.logMetrics({ step: state.step, phase: "eval", eval_accuracy: rec.accuracy, eval_thinking_rate: rec.thinkingRate, ...(k > 0 ? { eval_avg_at_k: rec.avgAtK, eval_pass_at_k: rec.passAtK, eval_samples: k } : {}), eval_label: label, eval_n: n });
      return rec;
    };

    const gpuMemMiB = () => gpu.pool.getStats().peakAllocatedBytes / 2 ** 20;

    // ---- pre-flight: one forward + backward at the longest sequences of each phase, before step 1
    if (state.step === 0) await preflight({ gpu, engine, decoder, lora, config, sftExamples, rlPromptLen: Math.max(1, ...train.slice(0, 256).map((r) => encodePrompt(r.problem).length)), pad, log });

    if (state.evalBase === null) state.evalBase = await lora.withAdapter(null, () => evaluate("base (no adapter)"));
    lora.select("policy");
    if (!lastGood) lastGood = await snapshot();

    // ---- SFT: masked completion loss, length-bucketed batches, schedule with warm-up, gradient accumulation
    const bs = config.sft.batchSize, accum = config.sft.gradAccum;
    const perStep = bs * accum;
    const { perEpoch, total: sftTotal } = sftSchedule(config, sftExamples.length);
    if (config.sft.enabled && sftExamples.length === 0) throw new Error(`sft: no usable examples (records need a solution and must fit sft.maxSeqLen = ${config.sft.maxSeqLen} tokens)`);
    const epochOrder = new Map<number, number[]>();
    const sftBatch = (s: number): SftExampleIds[][] => {
      const epoch = Math.floor(s / perEpoch);
      let order = epochOrder.get(epoch);
      if (!order) {
        // Shuffle, then sort by length inside windows of 8 steps: similar lengths share a batch (less padding).
        const p = seededPermutation(sftExamples.length, config.seed * 7_919 + epoch);
        const win = perStep * 8;
        order = [];
        for (let i = 0; i < p.length; i += win) order.push(...p.slice(i, i + win).sort((a, b) => sftExamples[a].promptIds.length + sftExamples[a].completionIds.length - (sftExamples[b].promptIds.length + sftExamples[b].completionIds.length)));
        epochOrder.set(epoch, order);
      }
      const start = (s % perEpoch) * perStep;
      const ex = order.slice(start, start + perStep).map((i) => sftExamples[i]);
      return Array.from({ length: accum }, (_, k) => ex.slice(k * bs, (k + 1) * bs)).filter((mb) => mb.length > 0);
    };
    if (state.phase === "sft") {
      if (sftTotal > 0) {
        if (noThinkTargets > 0) log(`sft: hybrid-thinking cold start: ${noThinkTargets} of ${sftRecords.length} targets answer without reasoning (empty <think></think>; sft.noThinkFraction ${config.sft.noThinkFraction})`);
        const bar = new ProgressBar({ total: sftTotal, label: "sft", unit: "steps" });
        bar.tick(state.sftStep);
        while (state.sftStep < sftTotal) {
          const s = state.sftStep;
          const lr = learningRate({ kind: config.sft.schedule, lr: config.sft.lr, warmupSteps: config.sft.warmup, totalSteps: sftTotal }, s);
          const ts = performance.now();
          gpu.pool.resetPeak();
          if (nanAt.has(`sft:${s + 1}!`)) poison(policyParams[0]);
          lora.setTraining(true);
          const st = await sftStep(engine, decoder, sftOpt, sftBatch(s), { lr, clipGradNorm: 1, pad, checkpoint: config.sft.checkpointing, injectNan: nanAt.has(`sft:${s + 1}`) });
          lora.setTraining(false);
          const secs = (performance.now() - ts) / 1000;
          state.sftStep++;
          state.step++;
          run.logMetrics({ step: state.step, phase: "sft", loss: st.loss, grad_norm: st.gradNorm, lr, tokens: st.tokens, tokens_per_s: st.tokens / secs, gpu_mem_mb: gpuMemMiB(), skipped: st.skipped, time: elapsed() });
          bar.tick(1, `loss ${st.loss.toFixed(3)}`);
          await guard(st.skipped, `SFT step ${state.sftStep}`);
          await checkpoint();
        }
        bar.finish();
      }
      state.phase = "rl";
      state.evalBefore = config.sft.enabled ? await evaluate("after SFT") : config.model.adapter !== undefined ? await evaluate("start adapter") : state.evalBase;
      await ensureReference();
      lastGood = await snapshot();
    }
    if (state.evalBefore === null) state.evalBefore = state.evalBase;

    // ---- RL
    if (state.phase === "rl" && config.rl.enabled && config.rl.steps > 0) {
      await ensureReference();
      const order = seededPermutation(train.length, config.seed * 104_729 + 1);
      let cursor = state.rlStep * config.rl.promptsPerStep; // refills (dynamic sampling) read from a separate stream
      const take = (n: number): RlPrompt[] => {
        const out: RlPrompt[] = [];
        for (let k = 0; k < n && train.length > 0; k++) {
          const r = train[order[cursor++ % train.length]];
          out.push({ promptIds: encodePrompt(r.problem), gold: r.answer, problem: r.problem });
        }
        return out;
      };
      // @nr/rewards owns the reward: correctness, and the format flag LPRO / GRPO-LEAD read (non-empty reasoning, then a box)
      const reward = async (text: string, gold: string) => mathReward(text, gold);
      const dyn = config.rl.dynamicSampling ? { ...algo, dynamicSampling: { ...algo.dynamicSampling, enabled: true } } : algo;
      const bar = new ProgressBar({ total: config.rl.steps, label: "rl", unit: "steps" });
      bar.tick(state.rlStep);
      while (state.rlStep < config.rl.steps) {
        const s = state.rlStep;
        cursor = s * config.rl.promptsPerStep;
        const batch = take(config.rl.promptsPerStep);
        // Refills come from a stream of their own (offset by the step) so the main cursor stays a function of the step.
        let refill = 0;
        const more = (n: number) => {
          const saved = cursor;
          cursor = train.length * 1000 + s * 7_919 + refill;
          const out = take(n);
          refill += n;
          cursor = saved;
          return out;
        };
        state.stage = Math.max(state.stage, stageIndexAt(config, s));
        const maxNew = rlMaxNewTokens(config, state.stage);
        gpu.pool.resetPeak();
        if (nanAt.has(`rl:${s + 1}!`)) poison(policyParams[0]);
        await remote?.publish(lora, "policy", s);
        const st = await rlStep(engine, decoder, lora, rlOpt, remote ?? gen, batch, {
          algo: withSamplerCorrection(dyn, config, remote),
          samplerCorrection: remote !== null && (config.rl.rollout?.tisCap ?? 0) > 0,
          G: config.rl.G,
          temperature: config.rl.temperature,
          topP: config.rl.topP,
          maxNewTokens: maxNew,
          lr: config.rl.lr,
          clipGradNorm: config.rl.clipGradNorm,
          ppoEpochs: config.rl.ppoEpochs,
          miniBatches: config.rl.miniBatches,
          microBatchRows: config.rl.microBatchRows,
          seed: config.seed * 100_003 + s,
          pad,
          eos,
          reward,
          checkpoint: config.sft.checkpointing,
          reference: state.reference,
          critic,
          morePrompts: more,
          injectNan: nanAt.has(`rl:${s + 1}`),
        });
        state.rlStep++;
        state.step++;
        const problems = [...batch];
        run.logMetrics({
          step: state.step, phase: "rl", loss: st.loss, reward: st.rewardMean, reward_std: st.rewardStd, accuracy: st.accuracy, response_length: st.responseLengthMean,
          response_length_max: st.responseLengthMax, truncation_rate: st.truncationRate, thinking_rate: st.thinkingRate, frac_zero_std: st.fracZeroStdGroups, clip_frac: st.clipRatio,
          entropy: st.entropy, kl: st.kl, logp_mismatch: st.logpMismatch, grad_norm: st.gradNorm, lr: config.rl.lr, max_new_tokens: maxNew,
          groups_kept: st.groupsKept, prompts_used: st.promptsUsed, generate_ms: st.generateMs, train_ms: st.trainMs,
          generate_tokens_per_s: st.generatedTokens / Math.max(1e-3, st.generateMs / 1000), train_tokens_per_s: st.trainTokens / Math.max(1e-3, st.trainMs / 1000),
          gpu_mem_mb: gpuMemMiB(), skipped: st.skipped, time: elapsed(),
          ...(st.extra["value/explained_var"] !== undefined ? { value_loss: st.extra["loss/value"], value_explained_var: st.extra["value/explained_var"] } : {}),
          ...remote?.stepStats(),
          ...tirMetrics(tir, st.extra),
        });
        for (const smp of st.samples) {
          const p: Partial<RlPrompt> = problems[smp.prompt] ?? {};
          run.logSample({ step: state.step, phase: "rl", prompt: p.problem, completion: smp.text, gold: p.gold, reward: smp.reward, correct: smp.correct, advantage: smp.advantage, response_length: smp.length, finish_reason: smp.finishReason });
        }
        bar.tick(1, `reward ${st.rewardMean.toFixed(2)} acc ${(100 * st.accuracy).toFixed(0)}%`);
        log(`rl step ${state.rlStep}/${config.rl.steps}: reward ${st.rewardMean.toFixed(3)} acc ${(100 * st.accuracy).toFixed(0)}% len ${st.responseLengthMean.toFixed(1)} think ${(100 * st.thinkingRate).toFixed(0)}% trunc ${(100 * st.truncationRate).toFixed(0)}% loss ${st.loss.toFixed(4)} |g| ${st.gradNorm.toFixed(3)} kl ${st.kl.toFixed(4)} (${(st.generateMs / 1000).toFixed(1)} s gen${remote ? ` on ${remote.stepStats().rollout_servers_live} servers, |Δlogp| ${st.logpMismatch.toExponential(1)}` : ""}, ${(st.trainMs / 1000).toFixed(1)} s train)`);
        if (st.truncationRate > 0.5) log(`warning: ${(100 * st.truncationRate).toFixed(0)}% of completions hit max_new_tokens (${maxNew}): raise rl.maxNewTokens or add rl.lengthStages`);
        if (st.fracZeroStdGroups > 0.8) log(`warning: ${(100 * st.fracZeroStdGroups).toFixed(0)}% of groups have zero reward spread (no learning signal): the task is too hard or too easy for the model, or G is too small`);
        if (st.noSignal) log(`rl step ${state.rlStep}: dynamic sampling kept no group — no update this step`);
        const th = config.rl.lengthStageTruncation;
        if (th > 0 && st.truncationRate > th && state.stage + 1 < config.rl.lengthStages.length) {
          state.stage++;
          log(`length curriculum: truncation ${(100 * st.truncationRate).toFixed(0)}% > ${(100 * th).toFixed(0)}% — advancing to stage ${state.stage + 1} (max_new_tokens ${config.rl.lengthStages[state.stage]})`);
        }
        await guard(st.skipped, `RL step ${state.rlStep}`);
        if (config.eval.every > 0 && state.rlStep % config.eval.every === 0 && state.rlStep < config.rl.steps) {
          const ev = await evaluate(`RL step ${state.rlStep}`);
          state.evals.push(ev);
          if (!state.best || ev.accuracy > state.best.accuracy) await saveBest(ev.accuracy);
        }
        await checkpoint();
      }
      bar.finish();
    }
    if (state.phase !== "done") {
      state.evalAfter = config.rl.enabled && config.rl.steps > 0 ? await evaluate("after RL") : state.evalBefore;
      // The final adapter wins ties (it is the one trained longest).
      if (state.evalAfter && (!state.best || state.evalAfter.accuracy >= state.best.accuracy)) await saveBest(state.evalAfter.accuracy);
      state.phase = "done";
      await checkpoint(true);
    }
    const ev = (r: EvalRecord | null) => (r ? { accuracy: r.accuracy, n: r.n, ...(r.samples ? { samples: r.samples, avg_at_k: r.avgAtK, pass_at_k: r.passAtK, sample_temperature: config.eval.sampleTemperature } : {}) } : null);
    const summary = {
      wall_seconds: elapsed(),
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
      resumed: resumeFrom !== null,
      verifier: graderName,
      adapter: gpu.adapterName,
    };
    run.writeSummary(summary);
    await writeReport(runDir);
    run.close();
    log(`done in ${summary.wall_seconds.toFixed(0)} s → ${runDir} (report.html, metrics.jsonl, samples.jsonl, summary.json)`);
    log(`held-out accuracy: base ${pct(state.evalBase)} → after SFT ${pct(state.evalBefore)} → after RL ${pct(state.evalAfter)}`);
    return { runDir, summary };
  } finally {
    await tir?.close(); // logs the run's tool-call counts
    gpu.destroy();
  }
}

const poison = (t: Tensor) => restoreTensor(t, new Float32Array(t.size).fill(NaN));
