import { describe, expect, it } from "vitest";
import { ALGO_NAMES, policyLoss, preset, prepareConfig, stepPlan, type AlgoName, type CompletionGroup } from "./index.js";
import { rand, randomBatch, testSeed } from "./testutil.js";

// The decisions apps/trainer/src/train/loop.ts took itself before the plan existed, written out per preset for an
// on-policy step (1 epoch × 1 minibatch) with a reference available.
const EXPECTED: Record<AlgoName, { old: boolean; ref: boolean; critic: boolean; inReward: boolean; inLoss: boolean; tokenAdv: boolean; dynamic: boolean; maxRounds: number }> = {
  grpo: { old: false, ref: true, critic: false, inReward: false, inLoss: true, tokenAdv: false, dynamic: false, maxRounds: 1 },
  dr_grpo: { old: false, ref: false, critic: false, inReward: false, inLoss: false, tokenAdv: false, dynamic: false, maxRounds: 1 },
  ppo: { old: true, ref: true, critic: true, inReward: true, inLoss: false, tokenAdv: true, dynamic: false, maxRounds: 1 },
  gspo: { old: false, ref: false, critic: false, inReward: false, inLoss: false, tokenAdv: false, dynamic: false, maxRounds: 1 },
  dapo: { old: false, ref: false, critic: false, inReward: false, inLoss: false, tokenAdv: false, dynamic: true, maxRounds: 10 },
  grpo_lead: { old: false, ref: false, critic: false, inReward: false, inLoss: false, tokenAdv: false, dynamic: true, maxRounds: 1 },
  lpro: { old: false, ref: false, critic: false, inReward: false, inLoss: false, tokenAdv: false, dynamic: false, maxRounds: 1 },
};

describe("stepPlan", () => {
  it.each(ALGO_NAMES.map((n) => [n]))("%s: passes, critic, KL placement and sampling as the trainer decided them", (name) => {
    const p = stepPlan(preset(name));
    const e = EXPECTED[name];
    expect(p.passes).toEqual({ oldLogp: e.old, refLogp: e.ref, oldValues: e.critic });
    expect(p.critic).toBe(e.critic);
    expect(p.kl).toMatchObject({ inReward: e.inReward, inLoss: e.inLoss });
    expect(p.groupFields).toEqual({ values: e.critic, oldLogp: e.inReward, refLogp: e.inReward });
    expect(p.batchFields).toMatchObject({ oldLogp: false, refLogp: e.ref, tokenAdvantages: e.tokenAdv, values: e.critic });
    expect(p.sampling).toEqual({ dynamic: e.dynamic, maxRounds: e.maxRounds });
    expect(p.minibatch).toEqual({ epochs: 1, miniBatches: 1, onPolicy: true, shuffle: false });
  });

  it("off-policy steps score π_old and shuffle; without a reference nothing scores π_ref", () => {
    for (const [epochs, miniBatches] of [[2, 1], [1, 3], [4, 2]]) {
      const p = stepPlan(preset("gspo"), { epochs, miniBatches });
      expect(p.passes.oldLogp).toBe(true);
      expect(p.batchFields.oldLogp).toBe(true);
      expect(p.minibatch).toEqual({ epochs, miniBatches, onPolicy: false, shuffle: true });
    }
    const ppo = stepPlan(preset("ppo"), { hasReference: false });
    expect(ppo.passes).toEqual({ oldLogp: false, refLogp: false, oldValues: true });
    expect(ppo.kl.inReward).toBe(false);
    const kl = stepPlan(preset("gspo", { kl: { beta: 0.02 }, entropy: { topQuantile: 0.2 } }));
    expect(kl.passes.refLogp).toBe(true);
    expect(kl.kl).toEqual({ placement: "loss", beta: 0.02, inReward: false, inLoss: true });
    expect(kl.batchFields.entropyInLoss).toBe(true);
  });

  it("rejects bad options and invalid configs before any work", () => {
    expect(() => stepPlan(preset("grpo"), { epochs: 0 })).toThrow(/options.epochs = 0 \(allowed: an integer ≥ 1\)/);
    expect(() => stepPlan(preset("grpo"), { miniBatches: 1.5 })).toThrow(/options.miniBatches = 1.5/);
    const bad = { ...preset("grpo"), clip: { ...preset("grpo").clip, epsLow: 2 } };
    expect(() => stepPlan(bad)).toThrow(/clip.epsLow/);
  });

  it("plan.config is frozen and gives policyLoss exactly the results of the unprepared config", () => {
    const R = rand(testSeed());
    for (const name of ALGO_NAMES) {
      const cfg = preset(name);
      const p = stepPlan(cfg);
      expect(Object.isFrozen(p.config.clip)).toBe(true);
      expect(() => ((p.config.clip as { epsLow: number }).epsLow = 0.5)).toThrow(TypeError);
      expect(prepareConfig(p.config)).toBe(p.config);
      const b = randomBatch(R, cfg);
      expect(policyLoss(b, p.config)).toStrictEqual(policyLoss(b, cfg));
    }
    // A config that was not prepared is still checked on every call.
    const loose = preset("grpo");
    const b = randomBatch(R, loose);
    (loose.clip as { epsLow: number }).epsLow = -1;
    expect(() => policyLoss(b, loose)).toThrow(/clip.epsLow/);
  });
});

// The refill rule rlStep ran itself (loop.ts before the plan): generate, keep informative groups up to the target,
// ask the prompt source for the rest until the round cap or until the source returns nothing.
async function loopRefill(source: (n: number) => CompletionGroup[], target: number, dynamic: boolean, maxRounds: number, isInformative: (g: CompletionGroup) => boolean) {
  const kept: CompletionGroup[] = [];
  let batch = source(target);
  let rounds = 0;
  for (let round = 0; batch.length > 0; round++) {
    rounds++;
    for (const g of batch) if ((!dynamic || isInformative(g)) && kept.length < target) kept.push(g);
    const want = target - kept.length;
    if (!dynamic || want <= 0 || round + 1 >= maxRounds) break;
    batch = source(want);
  }
  return { kept, rounds };
}

describe("stepPlan.sample (dynamicSample as the refill policy)", () => {
  it("keeps the same groups in the same rounds as the trainer's own refill loop", async () => {
    const R = rand(testSeed() + 1);
    for (let trial = 0; trial < 60; trial++) {
      const name = (["dapo", "grpo_lead", "grpo"] as const)[trial % 3];
      const maxRounds = 1 + R.int(0, 5);
      const cfg = preset(name, name === "dapo" ? { dynamicSampling: { maxRounds } } : {});
      const p = stepPlan(cfg);
      // A finite prompt source; each group all-correct, all-wrong or mixed.
      const pool: CompletionGroup[] = Array.from({ length: R.int(1, 30) }, (_, i) => {
        const kind = R.int(0, 3);
        const correct = [0, 1, 2, 3].map((j) => (kind === 0 ? false : kind === 1 ? true : j % 2 === 0));
        return { rewards: correct.map((c) => (c ? 1 : 0)), lengths: [5, 6, 7, 8 + i], correct };
      });
      const target = R.int(1, 8);
      let cursor = 0;
      const take = (n: number) => pool.slice(cursor, (cursor += n));
      const rounds: number[] = [];
      const got = await p.sample((round, needed) => {
        rounds.push(round);
        return take(needed);
      }, target);
      cursor = 0;
      const ref = await loopRefill(take, target, p.sampling.dynamic, p.sampling.maxRounds, (g) => g.correct!.some((c) => c) && g.correct!.some((c) => !c));
      expect(got.groups).toEqual(ref.kept);
      // The loop counts only rounds that produced groups; dynamicSample also counts the empty one that ends it.
      expect(rounds.filter((r) => r < ref.rounds)).toHaveLength(ref.rounds);
    }
  });

  it("stops when the prompt source returns nothing", async () => {
    const rounds: number[] = [];
    const mixed: CompletionGroup = { rewards: [1, 0], lengths: [3, 4], correct: [true, false] };
    const res = await stepPlan(preset("dapo")).sample((round) => (rounds.push(round), round === 0 ? [mixed] : []), 3);
    expect(rounds).toEqual([0, 1]);
    expect(res).toMatchObject({ complete: false, generated: 1, dropped: 0 });
    const strict = stepPlan(preset("dapo", { dynamicSampling: { onCapReached: "error" } }));
    await expect(strict.sample((round) => (round === 0 ? [mixed] : []), 3)).rejects.toThrow(/after 2 rounds, when the prompt source ran out/);
  });
});
