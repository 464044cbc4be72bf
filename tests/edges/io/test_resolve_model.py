"""``resolve_model``: catalogue ids vs local config.json paths."""

from __future__ import annotations

import json

import pytest

from gpuyield.core.catalog import default_catalog
from gpuyield.edges.io.models import load_hf_config_file, looks_like_path, resolve_model
from gpuyield.errors import CatalogError

CFG = {"model_type": "qwen3", "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 2,
       "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 1000,
       "max_position_embeddings": 1024}


def test_catalogue_ids_are_not_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-llama").mkdir()  # a directory without config.json is not a model
    assert not looks_like_path("tiny-llama")
    assert resolve_model(default_catalog(), "tiny-llama").id == "tiny-llama"
    assert resolve_model(default_catalog(), "meta-llama/Llama-3.1-8B-Instruct").num_layers == 32


def test_local_dir_and_file(tmp_path, monkeypatch):
    d = tmp_path / "Qwen3-Tiny"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(CFG))
    spec = resolve_model(default_catalog(), str(d))
    assert spec.id == "Qwen3-Tiny" and spec.qk_norm == "per_head" and spec.source.endswith("config.json")
    assert spec.kv_bytes_per_token() == 2 * 2 * 64 * 2 * 2
    monkeypatch.chdir(tmp_path)
    assert looks_like_path("Qwen3-Tiny")  # a bare directory name that holds a config.json
    assert load_hf_config_file(d / "config.json").params_total == spec.params_total


def test_errors_name_the_file(tmp_path):
    with pytest.raises(CatalogError, match="not found"):
        resolve_model(default_catalog(), str(tmp_path / "nope" / "config.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CatalogError, match=r"bad.json: .*lacks required field 'num_hidden_layers'"):
        resolve_model(default_catalog(), str(bad))


def test_a_modelopt_export_is_read_with_its_hf_quant_config(tmp_path):
    """ModelOpt writes its quantisation beside config.json (hf_quant_config.json): the matrices it leaves out of
    NVFP4 are read from there."""
    d = tmp_path / "Qwen3-Tiny-NVFP4"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(CFG))
    quant = {"quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8",
             "exclude_modules": ["lm_head", "model.layers.0.self_attn*", "model.layers.1.self_attn*"]}
    (d / "hf_quant_config.json").write_text(json.dumps({"producer": {"name": "modelopt"}, "quantization": quant}))
    spec = load_hf_config_file(d)
    assert spec.native_dtype == "nvfp4" and dict(spec.nvfp4_kept) == {"attention": "bf16"}
    (d / "hf_quant_config.json").write_text(json.dumps({"quantization": "NVFP4"}))
    with pytest.raises(CatalogError, match="hf_quant_config.json: expected a JSON object with a 'quantization'"):
        load_hf_config_file(d)
    (d / "hf_quant_config.json").write_text("{")
    with pytest.raises(CatalogError, match="not valid JSON"):
        load_hf_config_file(d)
