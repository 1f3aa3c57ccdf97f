// RL rollouts on OpenAI-compatible servers (vLLM, nr serve) instead of this GPU: `rl.rollout.servers`.
//
// Each step the policy adapter is written to `rl.rollout.adapterDir` (PEFT layout, atomic) and loaded in place on
// every server through vLLM's POST /v1/load_lora_adapter — the adapter only, never the base weights. The step's
// prompts then go out as token ids, one /v1/completions request per prompt (n = G, logprobs, the sampled tokens back
// as ids), spread over the servers that took the adapter. Training stays here and unchanged: the trainer scores the
// returned tokens itself (π_old from its own forward), reports the sampler-vs-trainer log-prob mismatch, and can
// correct it with truncated importance sampling (rl.rollout.tisCap).
//
// Seeds: prompt i of a call with seed s is sampled with seed (s·1 000 003 + 7 919·i + 1) mod 2^47, sent with the
// request and written to <run>/rollouts.jsonl with the server that answered. The call seed is a function of the step
// (as for local generation), so a resumed run asks for exactly the same samples. A server samples a seeded request
// the same way whatever else it is batching (nr serve; vLLM with its per-request seed), so which server answers does
// not change the result. The local generator keys its random stream by the row's index in the call instead of the
// prompt, so a remote run and a local run with the same seed draw different (equally distributed) samples.
//
// Failures: a server that cannot be reached, times out or answers 5xx is out for the rest of the step and its
// prompts go to the others; each step starts by trying every server again. A 4xx is a configuration problem and
// stops the run with the server's message. With no server left the step fails naming every URL and its error.
import { appendFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { AlgoConfig } from "@nr/algos";
import { savePeftAdapter, type LoraModel } from "@nr/lora";
import { completeTokenIds, HttpError, loadLoraAdapter, type GeneratedSequence, type PromptSpec, type SampleOptions, type ServerConnection } from "@nr/rollout";
import type { Override, RolloutConfig, TrainConfig } from "../run/index.js";

/** The served name of the policy adapter on every server. */
export const REMOTE_ADAPTER_NAME = "nr-policy";

/** Requests in flight per server (each asks for G samples; the server batches them). */
const PER_SERVER = 8;

export interface RemoteRolloutOptions {
  servers: string[];
  apiKey?: string;
  /** Folder the servers read the adapter from (their --lora-root must contain it). */
  adapterDir: string;
  /** base_model_name_or_path written into adapter_config.json. */
  baseModel: string;
  timeoutMs: number;
  /** Stop token ids (a server that lists the EOS it stopped on has it removed; the trainer appends EOS itself). */
  stopTokenIds: readonly number[];
  /** One JSON line per request (step, prompt, seed, server, latency): the record of server-side sampling. */
  recordFile?: string;
  log: (line: string) => void;
}

/** What one step cost and where its work went (merged into the step's metrics row). */
export interface RemoteStepStats {
  rollout_publish_ms: number;
  rollout_servers_live: number;
  rollout_requests: number;
  /** Servers that failed during the step's generation (their prompts were re-sent elsewhere). */
  rollout_servers_failed: number;
}

/** Seed of prompt `i` of a call seeded with `callSeed`. */
export function promptSeed(callSeed: number, i: number): number {
  return (callSeed * 1_000_003 + 7_919 * i + 1) % 2 ** 47;
}

/** Server base URL as given, with /v1 added when it has no path. */
export function serverBaseUrl(url: string): string {
  const u = url.replace(/\/+$/, "");
  return /^https?:\/\/[^/]+$/.test(u) ? `${u}/v1` : u;
}

export class RemoteRollout {
  private readonly conns: ServerConnection[];
  /** Servers that took this step's adapter and have not failed since. */
  private live: ServerConnection[] = [];
  private step = 0;
  private stats: RemoteStepStats = { rollout_publish_ms: 0, rollout_servers_live: 0, rollout_requests: 0, rollout_servers_failed: 0 };

  constructor(private readonly o: RemoteRolloutOptions) {
    if (o.servers.length === 0) throw new Error("rl.rollout.servers is empty");
    this.conns = o.servers.map((s) => ({ baseUrl: serverBaseUrl(s), apiKey: o.apiKey, timeoutMs: o.timeoutMs }));
  }

  /** Write adapter `name` of `lora` and load it in place on every server; the ones that fail sit out this step. */
  async publish(lora: LoraModel, name: string, step: number): Promise<void> {
    const t0 = performance.now();
    this.step = step;
    await savePeftAdapter(lora, name, this.o.adapterDir, { baseModel: this.o.baseModel });
    const answers = await Promise.allSettled(this.conns.map((c) => loadLoraAdapter(c, { lora_name: REMOTE_ADAPTER_NAME, lora_path: this.o.adapterDir, load_inplace: true })));
    const failed = answers.flatMap((a, i) => (a.status === "rejected" ? [`${this.conns[i].baseUrl}: ${(a.reason as Error).message}`] : []));
    const config = answers.find((a) => a.status === "rejected" && a.reason instanceof HttpError && a.reason.status >= 400 && a.reason.status < 500);
    if (config) throw new Error(`rl.rollout: a server refused the adapter (${(config as PromiseRejectedResult).reason.message}); start it with nr serve --allow-runtime-lora --lora-root <a folder holding ${this.o.adapterDir}> (vLLM: VLLM_ALLOW_RUNTIME_LORA_UPDATING=True --enable-lora --max-lora-rank >= lora.r), and the same API key`);
    this.live = this.conns.filter((_, i) => answers[i].status === "fulfilled");
    for (const f of failed) this.o.log(`rollout: step ${step + 1}: ${f} — sitting out this step`);
    if (this.live.length === 0) throw new Error(`rl.rollout: no server took the adapter at step ${step + 1}:\n  ${failed.join("\n  ")}`);
    this.stats = { rollout_publish_ms: performance.now() - t0, rollout_servers_live: this.live.length, rollout_requests: 0, rollout_servers_failed: 0 };
  }

  /** The stats of the current step (since the last publish). */
  stepStats(): RemoteStepStats {
    return { ...this.stats, rollout_servers_live: this.live.length };
  }

  /** The WebGpuGenerator.generateIds contract, served remotely: prompt order kept, n samples each. */
  async generateIds(prompts: PromptSpec[], o: SampleOptions): Promise<GeneratedSequence[][]> {
    const out: GeneratedSequence[][] = prompts.map(() => []);
    const todo = prompts.map((_, i) => i);
    const errors = new Map<string, string>();
    let fatal: Error | null = null;
    const worker = async (conn: ServerConnection) => {
      for (let i = todo.shift(); i !== undefined && !fatal; i = todo.shift()) {
        if (!this.live.includes(conn)) return void todo.unshift(i);
        const seed = promptSeed(o.seed ?? 0, i);
        const t0 = performance.now();
        try {
          const p = prompts[i];
          const done = await completeTokenIds(conn, { model: REMOTE_ADAPTER_NAME, promptIds: p.promptIds, n: p.n, maxNewTokens: o.maxNewTokens, temperature: o.temperature, topP: o.topP, topK: o.topK, seed }, this.o.stopTokenIds);
          out[i] = done.map((c) => ({ promptIds: p.promptIds, ...c }));
          this.stats.rollout_requests++;
          this.record({ step: this.step + 1, prompt: i, n: p.n, seed, server: conn.baseUrl, ms: Math.round(performance.now() - t0), tokens: done.reduce((a, c) => a + c.tokenIds.length, 0) });
        } catch (e) {
          const err = e as Error;
          if (err instanceof HttpError && err.status >= 400 && err.status < 500) fatal ??= new Error(`rl.rollout: ${err.message}`);
          else if (this.live.includes(conn)) {
            // Out for the rest of the step; its prompts go back for another server.
            this.live = this.live.filter((c) => c !== conn);
            errors.set(conn.baseUrl, err.message);
            this.stats.rollout_servers_failed++;
            this.o.log(`rollout: step ${this.step + 1}: ${conn.baseUrl} failed (${err.message}); its prompts go to ${this.live.map((c) => c.baseUrl).join(", ") || "no other server"}`);
          }
          todo.unshift(i);
          return;
        }
      }
    };
    while (todo.length && !fatal) {
      if (this.live.length === 0) throw new Error(`rl.rollout: every server failed at step ${this.step + 1}:\n  ${this.conns.map((c) => `${c.baseUrl}: ${errors.get(c.baseUrl) ?? "did not take the adapter"}`).join("\n  ")}`);
      // Workers interleaved over the servers, so the prompts are dealt out in turn.
      await Promise.all(Array.from({ length: PER_SERVER }, () => this.live.map((c) => worker(c))).flat());
    }
    if (fatal) throw fatal;
    return out;
  }

  private record(row: Record<string, unknown>) {
    if (this.o.recordFile) appendFileSync(this.o.recordFile, JSON.stringify(row) + "\n");
  }
}

const KEY_OVERRIDE = "rl.rollout.apiKey";

/**
 * The servers' API key (rl.rollout.apiKey, a `--rl.rollout.apiKey` override, else NR_API_KEY), and the config and
 * overrides without it: nothing that is written into the run folder holds the key.
 */
export function takeRolloutKey(config: TrainConfig | null, overrides: readonly Override[] | undefined): { apiKey?: string; config: TrainConfig | null; overrides?: readonly Override[] } {
  const fromOverride = overrides?.find(([k]) => k === KEY_OVERRIDE)?.[1];
  const apiKey = (typeof fromOverride === "string" ? fromOverride : undefined) ?? config?.rl.rollout?.apiKey ?? (process.env.NR_API_KEY || undefined);
  let clean = config;
  if (config?.rl.rollout?.apiKey !== undefined) {
    const { apiKey: _, ...rollout } = config.rl.rollout;
    clean = { ...config, rl: { ...config.rl, rollout: rollout as RolloutConfig } };
  }
  return { apiKey, config: clean, overrides: overrides?.filter(([k]) => k !== KEY_OVERRIDE) };
}

/** The RemoteRollout a config asks for (rl.rollout.servers), or null to generate on this GPU. */
export function openRemoteRollout(config: TrainConfig, at: { runDir: string; baseModel: string; apiKey?: string; stopTokenIds: readonly number[]; log: (l: string) => void }): RemoteRollout | null {
  const r = config.rl.rollout;
  if (!r?.servers.length || !config.rl.enabled) return null;
  const adapterDir = resolve(r.adapterDir ?? join(at.runDir, "rollout-adapter"));
  at.log(`rollout: generating on ${r.servers.join(", ")} (adapter ${REMOTE_ADAPTER_NAME} loaded in place each step from ${adapterDir}${at.apiKey ? ", with an API key" : ""}${r.tisCap > 0 ? `; truncated importance sampling, cap ${r.tisCap}` : ""})`);
  return new RemoteRollout({ servers: r.servers, apiKey: at.apiKey, adapterDir, baseModel: at.baseModel, timeoutMs: r.timeoutS * 1000, stopTokenIds: at.stopTokenIds, recordFile: join(at.runDir, "rollouts.jsonl"), log: at.log });
}

/** With remote rollouts and rl.rollout.tisCap > 0: token-level truncated importance sampling at that cap. */
export function withSamplerCorrection(algo: AlgoConfig, config: TrainConfig, remote: RemoteRollout | null): AlgoConfig {
  const cap = config.rl.rollout?.tisCap ?? 0;
  return remote && cap > 0 ? { ...algo, importanceSampling: { mode: "token_truncate", cap } } : algo;
}
