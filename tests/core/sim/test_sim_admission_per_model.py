"""The simulated gateway admits per model, as `serve` does: a flooded model does not delay a quiet one."""

from __future__ import annotations

import numpy as np

from gpuyield.core.catalog import default_catalog
from gpuyield.core.sim.deployment import parse_deployment
from gpuyield.core.sim.simulate import simulate
from gpuyield.core.workload.workload import Workload, WorkloadMeta


def _two_models(flood_rate: float, quiet_rate: float, seconds: float, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    arrs, codes = [], []
    for code, rate in ((0, flood_rate), (1, quiet_rate)):
        n = rng.poisson(rate * seconds)
        arrs.append(np.sort(rng.uniform(0, seconds, n)))
        codes.append(np.full(n, code, dtype=np.int32))
    arr, code = np.concatenate(arrs), np.concatenate(codes)
    order = np.argsort(arr, kind="stable")
    n = len(arr)
    return Workload(arrival_s=arr[order], input_tokens=np.full(n, 2000), output_tokens=np.full(n, 200),
                    model_codes=code[order], models=("busy", "quiet"), meta=WorkloadMeta("two-models"))  # fmt: skip


def _deployment(admission: dict) -> object:  # type: ignore[type-arg]
    pools = [{"name": name, "replicas": 1, "gpu": "l4", "model": "Qwen/Qwen3-0.6B", "served_model_names": [name],
              "engine": {"max_num_seqs": 64}} for name in ("busy", "quiet")]  # fmt: skip
    return parse_deployment({"name": "two-models", "pools": pools, "router": {"policy": "least_outstanding"},
                             "admission": admission})  # fmt: skip


def _quiet_ttft_p99(records, w: Workload) -> float:  # type: ignore[no-untyped-def]
    quiet = (w.model_codes == 1) & (records.status == 0)
    return float(np.percentile(records.first_token_s[quiet] - records.arrival_s[quiet], 99))


def test_a_flooded_model_no_longer_holds_back_a_quiet_one() -> None:
    cat = default_catalog()
    w = _two_models(flood_rate=40.0, quiet_rate=0.5, seconds=120.0)
    alone = _two_models(flood_rate=0.0, quiet_rate=0.5, seconds=120.0)
    common = {"max_queued": 100_000, "max_queue_wait_s": 10_000}
    shared = simulate(_deployment({"max_inflight": 32, **common}), w, cat).records  # type: ignore[arg-type]
    per_model = simulate(_deployment({"max_inflight_per_replica": 16, **common}), w, cat).records  # type: ignore[arg-type]
    solo = simulate(_deployment({"max_inflight_per_replica": 16, **common}), alone, cat).records  # type: ignore[arg-type]
    assert np.all(per_model.status == 0)
    p_shared, p_model, p_solo = _quiet_ttft_p99(shared, w), _quiet_ttft_p99(per_model, w), _quiet_ttft_p99(solo, alone)
    # one gateway-wide limit: the busy model's backlog holds every slot and the quiet model's requests queue
    # behind it; per-model limits: the quiet model's replica is idle, so its requests go straight through
    assert p_model < p_shared / 10, (p_model, p_shared)
    assert p_model < p_solo * 1.5 + 0.05, (p_model, p_solo)
