import { describe, expect, it } from "vitest";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, loadModelConfig, makeModelConfig, parameterCount, parameterSpecs, parseModelConfig, toHfConfig } from "./config.js";

// config.json of Qwen2.5-Math-1.5B (the fields that matter)
const QWEN25_MATH_15B = {
  architectures: ["Qwen2ForCausalLM"],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: "silu",
  hidden_size: 1536,
  initializer_range: 0.02,
  intermediate_size: 8960,
  max_position_embeddings: 4096,
  max_window_layers: 21,
  model_type: "qwen2",
  num_attention_heads: 12,
  num_hidden_layers: 28,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  use_cache: true,
  use_mrope: false,
  use_sliding_window: false,
  vocab_size: 151936,
};

// config.json of Qwen3-0.6B (the fields that matter)
const QWEN3_06B = {
  architectures: ["Qwen3ForCausalLM"],
  attention_bias: false,
  bos_token_id: 151643,
  eos_token_id: 151645,
  head_dim: 128,
  hidden_act: "silu",
  hidden_size: 1024,
  intermediate_size: 3072,
  max_position_embeddings: 40960,
  model_type: "qwen3",
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: null,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  use_sliding_window: false,
  vocab_size: 151936,
};

describe("config.json", () => {
  it("reads Qwen2.5-Math-1.5B: q/k/v bias, GQA 12/2, head_dim 128, tied", () => {
    const c = parseModelConfig(QWEN25_MATH_15B);
    expect(c).toMatchObject({
      architecture: "qwen2",
      hiddenSize: 1536,
      intermediateSize: 8960,
      numLayers: 28,
      numHeads: 12,
      numKvHeads: 2,
      headDim: 128,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      vocabSize: 151936,
      maxPositionEmbeddings: 4096,
      tieWordEmbeddings: true,
      torchDtype: "bfloat16",
      bosTokenId: 151643,
      eosTokenIds: [151643],
      qkvBias: true,
      oBias: false,
      qkNorm: false,
    });
    // 1.54B parameters: embed 151936·1536 + 28 × (q 1536² + 1536, k/v 2 × (1536·256 + 256), o 1536², mlp 3·1536·8960,
    // 2 norms) + final norm
    const perLayer = 1536 * 1536 + 1536 + 2 * (1536 * 256 + 256) + 1536 * 1536 + 3 * 1536 * 8960 + 2 * 1536;
    expect(parameterCount(c)).toBe(151936 * 1536 + 28 * perLayer + 1536);
    expect(parameterCount(c)).toBe(1_543_714_304);
    const specs = parameterSpecs(c);
    expect(specs.some((p) => p.name === "lm_head.weight")).toBe(false);
    const byName = new Map(specs.map((p) => [p.name, p.shape]));
    expect(byName.get("model.embed_tokens.weight")).toEqual([151936, 1536]);
    expect(byName.get("model.layers.0.self_attn.q_proj.bias")).toEqual([1536]);
    expect(byName.get("model.layers.27.self_attn.k_proj.weight")).toEqual([256, 1536]);
    expect(byName.get("model.layers.3.self_attn.v_proj.bias")).toEqual([256]);
    expect(byName.has("model.layers.0.self_attn.o_proj.bias")).toBe(false);
    expect(byName.get("model.layers.5.mlp.down_proj.weight")).toEqual([1536, 8960]);
    expect(byName.get("model.norm.weight")).toEqual([1536]);
    expect(specs.length).toBe(1 + 28 * 12 + 1);
  });

  it("reads Qwen3-0.6B: explicit head_dim ≠ hidden/heads, q/k norm, no bias", () => {
    const c = parseModelConfig(QWEN3_06B);
    expect(c).toMatchObject({ architecture: "qwen3", headDim: 128, numHeads: 16, numKvHeads: 8, qkvBias: false, oBias: false, qkNorm: true, ropeTheta: 1e6, eosTokenIds: [151645] });
    const byName = new Map(parameterSpecs(c).map((p) => [p.name, p.shape]));
    expect(byName.get("model.layers.0.self_attn.q_proj.weight")).toEqual([2048, 1024]);
    expect(byName.get("model.layers.0.self_attn.o_proj.weight")).toEqual([1024, 2048]);
    expect(byName.get("model.layers.0.self_attn.q_norm.weight")).toEqual([128]);
    expect(byName.get("model.layers.0.self_attn.k_norm.weight")).toEqual([128]);
    expect(byName.has("model.layers.0.self_attn.q_proj.bias")).toBe(false);
    // 0.6B total, 0.44B without the embedding
    expect(parameterCount(c)).toBe(596_049_920);
    expect(parameterCount(c) - 151936 * 1024).toBe(440_467_456);
  });

  it("reads Llama with and without attention_bias; untied by default", () => {
    const base = { model_type: "llama", hidden_size: 64, intermediate_size: 128, num_hidden_layers: 1, num_attention_heads: 4, vocab_size: 100 };
    const plain = parseModelConfig(base);
    expect(plain).toMatchObject({ numKvHeads: 4, headDim: 16, qkvBias: false, oBias: false, tieWordEmbeddings: false, ropeTheta: 10000, eosTokenIds: [] });
    expect(parameterSpecs(plain).at(-1)).toMatchObject({ name: "lm_head.weight", shape: [100, 64] });
    const biased = parseModelConfig({ ...base, attention_bias: true, eos_token_id: [1, 2], dtype: "float16" });
    expect(biased).toMatchObject({ qkvBias: true, oBias: true, eosTokenIds: [1, 2], torchDtype: "float16" });
    expect(parameterSpecs(biased).map((p) => p.name)).toContain("model.layers.0.self_attn.o_proj.bias");
  });

  it("rejects unsupported architectures naming the file, the model_type and the supported ones", () => {
    expect(() => parseModelConfig({ ...QWEN3_06B, model_type: "mistral" }, "/ckpt/config.json")).toThrowError(
      /\/ckpt\/config\.json: unsupported model_type "mistral".*supported model types: qwen2, qwen3, llama/,
    );
    expect(() => parseModelConfig({ hidden_size: 3 }, "c.json")).toThrowError(/c\.json: unsupported model_type null/);
  });

  it("rejects inconsistent or unsupported settings with the field named", () => {
    expect(() => parseModelConfig({ ...QWEN3_06B, num_key_value_heads: 3 })).toThrowError(/multiple of num_key_value_heads/);
    const { hidden_size: _h, ...noHidden } = QWEN25_MATH_15B;
    expect(() => parseModelConfig(noHidden)).toThrowError(/missing required field "hidden_size"/);
    expect(() => parseModelConfig({ ...QWEN25_MATH_15B, rope_scaling: { rope_type: "llama3", factor: 8 } })).toThrowError(/rope_scaling/);
    expect(() => parseModelConfig({ ...QWEN25_MATH_15B, use_sliding_window: true })).toThrowError(/use_sliding_window/);
    expect(() => parseModelConfig({ ...QWEN25_MATH_15B, hidden_act: "gelu" })).toThrowError(/hidden_act/);
    expect(() => parseModelConfig({ ...QWEN25_MATH_15B, vocab_size: "big" })).toThrowError(/vocab_size/);
  });

  it("toHfConfig round-trips through the parser for all architectures", () => {
    for (const init of [
      { architecture: "qwen2" as const, numKvHeads: 2 },
      { architecture: "qwen3" as const, headDim: 32, tieWordEmbeddings: true },
      { architecture: "llama" as const, attentionBias: true, eosTokenIds: [3, 4] },
    ]) {
      const c = makeModelConfig(init);
      const { raw: _r, ...rest } = c;
      const { raw: _r2, ...again } = parseModelConfig(JSON.parse(JSON.stringify(toHfConfig(c))));
      expect(again).toEqual(rest);
    }
  });

  it("loadModelConfig names the file on unreadable or invalid JSON", async () => {
    const dir = await mkdtemp(join(tmpdir(), "nr-config-"));
    try {
      await expect(loadModelConfig(dir)).rejects.toThrowError(/config\.json: cannot read config/);
      await writeFile(join(dir, "config.json"), "{ not json");
      await expect(loadModelConfig(dir)).rejects.toThrowError(/config\.json: invalid JSON/);
      await writeFile(join(dir, "config.json"), JSON.stringify(QWEN25_MATH_15B));
      expect((await loadModelConfig(dir)).numLayers).toBe(28);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("ConfigError carries the file", () => {
    try {
      parseModelConfig([], "x.json");
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).file).toBe("x.json");
    }
    expect.assertions(2);
  });
});
