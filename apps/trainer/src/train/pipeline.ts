// `nr train`: model → (eval base) → SFT cold start → (eval) → RL → (eval) → summary + report, into runs/<name>/.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { createGpu } from "@nr/kernels";
import { AdamW, Engine, GpuBackend, learningRate } from "@nr/autograd";
import { generateModel, loadDecoder, loadTokenizer, type ModelTokenizer } from "@nr/model";
import { LoraModel, savePeftAdapter, type LoraTarget } from "@nr/lora";
import { WebGpuGenerator } from "@nr/rollout";
import { preset, type AlgoName } from "@nr/algos";
import { defaultGrader, generateSynthetic, ProgressBar, sftTarget, type GradeFn, type MathRecord } from "@nr/data";
import { RunFolder, rlMaxNewTokensAt, writeReport, type TrainConfig } from "../run/index.js";
import { rlStep, sftStep, type SftExampleIds } from "./loop.js";

export interface PipelineResult {
  runDir: string;
  summary: Record<string, unknown>;
}

/** The verifier from @nr/rewards; a strict boxed-answer match when that package is not built. */
async function grader(): Promise<{ grade: GradeFn; name: string }> {
  try {
    return { grade: await defaultGrader(), name: "@nr/rewards verify" };
  } catch {
    const exact: GradeFn = (pred, gold) => {
      const m = /\\boxed\{([^{}]*)\}(?![\s\S]*\\boxed)/.exec(pred);
      return m !== null && m[1].trim() === gold.trim();
    };
    return { grade: exact, name: "exact boxed match (fallback: @nr/rewards not available)" };
  }
}

function promptText(problem: string): string {
  return `Q: ${problem}\nA: `;
}

async function evaluateGreedy(gen: WebGpuGenerator, tok: ModelTokenizer, records: MathRecord[], grade: GradeFn, maxNewTokens: number): Promise<{ accuracy: number; n: number }> {
  let correct = 0;
  const bar = new ProgressBar({ total: records.length, label: "eval", unit: "problems" });
  const chunk = 16;
  for (let i = 0; i < records.length; i += chunk) {
    const part = records.slice(i, i + chunk);
    const out = await gen.generateIds(part.map((r) => ({ promptIds: tok.encode(promptText(r.problem)), n: 1 })), { temperature: 0, maxNewTokens });
    for (let j = 0; j < part.length; j++) {
      const g = await grade(out[j][0].text, part[j].answer);
      if (typeof g === "boolean" ? g : g.correct) correct++;
    }
    bar.tick(part.length);
  }
  bar.finish();
  return { accuracy: records.length ? correct / records.length : 0, n: records.length };
}

export async function runPipeline(config: TrainConfig, opts: { cwd?: string; log?: (line: string) => void } = {}): Promise<PipelineResult> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const t0 = performance.now();
  const run = await RunFolder.open(config, { ifExists: "overwrite", cwd: opts.cwd });
  const runDir = run.dir;
  // ---- model
  let modelDir = config.model.dir;
  if (!modelDir) {
    const g = config.model.generate!;
    modelDir = join(runDir, "model");
    if (!existsSync(join(modelDir, "config.json"))) {
      log(`generating a Qwen2-architecture model (hidden ${g.hidden}, ${g.layers} layers, ${g.heads}/${g.kvHeads} heads) in ${modelDir}`);
      await generateModel(modelDir, { architecture: "qwen2", hiddenSize: g.hidden, intermediateSize: g.intermediate, numLayers: g.layers, numHeads: g.heads, numKvHeads: g.kvHeads, tieWordEmbeddings: true }, { seed: config.seed, dtype: "f32", init: { std: 0.2 } });
    }
  }
  const gpu = await createGpu();
  try {
    const engine = new Engine(new GpuBackend(gpu));
    const { decoder } = await loadDecoder(engine, modelDir);
    const tok = await loadTokenizer(modelDir);
    const pad = tok.padTokenId ?? tok.stopTokenIds[0] ?? 0;
    const eos = tok.stopTokenIds[0];
    const lora = new LoraModel(decoder);
    const params = lora.addAdapter("policy", { r: config.lora.r, alpha: config.lora.alpha, dropout: config.lora.dropout, targets: config.lora.targets as LoraTarget[], seed: config.seed });
    const gen = new WebGpuGenerator(engine, decoder, tok);
    const { grade, name: graderName } = await grader();
    log(`adapter ${gpu.adapterName}; verifier: ${graderName}; ${lora.parameterCount("policy")} trainable LoRA parameters`);

    // ---- data
    const d = config.data;
    const diff = d.difficulty ?? {};
    const train = generateSynthetic({ count: d.trainSize, seed: config.seed, split: "train", ...diff });
    const heldout = generateSynthetic({ count: d.evalSize, seed: config.seed, split: "heldout", ...diff });
    const evalSet = heldout.slice(0, config.eval.n);

    const evalNow = async (label: string) => {
      lora.setTraining(false);
      const r = await evaluateGreedy(gen, tok, evalSet, grade, config.eval.maxNewTokens);
      log(`eval ${label}: accuracy ${(100 * r.accuracy).toFixed(1)}% on ${r.n} held-out problems`);
      return r;
    };
    const evalBase = await lora.withAdapter(null, () => evalNow("base (no adapter)"));
    lora.select("policy");

    // ---- SFT
    let step = 0;
    const opt = new AdamW(params, { lr: config.sft.lr, weightDecay: 0 });
    let sftSteps = 0;
    if (config.sft.enabled) {
      const examples: SftExampleIds[] = train.map((r) => ({
        promptIds: tok.encode(promptText(r.problem)),
        completionIds: [...tok.encode(sftTarget(r.solution ?? "", r.answer)), eos],
      })).filter((x) => x.promptIds.length + x.completionIds.length <= config.sft.maxSeqLen);
      const bs = config.sft.batchSize;
      const perEpoch = Math.ceil(examples.length / bs);
      const total = config.sft.steps ?? perEpoch * (config.sft.epochs ?? 1);
      const bar = new ProgressBar({ total, label: "sft", unit: "steps" });
      for (let s = 0; s < total; s++) {
        const startIdx = (s % perEpoch) * bs;
        const mb = examples.slice(startIdx, startIdx + bs);
        const lr = learningRate({ kind: config.sft.schedule, lr: config.sft.lr, warmupSteps: config.sft.warmup, totalSteps: total }, s);
        const st = await sftStep(engine, decoder, opt, [mb], { lr, clipGradNorm: 1, pad, checkpoint: config.sft.checkpointing });
        step++;
        sftSteps++;
        await run.logMetrics({ step, phase: "sft", loss: st.loss, grad_norm: st.gradNorm, lr, tokens: st.tokens, skipped: st.skipped });
        bar.tick(1, `loss ${st.loss.toFixed(3)}`);
      }
      bar.finish();
    }
    const evalBefore = config.sft.enabled ? await evalNow("after SFT") : evalBase;

    // ---- RL
    let rlSteps = 0;
    if (config.rl.enabled) {
      const algo = preset(config.rl.algo as AlgoName);
      const rlOpt = new AdamW(params, { lr: config.rl.lr, weightDecay: 0 });
      const reward = async (text: string, gold: string) => {
        const g = await grade(text, gold);
        const correct = typeof g === "boolean" ? g : g.correct;
        return { reward: correct ? 1 : 0, correct, formatOk: /<\/think>/.test(text) && /\\boxed\{/.test(text) };
      };
      for (let s = 0; s < config.rl.steps; s++) {
        const start = (s * config.rl.promptsPerStep) % Math.max(1, train.length);
        const batch = train.slice(start, start + config.rl.promptsPerStep);
        const st = await rlStep(engine, decoder, lora, rlOpt, gen, batch.map((r) => ({ promptIds: tok.encode(promptText(r.problem)), gold: r.answer })), {
          algo,
          G: config.rl.G,
          temperature: config.rl.temperature,
          topP: config.rl.topP,
          maxNewTokens: rlMaxNewTokensAt(config, s), // context-lengthening stages when rl.lengthStages is set
          lr: config.rl.lr,
          clipGradNorm: config.rl.clipGradNorm,
          ppoEpochs: config.rl.ppoEpochs,
          seed: config.seed * 100_003 + s,
          pad,
          eos,
          reward,
        });
        step++;
        rlSteps++;
        await run.logMetrics({
          step, phase: "rl", loss: st.loss, reward: st.rewardMean, reward_std: st.rewardStd, accuracy: st.accuracy, response_length: st.responseLengthMean,
          response_length_max: st.responseLengthMax, truncation_rate: st.truncationRate, frac_zero_std: st.fracZeroStdGroups, clip_frac: st.clipRatio,
          entropy: st.entropy, grad_norm: st.gradNorm, lr: config.rl.lr, generate_ms: st.generateMs, train_ms: st.trainMs, skipped: st.skipped,
        });
        for (const smp of st.samples) await run.logSample({ step, phase: "rl", prompt: batch[smp.prompt].problem, completion: smp.text, gold: batch[smp.prompt].answer, reward: smp.reward, correct: smp.correct, advantage: smp.advantage, response_length: smp.length, finish_reason: smp.finishReason });
        log(`rl step ${s + 1}/${config.rl.steps}: reward ${st.rewardMean.toFixed(3)} acc ${(100 * st.accuracy).toFixed(0)}% len ${st.responseLengthMean.toFixed(1)} trunc ${(100 * st.truncationRate).toFixed(0)}% loss ${st.loss.toFixed(4)} |g| ${st.gradNorm.toFixed(3)}`);
        if (st.truncationRate > 0.5) log(`warning: ${(100 * st.truncationRate).toFixed(0)}% of completions hit max_new_tokens (${rlMaxNewTokensAt(config, s)})`);
        if (st.fracZeroStdGroups > 0.8) log(`warning: ${(100 * st.fracZeroStdGroups).toFixed(0)}% of groups have zero reward spread (no learning signal)`);
      }
    }
    const evalAfter = config.rl.enabled ? await evalNow("after RL") : evalBefore;
    await run.saveCheckpoint(step, async (tmp) => savePeftAdapter(lora, "policy", tmp, { baseModel: modelDir }), { keepLast: config.checkpoint.keepLast, meta: { step } });
    const summary = { wall_seconds: (performance.now() - t0) / 1000, eval_base: evalBase, eval_before: evalBefore, eval_after: evalAfter, algo: config.rl.algo, steps: step, sft_steps: sftSteps, rl_steps: rlSteps, verifier: graderName };
    await run.writeSummary(summary);
    await writeReport(runDir);
    await run.close();
    log(`done in ${summary.wall_seconds.toFixed(0)} s → ${runDir} (report.html, metrics.jsonl, samples.jsonl, summary.json)`);
    return { runDir, summary };
  } finally {
    gpu.destroy();
  }
}
