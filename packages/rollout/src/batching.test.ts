// Continuous batching: with fewer slots than sequences, finished rows leave and queued prompts join; every sequence
// must come out exactly as in one static batch (greedy, and sampled with a fixed seed — a row's draws depend on its
// sequence, not on its slot or on when it joined). Also: per-prompt seeds and settings in one batch, stop strings
// that end inside a token.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repetitionPenaltyReference } from "@nr/kernels";
import { loadModel, referenceForward, type ModelTokenizer } from "@nr/model";
import { openTinyGenerator, type TinyGenerator } from "./testing.js";
import { WebGpuGenerator, type PromptSpec } from "./webgpu.js";

let tiny: TinyGenerator;
let dir: string;
let tok: ModelTokenizer;
let gen: WebGpuGenerator;

beforeAll(async () => {
  tiny = await openTinyGenerator("batching", { seed: 11, std: 0.3 });
  ({ dir, tok, gen } = tiny);
});
afterAll(async () => {
  await tiny?.close();
});

const strip = (r: { tokenIds: number[]; logprobs: number[]; finishReason: string; text: string }[][]) => r.map((p) => p.map((s) => ({ ids: s.tokenIds, lp: s.logprobs, f: s.finishReason, t: s.text })));

describe("continuous batching", () => {
  // Different prompt lengths and budgets so rows finish at different steps and later prompts join mid-flight.
  const texts = ["1 + 2 =", "Tom has 12 apples and eats", "x", "What is 7 * 6?", "abc", "Sam buys 3 pens at 2 dollars"];
  const budgets = [3, 9, 5, 12, 2, 7];
  const prompts = (): PromptSpec[] => texts.map((t, i) => ({ promptIds: tok.encode(t), n: i % 2 ? 2 : 1, maxNewTokens: budgets[i] }));

  it("greedy: 3 slots give the same sequences as one static batch, and the slots stay busy", async () => {
    const stat = await gen.generateIds(prompts(), { temperature: 0, maxNewTokens: 1 });
    const staticSteps = gen.lastTiming!.steps;
    const cont = await gen.generateIds(prompts(), { temperature: 0, maxNewTokens: 1, maxBatchRows: 3 });
    const t = gen.lastTiming!;
    expect(strip(cont)).toEqual(strip(stat));
    expect(t.rows).toBe(3);
    // 9 sequences through 3 slots: more steps than the static batch, each step with more than one live row on average.
    expect(t.steps).toBeGreaterThan(staticSteps);
    expect(t.meanLiveRows).toBeGreaterThan(2);
    expect(t.prefillTokens).toBe(texts.reduce((a, s) => a + tok.encode(s).length, 0));
  });

  it("sampling with a fixed call seed: identical to the static batch at any number of slots", async () => {
    const o = { temperature: 1.1, topP: 0.95, topK: 50, maxNewTokens: 1, seed: 1234 };
    const stat = await gen.generateIds(prompts(), o);
    for (const rows of [2, 4]) {
      const cont = await gen.generateIds(prompts(), { ...o, maxBatchRows: rows });
      expect(strip(cont), `maxBatchRows ${rows}`).toEqual(strip(stat));
    }
    // The seed matters.
    const other = await gen.generateIds(prompts(), { ...o, seed: 99 });
    expect(strip(other)).not.toEqual(strip(stat));
  });

  it("a prompt with its own seed samples the same alone as in any batch; per-prompt settings mix in one batch", async () => {
    const mine: PromptSpec = { promptIds: tok.encode("Sam buys 3 pens"), n: 3, seed: 77, temperature: 0.8, minP: 0.05, maxNewTokens: 6 };
    const alone = await gen.generateIds([mine], { temperature: 1, maxNewTokens: 1 });
    const mixed = await gen.generateIds([{ promptIds: tok.encode("zz"), n: 1, temperature: 1.3, seed: 5, maxNewTokens: 4 }, mine, { promptIds: tok.encode("q"), n: 1, temperature: 0, maxNewTokens: 8 }], { temperature: 1, maxNewTokens: 1, maxBatchRows: 4 });
    expect(strip([mixed[1]])).toEqual(strip(alone));
    const greedyAlone = await gen.generateIds([{ promptIds: tok.encode("q"), n: 1 }], { temperature: 0, maxNewTokens: 8 });
    expect(strip([mixed[2]])).toEqual(strip(greedyAlone));
  });

  it("refuses a prompt whose n exceeds the slots, and bad settings, with the field named", async () => {
    await expect(gen.generateIds([{ promptIds: [5], n: 4 }], { temperature: 1, maxNewTokens: 2, maxBatchRows: 3 })).rejects.toThrow(/n=4 samples but maxBatchRows is 3/);
    await expect(gen.generateIds([{ promptIds: [5], n: 1, topP: 0 }], { temperature: 1, maxNewTokens: 2 })).rejects.toThrow(/top_p must be in \(0, 1\]/);
    await expect(gen.generateIds([{ promptIds: [1e6], n: 1 }], { temperature: 1, maxNewTokens: 2 })).rejects.toThrow(/outside the vocabulary/);
  });
});

describe("stop strings", () => {
  it("a stop string that ends inside a token stops at that token; the text is cut before it", async () => {
    // Every token decodes to 3 hex digits, so a stop string made of the last digit of one token and the first of the
    // next ends inside a token: a test on the text's end alone would miss it.
    const hex = { encode: (t: string) => tok.encode(t), decode: (ids: readonly number[]) => ids.map((i) => i.toString(16).padStart(3, "0")).join(""), stopTokenIds: [] as number[] };
    const g = new WebGpuGenerator(gen.engine, gen.decoder, hex);
    const p = { promptIds: tok.encode("Tom has 12 apples and eats"), n: 1 };
    const [[free]] = await g.generateIds([p], { temperature: 0, maxNewTokens: 8 });
    expect(free.tokenIds).toHaveLength(8);
    const stop = free.text.slice(5, 7);
    const [[cut]] = await g.generateIds([p], { temperature: 0, maxNewTokens: 8, stop: ["zz", stop] });
    expect(cut.finishReason).toBe("stop");
    expect(cut.stopString).toBe(stop);
    expect(cut.text).toBe(free.text.slice(0, free.text.indexOf(stop)));
    // The sampled tokens up to the one that completed the stop string stay (with their log-probs).
    expect(cut.tokenIds).toEqual(free.tokenIds.slice(0, cut.tokenIds.length));
    expect(cut.logprobs).toHaveLength(cut.tokenIds.length);
    expect(hex.decode(cut.tokenIds)).toContain(stop);
    expect(hex.decode(cut.tokenIds.slice(0, -1))).not.toContain(stop);
  });
});

describe("repetition penalty", () => {
  it("greedy with a penalty equals the float64 model with HF's penalty over prompt + generated tokens; rows with other penalties are untouched", async () => {
    const prompt = tok.encode("x = x = x = x");
    const pen = 1.8;
    const [[got]] = await gen.generateIds([{ promptIds: prompt, n: 1, repetitionPenalty: pen }], { temperature: 0, maxNewTokens: 8 });
    const ref = await loadModel(dir);
    const seq = [...prompt];
    const want: number[] = [];
    for (let s = 0; s < 8; s++) {
      const r = referenceForward(ref, [seq]);
      const V = r.shape[2];
      const last = repetitionPenaltyReference(r.logits.subarray((seq.length - 1) * V, seq.length * V), seq, pen);
      const sorted = [...last].sort((a, b) => b - a);
      if (sorted[0] - sorted[1] < 1e-4) break; // a near-tie: f32 and float64 may pick differently
      const next = last.indexOf(sorted[0]);
      if (tok.stopTokenIds.includes(next)) break;
      want.push(next);
      seq.push(next);
    }
    expect(want.length).toBeGreaterThan(2);
    expect(got.tokenIds.slice(0, want.length)).toEqual(want);
    const [[plain]] = await gen.generateIds([{ promptIds: prompt, n: 1 }], { temperature: 0, maxNewTokens: 8 });
    expect(plain.tokenIds).not.toEqual(got.tokenIds); // the penalty changed the greedy path
    // One batch holding penalties 1.8 and 1.3 and none: each row as when alone.
    const other = { promptIds: tok.encode("ab ab ab"), n: 1, repetitionPenalty: 1.3 };
    const [[alone13]] = await gen.generateIds([other], { temperature: 0, maxNewTokens: 8 });
    const mixed = await gen.generateIds([{ promptIds: prompt, n: 1, repetitionPenalty: pen }, other, { promptIds: prompt, n: 1 }], { temperature: 0, maxNewTokens: 8 });
    expect(mixed.map((p) => p[0].tokenIds)).toEqual([got.tokenIds, alone13.tokenIds, plain.tokenIds]);
  });
});
