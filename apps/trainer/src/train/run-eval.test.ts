// nr train evaluates (and trains) on its own prompt ids; nr eval builds prompt text that the generator encodes. With
// the same format they must be the same tokens, or the two commands would score different prompts.
import { describe, expect, it } from "vitest";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { loadTokenizer } from "@nr/model";
import { resolveConfig } from "../run/index.js";
import { checkInputs } from "../run/inputs.js";
import { makePrompter } from "../commands/common.js";

const qwen = fileURLToPath(new URL("../../../../../shared/data/qwen2.5_tokenizer", import.meta.url));
const problems = ["What is 2 + 3?", "Tom has 12 apples and eats 5 of them.\nHow many are left? Answer in \\boxed{}.", "  Let $x^2 = 49$ and x > 0; find x. "];

describe.skipIf(!existsSync(qwen))("nr train's prompt ids = nr eval's prompt text, encoded (Qwen2.5 chat template)", () => {
  it.each([["qa"], ["chat"], ["tir"]] as const)("%s", async (format) => {
    const config = resolveConfig({ overrides: [["data.prompt", format], ["sft.enabled", false]] });
    const records = problems.map((p, i) => ({ id: `p${i}`, problem: p, answer: "1", source: "test" }));
    const inputs = await checkInputs(config, qwen, { train: records, heldout: [], split: { source: "test", seed: 0, how: "test", train: [], eval: [], dropped: [] } } as never);
    const tok = await loadTokenizer(qwen);
    const prompter = await makePrompter(format, { modelDir: qwen, runConfig: null });
    for (const p of problems) expect(tok.encode(prompter.build(p)), p).toEqual(inputs.encodePrompt(p));
  });
});
if (!existsSync(qwen)) console.log(`skipped: no ${qwen} (../shared beside the repository)`);
