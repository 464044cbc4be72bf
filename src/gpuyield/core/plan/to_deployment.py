"""A sized candidate as the simulator's :class:`~gpuyield.core.sim.deployment.Deployment` (what ``plan.yaml``
holds, and what verification simulates: the file and the verified fleet are one object).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import yaml

from gpuyield.core.plan.space import Candidate, PoolShape
from gpuyield.core.sim.deployment import (
    Deployment,
    EngineSpec,
    OffloadSpec,
    PdSpec,
    PoolSpec,
    RouterSpec,
    SpeculativeSpec,
)

__all__ = ["PD_LINK", "candidate_to_deployment", "deployment_to_yaml", "offload_tier"]

PD_LINK = "ib_ndr_400g"  # KV link between prefill and decode replicas (sim/data/links.yaml): one NIC per GPU


@cache
def _tiers() -> dict[str, Any]:
    text = resources.files("gpuyield.core.plan").joinpath("data/offload_tiers.yaml").read_text()
    data: dict[str, Any] = yaml.safe_load(text)["tiers"]
    return data


def offload_tier(kind: str, gpus_per_replica: int) -> OffloadSpec:
    """The offload tier ``kind`` (``plan/data/offload_tiers.yaml``) sized for a replica of that many GPUs."""
    t = _tiers()[kind]
    return OffloadSpec(
        kind=t["kind"],
        capacity_gib=float(t["capacity_gib_per_gpu"]) * gpus_per_replica,
        read_gb_s=float(t["read_gb_s_per_gpu"]) * gpus_per_replica,
    )


def _pool_spec(name: str, pool: PoolShape, n: int, model_id: str, engine: str, speculative: Any = None) -> PoolSpec:
    spec = None
    if speculative is not None and speculative.times_pool(pool.role):  # a prefill pool never decodes
        spec = SpeculativeSpec(**speculative.to_dict())
    return PoolSpec(
        speculative=spec,
        name=name,
        role=pool.role,  # type: ignore[arg-type]
        replicas=n,
        gpu=pool.gpu_id,
        model=model_id,
        tp=pool.tp,
        pp=pool.pp,
        ep=pool.ep,
        weight_precision=pool.weight_precision,
        kv_dtype=pool.kv_dtype,
        engine=EngineSpec(
            family=engine,  # type: ignore[arg-type]
            max_num_seqs=pool.max_num_seqs,
            max_num_batched_tokens=max(pool.max_num_batched_tokens, pool.max_num_seqs),
            enable_prefix_caching=pool.enable_prefix_caching,
            enable_chunked_prefill=True,
            offload=offload_tier(pool.kv_offload, pool.gpus_per_replica) if pool.kv_offload != "none" else None,
        ),
    )


def candidate_to_deployment(
    cand: Candidate,
    level: int,
    model_id: str,
    *,
    engine: str = "vllm",
    prices: Mapping[str, float] | None = None,
    name: str = "plan",
    description: str = "",
    speculative: Any = None,
) -> Deployment:
    """``cand`` at size ``level`` as a deployment (prices: gpu id -> usd_per_gpu_hour used by the plan;
    ``speculative``: the plan's speculative decoding, set on every pool that decodes)."""
    replicas = cand.replicas_at(level)
    pools = [_pool_spec(p.role, p, n, model_id, engine, speculative) for p, n in zip(cand.pools, replicas, strict=True)]
    used = {p.gpu_id for p in cand.pools}
    return Deployment(
        name=name,
        description=description,
        pools=pools,
        router=RouterSpec(policy=cand.router),
        pd=PdSpec(link=PD_LINK) if cand.disaggregated else None,
        prices={g: float(v) for g, v in sorted((prices or {}).items()) if g in used},
    )


def deployment_to_yaml(dep: Deployment, header: str = "") -> str:
    """YAML text of ``dep`` (only fields that differ from defaults are omitted: none; explicit is better)."""
    body = yaml.safe_dump(dep.model_dump(mode="json", exclude_none=True), sort_keys=False)
    if header:
        body = "".join(f"# {line}\n" for line in header.splitlines()) + body
    return body
