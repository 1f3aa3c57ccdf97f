// A model folder in the layout transformers.js v3 loads for a decoder-only causal LM with a KV cache:
//   config.json              the checkpoint's config, plus "transformers.js_config" saying which ONNX file to take
//                            (dtype fp32 → onnx/model.onnx, fp16 → onnx/model_fp16.onnx) and whether it has external
//                            data (onnx/<file>_data, _data_1, …: the names transformers.js derives from the file
//                            name; more than one file past ~2 GiB, since a browser reads each into one ArrayBuffer)
//   generation_config.json   the checkpoint's, or one made from config.json's bos/eos/pad ids
//   tokenizer files          copied (tokenizer.json + tokenizer_config.json are what transformers.js reads)
//   onnx/model[_fp16].onnx   the graph of onnx.ts with past_key_values inputs and present outputs
// Without a dtype transformers.js would pick model_quantized.onnx in a browser (its WASM default is q8): the config
// names the file this folder has, so `from_pretrained(dir)` needs no options.
import { copyFile, mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { basename, join } from "node:path";
import { exportOnnx, type OnnxExportResult, type OnnxWeightDtype, type WeightMapper } from "./onnx.js";

export interface FolderExportOptions {
  dtype?: OnnxWeightDtype;
  /** Replaces weights before they are written (a merged LoRA adapter, dequantised NF4 weights). */
  mapWeight?: WeightMapper;
  externalData?: boolean | "auto";
  /** Start another `_data` file where one would pass this size (default just under 2 GiB). */
  externalDataChunkBytes?: number;
  /** Write into a folder that already has files (default: refuse). */
  overwrite?: boolean;
}

export interface FolderExportResult extends OnnxExportResult {
  dir: string;
  /** Every file written, relative to `dir`. */
  files: string[];
}

/** The ONNX file transformers.js loads for each export dtype (its DEFAULT_DTYPE_SUFFIX_MAPPING). */
export const TRANSFORMERS_JS_FILE: Record<OnnxWeightDtype, { dtype: string; file: string }> = {
  f32: { dtype: "fp32", file: "model.onnx" },
  f16: { dtype: "fp16", file: "model_fp16.onnx" },
};

const TOKENIZER_FILES = /^(tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|vocab\.json|merges\.txt|added_tokens\.json|chat_template\.jinja)$/;

/** Fails before any work when the checkpoint lacks what the folder needs or `outDir` holds files. */
async function checkPaths(modelDir: string, outDir: string, overwrite: boolean): Promise<Record<string, unknown>> {
  // tokenizer.json is copied when present (a folder without one still generates from token ids)
  if (!existsSync(join(modelDir, "config.json"))) throw new Error(`${modelDir}: no config.json there (a Hugging Face checkpoint folder with config.json and *.safetensors is needed)`);
  if (existsSync(outDir)) {
    if (!(await stat(outDir)).isDirectory()) throw new Error(`${outDir}: exists and is not a folder; pass another --out`);
    if (!overwrite && (await readdir(outDir)).length > 0) throw new Error(`${outDir}: the folder is not empty; pass another --out, empty it, or pass --overwrite`);
  }
  return JSON.parse(await readFile(join(modelDir, "config.json"), "utf8")) as Record<string, unknown>;
}

/**
 * Exports checkpoint `modelDir` (weights mapped by `opts.mapWeight`) to a transformers.js model folder `outDir`.
 * The ONNX graph has a KV cache; weights are read one tensor at a time.
 */
export async function exportTransformersJs(modelDir: string, outDir: string, opts: FolderExportOptions = {}): Promise<FolderExportResult> {
  const dtype = opts.dtype ?? "f32";
  const raw = await checkPaths(modelDir, outDir, opts.overwrite ?? false);
  const { dtype: tjsDtype, file } = TRANSFORMERS_JS_FILE[dtype];
  await mkdir(join(outDir, "onnx"), { recursive: true });
  const onnx = await exportOnnx(modelDir, join(outDir, "onnx", file), { dtype, kvCache: true, mapWeight: opts.mapWeight, externalData: opts.externalData, externalDataChunkBytes: opts.externalDataChunkBytes });
  const files = [`onnx/${file}`, ...onnx.dataPaths.map((p) => `onnx/${basename(p)}`)];
  const chunks = onnx.dataPaths.length;

  const config = {
    ...raw,
    torch_dtype: dtype === "f16" ? "float16" : "float32",
    use_cache: true,
    "transformers.js_config": { dtype: tjsDtype, kv_cache_dtype: "float32", ...(chunks ? { use_external_data_format: chunks === 1 ? true : chunks } : {}) },
  };
  await writeFile(join(outDir, "config.json"), JSON.stringify(config, null, 2) + "\n");
  files.push("config.json");
  for (const f of await readdir(modelDir)) {
    if (!TOKENIZER_FILES.test(f)) continue;
    await copyFile(join(modelDir, f), join(outDir, f));
    files.push(f);
  }
  const gen = join(modelDir, "generation_config.json");
  if (existsSync(gen)) await copyFile(gen, join(outDir, "generation_config.json"));
  else await writeFile(join(outDir, "generation_config.json"), JSON.stringify({ bos_token_id: raw.bos_token_id ?? null, eos_token_id: raw.eos_token_id ?? null, pad_token_id: raw.pad_token_id ?? null }, null, 2) + "\n");
  files.push("generation_config.json");
  return { ...onnx, dir: outDir, files };
}
