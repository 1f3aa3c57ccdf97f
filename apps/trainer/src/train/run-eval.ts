// The held-out evaluation of `nr train`, through the evaluator `nr eval` uses (@nr/data evaluate): the run's own
// prompt ids, one completion per problem at eval.temperature (0: greedy pass@1), and with eval.samples = k also k
// samples per problem at eval.sampleTemperature (top-p 1): avg@k (the sampled pass@1 R1-style reports quote) and
// pass@k. Problem i of the held-out list draws with seed config.seed + i in every eval, as `nr eval --seed
// <run seed>` does. Logged and written to metrics.jsonl.
import { evaluate, mean, thinks, type GradeFn, type MathRecord } from "@nr/data";
import type { WebGpuGenerator } from "@nr/rollout";
import type { LoraModel } from "@nr/lora";
import type { TrainConfig } from "../run/index.js";
import type { RunFolder } from "../run/folder.js";
import { describeEval } from "./eval-lines.js";
import type { EvalRecord } from "./state.js";

export interface RunEvalParts {
  config: TrainConfig;
  run: RunFolder;
  lora: LoraModel;
  gen: WebGpuGenerator;
  grade: GradeFn;
  encodePrompt: (problem: string) => number[];
  /** The held-out problems (the first eval.n). */
  problems: MathRecord[];
  /** The step the record is filed under (read when the eval runs). */
  step: () => number;
  log: (line: string) => void;
}

/** Problems per generate() call of an eval (each with 1 + eval.samples rows): pre-flight sizes its KV cache from it. */
export const EVAL_BATCH = 32;

/** The run's evaluator: `evaluate(label)` scores the current adapter (whatever lora has selected). */
export function runEvaluator(p: RunEvalParts): (label: string) => Promise<EvalRecord> {
  const { config, problems } = p;
  const k = config.eval.samples;
  return async (label) => {
    p.lora.setTraining(false);
    const s = await evaluate(p.gen, problems, {
      prompt: (r) => r.problem,
      promptIds: (r) => p.encodePrompt(r.problem),
      greedy: true,
      greedyTemperature: config.eval.temperature,
      samples: k,
      temperature: config.eval.sampleTemperature,
      topP: 1,
      ks: k > 0 ? [k] : [],
      majKs: [],
      equivalent: false,
      maxNewTokens: config.eval.maxNewTokens,
      seed: config.seed,
      grade: p.grade,
      batchSize: EVAL_BATCH,
      name: `eval ${label}`,
      print: false,
    });
    const n = problems.length;
    const step = p.step();
    const thinking = s.results.filter((r) => thinks(r.greedy!.text)).length;
    const correct = s.results.flatMap((r) => [r.greedy!, ...r.samples]).filter((c) => c.correct);
    const correctLength = correct.length ? mean(correct.map((c) => c.length)) : null;
    const rec: EvalRecord = { step, label, accuracy: n ? s.greedyPass1! : 0, n, thinkingRate: n ? thinking / n : 0, correctLength };
    if (k > 0) Object.assign(rec, { samples: k, avgAtK: n ? s.avgAtN! : 0, passAtK: n ? s.passAtK[k] : 0 });
    p.log(`eval ${label}: ${describeEval(rec, config.eval.sampleTemperature)} on ${n} held-out problems`);
    p.run.logMetrics({ step, phase: "eval", eval_accuracy: rec.accuracy, eval_thinking_rate: rec.thinkingRate, eval_correct_length: correctLength, ...(k > 0 ? { eval_avg_at_k: rec.avgAtK, eval_pass_at_k: rec.passAtK, eval_samples: k } : {}), eval_label: label, eval_n: n });
    return rec;
  };
}
