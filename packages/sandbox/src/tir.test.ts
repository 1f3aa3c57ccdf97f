// The TIR tool driven token by token, as the generator drives it, by a scripted "model" (a character tokenizer):
// it fires exactly when a python block closes, runs the block in a real sandbox, and returns the output block.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closedPythonBlock, SandboxPool, TirTool } from "../dist/index.js";

const chars = { encode: (t: string) => [...t].map((c) => c.codePointAt(0)!), decode: (ids: readonly number[]) => String.fromCodePoint(...ids) };

/** Feeds `script` one character at a time; where the tool answers, its ids are appended (as the generator does). */
async function drive(tool: TirTool, script: string) {
  const session = tool.start();
  const ids: number[] = [];
  const inserted: string[] = [];
  for (const id of chars.encode(script)) {
    ids.push(id);
    const call = session.afterToken(ids);
    if (call) {
      const out = await call;
      inserted.push(chars.decode(out));
      ids.push(...out);
    }
  }
  return { text: chars.decode(ids), inserted };
}

let pool: SandboxPool;
beforeAll(async () => {
  pool = new SandboxPool({ workers: 1, preload: [], pylibDirs: [], timeoutMs: 10_000 });
  await pool.warm();
});
afterAll(async () => pool?.close());

describe("TirTool", () => {
  it("runs each closed python block once and inserts its output", async () => {
    const tool = new TirTool(pool, chars);
    const script = "We need 6*7.\n```python\nx = 6 * 7\nprint(x)\n```\nSo the answer is \\boxed{42}.\n```python\nprint(x + 1)\n```";
    const { text, inserted } = await drive(tool, script);
    expect(inserted).toEqual(["\n```output\n42\n```\n", "\n```output\nNameError: name 'x' is not defined\n```\n"]);
    expect(text).toBe("We need 6*7.\n```python\nx = 6 * 7\nprint(x)\n```\n```output\n42\n```\n\nSo the answer is \\boxed{42}.\n```python\nprint(x + 1)\n```\n```output\nNameError: name 'x' is not defined\n```\n");
    expect(tool.stats).toEqual({ completions: 1, calls: 2, errors: 1, timeouts: 0, skipped: 0 });
  });

  it("counts timeouts, stops at maxCalls, cuts long output", async () => {
    const tool = new TirTool(pool, chars, { maxCalls: 2, maxOutputChars: 20, timeoutMs: 1000 });
    const script = "```python\nprint('a' * 100)\n```\n```python\nwhile True: pass\n```\n```python\nprint(3)\n```";
    const { inserted } = await drive(tool, script);
    expect(inserted[0]).toBe(`\n\`\`\`output\n${"a".repeat(20)}\n… (output cut at 20 characters)\n\`\`\`\n`);
    expect(inserted[1]).toMatch(/^\n```output\nTimeoutError: the code ran past the 1000 ms wall-clock limit/);
    expect(inserted).toHaveLength(2);
    expect(tool.stats).toEqual({ completions: 1, calls: 2, errors: 0, timeouts: 1, skipped: 1 });
  });

  it("finds only a block the text ends by closing", () => {
    expect(closedPythonBlock("```python\nprint(1)\n```")).toEqual({ code: "print(1)\n", start: 0 });
    expect(closedPythonBlock("```python\nprint(1)\n```\n  ")?.code).toBe("print(1)\n");
    expect(closedPythonBlock("```python\nprint(1)\n``")).toBeNull();
    expect(closedPythonBlock("```python\nprint(1)\n```\nthen")).toBeNull();
    expect(closedPythonBlock("```\nprint(1)\n```")).toBeNull();
  });
});
