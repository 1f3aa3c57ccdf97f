// Learning-rate schedules with linear warmup, as in transformers' get_{constant,linear,cosine}_schedule_with_warmup.
export type ScheduleKind = "constant" | "linear" | "cosine";

export interface ScheduleConfig {
  kind: ScheduleKind;
  lr: number;
  warmupSteps: number;
  totalSteps: number;
  /** Final LR as a fraction of lr for linear/cosine (default 0). */
  minLrRatio?: number;
}

/** LR for optimizer step `step` (0-based: the first update uses step 0). */
export function learningRate(c: ScheduleConfig, step: number): number {
  if (!(c.lr >= 0) || !Number.isFinite(c.lr)) throw new Error(`schedule: lr must be a finite number ≥ 0 (got ${c.lr})`);
  if (c.warmupSteps < 0 || c.totalSteps < 1) throw new Error(`schedule: need warmupSteps ≥ 0 and totalSteps ≥ 1 (got ${c.warmupSteps}, ${c.totalSteps})`);
  if (step < c.warmupSteps) return (c.lr * (step + 1)) / (c.warmupSteps + 1);
  if (c.kind === "constant") return c.lr;
  const floor = c.minLrRatio ?? 0;
  const span = Math.max(1, c.totalSteps - c.warmupSteps);
  const progress = Math.min(1, (step - c.warmupSteps) / span);
  const factor = c.kind === "linear" ? 1 - progress : 0.5 * (1 + Math.cos(Math.PI * progress));
  if (c.kind !== "linear" && c.kind !== "cosine") throw new Error(`schedule: kind must be constant | linear | cosine (got "${c.kind as string}")`);
  return c.lr * (floor + (1 - floor) * factor);
}
