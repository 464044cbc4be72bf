"""Computed architecture numbers against published figures."""

from __future__ import annotations

import pytest

from gpuyield.core.catalog import default_catalog
from gpuyield.errors import CatalogError


@pytest.fixture(scope="module")
def cat():
    return default_catalog()


@pytest.mark.parametrize(
    ("model", "total_b", "active_b"),
    [
        ("meta-llama/Llama-3.1-8B", 8.03, None),
        ("meta-llama/Llama-3.1-70B", 70.6, None),
        ("meta-llama/Llama-3.1-405B", 405.9, None),
        ("Qwen/Qwen3-32B", 32.8, None),
        ("Qwen/Qwen3-8B", 8.2, None),
        ("mistralai/Mixtral-8x7B-v0.1", 46.7, 12.9),
        ("deepseek-ai/DeepSeek-V3", 671, 37),
        ("deepseek-ai/DeepSeek-R1", 671, 37),
        ("Qwen/Qwen3-235B-A22B", 235, 22),
        ("Qwen/Qwen3-30B-A3B", 30.5, 3.3),
        ("openai/gpt-oss-120b", 116.8, 5.13),
        ("MiniMaxAI/MiniMax-M2.5", 229, 10),
        ("Qwen/Qwen3.5-397B-A17B", 397, 17),
        ("zai-org/GLM-5", 744, 40),
        ("mistralai/Mistral-Small-24B-Instruct-2501", 23.6, None),
        ("nemotron-3-nano", 31.6, 3.6),
        ("nemotron-3-super", 120, 12),
        ("nemotron-3-ultra", 550, 55),
        ("nvidia/Nemotron-H-56B-Base-8K", 56, None),
        ("deepseek-ai/DeepSeek-V4-Flash", 284, 13),
        ("deepseek-ai/DeepSeek-V4-Pro", 1600, 49),
        ("moonshotai/Kimi-K3", 2800, 105.4),  # no published active count: ours, checks the total only
    ],
)
def test_params_match_published(cat, model, total_b, active_b):
    spec = cat.model(model)
    assert spec.params_total / 1e9 == pytest.approx(total_b, rel=0.02)
    if active_b is None:
        assert spec.params_active == spec.params_total
        assert not spec.is_moe
    else:
        assert spec.is_moe
        # published active counts differ in whether embeddings count; 2% for Mixtral/DeepSeek,
        # the others within 12% (they are rounded marketing figures)
        active = spec.params_active
        if model.startswith("openai/"):
            active -= spec.vocab_size * spec.hidden_size  # OpenAI's 5.13 B leaves out the input embedding
        tol = 0.02 if model.startswith(("mistralai", "deepseek-ai/DeepSeek-V3", "deepseek-ai/DeepSeek-R1", "openai")) else 0.12
        assert active / 1e9 == pytest.approx(active_b, rel=tol)


@pytest.mark.parametrize(
    ("model", "kv"),
    [
        ("meta-llama/Llama-3.1-8B", 131072),
        ("meta-llama/Llama-3.1-70B", 327680),
        ("deepseek-ai/DeepSeek-V3", 70272),
        ("Qwen/Qwen3-32B", 64 * 8 * 128 * 2 * 2),
        ("mistralai/Mixtral-8x7B-v0.1", 32 * 8 * 128 * 2 * 2),
    ],
)
def test_kv_bytes_per_token_bf16(cat, model, kv):
    assert cat.model(model).kv_bytes_per_token("bf16") == kv
    assert cat.model(model).kv_bytes_per_token("fp8") == kv // 2


def test_mla_kv_formula(cat):
    ds = cat.model("deepseek-ai/DeepSeek-V3")
    assert ds.uses_mla and ds.is_moe
    assert ds.kv_bytes_per_token() == 61 * (512 + 64) * 2


def test_sliding_window_counted_separately(cat):
    oss = cat.model("openai/gpt-oss-120b")
    # 18 full layers grow with context; 18 sliding layers hold at most 128 tokens
    assert oss.num_layers_of("full_attention") == 18
    assert oss.num_layers_of("sliding_attention") == 18
    per_layer = 8 * 64 * 2 * 2
    assert oss.kv_bytes_per_token("bf16") == 18 * per_layer
    assert oss.kv_bytes_fixed_per_sequence("bf16") == 18 * 128 * per_layer
    assert oss.kv_bytes_for_context(100) == 100 * 36 * per_layer
    assert oss.kv_bytes_for_context(10_000) == 10_000 * 18 * per_layer + 128 * 18 * per_layer
    assert oss.kv_bytes_per_token_at(10_000) == pytest.approx(oss.kv_bytes_for_context(10_000) / 10_000)


def test_linear_attention_state(cat):
    q = cat.model("Qwen/Qwen3.5-397B-A17B")
    assert q.num_layers_of("linear_attention") == 45
    assert q.kv_bytes_per_token() == 15 * 2 * 256 * 2 * 2
    assert q.linear_state_bytes_per_sequence() > 0
    assert q.kv_bytes_for_context(0) == 0


def test_tiny_llama_matches_recipe(cat):
    t = cat.model("tiny-llama")
    assert (t.vocab_size, t.num_layers, t.hidden_size, t.num_attention_heads, t.num_kv_heads) == (8192, 4, 256, 4, 4)
    assert t.intermediate_size == 1024
    assert 1e6 < t.params_total < 2e7
    big = cat.model("tiny-llama-100m")
    assert (big.num_layers, big.hidden_size, big.num_attention_heads, big.num_kv_heads) == (12, 768, 12, 4)
    assert 0.09e9 < big.params_total < 0.13e9


def test_weight_bytes_by_precision(cat):
    m = cat.model("meta-llama/Llama-3.1-8B")
    bf16 = m.weight_bytes("bf16")
    assert bf16 == m.params_total * 2
    fp8 = m.weight_bytes("fp8")
    # embeddings + lm_head (2 x 128256 x 4096) and norms stay 16-bit
    embed = 2 * 128256 * 4096
    assert fp8 == pytest.approx((m.params_total - embed) * 1.0 + embed * 2, rel=1e-3)
    assert m.weight_bytes("int4") < m.weight_bytes("fp4") < fp8 < bf16
    with pytest.raises(CatalogError, match="unknown weight precision"):
        m.weight_bytes("fp3")


def test_gemm_shapes_consistent_with_params(cat):
    for spec in cat.models:
        g = {s.name: s for s in spec.gemm_shapes}
        assert "lm_head" in g
        assert sum(s.params for s in spec.gemm_shapes) <= spec.params_total + spec.vocab_size * spec.hidden_size
    llama = cat.model("meta-llama/Llama-3.1-8B")
    g = {s.name: s for s in llama.gemm_shapes}
    assert (g["qkv_proj"].n, g["qkv_proj"].k, g["qkv_proj"].num_layers) == (6144, 4096, 32)
    assert (g["gate_up_proj"].n, g["down_proj"].k) == (2 * 14336, 14336)
    mix = {s.name: s for s in cat.model("Mixtral-8x7B").gemm_shapes}
    assert (mix["expert_gate_up_proj"].num_experts, mix["expert_gate_up_proj"].experts_per_token) == (8, 2)
    ds = cat.model("deepseek-ai/DeepSeek-V3")
    assert ds.num_moe_layers == 58 and ds.num_dense_mlp_layers == 3


def test_unknown_kv_dtype(cat):
    with pytest.raises(CatalogError, match="kv_dtype"):
        cat.model("tiny-llama").kv_bytes_per_token("int3")


def test_llama4_chunked_attention_and_interleaved_moe(cat):
    scout = cat.model("Llama-4-Scout")
    maverick = cat.model("meta-llama/Llama-4-Maverick-17B-128E-Instruct")
    # Meta: Scout 17B active / 109B total incl. the vision encoder; Maverick 17B active / 400B total
    assert scout.params_active / 1e9 == pytest.approx(17, rel=0.03)
    assert scout.params_total / 1e9 == pytest.approx(109, rel=0.03)
    assert maverick.params_active / 1e9 == pytest.approx(17, rel=0.03)
    assert maverick.params_total / 1e9 == pytest.approx(400, rel=0.02)
    assert scout.num_moe_layers == 48 and maverick.num_moe_layers == 24
    assert scout.num_layers_of("full_attention") == 12 and scout.sliding_window == 8192
    assert scout.kv_bytes_per_token() == 12 * 8 * 128 * 2 * 2


@pytest.mark.parametrize(
    ("release", "predecessor"),
    [
        ("MiniMaxAI/MiniMax-M2.7", "MiniMaxAI/MiniMax-M2.5"),
        ("zai-org/GLM-5.1", "zai-org/GLM-5"),
        ("zai-org/GLM-5.3", "zai-org/GLM-5"),
        ("moonshotai/Kimi-K2.6", "moonshotai/Kimi-K2.5"),
        ("Qwen/Qwen3-VL-235B-A22B-Instruct", "Qwen/Qwen3-235B-A22B"),
    ],
)
def test_later_releases_of_one_architecture_have_its_size(cat, release, predecessor):
    # read from their own config.json files; published as the same architecture as the predecessor
    new, old = cat.model(release), cat.model(predecessor)
    assert new.id != old.id
    assert new.params_total == pytest.approx(old.params_total, rel=0.01)
    assert new.params_active == pytest.approx(old.params_active, rel=0.01)
    assert new.kv_bytes_per_token("bf16") == old.kv_bytes_per_token("bf16")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nvidia/DeepSeek-R1-0528-FP4", "deepseek-ai/DeepSeek-R1"),
        ("openai/gpt-oss-120b-MXFP4", "openai/gpt-oss-120b"),
        ("Qwen/Qwen3-32B-AWQ", "Qwen/Qwen3-32B"),
        ("Qwen/Qwen3-8B-FP8-Dynamic", "Qwen/Qwen3-8B"),
        ("Qwen/Qwen3-32B-FP8-Static-PerTensor", "Qwen/Qwen3-32B"),
        ("XiaomiMiMo/MiMo-7B-Base", "XiaomiMiMo/MiMo-7B-Base"),
        ("RedHatAI/Llama-3.1-8B-Instruct-W4A16", "meta-llama/Llama-3.1-8B"),
        ("zai-org/GLM-5.1-FP8", "zai-org/GLM-5.1"),
        ("Qwen/Qwen3.6-27B", "nvidia/Qwen3.6-27B-NVFP4"),
        ("moonshotai/Kimi-K2-Thinking", "moonshotai/Kimi-K2-Instruct"),
    ],
)
def test_checkpoint_names_resolve_to_their_architecture(cat, name, expected):
    assert cat.model(name).id == expected


@pytest.mark.parametrize(("model", "total_b", "active_b"), [("Qwen/Qwen3.5-122B-A10B", 122, 10), ("Qwen/Qwen3.5-27B", 27, None)])
def test_new_qwen35_sizes_match_their_names(cat, model, total_b, active_b):
    spec = cat.model(model)
    assert spec.params_total / 1e9 == pytest.approx(total_b, rel=0.02)
    if active_b is not None:
        assert spec.params_active / 1e9 == pytest.approx(active_b, rel=0.05)


def _nemotron_fields(cat, **update):
    return cat.model("nemotron-3-nano").model_dump() | update


def test_layers_need_a_mixer_or_an_mlp(cat):
    from gpuyield.core.catalog import ModelSpec

    spec = cat.model("nemotron-3-nano")
    moe_block = spec.layer_kinds.index("none")
    with pytest.raises(ValueError, match=f"layer {moe_block} has neither"):
        ModelSpec.model_validate(_nemotron_fields(cat, mlp_free_layers=(*spec.mlp_free_layers, moe_block)))
    with pytest.raises(ValueError, match="mlp_free_layers indices"):
        ModelSpec.model_validate(_nemotron_fields(cat, mlp_free_layers=(52,)))
    with pytest.raises(ValueError, match="linear_state_dtype"):
        ModelSpec.model_validate(_nemotron_fields(cat, linear_state_dtype="fp64"))
    llama = cat.model("meta-llama/Llama-3.1-8B").model_dump()
    with pytest.raises(ValueError, match="moe_latent_size needs"):
        ModelSpec.model_validate(llama | {"moe_latent_size": 1024})
    # a plain decoder: every layer a mixer and an MLP; dropping one layer's MLP takes its two matrices and its norm
    plain = ModelSpec.model_validate(llama)
    assert plain.num_sublayers == 64 and plain.layer_equivalents == 32
    cut = ModelSpec.model_validate(llama | {"mlp_free_layers": (0,)})
    assert plain.params_total - cut.params_total == 3 * 4096 * 14336 + 4096
    assert cut.num_sublayers == 63 and cut.num_dense_mlp_layers == 31
    # non-gated: up and down only
    relu2 = ModelSpec.model_validate(llama | {"mlp_gated": False})
    assert plain.params_total - relu2.params_total == 32 * 4096 * 14336


def test_compressed_attention_fields_are_checked(cat):
    from gpuyield.core.catalog import ModelSpec

    v4 = cat.model("deepseek-ai/DeepSeek-V4-Flash").model_dump()
    with pytest.raises(ValueError, match="need csa_compress_ratio"):
        ModelSpec.model_validate(v4 | {"index_topk": None})
    with pytest.raises(ValueError, match="need hca_compress_ratio"):
        ModelSpec.model_validate(v4 | {"hca_compress_ratio": None})
    with pytest.raises(ValueError, match="keep a sliding window"):  # Pro: no window-only layers
        ModelSpec.model_validate(cat.model("deepseek-ai/DeepSeek-V4-Pro").model_dump() | {"sliding_window": None})
    with pytest.raises(ValueError, match="go together"):
        ModelSpec.model_validate(v4 | {"o_groups": None})
    # K = V cached once: half the cache of the same heads with K and V apart
    llama = cat.model("meta-llama/Llama-3.1-8B").model_dump()
    shared = ModelSpec.model_validate(llama | {"kv_shared": True})
    assert shared.kv_bytes_per_token("bf16") * 2 == cat.model("meta-llama/Llama-3.1-8B").kv_bytes_per_token("bf16")



def test_every_model_spec_is_hashable_and_round_trips(cat):
    """Frozen specs stay usable as cache keys (alias_dtypes is stored as pairs), and a dump validates back equal."""
    from gpuyield.core.catalog import ModelSpec

    for spec in cat.models:
        assert isinstance(hash(spec), int)
        assert ModelSpec.model_validate(spec.model_dump()) == spec
    assert dict(cat.model("nvidia/Qwen3.6-27B-NVFP4").alias_dtypes) == {"Qwen/Qwen3.6-27B": "bf16"}


def test_nvfp4_release_weights_count_the_matrices_it_keeps_wider():
    from gpuyield.core.catalog.model import WEIGHT_PRECISIONS

    cat = default_catalog()
    r1 = cat.model("deepseek-ai/DeepSeek-R1")
    kept = dict(r1.nvfp4_kept)
    assert set(kept) == {"q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj"}
    plain = r1.model_copy(update={"nvfp4_kept": {}})
    wider = sum(g.params for g in r1.gemm_shapes if g.name in kept) * (2.0 - WEIGHT_PRECISIONS["nvfp4"])
    assert r1.weight_bytes("fp4") - plain.weight_bytes("fp4") == pytest.approx(wider)
    assert wider / 1e9 == pytest.approx(6.0, abs=0.2)  # the MLA projections: 4.2 B weights
    # other precisions are untouched; the entry's own fp4 checkpoint (Kimi-K2.6-NVFP4) counts it by default
    assert r1.weight_bytes("fp8") == plain.weight_bytes("fp8")
    k26 = cat.model("nvidia/Kimi-K2.6-NVFP4")
    assert k26.weight_bytes() == k26.weight_bytes("nvfp4") > k26.model_copy(update={"nvfp4_kept": {}}).weight_bytes()
    for bad in ("moe_expert", "expert_gate_up_proj", "router", "qkv_proj"):
        with pytest.raises(ValueError, match="not a non-expert matrix or group"):
            r1.model_copy(update={"nvfp4_kept": {bad: "bf16"}})
    # the LM head is 16-bit already: only a release that quantises it says so
    with pytest.raises(ValueError, match="lm_head: unknown dtype"):
        r1.model_copy(update={"nvfp4_kept": {"lm_head": "bf16"}})
    for dtype in ("fp6", "fp32", "mxfp4"):
        with pytest.raises(ValueError, match="unknown dtype"):
            r1.model_copy(update={"nvfp4_kept": {"attention": dtype}})


def test_kimi_int4_release_is_sized_with_its_group_32_scales():
    """Kimi-K2.5's routed experts are int4 with one bf16 scale per 32 weights (0.5625 bytes a weight) and
    everything else bf16: 594 GB, the published checkpoint's size; the generic int4 (AWQ/GPTQ, groups of 128
    with zero points) would say 550 GB."""
    m = default_catalog().model("moonshotai/Kimi-K2.5")
    assert m.native_dtype == "int4" and m.int4_group_size == 32
    assert m.weight_bytes() / 1e9 == pytest.approx(594.2, abs=0.5)
    assert m.model_copy(update={"int4_group_size": None}).weight_bytes() / 1e9 == pytest.approx(550.6, abs=0.5)
