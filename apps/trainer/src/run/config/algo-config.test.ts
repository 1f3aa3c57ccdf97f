// rl.algoConfig: @nr/algos settings from a preset and the command line, merged over the rl.algo preset and checked by
// @nr/algos, with messages naming the dotted key.
import { describe, expect, it } from "vitest";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { preset, type AlgoName, type AlgoOverrides } from "@nr/algos";
import { ConfigError, parseOverrides, resolveConfig } from "../index.js";

const resolve = (argv: string[], presetPath?: string) => resolveConfig({ preset: presetPath, overrides: parseOverrides(argv).overrides, checkPaths: false });
const problemsOf = (f: () => unknown): string => {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems.join("\n");
  }
  throw new Error("expected a ConfigError");
};

describe("rl.algoConfig", () => {
  it("merges a preset's settings with dotted and JSON flags, then over the rl.algo preset", () => {
    const dir = mkdtempSync(join(tmpdir(), "nr-algo-config-"));
    const file = join(dir, "p.json");
    writeFileSync(file, JSON.stringify({ name: "p", rl: { algo: "lpro", algoConfig: { lpro: { lambda: 0.3 }, kl: { beta: 0.02 } } } }));
    const c = resolve(["--rl.algoConfig.clip.epsHigh", "0.31", "--rl.algoConfig", '{"kl":{"estimator":"k1"}}'], file);
    expect(c.rl.algoConfig).toEqual({ lpro: { lambda: 0.3 }, kl: { beta: 0.02, estimator: "k1" }, clip: { epsHigh: 0.31 } });
    const algo = preset(c.rl.algo as AlgoName, c.rl.algoConfig as AlgoOverrides);
    // set here: λ, ε_high, β, k1; kept from the lpro preset: ε_low 0.2, token-mean; from the base: format weight 0.1
    expect([algo.lpro.lambda, algo.clip.epsHigh, algo.kl.beta, algo.kl.estimator]).toEqual([0.3, 0.31, 0.02, "k1"]);
    expect([algo.clip.epsLow, algo.aggregation.mode, algo.lpro.formatWeight, algo.advantage.estimator]).toEqual([0.2, "token-mean", 0.1, "lpro"]);
  });

  it("absent by default: the rl.algo preset as it is", () => {
    expect(resolve([]).rl.algoConfig).toBeUndefined();
  });

  it("refuses bad values, unknown keys and cross-key conflicts, naming rl.algoConfig.<key>", () => {
    expect(problemsOf(() => resolve(["--rl.algoConfig.clip.epsLow", "2"]))).toMatch(/rl\.algoConfig\.clip\.epsLow = 2 \(allowed: a finite number ≥ 0 and < 1\)/);
    expect(problemsOf(() => resolve(["--rl.algoConfig.clip.epsHihg", "0.3"]))).toMatch(/unknown key rl\.algoConfig\.clip\.epsHihg \(allowed keys of rl\.algoConfig\.clip: epsLow, epsHigh/);
    expect(problemsOf(() => resolve(["--rl.algo", "grpo", "--rl.algoConfig.kl.placement", "reward"]))).toMatch(/rl\.algoConfig\.kl\.placement = "reward" needs per-token rewards.*for rl\.algo = "grpo"/);
    expect(problemsOf(() => resolve(["--rl.algoConfig", "{lpro: 1}"]))).toMatch(/--rl\.algoConfig "\{lpro: 1\}" is not JSON/);
    expect(problemsOf(() => resolve(["--rl.algoConfig", "[1]"]))).toMatch(/--rl\.algoConfig "\[1\]" is not allowed: expected a JSON object/);
    expect(problemsOf(() => resolve(["--rl.algoConfig.kl.beta", "much"]))).toMatch(/rl\.algoConfig\.kl\.beta = "much"/);
  });
});
