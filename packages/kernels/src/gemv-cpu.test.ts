// The CPU-adapter gate/up/SwiGLU GEMV against float64: out = silu(x·Wgᵀ) ⊙ (x·Wuᵀ) with f32 weights and with NF4
// weights (dequantised on the host from the GPU's own bytes), awkward N and K, M = 1, 3, 8 and a multi-block M.
// (The single-weight NF4 kernel is nf4Matmul's "broadcast" path, tested in nf4.test.ts.)
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gemvSwigluCpu, gemvSwigluCpuAvailable } from "./gemv-cpu.js";
import { downloadNf4, nf4DequantizeReference, nf4HostScales, quantizeNf4, releaseNf4 } from "./nf4.js";
import { compare, describeReport, gpuSuite, randn } from "./testing.js";

const t = gpuSuite("gemv-cpu", { beforeAll, afterAll });
// Per-product f32 accumulation error bound (as matmul.test.ts / nf4.test.ts): δ = 2e-5 · Σ_k |x_k·w_k|.
const RTOL_ACCUM = 2e-5;

/** float64 silu(x·Wgᵀ)⊙(x·Wuᵀ) and the bound that f32 accumulation of both products allows. */
function reference(x: Float32Array, wg: Float32Array, wu: Float32Array, M: number, N: number, K: number) {
  const want = new Float64Array(M * N);
  const bound = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let g = 0, u = 0, ga = 0, ua = 0;
      for (let k = 0; k < K; k++) {
        const xv = x[m * K + k];
        g += xv * wg[n * K + k];
        u += xv * wu[n * K + k];
        ga += Math.abs(xv * wg[n * K + k]);
        ua += Math.abs(xv * wu[n * K + k]);
      }
      const sig = 1 / (1 + Math.exp(-g));
      want[m * N + n] = g * sig * u;
      // |d silu/dg| ≤ 1.1; f32 exp/division rounding on top.
      bound[m * N + n] = 1.1 * RTOL_ACCUM * ga * Math.abs(u) + Math.abs(g * sig) * RTOL_ACCUM * ua + 1e-6 * Math.abs(want[m * N + n]) + 1e-30;
    }
  }
  return { want, bound };
}

async function nf4Weight(values: Float32Array, N: number, K: number) {
  const input = t.gpu.upload(values);
  const w = quantizeNf4(t.gpu, { input, dtype: "f32", N, K });
  t.gpu.release(input);
  const host = await downloadNf4(t.gpu, w);
  return { w, deq: nf4DequantizeReference(host.packed, nf4HostScales(host), N * K) };
}

describe("gemvSwigluCpu: silu(x·Wgᵀ) ⊙ (x·Wuᵀ) in one dispatch", () => {
  const cases = [
    { M: 1, N: 67, K: 1544, kind: "nf4" }, // 193 words: per-word scales and a 1-word last group
    { M: 3, N: 29, K: 192, kind: "nf4" }, // whole 64-blocks: one scale per group
    { M: 8, N: 45, K: 512, kind: "nf4" },
    { M: 1, N: 67, K: 196, kind: "f32" }, // 49 vec4s: a 1-unit last group
    { M: 3, N: 131, K: 64, kind: "f32" },
    { M: 19, N: 30, K: 36, kind: "f32" }, // 3 row blocks of 8
  ] as const;
  for (const c of cases) {
    it(`${c.kind} M=${c.M} N=${c.N} K=${c.K}`, async () => {
      const gpu = t.gpu;
      if (!gemvSwigluCpuAvailable(gpu)) return; // no subgroups: decode uses matmul + swiglu instead
      const { M, N, K } = c;
      const x = randn(M * K, t.rand);
      const gHost = randn(N * K, t.rand, 1 / Math.sqrt(K));
      const uHost = randn(N * K, t.rand, 1 / Math.sqrt(K));
      const xb = gpu.upload(x);
      const out = gpu.alloc(M * N * 4);
      gpu.fill32(out, 0x7fc00000);
      let wg = gHost, wu = uHost;
      if (c.kind === "nf4") {
        const g = await nf4Weight(gHost, N, K), u = await nf4Weight(uHost, N, K);
        wg = g.deq;
        wu = u.deq;
        gemvSwigluCpu(gpu, { x: xb, w: { kind: "nf4", gate: g.w, up: u.w }, out, M, N, K });
        await gpu.sync();
        releaseNf4(gpu, g.w);
        releaseNf4(gpu, u.w);
      } else {
        const gb = gpu.upload(gHost), ub = gpu.upload(uHost);
        gemvSwigluCpu(gpu, { x: xb, w: { kind: "f32", gate: gb, up: ub }, out, M, N, K });
        await gpu.sync();
        gpu.release(gb, ub);
      }
      const got = await gpu.readF32(out, M * N);
      gpu.release(xb, out);
      const { want, bound } = reference(x, wg, wu, M, N, K);
      const r = compare(got, want, bound);
      expect(r.ok, `${JSON.stringify(c)}: ${describeReport(r)} (seed ${t.seed})`).toBe(true);
    });
  }

  it("rejects mismatched shapes and short buffers with messages that name them", () => {
    const gpu = t.gpu;
    if (!gemvSwigluCpuAvailable(gpu)) return;
    const b = gpu.alloc(64);
    expect(() => gemvSwigluCpu(gpu, { x: b, w: { kind: "f32", gate: b, up: b }, out: b, M: 1, N: 4, K: 6 })).toThrow(/K=6 must be a multiple of 4/);
    expect(() => gemvSwigluCpu(gpu, { x: b, w: { kind: "f32", gate: b, up: b }, out: b, M: 1, N: 4, K: 8 })).toThrow(/gate weight holds 64 bytes, needs 128/);
    gpu.release(b);
  });
});
