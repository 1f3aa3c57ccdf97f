// LoRA over a frozen NF4 base (QLoRA) on the WebGPU backend: B = 0 leaves the NF4 model exactly as it was; adapter
// gradients match the float64 CPU backend running the same adapter over the dequantised base; a short SFT run lowers
// the loss without changing one byte of the NF4 base.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { gpuSuite, rng } from "@nr/kernels/testing";
import { AdamW, CpuBackend, Engine, GpuBackend } from "@nr/autograd";
import { dequantizedCopy, generateModel, loadDecoder, makeBatch, Nf4Projection, type Decoder } from "@nr/model";
import { LoraModel } from "./lora.js";
import { adapterToHost, hostToAdapter } from "./host.js";
import { maskedLogps, nllStep } from "./testing.js";

const t = gpuSuite("qlora", { beforeAll, afterAll }, { tmpDir: true });

const CONFIG = { architecture: "qwen2" as const, hiddenSize: 32, intermediateSize: 56, numLayers: 2, numHeads: 4, numKvHeads: 2, vocabSize: 48, tieWordEmbeddings: true };
const ROWS = [[3, 7, 1, 9, 12, 40, 2], [5, 2, 30, 31], [8, 8, 1, 17, 20]];

async function model(name: string, std: number) {
  const d = join(t.dir, name);
  await generateModel(d, CONFIG, { seed: 3, dtype: "bf16", tokenizer: false, init: { std } });
  return d;
}

const logps = (d: Decoder) => maskedLogps(d, ROWS);

/** Deterministic non-zero B for every module of an adapter (PEFT init has B = 0). */
async function randomiseB(lora: LoraModel, name: string, seed: number) {
  const host = await adapterToHost(lora, name);
  const rand = rng(seed);
  for (const m of host.modules.values()) m.B = Float64Array.from(m.B, () => 0.4 * (rand() - 0.5));
  hostToAdapter(lora, host, name, { trainable: true });
}

function nf4Bases(lora: LoraModel): Nf4Projection[] {
  return lora.projections.map((p) => p.base as Nf4Projection);
}

/** Every device byte of the NF4 base: codes, per-block scales and the double-quant state. */
async function baseBytes(bases: Nf4Projection[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const p of bases) {
    const w = p.weight;
    for (const b of [w.packed, w.scales, w.double?.qabsmax, w.double?.absmax2, w.double?.offset]) if (b) parts.push(Buffer.from(await t.gpu.read(b)));
  }
  return Buffer.concat(parts);
}

describe("LoRA over an NF4 base (WebGPU)", () => {
  it("with B = 0 the output equals the NF4 base exactly; select(null) gives the base back", async () => {
    const e = new Engine(new GpuBackend(t.gpu));
    const { decoder } = await loadDecoder(e, await model("b0", 0.1), { quant: "nf4" });
    const base = await logps(decoder);
    const lora = new LoraModel(decoder);
    const params = lora.addAdapter("policy", { r: 4, alpha: 8, seed: 1 });
    expect(nf4Bases(lora).every((p) => p instanceof Nf4Projection)).toBe(true);
    expect(Array.from((await logps(decoder)).logp)).toEqual(Array.from(base.logp));
    await randomiseB(lora, "policy", 5);
    const adapted = await logps(decoder);
    expect(adapted.logp.some((v, i) => adapted.mask[i] && Math.abs(v - base.logp[i]) > 1e-3)).toBe(true);
    lora.select(null);
    expect(Array.from((await logps(decoder)).logp)).toEqual(Array.from(base.logp));
    expect(params.length).toBe(2 * 7 * 2);
  });

  it("adapter gradients match the float64 CPU backend on the dequantised base, and its finite differences", async () => {
    const dirM = await model("grad", 0.2);
    const gpuDec = (await loadDecoder(new Engine(new GpuBackend(t.gpu)), dirM, { quant: "nf4", doubleQuant: true })).decoder;
    const cpuDec = await dequantizedCopy(gpuDec, new Engine(new CpuBackend()));
    const run = async (d: Decoder, adapter?: Awaited<ReturnType<typeof adapterToHost>>) => {
      const lora = new LoraModel(d);
      lora.addAdapter("a", { r: 3, alpha: 6, seed: 4 });
      if (adapter) hostToAdapter(lora, adapter, "a", { trainable: true });
      else await randomiseB(lora, "a", 9);
      const e = d.engine;
      const grads = await e.scope(async () => {
        const b = makeBatch(e, ROWS, { leftPad: true });
        const res = d.forward(b, { temperature: 0.7 });
        d.backward(res, Array.from(b.lossMask, (m, i) => (m ? Math.sin(3 * i + 1) : 0)), Array.from(b.lossMask, (m, i) => (m ? 0.3 * Math.cos(i) : 0)));
        return Promise.all(lora.parameters("a").map((p) => p.grad!.read()));
      });
      return { grads, names: lora.parameters("a").map((p) => p.name), host: await adapterToHost(lora, "a"), lora };
    };
    const g = await run(gpuDec);
    const c = await run(cpuDec, g.host);
    let worst = 0;
    c.grads.forEach((gc, j) => {
      const scale = Math.max(1e-6, ...Array.from(gc, Math.abs));
      expect(scale, `${c.names[j]} has a gradient`).toBeGreaterThan(1e-4);
      gc.forEach((w, i) => {
        const err = Math.abs(g.grads[j][i] - w) / scale;
        worst = Math.max(worst, err);
        expect(err, `${c.names[j]}[${i}] gpu ${g.grads[j][i]} cpu ${w}`).toBeLessThan(1e-4);
      });
    });
    console.log(`LoRA grads over NF4, GPU vs float64: worst |Δ|/max|g| per tensor ${worst.toExponential(2)}`);
    // And the float64 gradients against central differences of the same objective on the dequantised base.
    const e = cpuDec.engine;
    const objective = () =>
      e.scope(async () => {
        const b = makeBatch(e, ROWS, { leftPad: true });
        const res = e.noGrad(() => cpuDec.forward(b, { temperature: 0.7 }));
        const [lp, en] = [await res.logp.read(), await res.entropy.read()];
        return lp.reduce((acc, v, i) => acc + (b.lossMask[i] ? Math.sin(3 * i + 1) * v + 0.3 * Math.cos(i) * en[i] : 0), 0);
      });
    const params = c.lora.parameters("a");
    for (const j of [0, 1, 13, params.length - 1]) {
      const data = params[j].storage as Float64Array;
      for (const i of [0, Math.floor(data.length / 2), data.length - 1]) {
        const keep = data[i];
        data[i] = keep + 1e-6;
        const up = await objective();
        data[i] = keep - 1e-6;
        const down = await objective();
        data[i] = keep;
        expect(Math.abs((up - down) / 2e-6 - c.grads[j][i]), `${c.names[j]}[${i}]`).toBeLessThan(1e-6 * Math.max(1, Math.abs(c.grads[j][i])));
      }
    }
  });

  it("a short AdamW SFT run lowers the loss; the NF4 base bytes are unchanged", async () => {
    const e = new Engine(new GpuBackend(t.gpu));
    const { decoder } = await loadDecoder(e, await model("sft", 0.5), { quant: "nf4" });
    const lora = new LoraModel(decoder);
    const before = await baseBytes(nf4Bases(lora));
    const opt = new AdamW(lora.addAdapter("sft", { r: 8, alpha: 16, seed: 7 }), { lr: 0.05 });
    const step = () => nllStep(decoder, opt, ROWS, 0.05);
    const losses = [await step()];
    for (let i = 0; i < 7; i++) losses.push(await step());
    console.log(`QLoRA SFT losses: ${losses.map((l) => l.toFixed(3)).join(" ")}`);
    expect(losses[losses.length - 1]).toBeLessThan(losses[0] * 0.8);
    // The frozen base has no gradient buffer anywhere (only the adapters do).
    for (const p of nf4Bases(lora)) expect(p.bias?.grad ?? null).toBeNull();
    for (const t of [decoder.weights.embed, decoder.weights.finalNorm, ...decoder.weights.layers.flatMap((L) => [L.inputNorm, L.postAttentionNorm])]) expect(t.grad).toBeNull();
    expect(lora.parameters("sft").every((p) => p.grad !== null)).toBe(true);
    const after = await baseBytes(nf4Bases(lora));
    expect(after.length).toBe(before.length);
    expect(after.equals(before)).toBe(true);
  });
});
