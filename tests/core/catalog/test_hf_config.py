"""Hugging Face config.json → ModelSpec."""

from __future__ import annotations

import datetime as dt

import pytest

from gpuyield.core.catalog import default_catalog, load_hf_config
from gpuyield.errors import CatalogError

LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def test_llama_config_matches_catalogue():
    spec = load_hf_config(LLAMA_8B, model_id="x/llama", as_of=dt.date(2026, 1, 1))
    ref = default_catalog().model("meta-llama/Llama-3.1-8B")
    assert spec.params_total == ref.params_total
    assert spec.kv_bytes_per_token() == 131072
    assert spec.native_dtype == "bf16" and not spec.is_moe


def test_mixtral_config():
    cfg = {**LLAMA_8B, "model_type": "mixtral", "vocab_size": 32000, "max_position_embeddings": 32768,
           "num_local_experts": 8, "num_experts_per_tok": 2}
    spec = load_hf_config(cfg)
    assert spec.is_moe and spec.num_experts == 8 and spec.moe_intermediate_size == 14336
    assert spec.params_total / 1e9 == pytest.approx(46.7, rel=0.02)
    assert spec.params_active / 1e9 == pytest.approx(12.9, rel=0.02)
    assert spec.id == "hf-config" and spec.as_of == dt.date(1970, 1, 1)


def test_deepseek_v3_config():
    cfg = {
        "model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432, "num_hidden_layers": 61,
        "num_attention_heads": 128, "num_key_value_heads": 128, "vocab_size": 129280, "kv_lora_rank": 512,
        "q_lora_rank": 1536, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
        "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "moe_intermediate_size": 2048,
        "first_k_dense_replace": 3, "moe_layer_freq": 1, "topk_method": "noaux_tc", "num_nextn_predict_layers": 1,
        "max_position_embeddings": 163840, "quantization_config": {"quant_method": "fp8"},
    }
    spec = load_hf_config(cfg, model_id="deepseek-ai/DeepSeek-V3")
    assert spec.uses_mla and spec.is_moe and spec.native_dtype == "fp8"
    assert spec.kv_bytes_per_token("bf16") == 70272
    assert spec.params_total / 1e9 == pytest.approx(671, rel=0.02)
    assert spec.params_active / 1e9 == pytest.approx(37, rel=0.02)
    assert spec.num_mtp_layers == 1


def test_qwen3_moe_and_qwen2_bias():
    qwen3 = {"model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 48,
             "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 151936,
             "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768, "decoder_sparse_step": 1,
             "mlp_only_layers": [], "max_position_embeddings": 40960}
    spec = load_hf_config(qwen3)
    assert spec.qk_norm == "per_head"
    assert spec.params_total / 1e9 == pytest.approx(30.5, rel=0.02)
    qwen2 = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
             "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
             "max_position_embeddings": 32768}
    small = load_hf_config(qwen2)
    assert small.attention_bias and small.tie_word_embeddings
    assert small.params_total / 1e9 == pytest.approx(0.494, rel=0.02)  # Qwen2-0.5B


def test_gpt_oss_sliding_layers():
    cfg = {"model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880, "num_hidden_layers": 36,
           "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 201088,
           "num_local_experts": 128, "num_experts_per_tok": 4, "sliding_window": 128,
           "layer_types": ["sliding_attention", "full_attention"] * 18, "attention_bias": True,
           "max_position_embeddings": 131072, "quantization_config": {"quant_method": "mxfp4"}}
    spec = load_hf_config(cfg)
    assert spec.layer_pattern == ("sliding_attention", "full_attention")
    assert spec.native_dtype == "mxfp4"
    assert spec.params_total / 1e9 == pytest.approx(116.8, rel=0.01)
    assert spec.kv_bytes_per_token() == 18 * 8 * 64 * 2 * 2


def test_mistral_sliding_window_all_layers():
    cfg = {**LLAMA_8B, "model_type": "mistral", "vocab_size": 32000, "sliding_window": 4096}
    spec = load_hf_config(cfg)
    assert spec.num_layers_of("sliding_attention") == 32
    assert spec.kv_bytes_per_token() == 0
    assert spec.kv_bytes_for_context(8192) == 32 * 4096 * 8 * 128 * 2 * 2


def test_multimodal_text_config_is_used():
    cfg = {"model_type": "llava", "text_config": {**LLAMA_8B}, "vision_config": {"hidden_size": 1024}}
    assert load_hf_config(cfg).num_layers == 32


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"model_type": "llama", "hidden_size": 64}, "lacks required field 'num_hidden_layers'"),
        ({**LLAMA_8B, "num_key_value_heads": 5}, "multiple of num_kv_heads"),
        ({**LLAMA_8B, "layer_types": ["mamba"] * 32}, r"layer_types\[0\] = 'mamba' is not supported"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_configs(cfg, message):
    with pytest.raises(CatalogError, match=message):
        load_hf_config(cfg)  # type: ignore[arg-type]


MINIMAX_M3 = {  # the fields of MiniMaxAI/MiniMax-M3's config.json that shape the model (aiconfigurator-core 0.12.0)
    "model_type": "minimax_m3", "hidden_size": 6144, "intermediate_size": 3072, "dense_intermediate_size": 12288,
    "num_hidden_layers": 60, "num_attention_heads": 64, "num_key_value_heads": 4, "head_dim": 128,
    "vocab_size": 200064, "max_position_embeddings": 1048576, "num_local_experts": 128, "num_experts_per_tok": 4,
    "moe_intermediate_size": 3072, "n_shared_experts": 1, "shared_intermediate_size": 3072,
    "first_k_dense_replace": 3, "moe_layer_freq": [0, 0, 0] + [1] * 57, "use_qk_norm": True,
    "qk_norm_type": "per_head", "use_routing_bias": True, "num_nextn_predict_layers": 1, "num_mtp_modules": 7,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}


def test_minimax_m3_config_matches_catalogue():
    spec = load_hf_config(MINIMAX_M3, model_id="MiniMaxAI/MiniMax-M3")
    ref = default_catalog().model("MiniMaxAI/MiniMax-M3")
    # the leading dense layers take dense_intermediate_size, not the expert width intermediate_size holds
    assert spec.intermediate_size == 12288 and spec.moe_intermediate_size == 3072
    assert [spec.is_moe_layer(i) for i in range(5)] == [False, False, False, True, True]
    assert spec.dense_layers == ()  # the list's zeros are the first_k_dense_replace layers, not repeated
    assert spec.params_total == ref.params_total and spec.params_active == ref.params_active
    assert spec.kv_bytes_per_token("bf16") == ref.kv_bytes_per_token("bf16") == 60 * 4 * 128 * 2 * 2


def test_moe_layer_freq_list_marks_dense_layers():
    flags = [1] * 60
    flags[10] = 0
    spec = load_hf_config({**MINIMAX_M3, "moe_layer_freq": flags, "first_k_dense_replace": 0})
    assert spec.dense_layers == (10,) and not spec.is_moe_layer(10) and spec.is_moe_layer(0)
    with pytest.raises(CatalogError, match="moe_layer_freq has 59 entries but num_hidden_layers is 60"):
        load_hf_config({**MINIMAX_M3, "moe_layer_freq": flags[:59]})


def test_dsa_layer_type_reads_as_mla_full_attention():
    v3 = {
        "model_type": "glm_moe_dsa", "hidden_size": 7168, "intermediate_size": 18432, "num_hidden_layers": 61,
        "num_attention_heads": 128, "vocab_size": 129280, "kv_lora_rank": 512, "q_lora_rank": 1536,
        "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128, "index_n_heads": 64,
        "index_head_dim": 128, "max_position_embeddings": 163840,
    }
    spec = load_hf_config({**v3, "layer_types": ["deepseek_sparse_attention"] * 61})
    assert spec.layer_pattern == ("full_attention",) and spec.uses_mla
    assert spec.params_total == load_hf_config(v3).params_total


# what each unmodelled architecture's config carries (values as in the real configs, shortened)
_UNMODELLED_CASES = [
    ({"model_type": "nemotron-nas", "block_configs": [{"attention": {"n_heads_in_group": 8}}]}, "pruned blocks"),
    ({"model_type": "mimo_v2_flash", "hybrid_layer_pattern": [0, 1] * 16, "swa_head_dim": 64}, "own head width"),
    ({"model_type": "gemma4_text", "hidden_size_per_layer_input": 256}, "per-layer input embeddings"),
    ({"model_type": "gemma4_text", "num_kv_shared_layers": 20}, "reuse an earlier layer's KV cache"),
    ({"model_type": "gemma4_text", "use_double_wide_mlp": True}, "double-width MLPs"),
]


@pytest.mark.parametrize(("extra", "message"), _UNMODELLED_CASES)
def test_unmodelled_architectures_are_refused_not_miscounted(extra, message):
    with pytest.raises(CatalogError, match=message) as info:
        load_hf_config({**LLAMA_8B, **extra})
    assert "not modelled" in str(info.value)


MIMO_V2_FLASH = {  # XiaomiMiMo/MiMo-V2-Flash's config.json (aiconfigurator-core 0.12.0), the fields that shape it
    "model_type": "mimo_v2_flash", "num_hidden_layers": 48, "hidden_size": 4096, "num_attention_heads": 64,
    "num_key_value_heads": 4, "head_dim": 192, "v_head_dim": 128, "intermediate_size": 16384,
    "vocab_size": 152576, "max_position_embeddings": 262144, "sliding_window": 128, "sliding_window_size": 128,
    "swa_num_attention_heads": 64, "swa_num_key_value_heads": 8, "swa_head_dim": 192, "swa_v_head_dim": 128,
    "hybrid_layer_pattern": [0] + [1] * 4 + ([0] + [1] * 5) * 7 + [0],
    "moe_layer_freq": [0] + [1] * 47, "moe_intermediate_size": 2048, "n_routed_experts": 256,
    "n_shared_experts": None, "num_experts_per_tok": 8, "topk_method": "noaux_tc", "tie_word_embeddings": False,
}


def test_mimo_v2_flash_hybrid_attention_and_narrow_values():
    spec = load_hf_config(MIMO_V2_FLASH, model_id="XiaomiMiMo/MiMo-V2-Flash")
    ref = default_catalog().model("XiaomiMiMo/MiMo-V2-Flash")
    assert spec.params_total == ref.params_total and spec.params_active == ref.params_active
    assert spec.params_total / 1e9 == pytest.approx(309, rel=0.01)  # as published: 309 B total, 15 B active
    assert spec.params_active / 1e9 == pytest.approx(15.4, rel=0.01)
    assert not spec.uses_mla and spec.value_head_dim == 128 and spec.first_dense_layers == 1
    # hybrid_layer_pattern 1 = sliding (vLLM's mimo_v2.py): 9 full layers of 4 KV heads, 39 sliding of 8
    assert spec.num_layers_of("full_attention") == 9 and spec.num_layers_of("sliding_attention") == 39
    assert spec.attention_shape("full_attention") == (192, 4) and spec.attention_shape("sliding_attention") == (192, 8)
    assert spec.kv_bytes_per_token("bf16") == 9 * 4 * (192 + 128) * 2
    assert spec.kv_bytes_fixed_per_sequence("bf16") == 39 * 128 * 8 * (192 + 128) * 2
    qkv = next(g for g in spec.gemm_shapes if g.name == "qkv_proj")
    o = next(g for g in spec.gemm_shapes if g.name == "o_proj")
    assert (qkv.n, qkv.num_layers) == (64 * 192 + 8 * (192 + 128), 39) and o.k == 64 * 128


GEMMA4_26B = {  # google/gemma-4-26B-A4B's text_config (aiconfigurator-core 0.12.0), the fields that shape it
    "model_type": "gemma4_text", "hidden_size": 2816, "intermediate_size": 2112, "num_hidden_layers": 30,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "global_head_dim": 512,
    "num_global_key_value_heads": 2, "attention_k_eq_v": True, "enable_moe_block": True, "num_experts": 128,
    "top_k_experts": 8, "moe_intermediate_size": 704, "sliding_window": 1024, "vocab_size": 262144,
    "tie_word_embeddings": True, "max_position_embeddings": 262144,
    "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 5,
}


def test_gemma4_full_attention_layers_and_dense_mlp_beside_the_experts():
    spec = load_hf_config({"model_type": "gemma4", "text_config": GEMMA4_26B}, model_id="google/gemma-4-26B-A4B")
    ref = default_catalog().model("google/gemma-4-26B-A4B")
    assert spec.params_total == ref.params_total and spec.params_active == ref.params_active
    assert spec.params_total / 1e9 == pytest.approx(25.2, rel=0.01)  # "26B" with its vision tower
    assert spec.params_active / 1e9 == pytest.approx(3.8, rel=0.01)  # "A4B"
    assert spec.attention_shape("full_attention") == (512, 2) and spec.attention_shape("sliding_attention") == (256, 8)
    # the cache that grows: 5 full layers x 2 KV heads x 512 x (K and V) x 2 bytes; the sliding layers are bounded
    assert spec.kv_bytes_per_token("bf16") == 5 * 2 * 512 * 2 * 2
    assert spec.kv_bytes_fixed_per_sequence("bf16") == 25 * 1024 * 8 * 256 * 2 * 2
    full_qkv = next(g for g in spec.gemm_shapes if g.name == "full_qkv_proj")
    assert (full_qkv.n, full_qkv.num_layers) == (16 * 512 + 2 * 512, 5)  # Q, and K once (V = K)
    # without attention_k_eq_v declared as on, the global KV-head count is not applied (transformers' reading);
    # global_head_dim defaults to 512
    off = load_hf_config({k: v for k, v in GEMMA4_26B.items() if k != "global_head_dim"} | {"attention_k_eq_v": False})
    assert off.attention_shape("full_attention") == (512, 8) and not off.full_attention_k_eq_v
    # the E2B/E4B switches present but off (0 / false, as in the 26B and 31B configs) refuse nothing
    quiet = {**GEMMA4_26B, "hidden_size_per_layer_input": 0, "num_kv_shared_layers": 0, "use_double_wide_mlp": False}
    assert load_hf_config(quiet).params_total == spec.params_total


def test_gemma4_dense_31b_config():
    cfg = {**GEMMA4_26B, "hidden_size": 5376, "intermediate_size": 21504, "num_hidden_layers": 60,
           "num_attention_heads": 32, "num_key_value_heads": 16, "num_global_key_value_heads": 4,
           "enable_moe_block": False, "num_experts": None, "top_k_experts": None, "moe_intermediate_size": None,
           "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 10}  # fmt: skip
    spec = load_hf_config(cfg)
    ref = default_catalog().model("google/gemma-4-31B")
    assert not spec.is_moe and spec.params_total == ref.params_total
    assert spec.params_total / 1e9 == pytest.approx(30.7, rel=0.01)
    assert spec.kv_bytes_per_token("bf16") == 10 * 4 * 512 * 2 * 2


# NVIDIA Nemotron-3-Nano-30B-A3B-BF16's config.json (aiconfigurator-core 0.12.0), the fields that shape it
NEMOTRON3_NANO = {
    "model_type": "nemotron_h", "hidden_size": 2688, "num_hidden_layers": 52, "num_attention_heads": 32,
    "num_key_value_heads": 2, "head_dim": 128, "intermediate_size": 1856, "vocab_size": 131072,
    "max_position_embeddings": 262144, "tie_word_embeddings": False, "mlp_hidden_act": "relu2",
    "hybrid_override_pattern": "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME",
    "mamba_num_heads": 64, "mamba_head_dim": 64, "ssm_state_size": 128, "n_groups": 8, "conv_kernel": 4,
    "mamba_ssm_cache_dtype": "float32", "n_routed_experts": 128, "num_experts_per_tok": 6,
    "moe_intermediate_size": 1856, "moe_shared_expert_intermediate_size": 3712, "n_shared_experts": 1,
}


def test_nemotron3_nano_blocks_mamba_state_and_non_gated_experts():
    spec = load_hf_config(NEMOTRON3_NANO, model_id="nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16")
    ref = default_catalog().model("nemotron-3-nano")
    assert spec.params_total == ref.params_total and spec.params_active == ref.params_active
    # transformers' NemotronHForCausalLM on the meta device holds 31,577,937,344 parameters; the checkpoint adds
    # the routers' e_score_correction_bias buffers (128 a MoE block)
    assert spec.params_total == 31_577_937_344 + 23 * 128
    assert spec.params_active / 1e9 == pytest.approx(3.58, abs=0.01)  # published: 3.6 B with embeddings
    # one block a layer: 23 Mamba2, 6 attention, 23 MoE; every block is one residual branch
    assert spec.num_layers == 52 and spec.num_layers_of("linear_attention") == 23
    assert spec.num_layers_of("full_attention") == 6 and spec.num_moe_layers == 23
    assert spec.num_dense_mlp_layers == 0 and spec.num_sublayers == 52 and spec.layer_equivalents == 26
    # the cache that grows: 6 attention layers x 2 KV heads x 128 x (K and V) x 2 bytes
    assert spec.kv_bytes_per_token("bf16") == 6 * 2 * 128 * 2 * 2
    # Mamba2 state: 64 heads x 64 x 128 in fp32 (mamba_ssm_cache_dtype), conv window over x, B, C in bf16
    assert spec.linear_state_bytes_per_sequence() == 23 * (64 * 64 * 128 * 4 + (4096 + 2 * 8 * 128) * 3 * 2)
    names = {g.name: g for g in spec.gemm_shapes}
    assert names["in_proj"].n == 2 * 4096 + 2 * 8 * 128 + 64  # z, x, B, C, dt
    assert names["expert_up_proj"].n == 1856 and "expert_gate_up_proj" not in names  # relu^2, not gated
    assert names["shared_expert_up_proj"].n == 3712


def test_nemotron_h_dense_blocks_latent_moe_and_block_lists():
    # Nemotron-H-56B: dense relu^2 MLP blocks ("-"), no MoE; transformers counts 56,324,350,464 parameters
    dense = {k: v for k, v in NEMOTRON3_NANO.items() if not k.startswith(("n_routed", "num_experts", "moe_", "n_shared"))}
    dense |= {"hidden_size": 8192, "num_attention_heads": 64, "num_key_value_heads": 8, "intermediate_size": 32768,
              "mamba_num_heads": 256, "ssm_state_size": 256, "max_position_embeddings": 8192,
              "hybrid_override_pattern": "M-M-M-M*-" + "M-M-M-M-M*-" * 9 + "M-M-M-M-M-", "num_hidden_layers": 118}
    del dense["head_dim"], dense["mamba_ssm_cache_dtype"]
    spec = load_hf_config(dense | {"attention_head_dim": 128})
    assert spec.params_total == 56_324_350_464 and not spec.is_moe
    # no cache dtype named: fp32, vLLM's and transformers' default
    assert spec.num_dense_mlp_layers == 54 and spec.linear_state_dtype == "fp32"
    assert spec.params_total == default_catalog().model("nvidia/Nemotron-H-56B-Base-8K").params_total
    assert spec.linear_state_dtype == default_catalog().model("nvidia/Nemotron-H-56B-Base-8K").linear_state_dtype
    with pytest.raises(CatalogError, match="mamba_ssm_cache_dtype 'fp64'"):
        load_hf_config(NEMOTRON3_NANO | {"mamba_ssm_cache_dtype": "fp64"})
    # Super's latent MoE: the experts read and write a 1,024-wide latent, dispatched at that width
    super_ = NEMOTRON3_NANO | {"hidden_size": 4096, "moe_latent_size": 1024, "n_routed_experts": 512,
                               "num_experts_per_tok": 22, "moe_intermediate_size": 2688}
    spec = load_hf_config(super_)
    names = {g.name: g for g in spec.gemm_shapes}
    assert (names["latent_in_proj"].n, names["latent_in_proj"].k) == (1024, 4096)
    assert (names["expert_up_proj"].k, names["expert_down_proj"].n) == (1024, 1024)
    assert spec.moe_dispatch_width == 1024 and names["latent_in_proj"].group == "moe_latent"
    # Ultra's form: layers_block_type, no num_hidden_layers
    listed = {k: v for k, v in NEMOTRON3_NANO.items() if k not in ("hybrid_override_pattern", "num_hidden_layers")}
    names_of = {"M": "mamba", "E": "moe", "*": "attention"}
    listed["layers_block_type"] = [names_of[c] for c in NEMOTRON3_NANO["hybrid_override_pattern"]]
    assert load_hf_config(listed).params_total == load_hf_config(NEMOTRON3_NANO).params_total
    # another Mamba hybrid naming its blocks alike is refused, not read as Nemotron-H
    with pytest.raises(CatalogError, match="only Nemotron-H's"):
        load_hf_config({**LLAMA_8B, "model_type": "zamba2", "layers_block_type": ["mamba", "hybrid"]})
    with pytest.raises(CatalogError, match="block 3 is 'X'"):
        load_hf_config(NEMOTRON3_NANO | {"hybrid_override_pattern": "MEMX"})
    with pytest.raises(CatalogError, match="ssm_state_size"):
        load_hf_config({k: v for k, v in NEMOTRON3_NANO.items() if k != "ssm_state_size"})


# deepseek-ai/DeepSeek-V4-Flash's config.json (aiconfigurator-core 0.12.0), the fields that shape it
DEEPSEEK_V4_FLASH = {
    "model_type": "deepseek_v4", "hidden_size": 4096, "num_hidden_layers": 43, "num_attention_heads": 64,
    "num_key_value_heads": 1, "head_dim": 512, "qk_rope_head_dim": 64, "q_lora_rank": 1024, "o_groups": 8,
    "o_lora_rank": 1024, "index_head_dim": 128, "index_n_heads": 64, "index_topk": 512, "sliding_window": 128,
    "hc_mult": 4, "moe_intermediate_size": 2048, "n_routed_experts": 256, "n_shared_experts": 1,
    "num_experts_per_tok": 6, "num_hash_layers": 3, "num_nextn_predict_layers": 1, "topk_method": "noaux_tc",
    "vocab_size": 129280, "max_position_embeddings": 1048576, "tie_word_embeddings": False,
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3"}, "expert_dtype": "fp4",
    "compress_ratios": [0, 0] + [4, 128] * 20 + [4, 0],  # 43 layers, then the MTP block's
}


def test_deepseek_v4_compressed_attention_shared_kv_and_hyper_connections():
    spec = load_hf_config(DEEPSEEK_V4_FLASH, model_id="deepseek-ai/DeepSeek-V4-Flash")
    ref = default_catalog().model("deepseek-ai/DeepSeek-V4-Flash")
    assert spec.params_total == ref.params_total and spec.params_active == ref.params_active
    # transformers' DeepseekV4ForCausalLM on the meta device: 284,332,230,231 parameters; plus a routing-bias
    # buffer of 256 on each of the 43 layers
    assert spec.params_total == 284_332_230_231 + 43 * 256
    assert spec.params_active / 1e9 == pytest.approx(13.8, abs=0.05)
    kinds = [spec.num_layers_of(k) for k in ("sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention")]
    assert kinds == [2, 21, 20] and spec.num_window_layers == 43
    # DeepSeek's checkpoint: routed experts in fp4 (expert_dtype; mxfp4-like), the rest fp8: 157.5 GB
    assert (spec.native_dtype, spec.native_dense_dtype) == ("mxfp4", "fp8")
    assert spec.weight_bytes() / 1e9 == pytest.approx(157.5, abs=0.1)
    # SGLang's layouts: a K = V entry of 448 fp8 no-RoPE values, 64 bf16 RoPE values, 7 scale bytes and a pad byte
    # (584); an indexer key of 128 fp8 values and an fp32 scale (132); one entry per 4 tokens (CSA) or 128 (HCA)
    entry, index = 448 + 64 * 2 + 7 + 1, 128 + 4
    assert spec.kv_bytes_per_token_per_layer("fp8", "heavily_compressed_attention") == entry
    assert spec.kv_bytes_per_token_per_layer("bf16", "sliding_attention") == 512 * 2
    per_token = 21 * (entry + index) / 4 + 20 * entry / 128
    assert spec.kv_bytes_per_token("fp8") == per_token
    # a decode reads per context token only the CSA indexer keys and the HCA entries (top-k entries are fixed)
    assert spec.compressed_read_bytes_per_token("fp8") == 21 * index / 4 + 20 * entry / 128
    # bounded: every layer's 128-token window, and the compressors' fp32 rings (SGLang: CSA 8 slots of KV and gate
    # for two overlapping series, its indexer alike at 128 wide; HCA 128 slots), doubled with speculative decoding
    states = 21 * 8 * (4 * 512 + 4 * 128) * 4 + 20 * 128 * 2 * 512 * 4
    assert spec.compressor_state_bytes_per_sequence() == states
    assert spec.compressor_state_bytes_per_sequence(speculative=True) == 2 * states
    assert spec.kv_bytes_fixed_per_sequence("fp8") == 43 * 128 * entry + states
    assert spec.kv_bytes_for_context(1000, "fp8") == pytest.approx(1000 * per_token + 43 * 128 * entry + states)
    assert spec.kv_bytes_for_context(100, "fp8") == pytest.approx(100 * per_token + 43 * 100 * entry + states)
    assert spec.kv_bytes_for_context(0, "fp8") == 0
    names = {g.name: g for g in spec.gemm_shapes}
    assert (names["kv_proj"].n, names["q_b_proj"].k) == (512, 1024)  # K = V projected once
    assert (names["o_a_proj"].n, names["o_a_proj"].k) == (8 * 1024, 64 * 512 // 8)  # per group: 4,096 -> 1,024
    assert names["csa_compressor_kv_gate"].num_layers == 21 and names["hca_compressor_kv_gate"].n == 2 * 512
    # as SGLang holds them: q_a and kv replicated, o_a in bf16, compressors and indexer bf16 on every GPU
    assert names["q_a_proj"].replicated and names["kv_proj"].replicated and not names["q_b_proj"].replicated
    assert names["o_a_proj"].precision == "bf16" and not names["o_a_proj"].replicated
    assert all(names[n].replicated and names[n].precision == "bf16" for n in names if "compressor" in n or "indexer" in n)
    # SGLang's own copies (model_type deepseek_ref) read as the same architecture, sinks included
    ref_copy = load_hf_config(DEEPSEEK_V4_FLASH | {"model_type": "deepseek_ref"})
    assert ref_copy.architecture == "deepseek_v4" and ref_copy.params_total == spec.params_total
    # Pro starts with two HCA layers and has no window-only layer
    pro_ratios = [128, 128] + [4, 128] * 29 + [4]
    pro = load_hf_config(DEEPSEEK_V4_FLASH | {"num_hidden_layers": 61, "compress_ratios": pro_ratios})
    assert pro.layer_kinds[:3] == ("heavily_compressed_attention",) * 2 + ("compressed_sparse_attention",)
    assert pro.num_layers_of("sliding_attention") == 0 and pro.num_window_layers == 61
    assert load_hf_config(DEEPSEEK_V4_FLASH | {"compress_ratios": str(DEEPSEEK_V4_FLASH["compress_ratios"])}).params_total == (
        spec.params_total
    )
    # the newer layer_types form reads the same
    named = {k: v for k, v in DEEPSEEK_V4_FLASH.items() if k != "compress_ratios"}
    by_ratio = {0: "sliding_attention", 4: "compressed_sparse_attention", 128: "heavily_compressed_attention"}
    named["layer_types"] = [by_ratio[r] for r in DEEPSEEK_V4_FLASH["compress_ratios"][:43]]
    assert load_hf_config(named).params_total == spec.params_total
    with pytest.raises(CatalogError, match="compress_ratios has 16"):
        load_hf_config(DEEPSEEK_V4_FLASH | {"compress_ratios": [0, 16] + [4, 128] * 21})
    with pytest.raises(CatalogError, match="o_groups"):
        load_hf_config({k: v for k, v in DEEPSEEK_V4_FLASH.items() if k != "o_groups"})
    with pytest.raises(CatalogError, match="lacks 'index_topk'"):
        load_hf_config({k: v for k, v in DEEPSEEK_V4_FLASH.items() if k != "index_topk"})


# Kimi-K3's text_config (aiconfigurator-core 0.12.0), shrunk to 8 layers and 16 experts, without the latent MoE and
# the MLA output gate, with the low-rank KDA output gate: transformers' KimiLinearForCausalLM then applies, and on the
# meta device holds 13,837,128,000 parameters (plus 7 MoE layers' routing-bias buffers of 16)
KIMI_LINEAR_SMALL = {
    "model_type": "kimi_linear", "hidden_size": 7168, "num_hidden_layers": 8, "num_attention_heads": 96,
    "num_key_value_heads": 96, "intermediate_size": 33792, "vocab_size": 163840, "max_position_embeddings": 1048576,
    "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "num_experts": 16, "num_experts_per_token": 16, "moe_intermediate_size": 3072, "num_shared_experts": 2,
    "first_k_dense_replace": 1, "moe_layer_freq": 1, "topk_method": "noaux_tc", "tie_word_embeddings": False,
    "linear_attn_config": {"kda_layers": [1, 2, 3, 5, 6, 7], "full_attn_layers": [4, 8], "num_heads": 96,
                           "head_dim": 128, "short_conv_kernel_size": 4, "use_full_rank_gate": False},
}


def test_kimi_linear_delta_attention_layers_and_gated_mla():
    small = load_hf_config(KIMI_LINEAR_SMALL)
    assert small.params_total == 13_837_128_000 + 7 * 16
    assert small.linear_attention_type == "kda" and small.linear_state_dtype == "fp32"
    assert small.layer_kinds == ("linear_attention",) * 3 + ("full_attention",) + ("linear_attention",) * 3 + (
        "full_attention",
    )
    # KDA state as vLLM shapes it: 96 heads x 128 x 128 in fp32, the conv window over q, k, v (3 x 12,288) in bf16
    assert small.linear_state_bytes_per_sequence() == 6 * (96 * 128 * 128 * 4 + 3 * 12288 * 3 * 2)
    # Kimi-K3 (aiconfigurator-core 0.12.0's config): full-rank KDA gate, MLA output gate, latent MoE
    k3 = load_hf_config({"model_type": "kimi_k3", "text_config": {
        **KIMI_LINEAR_SMALL, "num_hidden_layers": 93, "num_experts": 896,
        "routed_expert_hidden_size": 3584, "mla_use_output_gate": True,
        "linear_attn_config": {**KIMI_LINEAR_SMALL["linear_attn_config"], "use_full_rank_gate": True,
                               "kda_layers": [i for i in range(1, 93) if i % 4], "full_attn_layers": [*range(4, 93, 4), 93]},
        "quantization_config": {"quant_method": "compressed-tensors", "format": "mxfp4-pack-quantized"}}})
    ref = default_catalog().model("moonshotai/Kimi-K3")
    assert k3.params_total == ref.params_total and k3.native_dtype == "mxfp4"
    assert k3.num_layers_of("linear_attention") == 69 and k3.num_layers_of("full_attention") == 24
    names = {g.name: g for g in k3.gemm_shapes}
    assert names["in_proj_qkvg"].n == 4 * 12288 and "g_a_proj" not in names
    assert (names["o_gate_proj"].n, names["o_gate_proj"].num_layers) == (96 * 128, 24)
    assert names["expert_gate_up_proj"].k == 3584 and names["latent_in_proj"].replicated
    with pytest.raises(CatalogError, match="out of 1..8"):
        load_hf_config(KIMI_LINEAR_SMALL | {"linear_attn_config": {**KIMI_LINEAR_SMALL["linear_attn_config"],
                                                                   "kda_layers": [0, 1]}})


def test_checkpoint_precision_and_state_dtypes_from_the_config():
    from gpuyield.core.catalog import checkpoint_precision

    assert checkpoint_precision("nvidia/DeepSeek-R1-NVFP4", "fp8") == "nvfp4"
    assert checkpoint_precision("Qwen/Qwen3-32B-FP8-Static-PerTensor", "bf16") == "fp8"
    assert checkpoint_precision("deepseek-ai/DeepSeek-V4-Flash", "fp8") == "fp8"
    # ModelOpt's per-layer formats (FP8 attention, NVFP4 MLPs) and compressed-tensors NVFP4 are nvfp4 checkpoints
    mixed = {**LLAMA_8B, "quantization_config": {"quant_method": "modelopt", "quant_algo": "MIXED_PRECISION",
                                                  "quantized_layers": {"l.0.mlp.up_proj": {"quant_algo": "W4A16_NVFP4"}}}}
    assert load_hf_config(mixed).native_dtype == "nvfp4"
    packed = {**LLAMA_8B, "quantization_config": {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized",
                                                  "config_groups": {"g": {"weights": {"num_bits": 4}}}}}
    assert load_hf_config(packed).native_dtype == "nvfp4"
    # Qwen3.5 names its Gated DeltaNet state dtype (vLLM holds the state in it)
    qwen35 = {**LLAMA_8B, "model_type": "qwen3_5_text", "layer_types": ["linear_attention"] * 3 + ["full_attention"],
              "num_hidden_layers": 4, "linear_num_key_heads": 16, "linear_num_value_heads": 32,
              "linear_key_head_dim": 128, "linear_value_head_dim": 128, "mamba_ssm_dtype": "float32"}
    assert load_hf_config(qwen35).linear_state_dtype == "fp32"
    with pytest.raises(CatalogError, match="mamba_ssm_dtype 'int8'"):
        load_hf_config(qwen35 | {"mamba_ssm_dtype": "int8"})


def test_every_catalogue_name_resolves_to_a_repository_and_its_precision():
    from gpuyield.core.catalog import resolve_checkpoint

    cat = default_catalog()
    for spec in cat.models:
        for name in (spec.id, *spec.aliases):
            repo, precision = resolve_checkpoint(spec, name)
            assert "/" in repo or repo == spec.id, (name, repo)  # short names deploy the entry's own repository
            assert precision in ("bf16", "fp16", "fp8", "int8", "nvfp4", "mxfp4", "int4"), (name, precision)
    # a listed repository named without its org; an unlisted short name is the entry's own repository at its own
    # precision (repository and precision always match: a deploy file loads what was planned)
    assert resolve_checkpoint(cat.model("DeepSeek-R1-NVFP4"), "DeepSeek-R1-NVFP4") == ("nvidia/DeepSeek-R1-NVFP4", "nvfp4")
    assert resolve_checkpoint(cat.model("Kimi-K2-Thinking"), "Kimi-K2-Thinking") == ("moonshotai/Kimi-K2-Thinking", "int4")
    assert resolve_checkpoint(cat.model("Qwen3-32B-AWQ"), "Qwen3-32B-AWQ") == ("Qwen/Qwen3-32B", "bf16")
    # the bf16 release listed beside an nvfp4 entry, int4 Kimi releases beside nvfp4 / fp8 entries
    assert resolve_checkpoint(cat.model("Qwen/Qwen3.6-27B"), "Qwen/Qwen3.6-27B") == ("Qwen/Qwen3.6-27B", "bf16")
    assert resolve_checkpoint(cat.model("moonshotai/Kimi-K2.6"), "moonshotai/Kimi-K2.6")[1] == "int4"
    assert resolve_checkpoint(cat.model("moonshotai/Kimi-K2-Thinking"), "moonshotai/Kimi-K2-Thinking")[1] == "int4"
    r1 = cat.model("deepseek-r1")
    assert resolve_checkpoint(r1, "deepseek-r1") == ("deepseek-ai/DeepSeek-R1", "fp8")
    assert resolve_checkpoint(r1, "NVIDIA/DeepSeek-R1-NVFP4") == ("nvidia/DeepSeek-R1-NVFP4", "nvfp4")  # catalogue spelling



DEEPSEEK_V3 = {
    "model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432, "num_hidden_layers": 61,
    "num_attention_heads": 128, "num_key_value_heads": 128, "vocab_size": 129280, "kv_lora_rank": 512,
    "q_lora_rank": 1536, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
    "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "moe_intermediate_size": 2048,
    "first_k_dense_replace": 3, "moe_layer_freq": 1, "max_position_embeddings": 163840,
}


def test_nvfp4_release_keeps_what_its_quantisation_config_leaves_out():
    # ModelOpt's exclude_modules, as nvidia/DeepSeek-V3.1-NVFP4's hf_quant_config.json lists them: the MLA down and up
    # projections of every layer (and the MTP layer 61) stay bf16; o_proj, the dense MLPs and the experts are NVFP4
    mla = ("kv_a_proj_with_mqa", "kv_b_proj", "q_a_proj", "q_b_proj")
    exclude = ["lm_head", "model.layers.61*"] + [f"model.layers.{i}.self_attn.{n}" for i in range(61) for n in mla]
    quant = {"quant_method": "modelopt", "quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8", "exclude_modules": exclude}
    spec = load_hf_config(DEEPSEEK_V3 | {"quantization_config": quant})
    assert spec.native_dtype == "nvfp4" and dict(spec.nvfp4_kept) == dict.fromkeys(mla, "bf16")
    assert spec.nvfp4_kept == default_catalog().model("nvidia/DeepSeek-V3.1-NVFP4").nvfp4_kept
    # one layer quantised after all: a matrix is kept only when every layer holding it keeps it
    partial = load_hf_config(DEEPSEEK_V3 | {"quantization_config": quant | {"exclude_modules": exclude[:-4]}})
    assert partial.nvfp4_kept == ()
    # whole modules by glob (GLM-5.1-style: self_attn and shared experts everywhere, the dense layers whole)
    globs = ["lm_head", "*self_attn*", "model.layers.*.mlp.shared_experts*"] + [f"model.layers.{i}.*" for i in range(3)]
    whole = load_hf_config(DEEPSEEK_V3 | {"quantization_config": quant | {"exclude_modules": globs}})
    assert dict(whole.nvfp4_kept) == {"attention": "bf16", "moe_shared": "bf16", "mlp": "bf16"}
    # compressed-tensors names them in ``ignore`` (nvidia/Kimi-K2.5-NVFP4)
    ct = {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized",
          "config_groups": {"g": {"weights": {"num_bits": 4, "type": "float", "group_size": 16}}},
          "ignore": ["lm_head"] + [f"model.layers.{i}.self_attn*" for i in range(61)]}
    assert dict(load_hf_config(DEEPSEEK_V3 | {"quantization_config": ct}).nvfp4_kept) == {"attention": "bf16"}
    # llm-compressor writes regular expressions
    regex = ct | {"ignore": ["lm_head", "re:.*self_attn.*"]}
    assert dict(load_hf_config(DEEPSEEK_V3 | {"quantization_config": regex}).nvfp4_kept) == {"attention": "bf16"}
    # other checkpoints keep nothing apart
    assert load_hf_config(DEEPSEEK_V3 | {"quantization_config": {"quant_method": "fp8"}}).nvfp4_kept == ()


def test_a_kept_matrix_counts_only_the_layers_that_hold_it():
    """A hybrid of 3 Gated DeltaNet layers to 1 full-attention layer: excluding self_attn in layers 0-3 keeps one
    of its 4 full-attention layers' projections, not all of them (the linear layers hold no self_attn)."""
    cfg = {**LLAMA_8B, "model_type": "qwen3_5_text", "num_hidden_layers": 16,
           "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * 4, "linear_num_key_heads": 16,
           "linear_num_value_heads": 32, "linear_key_head_dim": 128, "linear_value_head_dim": 128}
    quant = {"quant_method": "modelopt", "quant_algo": "NVFP4",
             "exclude_modules": [f"model.layers.{i}.self_attn*" for i in range(4)]}
    assert load_hf_config(cfg | {"quantization_config": quant}).nvfp4_kept == ()
    every = quant | {"exclude_modules": [f"model.layers.{i}.self_attn*" for i in (3, 7, 11, 15)]}
    spec = load_hf_config(cfg | {"quantization_config": every})
    assert dict(spec.nvfp4_kept) == {"qkv_proj": "bf16", "o_proj": "bf16"}


def test_nvfp4_mixed_precision_export_keeps_fp8_attention_and_what_it_does_not_name():
    # nvidia/Qwen3.6-27B-NVFP4's quantized_layers: FP8 attention (full and Gated DeltaNet) beside W4A16 NVFP4
    # MLPs; in_proj_a/b are named nowhere, so they stay bf16
    layers = ["linear_attention"] * 3 + ["full_attention"]
    cfg = {**LLAMA_8B, "model_type": "qwen3_5_text", "num_hidden_layers": 8, "layer_types": layers * 2,
           "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_key_head_dim": 128,
           "linear_value_head_dim": 128}
    q: dict[str, dict[str, str]] = {}
    for i, kind in enumerate(layers * 2):
        p = f"model.language_model.layers.{i}"
        mods = ("linear_attn.in_proj_qkv", "linear_attn.in_proj_z", "linear_attn.out_proj") if kind == "linear_attention" \
            else ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
        q |= {f"{p}.{m}": {"quant_algo": "FP8"} for m in mods}
        q |= {f"{p}.mlp.{m}": {"quant_algo": "W4A16_NVFP4"} for m in ("gate_proj", "up_proj", "down_proj")}
    quant = {"quant_method": "modelopt", "quant_algo": "MIXED_PRECISION", "exclude_modules": ["mtp*"],
             "quantized_layers": q}
    spec = load_hf_config(cfg | {"quantization_config": quant})
    assert spec.native_dtype == "nvfp4" and dict(spec.nvfp4_kept) == {"attention": "fp8", "in_proj_ba": "bf16"}
    # the release also names its LM head W4A16_NVFP4: held at 4 bits, not the 16 bits an LM head gets otherwise
    q["lm_head"] = {"quant_algo": "W4A16_NVFP4", "group_size": 16}
    spec = load_hf_config(cfg | {"quantization_config": quant})
    assert dict(spec.nvfp4_kept) == {"attention": "fp8", "in_proj_ba": "bf16", "lm_head": "nvfp4"}
    assert spec.nvfp4_kept == default_catalog().model("nvidia/Qwen3.6-27B-NVFP4").nvfp4_kept
    head = next(g for g in spec.gemm_shapes if g.group == "lm_head")
    assert spec.bytes_per_weight_of(head, "nvfp4") == 0.5625 and spec.bytes_per_weight_of(head, "bf16") == 2.0
    plain = spec.model_copy(update={"nvfp4_kept": {"attention": "fp8", "in_proj_ba": "bf16"}})
    assert spec.weight_bytes("nvfp4") == pytest.approx(plain.weight_bytes("nvfp4") - head.params * (2.0 - 0.5625))
    # an LM head can be quantised (nvfp4, fp8), not "kept" at an unknown dtype; a body matrix cannot be nvfp4-kept
    with pytest.raises(ValueError, match="lm_head"):
        spec.model_copy(update={"nvfp4_kept": {"lm_head": "int8"}})
    with pytest.raises(ValueError, match="attention"):
        spec.model_copy(update={"nvfp4_kept": {"attention": "nvfp4"}})
    # a head tied to the embeddings is the 16-bit embedding matrix: neither read as quantised nor accepted so
    tied = load_hf_config(cfg | {"tie_word_embeddings": True, "quantization_config": quant})
    assert "lm_head" not in dict(tied.nvfp4_kept)
    with pytest.raises(ValueError, match="ties its LM head"):
        tied.model_copy(update={"nvfp4_kept": {"lm_head": "nvfp4"}})


def test_int4_group_size_is_read_from_a_compressed_tensors_config():
    quant = {"quant_method": "compressed-tensors", "format": "pack-quantized",
             "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int",
                                                                             "group_size": 32, "symmetric": True}}},
             "ignore": ["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*"]}
    spec = load_hf_config(DEEPSEEK_V3 | {"quantization_config": quant})
    assert spec.native_dtype == "int4" and spec.int4_group_size == 32
    # zero points (asymmetric) or AWQ: the generic int4 sizing
    asym = quant | {"config_groups": {"g": {"weights": {"num_bits": 4, "type": "int", "group_size": 32, "symmetric": False}}}}
    assert load_hf_config(DEEPSEEK_V3 | {"quantization_config": asym}).int4_group_size is None
    awq = {"quant_method": "awq", "bits": 4, "group_size": 128}
    assert load_hf_config(DEEPSEEK_V3 | {"quantization_config": awq}).int4_group_size is None
