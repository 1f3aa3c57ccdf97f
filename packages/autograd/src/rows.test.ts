// Row-sharded tables: a tied embedding / LM head made with rowsTensor under a tiny artificial binding limit is split
// into several shards on the GPU; the embedding gather, its scatter-add gradient, the fused LM head (logp, entropy,
// dh, dW), the gradient norm and AdamW over the shards must match the float64 CPU backend on the same inputs.
import { gpuSuite } from "@nr/kernels/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CpuBackend } from "./cpu.js";
import { GpuBackend, RowShards } from "./gpu.js";
import { Engine } from "./tensor.js";
import { embedding, lmHeadLogprob, mul } from "./ops.js";
import { AdamW } from "./optim.js";

const t = gpuSuite("autograd rows", { beforeAll, afterAll });
const { seed, rand } = t;

const randn = (n: number) => Array.from({ length: n }, () => (rand() * 2 - 1) * 1.3);

function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, rtol: number, what: string) {
  expect(got.length, what).toBe(want.length);
  const scale = Math.max(1e-3, ...Array.from(want, Math.abs));
  for (let i = 0; i < want.length; i++) {
    expect(Math.abs(got[i] - want[i]), `${what}[${i}]: gpu ${got[i]} cpu ${want[i]} (seed ${seed})`).toBeLessThanOrEqual(rtol * scale);
  }
}

/** Embedding → a per-token feature → tied LM head; backward; gradient norm; two AdamW steps. Returns what to compare. */
async function run(e: Engine, V: number, H: number, tableValues: number[], ids: number[], targets: number[], weights: number[], up: number[][]) {
  const table = e.rowsTensor([V, H], { requiresGrad: true, name: "embed" });
  // written in uneven row chunks that straddle shard boundaries
  for (let r0 = 0; r0 < V; r0 += 13) e.writeRows(table, r0, tableValues.slice(r0 * H, Math.min(V, r0 + 13) * H));
  const M = ids.length;
  const opt = new AdamW([table], { lr: 0.01, weightDecay: 0.1 });
  const outs: Float64Array[] = [];
  for (let step = 0; step < 2; step++) {
    const x = embedding(e.tensor(ids, [M], { dtype: "u32" }), table);
    const h = mul(x, e.tensor(weights, [M, H]));
    const { logp, entropy } = lmHeadLogprob(h, table, e.tensor(targets, [M], { dtype: "u32" }), 0.9);
    outs.push(await x.read(), await logp.read(), await entropy.read());
    e.backward([[logp, up[0]], [entropy, up[1]]]);
    outs.push(await table.grad!.read(), Float64Array.of(await opt.gradNorm()));
    opt.update(0.01);
    opt.zeroGrad();
  }
  outs.push(await table.read());
  const state = await opt.state();
  outs.push(state.m[0], state.v[0]);
  return { outs, table, opt };
}

describe(`row-sharded tables on the GPU = float64 CPU backend (seed ${seed})`, () => {
  // V·H·4 bytes far above maxShardBytes: several shards, the last one short
  const cases = [
    { V: 101, H: 12, M: 23, maxShardBytes: 1024 }, // 21 rows per shard → 16 rows (8-row multiple), 7 shards
    { V: 67, H: 7, M: 40, maxShardBytes: 300 }, // scalar rows, 10 rows per shard, 7 shards
  ];
  for (const c of cases) {
    it(JSON.stringify(c), async () => {
      const { V, H, M } = c;
      const tableValues = randn(V * H);
      // ids cover shard edges and repeat; targets across all shards
      const ids = Array.from({ length: M }, (_, i) => (i < 4 ? [0, V - 1, 15, 16][i] : Math.floor(rand() * V)));
      const targets = Array.from({ length: M }, () => Math.floor(rand() * V));
      const weights = randn(M * H);
      const up = [randn(M), randn(M)];
      const cpu = await run(new Engine(new CpuBackend()), V, H, tableValues, ids, targets, weights, up);
      const gpuEngine = new Engine(new GpuBackend(t.gpu, { maxShardBytes: c.maxShardBytes }));
      const got = await run(gpuEngine, V, H, tableValues, ids, targets, weights, up);
      const s = got.table.storage;
      expect(s).toBeInstanceOf(RowShards);
      expect((s as RowShards).shards.length).toBeGreaterThan(3);
      for (const buf of (s as RowShards).shards) expect(buf.bytes).toBeLessThanOrEqual(c.maxShardBytes);
      const names = ["embedding", "logp", "entropy", "dTable", "grad norm"];
      cpu.outs.forEach((want, i) => expectClose(got.outs[i], want, 5e-4, i < 10 ? `step ${Math.floor(i / 5)} ${names[i % 5]}` : ["table after 2 steps", "adam m", "adam v"][i - 10]));

      // the optimizer state round-trips into sharded moments
      const state = await got.opt.state();
      got.opt.loadState(state);
      const again = await got.opt.state();
      expect(Array.from(again.m[0])).toEqual(Array.from(state.m[0]));
      expect(Array.from(again.v[0])).toEqual(Array.from(state.v[0]));
      got.table.dispose();
    });
  }

  it("a table that fits one binding stays one buffer; an f16 table shards by its own width", async () => {
    const e = new Engine(new GpuBackend(t.gpu, { maxShardBytes: 4096 }));
    const small = e.rowsTensor([10, 8]);
    expect(small.storage).not.toBeInstanceOf(RowShards);
    const half = e.rowsTensor([500, 10], { dtype: "f16" }); // 10 000 bytes: 4096 / 20 = 204 rows fit → 200 per shard
    expect((half.storage as RowShards).rowsPerShard).toBe(200);
    expect((half.storage as RowShards).shards.length).toBe(3);
    const values = randn(500 * 10);
    e.writeRows(half, 0, values);
    const back = await half.read();
    values.forEach((v, i) => expect(Math.abs(back[i] - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -11 + 2 ** -24));
    small.dispose();
    half.dispose();
  });
});
