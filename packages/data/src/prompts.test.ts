import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { haveShared, SHARED_DATA } from "./fixtures/shared-data.js";
import {
  COT_SYSTEM_PROMPT,
  ChatTemplate,
  TIR_SYSTEM_PROMPT,
  buildMessages,
  buildPrompt,
  buildSftExample,
  hybridSftTarget,
  parseSftTarget,
  selectFewShot,
  sftTarget,
  shotResponse,
  thinks,
} from "./prompts.js";
import type { MathRecord } from "./types.js";

const rec = (id: string, problem: string, answer: string, solution?: string): MathRecord => ({ id, problem, answer, source: "t", ...(solution ? { solution } : {}) });

describe("system prompts", () => {
  it("are the exact Qwen2.5-Math CoT and TIR prompts", () => {
    expect(COT_SYSTEM_PROMPT).toBe("Please reason step by step, and put your final answer within \\boxed{}.");
    expect(TIR_SYSTEM_PROMPT).toBe(
      "Please integrate natural language reasoning with programs to solve the problem above, and put your final answer within \\boxed{}.",
    );
  });
});

describe.skipIf(!haveShared("qwen2.5_tokenizer/chat_template.jinja"))("the real Qwen2.5 chat template", () => {
  const load = () => ChatTemplate.fromTokenizerDir(SHARED_DATA + "qwen2.5_tokenizer");

  it("loads from the checkpoint folder with its special tokens", async () => {
    const t = await load();
    expect(t.eosToken).toBe("<|im_end|>");
    expect(t.tokens.pad_token).toBe("<|endoftext|>");
  });

  it("renders a CoT prompt as ChatML with the generation prompt", async () => {
    const t = await load();
    expect(buildPrompt(t, "What is 2+3?")).toBe(
      "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n" +
        "<|im_start|>user\nWhat is 2+3?<|im_end|>\n" +
        "<|im_start|>assistant\n",
    );
  });

  it("renders TIR and falls back to the template's default system prompt when there is none", async () => {
    const t = await load();
    expect(buildPrompt(t, "x?", { style: "tir" })).toBe(`<|im_start|>system\n${TIR_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nx?<|im_end|>\n<|im_start|>assistant\n`);
    expect(buildPrompt(t, "x?", { style: "none" })).toBe(
      "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nx?<|im_end|>\n<|im_start|>assistant\n",
    );
  });

  it("renders few-shot turns and SFT examples", async () => {
    const t = await load();
    const shot = rec("s1", "What is 1+1?", "2", "1 + 1 = 2.");
    const prompt = buildPrompt(t, "What is 2+2?", { shots: [shot] });
    expect(prompt).toBe(
      `<|im_start|>system\n${COT_SYSTEM_PROMPT}<|im_end|>\n` +
        "<|im_start|>user\nWhat is 1+1?<|im_end|>\n" +
        "<|im_start|>assistant\n1 + 1 = 2.\nThe answer is $\\boxed{2}$.<|im_end|>\n" +
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n" +
        "<|im_start|>assistant\n",
    );
    const ex = buildSftExample(t, rec("p", "What is 2+2?", "4", "2 + 2 = 4."));
    expect(ex.prompt).toBe(buildPrompt(t, "What is 2+2?"));
    expect(ex.target).toBe("<think>\n2 + 2 = 4.\n</think>\n\\boxed{4}");
    expect(ex.completion).toBe("<think>\n2 + 2 = 4.\n</think>\n\\boxed{4}<|im_end|>\n");
    expect(ex.text).toBe(ex.prompt + ex.completion);
  });
});

describe("templates", () => {
  it("built-in ChatML matches the ChatML layout without a default system prompt", () => {
    const t = ChatTemplate.chatml();
    expect(buildPrompt(t, "q", { style: "none" })).toBe("<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n");
  });

  it("plain template for tiny models", () => {
    const t = ChatTemplate.plain("\u0003");
    expect(buildPrompt(t, "1+1?", { style: "none" })).toBe("Question: 1+1?\nAnswer: ");
    const ex = buildSftExample(t, rec("a", "1+1?", "2", "1 + 1 = 2"), { style: "none" });
    expect(ex.text).toBe("Question: 1+1?\nAnswer: <think>\n1 + 1 = 2\n</think>\n\\boxed{2}\u0003\n\n");
  });

  it("reads chat_template from tokenizer_config.json, including named template lists", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nr-data-tpl-"));
    writeFileSync(
      join(dir, "tokenizer_config.json"),
      JSON.stringify({
        eos_token: { content: "</s>", lstrip: false },
        bos_token: "<s>",
        chat_template: [
          { name: "default", template: "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}" },
          { name: "tool_use", template: "unused" },
        ],
      }),
    );
    const t = await ChatTemplate.fromTokenizerDir(dir);
    expect(t.eosToken).toBe("</s>");
    expect(t.render([{ role: "user", content: "hi" }], { addGenerationPrompt: true })).toBe("<s>[user]hi[assistant]");
    await expect(ChatTemplate.fromTokenizerDir(dir, "missing")).rejects.toThrow(/no chat template named "missing"/);
    await expect(ChatTemplate.fromTokenizerDir(mkdtempSync(join(tmpdir(), "nr-data-tpl-")))).rejects.toThrow(/no chat_template/);
    // A chat_template.jinja next to the config wins for the default template, as in transformers;
    // named templates still come from the config's list.
    writeFileSync(join(dir, "chat_template.jinja"), "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}");
    const fromFile = await ChatTemplate.fromTokenizerDir(dir);
    expect(fromFile.render([{ role: "user", content: "hi" }])).toBe("<user>hi");
    expect((await ChatTemplate.fromTokenizerDir(dir, "tool_use")).source).toBe("unused");
    expect(ChatTemplate.fromConfig({ chat_template: "x{{ eos_token }}", eos_token: "E" }).render([])).toBe("xE");
  });

  it("falls back to target + eos when the template rewrites assistant turns", () => {
    // A template that drops the reasoning of assistant turns, like some reasoning-model templates.
    const t = new ChatTemplate(
      "{% for m in messages %}{% if m.role == 'assistant' %}<a>{{ m.content.split('</think>')[-1] }}{{ eos_token }}{% else %}<u>{{ m.content }}{% endif %}{% endfor %}{% if add_generation_prompt %}<a>{% endif %}",
      { eos_token: "<eos>" },
    );
    const ex = buildSftExample(t, rec("a", "q", "1", "r"), { style: "none" });
    expect(ex.prompt).toBe("<u>q<a>");
    expect(ex.completion).toBe("<think>\nr\n</think>\n\\boxed{1}<eos>");
  });
});

describe("messages, shots and SFT targets", () => {
  const pool = [rec("a", "P1", "1", "s1"), rec("b", "P2", "2", "s2 \\boxed{2}"), rec("c", "P3", "3"), rec("d", "P4", "4", "s4"), rec("e", "P5", "5", "s5")];

  it("inline shots go into one user message", () => {
    const m = buildMessages("Q", { shots: pool.slice(0, 2), shotFormat: "inline", system: null });
    expect(m).toEqual([{ role: "user", content: "Question: P1\nAnswer: s1\nThe answer is $\\boxed{1}$.\n\nQuestion: P2\nAnswer: s2 \\boxed{2}\n\nQuestion: Q\nAnswer:" }]);
  });

  it("shot responses keep an existing box and add one otherwise", () => {
    expect(shotResponse(pool[1])).toBe("s2 \\boxed{2}");
    expect(shotResponse(pool[2])).toBe("The answer is $\\boxed{3}$.");
  });

  it("selects few-shot examples deterministically, excluding ids and records without solutions", () => {
    const a = selectFewShot(pool, 3, { seed: 7, exclude: ["a"] });
    const b = selectFewShot(pool, 3, { seed: 7, exclude: ["a"] });
    expect(a.map((r) => r.id)).toEqual(b.map((r) => r.id));
    expect(a.map((r) => r.id)).not.toContain("a");
    expect(a.map((r) => r.id)).not.toContain("c");
    expect(() => selectFewShot(pool, 4, { exclude: ["a"] })).toThrow(/only 3 eligible/);
  });

  it("SFT targets round-trip", () => {
    const t = sftTarget("  step 1\nstep 2 ", "\\frac{1}{2}");
    expect(t).toBe("<think>\nstep 1\nstep 2\n</think>\n\\boxed{\\frac{1}{2}}");
    expect(parseSftTarget(t)).toEqual({ reasoning: "step 1\nstep 2", answer: "\\frac{1}{2}" });
    expect(parseSftTarget("no think")).toBeNull();
    expect(() => buildSftExample(ChatTemplate.chatml(), rec("x", "q", "1"))).toThrow(/no solution/);
  });

  it("hybrid-thinking targets: the asked share is non-thinking, picked by seed and id, the rest show their work", () => {
    const records = Array.from({ length: 2000 }, (_, i) => rec(`r${i}`, `P${i}`, String(i), `${i} + 0 = ${i}`));
    const noThinkShare = (fraction: number, seed: number) =>
      records.filter((r) => parseSftTarget(hybridSftTarget(r, { noThinkFraction: fraction, seed }))!.reasoning === "").length / records.length;
    expect(noThinkShare(0, 0)).toBe(0);
    expect(noThinkShare(1, 0)).toBe(1);
    expect(Math.abs(noThinkShare(0.75, 0) - 0.75)).toBeLessThan(0.04);
    expect(hybridSftTarget(records[7], { noThinkFraction: 0, seed: 0 })).toBe(sftTarget(records[7].solution!, "7"));
    const picked = (seed: number) => records.map((r) => hybridSftTarget(r, { noThinkFraction: 0.5, seed }).startsWith("<think>\n\n</think>"));
    expect(picked(3)).toEqual(picked(3));
    expect(picked(3)).not.toEqual(picked(4));
    expect(hybridSftTarget(rec("x", "q", "5"), { noThinkFraction: 1, seed: 0 })).toBe("<think>\n\n</think>\n\\boxed{5}");
    expect(() => hybridSftTarget(rec("x", "q", "5"), { noThinkFraction: 0, seed: 0 })).toThrow(/no solution/);
    expect(() => hybridSftTarget(records[0], { noThinkFraction: 1.5, seed: 0 })).toThrow(/\[0, 1\]/);
  });
});

describe("thinks (the thinking rate's test of one completion)", () => {
  it("is true only for a <think> block with something besides whitespace in it", () => {
    expect(thinks(sftTarget("3 * 5 = 15", "15"))).toBe(true);
    expect(thinks("<think>\n3 * 5 = 15")).toBe(true); // cut off before </think>: it was reasoning
    expect(thinks(sftTarget("", "15"))).toBe(false);
    expect(thinks("<think> \n\t</think>\\boxed{15}")).toBe(false);
    expect(thinks("<think>")).toBe(false);
    expect(thinks("3 * 5 = 15. The answer is 15.")).toBe(false); // worked, but not in the <think> format
    expect(thinks("\\boxed{15} <think>x</think>")).toBe(true);
  });
});
