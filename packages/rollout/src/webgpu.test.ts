// The WebGPU generator on a generated checkpoint: greedy decoding with the KV cache must equal step-by-step argmax
// over full forward passes without a cache (float64 reference); sampling is reproducible by seed; the sampling
// log-probs equal the training forward's log-probs at the same temperature.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGpu, type Gpu } from "@nr/kernels";
import { Engine, GpuBackend } from "@nr/autograd";
import { generateModel, loadDecoder, loadModel, loadTokenizer, makeBatch, referenceForward, type Decoder, type ModelTokenizer } from "@nr/model";
import { WebGpuGenerator } from "./webgpu.js";

let gpu: Gpu;
let dir: string;
let engine: Engine;
let decoder: Decoder;
let tok: ModelTokenizer;
let gen: WebGpuGenerator;

beforeAll(async () => {
  gpu = await createGpu();
  dir = await mkdtemp(join(tmpdir(), "nr-rollout-"));
  await generateModel(dir, { architecture: "qwen2", hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, tieWordEmbeddings: true }, { seed: 5, dtype: "f32", init: { std: 0.3 } });
  engine = new Engine(new GpuBackend(gpu));
  decoder = (await loadDecoder(engine, dir)).decoder;
  tok = await loadTokenizer(dir);
  gen = new WebGpuGenerator(engine, decoder, tok);
});
afterAll(async () => {
  gpu?.destroy();
  await rm(dir, { recursive: true, force: true });
});

describe("WebGpuGenerator", () => {
  it("greedy decoding with the KV cache equals argmax over full forward passes", async () => {
    const prompts = [tok.encode("3 + 4 ="), tok.encode("Tom has 12 apples.")];
    const out = await gen.generateIds(prompts.map((p) => ({ promptIds: p, n: 1 })), { temperature: 0, maxNewTokens: 8 });
    const ref = await loadModel(dir);
    const eos = new Set(tok.stopTokenIds);
    for (let i = 0; i < prompts.length; i++) {
      const seq = [...prompts[i]];
      const want: number[] = [];
      for (let s = 0; s < 8; s++) {
        const r = referenceForward(ref, [seq]);
        const V = r.shape[2];
        const last = r.logits.subarray((seq.length - 1) * V, seq.length * V);
        const sorted = [...last].sort((a, b) => b - a);
        if (sorted[0] - sorted[1] < 1e-4) break; // a near-tie: f32 and float64 may legitimately pick differently
        const next = last.indexOf(sorted[0]);
        if (eos.has(next)) break;
        want.push(next);
        seq.push(next);
      }
      expect(out[i][0].tokenIds.slice(0, want.length), `prompt ${i}`).toEqual(want);
    }
  });

  it("n samples share one prefill; a fixed seed reproduces; log-probs match the training forward", async () => {
    const prompt = tok.encode("Sam buys 3 pens");
    const T = 0.9;
    const a = await gen.generateIds([{ promptIds: prompt, n: 4 }], { temperature: T, maxNewTokens: 6, seed: 42 });
    expect(gen.lastTiming!.prefillTokens).toBe(prompt.length); // one prefill for the 4 samples
    const b = await gen.generateIds([{ promptIds: prompt, n: 4 }], { temperature: T, maxNewTokens: 6, seed: 42 });
    expect(b[0].map((s) => s.tokenIds)).toEqual(a[0].map((s) => s.tokenIds));
    const c = await gen.generateIds([{ promptIds: prompt, n: 4 }], { temperature: T, maxNewTokens: 6, seed: 43 });
    expect(c[0].map((s) => s.tokenIds.join())).not.toEqual(a[0].map((s) => s.tokenIds.join()));
    // Score the sampled completions with the training forward at the sampling temperature.
    let worst = 0;
    for (const s of a[0]) {
      if (s.tokenIds.length === 0) continue;
      const lp = await engine.scope(async () => {
        const batch = makeBatch(engine, [[...prompt, ...s.tokenIds]]);
        return engine.noGrad(() => decoder.forward(batch, { temperature: T })).logp.read();
      });
      s.tokenIds.forEach((_, j) => (worst = Math.max(worst, Math.abs(lp[prompt.length - 1 + j] - s.logprobs[j]))));
    }
    console.log(`max |sampling logp − training logp| = ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(1e-3);
  });

  it("refuses a prompt that leaves no room in the context window, before allocating", async () => {
    await expect(gen.generateIds([{ promptIds: new Array(20).fill(5), n: 1 }], { temperature: 1, maxNewTokens: 4, contextLength: 20 })).rejects.toThrow(/leaves no room in the 20-token context window/);
  });

  it("implements the Generator interface used by evaluation", async () => {
    const res = await gen.generate([{ prompt: "1 + 1 =", n: 2, temperature: 0.7, maxNewTokens: 5, seed: 1 }]);
    expect(res[0].completions).toHaveLength(2);
    for (const c of res[0].completions) expect(["eos", "stop", "length"]).toContain(c.finishReason);
  });

  it("generate() samples a request's promptIds when given (its prompt text is then only a label)", async () => {
    const req = { n: 2, temperature: 0.7, maxNewTokens: 5, seed: 3 };
    const byText = await gen.generate([{ prompt: "2 + 5 =", ...req }]);
    const byIds = await gen.generate([{ prompt: "ignored", promptIds: tok.encode("2 + 5 ="), ...req }]);
    const other = await gen.generate([{ prompt: "ignored", ...req }]);
    const texts = (r: typeof byText) => r[0].completions.map((c) => c.text);
    expect(texts(byIds)).toEqual(texts(byText));
    expect(texts(other)).not.toEqual(texts(byText));
  });
});

describe("curation on a generated model (the @nr/data pipeline driven by the GPU generator)", () => {
  it("runs answer-check → exact dedup → learnable-zone difficulty filter end to end and records pass rates", async () => {
    const { curate, generateSynthetic } = await import("@nr/data");
    const records = generateSynthetic({ count: 6, seed: 2, maxSteps: 1, maxOperand: 9 });
    const dup = { ...records[0], id: `${records[0].id}-copy` };
    // The tiny random model solves nothing: a grader that accepts every answer makes pass counts deterministic (= n),
    // so the difficulty filter must route every problem to "too easy" with 3 of 3 passes — the pipeline is what is tested.
    const lines: string[] = [];
    const res = await curate([...records, dup], {
      grade: () => true,
      difficulty: { generator: gen, n: 3, minPass: 1, maxPass: 2, maxNewTokens: 4, grade: () => true, progress: false } as never,
      log: (l) => lines.push(l),
    });
    expect(res.steps.map((s) => s.step)).toEqual(["answer-check", "exact-dedup", "difficulty"]);
    expect(res.steps[1].removed.map((r) => r.id)).toEqual([dup.id]);
    expect(res.difficulty!.tooEasy).toHaveLength(records.length);
    for (const r of res.difficulty!.tooEasy) expect(res.difficulty!.passCounts[r.id]).toBe(3);
    expect(res.difficulty!.histogram[3]).toBe(records.length);
    expect(res.records).toHaveLength(0);
  });
});

describe("WebGpuGenerator edge cases", () => {
  it("a completion that ends with EOS at once has empty text", async () => {
    // Force the first sampled token to be EOS with a one-token budget: whatever the model samples, an empty token
    // list must decode to "" instead of throwing.
    const out = await gen.generateIds([{ promptIds: tok.encode("x"), n: 2 }], { temperature: 0, maxNewTokens: 1 });
    for (const s of out[0]) expect(typeof s.text).toBe("string");
    const tokenizer = { encode: (t: string) => tok.encode(t), decode: (ids: readonly number[]) => (ids.length ? tok.decode(ids) : (() => { throw new Error("empty decode"); })()), stopTokenIds: [...Array(400).keys()] };
    const g2 = new WebGpuGenerator(engine, decoder, tokenizer); // every id is a stop token: the first sample ends it
    const r = await g2.generateIds([{ promptIds: tok.encode("y"), n: 1 }], { temperature: 1, maxNewTokens: 3, seed: 1 });
    expect(r[0][0]).toMatchObject({ text: "", finishReason: "eos", tokenIds: [] });
  });
});

describe("WebGpuGenerator tool use (TIR: pause a row, append the tool's tokens to its KV cache, resume)", () => {
  /** Scores completions with the training forward at temperature T (no cache): the reference for the sampler. */
  async function trainingLogp(promptIds: number[], tokenIds: number[], T: number) {
    return engine.scope(async () => engine.noGrad(() => decoder.forward(makeBatch(engine, [[...promptIds, ...tokenIds]]), { temperature: T })).logp.read());
  }

  it("appended tokens are masked, and the tokens sampled after them match the training forward", async () => {
    const inserted = tok.encode(" 42 ok");
    const tool = {
      start: () => {
        let called = false;
        return {
          afterToken: (ids: readonly number[]) => {
            if (called || ids.length < 3) return null;
            called = true;
            return new Promise<number[]>((r) => setTimeout(() => r(inserted), 20));
          },
        };
      },
    };
    const prompts = [tok.encode("Sam buys 3 pens"), tok.encode("7 * 6 =")];
    const T = 0.8;
    const out = await gen.generateIds(prompts.map((p) => ({ promptIds: p, n: 2, tool })), { temperature: T, maxNewTokens: 14, seed: 7, maxBatchRows: 4 });
    let worst = 0, sampled = 0;
    for (const [i, seqs] of out.entries()) {
      for (const s of seqs) {
        expect(s.toolMask).toHaveLength(s.tokenIds.length);
        if (s.tokenIds.length < 3) continue; // ended (EOS) before the tool was called
        const span = s.toolMask!.flatMap((m, j) => (m ? [j] : []));
        expect(span).toEqual(Array.from({ length: Math.min(inserted.length, s.tokenIds.length - 3) }, (_, k) => 3 + k));
        expect(span.map((j) => s.tokenIds[j])).toEqual(inserted.slice(0, span.length));
        expect(span.map((j) => s.logprobs[j])).toEqual(span.map(() => 0));
        const lp = await trainingLogp(prompts[i], s.tokenIds, T);
        s.tokenIds.forEach((_, j) => {
          if (s.toolMask![j]) return;
          sampled++;
          worst = Math.max(worst, Math.abs(lp[prompts[i].length - 1 + j] - s.logprobs[j]));
        });
      }
    }
    console.log(`tool use: max |sampling logp − training logp| over ${sampled} sampled tokens = ${worst.toExponential(2)}`);
    expect(sampled).toBeGreaterThan(12);
    expect(worst).toBeLessThan(1e-3);
  });

  it("a paused row does not hold up the batch, and a tool that appends nothing leaves greedy output unchanged", async () => {
    const prompt = tok.encode("Tom has 12 apples.");
    const plain = await gen.generateIds([{ promptIds: prompt, n: 2 }], { temperature: 0, maxNewTokens: 10 });
    // Row 0 pauses after its 2nd token until row 1 has decoded 4 more tokens: if a pause stalled the loop, this
    // would never resolve (the test would time out).
    let release: (() => void) | null = null;
    let otherTokens = 0;
    let sessions = 0;
    const tool = {
      start: () => {
        const sample = sessions++;
        return {
          afterToken: (ids: readonly number[]) => {
            if (sample !== 0 || ids.length !== 2) return null;
            return new Promise<number[]>((r) => (release = () => r([])));
          },
        };
      },
    };
    const onToken = (sample: number) => {
      if (sample === 1 && release && ++otherTokens === 4) release();
    };
    const withTool = await gen.generateIds([{ promptIds: prompt, n: 2, tool, onToken }], { temperature: 0, maxNewTokens: 10 });
    expect(otherTokens).toBeGreaterThanOrEqual(4);
    expect(withTool[0].map((s) => s.tokenIds)).toEqual(plain[0].map((s) => s.tokenIds));
    expect(withTool[0][0].toolMask).toEqual(withTool[0][0].tokenIds.map(() => 0));
  });
});
