"""Property tests for the architecture arithmetic over random (valid) configs."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from gpuyield.core.catalog import ModelSpec

AS_OF = dt.date(2026, 1, 1)


@st.composite
def specs(draw: st.DrawFn) -> ModelSpec:
    kv_heads = draw(st.sampled_from([1, 2, 4, 8]))
    heads = kv_heads * draw(st.sampled_from([1, 2, 4]))
    head_dim = draw(st.sampled_from([16, 32, 64, 128]))
    hidden = heads * head_dim * draw(st.sampled_from([1, 2]))
    layers = draw(st.integers(1, 12))
    fields: dict = {
        "id": "prop/model",
        "architecture": "llama",
        "num_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "intermediate_size": draw(st.integers(8, 1024)),
        "vocab_size": draw(st.integers(16, 5000)),
        "tie_word_embeddings": draw(st.booleans()),
        "max_position_embeddings": 4096,
        "source": "hypothesis",
        "as_of": AS_OF,
    }
    if draw(st.booleans()):
        experts = draw(st.integers(2, 16))
        fields.update(
            num_experts=experts,
            num_experts_per_tok=draw(st.integers(1, experts)),
            moe_intermediate_size=draw(st.integers(8, 512)),
            num_shared_experts=draw(st.integers(0, 2)),
            first_dense_layers=draw(st.integers(0, layers)),
        )
    pattern = draw(st.sampled_from([("full_attention",), ("sliding_attention", "full_attention")]))
    fields["layer_pattern"] = pattern
    if "sliding_attention" in pattern:
        fields["sliding_window"] = draw(st.integers(1, 512))
    return ModelSpec(**fields)


@settings(max_examples=60, deadline=None)
@given(specs())
def test_param_accounting(spec: ModelSpec) -> None:
    assert spec.params_total == sum(spec.param_breakdown().values())
    assert 0 < spec.params_active <= spec.params_total
    if spec.is_moe and spec.num_moe_layers and spec.num_experts_per_tok < spec.num_experts:
        assert spec.params_active < spec.params_total
    assert sum(g.params for g in spec.gemm_shapes) <= spec.params_total + spec.vocab_size * spec.hidden_size


@settings(max_examples=60, deadline=None)
@given(specs(), st.integers(1, 4000), st.integers(1, 4000))
def test_kv_monotone_in_context(spec: ModelSpec, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert spec.kv_bytes_for_context(lo) <= spec.kv_bytes_for_context(hi)
    # average bytes per token never grows with context (sliding layers saturate)
    assert spec.kv_bytes_per_token_at(hi) <= spec.kv_bytes_per_token_at(lo) + 1e-9
    assert spec.kv_bytes_per_token("fp8") * 2 == spec.kv_bytes_per_token("bf16")


@settings(max_examples=40, deadline=None)
@given(specs())
def test_weight_bytes_order_and_copy(spec: ModelSpec) -> None:
    assert spec.weight_bytes("fp8") < spec.weight_bytes("bf16") < spec.weight_bytes("fp32")
    # a MoE model's int4 release quantises only its routed experts (ModelSpec.bytes_per_weight_of): at most bf16
    # (equal when no layer holds experts), below fp8 only where the experts outweigh the rest, as in real MoE models
    assert spec.weight_bytes("int4") <= spec.weight_bytes("bf16")
    if not spec.is_moe:
        assert spec.weight_bytes("int4") < spec.weight_bytes("fp8")
    bigger = spec.model_copy(update={"num_layers": spec.num_layers + 1})
    assert bigger.params_total > spec.params_total
    assert bigger.kv_bytes_for_context(100) >= spec.kv_bytes_for_context(100)
