// The length-explosion guard in the GPU decode loop: with it on, each completion must be exactly the unguarded
// completion (same seed) cut where @nr/data's detector first fires on it, with finish reason "repetition"; rows the
// guard does not stop are unchanged, also when a stopped row frees its slot for a queued prompt.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { firstRepetition } from "@nr/data/core";
import type { ModelTokenizer } from "@nr/model";
import { openTinyGenerator, type TinyGenerator } from "./testing.js";
import type { GeneratedSequence, WebGpuGenerator } from "./webgpu.js";

let tiny: TinyGenerator;
let tok: ModelTokenizer;
let gen: WebGpuGenerator;

beforeAll(async () => {
  // a low init scale: greedy decoding falls into short loops within a few dozen tokens
  tiny = await openTinyGenerator("repeat", { seed: 11, std: 0.2 });
  ({ tok, gen } = tiny);
});
afterAll(async () => {
  await tiny?.close();
});

const guard = { maxPeriod: 16, minRepeats: 3, minTokens: 12 };

/** The guarded sequence must be the unguarded one cut at the detector's first firing (or equal when it never fires). */
function expectCut(guarded: GeneratedSequence, free: GeneratedSequence, what: string): boolean {
  const at = firstRepetition(free.tokenIds, guard);
  if (at < 0 || (at === free.tokenIds.length && free.finishReason !== "length")) {
    expect(guarded.tokenIds, what).toEqual(free.tokenIds);
    expect(guarded.finishReason, what).toBe(free.finishReason);
    return false;
  }
  expect(guarded.tokenIds, what).toEqual(free.tokenIds.slice(0, at));
  expect(guarded.logprobs, what).toEqual(free.logprobs.slice(0, at));
  expect(guarded.finishReason, what).toBe("repetition");
  return true;
}

describe("the repetition guard in WebGpuGenerator", () => {
  it("greedy: cuts each looping completion where the detector fires, leaves the others alone", async () => {
    const prompts = ["3 + 4 =", "Tom has 12 apples.", "What is 7 * 8?", "Ann reads 5 pages a day"].map((p) => ({ promptIds: tok.encode(p), n: 1 }));
    const free = await gen.generateIds(prompts, { temperature: 0, maxNewTokens: 96 });
    const cut = await gen.generateIds(prompts, { temperature: 0, maxNewTokens: 96, repetitionStop: guard });
    const fired = prompts.map((_, i) => expectCut(cut[i][0], free[i][0], `prompt ${i}`));
    expect(fired.some(Boolean), "no greedy completion looped: the test model no longer exercises the guard").toBe(true);
  });

  it("sampled rows with continuous batching: a stopped row frees its slot, every row is its unguarded self cut", async () => {
    const prompts = ["1 + 1 =", "Sam buys 3 pens", "9 - 4 ="].map((p) => ({ promptIds: tok.encode(p), n: 3 }));
    const o = { temperature: 0.15, maxNewTokens: 80, seed: 7, maxBatchRows: 4 }; // a cool temperature: loops, but not identical rows
    const free = await gen.generateIds(prompts, o);
    const cut = await gen.generateIds(prompts, { ...o, repetitionStop: guard });
    let fired = 0;
    prompts.forEach((_, i) => free[i].forEach((f, s) => (fired += expectCut(cut[i][s], f, `prompt ${i} sample ${s}`) ? 1 : 0)));
    expect(fired).toBeGreaterThan(0);
  });

  it("a per-prompt setting applies to that prompt only; a bad setting is refused before decoding", async () => {
    const p = tok.encode("3 + 4 =");
    const [a, b] = await gen.generateIds([{ promptIds: p, n: 1, repetitionStop: guard }, { promptIds: p, n: 1 }], { temperature: 0, maxNewTokens: 96 });
    expect(b[0].finishReason).not.toBe("repetition");
    expectCut(a[0], b[0], "per-prompt");
    await expect(gen.generateIds([{ promptIds: p, n: 1 }], { temperature: 0, maxNewTokens: 8, repetitionStop: { minRepeats: 1 } })).rejects.toThrow(/minRepeats/);
  });
});
