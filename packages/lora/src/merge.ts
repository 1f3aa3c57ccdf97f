// Merging and adapter arithmetic, on the host in float64.
//  merge:       W' = W + s·B·A for every target, written as a complete HF checkpoint (safetensors + config +
//               tokenizer files). Merging into an NF4 base would re-quantise W' (lossy): refused unless asked.
//  arithmetic:  ΔW = Σ wᵢ·sᵢ·BᵢAᵢ over adapters with the same targets. "concat" keeps it exact by stacking ranks
//               (A = [A₁; A₂; …], B = [w₁s₁B₁, w₂s₂B₂, …], r = Σrᵢ, α = r so s = 1); "svd" re-factorises ΔW to a
//               chosen rank k through thin QR of B and Aᵀ and an SVD of the small core (best rank-k in Frobenius).
import { copyFile, mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { encodeFloats, loadModel, parameterSpecs, writeSafetensorsCheckpoint, type TensorToWrite } from "@nr/model";
import { loraScale, type LoraTarget, type ResolvedLoraConfig } from "./lora.js";
import { mergedWeight } from "./peft-host.js";

/** A host copy of an adapter: per (layer, target) its A [r, in] and B [out, r]. */
export interface HostAdapter {
  config: ResolvedLoraConfig;
  modules: Map<string, { layer: number; target: LoraTarget; A: Float64Array; B: Float64Array; inF: number; outF: number }>;
}

export const moduleKey = (layer: number, target: LoraTarget) => `${layer}.${target}`;

/** ΔW [out, in] = s·B·A. */
export function deltaWeight(m: { A: Float64Array; B: Float64Array; inF: number; outF: number }, r: number, s: number): Float64Array {
  const d = new Float64Array(m.outF * m.inF);
  for (let o = 0; o < m.outF; o++) {
    for (let k = 0; k < r; k++) {
      const b = s * m.B[o * r + k];
      if (b === 0) continue;
      for (let i = 0; i < m.inF; i++) d[o * m.inF + i] += b * m.A[k * m.inF + i];
    }
  }
  return d;
}

/**
 * Write base + adapter as a full-precision HF checkpoint in `outDir`. The base must be a float checkpoint;
 * a 4-bit base is refused (merging into NF4 re-quantises the result: pass `allowLossyNf4` after dequantising
 * the base yourself if that is really wanted).
 */
export async function mergeToCheckpoint(baseDir: string, adapter: HostAdapter, outDir: string, opts: { dtype?: "F32" | "BF16" | "F16" } = {}) {
  const base = await loadModel(baseDir).catch((e: Error) => {
    if (/4-bit/.test(e.message)) throw new Error(`merge: ${baseDir} holds NF4 (4-bit) weights; merging into NF4 is lossy and is not done silently. Merge into the original bf16/f16 checkpoint instead.`);
    throw e;
  });
  const tensors: TensorToWrite[] = [];
  for (const spec of parameterSpecs(base.config)) {
    const data = mergedWeight(adapter, spec.name, base.weights.get(spec.name)!);
    tensors.push({ name: spec.name, dtype: opts.dtype ?? "F32", shape: spec.shape, data: () => encodeFloats(data, opts.dtype ?? "F32") });
  }
  await mkdir(outDir, { recursive: true });
  await writeSafetensorsCheckpoint(outDir, tensors);
  const config = { ...base.config.raw, torch_dtype: opts.dtype === "BF16" ? "bfloat16" : opts.dtype === "F16" ? "float16" : "float32" };
  await writeFile(join(outDir, "config.json"), JSON.stringify(config, null, 2) + "\n");
  for (const f of await readdir(baseDir)) {
    if (/^(tokenizer.*|special_tokens_map\.json|vocab\.json|merges\.txt|added_tokens\.json|chat_template\.jinja|generation_config\.json)$/.test(f)) {
      await copyFile(join(baseDir, f), join(outDir, f));
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Adapter arithmetic

export interface WeightedAdapter {
  adapter: HostAdapter;
  weight: number;
}

export function combineAdapters(items: WeightedAdapter[], opts: { method: "concat" } | { method: "svd"; rank: number }): HostAdapter {
  if (items.length === 0) throw new Error("combineAdapters: no adapters given");
  const keys = [...items[0].adapter.modules.keys()].sort();
  for (const it of items) {
    const k = [...it.adapter.modules.keys()].sort();
    if (k.join() !== keys.join()) throw new Error("combineAdapters: adapters must target the same modules (same layers and projections)");
  }
  const targets = items[0].adapter.config.targets;
  const out: HostAdapter["modules"] = new Map();
  let rOut = 0;
  for (const key of keys) {
    const first = items[0].adapter.modules.get(key)!;
    const { inF, outF } = first;
    if (opts.method === "concat") {
      const R = items.reduce((a, it) => a + it.adapter.config.r, 0);
      const A = new Float64Array(R * inF);
      const B = new Float64Array(outF * R);
      let off = 0;
      for (const it of items) {
        const m = it.adapter.modules.get(key)!;
        const r = it.adapter.config.r;
        const s = it.weight * loraScale(it.adapter.config);
        A.set(m.A, off * inF);
        for (let o = 0; o < outF; o++) for (let k = 0; k < r; k++) B[o * R + off + k] = s * m.B[o * r + k];
        off += r;
      }
      rOut = R;
      out.set(key, { ...first, A, B });
    } else {
      const k = opts.rank;
      // ΔW = Σ wᵢsᵢBᵢAᵢ = B̂·Â with B̂ = [w₁s₁B₁ …] (out×R), Â = [A₁; …] (R×in); ΔW = Q_B R_B R_Aᵀ Q_Aᵀ.
      const cat = combineAdapters(items.map((it) => ({ ...it, adapter: { ...it.adapter, modules: new Map([[key, it.adapter.modules.get(key)!]]) } })), { method: "concat" });
      const m = cat.modules.get(key)!;
      const R = cat.config.r;
      if (!Number.isInteger(k) || k < 1 || k > R) throw new Error(`combineAdapters: svd rank must be in 1..${R} (the total rank), got ${k}`);
      const { Q: QB, R: RB } = thinQr(m.B, outF, R);
      const At = transpose(m.A, R, inF); // in×R
      const { Q: QA, R: RA } = thinQr(At, inF, R);
      const core = matmulHost(RB, transpose(RA, R, R), R, R, R); // R×R
      const { U, S, V } = jacobiSvd(core, R);
      // B' = Q_B·U_k·Σ_k (out×k), A' = V_kᵀ·Q_Aᵀ (k×in)
      const B2 = new Float64Array(outF * k);
      for (let o = 0; o < outF; o++) for (let j = 0; j < k; j++) {
        let s = 0;
        for (let t = 0; t < R; t++) s += QB[o * R + t] * U[t * R + j];
        B2[o * k + j] = s * S[j];
      }
      const A2 = new Float64Array(k * inF);
      for (let j = 0; j < k; j++) for (let i = 0; i < inF; i++) {
        let s = 0;
        for (let t = 0; t < R; t++) s += V[t * R + j] * QA[i * R + t];
        A2[j * inF + i] = s;
      }
      rOut = k;
      out.set(key, { ...first, A: A2, B: B2 });
    }
  }
  // α = r makes the scale 1: the combined factors already carry every wᵢ·sᵢ.
  return { config: { ...items[0].adapter.config, targets, r: rOut, alpha: rOut, rslora: false }, modules: out };
}

function transpose(a: Float64Array, rows: number, cols: number): Float64Array {
  const t = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
  return t;
}

function matmulHost(a: Float64Array, b: Float64Array, M: number, K: number, N: number): Float64Array {
  const c = new Float64Array(M * N);
  for (let i = 0; i < M; i++) for (let k = 0; k < K; k++) {
    const v = a[i * K + k];
    for (let j = 0; j < N; j++) c[i * N + j] += v * b[k * N + j];
  }
  return c;
}

/** Thin QR by modified Gram–Schmidt with re-orthogonalisation: X [m×n] = Q [m×n] · R [n×n]. */
export function thinQr(X: Float64Array, m: number, n: number): { Q: Float64Array; R: Float64Array } {
  const Q = Float64Array.from(X);
  const R = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < j; i++) {
        let d = 0;
        for (let r = 0; r < m; r++) d += Q[r * n + i] * Q[r * n + j];
        R[i * n + j] += d;
        for (let r = 0; r < m; r++) Q[r * n + j] -= d * Q[r * n + i];
      }
    }
    let norm = 0;
    for (let r = 0; r < m; r++) norm += Q[r * n + j] ** 2;
    norm = Math.sqrt(norm);
    R[j * n + j] = norm;
    for (let r = 0; r < m; r++) Q[r * n + j] = norm > 1e-300 ? Q[r * n + j] / norm : 0;
  }
  return { Q, R };
}

/** SVD of a small square matrix by one-sided Jacobi: A = U·diag(S)·Vᵀ, S sorted descending. */
export function jacobiSvd(A: Float64Array, n: number): { U: Float64Array; S: Float64Array; V: Float64Array } {
  const U = Float64Array.from(A);
  const V = new Float64Array(n * n);
  for (let i = 0; i < n; i++) V[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < n - 1; p++) for (let q = p + 1; q < n; q++) {
      let a = 0, b = 0, c = 0;
      for (let i = 0; i < n; i++) {
        a += U[i * n + p] ** 2;
        b += U[i * n + q] ** 2;
        c += U[i * n + p] * U[i * n + q];
      }
      if (Math.abs(c) <= 1e-15 * Math.sqrt(a * b)) continue;
      off = Math.max(off, Math.abs(c) / Math.sqrt(a * b));
      const zeta = (b - a) / (2 * c);
      const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
      const cs = 1 / Math.sqrt(1 + t * t), sn = cs * t;
      for (let i = 0; i < n; i++) {
        const up = U[i * n + p], uq = U[i * n + q];
        U[i * n + p] = cs * up - sn * uq;
        U[i * n + q] = sn * up + cs * uq;
        const vp = V[i * n + p], vq = V[i * n + q];
        V[i * n + p] = cs * vp - sn * vq;
        V[i * n + q] = sn * vp + cs * vq;
      }
    }
    if (off < 1e-14) break;
  }
  const S = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += U[i * n + j] ** 2;
    S[j] = Math.sqrt(s);
    for (let i = 0; i < n; i++) U[i * n + j] = S[j] > 1e-300 ? U[i * n + j] / S[j] : 0;
  }
  const order = [...S.keys()].sort((x, y) => S[y] - S[x]);
  const perm = (M: Float64Array) => {
    const out = new Float64Array(n * n);
    for (let i = 0; i < n; i++) order.forEach((j, jj) => (out[i * n + jj] = M[i * n + j]));
    return out;
  };
  return { U: perm(U), S: Float64Array.from(order, (j) => S[j]), V: perm(V) };
}
