/**
 * The text-generation interface the evaluator and the curation filter call. The GPU rollout engine
 * (@nr/rollout) implements it; {@link ScriptedGenerator} is a fake for tests.
 */
import { type RepetitionStop, firstRepetition } from "./repetition.js";
import { Rng, fnv1a } from "./util.js";

/**
 * Why a completion ended: the model's end token, a stop string, the token budget, or the repetition guard (a looping
 * tail, see {@link RepetitionStop}; like "length", the completion never finished).
 */
export type FinishReason = "eos" | "stop" | "length" | "repetition";

/** True when the completion was cut before it finished: the token budget or the repetition guard ended it. */
export function unfinished(reason: FinishReason | (string & {})): boolean {
  return reason === "length" || reason === "repetition";
}

/** One prompt to complete `n` times. */
export interface GenerationRequest {
  /** The full prompt text (already rendered with the chat template). */
  prompt: string;
  /**
   * The prompt already tokenized with the generator's tokenizer (e.g. a chat template encoded with its special
   * tokens): a generator that tokenizes uses these ids instead of encoding `prompt`, which then only labels it.
   */
  promptIds?: readonly number[];
  /** Number of completions. */
  n: number;
  /** Sampling temperature; 0 means greedy (argmax) decoding. */
  temperature: number;
  /** Nucleus sampling mass (default 1: off). */
  topP?: number;
  /** Token budget per completion. */
  maxNewTokens: number;
  /** Seed for this request's samples; the same request with the same seed gives the same completions. */
  seed?: number;
  /** Strings that end a completion (not included in the text). */
  stop?: string[];
  /** The length-explosion guard: end a completion whose tail is one block repeated (finish reason "repetition"). */
  repetitionStop?: RepetitionStop;
}

export interface Completion {
  /** Generated text (without the prompt, without the end token or stop string). */
  text: string;
  /** Number of generated tokens, when the generator knows it. */
  tokens?: number;
  finishReason: FinishReason;
}

export interface GenerationResult {
  /** `n` completions, in order. */
  completions: Completion[];
}

/** Completes a batch of requests; results are in request order. */
export interface Generator {
  generate(requests: GenerationRequest[]): Promise<GenerationResult[]>;
}

/** What a script sees for one completion. */
export interface ScriptContext {
  request: GenerationRequest;
  /** Index of the completion within the request (0..n-1). */
  index: number;
  /** A random source seeded from (request seed, prompt, index): reproducible, independent per completion. */
  rng: Rng;
}

/**
 * A fake {@link Generator} driven by a function. The function returns the "model output"; the fake then
 * applies the request's stop strings (finish `"stop"`), repetition guard over characters (finish `"repetition"`) and
 * token budget (finish `"length"`), counting
 * tokens with `countTokens` (default: one token per character, like a character-level model).
 * Every call is recorded in `calls`.
 */
export class ScriptedGenerator implements Generator {
  readonly calls: GenerationRequest[][] = [];
  private readonly script: (ctx: ScriptContext) => string | Promise<string>;
  private readonly countTokens: (text: string) => number;

  constructor(script: (ctx: ScriptContext) => string | Promise<string>, options: { countTokens?: (text: string) => number } = {}) {
    this.script = script;
    this.countTokens = options.countTokens ?? ((t) => [...t].length);
  }

  async generate(requests: GenerationRequest[]): Promise<GenerationResult[]> {
    this.calls.push(requests);
    const out: GenerationResult[] = [];
    for (const request of requests) {
      const completions: Completion[] = [];
      for (let index = 0; index < request.n; index++) {
        const rng = new Rng(fnv1a(`${request.seed ?? 0}:${index}:${request.prompt}`));
        let text = await this.script({ request, index, rng });
        let finishReason: FinishReason = "eos";
        for (const s of request.stop ?? []) {
          const i = text.indexOf(s);
          if (i >= 0) {
            text = text.slice(0, i);
            finishReason = "stop";
          }
        }
        if (request.repetitionStop) {
          // the guard over code points (one token per character, the default counter's model)
          const chars = [...text];
          const at = firstRepetition(chars.map((c) => c.codePointAt(0)!), request.repetitionStop);
          if (at >= 0 && at <= request.maxNewTokens) {
            text = chars.slice(0, at).join("");
            finishReason = "repetition";
          }
        }
        let tokens = this.countTokens(text);
        if (tokens > request.maxNewTokens) {
          const chars = [...text];
          // Cut by characters until within budget (exact for the default counter).
          let lo = 0;
          let hi = chars.length;
          while (lo < hi) {
            const mid = Math.ceil((lo + hi) / 2);
            if (this.countTokens(chars.slice(0, mid).join("")) <= request.maxNewTokens) lo = mid;
            else hi = mid - 1;
          }
          text = chars.slice(0, lo).join("");
          tokens = this.countTokens(text);
          finishReason = "length";
        }
        completions.push({ text, tokens, finishReason });
      }
      out.push({ completions });
    }
    return out;
  }
}
