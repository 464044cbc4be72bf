"""``gpuyield catalog``: JSON shapes, human output, overrides, exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gpuyield.edges.cli.common import normalise_json_flag
from gpuyield.edges.cli.main import app

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, normalise_json_flag(list(args)), env=env or {"GPUYIELD_CATALOG": ""})


def test_gpus_json_shape_and_h100():
    res = run("catalog", "gpus", "--json")
    assert res.exit_code == 0, res.output
    gpus = json.loads(res.stdout)
    assert len(gpus) >= 15
    for g in gpus:
        for key in ("id", "aliases", "name", "memory_gb", "memory_bandwidth_tb_s", "bf16_dense_tflops",
                    "fp8_dense_tflops", "tdp_w", "source", "as_of"):
            assert key in g, key
    h100 = next(g for g in gpus if g["id"] == "h100_sxm")
    assert h100["bf16_dense_tflops"] == pytest.approx(989, rel=0.01)
    assert h100["memory_gb"] == 80 and h100["memory_bandwidth_tb_s"] == pytest.approx(3.35)


def test_models_json_shape_and_llama():
    res = run("catalog", "models", "--json")
    assert res.exit_code == 0, res.output
    models = json.loads(res.stdout)
    assert len(models) >= 12
    for m in models:
        for key in ("id", "aliases", "params_total", "params_active", "kv_bytes_per_token_bf16", "layers", "source",
                    "as_of"):
            assert key in m, key
    llama = next(m for m in models if m["id"] == "meta-llama/Llama-3.1-8B")
    assert llama["params_total"] == pytest.approx(8.03e9, rel=0.02)
    assert llama["kv_bytes_per_token_bf16"] == 131072 and llama["layers"] == 32


def test_json_to_file(tmp_path):
    out = tmp_path / "gpus.json"
    res = run("catalog", "gpus", "--json", str(out))
    assert res.exit_code == 0, res.output
    assert any(g["id"] == "b200_sxm" for g in json.loads(out.read_text()))


def test_human_tables():
    res = run("catalog", "gpus")
    assert res.exit_code == 0 and "h100_sxm" in res.stdout and "989.0" in res.stdout
    res = run("catalog", "models")
    assert res.exit_code == 0 and "131,072" in res.stdout
    res = run("catalog", "prices")
    assert res.exit_code == 0
    assert "as_of" in res.stdout and "2026-05-07" in res.stdout and "PUE" in res.stdout


def test_prices_json_and_filters():
    res = run("catalog", "prices", "--gpu", "NVIDIA H100", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["gpu_prices"] and {p["gpu"] for p in data["gpu_prices"]} == {"h100_sxm"}
    assert all("as_of" in p and "source" in p for p in data["gpu_prices"])
    assert data["default_gpu_prices"]["h100_sxm"]["tier"] == "on_demand"
    res = run("catalog", "prices", "--model", "llama-3.1-70b-instruct", "--json")
    data = json.loads(res.stdout)
    assert data["api_prices"] and not data["gpu_prices"]


@pytest.mark.parametrize("ident", ["h100_sxm", "H100 80GB HBM3", "NVIDIA H100"])
def test_show_gpu(ident):
    res = run("catalog", "show", ident, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["kind"] == "gpu" and data["id"] == "h100_sxm" and data["prices"]
    human = run("catalog", "show", ident)
    assert human.exit_code == 0 and "3.35 TB/s" in human.stdout


def test_show_model():
    res = run("catalog", "show", "deepseek-ai/DeepSeek-V3", "--json")
    data = json.loads(res.stdout)
    assert data["kind"] == "model" and data["kv_bytes_per_token_bf16"] == 70272
    assert any(g["name"] == "kv_b_proj" for g in data["gemm_shapes"])
    assert data["api_prices"]
    human = run("catalog", "show", "meta-llama/Llama-3.1-8B-Instruct")
    assert human.exit_code == 0 and "131,072" in human.stdout


def test_show_provider():
    res = run("catalog", "show", "lambda", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["kind"] == "provider" and all(p["provider"] == "lambda" for p in data["gpu_prices"])


def test_unknown_id_exits_2_with_suggestion():
    res = run("catalog", "show", "no-such-gpu")
    assert res.exit_code == 2
    assert "unknown GPU or model 'no-such-gpu'" in res.stderr
    res = run("catalog", "show", "h100-sxmm")
    assert res.exit_code == 2 and "did you mean 'h100_sxm'?" in res.stderr
    res = run("catalog", "prices", "--gpu", "h1000")
    assert res.exit_code == 2 and "unknown GPU 'h1000'" in res.stderr


OVERRIDE = """
gpus:
- id: h100_sxm
  tdp_w: 600
  source: lab power cap
  as_of: 2026-01-05
- id: acme_x1
  name: Acme X1
  vendor: Acme
  form_factor: PCIe
  memory_gb: 64
  memory_bandwidth_tb_s: 2.5
  bf16_dense_tflops: 400
  interconnect_kind: PCIe Gen5
  interconnect_gb_s: 64
  source: Acme datasheet rev 2
  as_of: 2026-02-01
"""


def test_override_flag_and_env(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(OVERRIDE)
    for args, env in [
        (("catalog", "gpus", "--catalog", str(f), "--json"), None),
        (("catalog", "gpus", "--json"), {"GPUYIELD_CATALOG": str(f)}),
    ]:
        res = run(*args, env=env)
        assert res.exit_code == 0, res.output
        gpus = {g["id"]: g for g in json.loads(res.stdout)}
        assert gpus["h100_sxm"]["tdp_w"] == 600 and gpus["h100_sxm"]["bf16_dense_tflops"] == 989
        assert gpus["acme_x1"]["memory_gb"] == 64


def test_env_and_flag_order(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("gpus:\n- id: h100_sxm\n  tdp_w: 500\n  source: a\n  as_of: 2026-01-01\n")
    b.write_text("gpus:\n- id: h100_sxm\n  tdp_w: 650\n  source: b\n  as_of: 2026-01-01\n")
    res = run("catalog", "show", "h100_sxm", "--catalog", str(b), "--json", env={"GPUYIELD_CATALOG": str(a)})
    assert json.loads(res.stdout)["tdp_w"] == 650  # --catalog applies after GPUYIELD_CATALOG


def test_malformed_override_exits_2_naming_file_and_field(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("gpus:\n- id: h100_sxm\n  memory_gb: lots\n  source: s\n  as_of: 2026-01-01\n")
    res = run("catalog", "gpus", "--catalog", str(f))
    assert res.exit_code == 2
    assert "broken.yaml" in res.stderr and "memory_gb" in res.stderr
    res = run("catalog", "gpus", "--catalog", str(tmp_path / "missing.yaml"))
    assert res.exit_code == 2 and "does not exist" in res.stderr


def test_show_local_config_json(tmp_path):
    d = tmp_path / "my-llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 8192, "max_position_embeddings": 2048,
    }))
    for arg in (str(d), str(d / "config.json")):
        res = run("catalog", "show", arg, "--json")
        assert res.exit_code == 0, res.output
        data = json.loads(res.stdout)
        assert data["id"] == "my-llama" and data["kv_bytes_per_token_bf16"] == 4 * 4 * 64 * 2 * 2
    (d / "config.json").write_text("{not json")
    res = run("catalog", "show", str(d))
    assert res.exit_code == 2 and "not valid JSON" in res.stderr


def test_help_has_examples():
    for sub in ("gpus", "models", "prices", "show"):
        res = run("catalog", sub, "--help")
        assert res.exit_code == 0 and "Examples" in res.stdout


def test_group_level_catalog_option(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("gpus:\n- id: h100_sxm\n  tdp_w: 500\n  source: a\n  as_of: 2026-01-01\n")
    b.write_text("gpus:\n- id: h100_sxm\n  tdp_w: 650\n  source: b\n  as_of: 2026-01-01\n")
    res = run("catalog", "--catalog", str(a), "show", "h100_sxm", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["tdp_w"] == 500
    res = run("catalog", "--catalog", str(a), "show", "h100_sxm", "--catalog", str(b), "--json")
    assert json.loads(res.stdout)["tdp_w"] == 650
