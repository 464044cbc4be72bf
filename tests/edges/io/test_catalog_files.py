"""``--catalog`` files: read at the edge (core reads no user files), layered by ``Catalog.with_overrides``."""

from __future__ import annotations

import pytest

from gpuyield.core.catalog import Catalog, default_catalog
from gpuyield.edges.io.models import read_catalog_files
from gpuyield.errors import CatalogError


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return default_catalog()


def test_override_model_from_file(tmp_path, cat):
    f = tmp_path / "models.yaml"
    f.write_text(
        "models:\n"
        "- id: acme/Tiny-2L\n"
        "  architecture: llama\n"
        "  num_layers: 2\n  hidden_size: 128\n  num_attention_heads: 4\n  num_kv_heads: 2\n  head_dim: 32\n"
        "  intermediate_size: 256\n  vocab_size: 1000\n  max_position_embeddings: 512\n"
        "  source: test\n  as_of: 2026-01-01\n"
    )
    new = cat.with_overrides(read_catalog_files([f]))
    m = new.model("Tiny-2L-Instruct")
    assert m.kv_bytes_per_token() == 2 * 2 * 32 * 2 * 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpus:\n- id: h100_sxm\n  tdp_w: 600\n", r"bad.yaml: gpus\[0\] \(h100_sxm\) field 'source'"),
        ("gpus:\n- id: x\n  name: X\n", r"bad.yaml: gpus\[0\] \(x\) field 'vendor': Field required"),
        ("gpus:\n- id: h100_sxm\n  memory_gb: -3\n  source: s\n  as_of: 2026-01-01\n", r"field 'memory_gb'"),
        ("models:\n- id: tiny-llama\n  params_total: 5\n  source: s\n  as_of: 2026-01-01\n", r"field 'params_total': unknown field"),
        ("gpu:\n- id: x\n", r"unknown section 'gpu'"),
        ("gpus: [1, 2]\n", r"gpus\[0\] must be a mapping"),
        ("gpus:\n  - id: [\n", r"is not valid YAML"),
        ("gpu_prices:\n- gpu: h999\n  provider: p\n  provider_kind: specialised\n  tier: on_demand\n"
         "  usd_per_gpu_hour: 1\n  source: s\n  as_of: 2026-01-01\n", r"refers to unknown 'h999'"),
    ],
)
def test_malformed_override_names_file_and_field(tmp_path, cat, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(CatalogError, match=message):
        cat.with_overrides(read_catalog_files([f]))


def test_missing_override_file(cat, tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        read_catalog_files([tmp_path / "nope.yaml"])


def test_core_with_overrides_refuses_a_path(cat, tmp_path):
    with pytest.raises(CatalogError, match="read_catalog_files"):
        cat.with_overrides([tmp_path / "x.yaml"])  # type: ignore[list-item]
