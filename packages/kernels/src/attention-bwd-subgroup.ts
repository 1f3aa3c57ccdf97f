// Attention backward for CPU adapters (lavapipe/llvmpipe): flash-attention-2 over the lanes of one subgroup, lanes
// owning head dims.
//
// Why: the row kernels of attention.ts give each invocation one query row (or one key) and D-long private rows, so
// every K/V (or Q/dO) row is loaded once per row it meets. On lavapipe a storage load is a scalar loop over the 8
// SIMD lanes, arithmetic one vector instruction (see matmul.ts, "broadcast"), so those kernels are load-bound. Here
// a workgroup is one subgroup of W lanes and lane l owns the head dims [4(c·W + l), +4), c < DC = D/(4W): a D-long
// row is DC vec4 per lane, loaded once and used against a whole block of rows of the other side, and a dot product
// is DC dot4 per lane plus one `subgroupAdd` (several products packed into one vec4 reduction). Scores, P and dS
// are then uniform over the subgroup, so the accumulations need no shuffles.
//
// Same bindings, Params, layouts and STATS scratch as the row kernels (P = exp2(scale·log2e·q·k − lse·log2e),
// dS = P∘(dP − Δ)); same masks (params.masked: MASK[b, s] = 0 removes key s), causality (key s ≤ query t).
//  - dK/dV (`attentionBackwardSgDkDvWgsl`): a workgroup owns KN consecutive keys of one (b, kv head) — their k
//    (pre-scaled) and v rows and the dk/dv accumulators stay in registers — and walks every query row (t, g) with
//    t ≥ its first key, all G heads of the group (GQA summed in registers; every output has one writer, no atomics).
//    Per row: q and dO are loaded once (2·DC vec4 per lane) and serve 4·KN·DC multiply-adds of vec4.
//  - dQ (`attentionBackwardSgDqWgsl`): a workgroup owns TM consecutive rows (t-major (t, g) pairs of one kv head:
//    the GQA heads share every K/V load) with q, dO and dq in registers, and walks the keys s ≤ its last t (blocks
//    beyond the causal diagonal are never visited). Per key: k and v loaded once, 3·TM·DC vec4 multiply-adds.
// Memory: registers O((KN or TM)·D) per subgroup; nothing of size T².
// Requires a subgroup size W ≥ 4 (power of two) and D % (4W) == 0 (D = 64, 128, 256 with lavapipe's W = 8).
import { attentionSubgroupFits } from "./attention-subgroup.js";
import type { Dtype } from "./elementwise.js";

export interface AttentionBwdSubgroupOpts {
  dtype: Dtype;
  /** Head dim (compile-time: registers are unrolled over D/(4W) vec4s). */
  D: number;
  /** Subgroup width = workgroup size. */
  W: number;
  /** Keys per workgroup (dK/dV) or query rows per workgroup (dQ). */
  N: number;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** The backward kernels' uniform block (shared with the row kernels of attention.ts). */
export const ATTENTION_BWD_PARAMS = "struct Params { T: u32, Hq: u32, Hkv: u32, G: u32, scale2: f32, scale: f32, DV: u32, masked: u32 }";

/**
 * `subgroupAdd` of n per-lane partial sums, packed 4 to a vec4 reduction; declares `${out}${i}` (i < n).
 * `part(i)` is the WGSL expression of partial sum i.
 */
function reduceAll(out: string, n: number, part: (i: number) => string): string[] {
  const L: string[] = [];
  for (let g = 0; g * 4 < n; g++) {
    const idx = range(Math.min(4, n - 4 * g)).map((x) => 4 * g + x);
    const vt = idx.length === 1 ? "f32" : `vec${idx.length}<f32>`;
    L.push(`let ${out}v${g} = subgroupAdd(${vt}(${idx.map(part).join(", ")}));`);
    for (const [x, i] of idx.entries()) L.push(`let ${out}${i} = ${out}v${g}${idx.length === 1 ? "" : `[${x}]`};`);
  }
  return L;
}

function header(dtype: Dtype, S: string, outs: string[]): string {
  return `${dtype === "f16" ? "enable f16;\n" : ""}enable subgroups;
${ATTENTION_BWD_PARAMS}
@group(0) @binding(0) var<storage, read> Q: array<${S}>;
@group(0) @binding(1) var<storage, read> K: array<${S}>;
@group(0) @binding(2) var<storage, read> V: array<${S}>;
@group(0) @binding(3) var<storage, read> DO: array<${S}>;
@group(0) @binding(4) var<storage, read> STATS: array<vec2<f32>>;
${outs.map((o, i) => `@group(0) @binding(${5 + i}) var<storage, read_write> ${o}: array<${S}>;`).join("\n")}
@group(0) @binding(${5 + outs.length}) var<storage, read> MASK: array<u32>;
@group(0) @binding(${6 + outs.length}) var<uniform> u: Params;`;
}

function check(o: AttentionBwdSubgroupOpts, who: string) {
  if (!attentionSubgroupFits(o.D, o.W)) throw new Error(`${who}: D=${o.D} is not a multiple of 4·W=${4 * o.W}`);
  if (!(Number.isInteger(o.N) && o.N >= 1 && o.N <= 32)) throw new Error(`${who}: block of ${o.N} rows/keys is outside [1, 32]`);
}

/** dK and dV. Bindings: Q, K, V, DO, STATS, DK, DVO, MASK, params; grid [⌈T/KN⌉, Hkv, B]. */
export function attentionBackwardSgDkDvWgsl(o: AttentionBwdSubgroupOpts): string {
  check(o, "attentionBackwardSgDkDvWgsl");
  const { dtype, D, W, N: KN } = o;
  const DV4 = D / 4, DC = DV4 / W;
  const J = range(KN), C = range(DC);
  const S = `vec4<${dtype}>`;
  const L: string[] = [];
  const push = (...s: string[]) => L.push(...s);
  for (const j of J) {
    push(`let kb${j} = ((b * u.T + min(sMin + ${j}u, sLast)) * u.Hkv + hk) * ${DV4}u + lane;`);
    push(`let key${j} = sMin + ${j}u < u.T && (u.masked == 0u || MASK[b * u.T + min(sMin + ${j}u, sLast)] != 0u);`);
    for (const c of C) {
      push(`let k${j}_${c} = vec4<f32>(K[kb${j} + ${c * W}u]) * u.scale2;`, `let v${j}_${c} = vec4<f32>(V[kb${j} + ${c * W}u]);`);
      push(`var dk${j}_${c} = vec4<f32>(0.0);`, `var dv${j}_${c} = vec4<f32>(0.0);`);
    }
  }
  // Query rows (t, g) in t-major order from the first key's position on (causality: t ≥ s).
  push(`for (var r = sMin * u.G; r < rEnd; r++) {`);
  push(`  let t = r / u.G;`, `  let h = hk * u.G + r % u.G;`, `  let qb = ((b * u.T + t) * u.Hq + h) * ${DV4}u + lane;`);
  push(`  let st = STATS[(b * u.Hq + h) * u.T + t];`);
  for (const c of C) push(`  let q${c} = vec4<f32>(Q[qb + ${c * W}u]);`, `  let g${c} = vec4<f32>(DO[qb + ${c * W}u]);`);
  const dots = (x: string, y: (j: number) => string) => (j: number) => C.map((c) => `dot(${x}${c}, ${y(j)}_${c})`).join(" + ");
  push(...reduceAll("a", KN, dots("q", (j) => `k${j}`)).map((s) => `  ${s}`));
  push(...reduceAll("e", KN, dots("g", (j) => `v${j}`)).map((s) => `  ${s}`));
  for (const j of J) {
    push(`  let p${j} = select(0.0, exp2(a${j} - st.x), key${j} && sMin + ${j}u <= t);`, `  let ds${j} = p${j} * (e${j} - st.y);`);
    for (const c of C) push(`  dv${j}_${c} = fma(vec4<f32>(p${j}), g${c}, dv${j}_${c});`, `  dk${j}_${c} = fma(vec4<f32>(ds${j}), q${c}, dk${j}_${c});`);
  }
  push(`}`);
  for (const j of J) {
    push(`if (sMin + ${j}u < u.T) {`);
    for (const c of C) push(`  DK[kb${j} + ${c * W}u] = ${S}(dk${j}_${c} * u.scale);`, `  DVO[kb${j} + ${c * W}u] = ${S}(dv${j}_${c});`);
    push(`}`);
  }
  return /* wgsl */ `${header(dtype, S, ["DK", "DVO"])}

@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(subgroup_invocation_id) lane: u32) {
  let b = wid.z;
  let hk = wid.y;
  let sMin = wid.x * ${KN}u;
  let sLast = min(sMin + ${KN}u, u.T) - 1u;
  let rEnd = u.T * u.G;
  ${L.join("\n  ")}
}
`;
}

/** dQ. Bindings: Q, K, V, DO, STATS, DQ, MASK, params; grid [⌈T·G/TM⌉, Hkv, B]. */
export function attentionBackwardSgDqWgsl(o: AttentionBwdSubgroupOpts): string {
  check(o, "attentionBackwardSgDqWgsl");
  const { dtype, D, W, N: TM } = o;
  const DV4 = D / 4, DC = DV4 / W;
  const I = range(TM), C = range(DC);
  const S = `vec4<${dtype}>`;
  const L: string[] = [];
  const push = (...s: string[]) => L.push(...s);
  for (const i of I) {
    push(`let r${i} = min(rBeg + ${i}u, rLast);`, `let t${i} = r${i} / u.G;`, `let h${i} = hk * u.G + r${i} % u.G;`);
    push(`let qb${i} = ((b * u.T + t${i}) * u.Hq + h${i}) * ${DV4}u + lane;`, `let st${i} = STATS[(b * u.Hq + h${i}) * u.T + t${i}];`);
    for (const c of C) {
      push(`let q${i}_${c} = vec4<f32>(Q[qb${i} + ${c * W}u]) * u.scale2;`, `let g${i}_${c} = vec4<f32>(DO[qb${i} + ${c * W}u]);`);
      push(`var dq${i}_${c} = vec4<f32>(0.0);`);
    }
  }
  // Keys up to the tile's last query position (blocks past the causal diagonal are never visited).
  push(`for (var s = 0u; s < kEnd; s++) {`);
  push(`  let kb = ((b * u.T + s) * u.Hkv + hk) * ${DV4}u + lane;`);
  push(`  let key = u.masked == 0u || MASK[b * u.T + s] != 0u;`);
  for (const c of C) push(`  let k${c} = vec4<f32>(K[kb + ${c * W}u]);`, `  let v${c} = vec4<f32>(V[kb + ${c * W}u]);`);
  push(...reduceAll("a", TM, (i) => C.map((c) => `dot(q${i}_${c}, k${c})`).join(" + ")).map((s) => `  ${s}`));
  push(...reduceAll("e", TM, (i) => C.map((c) => `dot(g${i}_${c}, v${c})`).join(" + ")).map((s) => `  ${s}`));
  for (const i of I) {
    push(`  let ds${i} = select(0.0, exp2(a${i} - st${i}.x), key && s <= t${i}) * (e${i} - st${i}.y);`);
    for (const c of C) push(`  dq${i}_${c} = fma(vec4<f32>(ds${i}), k${c}, dq${i}_${c});`);
  }
  push(`}`);
  for (const i of I) {
    push(`if (rBeg + ${i}u < rows) {`);
    for (const c of C) push(`  DQ[qb${i} + ${c * W}u] = ${S}(dq${i}_${c} * u.scale);`);
    push(`}`);
  }
  return /* wgsl */ `${header(dtype, S, ["DQ"])}

@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(subgroup_invocation_id) lane: u32) {
  let b = wid.z;
  let hk = wid.y;
  let rows = u.T * u.G;
  let rBeg = wid.x * ${TM}u;
  let rLast = min(rBeg + ${TM}u, rows) - 1u;
  let kEnd = rLast / u.G + 1u;
  ${L.join("\n  ")}
}
`;
}
