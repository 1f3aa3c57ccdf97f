// `nr pretrain`: makes the small base model of the embedded default. A Qwen2-architecture model with the synthetic
// task's tokenizer is generated at random (seeded) or taken from an earlier run (`--init`), then every weight is trained
// on the GPU (full-parameter causal LM, AdamW, cosine schedule) on synthetic problems from the train split only
// (held-out problems are disjoint by construction). The corpus decides what the base prefers: worked solutions in a
// plain format (`Q: … A: 18 + 3 = 21. The answer is 21.`), some in the `<think>…</think> \boxed{}` format, and with
// `--direct-share` multi-step problems answered directly (`A: The answer is 21.`). The result is an HF checkpoint
// folder (config.json, model.safetensors, tokenizer files) plus PRETRAIN.md saying how it was made.
import { existsSync } from "node:fs";
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { createGpu } from "@nr/kernels";
import { AdamW, Engine, GpuBackend, learningRate, type Tensor } from "@nr/autograd";
import { generateModel, loadDecoder, loadTokenizer, writeSafetensorsCheckpoint, type Decoder, type DenseProjection } from "@nr/model";
import { expressionFacts, fnv1a, generateSynthetic, ProgressBar, Rng, sftTarget, type MathRecord, type SyntheticKind } from "@nr/data";
import { sftStep, type SftExampleIds } from "./loop.js";
import { tokenizerWordsFor } from "./prepare.js";

export interface PretrainOptions {
  out: string;
  seed: number;
  steps: number;
  batchSize: number;
  lr: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  problems: number;
  minSteps: number;
  maxSteps: number;
  /** Largest number added/subtracted/started from, and largest intermediate value (synthetic difficulty). */
  maxOperand: number;
  maxValue: number;
  /** Also write the weights every this many steps to `<out>.snapshots/step-<N>` (0: only the final checkpoint). */
  snapshotEvery?: number;
  /**
   * Share (0..1) of the problems with two or more steps whose text answers directly (`A: The answer is 21.`), with no
   * working shown; the rest show their working. Default 0.
   */
  directShare?: number;
  /** Continue from this HF checkpoint folder (made by `nr pretrain`, same tokenizer) instead of a random init. */
  init?: string;
  /** Which synthetic problems: word problems (default) or one-line + / - chains (`7 + 5 - 3 = ?`). */
  task?: SyntheticKind;
  /**
   * Expression task only: this many copies of every one-operation fact of the range (`7 + 5 = ?`, both splits) join
   * the corpus, which is then shuffled (seeded), so the base knows each fact a chain is built from. Default 0.
   */
  factCopies?: number;
  log?: (line: string) => void;
}



/**
 * The pre-training text of problem `i`: mostly the plain format (`A: 18 + 3 = 21. The answer is 21.`); every
 * `reasoningEvery`-th one is written in the reasoning format (`<think>…</think> \boxed{}`), so that format's tokens
 * have trained embeddings (the head is tied and LoRA keeps it frozen) — as a real base model has seen `\boxed{}`
 * before its SFT cold start. The cold start then makes the reasoning format the model's habit.
 */
export function pretrainText(r: MathRecord, i = 0, reasoningEvery = 4, directShare = 0): string {
  // Which multi-step problems answer directly is a hash of the id (the same pick whatever the corpus order).
  const multiStep = Number(r.meta?.steps ?? 1) > 1;
  if (multiStep && directShare > 0 && (fnv1a(`direct:${r.id}`) % 10000) / 10000 < directShare) return `Q: ${r.problem}\nA: The answer is ${r.answer}.`;
  if (reasoningEvery > 0 && i % reasoningEvery === reasoningEvery - 1) return `Q: ${r.problem}\nA: ${sftTarget(r.solution ?? "", r.answer)}`;
  const work = (r.solution ?? "").split("\n").filter(Boolean).join(", ");
  return `Q: ${r.problem}\nA: ${work}. The answer is ${r.answer}.`;
}

/**
 * The corpus's problems: `problems` synthetic ones of the train split (data seed 1000003 + seed) and, with
 * `factCopies`, that many copies of every one-operation fact of the expression range, shuffled together (seeded).
 */
export function pretrainCorpus(o: Pick<PretrainOptions, "seed" | "problems" | "minSteps" | "maxSteps" | "maxOperand" | "maxValue" | "task" | "factCopies">): MathRecord[] {
  const kind = o.task ?? "words";
  const copies = o.factCopies ?? 0;
  if (!(Number.isInteger(copies) && copies >= 0)) throw new Error(`pretrain: --fact-copies ${o.factCopies} must be a whole number ≥ 0`);
  if (copies > 0 && kind !== "expression") throw new Error("pretrain: --fact-copies needs --task expression (the facts are one-operation expressions)");
  const records = generateSynthetic({ count: o.problems, seed: 1_000_003 + o.seed, split: "train", minSteps: o.minSteps, maxSteps: o.maxSteps, maxOperand: o.maxOperand, maxValue: o.maxValue, kind });
  if (copies === 0) return records;
  const facts = expressionFacts({ maxOperand: o.maxOperand, maxValue: o.maxValue });
  const all = [...records, ...Array.from({ length: copies }, () => facts).flat()];
  return new Rng(fnv1a(`pretrain-corpus:${o.seed}`)).shuffle(all);
}

const PRETRAIN_OPTION_KEYS = ["seed", "steps", "batchSize", "lr", "hidden", "layers", "heads", "kvHeads", "intermediate", "problems", "minSteps", "maxSteps", "maxOperand", "maxValue", "directShare", "task", "factCopies", "init", "snapshotEvery"] as const satisfies readonly (keyof PretrainOptions)[];

const ARCHITECTURE_KEYS: readonly string[] = ["hidden", "layers", "heads", "kvHeads", "intermediate"];
const CHECKPOINT_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

/** Copies the checkpoint `--init` names into the scratch folder, after checking it has the task's tokenizer. */
async function copyCheckpoint(from: string, to: string, task: PretrainOptions["task"]): Promise<void> {
  const files = ["model.safetensors", ...CHECKPOINT_FILES];
  for (const f of files) {
    if (!existsSync(join(from, f))) throw new Error(`pretrain --init ${from}: no ${f} there; give a folder written by nr pretrain`);
  }
  const vocab = (JSON.parse(await readFile(join(from, "tokenizer.json"), "utf8")) as { model?: { vocab?: Record<string, number> } }).model?.vocab ?? {};
  // Byte-level BPE spells a space Ġ and a newline Ċ.
  const missing = tokenizerWordsFor(task).filter((w) => !(w.replace(/ /g, "Ġ").replace(/\n/g, "Ċ") in vocab));
  if (missing.length > 0) {
    const kind = task ?? "words";
    throw new Error(`pretrain --init ${from}: its tokenizer lacks tokens of the ${kind} task's tokenizer (${missing.slice(0, 5).map((w) => JSON.stringify(w)).join(", ")}…); give a checkpoint made by nr pretrain --task ${kind}`);
  }
  await mkdir(to, { recursive: true });
  for (const f of files) await copyFile(join(from, f), join(to, f));
}

/** What PRETRAIN.md says the corpus was. */
function corpusLine(o: PretrainOptions, total: number): string {
  const kind = o.task === "expression" ? "+ / - expressions" : "word problems";
  const problems = `${o.problems} synthetic ${kind} with ${o.minSteps}–${o.maxSteps} arithmetic steps (train split only, data seed ${1_000_003 + o.seed})`;
  if (!o.factCopies) return problems;
  return `${total} texts: ${problems} and ${o.factCopies} copies of each of the ${(total - o.problems) / o.factCopies} one-operation facts of the range (operands ≤ ${o.maxOperand}, values ≤ ${o.maxValue}; both splits: the task holds out chains of two or more operations), shuffled`;
}

/** Every weight tensor of a decoder under its Hugging Face name. */
function namedWeights(d: Decoder): Tensor[] {
  const out: Tensor[] = [d.weights.embed];
  for (const L of d.weights.layers) {
    out.push(L.inputNorm, L.postAttentionNorm);
    if (L.qNorm) out.push(L.qNorm);
    if (L.kNorm) out.push(L.kNorm);
    for (const p of [L.q, L.k, L.v, L.o, L.gate, L.up, L.down] as DenseProjection[]) {
      out.push(p.weight);
      if (p.bias) out.push(p.bias);
    }
  }
  out.push(d.weights.finalNorm);
  if (d.weights.lmHead !== d.weights.embed) out.push(d.weights.lmHead);
  return out;
}

export async function pretrain(o: PretrainOptions): Promise<{ dir: string; finalLoss: number; seconds: number }> {
  const log = o.log ?? ((l: string) => console.log(l));
  const t0 = performance.now();
  const dir = resolve(o.out);
  const scratch = join(dir, ".init");
  if (o.init) await copyCheckpoint(resolve(o.init), scratch, o.task);
  else await generateModel(
    scratch,
    { architecture: "qwen2", hiddenSize: o.hidden, intermediateSize: o.intermediate, numLayers: o.layers, numHeads: o.heads, numKvHeads: o.kvHeads, tieWordEmbeddings: true, maxPositionEmbeddings: 512 },
    { seed: o.seed, dtype: "f32", init: { std: 0.02 }, tokenizer: { words: tokenizerWordsFor(o.task) } },
  );
  const tok = await loadTokenizer(scratch);
  const eos = tok.stopTokenIds[0];
  const share = o.directShare ?? 0;
  if (!(share >= 0 && share <= 1)) throw new Error(`pretrain: --direct-share ${o.directShare} must be between 0 and 1`);
  const records = pretrainCorpus(o);
  const texts = records.map((r, i) => pretrainText(r, i, 4, share));
  // PRETRAIN.md shows one text of each kind the corpus has (plain, reasoning, direct).
  const shown = [0, 3, texts.findIndex((t) => /\nA: The answer is/.test(t))].filter((i, k, a) => i >= 0 && i < texts.length && a.indexOf(i) === k);
  const examples: SftExampleIds[] = records.map((r, i) => {
    const ids = [...tok.encode(texts[i]), eos];
    return { promptIds: ids.slice(0, 1), completionIds: ids.slice(1) };
  });
  const gpu = await createGpu();
  let finalLoss = NaN;
  try {
    const e = new Engine(new GpuBackend(gpu));
    const { decoder, config } = await loadDecoder(e, scratch, { trainable: true });
    const params = namedWeights(decoder);
    const opt = new AdamW(params, { lr: o.lr, weightDecay: 0.01 });
    log(`pre-training ${params.reduce((a, p) => a + p.size, 0)} parameters (hidden ${o.hidden}, ${o.layers} layers) on ${examples.length} synthetic problems, ${o.steps} steps × ${o.batchSize}`);
    // The command line that reproduces this run (named options only: yargs also passes aliases and `_`/`$0`).
    // With --init the architecture comes from that checkpoint, so its flags are left out.
    const args = PRETRAIN_OPTION_KEYS.filter((k) => o[k] !== undefined && !(k === "snapshotEvery" && !o[k]) && !(o.init && ARCHITECTURE_KEYS.includes(k)))
      .map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} ${o[k]}`)
      .join(" ");
    // The final checkpoint, or a snapshot of step `step` (same files; PRETRAIN.md says which step of which command).
    const writeCheckpoint = async (to: string, step: number): Promise<void> => {
      await mkdir(to, { recursive: true });
      const tensors = await Promise.all(params.map(async (p) => ({ name: p.name, dtype: "F32" as const, shape: [...p.shape], data: new Uint8Array(Float32Array.from(await p.read()).buffer) })));
      await writeSafetensorsCheckpoint(to, tensors, { metadata: { format: "pt", generator: "nr pretrain", seed: String(o.seed), step: String(step) } });
      for (const f of CHECKPOINT_FILES) await copyFile(join(scratch, f), join(to, f));
      const seconds = (performance.now() - t0) / 1000;
      const which = step === o.steps ? "Made by" : `The weights after step ${step} of the ${o.steps}-step run made by`;
      await writeFile(
        join(to, "PRETRAIN.md"),
        `# ${config.architecture} base model of the embedded default\n\n${which} \`pnpm nr pretrain --out ${o.out} ${args}\` (seeded; ${gpu.adapterName}, ${seconds.toFixed(0)} s).\n\n` +
          `Full-parameter causal-LM training ${o.init ? `continued from \`${o.init}\`` : "from a random init"} on ${corpusLine(o, examples.length)}. ` +
          `${share > 0 ? `${(100 * share).toFixed(0)} % of the problems with two or more steps answer directly, without working; the others show it, ` : ""}three in four in the plain format, one in four in the reasoning format:\n\n` +
          "```\n" + shown.map((i) => texts[i]).join("\n\n") + "\n```\n\n" +
          `Loss at step ${step} (EMA over steps): ${finalLoss.toFixed(4)} nats/token. The held-out split of the synthetic task is never seen.\n`,
      );
    };
    const bar = new ProgressBar({ total: o.steps, label: "pretrain", unit: "steps" });
    let ema = NaN;
    for (let s = 0; s < o.steps; s++) {
      const start = (s * o.batchSize) % examples.length;
      const mb = examples.slice(start, start + o.batchSize);
      const lr = learningRate({ kind: "cosine", lr: o.lr, warmupSteps: Math.min(50, Math.floor(o.steps / 10)), totalSteps: o.steps }, s);
      const st = await sftStep(e, decoder, opt, [mb], { lr, clipGradNorm: 1, pad: tok.padTokenId ?? 0 });
      if (st.skipped) throw new Error(`pretrain: non-finite loss or gradient at step ${s + 1} (lr ${lr}); lower --lr`);
      ema = Number.isNaN(ema) ? st.loss : 0.95 * ema + 0.05 * st.loss;
      finalLoss = ema;
      bar.tick(1, `loss ${ema.toFixed(3)}`);
      if (o.snapshotEvery && (s + 1) % o.snapshotEvery === 0 && s + 1 < o.steps) await writeCheckpoint(`${dir}.snapshots/step-${s + 1}`, s + 1);
    }
    bar.finish();
    await writeCheckpoint(dir, o.steps);
    const { rm } = await import("node:fs/promises");
    await rm(scratch, { recursive: true, force: true });
    const seconds = (performance.now() - t0) / 1000;
    log(`wrote ${dir} (final loss ${finalLoss.toFixed(3)}, ${seconds.toFixed(0)} s)`);
    return { dir, finalLoss, seconds };
  } finally {
    gpu.destroy();
  }
}
