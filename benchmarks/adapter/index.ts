// `pnpm bench adapter`: the costs a kernel designer works against on this adapter, measured, so that a claim such as
// "a decode step cannot beat its peer here" can be checked by re-running one command.
//   - the FMA peak and the copy bandwidth (packages/kernels peak.ts), the two ceilings every `ofPeak` uses;
//   - the fixed cost of one dispatch: near-empty kernels, 200 per submit, at 1 and 64 workgroups. On lavapipe it is
//     mostly its thread pool handing each dispatch to the workers and back; a child process with LP_NUM_THREADS=0
//     (the shader runs on lavapipe's queue thread) measures the same dispatches without that hand-off;
//   - what one loaded f32 costs inside a kernel, by where it comes from: a storage buffer read per lane as f32 or as
//     vec4, a sampled texture (rgba32float), workgroup memory, and a uniform buffer; with a loop that loads nothing as
//     the baseline. `fmaPerFloat` = the load's extra time over the baseline in FMAs at the measured peak: how many
//     FMAs a kernel must do per loaded value before the loads stop deciding its speed.
// Peers, measured in the same run: for the load rows the adapter's copy bandwidth (ratio = fraction of it), for the
// dispatch rows the same dispatches without lavapipe's thread pool (CPU adapters only).
//   pnpm bench adapter [--no-child]
import { spawnSync } from "node:child_process";
import { createGpu, isCpuAdapter, measureAdapterPeak, msPerCall, type Gpu } from "@nr/kernels";
import { higherIsBetter, lowerIsBetter, writeResults, type BenchRow } from "../lib/report.js";

const DISPATCH_ONLY = process.argv.includes("--dispatch-only");
const W = 8; // invocations per workgroup in the load kernels (one subgroup on lavapipe)
const GROUPS = 512;
const TRIPS = 256; // vec4 loads per invocation

/** µs per near-empty dispatch (each invocation writes one f32) at 1 and 64 workgroups of 8. */
async function dispatchCosts(gpu: Gpu): Promise<Record<string, { best: number; median: number }>> {
  const out = gpu.alloc(64 * W * 4, "adapter_dispatch_out");
  const kernel = gpu.kernel("adapter_trivial", `@group(0) @binding(0) var<storage, read_write> O: array<f32>;
@compute @workgroup_size(${W}) fn main(@builtin(global_invocation_id) g: vec3u) { O[g.x] = f32(g.x); }`);
  const res: Record<string, { best: number; median: number }> = {};
  for (const groups of [1, 64]) {
    const t = await msPerCall(gpu, () => gpu.dispatch(kernel, [out], [groups]), 200, 5);
    res[groups] = { best: 1000 * t.best, median: 1000 * t.median };
  }
  gpu.release(out);
  return res;
}

/** The loop body of each load kind: TRIPS vec4-sized reads per invocation, neighbouring lanes at neighbouring addresses. */
const LOADS: Record<string, { what: string; body: string }> = {
  none: { what: "no load (loop baseline)", body: "acc += vec4<f32>(f32(i + sg));" },
  storageF32: { what: "storage buffer, f32 per lane", body: "let j = (base + i * 8u + sg) * 4u; acc += vec4<f32>(S[j], S[j + 1u], S[j + 2u], S[j + 3u]);" },
  storageVec4: { what: "storage buffer, vec4 per lane", body: "acc += S4[base + i * 8u + sg];" },
  texture: { what: "texture rgba32float, textureLoad per lane", body: "let t = base + i * 8u + sg; acc += textureLoad(T, vec2i(i32(t % TW), i32(t / TW)), 0);" },
  workgroup: { what: "workgroup memory, vec4 per lane", body: "acc += WG[(i * 8u + sg) % 64u];" },
  uniform: { what: "uniform buffer, vec4 per lane", body: "acc += U[(base + i * 8u + sg) % 4096u];" },
};

/** ms per launch of each load kind over GROUPS × W invocations × TRIPS vec4 reads. */
async function loadCosts(gpu: Gpu): Promise<Record<string, number>> {
  const dev = gpu.device;
  const floats = GROUPS * W * TRIPS * 4;
  const data = Float32Array.from({ length: floats }, (_, i) => (i % 7) * 0.125);
  const storage = gpu.upload(data, "adapter_loads");
  const out = gpu.alloc(GROUPS * W * 16, "adapter_loads_out");
  const TW = 1024;
  const tex = dev.createTexture({ size: [TW, floats / 4 / TW], format: "rgba32float", usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST });
  dev.queue.writeTexture({ texture: tex }, data, { bytesPerRow: TW * 16, rowsPerImage: floats / 4 / TW }, [TW, floats / 4 / TW]);
  const ubo = dev.createBuffer({ size: 65536, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  dev.queue.writeBuffer(ubo, 0, data.subarray(0, 16384));
  const resources: Record<string, GPUBindingResource> = { S: { buffer: storage.buffer }, S4: { buffer: storage.buffer }, T: tex.createView(), U: { buffer: ubo } };
  const decls: Record<string, string> = {
    S: "@group(0) @binding(1) var<storage, read> S: array<f32>;",
    S4: "@group(0) @binding(1) var<storage, read> S4: array<vec4<f32>>;",
    T: "@group(0) @binding(1) var T: texture_2d<f32>;",
    U: "@group(0) @binding(1) var<uniform> U: array<vec4<f32>, 4096>;",
  };
  const res: Record<string, number> = {};
  for (const [kind, { body }] of Object.entries(LOADS)) {
    const source = Object.keys(decls).find((d) => new RegExp(`\\b${d}[\\[,]`).test(body));
    const code = `${source ? decls[source] : ""}
@group(0) @binding(0) var<storage, read_write> O: array<vec4<f32>>;
const TW = ${TW}u;
var<workgroup> WG: array<vec4<f32>, 64>;
@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) sg: u32) {
  var acc = vec4<f32>(0.0);
  let base = wg.x * ${TRIPS * W}u;
  ${kind === "workgroup" ? "for (var j = 0u; j < 8u; j++) { WG[j * 8u + sg] = vec4<f32>(f32(j + sg)); } workgroupBarrier();" : ""}
  for (var i = 0u; i < ${TRIPS}u; i++) { ${body} }
  O[wg.x * ${W}u + sg] = acc;
}`;
    const pipeline = dev.createComputePipeline({ layout: "auto", compute: { module: dev.createShaderModule({ code }), entryPoint: "main" } });
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: out.buffer } }];
    if (source) entries.push({ binding: 1, resource: resources[source] });
    const bindGroup = dev.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    const launch = () => {
      const enc = dev.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(GROUPS);
      pass.end();
      dev.queue.submit([enc.finish()]);
    };
    res[kind] = (await msPerCall(gpu, launch, 10, 5)).best;
  }
  gpu.release(storage, out);
  tex.destroy();
  ubo.destroy();
  return res;
}

/** The same dispatches in a child process with LP_NUM_THREADS=0 (lavapipe runs shaders on its queue thread). */
function inlineDispatchCosts(): Record<string, { best: number; median: number }> | null {
  const child = spawnSync(process.execPath, [...process.execArgv, process.argv[1], "--dispatch-only"], { env: { ...process.env, LP_NUM_THREADS: "0" }, encoding: "utf8" });
  const line = child.stdout?.split("\n").find((l) => l.startsWith("{"));
  if (child.status !== 0 || !line) {
    console.log(`(LP_NUM_THREADS=0 child failed: ${child.stderr?.trim().split("\n").pop() ?? child.status})`);
    return null;
  }
  return JSON.parse(line);
}

const gpu = await createGpu();
if (DISPATCH_ONLY) {
  console.log(JSON.stringify(await dispatchCosts(gpu)));
  gpu.destroy();
  process.exit(0);
}
const cpu = isCpuAdapter(gpu);
console.log(`adapter: ${gpu.adapterName}`);
const peak = await measureAdapterPeak(gpu, { cpu });
console.log(`FMA peak ${peak.gflops.toFixed(1)} GFLOP/s (${peak.flopsDetail.config}); copy ${peak.gbps.toFixed(1)} GB/s`);
const dispatch = await dispatchCosts(gpu);
const inline = cpu && !process.argv.includes("--no-child") ? inlineDispatchCosts() : null;
const loads = await loadCosts(gpu);
const adapter = gpu.adapter;
gpu.destroy();

const rows: BenchRow[] = [];
const nsPerFma = 2 / peak.gflops; // ns per multiply-add on one lane at the FMA peak
for (const groups of ["1", "64"]) {
  const d = dispatch[groups];
  const i = inline?.[groups];
  rows.push(
    lowerIsBetter(`one near-empty dispatch, ${groups} workgroup${groups === "1" ? "" : "s"} of ${W}`, "µs per dispatch (best of 5 × 200)", d.best, i ? "the same in a child with LP_NUM_THREADS=0" : "-", i?.best ?? null, {
      medianUs: d.median,
      inlineMedianUs: i?.median,
      fmaPerDispatch: Math.round((d.best * 1000) / nsPerFma),
    }),
  );
}
const floats = GROUPS * W * TRIPS * 4;
for (const [kind, { what }] of Object.entries(LOADS)) {
  const ms = loads[kind];
  const gbps = (floats * 4) / ms / 1e6;
  const extraNs = ((ms - loads.none) * 1e6) / floats;
  rows.push(
    higherIsBetter(`loads: ${what}`, "GB/s read (loop included)", gbps, kind === "none" ? "-" : "the adapter's copy bandwidth (same run)", kind === "none" ? null : peak.gbps, {
      nsPerFloat: (ms * 1e6) / floats,
      fmaPerFloat: kind === "none" ? null : +(extraNs / nsPerFma).toFixed(1),
    }),
  );
}
writeResults("adapter", adapter, rows, { peak: { gflops: peak.gflops, gbps: peak.gbps, flops: peak.flopsDetail, bandwidth: peak.bandwidthDetail }, note: "fmaPerDispatch / fmaPerFloat: the dispatch's or the load's time in multiply-adds on one lane at the measured FMA peak" }, ["medianUs", "inlineMedianUs", "fmaPerDispatch", "nsPerFloat", "fmaPerFloat"]);
