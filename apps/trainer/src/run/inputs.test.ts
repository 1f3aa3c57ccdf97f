import { Rng } from "@nr/data";
import { describe, expect, it } from "vitest";
import { applyOverrides, DEFAULT_CONFIG, validateConfig } from "./config.js";
import { drawExamples } from "./inputs.js";

const seeded = (seed: number) => (ids: number[]) => new Rng(seed).shuffle(ids);

describe("sft.maxExamples: the cold start's draw of worked solutions", () => {
  const examples = Array.from({ length: 50 }, (_, i) => `ex${i}`);

  it("keeps every example when unset or not smaller than the set", () => {
    expect(drawExamples(examples, undefined, seeded(1))).toEqual(examples);
    expect(drawExamples(examples, 50, seeded(1))).toEqual(examples);
    expect(drawExamples(examples, 80, seeded(1))).toEqual(examples);
  });

  it("draws exactly max distinct examples, in their original order, the same ones for a seed", () => {
    const a = drawExamples(examples, 12, seeded(7));
    expect(a).toHaveLength(12);
    expect(new Set(a).size).toBe(12);
    const pos = a.map((x) => examples.indexOf(x));
    expect(pos).toEqual([...pos].sort((x, y) => x - y));
    expect(drawExamples(examples, 12, seeded(7))).toEqual(a);
    // Another seed draws another subset (not the first 12, not the same set).
    const b = drawExamples(examples, 12, seeded(8));
    expect(b).not.toEqual(a);
    expect(a).not.toEqual(examples.slice(0, 12));
  });

  it("is a validated config key: an integer ≥ 1", () => {
    const ok = applyOverrides(DEFAULT_CONFIG as unknown as Record<string, unknown>, { "sft.maxExamples": 64 });
    expect(() => validateConfig(ok)).not.toThrow();
    const bad = applyOverrides(DEFAULT_CONFIG as unknown as Record<string, unknown>, { "sft.maxExamples": 0 });
    expect(() => validateConfig(bad)).toThrow(/sft\.maxExamples/);
  });
});
