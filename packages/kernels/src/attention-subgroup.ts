// Attention forward for CPU adapters (lavapipe/llvmpipe): flash-style tiles spread over the lanes of one subgroup.
//
// Why a second forward kernel: lavapipe runs a subgroup of W = 8 invocations as one 8-wide SIMD vector, but every
// storage or workgroup-memory load is a scalar loop over the lanes (see matmul.ts, "broadcast"), while arithmetic
// and `subgroupBroadcast`/`subgroupShuffle` (register permutes) cost one vector instruction. The row-per-invocation
// kernel of attention.ts reloads each K and V row once per query row it serves; this one loads each K/V row once per
// tile of TM query rows and hands values between lanes in registers, so the loads per multiply-add fall by ~TM.
//
// Layout and semantics are those of attention.ts (same bindings, same Params, same masks and decode mode). A
// workgroup is one subgroup and owns TM consecutive rows of one (sequence b, kv head hk), a row being a (query
// position t, head g of the group) pair in t-major order, so the G query heads that share a kv head share every K/V
// load (GQA). It walks the visible keys [kBeg, kEnd) in blocks of KB = TN·W keys (causal: kEnd is the tile's last
// query position + 1, so blocks past the diagonal are never visited), lane l owning keys blk + j·W + l (j < TN):
//   scores  S[i, key] = scale·log2e·q_i·k: lane l holds vec4 c·W + l of each of the TM q rows in registers for the
//           whole key loop (loaded once: reloading them per key block cost ~25 % at T = 512, measured; the price is
//           a slower cold build at D = 128, 32 → 89 s on the loaded 2-core machine); per chunk c of
//           4W head dims it loads vec4s of its own TN keys, and subgroupShuffle hands q's vec4 kk to every lane
//           (TM·TN·W dot4 per chunk).
//   softmax online, per row: block max by subgroupMax, running max m, sum l (subgroupAdd), rescale exp2(m − m').
//   output  lane l owns head dims [4(c·W + l), +4) for c < DC = D/(4W); for each key, subgroupShuffle hands its
//           probability to every lane and each lane multiply-adds its DC vec4s of the V row into TM accumulators.
// Memory: O(TM·D) registers per subgroup (q and the accumulators), nothing of size T². Requires a subgroup size
// W ≥ 4 (power of two) and D % (4W) == 0 (D = 64, 128, 256 with W = 8); other shapes use the kernel of attention.ts.
import type { Dtype } from "./elementwise.js";

export interface AttentionSubgroupOpts {
  dtype: Dtype;
  /** Head dim (compile-time: the per-lane accumulators are unrolled over D/(4W) vec4s). */
  D: number;
  /** Subgroup width = workgroup size. */
  W: number;
  /** Query rows per workgroup. */
  TM: number;
  /** Keys per lane per block (block = TN·W keys). */
  TN: number;
  lse: boolean;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** The forward kernels' params and bindings (both kernels take the same buffers): Q, K, V, O, [LSE], LENS, MASK, u. */
export function attentionForwardBindings(S: string, lse: boolean): string {
  const bl = lse ? 5 : 4;
  return `struct Params { Tq: u32, Tk: u32, Hq: u32, Hkv: u32, G: u32, scale2: f32, DV: u32, mode: u32 }
@group(0) @binding(0) var<storage, read> Q: array<${S}>;
@group(0) @binding(1) var<storage, read> K: array<${S}>;
@group(0) @binding(2) var<storage, read> V: array<${S}>;
@group(0) @binding(3) var<storage, read_write> O: array<${S}>;
${lse ? "@group(0) @binding(4) var<storage, read_write> LSE: array<u32>;" : ""}
@group(0) @binding(${bl}) var<storage, read> LENS: array<u32>;
@group(0) @binding(${bl + 1}) var<storage, read> MASK: array<u32>;
@group(0) @binding(${bl + 2}) var<uniform> u: Params;`;
}

/** True when this kernel can serve head dim D on a subgroup of width W. */
export function attentionSubgroupFits(D: number, W: number): boolean {
  return W >= 4 && (W & (W - 1)) === 0 && D % (4 * W) === 0 && D <= 256;
}

/** WGSL of the subgroup-tile forward (bindings: Q, K, V, O, [LSE], LENS, MASK, params — as attentionForwardWgsl). */
export function attentionSubgroupWgsl(o: AttentionSubgroupOpts): string {
  const { dtype, D, W, TM, TN, lse } = o;
  if (!attentionSubgroupFits(D, W)) throw new Error(`attentionSubgroupWgsl: D=${D} is not a multiple of 4·W=${4 * W}`);
  const DV4 = D / 4;
  const DC = DV4 / W;
  const I = range(TM), J = range(TN), C = range(DC);
  const S = `vec4<${dtype}>`;
  const L: string[] = [];
  const push = (...s: string[]) => L.push(...s);
  for (const i of I) {
    push(`let r${i} = min(rBeg + ${i}u, rLast);`, `let t${i} = r${i} / u.G;`, `let h${i} = hk * u.G + r${i} % u.G;`);
    push(`let qpos${i} = qOff + i32(t${i});`, `let qb${i} = ((b * u.Tq + t${i}) * u.Hq + h${i}) * ${DV4}u;`);
    push(`var m${i} = NEG;`, `var l${i} = 0.0;`);
    for (const c of C) push(`var acc${i}_${c} = vec4<f32>(0.0);`);
    for (const c of C) push(`let q${i}_${c} = vec4<f32>(Q[qb${i} + ${c * W}u + lane]);`);
  }
  push(`for (var blk = kBeg; blk < kEnd; blk += ${TN * W}u) {`);
  for (const j of J) {
    push(`  let s${j} = blk + ${j * W}u + lane;`);
    push(`  let kb${j} = ((b * u.Tk + min(s${j}, kLast)) * u.Hkv + hk) * ${DV4}u;`);
    push(`  let km${j} = s${j} < kEnd && (!checkMask || MASK[b * u.Tk + min(s${j}, kLast)] != 0u);`);
    for (const i of I) push(`  var a${i}_${j} = 0.0;`);
  }
  // Scores: chunks c of 4W head dims (unrolled), W broadcasts each from the q registers.
  for (const c of C) {
    push(`  for (var kk = 0u; kk < ${W}u; kk++) {`);
    for (const j of J) push(`    let k${j} = vec4<f32>(K[kb${j} + ${c * W}u + kk]);`);
    for (const i of I) {
      push(`    { let qs = subgroupShuffle(q${i}_${c}, kk);`);
      for (const j of J) push(`      a${i}_${j} += dot(qs, k${j});`);
      push(`    }`);
    }
    push(`  }`);
  }
  // Online softmax per row (row statistics are uniform over the subgroup).
  for (const i of I) {
    for (const j of J) push(`  let ok${i}_${j} = km${j} && i32(s${j}) <= qpos${i};`, `  let x${i}_${j} = select(NEG, a${i}_${j} * u.scale2, ok${i}_${j});`);
    push(`  let mn${i} = max(m${i}, subgroupMax(${J.slice(1).reduce((e, j) => `max(${e}, x${i}_${j})`, `x${i}_0`)}));`);
    push(`  let al${i} = exp2(m${i} - mn${i});`);
    for (const j of J) push(`  let p${i}_${j} = select(0.0, exp2(x${i}_${j} - mn${i}), ok${i}_${j});`);
    push(`  l${i} = l${i} * al${i} + subgroupAdd(${J.map((j) => `p${i}_${j}`).join(" + ")});`, `  m${i} = mn${i};`);
    for (const c of C) push(`  acc${i}_${c} *= al${i};`);
  }
  // Output: every key of the block, its probability shuffled from its lane to all lanes.
  for (const j of J) {
    push(`  for (var kk = 0u; kk < ${W}u; kk++) {`);
    push(`    let vb = ((b * u.Tk + min(blk + ${j * W}u + kk, kLast)) * u.Hkv + hk) * ${DV4}u + lane;`);
    for (const c of C) push(`    let v${c} = vec4<f32>(V[vb + ${c * W}u]);`);
    for (const i of I) {
      push(`    { let p = subgroupShuffle(p${i}_${j}, kk);`);
      for (const c of C) push(`      acc${i}_${c} = fma(vec4<f32>(p), v${c}, acc${i}_${c});`);
      push(`    }`);
    }
    push(`  }`);
  }
  push(`}`);
  for (const i of I) {
    push(`if (rBeg + ${i}u < rows) {`, `  let inv = select(0.0, 1.0 / l${i}, l${i} > 0.0);`);
    for (const c of C) push(`  O[qb${i} + ${c * W}u + lane] = ${S}(acc${i}_${c} * inv);`);
    if (lse) push(`  if (lane == 0u) { LSE[(b * u.Hq + h${i}) * u.Tq + t${i}] = select(0xff800000u, bitcast<u32>((m${i} + log2(l${i})) * ${Math.LN2}), l${i} > 0.0); }`);
    push(`}`);
  }
  return /* wgsl */ `${dtype === "f16" ? "enable f16;\n" : ""}enable subgroups;
${attentionForwardBindings(S, lse)}

const NEG = -3.0e38;

@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(subgroup_invocation_id) lane: u32) {
  let b = wid.z;
  let hk = wid.y;
  let rows = u.Tq * u.G;
  let rBeg = wid.x * ${TM}u;
  let rLast = min(rBeg + ${TM}u, rows) - 1u;
  let maskMode = u.mode & 3u;
  var len = u.Tk;
  var qOff = 0i;
  if ((u.mode & 4u) != 0u) {
    let seqLen = LENS[b];
    len = min(seqLen, u.Tk);
    qOff = i32(seqLen) - i32(u.Tq);
  }
  let kEnd = u32(clamp(qOff + i32(rLast / u.G) + 1i, 0i, i32(len)));
  let kLast = max(kEnd, 1u) - 1u;
  var kBeg = 0u;
  if (maskMode == 2u) { kBeg = min(MASK[b], kEnd); }
  let checkMask = maskMode == 1u;
  ${L.join("\n  ")}
}
`;
}
