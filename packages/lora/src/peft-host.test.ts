// Host-side PEFT adapters (no GPU): write → read round trip, shape checks against the model, and mergedWeight
// against a float64 W + s·B·A computed here.
import { afterAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { paramName, parameterSpecs, makeModelConfig } from "@nr/model";
import { freshSeed, rng } from "@nr/kernels/testing";
import { resolveLoraConfig, LORA_TARGETS, loraScale } from "./lora.js";
import { moduleKey, type HostAdapter } from "./merge.js";
import { mergedWeight, readPeftAdapterToHost, TARGET_ROLE, writeHostAdapter } from "./peft-host.js";

const root = mkdtempSync(join(tmpdir(), "nr-peft-host-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const base = { architecture: "qwen2" as const, hiddenSize: 24, intermediateSize: 40, numLayers: 2, numHeads: 3, numKvHeads: 1, vocabSize: 50 };
const config = makeModelConfig(base);
const seed = freshSeed();

function randomAdapter(r: number, rand: () => number): HostAdapter {
  const lora = resolveLoraConfig({ r, alpha: 3 * r, targets: ["q_proj", "v_proj", "down_proj"] });
  const shapes = new Map(parameterSpecs(config).map((p) => [p.name, p.shape]));
  const modules: HostAdapter["modules"] = new Map();
  for (let layer = 0; layer < config.numLayers; layer++)
    for (const target of lora.targets) {
      const [outF, inF] = shapes.get(paramName(TARGET_ROLE[target], layer))!;
      const A = Float64Array.from({ length: r * inF }, () => Math.fround(rand() - 0.5));
      const B = Float64Array.from({ length: outF * r }, () => Math.fround(rand() - 0.5));
      modules.set(moduleKey(layer, target), { layer, target, A, B, inF, outF });
    }
  return { config: lora, modules };
}

describe(`host PEFT adapters (seed ${seed})`, () => {
  it("write → read gives the same config and factors; a missing or mis-shaped tensor is named", async () => {
    const a = randomAdapter(3, rng(seed));
    await writeHostAdapter(a, join(root, "a"));
    const b = await readPeftAdapterToHost(join(root, "a"), config);
    expect(b.config).toEqual(a.config);
    expect([...b.modules.keys()].sort()).toEqual([...a.modules.keys()].sort());
    for (const [k, m] of a.modules) expect({ A: [...b.modules.get(k)!.A], B: [...b.modules.get(k)!.B] }).toEqual({ A: [...m.A], B: [...m.B] });
    const other = makeModelConfig({ ...base, hiddenSize: 30 });
    await expect(readPeftAdapterToHost(join(root, "a"), other)).rejects.toThrow(/adapter_model\.safetensors: .*lora_A\.weight has \d+ values, expected \[3, 30\]/);
    const deeper = makeModelConfig({ ...base, numLayers: 3 });
    await expect(readPeftAdapterToHost(join(root, "a"), deeper)).rejects.toThrow(/missing base_model\.model\.model\.layers\.2\.self_attn\.q_proj\.lora_A\.weight/);
  });

  it("mergedWeight is W + s·B·A on targeted weights and leaves the others untouched", () => {
    const rand = rng(seed + 1);
    const a = randomAdapter(2, rand);
    const s = loraScale(a.config);
    for (const spec of parameterSpecs(config)) {
      const n = spec.shape.reduce((x, y) => x * y, 1);
      const w = Float32Array.from({ length: n }, () => rand() - 0.5);
      const got = mergedWeight(a, spec.name, w);
      const target = LORA_TARGETS.find((t) => spec.layer !== null && spec.name === paramName(TARGET_ROLE[t], spec.layer));
      const m = target && a.config.targets.includes(target) ? a.modules.get(moduleKey(spec.layer!, target)) : undefined;
      if (!m) {
        expect(got).toBe(w);
        continue;
      }
      let worst = 0;
      for (let o = 0; o < m.outF; o++)
        for (let i = 0; i < m.inF; i++) {
          let d = 0;
          for (let k = 0; k < a.config.r; k++) d += m.B[o * a.config.r + k] * m.A[k * m.inF + i];
          worst = Math.max(worst, Math.abs(got[o * m.inF + i] - (w[o * m.inF + i] + s * d)));
        }
      expect(worst).toBeLessThan(1e-12);
    }
  });
});
