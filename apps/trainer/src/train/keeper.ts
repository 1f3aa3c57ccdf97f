// The run's state and everything that saves or restores it, in one place: the counters (TrainerState), which tensor
// groups a checkpoint holds in each phase, periodic checkpoints, --resume, best/, the π_ref copy, and the NaN guard
// (a non-finite loss or gradient skips the step; guards.maxBadSteps of them in a row roll back to the last good
// state, a host copy refreshed at every checkpoint that is not itself failing).
import { join } from "node:path";
import type { AdamW, Tensor } from "@nr/autograd";
import { savePeftAdapter, type LoraModel } from "@nr/lora";
import type { TrainConfig } from "../run/index.js";
import type { RunFolder } from "../run/folder.js";
import { initialState, readTrainerStateJson, readTrainerTensors, restoreTensor, writeTrainerState, type TensorGroup, type TrainerState } from "./state.js";

type Snapshot = { values: Float32Array[][]; opt: Awaited<ReturnType<AdamW["state"]>>[] };

/** Trainable tensors with the optimizer that updates them. */
export interface TrainableGroup {
  tensors: Tensor[];
  optimizer: AdamW;
}

export interface KeeperOptions {
  run: RunFolder;
  config: TrainConfig;
  lora: LoraModel;
  /** The base model the adapters are saved against (adapter_config.json's base_model_name_or_path). */
  baseModel: string;
  log: (line: string) => void;
  /** performance.now() when the run started (wall time counts from there). */
  t0: number;
  /** The policy adapter under SFT; the policy (+ critic) under RL. */
  sft: TrainableGroup;
  rl: TrainableGroup;
}

export class RunKeeper {
  state: TrainerState = initialState();
  private lastGood: Snapshot | null = null;
  private wallSoFar = 0;

  constructor(private readonly k: KeeperOptions) {}

  /** Wall seconds of the run, earlier processes of a resumed run included. */
  elapsed(): number {
    return this.wallSoFar + (performance.now() - this.k.t0) / 1000;
  }

  /** The tensor groups a checkpoint holds now: the phase's trainable group and the frozen reference, if any. */
  groups(): TensorGroup[] {
    const g: TensorGroup[] = this.state.phase === "sft" ? [{ name: "policy", ...this.k.sft }] : [{ name: "rl", ...this.k.rl }];
    if (this.state.reference) g.push({ name: "reference", tensors: this.k.lora.parameters(this.state.reference) });
    return g;
  }

  /** Continue from a checkpoint folder: counters, tensors, optimizer moments, dropout RNGs. */
  async resume(dir: string): Promise<void> {
    const { lora, log } = this.k;
    const saved = readTrainerStateJson(dir);
    this.state = { ...saved };
    if (this.state.reference) await lora.copyAdapter("policy", this.state.reference);
    await readTrainerTensors(dir, this.groups(), saved.optimizers);
    if (saved.dropout) lora.setDropoutState(saved.dropout);
    lora.select("policy");
    log(`resumed at step ${this.state.step} (${this.state.phase}, SFT ${this.state.sftStep}, RL ${this.state.rlStep})`);
  }

  /** Start the wall clock from the state's elapsed seconds (after a resume). */
  startClock(): void {
    this.wallSoFar = this.state.elapsedSeconds;
  }

  /** π_ref after an SFT cold start (or from model.adapter) is that adapter (a frozen copy), else the bare base. */
  async ensureReference(): Promise<void> {
    const { config, lora } = this.k;
    if (this.state.reference === null && (config.sft.enabled || config.model.adapter !== undefined)) {
      await lora.copyAdapter("policy", "reference");
      this.state.reference = "reference";
    }
    lora.select("policy");
  }

  /** Take the current tensors as the rollback target (`ifNone`: only when there is none yet). */
  async markGood(ifNone = false): Promise<void> {
    if (ifNone && this.lastGood) return;
    this.lastGood = await this.snapshot();
  }

  private async snapshot(): Promise<Snapshot> {
    const gs = this.groups().filter((g) => g.optimizer);
    return { values: await Promise.all(gs.map(async (g) => Promise.all(g.tensors.map(async (t) => Float32Array.from(await t.read()))))), opt: await Promise.all(gs.map((g) => g.optimizer!.state())) };
  }

  private restore(s: Snapshot): void {
    this.groups().filter((g) => g.optimizer).forEach((g, i) => {
      g.tensors.forEach((t, j) => restoreTensor(t, s.values[i][j]));
      g.optimizer!.loadState(s.opt[i]);
    });
  }

  /** Count a skipped step; after guards.maxBadSteps in a row, go back to the last good state. */
  async guard(skipped: boolean, what: string): Promise<void> {
    const { state } = this;
    const { config, log } = this.k;
    if (!skipped) {
      state.badStreak = 0;
      return;
    }
    state.badStreak++;
    log(`guard: non-finite loss or gradient at ${what}: update skipped (${state.badStreak}/${config.guards.maxBadSteps} in a row)`);
    if (state.badStreak >= config.guards.maxBadSteps && this.lastGood) {
      this.restore(this.lastGood);
      state.rollbacks++;
      state.badStreak = 0;
      log(`guard: ${config.guards.maxBadSteps} bad steps in a row — rolled back the adapter and optimizer to the last good state (rollback #${state.rollbacks}); training continues with the next data`);
    }
  }

  /** Every checkpoint.every steps (or now with `force`): the adapter and the whole trainer state, atomically. */
  async checkpoint(force = false): Promise<void> {
    const { state } = this;
    const { config, run, lora } = this.k;
    const every = config.checkpoint.every;
    if (!force && !(every > 0 && state.step > 0 && state.step % every === 0)) return;
    state.elapsedSeconds = this.elapsed();
    state.dropout = lora.dropoutState();
    await run.saveCheckpoint(
      state.step,
      async (tmp) => {
        await savePeftAdapter(lora, "policy", join(tmp, "adapter"), { baseModel: this.k.baseModel });
        await writeTrainerState(tmp, state, this.groups());
      },
      { keepLast: config.checkpoint.keepLast, meta: { step: state.step, phase: state.phase } },
    );
    if (state.badStreak === 0) this.lastGood = await this.snapshot(); // never take a failing state as the rollback target
  }

  /** best/ always holds the adapter state.best names. */
  async saveBest(accuracy: number): Promise<void> {
    const dir = join(this.k.run.dir, "best");
    await savePeftAdapter(this.k.lora, "policy", dir, { baseModel: this.k.baseModel });
    this.state.best = { step: this.state.step, accuracy, dir };
  }
}
