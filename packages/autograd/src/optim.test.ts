import { describe, expect, it } from "vitest";
import { CpuBackend } from "./cpu.js";
import { Engine } from "./tensor.js";
import { AdamW } from "./optim.js";
import { learningRate } from "./schedule.js";

describe("AdamW", () => {
  it("matches PyTorch's update rule over three steps (decoupled decay, bias correction)", () => {
    const e = new Engine(new CpuBackend());
    const p = e.tensor([0.5, -1.5, 2], [3], { requiresGrad: true, name: "p" });
    const opt = new AdamW([p], { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.01 });
    const grads = [[0.1, -0.2, 0.3], [0.05, 0.4, -0.1], [-0.3, 0.0, 0.2]];
    // Independent float64 transcription of torch.optim.AdamW (amsgrad=False).
    const ref = [0.5, -1.5, 2], m = [0, 0, 0], v = [0, 0, 0];
    grads.forEach((g, t) => {
      for (let i = 0; i < 3; i++) {
        ref[i] *= 1 - 0.1 * 0.01;
        m[i] = 0.9 * m[i] + 0.1 * g[i];
        v[i] = 0.99 * v[i] + 0.01 * g[i] ** 2;
        const mh = m[i] / (1 - 0.9 ** (t + 1)), vh = v[i] / (1 - 0.99 ** (t + 1));
        ref[i] -= (0.1 * mh) / (Math.sqrt(vh) + 1e-8);
      }
      opt.zeroGrad();
      e.backward([[p, g]]);
      opt.update(0.1);
    });
    const got = p.storage as Float64Array;
    ref.forEach((r, i) => expect(got[i]).toBeCloseTo(r, 12));
  });

  it("clips the global grad norm and reports the norm before clipping", async () => {
    const e = new Engine(new CpuBackend());
    const a = e.tensor([0, 0], [2], { requiresGrad: true });
    const b = e.tensor([0], [1], { requiresGrad: true });
    const opt = new AdamW([a, b], { lr: 1 });
    e.backward([[a, [3, 0]], [b, [4]]]);
    expect(await opt.clipGradNorm(1)).toBeCloseTo(5, 12);
    expect(await opt.gradNorm()).toBeCloseTo(1, 5);
  });

  it("state round-trips for checkpoints", async () => {
    const e = new Engine(new CpuBackend());
    const p = e.tensor([1, 2], [2], { requiresGrad: true });
    const opt = new AdamW([p], { lr: 0.01 });
    e.backward([[p, [0.5, -0.5]]]);
    opt.update(0.01);
    const st = await opt.state();
    const opt2 = new AdamW([p], { lr: 0.01 });
    opt2.loadState(st);
    expect(opt2.step).toBe(1);
    expect(Array.from((await opt2.state()).m[0])).toEqual(Array.from(st.m[0]));
    expect(() => opt2.loadState({ step: 1, m: [[1]], v: [[1]] })).toThrow(/has 2 elements, state has 1/);
  });
});

describe("learning-rate schedules", () => {
  const base = { lr: 1e-3, warmupSteps: 4, totalSteps: 104 };
  it("warms up linearly then follows the schedule", () => {
    expect(learningRate({ ...base, kind: "constant" }, 0)).toBeCloseTo(2e-4, 15);
    expect(learningRate({ ...base, kind: "constant" }, 3)).toBeCloseTo(8e-4, 15);
    expect(learningRate({ ...base, kind: "constant" }, 50)).toBe(1e-3);
    expect(learningRate({ ...base, kind: "linear" }, 54)).toBeCloseTo(5e-4, 15);
    expect(learningRate({ ...base, kind: "cosine" }, 54)).toBeCloseTo(5e-4, 15);
    expect(learningRate({ ...base, kind: "cosine" }, 104)).toBeCloseTo(0, 15);
    expect(learningRate({ ...base, kind: "cosine", minLrRatio: 0.1 }, 104)).toBeCloseTo(1e-4, 15);
  });
  it("rejects a typo in the kind", () => {
    expect(() => learningRate({ ...base, kind: "cosin" as never }, 10)).toThrow(/constant \| linear \| cosine/);
  });
});
