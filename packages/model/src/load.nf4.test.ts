// NF4 base at load (QLoRA): the GPU-quantised decoder against a float64 CPU decoder on the dequantised weights
// (dequantised on the host from the codes read back), the codes against the host quantiser, bitsandbytes-format
// checkpoints loading as they are, and the errors.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { downloadNf4, nf4QuantizeReference } from "@nr/kernels";
import { gpuSuite } from "@nr/kernels/testing";
import { saveBnbNf4 } from "./bnb.js";
import { CpuBackend, Engine, GpuBackend } from "@nr/autograd";
import { generateModel } from "./generate.js";
import { dequantizedCopy, loadDecoder, Nf4Projection } from "./load.js";
import { makeBatch, type Decoder, type Projection } from "./decoder.js";
import { parameterSpecs, toHfConfig } from "./config.js";
import { SafetensorsCheckpoint, writeSafetensorsCheckpoint, type SafetensorsDtype, type TensorToWrite } from "./safetensors.js";

const suite = gpuSuite("nf4 load", { beforeAll, afterAll }, { tmpDir: true });

// Awkward sizes: 3 blocks of 64 do not divide q's 40×40 weight, K = 40 and 72 are multiples of 8 only.
const CONFIG = { architecture: "qwen2" as const, hiddenSize: 40, intermediateSize: 72, numLayers: 2, numHeads: 5, numKvHeads: 1, headDim: 8, vocabSize: 56, tieWordEmbeddings: false };
const ROWS = [[5, 9, 2, 17, 3, 8, 40, 41, 7], [11, 4, 30, 2], [1, 2, 3, 4, 5, 6]];
const SLOTS = ["q", "k", "v", "o", "gate", "up", "down"] as const;

async function run(d: Decoder) {
  const e = d.engine;
  return e.scope(async () => {
    const b = makeBatch(e, ROWS, { leftPad: true });
    const res = d.forward(b, { temperature: 0.9 });
    const gl = Array.from(b.lossMask, (m, i) => (m ? Math.sin(i + 1) : 0));
    d.backward(res, gl, Array.from(b.lossMask, (m, i) => (m ? 0.2 * Math.cos(i) : 0)));
    const norm = d.weights.layers[0].inputNorm;
    const out = { logp: await res.logp.read(), entropy: await res.entropy.read(), dNorm: await norm.grad!.read(), mask: b.lossMask };
    norm.grad!.dispose();
    norm.grad = null;
    return out;
  });
}

/** Gradients reach layer 0's input norm only through every layer's NF4 input-gradient matmuls. */
function trainFirstNorm(d: Decoder) {
  d.weights.layers[0].inputNorm.requiresGrad = true;
  return d;
}

describe("loadDecoder with quant: nf4", () => {
  for (const doubleQuant of [true, false]) {
    it(`quantises every linear weight on the GPU (bf16 source, doubleQuant ${doubleQuant}); logits and input gradients match float64 on the dequantised codes`, async () => {
      const modelDir = join(suite.dir, `bf16-${doubleQuant}`);
      await generateModel(modelDir, CONFIG, { seed: 5, dtype: "bf16", tokenizer: false, init: { std: 0.15 } });
      const e = new Engine(new GpuBackend(suite.gpu));
      const { decoder } = await loadDecoder(e, modelDir, { quant: "nf4", doubleQuant });
      const ck = await SafetensorsCheckpoint.open(modelDir);
      for (const L of decoder.weights.layers) {
        for (const s of SLOTS) {
          const p = L[s] as Nf4Projection;
          expect(p).toBeInstanceOf(Nf4Projection);
          expect(p.weight.dtype).toBe("bf16");
          expect(p.weight.double !== null).toBe(doubleQuant);
          // The codes are bitsandbytes' (host quantiser on the same bf16 values; the offset is the GPU's mean).
          const host = await downloadNf4(suite.gpu, p.weight);
          const ref = nf4QuantizeReference(await ck.readF32(p.name), { doubleQuant, offset: host.nested?.offset });
          expect(Buffer.from(host.packed).equals(Buffer.from(ref.packed)), `${p.name} codes`).toBe(true);
          if (doubleQuant) expect(Array.from(host.nested!.qabsmax)).toEqual(Array.from(ref.qabsmax!));
          else expect(Array.from(host.absmax!)).toEqual(Array.from(ref.absmax));
        }
        expect((L.q as Nf4Projection).bias).not.toBeNull(); // Qwen2 qkv bias stays f32
        expect((L.o as Nf4Projection).bias).toBeNull();
      }
      await ck.close();
      const ref = await dequantizedCopy(decoder, new Engine(new CpuBackend()));
      const g = await run(trainFirstNorm(decoder));
      const c = await run(trainFirstNorm(ref));
      // f32 GPU vs float64 on identical weights: |Δlogp| ≤ 2e-5 (values ~ −4), gradients within 1e-4 of their max
      // (measured: ~1e-6 and ~7e-7).
      c.logp.forEach((w, i) => c.mask[i] && expect(Math.abs(g.logp[i] - w), `logp[${i}]`).toBeLessThan(2e-5));
      c.entropy.forEach((w, i) => c.mask[i] && expect(Math.abs(g.entropy[i] - w), `entropy[${i}]`).toBeLessThan(2e-5));
      const scale = Math.max(...Array.from(c.dNorm, Math.abs));
      expect(scale).toBeGreaterThan(1e-3);
      c.dNorm.forEach((w, i) => expect(Math.abs(g.dNorm[i] - w), `dNorm[${i}]`).toBeLessThan(1e-4 * scale));
      const maxDiff = (a: Float64Array, b: Float64Array) => Math.max(...Array.from(a, (w, i) => (c.mask[i] || a.length !== c.mask.length ? Math.abs(w - b[i]) : 0)));
      console.log(`NF4 GPU vs float64 on dequantised codes (doubleQuant ${doubleQuant}): max |Δlogp| ${maxDiff(g.logp, c.logp).toExponential(2)}, max |Δentropy| ${maxDiff(g.entropy, c.entropy).toExponential(2)}, max |Δgrad|/max|grad| ${(maxDiff(g.dNorm, c.dNorm) / scale).toExponential(2)}`);
      // quant: "nf4" on the float64 CPU backend quantises on the host (bitsandbytes' arithmetic): the same model.
      const host = await run(trainFirstNorm((await loadDecoder(new Engine(new CpuBackend()), modelDir, { quant: "nf4", doubleQuant })).decoder));
      c.logp.forEach((w, i) => c.mask[i] && expect(Math.abs(host.logp[i] - w), `host-quantised logp[${i}]`).toBeLessThan(2e-5));
      // The quantisation is real: the unquantised model gives different log-probs.
      const full = await run(trainFirstNorm((await loadDecoder(new Engine(new CpuBackend()), modelDir)).decoder));
      expect(Math.max(...Array.from(c.logp, (w, i) => (c.mask[i] ? Math.abs(full.logp[i] - w) : 0)))).toBeGreaterThan(1e-3);
      // The base has no gradient buffer anywhere.
      for (const L of decoder.weights.layers) for (const s of SLOTS) expect((L[s] as Nf4Projection).bias?.grad ?? null).toBeNull();
    });
  }

  it("loads a bitsandbytes-format checkpoint (U8 weight + absmax + quant_map + nested_* + quant_state) as it is", async () => {
    const src = join(suite.dir, "f32");
    await generateModel(src, CONFIG, { seed: 8, dtype: "f32", tokenizer: false, init: { std: 0.15 } });
    const e = new Engine(new GpuBackend(suite.gpu));
    const { decoder, config } = await loadDecoder(e, src, { quant: "nf4" });
    // Write the bnb checkpoint: every linear weight as the tensors bitsandbytes saves, the rest as stored.
    const bnbDir = join(suite.dir, "bnb");
    const ck = await SafetensorsCheckpoint.open(src);
    const tensors: TensorToWrite[] = [];
    for (const spec of parameterSpecs(config)) {
      const slot = SLOTS.find((s) => spec.kind === "linear" && spec.layer !== null && spec.name.includes(`.${s}_proj.`));
      if (slot) {
        const p = decoder.weights.layers[spec.layer!][slot] as Nf4Projection;
        for (const [name, t] of Object.entries(await saveBnbNf4(suite.gpu, p.weight, spec.name))) tensors.push({ name, dtype: t.dtype as SafetensorsDtype, shape: t.shape, data: t.bytes });
      } else tensors.push({ name: spec.name, dtype: "F32", shape: spec.shape, data: await ck.readF32(spec.name) });
    }
    await ck.close();
    await mkdir(bnbDir, { recursive: true });
    await writeSafetensorsCheckpoint(bnbDir, tensors);
    await writeFile(join(bnbDir, "config.json"), JSON.stringify({ ...toHfConfig(config), quantization_config: { load_in_4bit: true, bnb_4bit_quant_type: "nf4", bnb_4bit_use_double_quant: true } }));

    const e2 = new Engine(new GpuBackend(suite.gpu));
    const loaded = (await loadDecoder(e2, bnbDir)).decoder; // no quant option: the 4-bit weights are NF4 as stored
    const L0 = loaded.weights.layers[1].down as Nf4Projection;
    expect(L0).toBeInstanceOf(Nf4Projection);
    expect(L0.weight.double).not.toBeNull();
    const a = await run(trainFirstNorm(decoder));
    const b = await run(trainFirstNorm(loaded));
    expect(Array.from(b.logp)).toEqual(Array.from(a.logp)); // same codes, same scales, same kernels: bit for bit
    expect(Array.from(b.dNorm)).toEqual(Array.from(a.dNorm));
    // On the float64 CPU backend the same checkpoint loads as the exact dequantised values.
    const cpu = await run(trainFirstNorm((await loadDecoder(new Engine(new CpuBackend()), bnbDir)).decoder));
    cpu.logp.forEach((w, i) => cpu.mask[i] && expect(Math.abs(a.logp[i] - w), `logp[${i}]`).toBeLessThan(2e-5));
  });

  it("an NF4 projection runs on the float64 CPU backend from the weight's host form (same codes: same outputs and input gradients)", async () => {
    const src = join(suite.dir, "cpu-proj");
    await generateModel(src, CONFIG, { seed: 3, dtype: "f32", tokenizer: false, init: { std: 0.15 } });
    const gpuEngine = new Engine(new GpuBackend(suite.gpu)), cpuEngine = new Engine(new CpuBackend());
    const p = (await loadDecoder(gpuEngine, src, { quant: "nf4" })).decoder.weights.layers[1].q as Nf4Projection;
    const host = new Nf4Projection(cpuEngine, await downloadNf4(suite.gpu, p.weight), cpuEngine.tensor(await p.bias!.read(), [p.outFeatures]), p.name);
    expect(Array.from(await host.dequantize())).toEqual(Array.from(await p.dequantize()));
    const M = 7, x = Array.from({ length: M * p.inFeatures }, (_, i) => Math.sin(i * 0.37)), dy = Array.from({ length: M * p.outFeatures }, (_, i) => Math.cos(i * 0.11));
    const forwardBackward = async (proj: Projection, e: Engine) => {
      const xt = e.tensor(x, [M, proj.inFeatures], { requiresGrad: true, name: "x" });
      const y = proj.forward(xt);
      e.backward([[y, dy]]);
      return { y: await y.read(), dx: await xt.grad!.read() };
    };
    const g = await forwardBackward(p, gpuEngine), c = await forwardBackward(host, cpuEngine);
    c.y.forEach((w, i) => expect(Math.abs(g.y[i] - w), `y[${i}]`).toBeLessThan(2e-5));
    c.dx.forEach((w, i) => expect(Math.abs(g.dx[i] - w), `dx[${i}]`).toBeLessThan(2e-5));
    // Each backend takes its own form of the weight.
    expect(() => new Nf4Projection(cpuEngine, p.weight)).toThrow(/in GPU buffers needs the WebGPU backend/);
    expect(() => new Nf4Projection(gpuEngine, host.weight)).toThrow(/in its host form needs the CPU backend/);
  });

  it("refuses a trainable NF4 base and unknown quant kinds with the reason", async () => {
    const src = join(suite.dir, "small");
    await generateModel(src, CONFIG, { seed: 1, dtype: "f32", tokenizer: false });
    const e = new Engine(new GpuBackend(suite.gpu));
    await expect(loadDecoder(e, src, { quant: "nf4", trainable: true })).rejects.toThrow(/NF4 base is frozen/);
    await expect(loadDecoder(e, src, { quant: "int8" as "nf4" })).rejects.toThrow(/quant must be "none" or "nf4"/);
    const odd = join(suite.dir, "odd");
    await generateModel(odd, { ...CONFIG, hiddenSize: 36, numHeads: 3, headDim: 12 }, { seed: 1, dtype: "f32", tokenizer: false });
    await expect(loadDecoder(e, odd, { quant: "nf4" })).rejects.toThrow(/in_features 36 is not a multiple of 8/);
  });
});
