// The SFT cold start of `nr train`: masked completion loss over length-bucketed batches, the schedule's learning
// rate with warm-up, gradient accumulation; each step logged, guarded and checkpointed; ends with the "after SFT"
// eval (or the start adapter's) and π_ref frozen as a copy of the policy.
import type { AdamW } from "@nr/autograd";
import { learningRate } from "@nr/autograd";
import { ProgressBar } from "@nr/data";
import { sftSchedule } from "./schedule.js";
import { sftStep } from "./loop.js";
import { seededPermutation } from "./rl-step.js";
import type { SftExampleIds } from "./rows.js";
import { gpuMemMiB, poison, type TrainSession } from "./session.js";

/**
 * Step s's micro-batches: each epoch is a seeded shuffle, sorted by length inside windows of 8 steps (similar
 * lengths share a batch: less padding). A function of (seed, step) only, so a resumed run sees the same batches.
 */
export function sftBatches(s: TrainSession, examples: SftExampleIds[], perEpoch: number): (step: number) => SftExampleIds[][] {
  const bs = s.config.sft.batchSize, accum = s.config.sft.gradAccum;
  const perStep = bs * accum;
  const epochOrder = new Map<number, number[]>();
  const len = (i: number) => examples[i].promptIds.length + examples[i].completionIds.length;
  return (step) => {
    const epoch = Math.floor(step / perEpoch);
    let order = epochOrder.get(epoch);
    if (!order) {
      const p = seededPermutation(examples.length, s.config.seed * 7_919 + epoch);
      const win = perStep * 8;
      order = [];
      for (let i = 0; i < p.length; i += win) order.push(...p.slice(i, i + win).sort((a, b) => len(a) - len(b)));
      epochOrder.set(epoch, order);
    }
    const start = (step % perEpoch) * perStep;
    const ex = order.slice(start, start + perStep).map((i) => examples[i]);
    return Array.from({ length: accum }, (_, k) => ex.slice(k * bs, (k + 1) * bs)).filter((mb) => mb.length > 0);
  };
}

/** The SFT phase from the state's sftStep on; then the phase becomes "rl". No-op unless the state is in "sft". */
export async function runSftPhase(s: TrainSession, opt: AdamW): Promise<void> {
  const { config, keeper, lora, inputs, log } = s;
  const state = keeper.state;
  const examples: SftExampleIds[] = inputs.sftExamples;
  const { perEpoch, total } = sftSchedule(config, examples.length);
  if (config.sft.enabled && examples.length === 0) throw new Error(`sft: no usable examples (records need a solution and must fit sft.maxSeqLen = ${config.sft.maxSeqLen} tokens)`);
  if (state.phase !== "sft") return;
  if (total > 0) {
    if (config.sft.maxExamples !== undefined) log(`sft: cold start on ${examples.length} worked solutions (sft.maxExamples ${config.sft.maxExamples}; ${inputs.sftRecords.length} train records have one)`);
    if (inputs.noThinkTargets > 0) log(`sft: hybrid-thinking cold start: ${inputs.noThinkTargets} of ${inputs.sftRecords.length} targets answer without reasoning (empty <think></think>; sft.noThinkFraction ${config.sft.noThinkFraction})`);
    const batchAt = sftBatches(s, examples, perEpoch);
    const bar = new ProgressBar({ total, label: "sft", unit: "steps" });
    bar.tick(state.sftStep);
    while (state.sftStep < total) {
      const step = state.sftStep;
      const lr = learningRate({ kind: config.sft.schedule, lr: config.sft.lr, warmupSteps: config.sft.warmup, totalSteps: total }, step);
      const ts = performance.now();
      s.gpu.pool.resetPeak();
      if (s.nanAt.has(`sft:${step + 1}!`)) poison(s.policyParams[0]);
      lora.setTraining(true);
      const st = await sftStep(s.engine, s.decoder, opt, batchAt(step), { lr, clipGradNorm: 1, pad: inputs.pad, recompute: config.sft.checkpointing, injectNan: s.nanAt.has(`sft:${step + 1}`) });
      lora.setTraining(false);
      const secs = (performance.now() - ts) / 1000;
      state.sftStep++;
      state.step++;
      s.run.logMetrics({ step: state.step, phase: "sft", loss: st.loss, grad_norm: st.gradNorm, lr, tokens: st.tokens, tokens_per_s: st.tokens / secs, gpu_mem_mb: gpuMemMiB(s), skipped: st.skipped, time: keeper.elapsed() });
      bar.tick(1, `loss ${st.loss.toFixed(3)}`);
      await keeper.guard(st.skipped, `SFT step ${state.sftStep}`);
      await keeper.checkpoint();
    }
    bar.finish();
  }
  state.phase = "rl";
  state.evalBefore = config.sft.enabled ? await s.evaluate("after SFT") : config.model.adapter !== undefined ? await s.evaluate("start adapter") : state.evalBase;
  await keeper.ensureReference();
  await keeper.markGood();
}
