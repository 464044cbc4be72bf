"""Catalogue data: provenance, sane ranges, aliases, overrides and prices."""

from __future__ import annotations

import datetime as dt
import re

import pytest

import gpuyield.core.catalog as catalog_pkg
from gpuyield.core.catalog import Catalog, default_catalog
from gpuyield.errors import CatalogError

TODAY_BOUND = dt.date(2027, 12, 31)  # the data may not claim dates past the build year
_SOURCE_RE = re.compile(r"\S{6,}")


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return default_catalog()


def test_default_catalog_is_cached(cat):
    assert default_catalog() is cat


def test_required_coverage(cat):
    ids = set(cat.gpu_ids())
    for gpu in ["h100_sxm", "h100_pcie", "h200_sxm", "a100_sxm", "a100_sxm_40gb", "a100_pcie", "l40s", "l4",
                "a10g", "mi300x", "b200_sxm", "b300_sxm", "gb200", "gb300", "gaudi3", "tpu_v5e", "a30", "a40",
                "rtx_pro_6000_server"]:
        assert gpu in ids
    assert len(ids) >= 17
    for model in ["meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.3-70B-Instruct",
                  "meta-llama/Llama-3.1-405B", "Qwen/Qwen3-8B", "Qwen/Qwen3-32B", "Qwen/Qwen3-30B-A3B",
                  "Qwen/Qwen3-235B-A22B", "mistralai/Mixtral-8x7B-v0.1", "deepseek-ai/DeepSeek-V3",
                  "openai/gpt-oss-120b", "mistralai/Mistral-Small-24B-Instruct-2501", "tiny-llama", "tiny-llama-100m"]:
        assert cat.find_model(model) is not None, model
    assert len(cat.models) >= 12


def test_every_model_in_the_training_measurements_resolves(cat):
    for name in ["deepseek-ai/DeepSeek-R1", "MiniMaxAI/MiniMax-M2.5", "deepseek-ai/DeepSeek-V3", "openai/gpt-oss-120b",
                 "Qwen/Qwen3-32B", "Qwen/Qwen3.5-397B-A17B", "moonshotai/Kimi-K2.5", "Qwen/Qwen3-235B-A22B-FP8",
                 "zhipuai/GLM-5", "nvidia/DeepSeek-R1-NVFP4", "nvidia/Qwen3-32B-NVFP4", "nvidia/DeepSeek-V3.1-NVFP4"]:
        assert cat.find_model(name) is not None, name
    for gpu in ["b200_sxm", "h200_sxm", "h100_sxm", "gb200", "b300_sxm", "gb300"]:
        assert cat.find_gpu(gpu) is not None


def _check_provenance(entry):
    assert _SOURCE_RE.search(entry.source), f"{entry!r} has no usable source"
    assert dt.date(2020, 1, 1) <= entry.as_of <= TODAY_BOUND


def test_gpu_provenance_and_ranges(cat):
    for g in cat.gpus:
        _check_provenance(g)
        assert 8 <= g.memory_gb <= 400, g.id
        assert 0.1 <= g.memory_bandwidth_tb_s <= 20, g.id
        if g.bf16_dense_tflops is not None:
            assert 50 <= g.bf16_dense_tflops <= 5000, g.id
        if g.fp8_dense_tflops is not None and g.bf16_dense_tflops is not None:
            assert g.bf16_dense_tflops <= g.fp8_dense_tflops <= 2.05 * g.bf16_dense_tflops, g.id
        if g.fp4_dense_tflops is not None:
            assert g.fp8_dense_tflops is not None and g.fp4_dense_tflops >= g.fp8_dense_tflops, g.id
        if g.tdp_w is not None:
            assert 50 <= g.tdp_w <= 2000, g.id
        if g.memory_bytes is not None:
            assert 0.9 * g.memory_gb * 1e9 <= g.memory_bytes <= 1.1 * g.memory_gb * 2**30, g.id
        assert 10 <= g.interconnect_gb_s <= 2000, g.id


def test_model_provenance_and_ranges(cat):
    for m in cat.models:
        _check_provenance(m)
        assert 1e6 <= m.params_total <= 5e12, m.id  # Kimi-K3: 2.8 T
        assert m.params_active <= m.params_total
        assert 0 < m.kv_bytes_per_token("bf16") < 2e6, m.id
        assert m.weight_bytes("bf16") > m.weight_bytes("fp8") > 0


def test_price_provenance_and_ranges(cat):
    entries = [*cat.gpu_prices, *cat.api_price_entries, *cat.electricity_prices, *cat.pue_entries, *cat.owned_hardware]
    assert len(cat.gpu_prices) >= 10 and len(cat.api_price_entries) >= 8
    for e in entries:
        _check_provenance(e)
    for p in cat.gpu_prices:
        assert 0.1 <= p.usd_per_gpu_hour <= 20, p
    for a in cat.api_price_entries:
        assert a.usd_per_1m_input_tokens <= 5 and a.usd_per_1m_output_tokens <= 10
    kinds = {p.provider_kind for p in cat.gpu_prices}
    assert {"hyperscaler", "specialised"} <= kinds
    tiers = {p.tier for p in cat.gpu_prices}
    assert {"on_demand", "reserved_1y", "committed", "spot"} <= tiers


def test_h100_numbers(cat):
    h = cat.gpu("h100_sxm")
    assert h.bf16_dense_tflops == pytest.approx(989, rel=0.01)
    assert h.memory_gb == 80
    assert h.memory_bandwidth_tb_s == pytest.approx(3.35)


@pytest.mark.parametrize(
    "name",
    ["h100_sxm", "H100 80GB HBM3", "NVIDIA H100", "NVIDIA H100 80GB HBM3", "H100-SXM", "h100 sxm", "H100_SXM", "h100"],
)
def test_gpu_aliases(cat, name):
    assert cat.gpu(name).id == "h100_sxm"


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("a100_sxm", "a100_sxm"),
        ("NVIDIA A100-SXM4-80GB", "a100_sxm"),
        ("NVIDIA A100-SXM4-40GB", "a100_sxm_40gb"),
        ("l40s", "l40s"),
        ("NVIDIA L40S", "l40s"),
        ("b200_sxm", "b200_sxm"),
        ("NVIDIA B200", "b200_sxm"),
        ("gb200", "gb200"),
        ("h200_sxm", "h200_sxm"),
        ("NVIDIA H200", "h200_sxm"),
        ("AMD Instinct MI300X", "mi300x"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "rtx_pro_6000_server"),
    ],
)
def test_more_gpu_aliases(cat, name, want):
    assert cat.gpu(name).id == want


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B"),
        ("Llama-3.1-8B", "meta-llama/Llama-3.1-8B"),
        ("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B"),
        ("LLAMA 3.1 8B", "meta-llama/Llama-3.1-8B"),
        ("Qwen/Qwen3-235B-A22B-FP8", "Qwen/Qwen3-235B-A22B"),
        ("qwen3-32b", "Qwen/Qwen3-32B"),
        ("nvidia/DeepSeek-R1-NVFP4", "deepseek-ai/DeepSeek-R1"),
        ("deepseek-ai/DeepSeek-V3-Chat", "deepseek-ai/DeepSeek-V3"),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mistralai/Mixtral-8x7B-v0.1"),
        ("zhipuai/GLM-5", "zai-org/GLM-5"),
        ("tiny-llama", "tiny-llama"),
    ],
)
def test_model_aliases(cat, name, want):
    assert cat.model(name).id == want


def test_unknown_ids_suggest_nearest(cat):
    with pytest.raises(CatalogError, match=r"unknown GPU 'h1000'; did you mean 'h100_sxm'\?"):
        cat.gpu("h1000")
    with pytest.raises(CatalogError, match=r"unknown model 'llama-3.1-9b'; did you mean 'meta-llama/Llama-3.1-8B'\?"):
        cat.model("llama-3.1-9b")
    assert cat.suggest("h10O_sxm") == "h100_sxm"


def test_dense_tflops_fallbacks(cat):
    a100 = cat.gpu("a100_sxm")
    assert a100.dense_tflops("bf16") == a100.dense_tflops("fp16") == 312
    assert a100.dense_tflops("fp8") == 312  # no FP8 tensor cores: bf16 rate
    assert not a100.has_native("fp8")
    h100 = cat.gpu("h100_sxm")
    assert h100.dense_tflops("fp8") == 1979
    assert h100.dense_tflops("nvfp4") == 1979  # no FP4: fp8 rate
    b200 = cat.gpu("b200_sxm")
    assert b200.dense_tflops("fp4") == 9000 and b200.has_native("fp4")
    with pytest.raises(CatalogError, match="unknown dtype"):
        h100.dense_tflops("fp3")
    with pytest.raises(CatalogError, match="no published dense tensor rate"):
        cat.gpu("a10g").dense_tflops("bf16")


def test_gpu_price_default_and_filters(cat):
    default = cat.gpu_price("h100")
    assert default.tier == "on_demand" and default.provider_kind == "specialised"
    on_demand_spec = sorted(
        p.usd_per_gpu_hour
        for p in cat.gpu_prices
        if p.gpu == "h100_sxm" and p.tier == "on_demand" and p.provider_kind == "specialised"
    )
    assert default.usd_per_gpu_hour == on_demand_spec[(len(on_demand_spec) - 1) // 2]
    assert cat.gpu_price("h100", provider="AWS").provider == "aws"
    assert cat.gpu_price("h100_sxm", tier="reserved_1y").tier == "reserved_1y"
    with pytest.raises(CatalogError, match="no price for 'h100_sxm' from provider 'nobody'"):
        cat.gpu_price("h100", provider="nobody")
    with pytest.raises(CatalogError, match="no GPU-hour price for 'gaudi3'"):
        cat.gpu_price("gaudi3")


def test_api_energy_owned(cat):
    rows = cat.api_prices("Llama-3.1-70B-Instruct")
    assert rows and all(r.model == "meta-llama/Llama-3.1-70B" for r in rows)
    assert cat.api_prices("tiny-llama") == ()
    assert 0.03 < cat.electricity().usd_per_kwh < 0.3
    assert cat.pue().pue >= 1.0
    owned = cat.owned("NVIDIA H100")
    hourly = owned.usd_per_gpu_hour(power_w=700, usd_per_kwh=0.08, pue=1.5)
    assert hourly == pytest.approx(40625 / (3 * 8760) + 3060 / 8760 + 0.7 * 1.5 * 0.08)
    with pytest.raises(CatalogError, match="no electricity price for region 'mars'"):
        cat.electricity("mars")


# ---------------------------------------------------------------- overrides
def test_override_adds_and_replaces(cat):
    doc = {
        "gpus": [
            {"id": "H100 80GB HBM3", "tdp_w": 600, "source": "our lab power cap", "as_of": "2026-01-05"},
            {
                "id": "my_gpu",
                "aliases": ["My GPU 9000"],
                "name": "My GPU",
                "vendor": "Acme",
                "form_factor": "PCIe",
                "memory_gb": 64,
                "memory_bandwidth_tb_s": 2.5,
                "bf16_dense_tflops": 400,
                "interconnect_kind": "PCIe Gen5",
                "interconnect_gb_s": 64,
                "source": "datasheet rev 2",
                "as_of": "2026-02-01",
            },
        ],
        "gpu_prices": [
            {"gpu": "my gpu 9000", "provider": "ourdc", "provider_kind": "specialised", "tier": "on_demand",
             "usd_per_gpu_hour": 1.0, "source": "internal rate card", "as_of": "2026-03-01"}
        ],
        "defaults": {"electricity_region": "us-ny"},
    }
    new = cat.with_overrides([("mine.yaml", doc)])
    h = new.gpu("h100_sxm")
    assert h.tdp_w == 600 and h.bf16_dense_tflops == 989 and h.source == "our lab power cap"
    assert "H100 80GB HBM3" in h.aliases
    assert new.origin("h100_sxm") == "mine.yaml"
    assert new.gpu("my gpu 9000").id == "my_gpu"
    assert new.gpu_price("my_gpu").usd_per_gpu_hour == 1.0
    assert new.electricity().region == "us-ny"
    # the default catalogue is untouched
    assert cat.gpu("h100_sxm").tdp_w == 700 and cat.find_gpu("my_gpu") is None


def test_exported_members():
    public = sorted(n for n in dir(catalog_pkg) if not n.startswith("_") and n[0].isupper() or n in catalog_pkg.__all__)
    assert sorted(catalog_pkg.__all__) == sorted(set(catalog_pkg.__all__))
    for name in catalog_pkg.__all__:
        assert hasattr(catalog_pkg, name)
    assert {"Catalog", "default_catalog", "ModelSpec", "Accelerator", "GpuPrice", "load_hf_config"} <= set(public)


def test_docs_override_example_is_valid(cat):
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[3] / "docs" / "formats.md").read_text()
    example = text.split("### Override example", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    new = cat.with_overrides([("docs/formats.md", yaml.safe_load(example))])
    assert new.gpu("h100_sxm").tdp_w == 600
    assert new.model("acme/Chat-7B").kv_bytes_per_token() == 131072
    assert new.gpu_price("h100").provider == "our-dc"
