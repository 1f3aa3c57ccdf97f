// Tensors, the tape and scopes. A Tensor is a shape + dtype over backend storage (a GPU buffer, or a Float64Array
// on the CPU reference backend). Ops (ops.ts) run their forward through the backend and, when any input needs a
// gradient and recording is on, push a backward closure onto the engine's tape — forward and backward side by side,
// as in micrograd. `engine.backward(...)` walks the tape in reverse; gradients accumulate (+=), so fan-out works.
// Lifetimes are explicit: `engine.scope(fn)` frees every tensor made inside except what fn returns or `keep`s.
import type { Backend, Storage } from "./backend.js";

export type DType = "f32" | "f16" | "u32";

export class Tensor {
  /** Gradient (same shape, f32 storage), created on first accumulation. */
  grad: Tensor | null = null;
  private disposed = false;

  constructor(
    readonly engine: Engine,
    readonly shape: readonly number[],
    readonly dtype: DType,
    public storage: Storage,
    public requiresGrad = false,
    public name = "",
    /** Views share storage with their base and are freed with it. */
    readonly ownsStorage = true,
  ) {}

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  get isDisposed() {
    return this.disposed;
  }

  /** Read values to the host (float64). */
  async read(): Promise<Float64Array> {
    return this.engine.backend.read(this.storage, this.size, this.dtype);
  }

  dispose() {
    if (this.disposed) return;
    this.disposed = true;
    if (this.ownsStorage) this.engine.backend.free(this.storage);
    this.grad?.dispose();
    this.grad = null;
  }
}

interface TapeEntry {
  label: string;
  backward: () => void;
}

export class Engine {
  private tape: TapeEntry[] = [];
  private gradDepth = 0; // > 0 inside noGrad
  private scopes: Tensor[][] = [];

  constructor(readonly backend: Backend) {}

  get recording(): boolean {
    return this.gradDepth === 0;
  }

  get tapeLength(): number {
    return this.tape.length;
  }

  // -- creation -------------------------------------------------------------------------------------------------
  track(t: Tensor): Tensor {
    const top = this.scopes[this.scopes.length - 1];
    if (top) top.push(t);
    return t;
  }

  /** A tensor from host values (f32/f16 on the GPU, float64 on the CPU backend). */
  tensor(values: ArrayLike<number>, shape: number[], opts: { dtype?: DType; requiresGrad?: boolean; name?: string } = {}): Tensor {
    const dtype = opts.dtype ?? "f32";
    const n = shape.reduce((a, b) => a * b, 1);
    if (values.length !== n) throw new Error(`tensor "${opts.name ?? ""}": ${values.length} values for shape [${shape}] (${n} elements)`);
    return this.track(new Tensor(this, shape, dtype, this.backend.upload(values, dtype), opts.requiresGrad ?? false, opts.name ?? ""));
  }

  /**
   * An uninitialised [rows, cols] matrix (an embedding table or LM head) filled later with `writeRows`; on the GPU it
   * is held as row shards when it would not fit one storage binding, and its gradient is sharded the same way.
   */
  rowsTensor(shape: [number, number], opts: { dtype?: DType; requiresGrad?: boolean; name?: string } = {}): Tensor {
    const dtype = opts.dtype ?? "f32";
    return this.track(new Tensor(this, shape, dtype, this.backend.allocRows(shape[0], shape[1], dtype), opts.requiresGrad ?? false, opts.name ?? ""));
  }

  /** Write host values (whole rows) into a [rows, cols] tensor from row `row0` on. */
  writeRows(t: Tensor, row0: number, values: ArrayLike<number>) {
    if (t.shape.length !== 2) throw new Error(`writeRows: "${t.name}" is [${t.shape}], not a matrix`);
    this.backend.writeRows(t.storage, row0, values, t.shape[1], t.dtype);
  }

  /** An uninitialised tensor (the op that creates it writes every element). */
  empty(shape: readonly number[], dtype: DType = "f32", name = ""): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    return this.track(new Tensor(this, shape, dtype, this.backend.alloc(n, dtype), false, name));
  }

  zeros(shape: readonly number[], name = ""): Tensor {
    const t = this.empty(shape, "f32", name);
    this.backend.fill(t.storage, 0, t.size);
    return t;
  }

  /** A view with another shape over the same storage (same element count); gradients flow through it. */
  view(t: Tensor, shape: number[]): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== t.size) throw new Error(`view: cannot view [${t.shape}] (${t.size} elements) as [${shape}] (${n})`);
    const v = this.track(new Tensor(this, shape, t.dtype, t.storage, false, `${t.name}:view`, false));
    if (this.recording && t.requiresGrad) {
      v.requiresGrad = true;
      this.record("view", () => {
        if (v.grad) this.backend.axpy(1, v.grad.storage, this.gradOf(t).storage, t.size);
      });
    }
    return v;
  }

  // -- tape -----------------------------------------------------------------------------------------------------
  /** True when an op over these inputs must record a backward. */
  needsGrad(...inputs: Array<Tensor | null | undefined>): boolean {
    return this.recording && inputs.some((t) => t?.requiresGrad);
  }

  record(label: string, backward: () => void) {
    this.tape.push({ label, backward });
  }

  /** The gradient tensor of `t`, zero-filled on first use. */
  gradOf(t: Tensor): Tensor {
    if (!t.grad) {
      const g = new Tensor(this, t.shape, "f32", this.backend.allocLike(t.storage, t.size, "f32"), false, `${t.name}.grad`);
      this.backend.fill(g.storage, 0, g.size);
      t.grad = g;
    }
    return t.grad;
  }

  /**
   * Back-propagate from outputs with given upstream gradients (e.g. [[logp, dLogp], [entropy, dEntropy]]), or from a
   * scalar loss (seed 1). Runs and clears the tape.
   */
  backward(seeds: Array<[Tensor, ArrayLike<number> | Tensor]> | Tensor) {
    const list: Array<[Tensor, ArrayLike<number> | Tensor]> = seeds instanceof Tensor ? [[seeds, [1]]] : seeds;
    for (const [t, g] of list) {
      if (!t.requiresGrad) throw new Error(`backward: "${t.name || "output"}" does not depend on any trainable tensor`);
      const gs = g instanceof Tensor ? g : null;
      if (gs && gs.size !== t.size) throw new Error(`backward: gradient for "${t.name}" has ${gs.size} elements, tensor has ${t.size}`);
      if (!gs && (g as ArrayLike<number>).length !== t.size) throw new Error(`backward: gradient for "${t.name}" has ${(g as ArrayLike<number>).length} values, tensor has ${t.size}`);
      const up = gs ? gs.storage : this.backend.upload(g as ArrayLike<number>, "f32");
      this.backend.axpy(1, up, this.gradOf(t).storage, t.size);
      if (!gs) this.backend.free(up);
    }
    const tape = this.tape;
    this.tape = [];
    for (let i = tape.length - 1; i >= 0; i--) tape[i].backward();
  }

  /** Drop the recorded tape without running it (e.g. after a no-update forward). */
  clearTape() {
    this.tape = [];
  }

  noGrad<T>(fn: () => T): T {
    this.gradDepth++;
    try {
      return fn();
    } finally {
      this.gradDepth--;
    }
  }

  /**
   * Run fn; free every tensor created inside it except those returned (a Tensor, or an array/object of them) or
   * passed to `keep`. Async functions are awaited.
   */
  scope<T>(fn: (keep: (t: Tensor) => Tensor) => T): T {
    const created: Tensor[] = [];
    const kept = new Set<Tensor>();
    this.scopes.push(created);
    const keep = (t: Tensor) => (kept.add(t), t);
    const finish = (result: T) => {
      this.scopes.pop();
      collect(result, kept);
      const outer = this.scopes[this.scopes.length - 1];
      for (const t of created) {
        if (kept.has(t)) outer?.push(t);
        else t.dispose();
      }
      return result;
    };
    let result: T;
    try {
      result = fn(keep);
    } catch (e) {
      finish(undefined as T);
      throw e;
    }
    if (result instanceof Promise) return result.then(finish, (e) => (finish(undefined as T), Promise.reject(e))) as T;
    return finish(result);
  }

  /**
   * Gradient checkpointing: run `fn` without recording; in backward, recompute it with recording on and
   * back-propagate the saved output gradients through the recomputation. Saves the activations inside fn.
   */
  /** Host RNGs drawn from inside forward passes (e.g. LoRA dropout masks); see {@link registerRng}. */
  private readonly rngs: Array<{ getState(): number; setState(s: number): void }> = [];

  /**
   * Register a host RNG used inside forwards: `checkpoint` replays it, so a recomputed forward draws the same values
   * (the same dropout masks) as the original one, and the stream continues afterwards as if it ran once.
   */
  registerRng(r: { getState(): number; setState(s: number): void }) {
    this.rngs.push(r);
  }

  checkpoint(fn: () => Tensor[], label = "checkpoint"): Tensor[] {
    // Whether anything inside fn is trainable (e.g. LoRA weights) is only known by running it with recording on,
    // so outputs are marked as needing grad; a recompute that records nothing trainable makes backward a no-op.
    if (!this.recording) return fn();
    const rngBefore = this.rngs.map((r) => r.getState());
    // The layer's internals are freed as soon as its outputs exist: that is the memory checkpointing saves.
    const outputs = this.scope(() => this.noGrad(fn));
    for (const o of outputs) o.requiresGrad = true;
    this.record(label, () => {
      const outerTape = this.tape;
      this.tape = [];
      const rngAfter = this.rngs.map((r) => r.getState());
      this.rngs.forEach((r, i) => r.setState(rngBefore[i]));
      // Recompute with recording on; inputs keep their requiresGrad so their grads accumulate as usual.
      this.scope(() => {
        const again = fn();
        const seeds: Array<[Tensor, Tensor]> = [];
        for (let i = 0; i < again.length; i++) if (outputs[i].grad && again[i].requiresGrad) seeds.push([again[i], outputs[i].grad!]);
        if (seeds.length) this.backward(seeds);
        return null;
      });
      this.tape = outerTape;
      this.rngs.forEach((r, i) => r.setState(rngAfter[i]));
    });
    return outputs;
  }
}

function collect(x: unknown, into: Set<Tensor>) {
  if (x instanceof Tensor) into.add(x);
  else if (Array.isArray(x)) for (const v of x) collect(v, into);
  else if (x && typeof x === "object" && !(x instanceof Promise)) for (const v of Object.values(x)) collect(v, into);
}
