import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ModelTokenizer, TokenizerError, buildCharTokenizer, byteLevelAlphabet, writeCharTokenizer } from "./tokenizer.js";

const QWEN_DIR = fileURLToPath(new URL("../../../../shared/data/qwen2.5_tokenizer/", import.meta.url));
const haveQwen = existsSync(join(QWEN_DIR, "tokenizer.json"));
if (!haveQwen) console.log(`tokenizer.test: skipping the Qwen2.5 tokenizer tests: ${QWEN_DIR} not found`);

const SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}.";
const MATH_TEXTS = [
  "Solve $x^2 - 5x + 6 = 0$. The roots are $x = 2$ and $x = 3$, so the answer is $\\boxed{5}$.",
  "\\frac{a}{b} + \\sqrt{2}\\cdot\\pi \\approx 4.4429 \\quad \\text{and} \\quad \\int_0^1 x\\,dx = \\tfrac12",
  "Unicode: ∫₀¹ x² dx = ⅓, α+β≥γ, café, naïve, 数学题 12345, emoji 🧮 → ∞",
  "Digits 1234567890 and 3.14159, -42, 1e-7, 1,000,000\n\tnew line  two spaces",
  "<think>\nLet me compute 17*23 = 391.\n</think>\nThe answer is \\boxed{391}.",
];

describe.skipIf(!haveQwen)("Qwen2.5 tokenizer", () => {
  let tok: ModelTokenizer;
  let tj: { added_tokens: { id: number; content: string; special: boolean }[] };
  let vocabJson: Record<string, number>;
  const special = (content: string) => tj.added_tokens.find((t) => t.content === content)!.id;

  beforeAll(async () => {
    tok = await ModelTokenizer.fromDir(QWEN_DIR);
    tj = JSON.parse(await readFile(join(QWEN_DIR, "tokenizer.json"), "utf8"));
    // vocab.json is the slow tokenizer's separate copy of the vocabulary: an independent source of ids
    vocabJson = JSON.parse(await readFile(join(QWEN_DIR, "vocab.json"), "utf8"));
  }, 60_000);

  it("special tokens and eos ids come from the configs", () => {
    expect(special("<|im_end|>")).toBe(151645);
    expect(special("<|endoftext|>")).toBe(151643);
    expect(tok.eosToken).toBe("<|im_end|>");
    expect(tok.eosTokenId).toBe(special("<|im_end|>"));
    expect(tok.padTokenId).toBe(special("<|endoftext|>"));
    expect(tok.bosTokenId).toBeNull();
    expect(tok.stopTokenIds).toContain(151645);
    expect(tok.size).toBe(Math.max(...tj.added_tokens.map((t) => t.id)) + 1);
    expect(tok.tokenToId("<|im_start|>")).toBe(151644);
    expect(tok.isSpecial(151644)).toBe(true);
    expect(tok.isSpecial(tok.encode("a")[0])).toBe(false);
  });

  it("encode/decode round-trips math text with LaTeX, unicode and digits", () => {
    for (const text of MATH_TEXTS) {
      const ids = tok.encode(text);
      expect(ids.length).toBeGreaterThan(0);
      expect(tok.decode(ids)).toBe(text);
      // every non-added token is in vocab.json under the same id
      const toks = tok.tokenize(text);
      toks.forEach((t, i) => {
        if (!tok.addedTokens.has(t)) expect(vocabJson[t]).toBe(ids[i]);
      });
    }
  });

  it("splits numbers into single digits (Qwen's pre-tokenizer)", () => {
    const ids = tok.encode("1234567890");
    expect(ids.length).toBe(10);
    expect(ids.map((id) => tok.decode([id]))).toEqual("1234567890".split(""));
    expect(ids).toEqual("1234567890".split("").map((d) => vocabJson[d]));
  });

  it("renders the ChatML prompt of the CoT system message with the checkpoint's Jinja template", () => {
    const messages = [
      { role: "system", content: SYSTEM },
      { role: "user", content: "What is 1+1?" },
    ];
    const text = tok.renderChat(messages, { addGenerationPrompt: true });
    expect(text).toBe(
      "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n",
    );
    expect(tok.renderChat(messages)).toBe(text.slice(0, -"<|im_start|>assistant\n".length));

    // expected ids, derived independently: special ids from tokenizer.json's added_tokens, plain pieces encoded one by one
    const S = special("<|im_start|>");
    const E = special("<|im_end|>");
    const pieces = ["system\n" + SYSTEM, "\n", "user\nWhat is 1+1?", "\n", "assistant\n"];
    const enc = pieces.map((p) => tok.encode(p));
    for (let i = 0; i < pieces.length; i++) {
      expect(tok.decode(enc[i])).toBe(pieces[i]); // each piece is a faithful encoding …
      expect(enc[i].some((id) => id >= 151643)).toBe(false); // … of plain text only
      const toks = tok.tokenize(pieces[i]);
      expect(toks.map((t) => vocabJson[t])).toEqual(enc[i]); // and agrees with vocab.json
    }
    expect(enc[1]).toEqual([vocabJson["Ċ"]]); // "\n" is the byte-level token Ċ
    const expected = [S, ...enc[0], E, ...enc[1], S, ...enc[2], E, ...enc[3], S, ...enc[4]];
    const ids = tok.encodeChat(messages, { addGenerationPrompt: true });
    expect(ids).toEqual(expected);
    expect(ids[0]).toBe(151644);
    expect(ids).toContain(151645);
    expect(ids.filter((id) => id === 151644).length).toBe(3);
    expect(tok.decode(ids)).toBe(text);
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe("system\n" + SYSTEM + "\nuser\nWhat is 1+1?\nassistant\n");
  });

  describe("wrong or missing files", () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "nr-tok-"));
      await symlink(join(QWEN_DIR, "tokenizer.json"), join(dir, "tokenizer.json"));
      await symlink(join(QWEN_DIR, "tokenizer_config.json"), join(dir, "tokenizer_config.json"));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it("accepts config.json's padded vocab_size (151936 for 151665 ids)", async () => {
      await writeFile(join(dir, "config.json"), JSON.stringify({ vocab_size: 151936, eos_token_id: 151643 }));
      const t = await ModelTokenizer.fromDir(dir);
      expect(t.stopTokenIds).toEqual([151645, 151643]);
    }, 30_000);

    it("rejects a tokenizer larger than the embedding", async () => {
      await writeFile(join(dir, "config.json"), JSON.stringify({ vocab_size: 32000 }));
      await expect(ModelTokenizer.fromDir(dir)).rejects.toThrowError(/tokenizer\.json: tokenizer has 151665 ids but the model's vocab_size is 32000: this tokenizer does not belong to this model/);
    }, 30_000);

    it("rejects a vocab_size far beyond the tokenizer (more than the padding)", async () => {
      await writeFile(join(dir, "config.json"), JSON.stringify({ vocab_size: 200000 }));
      await expect(ModelTokenizer.fromDir(dir)).rejects.toThrowError(/vocab_size is 200000 \(48335 more, beyond the 1024-row padding allowance\): wrong tokenizer/);
    }, 30_000);

    it("names a missing tokenizer.json", async () => {
      const empty = join(dir, "empty");
      await import("node:fs/promises").then((m) => m.mkdir(empty, { recursive: true }));
      const err = await ModelTokenizer.fromDir(empty).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TokenizerError);
      expect((err as Error).message).toMatch(/empty\/tokenizer\.json: missing tokenizer\.json/);
    });
  });
});

describe("generated byte-level tokenizer", () => {
  let dir: string;
  let tok: ModelTokenizer;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "nr-chartok-"));
    await writeCharTokenizer(dir, { words: ["\\boxed", " the"] });
    tok = await ModelTokenizer.fromDir(dir);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("gives every printable ASCII character its own id (= its code)", () => {
    for (let c = 32; c < 127; c++) {
      const ch = String.fromCharCode(c);
      expect(tok.encode(ch)).toEqual([c]);
      expect(tok.decode([c])).toBe(ch);
    }
    expect(tok.encode("\n")).toEqual([10]);
  });

  it("round-trips arithmetic word problems, think tags and \\boxed{}", () => {
    const texts = [
      "Tom has 12 apples, buys 7 more and gives away 3. How many now? 12 + 7 - 3 = 16.",
      "<think>\n48 / 6 = 8, 8 * 5 = 40\n</think>\nSo the answer is \\boxed{40}.",
      "Unicode survives as bytes: √2 ≈ 1.414, café",
    ];
    for (const t of texts) expect(tok.decode(tok.encode(t))).toBe(t);
    const think = tok.encode("<think>x</think>");
    expect(think).toEqual([tok.tokenToId("<think>"), 120, tok.tokenToId("</think>")]);
    expect(tok.encode("\\boxed{7}")).toEqual([tok.tokenToId("\\boxed"), 123, 55, 125]);
    expect(tok.tokenize(" the cat")).toEqual(["Ġthe", "Ġ", "c", "a", "t"]);
  });

  it("has ChatML specials, eos/pad ids and a template that renders and encodes", () => {
    const spec = buildCharTokenizer({ words: ["\\boxed", " the"] });
    expect(tok.size).toBe(spec.size);
    expect(tok.eosTokenId).toBe(spec.ids.imEnd);
    expect(tok.padTokenId).toBe(spec.ids.endoftext);
    expect(tok.isSpecial(spec.ids.imStart)).toBe(true);
    expect(tok.isSpecial(tok.tokenToId("<think>")!)).toBe(false);
    const messages = [
      { role: "system", content: "Solve." },
      { role: "user", content: "2+2?" },
    ];
    const text = tok.renderChat(messages, { addGenerationPrompt: true });
    expect(text).toBe("<|im_start|>system\nSolve.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
    const S = spec.ids.imStart;
    const E = spec.ids.imEnd;
    const bytes = (s: string) => [...new TextEncoder().encode(s)];
    expect(tok.encodeChat(messages, { addGenerationPrompt: true })).toEqual([
      S, ...bytes("system\nSolve."), E, 10, S, ...bytes("user\n2+2?"), E, 10, S, ...bytes("assistant\n"),
    ]);
    expect(tok.decode(tok.encode("<think>a</think><|im_end|>"), { skipSpecialTokens: true })).toBe("<think>a</think>");
  });

  it("gives the template the special tokens and extra variables; reads named template lists", async () => {
    const d = join(dir, "tpl");
    const src = "{{ eos_token }}|{{ pad_token }}|{{ messages[0]['content'] }}|{{ enable_thinking }}";
    await writeCharTokenizer(d, { chatTemplate: src });
    const t = await ModelTokenizer.fromDir(d);
    expect(t.renderChat([{ role: "user", content: "x" }], { extra: { enable_thinking: false } })).toBe("<|im_end|>|<|endoftext|>|x|false");
    const cfgPath = join(d, "tokenizer_config.json");
    const cfg = JSON.parse(await readFile(cfgPath, "utf8"));
    await writeFile(cfgPath, JSON.stringify({ ...cfg, chat_template: [{ name: "default", template: "D" }, { name: "tool_use", template: "T" }] }));
    expect((await ModelTokenizer.fromDir(d)).renderChat([])).toBe("D");
    expect((await ModelTokenizer.fromDir(d, { chatTemplateName: "tool_use" })).renderChat([])).toBe("T");
    await expect(ModelTokenizer.fromDir(d, { chatTemplateName: "rag" })).rejects.toThrowError(/tokenizer_config\.json: no chat template named "rag"/);
    await writeFile(cfgPath, JSON.stringify({ ...cfg, chat_template: undefined }));
    await expect(ModelTokenizer.fromDir(d).then((x) => x.renderChat([]))).rejects.toThrowError(/has no chat template/);
  });

  it("uses GPT-2's reversible byte alphabet", () => {
    const a = byteLevelAlphabet();
    expect(new Set(a).size).toBe(256);
    expect(a[32]).toBe("Ġ");
    expect(a[10]).toBe("Ċ");
    expect(a[65]).toBe("A");
  });
});
