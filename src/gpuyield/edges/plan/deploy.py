"""Deployable artefacts for a chosen plan: engine launch commands, Kubernetes manifests, Ray configs.

Everything is generated from the plan's :class:`~gpuyield.core.plan.space.Candidate` and replica counts, so
the files carry exactly the knobs the simulator verified. Files (relative to ``DIR/deploy/``):

- ``launch_vllm.sh``, ``launch_sglang.sh``, ``launch_llamacpp.sh``: one command per pool replica.
- ``k8s/<pool>.yaml``: per pool, a StatefulSet of engine pods and its headless Service. The gateway routes
  each request to one chosen replica, so it needs a stable address per replica
  (``<pool>-<i>.<service>``), which a StatefulSet gives and a Deployment behind a load-balanced Service does
  not. ``k8s/gateway.yaml``: ConfigMap with the gateway config, Deployment and Service for ``gpuyield serve``.
- ``ray/serve_config.yaml`` (Ray Serve LLM application: ``build_openai_app`` or ``build_pd_openai_app``)
  and ``ray/cluster.yaml`` (Ray cluster launcher: one worker node type per GPU type).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from gpuyield.core.plan.space import Candidate, PoolShape

__all__ = [
    "DeployModel",
    "pool_service_name",
    "replica_url",
    "k8s_documents",
    "launch_llamacpp",
    "launch_sglang",
    "launch_vllm",
    "ray_cluster_config",
    "ray_serve_config",
    "render_deploy_files",
]

# Container images (the engines' official images; pin a tag in production).
VLLM_IMAGE = "vllm/vllm-openai:latest"
SGLANG_IMAGE = "lmsysorg/sglang:latest"
GPUYIELD_IMAGE = "ghcr.io/gpuyield/gpuyield:latest"
VLLM_PORT, SGLANG_PORT, LLAMACPP_PORT, GATEWAY_PORT = 8000, 30000, 8080, 8000

# Ray's accelerator_type names (ray.util.accelerators) for catalogue GPU ids, by id prefix.
_RAY_ACCELERATOR = (
    ("h100", "H100"), ("h200", "H200"), ("b200", "B200"), ("gb200", "GB200"), ("a100", "A100-80G"),
    ("l40s", "L40S"), ("l40", "L40"), ("l4", "L4"), ("a10g", "A10G"), ("a10", "A10"), ("mi300x", "AMD-Instinct-MI300X-OAM"),
)


@dataclass(frozen=True, slots=True)
class DeployModel:
    """The model as the engines and clients name it."""

    hf_id: str  # Hugging Face repo id the engines load, e.g. meta-llama/Llama-3.1-8B-Instruct
    served_name: str  # name clients send in "model"
    gguf_path: str = "/models/model.gguf"  # llama.cpp needs a GGUF file
    max_model_len: int | None = None
    speculative: Any = None  # gpuyield.core.perf.SpeculativeDecoding of the decoding pools, None: off
    # the checkpoint's weight dtype (ModelSpec.native_dtype): a pool at another precision is quantised online
    # (--quantization); at its own, the engine reads the checkpoint's quantisation config and needs no flag
    native_precision: str = "bf16"

    def quantizes(self, pool: PoolShape) -> bool:
        """Whether ``pool`` runs an fp8 quantisation of a 16-bit checkpoint (the only one the planner picks)."""
        return pool.weight_precision == "fp8" and self.native_precision.lower() in ("bf16", "fp16", "fp32")


def _dns(text: str) -> str:
    """A DNS-1123 label from ``text``."""
    s = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return (s or "x")[:50].rstrip("-")


def pool_service_name(role: str, name: str = "gpuyield") -> str:
    """The StatefulSet / headless Service name of a pool."""
    return _dns(f"{name}-{role}")


def replica_url(role: str, index: int, *, name: str = "gpuyield", namespace: str = "default") -> str:
    """The in-cluster URL of replica ``index`` of pool ``role`` (StatefulSet pod DNS)."""
    svc = pool_service_name(role, name)
    return f"http://{svc}-{index}.{svc}.{namespace}.svc.cluster.local:{VLLM_PORT}"


def pool_names(cand: Candidate) -> list[str]:
    """Stable pool names: ``mixed`` for aggregated, ``prefill`` / ``decode`` for disaggregated."""
    return [p.role for p in cand.pools]


def _speculates(pool: PoolShape, model: DeployModel) -> bool:
    """Whether ``pool``'s servers are launched with the plan's speculative decoding
    (``SpeculativeDecoding.launches_on``: every pool that decodes, and a P/D prefill pool when the drafter is a
    model)."""
    return model.speculative is not None and bool(model.speculative.launches_on(pool.role))


def _quant_flags_vllm(pool: PoolShape, model: DeployModel) -> list[str]:
    flags: list[str] = []
    if model.quantizes(pool):
        flags += ["--quantization", "fp8"]
    if pool.kv_dtype == "fp8":
        flags += ["--kv-cache-dtype", "fp8"]
    return flags


def vllm_args(pool: PoolShape, model: DeployModel, cand: Candidate, *, gpu_memory_utilization: float = 0.9) -> list[str]:
    """``vllm serve`` arguments for one replica of ``pool``."""
    args = [
        "vllm", "serve", model.hf_id,
        "--served-model-name", model.served_name,
        "--host", "0.0.0.0", "--port", str(VLLM_PORT),
        "--tensor-parallel-size", str(pool.tp),
        "--max-num-seqs", str(pool.max_num_seqs),
        "--max-num-batched-tokens", str(pool.max_num_batched_tokens),
        "--enable-chunked-prefill",
        "--enable-prefix-caching" if pool.enable_prefix_caching else "--no-enable-prefix-caching",
        "--gpu-memory-utilization", f"{gpu_memory_utilization:g}",
    ]
    if pool.pp > 1:
        args += ["--pipeline-parallel-size", str(pool.pp)]
    if pool.ep > 1:
        args += ["--enable-expert-parallel"]
    if model.max_model_len:
        args += ["--max-model-len", str(model.max_model_len)]
    args += _quant_flags_vllm(pool, model)
    if _speculates(pool, model):
        args += ["--speculative-config", json.dumps(model.speculative.vllm_config(), separators=(",", ":"))]
    if cand.disaggregated:
        args += ["--kv-transfer-config", '{"kv_connector":"NixlConnector","kv_role":"kv_both"}']
    elif pool.kv_offload == "cpu":
        args += ["--kv-transfer-config",
                 '{"kv_connector":"OffloadingConnector","kv_role":"kv_both",'
                 '"kv_connector_extra_config":{"num_cpu_blocks":65536}}']
    return args


def sglang_args(pool: PoolShape, model: DeployModel, cand: Candidate) -> list[str]:
    """``python -m sglang.launch_server`` arguments for one replica of ``pool``."""
    args = [
        "python", "-m", "sglang.launch_server",
        "--model-path", model.hf_id,
        "--served-model-name", model.served_name,
        "--host", "0.0.0.0", "--port", str(SGLANG_PORT),
        "--tp-size", str(pool.tp),
        "--max-running-requests", str(pool.max_num_seqs),
        "--chunked-prefill-size", str(pool.max_num_batched_tokens),
        "--mem-fraction-static", "0.88",
        "--enable-metrics",
    ]
    if pool.pp > 1:
        args += ["--pp-size", str(pool.pp)]
    if pool.ep > 1:
        args += ["--ep-size", str(pool.ep)]
    if not pool.enable_prefix_caching:
        args += ["--disable-radix-cache"]
    if pool.kv_offload == "cpu":
        args += ["--enable-hierarchical-cache"]
    if model.quantizes(pool):
        args += ["--quantization", "fp8"]
    if pool.kv_dtype == "fp8":  # e4m3, as vLLM's fp8 (and DeepSeek-V4's only cache format)
        args += ["--kv-cache-dtype", "fp8_e4m3"]
    if model.max_model_len:
        args += ["--context-length", str(model.max_model_len)]
    if _speculates(pool, model):
        args += model.speculative.sglang_args()
    if cand.disaggregated:
        args += ["--disaggregation-mode", pool.role]
    return args


def llamacpp_args(pool: PoolShape, model: DeployModel) -> list[str]:
    """``llama-server`` arguments for one replica of ``pool`` (llama.cpp has no P/D or expert parallelism)."""
    ctx_per_seq = model.max_model_len or 8192
    args = [
        "llama-server", "-m", model.gguf_path,
        "--alias", model.served_name,
        "--host", "0.0.0.0", "--port", str(LLAMACPP_PORT),
        "-ngl", "999",
        "-np", str(pool.max_num_seqs),
        "-c", str(ctx_per_seq * pool.max_num_seqs),
        "-b", str(pool.max_num_batched_tokens),
        "--cont-batching",
        "--metrics",
    ]
    if pool.gpus_per_replica > 1:
        args += ["--split-mode", "row" if pool.pp == 1 else "layer"]
    if not pool.enable_prefix_caching:
        args += ["--no-cache-prompt"]
    if pool.kv_dtype == "fp8":
        args += ["--cache-type-k", "q8_0", "--cache-type-v", "q8_0"]
    return args


def _script(title: str, lines: list[str], note: str = "") -> str:
    head = ["#!/usr/bin/env bash", f"# {title}", "# Generated by `gpuyield plan`; one command per replica (run each on its own GPUs).", "set -euo pipefail"]
    if note:
        head.append(f"# {note}")
    return "\n".join(head + [""] + lines) + "\n"


def _replica_lines(cand: Candidate, replicas: tuple[int, ...], argv_for: Any, env_for: Any) -> list[str]:
    lines: list[str] = []
    for pool, n in zip(cand.pools, replicas, strict=True):
        lines.append(f"# pool {pool.role}: {n} x {pool.gpu_id}, {pool.gpus_per_replica} GPU(s) per replica ({pool.label()})")
        for i in range(n):
            first = i * pool.gpus_per_replica
            devices = ",".join(str(first + k) for k in range(pool.gpus_per_replica))
            env = env_for(pool, devices)
            lines.append(f"{env} {shlex.join(argv_for(pool))} &  # replica {pool.role}-{i} (on its node: GPUs {devices})")
        lines.append("")
    lines.append("wait")
    return lines


def launch_vllm(cand: Candidate, replicas: tuple[int, ...], model: DeployModel) -> str:
    return _script(
        "vLLM replicas for this plan",
        _replica_lines(cand, replicas, lambda p: vllm_args(p, model, cand), lambda p, d: f"CUDA_VISIBLE_DEVICES={d}"),
        "P/D pools exchange KV through NIXL; the gateway (`gpuyield serve`) does the prefill->decode handoff." if cand.disaggregated else "",
    )


def launch_sglang(cand: Candidate, replicas: tuple[int, ...], model: DeployModel) -> str:
    return _script(
        "SGLang replicas for this plan",
        _replica_lines(cand, replicas, lambda p: sglang_args(p, model, cand), lambda p, d: f"CUDA_VISIBLE_DEVICES={d}"),
    )


def launch_llamacpp(cand: Candidate, replicas: tuple[int, ...], model: DeployModel) -> str:
    note = ("llama.cpp has no prefill/decode disaggregation: both pools run as aggregated servers here."
            if cand.disaggregated else "llama.cpp serves a GGUF file: convert the model first (convert_hf_to_gguf.py).")
    if model.speculative is not None:
        note += (" The plan assumed speculative decoding, which these commands do not set up: llama.cpp drafts"
                 " with a separate draft GGUF (-md).")
    return _script(
        "llama.cpp server replicas for this plan",
        _replica_lines(cand, replicas, lambda p: llamacpp_args(p, model), lambda p, d: f"CUDA_VISIBLE_DEVICES={d}"),
        note,
    )


def _gpu_product_label(gpu_name: str) -> str:
    """NVIDIA GPU feature discovery's ``nvidia.com/gpu.product`` value for a product name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", gpu_name.strip()).strip("-")


def k8s_documents(
    cand: Candidate,
    replicas: tuple[int, ...],
    model: DeployModel,
    gpu_names: dict[str, str],
    gateway_config_yaml: str,
    *,
    name: str = "gpuyield",
    namespace: str = "default",
) -> dict[str, list[dict[str, Any]]]:
    """Kubernetes objects per file name: ``<pool>.yaml`` (StatefulSet + headless Service), ``gateway.yaml``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for pool, n in zip(cand.pools, replicas, strict=True):
        app = pool_service_name(pool.role, name)
        labels = {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": name, "gpuyield.io/pool": pool.role}
        container = {
            "name": "vllm",
            "image": VLLM_IMAGE,
            "command": vllm_args(pool, model, cand)[:2],
            "args": vllm_args(pool, model, cand)[2:],
            "ports": [{"name": "http", "containerPort": VLLM_PORT}],
            "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}}}],
            "resources": {"limits": {"nvidia.com/gpu": str(pool.gpus_per_replica)},
                          "requests": {"nvidia.com/gpu": str(pool.gpus_per_replica)}},
            "readinessProbe": {"httpGet": {"path": "/health", "port": VLLM_PORT}, "periodSeconds": 5, "failureThreshold": 3},
            "startupProbe": {"httpGet": {"path": "/health", "port": VLLM_PORT}, "periodSeconds": 10, "failureThreshold": 90},
            "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
        }
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": app, "namespace": namespace, "labels": labels},
            "spec": {
                "serviceName": app,
                "podManagementPolicy": "Parallel",
                "replicas": n,
                "selector": {"matchLabels": {"app.kubernetes.io/name": app}},
                "template": {
                    "metadata": {"labels": labels, "annotations": {"gpuyield.io/shape": pool.label()}},
                    "spec": {
                        "nodeSelector": {"nvidia.com/gpu.product": _gpu_product_label(gpu_names.get(pool.gpu_id, pool.gpu_id))},
                        "containers": [container],
                        "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}],
                    },
                },
            },
        }
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": app, "namespace": namespace, "labels": labels},
            "spec": {
                "clusterIP": "None",  # headless: the gateway routes to individual pods
                "selector": {"app.kubernetes.io/name": app},
                "ports": [{"name": "http", "port": VLLM_PORT, "targetPort": VLLM_PORT}],
            },
        }
        out[f"{pool.role}.yaml"] = [deployment, service]
    gw = _dns(f"{name}-gateway")
    gw_labels = {"app.kubernetes.io/name": gw, "app.kubernetes.io/part-of": name}
    out["gateway.yaml"] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": gw, "namespace": namespace, "labels": gw_labels},
            "data": {"gateway.yaml": gateway_config_yaml},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": gw, "namespace": namespace, "labels": gw_labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/name": gw}},
                "template": {
                    "metadata": {"labels": gw_labels},
                    "spec": {
                        "containers": [{
                            "name": "gateway",
                            "image": GPUYIELD_IMAGE,
                            "command": ["gpuyield", "serve"],
                            "args": ["--config", "/etc/gpuyield/gateway.yaml", "--host", "0.0.0.0", "--port", str(GATEWAY_PORT)],
                            "ports": [{"name": "http", "containerPort": GATEWAY_PORT}],
                            "readinessProbe": {"httpGet": {"path": "/health", "port": GATEWAY_PORT}, "periodSeconds": 5},
                            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/gpuyield", "readOnly": True}],
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": gw}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": gw, "namespace": namespace, "labels": gw_labels},
            "spec": {
                "type": "ClusterIP",
                "selector": {"app.kubernetes.io/name": gw},
                "ports": [{"name": "http", "port": 80, "targetPort": GATEWAY_PORT}],
            },
        },
    ]
    return out


def ray_accelerator_type(gpu_id: str) -> str:
    low = gpu_id.lower()
    for prefix, name in _RAY_ACCELERATOR:
        if low.startswith(prefix):
            return name
    return gpu_id.upper()


def _llm_config(pool: PoolShape, n: int, model: DeployModel, cand: Candidate) -> dict[str, Any]:
    engine: dict[str, Any] = {
        "tensor_parallel_size": pool.tp,
        "pipeline_parallel_size": pool.pp,
        "max_num_seqs": pool.max_num_seqs,
        "max_num_batched_tokens": pool.max_num_batched_tokens,
        "enable_chunked_prefill": True,
        "enable_prefix_caching": pool.enable_prefix_caching,
    }
    if model.quantizes(pool):
        engine["quantization"] = "fp8"
    if pool.kv_dtype == "fp8":
        engine["kv_cache_dtype"] = "fp8"
    if pool.ep > 1:
        engine["enable_expert_parallel"] = True
    if model.max_model_len:
        engine["max_model_len"] = model.max_model_len
    if _speculates(pool, model):
        engine["speculative_config"] = model.speculative.vllm_config()
    if cand.disaggregated:
        engine["kv_transfer_config"] = {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    return {
        "model_loading_config": {"model_id": model.served_name, "model_source": model.hf_id},
        "accelerator_type": ray_accelerator_type(pool.gpu_id),
        "deployment_config": {"autoscaling_config": {"min_replicas": n, "max_replicas": n}},
        "engine_kwargs": engine,
    }


def ray_serve_config(cand: Candidate, replicas: tuple[int, ...], model: DeployModel) -> dict[str, Any]:
    """A ``serve deploy`` config for Ray Serve LLM with this plan's pools and knobs."""
    if cand.disaggregated:
        app = {
            "name": "gpuyield-plan",
            "route_prefix": "/",
            "import_path": "ray.serve.llm:build_pd_openai_app",
            "args": {
                "prefill_config": _llm_config(cand.pools[0], replicas[0], model, cand),
                "decode_config": _llm_config(cand.pools[1], replicas[1], model, cand),
            },
        }
    else:
        app = {
            "name": "gpuyield-plan",
            "route_prefix": "/",
            "import_path": "ray.serve.llm:build_openai_app",
            "args": {"llm_configs": [_llm_config(cand.pools[0], replicas[0], model, cand)]},
        }
    return {"applications": [app]}


def ray_cluster_config(cand: Candidate, replicas: tuple[int, ...], *, gpus_per_node: int = 8, name: str = "gpuyield") -> dict[str, Any]:
    """A Ray cluster-launcher config (``ray up``): a CPU head and one GPU worker type per GPU type."""
    need: dict[str, int] = {}
    for pool, n in zip(cand.pools, replicas, strict=True):
        need[pool.gpu_id] = need.get(pool.gpu_id, 0) + n * pool.gpus_per_replica
    workers: dict[str, Any] = {}
    for gpu_id, gpus in sorted(need.items()):
        nodes = -(-gpus // gpus_per_node)
        per_node = min(gpus, gpus_per_node)
        acc = ray_accelerator_type(gpu_id)
        workers[f"worker-{_dns(gpu_id)}"] = {
            "min_workers": nodes,
            "max_workers": nodes,
            "resources": {"CPU": 8 * per_node, "GPU": per_node, f"accelerator_type:{acc}": per_node},
            "node_config": {},
        }
    return {
        "cluster_name": name,
        "max_workers": sum(w["max_workers"] for w in workers.values()),
        "provider": {"type": "local", "head_ip": "HEAD_NODE_IP", "worker_ips": []},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {"head": {"resources": {"CPU": 8, "GPU": 0}, "node_config": {}, "min_workers": 0, "max_workers": 0}, **workers},
        "head_node_type": "head",
        "setup_commands": ["pip install -U 'ray[serve,llm]' vllm"],
    }


def render_deploy_files(
    cand: Candidate,
    replicas: tuple[int, ...],
    model: DeployModel,
    gpu_names: dict[str, str],
    gateway_config: dict[str, Any],
) -> dict[str, str]:
    """Every file of ``DIR/deploy/`` as ``{relative path: text}``."""
    gw_text = yaml.safe_dump(gateway_config, sort_keys=False)
    files = {
        "launch_vllm.sh": launch_vllm(cand, replicas, model),
        "launch_sglang.sh": launch_sglang(cand, replicas, model),
        "launch_llamacpp.sh": launch_llamacpp(cand, replicas, model),
        "gateway.yaml": gw_text,
        "ray/serve_config.yaml": yaml.safe_dump(ray_serve_config(cand, replicas, model), sort_keys=False),
        "ray/cluster.yaml": yaml.safe_dump(ray_cluster_config(cand, replicas), sort_keys=False),
    }
    for fname, docs in k8s_documents(cand, replicas, model, gpu_names, gw_text).items():
        files[f"k8s/{fname}"] = yaml.safe_dump_all(docs, sort_keys=False)
    return files
