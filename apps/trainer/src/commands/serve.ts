// `nr serve`: an OpenAI-compatible HTTP server (@nr/rollout serve) over a checkpoint on the GPU and any number of
// PEFT LoRA adapters, each served under its own model name:
//   nr serve --model DIR [--adapter name=DIR ...] [--host 127.0.0.1] [--port 8000]
// Then e.g. `curl localhost:8000/v1/completions -d '{"model": "NAME", "prompt": "1+1=", "max_tokens": 8}'`, or
// OpenAIGenerator / the openai SDK with baseURL http://127.0.0.1:8000/v1.
// --allow-runtime-lora adds vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter (adapters up to
// --max-lora-rank, paths confined to --lora-root); --api-key (or NR_API_KEY) makes every route but /health need
// `Authorization: Bearer KEY`. Runtime LoRA on an address other machines can reach needs a key: refused otherwise.
import { existsSync } from "node:fs";
import { basename, resolve } from "node:path";
import { isIP } from "node:net";
import type { Argv, CommandModule } from "yargs";
import { loadModelConfig } from "@nr/model";
import { LoraModel, applyPeftAdapter, loadPeftAdapter, readPeftAdapter, type PeftAdapterData } from "@nr/lora";
import { ApiError, serve, type RunningServer, type RuntimeLora } from "@nr/rollout";
import { consoleIo, type CommandIo } from "./eval.js";
import { checkNumber, openModel, resolveModelPaths, UsageError } from "./common.js";

export interface ServeArgs {
  model: string;
  adapter?: string[];
  name?: string;
  host: string;
  port: number;
  contextLength?: number;
  maxTokens?: number;
  maxBatch: number;
  maxBodyBytes: number;
  quiet?: boolean;
  allowRuntimeLora?: boolean;
  maxLoraRank?: number;
  loraRoot?: string;
  apiKey?: string;
}

const isLoopback = (host: string) => host === "localhost" || host === "::1" || (isIP(host) === 4 && host.startsWith("127."));

/** Runtime LoRA over a LoraModel: file reads and the rank check first, GPU changes only when the server says so. */
export function runtimeLora(lora: LoraModel, maxRank: number, root: string | undefined): RuntimeLora<PeftAdapterData> {
  return {
    root,
    async read(name, path) {
      let data: PeftAdapterData;
      try {
        data = await readPeftAdapter(lora, path);
      } catch (e) {
        // vLLM answers 404 for a folder that holds no loadable adapter.
        throw new ApiError(404, `Loading lora ${name} failed: No adapter found for ${path} (${(e as Error).message})`, "lora_path", 404, "NotFoundError");
      }
      if (data.config.r > maxRank) throw new ApiError(400, `LoRA rank ${data.config.r} is greater than max_lora_rank ${maxRank} (nr serve --max-lora-rank).`, "lora_path", 400, "BadRequestError");
      return data;
    },
    install: (name, data) => applyPeftAdapter(lora, data, name),
    remove: (name) => lora.removeAdapter(name),
  };
}

/** `name=DIR` (or a bare DIR, served under its folder name) → [name, dir]; names must be unique. */
export function parseAdapterSpecs(specs: string[], baseName: string): [string, string][] {
  const out: [string, string][] = [];
  for (const spec of specs) {
    const eq = spec.indexOf("=");
    const [name, dir] = eq > 0 ? [spec.slice(0, eq), spec.slice(eq + 1)] : [basename(resolve(spec)), spec];
    if (!dir) throw new UsageError(`--adapter ${spec}: expected name=DIR (a PEFT adapter folder after the =)`);
    if (!/^[\w.:/-]+$/.test(name)) throw new UsageError(`--adapter ${spec}: the name "${name}" may hold letters, digits and _ . : / - only`);
    if (name === baseName) throw new UsageError(`--adapter ${spec}: "${name}" is the base model's served name; pick another adapter name (or --name for the base)`);
    if (out.some(([n]) => n === name)) throw new UsageError(`--adapter ${spec}: the name "${name}" is given twice`);
    out.push([name, dir]);
  }
  return out;
}

/** Load the model and adapters, start the server; resolves once it listens. */
export async function startServe(a: ServeArgs, io: CommandIo = consoleIo): Promise<RunningServer> {
  checkNumber("port", a.port, { int: true, min: 0, max: 65535 });
  checkNumber("context-length", a.contextLength, { int: true, min: 2 });
  checkNumber("max-tokens", a.maxTokens, { int: true, min: 1 });
  checkNumber("max-batch", a.maxBatch, { int: true, min: 1 });
  checkNumber("max-body-bytes", a.maxBodyBytes, { int: true, min: 1024 });
  checkNumber("max-lora-rank", a.maxLoraRank, { int: true, min: 1 });
  if (a.apiKey !== undefined && a.apiKey.trim() === "") throw new UsageError("--api-key is empty: give the key clients will send as Authorization: Bearer KEY (or leave the flag out)");
  const apiKey = a.apiKey ?? (process.env.NR_API_KEY || undefined);
  if (a.allowRuntimeLora && !apiKey && !isLoopback(a.host)) throw new UsageError(`--allow-runtime-lora on --host ${a.host} (reachable from other machines) needs --api-key KEY or NR_API_KEY: anyone who can reach the port could load files from this machine`);
  if (a.loraRoot !== undefined && !a.allowRuntimeLora) throw new UsageError("--lora-root only applies with --allow-runtime-lora");
  const loraRoot = a.loraRoot === undefined ? undefined : resolve(a.loraRoot);
  if (loraRoot !== undefined && !existsSync(loraRoot)) throw new UsageError(`--lora-root ${a.loraRoot}: no such folder`);
  const paths = resolveModelPaths({ model: a.model });
  const baseName = a.name ?? basename(paths.modelDir);
  const specs = parseAdapterSpecs(a.adapter ?? [], baseName);
  for (const [, dir] of specs) resolveModelPaths({ model: a.model, adapter: dir }); // every folder checked before the GPU starts
  const config = await loadModelConfig(paths.modelDir);
  const contextLength = a.contextLength ?? Math.min(config.maxPositionEmbeddings, 2048);
  if (contextLength > config.maxPositionEmbeddings) io.err(`serve: --context-length ${contextLength} is above the model's max_position_embeddings (${config.maxPositionEmbeddings}); quality past it is not what the model was trained for`);
  // every slot holds a cache of the whole context
  const kvCache = { rows: a.maxBatch, tokens: contextLength, what: "serve", knobs: "--max-batch (slots) or --context-length" };
  const m = await openModel({ model: a.model, contextLength, kvCache });
  try {
    const lora = specs.length || a.allowRuntimeLora ? new LoraModel(m.decoder) : null;
    for (const [name, dir] of specs) {
      try {
        await loadPeftAdapter(lora!, resolve(dir), name);
      } catch (e) {
        throw new UsageError(`--adapter ${name}=${dir}: ${(e as Error).message}`);
      }
    }
    lora?.setTraining(false);
    lora?.select(null);
    const server = await serve({
      generator: m.generator,
      tokenizer: m.tokenizer.chatTemplate ? m.tokenizer : { encode: (t, o) => m.tokenizer.encode(t, o), decode: (ids, o) => m.tokenizer.decode(ids, o), stopTokenIds: m.tokenizer.stopTokenIds },
      model: baseName,
      adapters: specs.map(([n]) => n),
      activate: (name) => lora?.select(name),
      host: a.host,
      port: a.port,
      contextLength,
      maxTokens: a.maxTokens,
      maxBatchRows: a.maxBatch,
      maxBodyBytes: a.maxBodyBytes,
      log: a.quiet ? undefined : (l) => io.err(`serve: ${l}`),
      apiKey,
      runtimeLora: a.allowRuntimeLora ? runtimeLora(lora!, a.maxLoraRank ?? 16, loraRoot) : undefined,
    });
    io.err(`serve: ${baseName}${specs.length ? ` + adapters ${specs.map(([n]) => n).join(", ")}` : ""} on ${m.gpu.adapterName}; context ${contextLength} tokens, ${a.maxBatch} sequences at once`);
    if (a.allowRuntimeLora) io.err(`serve: runtime LoRA on (POST /v1/load_lora_adapter, /v1/unload_lora_adapter; rank ≤ ${a.maxLoraRank ?? 16}${loraRoot ? `; lora_path inside ${loraRoot}` : ""})`);
    if (apiKey) io.err("serve: every route but /health needs Authorization: Bearer <key>");
    io.log(`serve: listening on ${server.url}  (GET /models, POST /completions, POST /chat/completions)`);
    const close = server.close.bind(server);
    return {
      ...server,
      close: async () => {
        await close();
        m.close();
      },
    };
  } catch (e) {
    m.close();
    throw e;
  }
}

export const serveCommand: CommandModule<object, ServeArgs> = {
  command: "serve",
  describe: "OpenAI-compatible HTTP server (completions, chat, models; streaming) over a checkpoint and its LoRA adapters, on the GPU",
  builder: (y) =>
    y
      .option("model", { type: "string", demandOption: true, describe: "Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json)" })
      .option("adapter", { type: "string", array: true, describe: "name=DIR: serve a PEFT LoRA adapter under model name `name` (repeatable)" })
      .option("name", { type: "string", describe: "served name of the base model (default: its folder name)" })
      .option("host", { type: "string", default: "127.0.0.1", describe: "address to bind (0.0.0.0: every interface; use --api-key there)" })
      .option("port", { type: "number", default: 8000, describe: "TCP port (0: any free port)" })
      .option("context-length", { type: "number", describe: "prompt + completion limit per sequence (default: the model's max positions, at most 2048)" })
      .option("max-tokens", { type: "number", describe: "largest max_tokens a request may ask for (default: the context length)" })
      .option("max-batch", { type: "number", default: 16, describe: "sequences decoding at once (KV cache = this × context length)" })
      .option("max-body-bytes", { type: "number", default: 1 << 20, describe: "largest request body" })
      .option("quiet", { type: "boolean", default: false, describe: "no per-request log lines" })
      .option("allow-runtime-lora", { type: "boolean", default: false, describe: "serve vLLM's POST /v1/load_lora_adapter and /v1/unload_lora_adapter (needs --api-key off loopback)" })
      .option("max-lora-rank", { type: "number", default: 16, describe: "largest LoRA rank a runtime load may have" })
      .option("lora-root", { type: "string", describe: "runtime loads only from this folder (no .., no symlinks leading out)" })
      .option("api-key", { type: "string", describe: "require Authorization: Bearer KEY on every route but /health (default: $NR_API_KEY)" })
      .example("NR_API_KEY=secret $0 serve --model models/nr-tiny-math --allow-runtime-lora --lora-root runs --host 0.0.0.0", "a rollout worker for nr train --rl.rollout.servers")
      .example("$0 serve --model ~/Qwen2.5-Math-1.5B-Instruct --adapter rl=runs/default/checkpoints/step-70", "serve the base as Qwen2.5-Math-1.5B-Instruct and the adapter as rl on 127.0.0.1:8000") as unknown as Argv<ServeArgs>,
  handler: async (a) => {
    const server = await startServe(a);
    await new Promise<void>((done) => {
      const stop = () => {
        console.error("serve: shutting down");
        void server.close().then(done);
      };
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
    });
  },
};
