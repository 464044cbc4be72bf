"""PerfModel: monotonicity, breakdown, memory answers, parallelism and calibration handling."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf import Calibration, PerfModel, SpeculativeDecoding, default_calibration
from gpuyield.core.perf.calibration import LogCurve, calibration_from_dict, calibration_to_dict
from gpuyield.core.perf.model import OPS as OPS_NAMES
from gpuyield.errors import ConfigError

CAT = default_catalog()


def _dense(tp: int = 2) -> PerfModel:
    return PerfModel.build(CAT.model("Qwen/Qwen3-32B"), CAT.gpu("h100_sxm"), tp=tp)


def _moe() -> PerfModel:
    return PerfModel.build(
        CAT.model("deepseek-ai/DeepSeek-R1"),
        CAT.gpu("b200_sxm"),
        tp=8,
        ep=8,
        weight_precision="fp4",
        kv_dtype="fp8",
        engine="trtllm",
    )


MODELS = [
    _dense(),
    _moe(),
    PerfModel.build(
        CAT.model("Qwen/Qwen3.5-397B-A17B"),
        CAT.gpu("h200_sxm"),
        tp=8,
        ep=8,
        weight_precision="fp8",
        kv_dtype="fp8",
        engine="sglang",
    ),
    # Nemotron-H: one block a layer, Mamba2 state in fp32, latent MoE
    PerfModel.build(
        CAT.model("nemotron-3-super"), CAT.gpu("b200_sxm"), tp=4, ep=4, weight_precision="fp8", kv_dtype="fp8"
    ),
    # DeepSeek-V4: windows, compressed caches, top-k sparse attention, per-sequence decode compute
    PerfModel.build(
        CAT.model("deepseek-ai/DeepSeek-V4-Flash"), CAT.gpu("b200_sxm"), tp=4, weight_precision="fp4", kv_dtype="fp8",
        engine="sglang",
    ),
    # speculative decoding keeps the contract: monotone, breakdown = total (gpuyield.core.perf.speculative)
    _moe().with_speculative(SpeculativeDecoding("mtp", 3, 0.7)),
    _dense().with_speculative(SpeculativeDecoding("eagle", 16, 1.0)),
    _dense().with_speculative(SpeculativeDecoding("ngram", 2, 0.0)),
]

counts = st.integers(min_value=0, max_value=20000)


@settings(max_examples=150, deadline=None)
@given(
    idx=st.integers(0, len(MODELS) - 1),
    p=counts,
    d=st.integers(0, 2048),
    ctx=st.integers(1, 16384),
    dp=st.integers(0, 4096),
    dd=st.integers(0, 64),
    dctx=st.integers(0, 100000),
)
def test_step_time_never_decreases_when_any_count_grows(idx, p, d, ctx, dp, dd, dctx):
    m = MODELS[idx]
    a = p * (p / 2.0)
    base = m.step_time_s(p, a, d, d * ctx)
    # more prefill tokens (with their attention work), more decode sequences, more context
    p2 = p + dp
    assert m.step_time_s(p2, p2 * (p2 / 2.0), d, d * ctx) >= base - 1e-12
    assert m.step_time_s(p, a, d + dd, (d + dd) * ctx) >= base - 1e-12
    assert m.step_time_s(p, a, d, d * ctx + dctx) >= base - 1e-12


@settings(max_examples=60, deadline=None)
@given(idx=st.integers(0, len(MODELS) - 1), p=counts, d=st.integers(0, 1024), ctx=st.integers(1, 8192))
def test_breakdown_sums_to_total_and_matches_step_time(idx, p, d, ctx):
    m = MODELS[idx]
    bd = m.step_breakdown(p, p * p / 2.0, d, d * ctx)
    assert set(bd.ops) == set(OPS_NAMES)
    assert all(v >= 0 for v in bd.ops.values())
    assert math.isclose(sum(bd.ops.values()), bd.total_s, rel_tol=1e-9, abs_tol=1e-15)
    assert math.isclose(bd.total_s, m.step_time_s(p, p * p / 2.0, d, d * ctx), rel_tol=1e-12)


def test_empty_step_is_free_and_decode_is_affine_in_context():
    for m in (_dense(), MODELS[3], MODELS[4]):
        assert m.step_time_s(0, 0.0, 0, 0) == 0.0
        t1, t2, t3 = (m.step_time_s(0, 0.0, 32, s) for s in (10000, 20000, 30000))
        assert math.isclose(t2 - t1, t3 - t2, rel_tol=1e-9)
        # a mixed step too (the engine model's decode runs carry prefill chunks)
        t1, t2, t3 = (m.step_time_s(512, 512.0**2 / 2, 32, s) for s in (10000, 20000, 30000))
        assert math.isclose(t2 - t1, t3 - t2, rel_tol=1e-9)


def test_more_tensor_parallelism_is_faster_per_step_for_a_memory_bound_decode():
    assert _dense(8).step_time_s(0, 0.0, 8, 8000) < _dense(2).step_time_s(0, 0.0, 8, 8000)


def test_memory_plan_fits_and_counts():
    plan = _dense(2).memory(0.9)
    assert plan.fits and plan.reason == "ok"
    assert plan.weights_gb == pytest.approx(
        CAT.model("Qwen/Qwen3-32B").weight_bytes("bf16") / 2 / 1e9, rel=0.02
    )
    # 32.8 B params bf16 over 2 GPUs: ~32.8 GB each; KV = 0.9 * 80 - weights - reserve
    assert plan.gpu_memory_gb == pytest.approx(85.9, rel=1e-3)  # 80 GiB, as the device reports it
    assert plan.kv_gb == pytest.approx(0.9 * plan.gpu_memory_gb - plan.weights_gb - plan.runtime_reserve_gb, rel=1e-9)
    assert plan.kv_capacity_tokens == int(plan.kv_gb * 1e9 // plan.kv_bytes_per_token)
    assert plan.kv_capacity_blocks == plan.kv_capacity_tokens // plan.block_size_tokens
    n = plan.max_concurrent_seqs(2048)
    assert 0 < n <= plan.kv_capacity_tokens // 2048
    assert plan.max_concurrent_seqs(4096) <= n


def test_memory_does_not_fit_names_the_reason():
    plan = PerfModel.build(CAT.model("deepseek-ai/DeepSeek-R1"), CAT.gpu("h100_sxm"), tp=1).memory()
    assert not plan.fits
    assert "exceed" in plan.reason and "h100_sxm" in plan.reason
    assert plan.max_concurrent_seqs(1024) == 0


def test_memory_does_not_fit_one_sequence_of_max_model_len():
    m = PerfModel.build(CAT.model("Qwen/Qwen3-32B"), CAT.gpu("h100_sxm"), tp=1)
    plan = m.memory(0.9, max_model_len=4_000_000)
    assert not plan.fits and "max_model_len" in plan.reason


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"tp": 0}, "tp must be"),
        ({"weight_precision": "fp3"}, "weight precision"),
        ({"kv_dtype": "int3"}, "kv_dtype"),
        ({"pp": 1000}, "pp=1000"),
    ],
)
def test_bad_parameters_raise_config_errors(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        PerfModel.build(CAT.model("Qwen/Qwen3-32B"), CAT.gpu("h100_sxm"), **kwargs)


def test_expert_parallelism_must_divide_the_stage():
    with pytest.raises(ConfigError, match="ep=3"):
        PerfModel.build(CAT.model("deepseek-ai/DeepSeek-R1"), CAT.gpu("b200_sxm"), tp=8, ep=3)


def test_out_of_range_lookup_is_reported_not_silent():
    m = _dense()
    lo, hi = m.gpu_coeffs.gemm_curve(m.compute_dtype).xs[0], m.gpu_coeffs.gemm_curve(m.compute_dtype).xs[-1]
    big = int(hi * 4)
    bd = m.step_breakdown(big, big * big / 2.0, 0, 0)
    assert bd.out_of_range and "outside measured" in bd.out_of_range[0]
    assert not m.step_breakdown(int(max(lo, 64)), 100.0, 0, 0).out_of_range


def test_shipped_calibration_covers_the_measured_gpus_and_engines():
    cal = default_calibration()
    for gid in ("h100_sxm", "h200_sxm", "b200_sxm", "gb200"):
        assert cal.has_gpu(gid)
        g = cal.gpu(gid)
        assert 0.3 < g.mem_bw_eff <= 1.0 and "bf16" in g.gemm_eff
    for eng in ("vllm", "sglang", "trtllm"):
        assert eng in cal.engines
    assert cal.sources


def test_calibration_round_trips_and_validates():
    cal = default_calibration()
    again = calibration_from_dict(calibration_to_dict(cal))
    assert calibration_to_dict(again) == calibration_to_dict(cal)
    with pytest.raises(ConfigError, match="mem_bw_eff"):
        calibration_from_dict({"gpus": {"x": {"mem_bw_eff": 7}}})
    with pytest.raises(ConfigError, match="unknown field"):
        calibration_from_dict({"engines": {"vllm": {"bogus": 1}}})
    with pytest.raises(ConfigError, match="schema"):
        calibration_from_dict({"schema": "other/9"})


def test_unknown_gpu_uses_generic_coefficients_and_says_so():
    m = PerfModel.build(CAT.model("Qwen/Qwen3-32B"), CAT.gpu("h100_sxm"), tp=2, calibration=Calibration())
    assert any("generic" in n for n in m.notes)
    assert m.step_time_s(0, 0.0, 1, 1000) > 0


def test_log_curve_interpolates_in_log_space_and_clamps():
    c = LogCurve((1.0, 4.0), (0.0, 1.0))
    assert c(2.0) == pytest.approx(0.5)
    assert c(0.5) == 0.0 and c(100.0) == 1.0
    assert not c.in_range(100.0)
    with pytest.raises(ConfigError):
        LogCurve((2.0, 1.0), (0.0, 1.0))


def test_kv_memory_basis_free_sizes_the_cache_from_memory_left_after_weights():
    """TensorRT-LLM / SGLang semantics: the fraction applies to (capacity - weights - reserve)."""
    m, g = CAT.model("deepseek-ai/DeepSeek-R1"), CAT.gpu("b200_sxm")
    vllm = PerfModel.build(m, g, tp=4, weight_precision="fp8", kv_dtype="fp8", engine="vllm").memory(0.9)
    trt = PerfModel.build(m, g, tp=4, weight_precision="fp8", kv_dtype="fp8", engine="trtllm").memory(0.9)
    assert trt.kv_gb == pytest.approx(
        0.9 * (trt.gpu_memory_gb - trt.weights_gb - trt.runtime_reserve_gb), rel=1e-9
    )
    # 671 B fp8 weights on 4 x 180 GiB: the free-memory fraction leaves several times more KV than 0.9 x total
    assert trt.kv_gb > 3 * vllm.kv_gb > 0


def test_kv_memory_basis_is_validated_when_loaded():
    d = calibration_to_dict(default_calibration())
    d["engines"]["vllm"]["kv_memory_basis"] = "most"
    with pytest.raises(ConfigError, match="kv_memory_basis"):
        calibration_from_dict(d)


def test_tp_all_reduce_stays_on_the_scale_up_link_when_only_the_expert_stage_spans_nodes():
    """tp4 x attention-DP 4 = 16 GPUs: the all-reduce runs in 4-GPU groups (NVLink), only the expert
    all-to-all crosses nodes; so the TP comm time equals that of the same tp4 group without DP ranks."""
    m, g = CAT.model("moonshotai/Kimi-K2.5"), CAT.gpu("b200_sxm")
    wide = PerfModel.build(m, g, tp=4, attention_dp=4, ep=16, weight_precision="fp4", kv_dtype="fp8")
    narrow = PerfModel.build(m, g, tp=4, attention_dp=1, ep=4, weight_precision="fp4", kv_dtype="fp8")
    # same tokens per attention-DP rank -> the same all-reduce
    w = wide.step_breakdown(4096, 4096.0**2 / 2, 0, 0).ops["comm_tp"]
    n = narrow.step_breakdown(1024, 1024.0**2 / 2, 0, 0).ops["comm_tp"]
    assert w == pytest.approx(n, rel=1e-9)
    # only attention-DP ranks, which hold different tokens, dispatch to the experts over an all-to-all (across
    # nodes here); a plain TP group holds every token, and its MLP all-reduce combines the experts' outputs
    # (vLLM's and SGLang's expert parallelism without DP attention)
    assert wide.step_breakdown(4096, 0.0, 0, 0).ops["comm_ep"] > 0
    assert narrow.step_breakdown(1024, 0.0, 0, 0).ops["comm_ep"] == 0
    assert narrow._c.n_allreduce == 2 * m.num_layers


def test_moe_layer_overhead_lands_on_moe_models_only():
    import dataclasses

    base = default_calibration()
    eng = base.engine("sglang")
    bumped = dataclasses.replace(
        base, engines={**base.engines, "sglang": dataclasses.replace(eng, moe_layer_overhead_s=eng.moe_layer_overhead_s + 1e-4)}
    )

    def overhead(c: Calibration, model: str, **kw: object) -> float:
        pm = PerfModel.build(CAT.model(model), CAT.gpu("h200_sxm"), engine="sglang", calibration=c, **kw)  # type: ignore[arg-type]
        return pm.step_breakdown(0, 0.0, 4, 4000).ops["overhead"]

    moe = CAT.model("deepseek-ai/DeepSeek-R1")
    grow = overhead(bumped, "deepseek-ai/DeepSeek-R1", tp=8, weight_precision="fp8") - overhead(
        base, "deepseek-ai/DeepSeek-R1", tp=8, weight_precision="fp8"
    )
    assert grow == pytest.approx(1e-4 * moe.num_moe_layers)
    assert overhead(bumped, "Qwen/Qwen3-32B", tp=2) == pytest.approx(overhead(base, "Qwen/Qwen3-32B", tp=2))


def test_full_attention_layers_shaped_apart_size_the_cache_and_the_attention_time():
    """Gemma 4: the cache that grows comes from the 5 full layers' own shape (2 KV heads x 512), the bounded
    part from the 25 sliding layers (8 KV heads x 256), each split over the GPUs its own KV heads allow."""
    spec = CAT.model("google/gemma-4-26B-A4B")
    one = PerfModel.build(spec, CAT.gpu("h100_sxm"), tp=1).memory(0.9, max_model_len=32768)
    assert one.kv_bytes_per_token == spec.kv_bytes_per_token("bf16") == 5 * 2 * 512 * 2 * 2
    assert one.kv_bytes_fixed_per_seq == spec.kv_bytes_fixed_per_sequence("bf16")
    four = PerfModel.build(spec, CAT.gpu("h100_sxm"), tp=4).memory(0.9, max_model_len=32768)
    assert four.kv_bytes_per_token == one.kv_bytes_per_token / 2  # 2 full-layer KV heads: replicated beyond tp=2
    assert four.kv_bytes_fixed_per_seq == one.kv_bytes_fixed_per_seq / 4  # 8 sliding-layer KV heads
    # against the same model with every layer at the sliding shape: the full layers' cache is half as wide
    # (2 x 512 against 8 x 256 elements per K or V), so long decodes read less, but their 512-wide heads do twice
    # the attention arithmetic, so a long prompt's prefill takes longer
    plain = spec.model_copy(
        update={"full_attention_head_dim": None, "full_attention_kv_heads": None, "full_attention_k_eq_v": False}
    )
    real, same = (PerfModel.build(m, CAT.gpu("h100_sxm"), tp=1) for m in (spec, plain))
    assert real.step_time_s(0, 0.0, 64, 64 * 32768) < same.step_time_s(0, 0.0, 64, 64 * 32768)
    prompt = 32768
    assert real.step_time_s(prompt, prompt * prompt / 2, 0, 0) > same.step_time_s(prompt, prompt * prompt / 2, 0, 0)


def test_a_sequence_fills_its_windows_only_as_far_as_it_is_long():
    """Sliding windows hold min(length, window) tokens (vLLM's hybrid KV manager frees the rest); linear-attention
    state is held whole from the first token."""
    gemma = PerfModel.build(CAT.model("google/gemma-4-26B-A4B"), CAT.gpu("h100_sxm"), tp=1).memory(0.9, 32768)
    full = gemma.fixed_tokens_per_seq
    assert gemma.sliding_window_tokens == 1024 and full > 0
    assert gemma.fixed_tokens_for(4096) == pytest.approx(full) == gemma.fixed_tokens_for(1024)
    assert gemma.fixed_tokens_for(512) == pytest.approx(full / 2)
    assert gemma.fixed_blocks_for(512, 16) < gemma.fixed_blocks_for(4096, 16) == gemma.fixed_blocks_per_seq(16)
    # so more short sequences fit than long ones, by more than their own tokens account for
    assert gemma.max_concurrent_seqs(512) > 2 * gemma.max_concurrent_seqs(4096)
    qwen_pm = PerfModel.build(CAT.model("Qwen/Qwen3.5-397B-A17B"), CAT.gpu("h200_sxm"), tp=8, engine="sglang")
    qwen = qwen_pm.memory(0.9, 32768)
    assert qwen.sliding_window_tokens == 0 and qwen.fixed_tokens_per_seq > 0
    assert qwen.fixed_tokens_for(16) == pytest.approx(qwen.fixed_tokens_per_seq)
    # vLLM also rounds the growing cache up to its raised hybrid block: one Gated DeltaNet layer's fp32 state
    # (mamba_ssm_dtype) on one of 8 GPUs is 8 x 128 x 128 x 4 + conv = 540,672 bytes; one full layer's bf16 KV a
    # token 2 x 256 x 2 x 2 / 2 (2 KV heads over 8 GPUs) = 1,024 bytes: 528 tokens
    paged = PerfModel.build(qwen_pm.model, CAT.gpu("h200_sxm"), tp=8, engine="vllm").memory(0.9, 32768)
    assert paged.hybrid_block_tokens == 528
    assert paged.fixed_tokens_for(16) == pytest.approx(paged.fixed_tokens_per_seq + 528 - 16)


def test_nemotron_h_blocks_count_one_all_reduce_each_and_dispatch_the_latent():
    """Each Nemotron-H block is one residual branch: one all-reduce under TP (a plain decoder layer has two), and the
    per-layer overheads count layer equivalents (blocks / 2). Latent MoE sends the 1,024-wide latent to the experts,
    not the 4,096-wide hidden state. The Mamba2 state (fp32) is held per sequence, split over the Mamba heads."""
    spec = CAT.model("nemotron-3-super")
    pm = PerfModel.build(spec, CAT.gpu("b200_sxm"), tp=4, attention_dp=2, ep=8, weight_precision="fp8")
    assert pm._c.n_allreduce == spec.num_sublayers == 88
    flat = spec.model_copy(update={"moe_latent_size": None})
    wide = PerfModel.build(flat, CAT.gpu("b200_sxm"), tp=4, attention_dp=2, ep=8, weight_precision="fp8")
    assert pm._c.a2a_bytes_per_tok == pytest.approx(wide._c.a2a_bytes_per_tok * 1024 / 4096)
    assert pm.step_breakdown(0, 0.0, 64, 64 * 2048).ops["comm_ep"] < wide.step_breakdown(0, 0.0, 64, 64 * 2048).ops["comm_ep"]
    eng = pm.engine_coeffs
    assert pm.first_token_overhead_s == pytest.approx(eng.ttft_overhead_s + eng.ttft_per_layer_s * 44)
    # the latent projections are replicated on every GPU in 16 bits: w(tp) = rest / tp + latent
    latent = sum(g.params for g in spec.gemm_shapes if g.group == "moe_latent") * 2.0
    assert latent == 2 * 40 * 1024 * 4096 * 2.0
    w = {tp: PerfModel.build(spec, CAT.gpu("b200_sxm"), tp=tp, weight_precision="fp8").weights_bytes_per_gpu() for tp in (2, 4)}
    assert 2 * w[4] - w[2] == pytest.approx(latent)
    # an MTP drafter pass runs one of Super's 44 layer equivalents (its attention + MoE blocks), not one of 88 blocks
    spec_pm = pm.with_speculative(SpeculativeDecoding("mtp", 3, 0.7))
    assert spec_pm.notes[-1].endswith("about 1 of 44 layers)")
    # SGLang holds the exact state (vLLM pages it: test_vllm_pages_hybrid_models_as_its_hybrid_kv_manager_does)
    mem = PerfModel.build(spec, CAT.gpu("b200_sxm"), tp=4, weight_precision="fp8", engine="sglang").memory(0.9, 8192)
    assert mem.kv_bytes_fixed_per_seq == pytest.approx(spec.linear_state_bytes_per_sequence() / 4)
    assert spec.linear_state_bytes_per_sequence() == pytest.approx(
        40 * (128 * 64 * 128 * 4 + (8192 + 2 * 8 * 128) * 3 * 2)
    )


def test_deepseek_v4_reads_a_compressed_cache_and_a_fixed_sparse_set():
    """A DeepSeek-V4 decode reads every layer's window and each CSA layer's top-k entries whatever the context, and
    per context token only the compressed entries: so its decode attention grows far slower with context than
    DeepSeek-V3's, and its cache holds 20x more tokens. Its one shared KV head is not split by tensor parallelism
    while its 64 query heads are, so the fixed part is compute-bound on one GPU and memory-bound on four."""
    v4 = PerfModel.build(
        CAT.model("deepseek-ai/DeepSeek-V4-Flash"), CAT.gpu("b200_sxm"), tp=4, weight_precision="fp4", kv_dtype="fp8"
    )
    v3 = PerfModel.build(
        CAT.model("deepseek-ai/DeepSeek-V3"), CAT.gpu("b200_sxm"), tp=4, weight_precision="fp4", kv_dtype="fp8"
    )
    c4 = v4._c
    assert c4.attn_decode_s_per_seq > c4.attn_decode_flops_s_per_seq > 0
    one = PerfModel.build(v4.model, CAT.gpu("b200_sxm"), tp=1, attention_dp=4, ep=4, weight_precision="fp4", kv_dtype="fp8")
    assert one._c.attn_decode_flops_s_per_seq > one._c.attn_decode_s_per_seq
    assert v3._c.attn_decode_flops_s_per_seq == 0.0  # no such term for other models
    short = v4.step_breakdown(0, 0.0, 32, 32 * 4096).ops["attn_decode"]
    long = v4.step_breakdown(0, 0.0, 32, 32 * 131072).ops["attn_decode"]
    v3_short = v3.step_breakdown(0, 0.0, 32, 32 * 4096).ops["attn_decode"]
    v3_long = v3.step_breakdown(0, 0.0, 32, 32 * 131072).ops["attn_decode"]
    assert long < v3_long / 10 and short < v3_short / 5
    assert long / short < v3_long / v3_short  # the fixed window and top-k share does not grow
    spec = v4.model
    # per context token a decode reads the CSA indexer keys and HCA entries, not every stored entry
    attn_bw = v4._c.bw * v4.gpu_coeffs.attn_decode_bw_eff
    assert c4.attn_decode_bytes_s_per_ctx == pytest.approx(spec.compressed_read_bytes_per_token("fp8") / attn_bw)
    # the indexer runs whole on every TP rank (SGLang duplicates it); the HCA attention splits by heads
    eight = PerfModel.build(spec, CAT.gpu("b200_sxm"), tp=8, weight_precision="fp4", kv_dtype="fp8")
    peak = v4._c.peak_attn * v4._c.attn_prefill_eff
    idx = 2.0 * 64 * 128 / 4 * 21
    hca = 2.0 * 64 * 1024 / 128 * 20
    assert c4.attn_decode_flops_s_per_ctx * peak == pytest.approx(idx + hca / 4)
    assert eight._c.attn_decode_flops_s_per_ctx * peak == pytest.approx(idx + hca / 8)
    # replicated matrices are held whole on every GPU: w(tp) = sharded / tp + replicated
    w = {tp: PerfModel.build(spec, CAT.gpu("b200_sxm"), tp=tp, weight_precision="fp8").weights_bytes_per_gpu() for tp in (4, 8)}
    rep = sum(g.params * (2.0 if g.precision == "bf16" else 1.0) for g in spec.gemm_shapes if g.replicated)
    assert 2 * w[8] - w[4] == pytest.approx(rep)
    mem = v4.memory(0.9, max_model_len=131072)
    assert mem.kv_bytes_per_token == pytest.approx(spec.kv_bytes_per_token("fp8"))  # one KV head: not split by TP
    assert mem.kv_bytes_fixed_per_seq == pytest.approx(spec.kv_bytes_fixed_per_sequence("fp8"))
    assert mem.kv_capacity_tokens > 15 * v3.memory(0.9, max_model_len=131072).kv_capacity_tokens



def test_vllm_pages_hybrid_models_as_its_hybrid_kv_manager_does():
    """vLLM raises the attention block size until one page holds a Mamba layer's state (Nemotron-3 Nano on one
    H100: 2,096 tokens of 1,024 bytes >= 2,134,016 bytes), pads the 23 Mamba layers to groups of the 6 attention
    layers (24) and, with prefix caching (its default), holds two state pages a layer; SGLang keeps the exact state."""
    spec = CAT.model("nemotron-3-nano")
    vllm = PerfModel.build(spec, CAT.gpu("h100_sxm"), tp=1, engine="vllm")
    on = vllm.memory(0.9, max_model_len=8192)
    off = vllm.memory(0.9, max_model_len=8192, prefix_caching=False)
    assert on.hybrid_block_tokens == off.hybrid_block_tokens == 2096
    page = 2096 * 2 * 128 * 2 * 2  # one attention layer's KV for a block: 2 KV heads x 128 x (K, V) x 2 bytes
    assert on.kv_bytes_fixed_per_seq == 24 * 2 * page and off.kv_bytes_fixed_per_seq == 24 * page
    # a 1,000-token sequence holds a whole 2,096-token block of every attention layer
    assert off.fixed_tokens_for(1000) == pytest.approx(24 * page / off.kv_bytes_per_token + 1096)
    assert off.fixed_tokens_for(2096) == pytest.approx(24 * page / off.kv_bytes_per_token)
    assert on.max_concurrent_seqs(2048) < off.max_concurrent_seqs(2048)
    # speculative decoding: one more state page a layer per draft token
    mtp = vllm.with_speculative(SpeculativeDecoding("eagle", 3, 0.7)).memory(0.9, 8192, prefix_caching=False)
    assert mtp.kv_bytes_fixed_per_seq == 24 * 4 * page
    # an MLA hybrid (Kimi-K3 on 16 GB300): MLA blocks align to 128 tokens; its 576-byte fp8 latent replicated on
    # every rank, one KDA layer's state (6 of 96 heads) 400 KB: 768-token blocks; 69 KDA layers padded to 72
    k3 = PerfModel.build(CAT.model("moonshotai/Kimi-K3"), CAT.gpu("gb300"), tp=16, weight_precision="fp4", kv_dtype="fp8")
    k3_mem = k3.memory(0.9, 8192)
    assert k3_mem.hybrid_block_tokens == 768 and k3_mem.kv_bytes_fixed_per_seq == 72 * 2 * 768 * 576
    sglang = PerfModel.build(spec, CAT.gpu("h100_sxm"), tp=1, engine="sglang").memory(0.9, max_model_len=8192)
    assert sglang.hybrid_block_tokens == 0
    assert sglang.kv_bytes_fixed_per_seq == pytest.approx(spec.linear_state_bytes_per_sequence())


def test_an_nvfp4_release_charges_the_matrices_it_keeps_wider_in_memory_and_step_time():
    """NVIDIA's NVFP4 DeepSeek exports keep the MLA down/up projections in bf16 (``nvfp4_kept``): at fp4 a GPU holds
    and reads them at 2 bytes, at fp8 nothing changes."""
    r1 = CAT.model("deepseek-ai/DeepSeek-R1")
    plain = r1.model_copy(update={"nvfp4_kept": {}})
    b200 = CAT.gpu("b200_sxm")
    kept, bare = (PerfModel.build(m, b200, tp=4, ep=4, weight_precision="fp4", kv_dtype="fp8") for m in (r1, plain))
    mla = sum(g.params for g in r1.gemm_shapes if g.name in dict(r1.nvfp4_kept))
    assert kept.weights_bytes_per_gpu() - bare.weights_bytes_per_gpu() == pytest.approx(
        mla * (2.0 - (0.5 + 1 / 16)) / 4
    )
    # a small decode batch reads weights: the step is slower by about the extra bytes over the bandwidth
    extra_s = mla * (2.0 - (0.5 + 1 / 16)) / 4 / (b200.memory_bandwidth_tb_s * 1e12)
    slower = kept.step_time_s(0, 0.0, 8, 8 * 2048) - bare.step_time_s(0, 0.0, 8, 8 * 2048)
    assert 0.5 * extra_s < slower < 1.5 * extra_s
    fp8 = [PerfModel.build(m, b200, tp=8, weight_precision="fp8") for m in (r1, plain)]
    assert fp8[0].weights_bytes_per_gpu() == fp8[1].weights_bytes_per_gpu()
    assert fp8[0].step_time_s(0, 0.0, 8, 8 * 2048) == fp8[1].step_time_s(0, 0.0, 8, 8 * 2048)


def test_an_nvfp4_release_that_quantises_its_lm_head_reads_it_at_4_bits():
    """nvidia/Qwen3.6-27B-NVFP4 holds its LM head in W4A16 NVFP4 (``nvfp4_kept: {lm_head: nvfp4}``): a decode step
    reads it at 0.5625 bytes a weight, memory holds it so, and the notes say so."""
    q = CAT.model("nvidia/Qwen3.6-27B-NVFP4")
    wide = q.model_copy(update={"nvfp4_kept": {k: v for k, v in q.nvfp4_kept if k != "lm_head"}})
    gpu = CAT.gpu("b200_sxm")
    four, sixteen = (PerfModel.build(m, gpu, tp=1, weight_precision="nvfp4", kv_dtype="fp8") for m in (q, wide))
    head = q.vocab_size * q.hidden_size * (2.0 - 0.5625)
    assert sixteen.weights_bytes_per_gpu() - four.weights_bytes_per_gpu() == pytest.approx(head)
    t4, t16 = (pm.step_breakdown(0, 0.0, 1, 2048).ops["lm_head"] for pm in (four, sixteen))
    assert t4 == pytest.approx(t16 * 0.5625 / 2.0, rel=0.05)
    assert any("quantises its LM head to nvfp4" in n for n in four.notes)
    assert not any("lm_head nvfp4 (not 4-bit)" in n for n in four.notes)


def test_an_mxfp4_checkpoint_keeps_all_but_its_routed_experts_in_16_bits():
    """gpt-oss and Kimi-K3 quantise only the routed experts (K3's quantisation ignores self_attn, shared_experts and
    mlp): at a 4-bit deployment the rest is charged 16-bit; at fp8 everything is fp8."""
    k3 = CAT.model("moonshotai/Kimi-K3")
    pm = PerfModel.build(k3, CAT.gpu("b200_sxm"), tp=8, weight_precision="mxfp4")
    rest = sum(g.params for g in k3.gemm_shapes if g.group in ("attention", "mlp", "moe_shared") and g.precision is None)
    fp8 = PerfModel.build(k3, CAT.gpu("b200_sxm"), tp=8, weight_precision="fp8")
    experts = sum(g.params for g in k3.gemm_shapes if g.group == "moe_expert")
    # mxfp4 vs fp8: the experts drop from 1 byte to 0.53, the rest rises from 1 to 2
    diff = fp8.weights_bytes_per_gpu() - pm.weights_bytes_per_gpu()
    assert diff == pytest.approx((experts * (1.0 - (0.5 + 1 / 32)) - rest * 1.0) / 8)
    # the catalogue's sizes follow the same rule (ModelSpec.bytes_per_weight_of): the checkpoint as shipped is
    # its mxfp4 deployment, and at fp8 the rest drops from 2 bytes to 1 while the experts rise to 1
    assert k3.weight_bytes() == k3.weight_bytes("mxfp4")
    assert k3.weight_bytes("fp8") - k3.weight_bytes() == pytest.approx(experts * (1.0 - (0.5 + 1 / 32)) - rest * 1.0)
    assert pm.weights_bytes_per_gpu() == pytest.approx(
        sum(g.params * k3.bytes_per_weight_of(g, "mxfp4") / (1 if g.replicated else 8) for g in k3.gemm_shapes)
        + k3.vocab_size * k3.hidden_size * 2.0 / 8
    )
    gpt = CAT.model("openai/gpt-oss-120b")
    assert gpt.weight_bytes() / 1e9 == pytest.approx(65.2, abs=0.1)  # the published checkpoint's size



def test_each_matrix_multiplies_in_the_dtype_it_is_held_in():
    """A 4-bit release's bf16 matrices run bf16 GEMMs; MXFP4 experts are weight-only (W4A16) except on TensorRT-LLM on
    FP4 GPUs (W4A8: MXFP4 x MXFP8, as AIConfigurator models gpt-oss on Blackwell); NVFP4 off FP4 GPUs is W4A16."""
    from gpuyield.core.perf.model import compute_dtype_for, matrix_compute_dtype

    b200, h100 = CAT.gpu("b200_sxm"), CAT.gpu("h100_sxm")
    assert compute_dtype_for("nvfp4", b200) == "fp4" and compute_dtype_for("nvfp4", h100) == "bf16"
    assert compute_dtype_for("fp8", h100) == "fp8" and compute_dtype_for("int4", b200) == "bf16"
    assert matrix_compute_dtype("fp4", b200, mxfp4=True) == "bf16"
    assert matrix_compute_dtype("fp4", b200, mxfp4=True, mxfp4_activation="fp8") == "fp8"
    assert matrix_compute_dtype("fp4", h100, mxfp4=True, mxfp4_activation="fp8") == "bf16"
    gpt = CAT.model("openai/gpt-oss-120b")
    experts = next(g for g in gpt.gemm_shapes if g.group == "moe_expert")
    attn = next(g for g in gpt.gemm_shapes if g.group == "attention")
    assert (gpt.weight_dtype_of(experts, "fp4"), gpt.weight_dtype_of(attn, "fp4")) == ("fp4", "bf16")
    # the engines' defaults: TensorRT-LLM promotes gpt-oss's experts to fp8 activations on Blackwell only
    cal = default_calibration()
    assert cal.engine("trtllm").mxfp4_activation_dtype == "fp8" and cal.engine("vllm").mxfp4_activation_dtype == "bf16"

    def experts_s(gpu: str, engine: str, precision: str) -> float:  # a compute-bound expert prefill
        pm = PerfModel.build(gpt, CAT.gpu(gpu), tp=1, weight_precision=precision, engine=engine)
        return pm.step_breakdown(65536, 65536**2 / 2, 0, 0).ops["moe"]

    # gpt-oss's 4-bit experts compute like bf16 weights in vLLM and SGLang everywhere, like fp8 weights in
    # TensorRT-LLM on B200 and like bf16 ones on H100 (no FP4 tensor cores)
    for gpu, engine, like in (("b200_sxm", "vllm", "bf16"), ("h100_sxm", "vllm", "bf16"), ("b200_sxm", "sglang", "bf16"),
                              ("b200_sxm", "trtllm", "fp8"), ("h100_sxm", "trtllm", "bf16")):  # fmt: skip
        assert experts_s(gpu, engine, "fp4") == pytest.approx(experts_s(gpu, engine, like), rel=1e-9)
    assert experts_s("b200_sxm", "trtllm", "fp4") != pytest.approx(experts_s("b200_sxm", "trtllm", "bf16"), rel=0.05)
    # DeepSeek-R1's NVFP4 release keeps its MLA projections bf16: they run at the bf16 peak, the experts at fp4's
    r1 = CAT.model("deepseek-ai/DeepSeek-R1")
    plain = r1.model_copy(update={"nvfp4_kept": {}})
    kept, bare = (PerfModel.build(m, b200, tp=8, ep=8, weight_precision="fp4") for m in (r1, plain))
    gk, gb = (pm.step_breakdown(8192, 8192**2 / 2, 0, 0).ops["gemm"] for pm in (kept, bare))
    assert gk > 1.25 * gb
    assert kept.step_breakdown(8192, 8192**2 / 2, 0, 0).ops["moe"] == pytest.approx(
        bare.step_breakdown(8192, 8192**2 / 2, 0, 0).ops["moe"]
    )


def test_the_lm_head_and_the_range_check_follow_the_matrices_own_dtypes():
    """An NVFP4 LM head (Qwen3.6) multiplies at fp4, a 16-bit one at bf16 in the same fp4 deployment; the
    out-of-range check looks up the table the dense matrices use (gpt-oss's bf16 attention on B300: from 512)."""
    q = CAT.model("nvidia/Qwen3.6-27B-NVFP4")
    wide = q.model_copy(update={"nvfp4_kept": {k: v for k, v in q.nvfp4_kept if k != "lm_head"}})
    b200 = CAT.gpu("b200_sxm")
    four, sixteen = (PerfModel.build(m, b200, tp=1, weight_precision="nvfp4", kv_dtype="fp8") for m in (q, wide))
    t4, t16 = (pm.step_breakdown(0, 0.0, 4096, 4096 * 64).ops["lm_head"] for pm in (four, sixteen))  # compute-bound
    assert t16 > 1.5 * t4
    gpt = PerfModel.build(CAT.model("openai/gpt-oss-120b"), CAT.gpu("b300_sxm"), tp=1, weight_precision="mxfp4")
    assert gpt.step_breakdown(600, 600 * 300, 0, 0).out_of_range == ()
    assert gpt.step_breakdown(100_000, 1e9, 0, 0).out_of_range == ("gemm tokens 100000 outside measured [512, 32768]",)


def test_mxfp4_activation_dtype_is_validated_when_loaded():
    d = calibration_to_dict(default_calibration())
    d["engines"]["trtllm"]["mxfp4_activation_dtype"] = "fp4"
    with pytest.raises(ConfigError, match="mxfp4_activation_dtype"):
        calibration_from_dict(d)


def test_a_gpu_without_a_published_tensor_rate_says_how_to_time_it() -> None:
    """The A10G's tensor throughput is not published: its step times are refused, naming the two ways in."""
    with pytest.raises(ConfigError, match=r"catalogue overlay \(--catalog FILE.*gpuyield profile --device cuda"):
        PerfModel.build(CAT.model("Qwen/Qwen3-8B"), CAT.gpu("a10g"), tp=1).step_time_s(512, 512**2 / 2, 0, 0)


def test_collective_table_interpolates_in_log_log_space_and_scales_past_its_largest_message():
    from gpuyield.core.perf.calibration import CollectiveTable

    t = CollectiveTable((1e3, 1e5, 1e7), (5e-6, 5e-6, 5e-4))
    assert t(10.0) == 5e-6  # a latency floor below the smallest message
    assert t(1e6) == pytest.approx(5e-5)  # halfway in log bytes between 5 us and 500 us: sqrt(5e-6 * 5e-4)
    assert t(4e7) == pytest.approx(2e-3) and not t.in_range(4e7) and t.in_range(1e7)  # bandwidth-bound beyond
    bad = (
        ((1e3, 1e2), (1e-6, 1e-6)),
        ((1e3,), (0.0,)),
        ((1e3, 1e4), (1e-6,)),
        ((1e3, float("nan")), (1e-6, 2e-6)),
        ((1e3, 1e4), (2e-6, 1e-6)),  # a larger message may not take less time
    )
    for args in bad:
        with pytest.raises(ConfigError):
            CollectiveTable(*args)
    # measured dips are taken out by the lower envelope: each size the least time at it or any larger size
    env = CollectiveTable.lower_envelope((1e3, 1e4, 1e5, 1e6), (4e-6, 9e-6, 6e-6, 2e-5))
    assert env.seconds == (4e-6, 6e-6, 6e-6, 2e-5)
    # between two group sizes: the log-space blend on the union of their sizes, up to the smaller largest one
    other = CollectiveTable((1e3, 1e5), (16e-6, 16e-6))
    mid = env.blend(other, 0.5)
    assert mid.sizes_bytes == (1e3, 1e4, 1e5)
    assert mid(1e3) == pytest.approx(8e-6) and mid(1e5) == pytest.approx((6e-6 * 16e-6) ** 0.5)
    import pickle

    assert pickle.loads(pickle.dumps(mid)) == mid


def _with_own_allreduce(
    cal: Calibration, gpu_id: str, tables: dict[str, Any], nccl: dict[str, Any] | None = None
) -> Calibration:
    """``cal`` with ``gpu_id``'s engine all-reduce tables replaced, and its NCCL tables (none by default: the
    step then falls back to the NCCL fit)."""
    d = calibration_to_dict(dataclasses.replace(cal, corrections=None))
    d["gpus"][gpu_id]["allreduce_tables"] = tables
    d["gpus"][gpu_id].pop("nccl_tables", None)
    if nccl is not None:
        d["gpus"][gpu_id]["nccl_tables"] = nccl
    return calibration_from_dict(d)


def test_a_tp_all_reduce_takes_the_engines_own_kernel_time_where_measured_else_the_nccl_fit():
    base = dataclasses.replace(default_calibration(), corrections=None)
    flat = {"bytes": [1e3, 1e9], "seconds": [3e-6, 3e-6]}  # 3 us at any size: easy to see in the step
    own = _with_own_allreduce(base, "h100_sxm", {"vllm": {2: flat, 8: {"bytes": [1e3, 1e9], "seconds": [12e-6, 12e-6]}}})
    qwen = CAT.model("Qwen/Qwen3-32B")

    def comm(cal: Calibration, tp: int, engine: str = "vllm") -> float:
        m = PerfModel.build(qwen, CAT.gpu("h100_sxm"), tp=tp, engine=engine, calibration=cal)
        return m.step_breakdown(0, 0.0, 8, 8000).ops["comm_tp"] / m.engine_coeffs.decode_scale

    n_ar = 2 * qwen.num_layers
    over = base.engine("vllm").allreduce_overhead_s
    assert comm(own, 2) == pytest.approx(n_ar * (3e-6 + over))
    # tp4 lies between the measured 2 and 8: interpolated in log space, sqrt(3 us * 12 us) = 6 us
    assert comm(own, 4) == pytest.approx(n_ar * (6e-6 + over))
    # another family, or a group larger than any measured, keeps the NCCL fit
    none = _with_own_allreduce(base, "h100_sxm", {})
    assert comm(own, 2, "sglang") == pytest.approx(comm(none, 2, "sglang"))
    assert PerfModel.build(qwen, CAT.gpu("h100_sxm"), tp=2, engine="sglang", calibration=none)._c.ar_table is None
    nccl = PerfModel.build(qwen, CAT.gpu("h100_sxm"), tp=16, calibration=own)
    assert nccl._c.ar_table is None
    # an overhead on top of every call, fitted by calibrate
    more = dataclasses.replace(own, engines={**own.engines, "vllm": dataclasses.replace(own.engine("vllm"), allreduce_overhead_s=over + 1e-5)})
    assert comm(more, 2) - comm(own, 2) == pytest.approx(n_ar * 1e-5)
    # the message is the step's tokens (per attention-DP rank) x hidden x 2 bytes: a table linear in the bytes
    slope = {"bytes": [1e3, 1e10], "seconds": [1e-7, 1.0]}  # 10 GB/s
    lin = _with_own_allreduce(base, "h100_sxm", {"vllm": {4: slope}})
    kimi = CAT.model("moonshotai/Kimi-K2.5")
    for adp in (1, 2):
        m = PerfModel.build(kimi, CAT.gpu("h100_sxm"), tp=4, attention_dp=adp, ep=4 * adp, weight_precision="fp4",
                            kv_dtype="fp8", calibration=lin)  # fmt: skip
        got = m.step_breakdown(0, 0.0, 512, 512 * 1000).ops["comm_tp"] / m.engine_coeffs.decode_scale
        one = 512 / adp * kimi.hidden_size * 2 / 10e9 + m.engine_coeffs.allreduce_overhead_s
        assert got == pytest.approx(m._c.n_allreduce * one, rel=1e-9)
    # a deployment mode (disaggregated pools) reads its family's tables
    pool = PerfModel.build(qwen, CAT.gpu("h100_sxm"), tp=2, engine="vllm:disagg", calibration=own)
    assert pool._c.ar_table is not None and pool._c.ar_table(1e4) == pytest.approx(3e-6)
    # a group smaller than any measured one keeps the NCCL fit too
    only8 = _with_own_allreduce(base, "h100_sxm", {"vllm": {8: flat}})
    assert PerfModel.build(qwen, CAT.gpu("h100_sxm"), tp=4, calibration=only8)._c.ar_table is None
    # a message past the largest measured is scaled with its bytes and reported
    small = _with_own_allreduce(base, "h100_sxm", {"vllm": {2: {"bytes": [1e3, 1e6], "seconds": [3e-6, 9e-6]}}})
    m = PerfModel.build(qwen, CAT.gpu("h100_sxm"), tp=2, calibration=small)
    assert any("all-reduce message" in s for s in m.step_breakdown(4096, 4096.0**2 / 2, 0, 0).out_of_range)
    assert not any("all-reduce" in s for s in m.step_breakdown(0, 0.0, 8, 8000).out_of_range)


def test_own_allreduce_tables_round_trip_validate_and_leave_older_files_fingerprints_alone():
    from gpuyield.core.perf.calibration import coefficients_fingerprint

    gpu = dataclasses.replace(default_calibration().gpu("h100_sxm"), allreduce_tables={})
    d = calibration_to_dict(Calibration(gpus={"h100_sxm": gpu}, engines={"vllm": default_calibration().engine("vllm")}))
    assert "allreduce_tables" not in d["gpus"]["h100_sxm"]  # written as before the tables existed
    # a file written before the overhead (no key, or 0) has the fingerprint it had; a fitted overhead changes it
    older = json.loads(json.dumps(d))
    older["engines"]["vllm"].pop("allreduce_overhead_s")
    zero = json.loads(json.dumps(d))
    zero["engines"]["vllm"]["allreduce_overhead_s"] = 0
    fitted = json.loads(json.dumps(d))
    fitted["engines"]["vllm"]["allreduce_overhead_s"] = 8e-6
    before = coefficients_fingerprint(calibration_from_dict(older))
    assert coefficients_fingerprint(calibration_from_dict(zero)) == before
    assert coefficients_fingerprint(calibration_from_dict(fitted)) != before
    own = _with_own_allreduce(calibration_from_dict(zero), "h100_sxm",
                              {"trtllm": {4: {"bytes": [256, 1e6], "seconds": [3e-6, 2e-5]}}})  # fmt: skip
    for text in (json.dumps(calibration_to_dict(own)), yaml.safe_dump(calibration_to_dict(own))):
        again = calibration_from_dict(yaml.safe_load(text))  # JSON is YAML: the same group-size keys either way
        assert again.gpu("h100_sxm").allreduce_tables["trtllm"][4](1e6) == pytest.approx(2e-5)
        assert calibration_to_dict(again) == calibration_to_dict(own)
    assert coefficients_fingerprint(own) != before
    one = {"bytes": [1.0], "seconds": [1e-6]}
    for bad, msg in (
        ({"vllm": {1: one}}, "at least 2"),
        ({"vllm": {"two": one}}, "whole number"),
        ({"vllm": {"2.5": one}}, "whole number"),
        ({"vllm": {2: one, "2": one}}, "twice"),
        ({"vllm": {2: one}, "VLLM": {2: one}}, "twice"),
        ({"vlm": {2: one}}, "engine family"),
        ({"vllm": {2: {"bytes": [2.0, 1.0], "seconds": [1e-6, 1e-6]}}}, "ascending"),
        ({"vllm": {2: {"bytes": [1.0, 2.0], "seconds": [2e-6, 1e-6]}}}, "not decrease"),
        ({"vllm": {2: [1.0]}}, "bytes"),
        ({"vllm": [2]}, "group size"),
    ):
        with pytest.raises(ConfigError, match=msg):
            _with_own_allreduce(calibration_from_dict(zero), "h100_sxm", bad)


def test_without_an_engine_table_a_tp_all_reduce_takes_nccls_and_attention_dp_exchanges_tokens_by_gather():
    """The fallback chain of a tensor-parallel all-reduce is the engine's own kernel, NCCL's measured all-reduce,
    then the NCCL fit. Under attention DP inside a group NCCL measured, the expert token exchange is an all-gather
    before the experts and a reduce-scatter after them, of the whole gathered buffer (every token's bf16 vector
    of the dispatch width); wider groups keep the all-to-all bandwidth model."""
    base = dataclasses.replace(default_calibration(), corrections=None)
    qwen = CAT.model("Qwen/Qwen3-32B")
    flat = {"bytes": [1e3, 1e9], "seconds": [5e-6, 5e-6]}
    ar7 = {"bytes": [1e3, 1e9], "seconds": [7e-6, 7e-6]}
    cal = _with_own_allreduce(base, "h100_sxm", {"vllm": {2: flat}}, nccl={"all_reduce": {"2": ar7, "4": ar7}})
    over = cal.engine("sglang").allreduce_overhead_s

    def comm_tp(engine: str, tp: int) -> float:
        m = PerfModel.build(qwen, CAT.gpu("h100_sxm"), tp=tp, engine=engine, calibration=cal)
        return m.step_breakdown(0, 0.0, 8, 8000).ops["comm_tp"] / m.engine_coeffs.decode_scale

    n_ar = 2 * qwen.num_layers
    assert comm_tp("sglang", 2) == pytest.approx(n_ar * (7e-6 + over))  # no SGLang table: NCCL's
    assert comm_tp("vllm", 2) == pytest.approx(n_ar * (5e-6 + cal.engine("vllm").allreduce_overhead_s))
    assert comm_tp("vllm", 4) == pytest.approx(n_ar * (7e-6 + cal.engine("vllm").allreduce_overhead_s))
    assert PerfModel.build(qwen, CAT.gpu("h100_sxm"), tp=8, engine="sglang", calibration=cal)._c.ar_table is None
    # the expert exchange under attention DP: all-gather + reduce-scatter, linear tables easy to read
    gather = {"bytes": [1e3, 1e10], "seconds": [1e-7, 1.0]}  # 10 GB/s
    scatter = {"bytes": [1e3, 1e10], "seconds": [2e-7, 2.0]}  # 5 GB/s
    ds = CAT.model("deepseek-ai/DeepSeek-V3")
    ep_cal = _with_own_allreduce(base, "h100_sxm", {}, nccl={"all_gather": {"8": gather}, "reduce_scatter": {"8": scatter}})
    m = PerfModel.build(ds, CAT.gpu("h100_sxm"), tp=1, attention_dp=8, ep=8, weight_precision="fp8", kv_dtype="fp8",
                        calibration=ep_cal)  # fmt: skip
    assert m._c.ep_gather is not None and m._c.n_a2a == 2 * ds.num_moe_layers
    got = m.step_breakdown(0, 0.0, 256, 256 * 1000).ops["comm_ep"] / m.engine_coeffs.decode_scale
    nbytes = 256 * ds.hidden_size * 2.0
    pair = nbytes / 10e9 + nbytes / 5e9 + 2 * m.engine_coeffs.allreduce_overhead_s
    assert got == pytest.approx(ds.num_moe_layers * pair, rel=1e-9)
    # a group NCCL did not measure (16 GPUs), or a table missing one of the two ops: the bandwidth model
    wide = PerfModel.build(ds, CAT.gpu("h100_sxm"), tp=1, attention_dp=16, ep=16, weight_precision="fp8",
                           kv_dtype="fp8", calibration=ep_cal)  # fmt: skip
    assert wide._c.ep_gather is None and wide._c.n_a2a
    half = _with_own_allreduce(base, "h100_sxm", {}, nccl={"all_gather": {"8": gather}})
    m2 = PerfModel.build(ds, CAT.gpu("h100_sxm"), tp=1, attention_dp=8, ep=8, weight_precision="fp8", kv_dtype="fp8",
                         calibration=half)  # fmt: skip
    assert m2._c.ep_gather is None and m2._c.ep_scatter is None
    # attention TP inside the DP ranks (vLLM tp2 adp4): not the gather (AIConfigurator: custom all-reduce and NCCL
    # per group there); the bandwidth model stays
    tp2 = PerfModel.build(ds, CAT.gpu("h100_sxm"), tp=2, attention_dp=4, ep=8, weight_precision="fp8", kv_dtype="fp8",
                          calibration=ep_cal)  # fmt: skip
    assert tp2._c.n_a2a and tp2._c.ep_gather is None
    # no attention DP: no exchange (the MLP all-reduce combines the experts' outputs)
    assert PerfModel.build(ds, CAT.gpu("h100_sxm"), tp=8, ep=8, weight_precision="fp8", calibration=ep_cal)._c.n_a2a == 0
    # a gathered buffer past NCCL's largest message is scaled with its bytes and reported
    # a gathered buffer past either table's largest message is scaled with its bytes and reported
    short = {"bytes": [1e3, 1e6], "seconds": [1e-5, 2e-5]}
    for nccl in ({"all_gather": {"8": short}, "reduce_scatter": {"8": scatter}},
                 {"all_gather": {"8": gather}, "reduce_scatter": {"8": short}}):  # fmt: skip
        m3 = PerfModel.build(ds, CAT.gpu("h100_sxm"), tp=1, attention_dp=8, ep=8, weight_precision="fp8",
                             kv_dtype="fp8", calibration=_with_own_allreduce(base, "h100_sxm", {}, nccl=nccl))  # fmt: skip
        assert any("expert all-gather" in s for s in m3.step_breakdown(8192, 8192.0**2 / 2, 0, 0).out_of_range)
        assert not any("expert all-gather" in s for s in m3.step_breakdown(0, 0.0, 8, 8000).out_of_range)


def test_nccl_tables_round_trip_validate_and_a_file_without_them_keeps_its_fingerprint():
    from gpuyield.core.perf.calibration import coefficients_fingerprint

    gpu = dataclasses.replace(default_calibration().gpu("h100_sxm"), nccl_tables={})
    cal = Calibration(gpus={"h100_sxm": gpu}, engines={"vllm": default_calibration().engine("vllm")})
    d = calibration_to_dict(cal)
    assert "nccl_tables" not in d["gpus"]["h100_sxm"]
    before = coefficients_fingerprint(cal)
    t = {"bytes": [512, 1e6], "seconds": [1e-5, 3e-5]}
    t8 = {"bytes": [512, 1e6], "seconds": [4e-5, 12e-5]}
    with_t = _with_own_allreduce(cal, "h100_sxm", d["gpus"]["h100_sxm"].get("allreduce_tables", {}),
                                 nccl={"all_gather": {"4": t, "8": t8}, "reduce_scatter": {4: t}})  # fmt: skip
    assert coefficients_fingerprint(with_t) != before
    w = math.log(6 / 4) / math.log(8 / 4)  # 6 GPUs: the log-space blend of the 4- and 8-GPU tables
    for text in (json.dumps(calibration_to_dict(with_t)), yaml.safe_dump(calibration_to_dict(with_t))):
        again = calibration_from_dict(yaml.safe_load(text))
        assert again.gpu("h100_sxm").nccl_time("all_gather", 6)(1e6) == pytest.approx(3e-5 ** (1 - w) * 12e-5**w)
        assert again.gpu("h100_sxm").nccl_time("all_gather", 4)(1e6) == pytest.approx(3e-5)
        assert again.gpu("h100_sxm").nccl_time("reduce_scatter", 8) is None
        assert calibration_to_dict(again) == calibration_to_dict(with_t)
    for bad, msg in (
        ({"alltoall": {"8": t}}, "NCCL operation"),
        ({"all_gather": {"1": t}}, "at least 2"),
        ({"all_gather": {"8": {"bytes": [2.0, 1.0], "seconds": [1e-6, 1e-6]}}}, "ascending"),
    ):
        with pytest.raises(ConfigError, match=msg):
            _with_own_allreduce(cal, "h100_sxm", {}, nccl=bad)


def test_a_step_with_the_shipped_all_reduce_tables_never_gets_faster_as_it_grows():
    """The measured tables dip (b200 vLLM tp8: 26 us at 512 KB, 17 us at 1 MB); their lower envelope keeps the
    step time monotone, which the planner's searches rely on."""
    cal = default_calibration()
    assert cal.gpu("b200_sxm").allreduce_tables["vllm"][8]  # the shipped file has the engines' own tables
    for gpu, engine, tp in (("b200_sxm", "vllm", 8), ("h100_sxm", "sglang", 8), ("a100_sxm", "trtllm", 8)):
        m = PerfModel.build(CAT.model("Qwen/Qwen3-32B"), CAT.gpu(gpu), tp=tp, engine=engine)
        assert m._c.ar_table is not None
        times = [m.step_time_s(0, 0.0, d, d * 64) for d in range(1, 400)]
        assert all(b >= a for a, b in zip(times, times[1:], strict=False)), (gpu, engine)
        prefill = [m.step_time_s(p, p * p / 2.0, 0, 0) for p in range(64, 16384, 64)]
        assert all(b >= a for a, b in zip(prefill, prefill[1:], strict=False)), (gpu, engine)
    # the expert token exchange under attention DP runs on NCCL's shipped all-gather and reduce-scatter tables
    assert cal.gpu("b200_sxm").nccl_time("all_gather", 8) is not None
    for gpu, engine in (("b200_sxm", "trtllm"), ("h200_sxm", "sglang")):
        m = PerfModel.build(CAT.model("deepseek-ai/DeepSeek-V3"), CAT.gpu(gpu), tp=1, attention_dp=8, ep=8,
                            engine=engine, weight_precision="fp8", kv_dtype="fp8")  # fmt: skip
        assert m._c.ep_gather is not None and m._c.ep_scatter is not None
        times = [m.step_time_s(0, 0.0, d, d * 64) for d in range(1, 400)]
        assert all(b >= a for a, b in zip(times, times[1:], strict=False)), (gpu, engine)
        # prefill steps up to 64 k tokens: a gathered buffer of 0.9 GB, past NCCL's largest measured message
        prefill = [m.step_time_s(p, p * p / 2.0, 0, 0) for p in range(256, 65536, 256)]
        assert all(b >= a for a, b in zip(prefill, prefill[1:], strict=False)), (gpu, engine)
        assert any("expert all-gather" in s for s in m.step_breakdown(65536, 65536.0**2 / 2, 0, 0).out_of_range)


def test_attention_dp_times_a_step_by_its_busiest_rank():
    """Attention DP places whole prompts on ranks: one prompt's prefill runs its attention and dense layers on
    one rank (the others wait at the expert exchange), so it is slower than the same tokens spread over every
    rank; as many prompts as ranks is the spread case exactly; without attention DP the count changes nothing."""
    m, g = CAT.model("deepseek-ai/DeepSeek-R1"), CAT.gpu("h200_sxm")
    adp = PerfModel.build(m, g, tp=1, attention_dp=8, ep=8, weight_precision="fp8", kv_dtype="fp8")
    tp = PerfModel.build(m, g, tp=8, ep=8, weight_precision="fp8", kv_dtype="fp8")
    args = (8192, 8192.0**2 / 2, 16, 16 * 4096)
    spread = adp.step_time_s(*args)
    assert adp.step_time_s(*args, prefill_seqs=8) == pytest.approx(spread, rel=1e-12)
    assert adp.step_time_s(*args, prefill_seqs=16) == pytest.approx(spread, rel=1e-12)
    one = adp.step_time_s(*args, prefill_seqs=1)
    nine = adp.step_time_s(*args, prefill_seqs=9)  # two of the nine on one rank
    assert one > nine > spread
    # the prompt's own rank does all of its attention: attention time scales with the rank's share
    a1 = adp.step_breakdown(8192, 8192.0**2 / 2, 0, 0).ops["attn_prefill"]
    assert adp._ops(8192, 8192.0**2 / 2, 0, 0, 1.0, 1)[2] == pytest.approx(8 * a1, rel=1e-12)
    # one prompt alone on a tp8 replica is faster than on one rank of an attention-DP replica of the same GPUs
    assert tp.step_time_s(8192, 8192.0**2 / 2, 0, 0, prefill_seqs=1) < adp.step_time_s(
        8192, 8192.0**2 / 2, 0, 0, prefill_seqs=1
    )
    for k in (1, 3, None):  # no attention DP: the prompt count does not matter
        assert tp.step_time_s(*args, prefill_seqs=k) == tp.step_time_s(*args)
    # decode-only steps ignore it too
    assert adp.step_time_s(0, 0.0, 16, 16 * 4096, prefill_seqs=1) == adp.step_time_s(0, 0.0, 16, 16 * 4096)


def test_the_busiest_rank_holds_the_largest_prompts_first():
    from gpuyield.core.perf.model import busiest_rank_share

    assert busiest_rank_share(1, 8) == 1.0 and busiest_rank_share(8, 8) == pytest.approx(1 / 8)
    assert busiest_rank_share(9, 8) == pytest.approx(2 / 9) and busiest_rank_share(3, 1) == 1.0
    # a prompt's tail beside a full chunk: the full chunk's rank is the busiest
    assert busiest_rank_share((64, 4096), 8) == pytest.approx(4096 / 4160)
    # largest first onto the least loaded: 48 | 48, then 32 beside one of them
    assert busiest_rank_share((32, 48, 48), 2) == pytest.approx(80 / 128)
    assert busiest_rank_share((0, 0), 4) == pytest.approx(1 / 4)
    m, g = CAT.model("deepseek-ai/DeepSeek-R1"), CAT.gpu("h200_sxm")
    adp = PerfModel.build(m, g, tp=1, attention_dp=8, ep=8, weight_precision="fp8", kv_dtype="fp8")
    attn = 4096.0**2 / 2 + 64 * 4000.0
    assert adp.step_time_s(4160, attn, 0, 0, prefill_seqs=(64, 4096)) > adp.step_time_s(4160, attn, 0, 0, prefill_seqs=2)
    assert adp.step_time_s(4160, attn, 0, 0, prefill_seqs=[4096, 64]) == adp.step_time_s(
        4160, attn, 0, 0, prefill_seqs=(64, 4096)
    )


def test_speculative_and_measured_steps_keep_the_busiest_rank():
    """The speculative wrapper's prefill part and the measured step scales' prefill part are timed on the
    prompt's own rank too (not spread): both stay slower for a lone prompt than for the same tokens spread."""
    from gpuyield.core.perf.measured_steps import MeasuredStepScales

    m, g = CAT.model("deepseek-ai/DeepSeek-R1"), CAT.gpu("h200_sxm")
    adp = PerfModel.build(m, g, tp=1, attention_dp=8, ep=8, weight_precision="fp8", kv_dtype="fp8")
    args = (4096, 4096.0**2 / 2, 16, 16 * 2048)
    spec = adp.with_speculative(SpeculativeDecoding("mtp", 1, 0.8))
    scaled = adp.with_measured(MeasuredStepScales((1, 64), (0.5, 0.5), (2.0, 2.0), 1024, 256, 1.0, 1, True))
    for model in (adp, spec, scaled):
        one, spread = model.step_time_s(*args, prefill_seqs=1), model.step_time_s(*args)
        assert one > 1.5 * spread
    # the prefill part alone carries the change: with no prompt in the step the count changes nothing
    for model in (spec, scaled):
        assert model.step_time_s(0, 0.0, 16, 16 * 2048, prefill_seqs=1) == model.step_time_s(0, 0.0, 16, 16 * 2048)
    # the breakdown that `estimate` prints times the same step
    bd = adp.step_breakdown(*args, prefill_seqs=1)
    assert bd.total_s == pytest.approx(adp.step_time_s(*args, prefill_seqs=1), rel=1e-12)


def test_one_prompts_prefill_latency_is_its_ranks_and_its_cost_is_the_replicas_share():
    from gpuyield.core.perf.closed_loop import prefill_time_s

    m, g = CAT.model("deepseek-ai/DeepSeek-R1"), CAT.gpu("h200_sxm")
    adp = PerfModel.build(m, g, tp=1, attention_dp=8, ep=8, weight_precision="fp8", kv_dtype="fp8")
    tp = PerfModel.build(m, g, tp=8, ep=8, weight_precision="fp8", kv_dtype="fp8")
    alone, marg = prefill_time_s(adp, 8192, 4, 4 * 2048, 2048)
    spread, marg_s = prefill_time_s(adp, 8192, 4, 4 * 2048, 2048, alone=False)
    assert alone > 2 * spread and marg == pytest.approx(marg_s, rel=1e-12)
    assert prefill_time_s(tp, 8192, 4, 4 * 2048, 2048) == prefill_time_s(tp, 8192, 4, 4 * 2048, 2048, alone=False)
