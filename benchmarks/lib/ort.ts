// Peer side of the benchmarks: build a small ONNX graph in-process (onnx-proto) and time it in onnxruntime-node
// on the CPU EP and on the WebGPU EP (ORT's own Dawn, on the same adapter as ours).
import onnxProto from "onnx-proto";
import * as ort from "onnxruntime-node";

const { onnx } = onnxProto;

export type OrtEp = "cpu" | "webgpu";
export type ElemType = "float32" | "float16" | "uint8" | "int64" | "int32";

const ELEM: Record<ElemType, number> = { float32: 1, uint8: 2, int32: 6, int64: 7, float16: 10 };

export interface ValueInfo {
  name: string;
  type: ElemType;
  dims: Array<number | string>;
}

export interface Initializer {
  name: string;
  type: ElemType;
  dims: number[];
  data: Float32Array | Uint8Array | Uint16Array | BigInt64Array | Int32Array;
}

export interface NodeSpec {
  op: string;
  inputs: string[];
  outputs: string[];
  domain?: string;
  attributes?: Record<string, number | number[] | string>;
}

function valueInfo(v: ValueInfo) {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: ELEM[v.type],
        shape: { dim: v.dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attribute(name: string, v: number | number[] | string) {
  const A = onnx.AttributeProto.AttributeType;
  if (typeof v === "string") return { name, type: A.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: A.INTS, ints: v };
  return Number.isInteger(v) ? { name, type: A.INT, i: v } : { name, type: A.FLOAT, f: v };
}

/** Serialise a single-graph ONNX model (opset 17 + com.microsoft 1). */
export function buildModel(g: { nodes: NodeSpec[]; inputs: ValueInfo[]; outputs: ValueInfo[]; initializers?: Initializer[] }): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: "nano-reasoner-bench",
    opsetImport: [{ domain: "", version: 17 }, { domain: "com.microsoft", version: 1 }],
    graph: {
      name: "bench",
      node: g.nodes.map((n, i) => ({
        opType: n.op,
        domain: n.domain ?? "",
        name: `${n.op}_${i}`,
        input: n.inputs,
        output: n.outputs,
        attribute: Object.entries(n.attributes ?? {}).map(([k, v]) => attribute(k, v)),
      })),
      input: g.inputs.map(valueInfo),
      output: g.outputs.map(valueInfo),
      initializer: (g.initializers ?? []).map((t) => ({
        name: t.name,
        dataType: ELEM[t.type],
        dims: t.dims,
        rawData: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
      })),
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

/** Create a session; returns null (with the reason) when the EP is unavailable here. */
export async function ortSession(model: Uint8Array, ep: OrtEp): Promise<{ session: ort.InferenceSession | null; error?: string }> {
  try {
    const session = await ort.InferenceSession.create(model, {
      executionProviders: [ep],
      graphOptimizationLevel: "all",
      logSeverityLevel: 3,
      // ORT's thread pool otherwise keeps spinning after a run and slows whatever is timed next on a small machine.
      extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } },
    });
    return { session };
  } catch (err) {
    return { session: null, error: (err as Error).message.split("\n")[0] };
  }
}

export function tensor(type: ElemType, data: Float32Array | Uint16Array | Uint8Array | BigInt64Array | Int32Array, dims: number[]) {
  return new ort.Tensor(type, data as never, dims);
}

/** Median wall time (ms) of session.run over `iters` runs after `warmup`. */
export async function timeOrt(session: ort.InferenceSession, feeds: Record<string, ort.Tensor>, iters = 3, warmup = 1): Promise<number> {
  for (let i = 0; i < warmup; i++) await session.run(feeds);
  const samples: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await session.run(feeds);
    samples.push(performance.now() - t0);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)];
}

export { ort };
