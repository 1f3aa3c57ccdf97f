// LoRA over a frozen base: y = base(x) + s · (dropout(x) · Aᵀ) · Bᵀ with s = α/r (or α/√r, rsLoRA), the low-rank
// term added in place into the base's output (@nr/autograd addLowRankInPlace).
// Several named adapters can live on one base; `select(name | null)` picks the one a forward uses (the RL loop
// switches between the policy adapter, a frozen reference copy, and the bare base). Only adapter tensors are
// trainable; the base projections never get a gradient buffer.
import { addLowRankInPlace, linear, mul, type Engine, type Tensor } from "@nr/autograd";
import type { Decoder, DecoderLayer, Projection } from "@nr/model";
import { Mulberry32 } from "@nr/kernels";

export const LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];

export interface LoraConfig {
  r: number;
  alpha: number;
  /** Default: all seven projections. */
  targets?: LoraTarget[];
  dropout?: number;
  /** Scale α/√r instead of α/r. */
  rslora?: boolean;
  seed?: number;
}

export interface ResolvedLoraConfig extends Required<LoraConfig> {}

export function resolveLoraConfig(c: LoraConfig): ResolvedLoraConfig {
  if (!Number.isInteger(c.r) || c.r < 1) throw new Error(`lora: r must be a positive integer (got ${c.r})`);
  if (!(c.alpha > 0)) throw new Error(`lora: alpha must be > 0 (got ${c.alpha})`);
  const targets = c.targets ?? [...LORA_TARGETS];
  for (const t of targets) if (!LORA_TARGETS.includes(t)) throw new Error(`lora: unknown target "${t}"; allowed: ${LORA_TARGETS.join(", ")}`);
  const dropout = c.dropout ?? 0;
  if (!(dropout >= 0 && dropout < 1)) throw new Error(`lora: dropout must be in [0, 1) (got ${dropout})`);
  return { r: c.r, alpha: c.alpha, targets, dropout, rslora: c.rslora ?? false, seed: c.seed ?? 0 };
}

export function loraScale(c: Pick<ResolvedLoraConfig, "r" | "alpha" | "rslora">): number {
  return c.rslora ? c.alpha / Math.sqrt(c.r) : c.alpha / c.r;
}

export interface AdapterWeights {
  /** [r, in] */
  A: Tensor;
  /** [out, r] */
  B: Tensor;
}

/** The dropout masks' generator: its state is visible, so checkpoint recomputes and resumed runs replay it. */
export class DropoutRng extends Mulberry32 {}

/** A projection with named LoRA adapters over a frozen base projection. */
export class LoraProjection implements Projection {
  readonly adapters = new Map<string, { weights: AdapterWeights; config: ResolvedLoraConfig }>();
  active: string | null = null;
  /** Dropout is applied only while training. */
  training = false;
  /** Dropout-mask RNG (mulberry32) with its state visible: checkpoint recomputes and resumed runs replay it. */
  readonly dropoutRng = new DropoutRng(0);

  constructor(
    readonly engine: Engine,
    readonly base: Projection,
    readonly target: LoraTarget,
    readonly layer: number,
  ) {
    engine.registerRng(this.dropoutRng);
  }

  get outFeatures() {
    return this.base.outFeatures;
  }
  get inFeatures() {
    return this.base.inFeatures;
  }

  /** PEFT init: A ~ Kaiming-uniform(a=√5) = U(−1/√in, 1/√in), B = 0. */
  addAdapter(name: string, config: ResolvedLoraConfig, seed: number): AdapterWeights {
    if (this.adapters.has(name)) throw new Error(`lora: adapter "${name}" already exists on layer ${this.layer} ${this.target}`);
    const rand = new Mulberry32(seed); // seeded: a deterministic PEFT-style init
    const bound = 1 / Math.sqrt(this.inFeatures);
    const a = Array.from({ length: config.r * this.inFeatures }, () => (rand.next() * 2 - 1) * bound);
    const weights = {
      A: this.engine.tensor(a, [config.r, this.inFeatures], { requiresGrad: true, name: `${name}.layers.${this.layer}.${this.target}.lora_A` }),
      B: this.engine.tensor(new Float64Array(this.outFeatures * config.r), [this.outFeatures, config.r], { requiresGrad: true, name: `${name}.layers.${this.layer}.${this.target}.lora_B` }),
    };
    this.adapters.set(name, { weights, config });
    this.dropoutRng.setState(config.seed ^ 0x5eed ^ (this.layer * 7919 + LORA_TARGETS.indexOf(this.target)));
    return weights;
  }

  /** Replace an adapter's values (loading); shapes must match. */
  setAdapter(name: string, config: ResolvedLoraConfig, A: ArrayLike<number>, B: ArrayLike<number>, trainable: boolean): AdapterWeights {
    const old = this.adapters.get(name);
    if (old) {
      old.weights.A.dispose();
      old.weights.B.dispose();
    }
    if (A.length !== config.r * this.inFeatures) throw new Error(`lora: layer ${this.layer} ${this.target} lora_A has ${A.length} values, expected [${config.r}, ${this.inFeatures}]`);
    if (B.length !== this.outFeatures * config.r) throw new Error(`lora: layer ${this.layer} ${this.target} lora_B has ${B.length} values, expected [${this.outFeatures}, ${config.r}]`);
    const weights = {
      A: this.engine.tensor(A, [config.r, this.inFeatures], { requiresGrad: trainable, name: `${name}.layers.${this.layer}.${this.target}.lora_A` }),
      B: this.engine.tensor(B, [this.outFeatures, config.r], { requiresGrad: trainable, name: `${name}.layers.${this.layer}.${this.target}.lora_B` }),
    };
    this.adapters.set(name, { weights, config });
    return weights;
  }

  forward(x: Tensor): Tensor {
    const y = this.base.forward(x);
    const ad = this.active ? this.adapters.get(this.active) : undefined;
    if (!ad) return y;
    const { A, B } = ad.weights;
    let xin = x;
    const p = ad.config.dropout;
    if (this.training && p > 0) {
      const keep = Array.from({ length: x.size }, () => (this.dropoutRng.next() < p ? 0 : 1 / (1 - p)));
      xin = mul(x, this.engine.tensor(keep, [...x.shape]));
    }
    return addLowRankInPlace(y, linear(xin, A), B, loraScale(ad.config));
  }
}

const LAYER_SLOTS: Record<LoraTarget, keyof DecoderLayer> = {
  q_proj: "q",
  k_proj: "k",
  v_proj: "v",
  o_proj: "o",
  gate_proj: "gate",
  up_proj: "up",
  down_proj: "down",
};

/** The LoRA view of a decoder: its wrapped projections and the adapters on them. */
export class LoraModel {
  readonly projections: LoraProjection[] = [];
  readonly configs = new Map<string, ResolvedLoraConfig>();

  constructor(readonly decoder: Decoder) {
    // Wrap every projection once; adapters decide which targets they use.
    decoder.weights.layers.forEach((L, i) => {
      for (const t of LORA_TARGETS) {
        const slot = LAYER_SLOTS[t];
        const cur = L[slot] as Projection;
        const wrapped = cur instanceof LoraProjection ? cur : new LoraProjection(decoder.engine, cur, t, i);
        (L as unknown as Record<string, Projection>)[slot] = wrapped;
        this.projections.push(wrapped);
      }
    });
  }

  /** Add a freshly initialised adapter (PEFT init) and make it active. */
  addAdapter(name: string, config: LoraConfig): Tensor[] {
    const c = resolveLoraConfig(config);
    this.configs.set(name, c);
    const params: Tensor[] = [];
    this.projections.forEach((p, i) => {
      if (!c.targets.includes(p.target)) return;
      const w = p.addAdapter(name, c, c.seed * 1_000_003 + i);
      params.push(w.A, w.B);
    });
    this.select(name);
    return params;
  }

  /** Copy adapter `from` into a new frozen adapter `to` (e.g. the RL reference policy = the SFT adapter). */
  async copyAdapter(from: string, to: string, opts: { trainable?: boolean } = {}) {
    const c = this.configs.get(from);
    if (!c) throw new Error(`lora: no adapter named "${from}"`);
    this.configs.set(to, c);
    for (const p of this.projections) {
      const ad = p.adapters.get(from);
      if (!ad) continue;
      p.setAdapter(to, c, await ad.weights.A.read(), await ad.weights.B.read(), opts.trainable ?? false);
    }
  }

  /** Free adapter `name`'s weights and forget it (the bare base is selected where it was active). */
  removeAdapter(name: string) {
    if (!this.configs.has(name)) throw new Error(`lora: no adapter named "${name}"`);
    for (const p of this.projections) {
      const ad = p.adapters.get(name);
      if (!ad) continue;
      ad.weights.A.dispose();
      ad.weights.B.dispose();
      p.adapters.delete(name);
      if (p.active === name) p.active = null;
    }
    this.configs.delete(name);
  }

  /** Use adapter `name` in forwards, or null for the bare base. */
  select(name: string | null) {
    if (name !== null && !this.configs.has(name)) throw new Error(`lora: no adapter named "${name}"; have ${[...this.configs.keys()].join(", ") || "none"}`);
    for (const p of this.projections) p.active = name !== null && p.adapters.has(name) ? name : null;
  }

  get active(): string | null {
    return this.projections.find((p) => p.active)?.active ?? null;
  }

  /** Run fn with another adapter (or the base) selected, then restore. */
  withAdapter<T>(name: string | null, fn: () => T): T {
    const prev = this.active;
    this.select(name);
    try {
      return fn();
    } finally {
      this.select(prev);
    }
  }

  /** States of every projection's dropout RNG (saved in trainer checkpoints so a resumed run draws the same masks). */
  dropoutState(): number[] {
    return this.projections.map((p) => p.dropoutRng.getState());
  }

  setDropoutState(states: readonly number[]) {
    if (states.length !== this.projections.length) throw new Error(`lora: ${states.length} dropout RNG states for ${this.projections.length} projections`);
    this.projections.forEach((p, i) => p.dropoutRng.setState(states[i]));
  }

  setTraining(on: boolean) {
    for (const p of this.projections) p.training = on;
  }

  /** Trainable tensors of an adapter, in a stable order (layer, target, A then B). */
  parameters(name: string): Tensor[] {
    const out: Tensor[] = [];
    for (const p of this.projections) {
      const ad = p.adapters.get(name);
      if (ad) out.push(ad.weights.A, ad.weights.B);
    }
    return out;
  }

  parameterCount(name: string): number {
    return this.parameters(name).reduce((a, t) => a + t.size, 0);
  }
}

/** LoRA parameters for a config without building anything: Σ over layers and targets of r·(in + out). */
export function loraParameterCount(shape: { numLayers: number; hiddenSize: number; intermediateSize: number; numHeads: number; numKvHeads: number; headDim: number }, c: LoraConfig): number {
  const rc = resolveLoraConfig(c);
  const H = shape.hiddenSize, q = shape.numHeads * shape.headDim, kv = shape.numKvHeads * shape.headDim, I = shape.intermediateSize;
  const dims: Record<LoraTarget, [number, number]> = {
    q_proj: [H, q],
    k_proj: [H, kv],
    v_proj: [H, kv],
    o_proj: [q, H],
    gate_proj: [H, I],
    up_proj: [H, I],
    down_proj: [I, H],
  };
  return shape.numLayers * rc.targets.reduce((s, t) => s + rc.r * (dims[t][0] + dims[t][1]), 0);
}
