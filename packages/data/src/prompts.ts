import { Template } from "@huggingface/jinja";
import type { MathRecord } from "./types.js";
import { Rng, fnv1a, lastBoxed } from "./util.js";

/** System prompt for chain-of-thought prompting (the Qwen2.5-Math CoT prompt). */
export const COT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}.";
/** System prompt for tool-integrated (program-aided) reasoning, as used by Qwen2.5-Math. */
export const TIR_SYSTEM_PROMPT =
  "Please integrate natural language reasoning with programs to solve the problem above, and put your final answer within \\boxed{}.";

export interface ChatMessage {
  role: string;
  content: string;
}

/**
 * ChatML without a default system prompt: `<|im_start|>{role}\n{content}<|im_end|>\n` per message,
 * and `<|im_start|>assistant\n` as generation prompt.
 */
export const CHATML_TEMPLATE =
  "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/**
 * A compact plain-text format for tiny models with character- or word-level vocabularies:
 * `{system}\n\n` (if any), `Question: {user}\n`, `Answer: {assistant}{eos_token}\n\n`; generation prompt `Answer: `.
 */
export const PLAIN_TEMPLATE =
  "{%- for message in messages %}" +
  "{%- if message.role == 'system' %}{{- message.content + '\\n\\n' }}" +
  "{%- elif message.role == 'user' %}{{- 'Question: ' + message.content + '\\n' }}" +
  "{%- else %}{{- 'Answer: ' + message.content + (eos_token or '') + '\\n\\n' }}{%- endif %}" +
  "{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- 'Answer: ' }}{%- endif %}";

type TokenValue = string | { content?: string } | null | undefined;

/** A chat template (Jinja, as in a checkpoint's tokenizer_config.json) ready to render. */
export class ChatTemplate {
  readonly source: string;
  /** Special tokens passed to the template (`bos_token`, `eos_token`, …). */
  readonly tokens: Record<string, string>;
  private readonly template: Template;

  constructor(source: string, tokens: Record<string, string> = {}) {
    this.source = source;
    this.tokens = tokens;
    this.template = new Template(source);
  }

  /** The end-of-sequence token the template was given (for ChatML checkpoints usually `<|im_end|>`). */
  get eosToken(): string | undefined {
    return this.tokens.eos_token;
  }

  /** Built-in ChatML (no default system prompt), eos `<|im_end|>`. */
  static chatml(): ChatTemplate {
    return new ChatTemplate(CHATML_TEMPLATE, { eos_token: "<|im_end|>" });
  }

  /** Built-in plain `Question:`/`Answer:` format; `eos` ends each answer (default `\n` only, i.e. none). */
  static plain(eos = ""): ChatTemplate {
    return new ChatTemplate(PLAIN_TEMPLATE, { eos_token: eos });
  }

  /**
   * Loads the chat template of a checkpoint folder (Node only): the `chat_template.jinja` file newer
   * `transformers` versions write (preferred when present, as transformers does), else `chat_template`
   * of tokenizer_config.json. See {@link ChatTemplate.fromConfig}.
   */
  static async fromTokenizerDir(dir: string, name = "default"): Promise<ChatTemplate> {
    // Imported here so this module stays usable in browsers (see @nr/data/core).
    const { readFile } = await import("node:fs/promises");
    const read = (file: string) => readFile(`${dir.replace(/[\\/]+$/, "")}/${file}`, "utf8").catch((e: NodeJS.ErrnoException) => (e.code === "ENOENT" ? undefined : Promise.reject(e)));
    const cfgText = await read("tokenizer_config.json");
    const cfg = cfgText === undefined ? {} : (JSON.parse(cfgText) as Record<string, unknown>);
    const jinja = await read("chat_template.jinja");
    try {
      return ChatTemplate.fromConfig(cfg, jinja, name);
    } catch (e) {
      throw new Error(`${dir}: ${(e as Error).message}`);
    }
  }

  /**
   * Builds the template from a parsed tokenizer_config.json and, optionally, the text of a
   * `chat_template.jinja`. The default template (`name` "default") is the jinja text when given, else
   * the config's `chat_template` (a string, or the entry named "default" of a `{name, template}` list);
   * other names are looked up in that list. Special tokens (`*_token`, string or `{content}`) are passed
   * to the template.
   */
  static fromConfig(config: Record<string, unknown>, jinja?: string, name = "default"): ChatTemplate {
    let source: string | undefined = name === "default" ? jinja : undefined;
    const ct = config.chat_template;
    if (source === undefined && typeof ct === "string" && name === "default") source = ct;
    else if (source === undefined && Array.isArray(ct)) {
      const entry = (ct as { name?: string; template?: string }[]).find((t) => t.name === name);
      source = entry?.template;
      if (source === undefined) throw new Error(`no chat template named "${name}"`);
    }
    if (source === undefined) throw new Error(name === "default" ? "no chat_template in tokenizer_config.json and no chat_template.jinja" : `no chat template named "${name}"`);
    const tokens: Record<string, string> = {};
    for (const [k, v] of Object.entries(config)) {
      if (!k.endsWith("_token")) continue;
      const t = v as TokenValue;
      const s = typeof t === "string" ? t : t && typeof t === "object" ? t.content : undefined;
      if (typeof s === "string") tokens[k] = s;
    }
    return new ChatTemplate(source, tokens);
  }

  /** Renders messages; `addGenerationPrompt` appends the assistant header so the model continues as assistant. */
  render(messages: readonly ChatMessage[], options: { addGenerationPrompt?: boolean; extra?: Record<string, unknown> } = {}): string {
    return this.template.render({
      ...this.tokens,
      ...options.extra,
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? false,
    });
  }
}

/** A worked example for few-shot prompts. */
export type FewShotExample = Pick<MathRecord, "problem" | "answer" | "solution">;

/** How to prompt. */
export interface PromptOptions {
  /** `"cot"` (default): {@link COT_SYSTEM_PROMPT}; `"tir"`: {@link TIR_SYSTEM_PROMPT}; `"none"`: no system message. */
  style?: "cot" | "tir" | "none";
  /** Overrides the system prompt of the style (null: no system message). */
  system?: string | null;
  /** Few-shot examples placed before the problem. */
  shots?: readonly FewShotExample[];
  /**
   * `"turns"` (default): each shot is a user turn and an assistant turn (chat models);
   * `"inline"`: all shots go into the user message as `Question:`/`Answer:` blocks (the 8-shot
   * GSM8K / 4-shot MATH style used with base models).
   */
  shotFormat?: "turns" | "inline";
}

/**
 * The assistant text of a few-shot example: its solution, ending with `\boxed{answer}`
 * (appended as "The answer is $\boxed{…}$." when the solution has no box).
 */
export function shotResponse(shot: FewShotExample): string {
  const sol = (shot.solution ?? "").trim();
  if (sol && lastBoxed(sol) !== null) return sol;
  const tail = `The answer is $\\boxed{${shot.answer}}$.`;
  return sol ? `${sol}\n${tail}` : tail;
}

/** The chat messages for a problem (system prompt, few-shot examples, the problem). */
export function buildMessages(problem: string, options: PromptOptions = {}): ChatMessage[] {
  const style = options.style ?? "cot";
  const system = options.system !== undefined ? options.system : style === "cot" ? COT_SYSTEM_PROMPT : style === "tir" ? TIR_SYSTEM_PROMPT : null;
  const messages: ChatMessage[] = [];
  if (system) messages.push({ role: "system", content: system });
  const shots = options.shots ?? [];
  if ((options.shotFormat ?? "turns") === "turns") {
    for (const s of shots) {
      messages.push({ role: "user", content: s.problem });
      messages.push({ role: "assistant", content: shotResponse(s) });
    }
    messages.push({ role: "user", content: problem });
  } else {
    const blocks = shots.map((s) => `Question: ${s.problem}\nAnswer: ${shotResponse(s)}`);
    blocks.push(`Question: ${problem}\nAnswer:`);
    messages.push({ role: "user", content: blocks.join("\n\n") });
  }
  return messages;
}

/** The generation prompt for a problem: the rendered messages with the assistant header appended. */
export function buildPrompt(template: ChatTemplate, problem: string, options: PromptOptions = {}): string {
  return template.render(buildMessages(problem, options), { addGenerationPrompt: true });
}

/**
 * Picks `k` few-shot examples from a pool, deterministically by seed, leaving out `exclude` ids
 * (e.g. the problem being asked). Only examples with a solution are taken when `requireSolution` (default true).
 */
export function selectFewShot(pool: readonly MathRecord[], k: number, options: { seed?: number; exclude?: Iterable<string>; requireSolution?: boolean } = {}): MathRecord[] {
  const exclude = new Set(options.exclude ?? []);
  const eligible = pool.filter((r) => !exclude.has(r.id) && (options.requireSolution === false || !!r.solution));
  if (eligible.length < k) throw new Error(`selectFewShot: need ${k} examples, only ${eligible.length} eligible`);
  return new Rng(options.seed ?? 0).shuffle(eligible).slice(0, k);
}

/** The SFT target format: `<think>\n{reasoning}\n</think>\n\boxed{answer}`. */
export function sftTarget(reasoning: string, answer: string): string {
  return `<think>\n${reasoning.trim()}\n</think>\n\\boxed{${answer}}`;
}

/**
 * The SFT target of a hybrid-thinking cold start: for a share `noThinkFraction` (0..1) of records, picked by a
 * hash of `seed` and the record id (so the same records are picked on every run and resume), the non-thinking
 * form `<think>\n\n</think>\n\boxed{answer}`; for the rest, {@link sftTarget} of the record's solution.
 */
export function hybridSftTarget(record: MathRecord, options: { noThinkFraction: number; seed: number }): string {
  if (!(options.noThinkFraction >= 0 && options.noThinkFraction <= 1)) throw new Error(`noThinkFraction must be in [0, 1], got ${options.noThinkFraction}`);
  const noThink = fnv1a(`${options.seed}:${record.id}`) % 10000 < Math.round(options.noThinkFraction * 10000);
  if (!noThink && !record.solution) throw new Error(`record ${record.id} has no solution`);
  return sftTarget(noThink ? "" : (record.solution ?? ""), record.answer);
}

/** Splits an SFT target back into reasoning and answer; null when it is not in that format. */
export function parseSftTarget(text: string): { reasoning: string; answer: string } | null {
  const m = /^<think>\n([\s\S]*)\n<\/think>\n\\boxed\{([\s\S]*)\}$/.exec(text);
  return m ? { reasoning: m[1], answer: m[2] } : null;
}

/**
 * Whether a completion reasons in the `<think>` format: it opens `<think>` and writes something other than whitespace
 * before `</think>` (or before its end, when it never closes). The thinking rate of a run is the share of its
 * completions for which this holds.
 */
export function thinks(completion: string): boolean {
  const m = /<think>([\s\S]*?)(?:<\/think>|$)/.exec(completion);
  return m !== null && m[1].trim() !== "";
}

/** One supervised example: `text = prompt + completion`; the loss goes on `completion`. */
export interface SftExample {
  id: string;
  prompt: string;
  /** The assistant turn as the template renders it (target plus end-of-turn tokens). */
  completion: string;
  /** The bare target (`<think>…</think>\boxed{…}`). */
  target: string;
  text: string;
}

/**
 * Builds an SFT example from a record: the prompt (as {@link buildPrompt}), and as completion the
 * {@link sftTarget} of the record's solution (or `options.reasoning`) and answer, followed by whatever
 * the template puts after an assistant turn (`<|im_end|>\n` for ChatML). If the template rewrites
 * assistant turns (some reasoning templates drop `<think>` content), the completion is the target
 * followed by the eos token instead.
 */
export function buildSftExample(template: ChatTemplate, record: MathRecord, options: PromptOptions & { reasoning?: string } = {}): SftExample {
  const reasoning = options.reasoning ?? record.solution;
  if (!reasoning) throw new Error(`record ${record.id} has no solution to use as reasoning`);
  const target = sftTarget(reasoning, record.answer);
  const messages = buildMessages(record.problem, options);
  const prompt = template.render(messages, { addGenerationPrompt: true });
  const full = template.render([...messages, { role: "assistant", content: target }]);
  let completion: string;
  if (full.startsWith(prompt) && full.slice(prompt.length).startsWith(target)) completion = full.slice(prompt.length);
  else completion = target + (template.eosToken ?? "");
  return { id: record.id, prompt, completion, target, text: prompt + completion };
}
