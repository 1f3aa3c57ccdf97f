// AdamW over the trainable tensors, global grad-norm clipping and gradient accumulation. The optimizer state (m, v)
// mirrors the parameters one to one (llm.c style); its layout is stable so it can be checkpointed and restored.
import type { Tensor } from "./tensor.js";
import type { Storage } from "./backend.js";

export interface AdamWConfig {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

export class AdamW {
  step = 0;
  private m: Storage[];
  private v: Storage[];
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;

  constructor(readonly params: Tensor[], cfg: AdamWConfig) {
    if (params.length === 0) throw new Error("AdamW: no trainable parameters");
    for (const p of params) if (!p.requiresGrad) throw new Error(`AdamW: parameter "${p.name}" does not require grad`);
    this.beta1 = cfg.beta1 ?? 0.9;
    this.beta2 = cfg.beta2 ?? 0.999;
    this.eps = cfg.eps ?? 1e-8;
    this.weightDecay = cfg.weightDecay ?? 0;
    const B = params[0].engine.backend;
    // moments laid out like their parameter (the same row shards for a sharded table)
    const zero = (p: Tensor) => {
      const s = B.allocLike(p.storage, p.size, "f32");
      B.fill(s, 0, p.size);
      return s;
    };
    this.m = params.map(zero);
    this.v = params.map(zero);
  }

  get parameterCount(): number {
    return this.params.reduce((a, p) => a + p.size, 0);
  }

  /** Global L2 norm of all gradients (missing grads count as zero). */
  async gradNorm(): Promise<number> {
    const grads = this.params.filter((p) => p.grad).map((p) => [p.grad!.storage, p.size] as const);
    return Math.sqrt(await this.params[0].engine.backend.sumSquaresMany(grads));
  }

  /** Scale gradients so their global norm is at most maxNorm; returns the norm before clipping. */
  async clipGradNorm(maxNorm: number): Promise<number> {
    const norm = await this.gradNorm();
    if (!Number.isFinite(norm)) return norm; // caller decides (skip the step); never scale by NaN
    const factor = maxNorm / (norm + 1e-6);
    if (factor < 1) for (const p of this.params) if (p.grad) p.engine.backend.scale(p.grad.storage, factor, p.size);
    return norm;
  }

  /** Divide accumulated gradients by the number of micro-batches. */
  scaleGrads(alpha: number) {
    for (const p of this.params) if (p.grad) p.engine.backend.scale(p.grad.storage, alpha, p.size);
  }

  /** One update with learning rate `lr` (from a schedule). */
  update(lr: number) {
    this.step++;
    this.params.forEach((p, i) => {
      if (!p.grad) return;
      p.engine.backend.adamw(p.storage, p.grad.storage, this.m[i], this.v[i], p.size, {
        lr,
        beta1: this.beta1,
        beta2: this.beta2,
        eps: this.eps,
        weightDecay: this.weightDecay,
        step: this.step,
      });
    });
  }

  zeroGrad() {
    for (const p of this.params) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** Optimizer state for checkpoints: step and m/v per parameter. */
  async state(): Promise<{ step: number; m: Float64Array[]; v: Float64Array[] }> {
    const B = this.params[0].engine.backend;
    const m = await Promise.all(this.m.map((s, i) => B.read(s, this.params[i].size, "f32")));
    const v = await Promise.all(this.v.map((s, i) => B.read(s, this.params[i].size, "f32")));
    return { step: this.step, m, v };
  }

  loadState(state: { step: number; m: ArrayLike<number>[]; v: ArrayLike<number>[] }) {
    if (state.m.length !== this.params.length) throw new Error(`AdamW.loadState: ${state.m.length} tensors in the state, ${this.params.length} parameters`);
    const B = this.params[0].engine.backend;
    this.params.forEach((p, i) => {
      if (state.m[i].length !== p.size) throw new Error(`AdamW.loadState: "${p.name}" has ${p.size} elements, state has ${state.m[i].length}`);
      B.free(this.m[i]);
      B.free(this.v[i]);
      // laid out like the parameter (row shards of a sharded table)
      const cols = p.shape[p.shape.length - 1] ?? 1;
      const put = (values: ArrayLike<number>) => {
        const s = B.allocLike(p.storage, p.size, "f32");
        B.writeRows(s, 0, values, cols, "f32");
        return s;
      };
      this.m[i] = put(state.m[i]);
      this.v[i] = put(state.v[i]);
    });
    this.step = state.step;
  }
}
