// `nr export`: base (+ PEFT adapter merged in) → a model folder that transformers.js v3 loads and generates from with
// a KV cache (config.json, generation_config.json, tokenizer files, onnx/model[_fp16].onnx; see @nr/model's
// export-folder.ts). The merge is W + s·B·A in float64 per tensor, streamed: the model is never held whole.
// With an NF4 base (--quant nf4, or the adapter's run trained on one) each linear weight is first quantised and
// dequantised on the host with bitsandbytes' algorithm, as the GPU loader quantises it, so the export computes what
// training and `nr generate` saw, not the original full-precision weights; a checkpoint stored as bitsandbytes NF4 is
// dequantised as stored.
import { resolve } from "node:path";
import type { Argv, CommandModule } from "yargs";
import type { CommandIo } from "./eval.js";
import { consoleIo } from "./eval.js";
import { resolveModelPaths, UsageError } from "./common.js";

export interface ExportArgs {
  model: string;
  adapter?: string;
  out: string;
  dtype: "f32" | "f16";
  quant?: "none" | "nf4";
  overwrite: boolean;
}

export async function runExport(a: ExportArgs, io: CommandIo = consoleIo) {
  if (/\.onnx$/i.test(a.out)) throw new UsageError(`--out ${a.out}: --out names the model folder (the .onnx file goes to FOLDER/onnx/); pass e.g. --out ${a.out.replace(/(\/onnx)?\/?[^/]*\.onnx$/i, "") || "exported"}`);
  const paths = resolveModelPaths({ model: a.model, adapter: a.adapter });
  const [{ exportTransformersJs, openCheckpoint, parameterSpecs }, { readPeftAdapterToHost, mergedWeight }, { nf4QuantizeReference, nf4DequantizeReference }] = await Promise.all([
    import("@nr/model"),
    import("@nr/lora"),
    import("@nr/kernels"),
  ]);
  const ck = await openCheckpoint(paths.modelDir);
  await ck.tensors.close();
  const config = ck.config;
  const adapter = paths.adapterDir ? await readPeftAdapterToHost(paths.adapterDir, config).catch((e: Error) => Promise.reject(new UsageError(`--adapter ${a.adapter}: ${e.message}`))) : null;
  const quant = a.quant ?? paths.runConfig?.model.quant ?? "none";
  const doubleQuant = paths.runConfig?.model.doubleQuant ?? true;
  const specs = parameterSpecs(config);
  // what the GPU loader quantises under quant nf4: the seven linear weights of every layer (not the LM head), unless
  // stored as bitsandbytes NF4 already (those are exported dequantised as they are)
  const layerLinears = new Set(specs.filter((p) => p.kind === "linear" && p.layer !== null && !ck.report.quantized.has(p.name)).map((p) => p.name));
  const total = specs.length;
  const t0 = performance.now();
  let done = 0;
  const mapWeight = (name: string, w: Float32Array | Float64Array) => {
    let base = w;
    if (quant === "nf4" && layerLinears.has(name)) {
      const q = nf4QuantizeReference(w, { blocksize: 64, doubleQuant });
      base = nf4DequantizeReference(q.packed, q.scales, w.length, 64);
    }
    const out = adapter ? mergedWeight(adapter, name, base) : base;
    done++;
    if (done % 16 === 0 || done === total) {
      const s = (performance.now() - t0) / 1000;
      io.err(`export: ${done}/${total} tensors (${(done / s).toFixed(1)}/s, ETA ${((total - done) / (done / s)).toFixed(0)} s)`);
    }
    return out;
  };
  io.err(`export: ${paths.modelDir}${paths.adapterDir ? ` + LoRA ${paths.adapterDir} (r ${adapter!.config.r}, merged)` : ""}${quant === "nf4" || ck.report.quantized.size ? ", NF4 base (dequantised)" : ""} → ${resolve(a.out)} (${a.dtype})`);
  const r = await exportTransformersJs(paths.modelDir, resolve(a.out), { dtype: a.dtype, mapWeight, overwrite: a.overwrite }).catch((e: Error) => Promise.reject(new UsageError(e.message)));
  io.log(`wrote ${r.files.join(", ")} in ${r.dir} (${(r.weightBytes / 2 ** 20).toFixed(1)} MiB of weights)`);
  return r;
}

export const exportCommand: CommandModule<object, ExportArgs> = {
  command: "export",
  describe: "Export a checkpoint (+ LoRA adapter, merged) to a transformers.js / onnxruntime model folder with a KV cache",
  builder: (y) =>
    y
      .option("model", { type: "string", demandOption: true, describe: "Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json)" })
      .option("adapter", { type: "string", describe: "PEFT LoRA adapter folder to merge in, e.g. runs/NAME/best" })
      .option("out", { type: "string", demandOption: true, describe: "output folder (config.json, tokenizer files, onnx/model.onnx)" })
      .option("dtype", { choices: ["f32", "f16"] as const, default: "f32" as const, describe: "weight storage: f16 halves the file (onnx/model_fp16.onnx; compute stays f32)" })
      .option("quant", { choices: ["none", "nf4"] as const, describe: "nf4: the base was trained as NF4 (QLoRA): export its dequantised weights (default: the adapter's run config, else none)" })
      .option("overwrite", { type: "boolean", default: false, describe: "write into a folder that already has files" })
      .example("$0 export --model models/nr-tiny-math --adapter runs/default/best --out exported/nr-tiny-math", "then AutoModelForCausalLM.from_pretrained(path.resolve('exported/nr-tiny-math')) in transformers.js (README: Deploy)")
      .example("$0 export --model DIR --out DIR-onnx --dtype f16", "half-size weights") as unknown as Argv<ExportArgs>,
  handler: async (a) => {
    await runExport(a);
  },
};
