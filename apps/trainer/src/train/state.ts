// Everything a run needs to continue exactly where it stopped: trainable tensors (policy adapter, critic, value
// head), the frozen reference adapter, AdamW moments, and the loop's counters (phase, steps, curriculum stage, evals,
// best checkpoint, guard streaks). Tensors go to one f32 safetensors file (bit-exact: the GPU holds f32), the
// counters to JSON. The data order and sampling seeds are functions of (seed, step), so counters are the RNG state.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { AdamW, Tensor } from "@nr/autograd";
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from "@nr/model";
import { writeJsonAtomic } from "../run/folder.js";

export const STATE_TENSORS = "trainer_state.safetensors";
export const STATE_JSON = "trainer_state.json";

export interface EvalRecord {
  step: number;
  label: string;
  /** Greedy (eval.temperature) pass@1. */
  accuracy: number;
  n: number;
  /** With eval.samples > 0: the mean accuracy of the samples (avg@k) and the share of problems any sample solved (pass@k). */
  samples?: number;
  avgAtK?: number;
  passAtK?: number;
  /** Share of the greedy completions that reason in a non-empty `<think>` block. */
  thinkingRate?: number;
  /**
   * Mean length in tokens of the correct completions, greedy and sampled together (null: none was correct): the
   * length-aware presets (LPRO, GRPO-LEAD) claim shorter correct answers at equal or better accuracy.
   */
  correctLength?: number | null;
}

export interface TrainerState {
  /** Format version of this file. */
  version: 1;
  phase: "sft" | "rl" | "done";
  /** Optimizer steps done in total (SFT + RL); metrics rows are keyed by it. */
  step: number;
  sftStep: number;
  rlStep: number;
  /** Index into rl.lengthStages (advanced by step count or by truncation rate). */
  stage: number;
  /** Consecutive skipped (non-finite) steps, and rollbacks done so far. */
  badStreak: number;
  rollbacks: number;
  evalBase: EvalRecord | null;
  evalBefore: EvalRecord | null;
  evalAfter: EvalRecord | null;
  evals: EvalRecord[];
  best: { step: number; accuracy: number; dir: string } | null;
  /** Which adapter is the RL reference policy: "reference" (a frozen SFT copy), or null (the bare base). */
  reference: string | null;
  /** Seconds spent before this process started (a resumed run's wall time continues). */
  elapsedSeconds: number;
  /** LoRA dropout RNG states, one per adapted projection (dropout > 0 resumes with the same masks). */
  dropout?: number[];
}

export function initialState(): TrainerState {
  return {
    version: 1,
    phase: "sft",
    step: 0,
    sftStep: 0,
    rlStep: 0,
    stage: 0,
    badStreak: 0,
    rollbacks: 0,
    evalBase: null,
    evalBefore: null,
    evalAfter: null,
    evals: [],
    best: null,
    reference: null,
    elapsedSeconds: 0,
  };
}

/** Named groups of tensors to save: each group may carry an optimizer whose moments are saved beside it. */
export interface TensorGroup {
  name: string;
  tensors: Tensor[];
  optimizer?: AdamW;
}

const f32 = (v: ArrayLike<number>) => (v instanceof Float32Array ? v : Float32Array.from(v));

/** Write the tensors and the optimizer moments of `groups`, then the counters. */
export async function writeTrainerState(dir: string, state: TrainerState, groups: TensorGroup[]): Promise<void> {
  const out: TensorToWrite[] = [];
  const optimizers: Record<string, number> = {};
  for (const g of groups) {
    for (let i = 0; i < g.tensors.length; i++) {
      const t = g.tensors[i];
      out.push({ name: `${g.name}.${i}`, dtype: "F32", shape: [t.size], data: new Uint8Array(f32(await t.read()).buffer) });
    }
    if (g.optimizer) {
      const st = await g.optimizer.state();
      optimizers[g.name] = st.step;
      st.m.forEach((m, i) => out.push({ name: `${g.name}.adam_m.${i}`, dtype: "F32", shape: [m.length], data: new Uint8Array(f32(m).buffer) }));
      st.v.forEach((v, i) => out.push({ name: `${g.name}.adam_v.${i}`, dtype: "F32", shape: [v.length], data: new Uint8Array(f32(v).buffer) }));
    }
  }
  await writeSafetensors(join(dir, STATE_TENSORS), out, { format: "nano-reasoner-trainer-state" });
  const json = { ...state, optimizers, groups: groups.map((g) => ({ name: g.name, tensors: g.tensors.length, names: g.tensors.map((t) => t.name) })) };
  writeJsonAtomic(join(dir, STATE_JSON), json);
}

export function readTrainerStateJson(dir: string): TrainerState & { optimizers: Record<string, number> } {
  const path = join(dir, STATE_JSON);
  let parsed: TrainerState & { optimizers: Record<string, number> };
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(`cannot resume: ${path} is missing or not JSON (${(e as Error).message}); the checkpoint folder is incomplete — remove it to resume from the previous one`);
  }
  if (parsed.version !== 1) throw new Error(`cannot resume: ${path} has version ${String(parsed.version)}, this trainer reads version 1`);
  return parsed;
}

/** Overwrite a tensor's values in place (same storage object semantics as after an optimizer step). */
export function restoreTensor(t: Tensor, values: ArrayLike<number>) {
  if (values.length !== t.size) throw new Error(`cannot resume: tensor "${t.name}" has ${t.size} elements, the checkpoint has ${values.length}`);
  const B = t.engine.backend;
  B.free(t.storage);
  t.storage = B.upload(values, t.dtype);
}

/** Load tensors (and optimizer moments) saved by writeTrainerState into `groups` (same names and order). */
export async function readTrainerTensors(dir: string, groups: TensorGroup[], optimizerSteps: Record<string, number>): Promise<void> {
  const file = await SafetensorsFile.open(join(dir, STATE_TENSORS));
  try {
    const names = new Set(file.names());
    const get = async (name: string) => {
      if (!names.has(name)) throw new Error(`cannot resume: ${join(dir, STATE_TENSORS)} has no tensor "${name}" (was the run's config changed?)`);
      return file.readF32(name);
    };
    for (const g of groups) {
      for (let i = 0; i < g.tensors.length; i++) restoreTensor(g.tensors[i], await get(`${g.name}.${i}`));
      if (g.optimizer) {
        const m: Float32Array[] = [], v: Float32Array[] = [];
        for (let i = 0; i < g.tensors.length; i++) {
          m.push(await get(`${g.name}.adam_m.${i}`));
          v.push(await get(`${g.name}.adam_v.${i}`));
        }
        g.optimizer.loadState({ step: optimizerSteps[g.name] ?? 0, m, v });
      }
    }
  } finally {
    await file.close();
  }
}
