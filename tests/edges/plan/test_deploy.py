"""Deploy artefacts: Kubernetes manifests validate against the API schema (kubernetes client models), Ray
configs load into Ray's own models, engine commands carry the chosen knobs, the gateway config validates."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from gpuyield.core.plan.space import Candidate, PoolShape
from gpuyield.edges.plan.deploy import (
    DeployModel,
    k8s_documents,
    launch_llamacpp,
    launch_sglang,
    launch_vllm,
    ray_cluster_config,
    ray_serve_config,
    render_deploy_files,
)

MODEL = DeployModel("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b")
AGG = Candidate((PoolShape("mixed", "h100_sxm", tp=2, max_num_seqs=128, max_num_batched_tokens=4096,
                           enable_prefix_caching=False, kv_offload="none"),), "prefix_affinity")
PD = Candidate((PoolShape("prefill", "h100_sxm", max_num_batched_tokens=16384),
                PoolShape("decode", "a100_sxm", max_num_seqs=256, kv_offload="none")), "least_outstanding", (1, 2))
NAMES = {"h100_sxm": "NVIDIA H100 SXM 80GB", "a100_sxm": "NVIDIA A100 SXM 80GB"}

_KINDS = {("apps/v1", "Deployment"): "V1Deployment", ("apps/v1", "StatefulSet"): "V1StatefulSet",
          ("v1", "Service"): "V1Service", ("v1", "ConfigMap"): "V1ConfigMap"}


def _strip_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _strip_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_strip_none(v) for v in x]
    return x


def _validate_k8s(doc: dict[str, Any]) -> None:
    """Deserialize into the typed model (required fields checked) and serialize back: an unknown or misspelt
    field would be dropped on the way and the round trip would differ."""
    import kubernetes  # in the [test] extra: a missing package must fail, not skip

    api = kubernetes.client.ApiClient()
    klass = _KINDS[(doc["apiVersion"], doc["kind"])]
    obj = api._ApiClient__deserialize(doc, klass)
    back = _strip_none(api.sanitize_for_serialization(obj))
    assert back == doc, f"{klass}: fields lost in the schema round trip"


@pytest.mark.parametrize("cand,replicas", [(AGG, (3,)), (PD, (2, 4))])
def test_k8s_manifests_validate_against_the_api_schema(cand: Candidate, replicas: tuple[int, ...]) -> None:
    docs = k8s_documents(cand, replicas, MODEL, NAMES, "backends: []\n")
    assert set(docs) == {f"{p.role}.yaml" for p in cand.pools} | {"gateway.yaml"}
    for objs in docs.values():
        for doc in objs:
            _validate_k8s(doc)
    for pool, n in zip(cand.pools, replicas, strict=True):
        sts, svc = docs[f"{pool.role}.yaml"]
        assert sts["kind"] == "StatefulSet" and sts["spec"]["replicas"] == n
        assert sts["spec"]["serviceName"] == svc["metadata"]["name"] and svc["spec"]["clusterIP"] == "None"
        c = sts["spec"]["template"]["spec"]["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == str(pool.gpus_per_replica)
        assert str(pool.max_num_seqs) in c["args"]
        assert sts["spec"]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == NAMES[pool.gpu_id].replace(" ", "-")


def test_engine_commands_carry_the_knobs() -> None:
    v = launch_vllm(AGG, (2,), MODEL)
    assert v.count("vllm serve") == 2 and "--tensor-parallel-size 2" in v and "--no-enable-prefix-caching" in v
    assert "--max-num-batched-tokens 4096" in v and "CUDA_VISIBLE_DEVICES=2,3" in v
    s = launch_sglang(AGG, (1,), MODEL)
    assert "--tp-size 2" in s and "--disable-radix-cache" in s and "--chunked-prefill-size 4096" in s
    ll = launch_llamacpp(AGG, (1,), MODEL)
    assert "-np 128" in ll and "--no-cache-prompt" in ll and "--split-mode row" in ll
    pd = launch_vllm(PD, (1, 2), MODEL)
    assert pd.count("NixlConnector") == 3
    assert "--disaggregation-mode prefill" in launch_sglang(PD, (1, 2), MODEL)


def test_engine_commands_set_up_speculative_decoding_on_the_pools_that_decode() -> None:
    import dataclasses
    import shlex

    from gpuyield.core.perf import SpeculativeDecoding
    from gpuyield.errors import ConfigError

    eagle = dataclasses.replace(MODEL, speculative=SpeculativeDecoding("eagle", 3, 0.7, "org/eagle-head"))
    argv = shlex.split(launch_vllm(AGG, (1,), eagle).splitlines()[-3].split(" &")[0])
    cfg = json.loads(argv[argv.index("--speculative-config") + 1])
    assert cfg == {"method": "eagle", "num_speculative_tokens": 3, "model": "org/eagle-head"}
    s = launch_sglang(AGG, (1,), eagle)
    assert "--speculative-algorithm EAGLE --speculative-num-steps 3" in s and "--speculative-draft-model-path org/eagle-head" in s
    # P/D: a model drafter runs on the prefill servers too (its KV is filled there); n-gram only where it decodes
    pd = launch_vllm(PD, (1, 2), eagle)
    lines = pd.splitlines()
    assert sum("# replica prefill-" in line for line in lines) == 1 and sum("# replica decode-" in line for line in lines) == 2
    assert all("--speculative-config" in line for line in lines if "# replica " in line)
    ngram = dataclasses.replace(MODEL, speculative=SpeculativeDecoding("ngram", 2, 0.5))
    lines = launch_vllm(PD, (1, 2), ngram).splitlines()
    assert not any("--speculative-config" in line for line in lines if "# replica prefill-" in line)
    assert all("--speculative-config" in line for line in lines if "# replica decode-" in line)
    e3 = dataclasses.replace(MODEL, speculative=SpeculativeDecoding("eagle3", 2, 0.7, "org/eagle3-head"))
    assert '"method":"eagle3"' in launch_vllm(AGG, (1,), e3) and "--speculative-algorithm EAGLE3" in launch_sglang(AGG, (1,), e3)
    mtp = dataclasses.replace(MODEL, speculative=SpeculativeDecoding("mtp", 1, 0.8))
    ray = ray_serve_config(AGG, (1,), mtp)
    assert json.dumps(ray).count('"speculative_config": {"method": "mtp", "num_speculative_tokens": 1}') == 1
    assert "draft GGUF" in launch_llamacpp(AGG, (1,), mtp)
    with pytest.raises(ConfigError, match="--spec-draft-model"):
        launch_vllm(AGG, (1,), dataclasses.replace(MODEL, speculative=SpeculativeDecoding("eagle", 2, 0.7)))
    assert "--speculative" not in launch_vllm(AGG, (1,), MODEL)


def test_ray_serve_llm_config_validates_when_ray_serve_llm_is_installed() -> None:
    # Optional: Ray Serve LLM (``ray[serve,llm]``) is not part of ``[test]``; without it this test is reported as
    # skipped (it used to pass silently without validating anything).
    mod = pytest.importorskip(
        "ray.llm._internal.serve.core.configs.llm_config", reason="ray[serve,llm] not installed", exc_type=ImportError
    )
    cfg = ray_serve_config(AGG, (3,), MODEL)["applications"][0]["args"]["llm_configs"][0]
    mod.LLMConfig.model_validate(cfg)


def test_ray_configs_load_into_ray_serve_llm_models() -> None:
    agg = ray_serve_config(AGG, (3,), MODEL)
    app = agg["applications"][0]
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    cfg = app["args"]["llm_configs"][0]
    assert cfg["deployment_config"]["autoscaling_config"] == {"min_replicas": 3, "max_replicas": 3}
    assert cfg["engine_kwargs"]["tensor_parallel_size"] == 2 and cfg["accelerator_type"] == "H100"
    pd = ray_serve_config(PD, (2, 4), MODEL)["applications"][0]
    assert pd["import_path"] == "ray.serve.llm:build_pd_openai_app"
    assert pd["args"]["decode_config"]["accelerator_type"] == "A100-80G"
    cluster = ray_cluster_config(PD, (2, 4))
    assert cluster["available_node_types"]["worker-h100-sxm"]["resources"]["GPU"] == 2
    assert cluster["available_node_types"]["worker-a100-sxm"]["min_workers"] == 1


def test_rendered_files_are_yaml_and_gateway_config_validates() -> None:
    from gpuyield.edges.plan.outputs import gateway_config

    class _R:  # the two attributes gateway_config reads
        best_candidate = PD

        class best:  # noqa: N801
            replicas = (2, 4)

    gw = gateway_config(_R(), "llama-3.1-8b")  # type: ignore[arg-type]
    assert [b["name"] for b in gw["backends"]] == ["prefill-0", "prefill-1"] + [f"decode-{i}" for i in range(4)]
    assert gw["router"]["policy"] == "least_outstanding"
    from gpuyield.edges.gateway import config

    config.load_config(gw)
    files = render_deploy_files(PD, (2, 4), MODEL, NAMES, gw)
    for rel, text in files.items():
        if rel.endswith(".yaml"):
            assert list(yaml.safe_load_all(text)), rel
    config.load_config(yaml.safe_load(files["gateway.yaml"]))


def test_quantisation_flags_follow_the_checkpoint() -> None:
    """A bf16 checkpoint planned at fp8 is quantised online (--quantization fp8); a natively fp8 checkpoint at its own
    precision needs no flag (the engine reads its quantisation config). fp8 KV is e4m3 in both engines."""
    pool = PoolShape("mixed", "h100_sxm", tp=2, weight_precision="fp8", kv_dtype="fp8")
    cand = Candidate((pool,), "least_outstanding")
    bf16 = DeployModel("meta-llama/Llama-3.1-8B-Instruct", "llama")
    native = DeployModel("deepseek-ai/DeepSeek-V4-Flash", "v4", native_precision="fp8")
    assert "--quantization fp8" in launch_vllm(cand, (1,), bf16) and "--quantization" not in launch_vllm(cand, (1,), native)
    assert "--kv-cache-dtype fp8" in launch_vllm(cand, (1,), native)
    assert "--quantization fp8" in launch_sglang(cand, (1,), bf16) and "--quantization" not in launch_sglang(cand, (1,), native)
    assert "--kv-cache-dtype fp8_e4m3" in launch_sglang(cand, (1,), native)
