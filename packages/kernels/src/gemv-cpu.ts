// NF4 GEMV for CPU adapters (lavapipe/llvmpipe, SwiftShader): y[M,N] = α · x[M,K] · deq(W)ᵀ (+ y), rows in blocks
// of up to 16 (gemvCpuConfig) — nf4Matmul's "broadcast" path, its forward on CPU adapters. W is nn.Linear's [N, K] in
// NF4 (packed u32 words of 8 codes + one f32 scale per block; nf4.ts and docs/kernels.md §2 give the format).
//
// Why a kernel of its own: lavapipe runs a subgroup of 8 invocations as one 8-wide SIMD vector, but every
// storage-buffer load (and every dynamically indexed private array, such as a 16-entry code table) is a scalar loop
// over the lanes, while arithmetic is one vector instruction for all lanes (see matmul.ts, "broadcast"). So the
// kernel counts loads, not FLOPs:
//  - a workgroup is one subgroup of W lanes; lane l owns output columns n0 + l + j·W (j < TN);
//  - per group of W packed words along K, each lane loads the x values of ONE word per row (two vec4) and
//    `subgroupBroadcast` hands word ww's values to every lane, so x costs one load per row per W words instead of
//    one per word;
//  - each lane loads one word per column and decodes it with a select tree over the 4 bits (15 vector selects per
//    code: an indexed 16-entry table is another per-lane scalar loop, measured ~2× slower at M = 1);
//  - when a block lines up with a group (blocksize = 8·W and K % blocksize == 0, bnb's 64 with W = 8) the block
//    scale is loaded once per column per group and multiplied into the group's partial sum; otherwise once per word.
// Words past K's end in the last group read a clamped valid word and meet x values of 0. Each output is summed in
// the same order whatever the row/column tile, so a row's result does not depend on M.
// Tried and dropped: the SwiGLU gate and up in one dispatch (two weights per lane) cost 15–35 % more CPU than the
// two GEMVs + swiglu on lavapipe (f32 and NF4, M = 1 and 8), so decode keeps three dispatches there.
import { wgslF32 as lit, type Nf4ActDtype } from "./nf4.js";
import { memoWgsl } from "./wgsl-cache.js";

export interface GemvCpuConfig {
  /** Rows held per workgroup (≥ M for one block). */
  TM: number;
  /** Columns per lane. */
  TN: number;
  /** Subgroup width = workgroup size. */
  W: number;
  /** One scale per column per group of W words (see the header). */
  groupScale: boolean;
}

/** WGSL expression: the code value of nibble expression `q` (u32 in 0..15) by a select tree over its bits. */
function selectTree(code: ArrayLike<number>, q: string): string {
  const level = (lo: number, n: number): string => {
    if (n === 1) return lit(code[lo]);
    const half = n / 2;
    return `select(${level(lo, half)}, ${level(lo + half, half)}, (${q} & ${half}u) != 0u)`;
  };
  return level(0, 16);
}

const SHIFT = [4, 0, 12, 8, 20, 16, 28, 24]; // element e of a word: byte e>>1, even element in the high nibble

interface GemvSource {
  dtype: Nf4ActDtype;
  outDtype: Nf4ActDtype;
  cfg: GemvCpuConfig;
  /** The NF4 code table. */
  code: ArrayLike<number>;
}

/** Per-word body: broadcast word ww's x values, load + decode each column's word, accumulate. */
function wordBody(o: GemvSource, ww: number, rows: number[], cols: number[]): string[] {
  const { groupScale } = o.cfg;
  const L: string[] = [`  {`, `    let kw = min(kw0 + ${ww}u, u.KW - 1u);`];
  for (const i of rows) L.push(`    let b${i}lo = subgroupBroadcast(x${i}lo, ${ww}u); let b${i}hi = subgroupBroadcast(x${i}hi, ${ww}u);`);
  for (const j of cols) {
    const c = (e: number) => selectTree(o.code, `((w${j} >> ${SHIFT[e]}u) & 15u)`);
    L.push(`    let w${j} = W[n${j} * u.KW + kw];`);
    L.push(`    let c${j}lo = vec4<f32>(${[0, 1, 2, 3].map(c).join(", ")});`);
    L.push(`    let c${j}hi = vec4<f32>(${[4, 5, 6, 7].map(c).join(", ")});`);
    if (!groupScale) L.push(`    let s${j} = S[(n${j} * u.K + kw * 8u) >> u.bsShift];`);
    for (const i of rows) {
      const d = `dot(b${i}lo, c${j}lo) + dot(b${i}hi, c${j}hi)`;
      L.push(groupScale ? `    p${i}_${j} += ${d};` : `    acc${i}_${j} = fma(s${j}, ${d}, acc${i}_${j});`);
    }
  }
  L.push(`  }`);
  return L;
}

export function gemvCpuWgsl(o: GemvSource): string {
  const { dtype, outDtype } = o;
  const { TM, TN, W, groupScale } = o.cfg;
  const f16 = dtype === "f16" || outDtype === "f16";
  const rows = [...Array(TM).keys()];
  const cols = [...Array(TN).keys()];
  const L: string[] = [];
  L.push(`let nBase = wg.x * ${W * TN}u + sg;`);
  L.push(`let m0 = wg.y * ${TM}u;`);
  for (const j of cols) L.push(`let n${j} = min(nBase + ${j * W}u, u.N - 1u);`);
  for (const i of rows) L.push(`let a${i} = min(m0 + ${i}u, u.M - 1u) * (u.K / 4u);`);
  for (const i of rows) for (const j of cols) L.push(`var acc${i}_${j} = 0.0;`);
  L.push(`for (var kw0 = 0u; kw0 < u.KW; kw0 += ${W}u) {`);
  // This lane's word for the x loads; lanes past K's end load a clamped word and zero it.
  L.push(`  let kx = kw0 + sg; let xin = kx < u.KW; let kxc = min(kx, u.KW - 1u);`);
  for (const i of rows) {
    L.push(`  let x${i}lo = select(vec4<f32>(0.0), vec4<f32>(A[a${i} + 2u * kxc]), xin);`);
    L.push(`  let x${i}hi = select(vec4<f32>(0.0), vec4<f32>(A[a${i} + 2u * kxc + 1u]), xin);`);
  }
  if (groupScale) {
    for (const j of cols) L.push(`  let s${j} = S[(n${j} * u.K + kw0 * 8u) >> u.bsShift];`);
    for (const i of rows) for (const j of cols) L.push(`  var p${i}_${j} = 0.0;`);
  }
  for (let ww = 0; ww < W; ww++) L.push(...wordBody(o, ww, rows, cols));
  if (groupScale) for (const i of rows) for (const j of cols) L.push(`  acc${i}_${j} = fma(s${j}, p${i}_${j}, acc${i}_${j});`);
  L.push(`}`);
  for (const i of rows) {
    for (const j of cols) {
      L.push(`if (m0 + ${i}u < u.M && nBase + ${j * W}u < u.N) {`);
      L.push(`  let ci = (m0 + ${i}u) * u.N + nBase + ${j * W}u;`);
      L.push(`  var r = u.alpha * acc${i}_${j}; if (u.acc != 0u) { r += f32(C[ci]); } C[ci] = ${outDtype}(r);`);
      L.push(`}`);
    }
  }
  return /* wgsl */ `
${f16 ? "enable f16;" : ""}
enable subgroups;
struct Params { M: u32, N: u32, K: u32, KW: u32, bsShift: u32, alpha: f32, acc: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> A: array<vec4<${dtype}>>;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> S: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<${outDtype}>;
@group(0) @binding(4) var<uniform> u: Params;
@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(subgroup_invocation_id) sg: u32) {
  ${L.join("\n  ")}
}
`;
}

/** The kernel text, built once per distinct option set (decode calls it every step: see wgsl-cache.ts). */
export const gemvCpuText = memoWgsl(gemvCpuWgsl);

/**
 * Tile by rows (measured on lavapipe by process CPU time, which the machine's other load disturbs less than wall
 * time): every row in one workgroup up to 8 (x is broadcast, each decoded word serves all rows), 1 column per lane
 * up to 4 rows and 2 above. Above 8 rows, blocks of up to 16: each decoded word then serves twice the rows. One
 * layer's q, k, gate, up and down projections, the two tiles interleaved in one process on the idle machine: 1.15×
 * less wall time at M = 32 (three runs), 1.17× at M = 16, 1.01–1.16× at M = 64; 32 × 1 and 64 × 1 tiles were no
 * better, 24 × 1 and 32 × 2 slower.
 */
export function gemvCpuConfig(M: number, W: number, blocksize: number, K: number): GemvCpuConfig {
  return { TM: M <= 8 ? M : Math.min(M, 16), TN: M <= 4 ? 1 : 2, W, groupScale: blocksize === 8 * W && K % blocksize === 0 };
}

/** The kernel's uniform block. */
export function gemvCpuParams(o: { M: number; N: number; K: number; bsShift: number; alpha?: number; accumulate?: boolean }): ArrayBuffer {
  const p = new ArrayBuffer(32);
  new Uint32Array(p).set([o.M, o.N, o.K, o.K / 8, o.bsShift, 0, o.accumulate ? 1 : 0, 0]);
  new Float32Array(p)[5] = o.alpha ?? 1;
  return p;
}
