// The RL phase of `nr train`: per step, the prompts (a function of the step: exact resume), the length curriculum's
// token budget, one rlStep (local or remote rollouts), its metrics / samples / log lines, the guard, periodic evals
// that keep best/, and checkpoints.
import type { AdamW } from "@nr/autograd";
import { preset, type AlgoConfig, type AlgoName, type AlgoOverrides } from "@nr/algos";
import { mathReward } from "@nr/rewards";
import { ProgressBar } from "@nr/data";
import { rlMaxNewTokens, stageIndexAt } from "./schedule.js";
import { rlStep, seededPermutation } from "./rl-step.js";
import type { Critic } from "./critic.js";
import type { RlPrompt, RlStepStats } from "./rl-types.js";
import { withSamplerCorrection, type RemoteRollout } from "./remote-rollout.js";
import { tirMetrics, type TirSandbox } from "./tir.js";
import { gpuMemMiB, poison, type TrainSession } from "./session.js";

/**
 * The run's algorithm: the rl.algo preset with rl.algoConfig deep-merged over it (validated at config time), and
 * dynamic sampling switched on by rl.dynamicSampling.
 */
export function runAlgo(s: Pick<TrainSession, "config">): AlgoConfig {
  const algo = preset(s.config.rl.algo as AlgoName, s.config.rl.algoConfig as AlgoOverrides | undefined, "rl.algoConfig");
  return s.config.rl.dynamicSampling ? { ...algo, dynamicSampling: { ...algo.dynamicSampling, enabled: true } } : algo;
}

/**
 * Step s's prompts: rl.promptsPerStep from a seeded order of the train split at s · promptsPerStep; dynamic-sampling
 * refills from a stream of their own (offset by the step), so the main cursor stays a function of the step.
 */
function promptsOfStep(s: TrainSession, step: number): { batch: RlPrompt[]; more: (n: number) => RlPrompt[] } {
  const { train, config, inputs } = s;
  const order = seededPermutation(train.length, config.seed * 104_729 + 1);
  const take = (from: number, n: number): RlPrompt[] => {
    const out: RlPrompt[] = [];
    for (let k = 0; k < n && train.length > 0; k++) {
      const r = train[order[(from + k) % train.length]];
      out.push({ promptIds: inputs.encodePrompt(r.problem), gold: r.answer, problem: r.problem });
    }
    return out;
  };
  let refill = 0;
  const more = (n: number) => {
    const out = take(train.length * 1000 + step * 7_919 + refill, n);
    refill += n;
    return out;
  };
  return { batch: take(step * config.rl.promptsPerStep, config.rl.promptsPerStep), more };
}

/** metrics.jsonl, samples.jsonl and the step's log lines. */
function logRlStep(s: TrainSession, st: RlStepStats, batch: RlPrompt[], maxNew: number, remote: RemoteRollout | null, tir: TirSandbox | null): void {
  const { run, config, keeper, log } = s;
  const state = keeper.state;
  run.logMetrics({
    step: state.step, phase: "rl", loss: st.loss, reward: st.rewardMean, reward_std: st.rewardStd, accuracy: st.accuracy, response_length: st.responseLengthMean,
    response_length_max: st.responseLengthMax, truncation_rate: st.truncationRate, thinking_rate: st.thinkingRate, frac_zero_std: st.fracZeroStdGroups, clip_frac: st.clipRatio,
    entropy: st.entropy, kl: st.kl, logp_mismatch: st.logpMismatch, grad_norm: st.gradNorm, lr: config.rl.lr, max_new_tokens: maxNew,
    groups_kept: st.groupsKept, prompts_used: st.promptsUsed, generate_ms: st.generateMs, train_ms: st.trainMs,
    generate_tokens_per_s: st.generatedTokens / Math.max(1e-3, st.generateMs / 1000), train_tokens_per_s: st.trainTokens / Math.max(1e-3, st.trainMs / 1000),
    gpu_mem_mb: gpuMemMiB(s), skipped: st.skipped, time: keeper.elapsed(),
    ...(st.extra["value/explained_var"] !== undefined ? { value_loss: st.extra["loss/value"], value_explained_var: st.extra["value/explained_var"] } : {}),
    ...remote?.stepStats(),
    ...tirMetrics(tir, st.extra),
  });
  for (const smp of st.samples) {
    const p: Partial<RlPrompt> = batch[smp.prompt] ?? {};
    run.logSample({ step: state.step, phase: "rl", prompt: p.problem, completion: smp.text, gold: p.gold, reward: smp.reward, correct: smp.correct, advantage: smp.advantage, response_length: smp.length, finish_reason: smp.finishReason });
  }
  log(`rl step ${state.rlStep}/${config.rl.steps}: reward ${st.rewardMean.toFixed(3)} acc ${(100 * st.accuracy).toFixed(0)}% len ${st.responseLengthMean.toFixed(1)} think ${(100 * st.thinkingRate).toFixed(0)}% trunc ${(100 * st.truncationRate).toFixed(0)}% loss ${st.loss.toFixed(4)} |g| ${st.gradNorm.toFixed(3)} kl ${st.kl.toFixed(4)} (${(st.generateMs / 1000).toFixed(1)} s gen${remote ? ` on ${remote.stepStats().rollout_servers_live} servers, |Δlogp| ${st.logpMismatch.toExponential(1)}` : ""}, ${(st.trainMs / 1000).toFixed(1)} s train)`);
  if (st.truncationRate > 0.5) log(`warning: ${(100 * st.truncationRate).toFixed(0)}% of completions hit max_new_tokens (${maxNew}): raise rl.maxNewTokens or add rl.lengthStages`);
  if (st.fracZeroStdGroups > 0.8) log(`warning: ${(100 * st.fracZeroStdGroups).toFixed(0)}% of groups have zero reward spread (no learning signal): the task is too hard or too easy for the model, or G is too small`);
  if (st.noSignal) log(`rl step ${state.rlStep}: dynamic sampling kept no group — no update this step`);
}

/** The length curriculum by truncation: past rl.lengthStageTruncation, move to the next stage's token budget. */
function advanceStageOnTruncation(s: TrainSession, truncationRate: number): void {
  const { config, keeper, log } = s;
  const th = config.rl.lengthStageTruncation;
  if (th > 0 && truncationRate > th && keeper.state.stage + 1 < config.rl.lengthStages.length) {
    keeper.state.stage++;
    log(`length curriculum: truncation ${(100 * truncationRate).toFixed(0)}% > ${(100 * th).toFixed(0)}% — advancing to stage ${keeper.state.stage + 1} (max_new_tokens ${config.rl.lengthStages[keeper.state.stage]})`);
  }
}

export interface RlPhaseParts {
  opt: AdamW;
  algo: AlgoConfig;
  critic?: Critic;
  remote: RemoteRollout | null;
  tir: TirSandbox | null;
}

/** RL steps from the state's rlStep to rl.steps (when the state is in "rl" and RL is on). */
export async function runRlPhase(s: TrainSession, p: RlPhaseParts): Promise<void> {
  const { config, keeper } = s;
  const state = keeper.state;
  if (!(state.phase === "rl" && config.rl.enabled && config.rl.steps > 0)) return;
  await keeper.ensureReference();
  // @nr/rewards owns the reward: correctness, and the format flag LPRO / GRPO-LEAD read (non-empty reasoning, then a box)
  const reward = async (text: string, gold: string) => mathReward(text, gold);
  const bar = new ProgressBar({ total: config.rl.steps, label: "rl", unit: "steps" });
  bar.tick(state.rlStep);
  while (state.rlStep < config.rl.steps) {
    const step = state.rlStep;
    const { batch, more } = promptsOfStep(s, step);
    state.stage = Math.max(state.stage, stageIndexAt(config, step));
    const maxNew = rlMaxNewTokens(config, state.stage);
    s.gpu.pool.resetPeak();
    if (s.nanAt.has(`rl:${step + 1}!`)) poison(s.policyParams[0]);
    await p.remote?.publish(s.lora, "policy", step);
    const st = await rlStep(s.engine, s.decoder, s.lora, p.opt, p.remote ?? s.gen, batch, {
      algo: withSamplerCorrection(p.algo, config, p.remote),
      samplerCorrection: p.remote !== null && (config.rl.rollout?.tisCap ?? 0) > 0,
      G: config.rl.G, temperature: config.rl.temperature, topP: config.rl.topP, maxNewTokens: maxNew,
      lr: config.rl.lr, clipGradNorm: config.rl.clipGradNorm,
      ppoEpochs: config.rl.ppoEpochs, miniBatches: config.rl.miniBatches, microBatchRows: config.rl.microBatchRows,
      seed: config.seed * 100_003 + step, pad: s.inputs.pad, eos: s.inputs.eos, reward,
      recompute: config.sft.checkpointing, reference: state.reference, critic: p.critic, morePrompts: more,
      injectNan: s.nanAt.has(`rl:${step + 1}`),
    });
    state.rlStep++;
    state.step++;
    bar.tick(1, `reward ${st.rewardMean.toFixed(2)} acc ${(100 * st.accuracy).toFixed(0)}%`);
    logRlStep(s, st, batch, maxNew, p.remote, p.tir);
    advanceStageOnTruncation(s, st.truncationRate);
    await keeper.guard(st.skipped, `RL step ${state.rlStep}`);
    if (config.eval.every > 0 && state.rlStep % config.eval.every === 0 && state.rlStep < config.rl.steps) {
      const ev = await s.evaluate(`RL step ${state.rlStep}`);
      state.evals.push(ev);
      if (!state.best || ev.accuracy > state.best.accuracy) await keeper.saveBest(ev.accuracy);
    }
    await keeper.checkpoint();
  }
  bar.finish();
}
