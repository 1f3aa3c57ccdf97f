// nr eval --shots K --shots-from FILE: K worked examples as earlier chat turns, never one of the evaluated problems;
// refused without a pool, with too few eligible rows, or with a prompt format that has no turns.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { runEval, type EvalArgs } from "./eval.js";

const tiny = fileURLToPath(new URL("../../../../models/nr-tiny-math", import.meta.url));
const quiet = { log: () => {}, err: () => {} };
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "nr-eval-shots-"));
  // a pool of 5 worked problems; pool-3 is also the first evaluated problem (same text, another id)
  const pool = Array.from({ length: 5 }, (_, i) => ({ id: `pool-${i}`, problem: `Pool problem number ${i}: what is ${i} + ${i}?`, solution: `${i} + ${i} = ${2 * i}. \\boxed{${2 * i}}`, answer: String(2 * i) }));
  writeFileSync(join(dir, "pool.jsonl"), pool.map((r) => JSON.stringify(r)).join("\n") + "\n");
  const evalRows = [{ id: "q-0", problem: pool[3].problem, answer: "6" }, { id: "q-1", problem: "Evaluated problem: what is 7 + 1?", answer: "8" }];
  writeFileSync(join(dir, "eval.jsonl"), evalRows.map((r) => JSON.stringify(r)).join("\n") + "\n");
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const args = (o: Partial<EvalArgs>): EvalArgs => ({
  model: tiny, data: join(dir, "eval.jsonl"), n: 2, out: join(dir, "out.json"), details: join(dir, "details.jsonl"), promptFormat: "chat",
  samples: 1, temperature: 0, topP: 1, maxNewTokens: 2, seed: 0, batchSize: 2, skipBadRows: false, progress: false, ...o,
} as EvalArgs);

describe("nr eval --shots", () => {
  it("puts K pool examples before each problem, none of them an evaluated problem", async () => {
    const report = await runEval(args({ shots: 3, shotsFrom: join(dir, "pool.jsonl") }), quiet);
    expect(report.options).toMatchObject({ shots: 3, shotsFrom: join(dir, "pool.jsonl") });
    const rows = readFileSync(join(dir, "details.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { id: string; prompt: string });
    expect(rows).toHaveLength(2);
    for (const row of rows) {
      const shown = [0, 1, 2, 4].filter((i) => row.prompt.includes(`Pool problem number ${i}:`));
      expect(shown, row.id).toHaveLength(3);
      for (const i of shown) expect(row.prompt, row.id).toContain(`${i} + ${i} = ${2 * i}. \\boxed{${2 * i}}`); // each shot's worked answer
    }
    // pool-3 is asked once, as the question itself (last user turn), never as a shot
    expect(rows[0].prompt.split("Pool problem number 3:").length - 1).toBe(1);
    expect(rows[1].prompt).not.toContain("Pool problem number 3:");
    const zeroShot = await runEval(args({}), quiet);
    expect(zeroShot.options).not.toHaveProperty("shots");
    expect(readFileSync(join(dir, "details.jsonl"), "utf8")).not.toContain("Pool problem number 0:");
  }, 120_000);

  it("refuses a missing pool, too few eligible rows and a format without turns", async () => {
    await expect(runEval(args({ shots: 2 }), quiet)).rejects.toThrow(/--shots 2 needs --shots-from FILE/);
    await expect(runEval(args({ shots: 5, shotsFrom: join(dir, "pool.jsonl") }), quiet)).rejects.toThrow(/--shots-from .*pool\.jsonl: need 5 examples, only 4 eligible/);
    await expect(runEval(args({ shots: 1, shotsFrom: join(dir, "pool.jsonl"), promptFormat: "qa" }), quiet)).rejects.toThrow(/--shots needs --prompt-format chat or tir/);
  }, 120_000);
});
