"""The gateway's AdmissionController in simulated time: the same class, in front of the simulated fleet."""

from __future__ import annotations

import numpy as np

from gpuyield.core.catalog import default_catalog
from gpuyield.core.sim.deployment import parse_deployment
from gpuyield.core.sim.simulate import simulate
from gpuyield.core.workload.workload import Workload, WorkloadMeta


def _two_tenants(flood_rate: float, quiet_rate: float, seconds: float, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    parts = []
    for code, rate in ((0, flood_rate), (1, quiet_rate)):
        n = rng.poisson(rate * seconds)
        parts.append((np.sort(rng.uniform(0, seconds, n)), np.full(n, code, dtype=np.int32)))
    arr = np.concatenate([p[0] for p in parts])
    ten = np.concatenate([p[1] for p in parts])
    order = np.argsort(arr, kind="stable")
    n = len(arr)
    return Workload(arrival_s=arr[order], input_tokens=np.full(n, 2000), output_tokens=np.full(n, 200),
                    tenant_codes=ten[order], tenants=("flood", "quiet"), meta=WorkloadMeta("two-tenants"))  # fmt: skip


def _deployment(admission: dict | None) -> object:  # type: ignore[type-arg]
    doc = {"name": "one-l4", "pools": [{"name": "p", "replicas": 1, "gpu": "l4", "model": "Qwen/Qwen3-0.6B",
                                       "engine": {"max_num_seqs": 64}}]}  # fmt: skip
    if admission is not None:
        doc["admission"] = admission
    return parse_deployment(doc)


def _quiet_ttft_p99(summary_records, w: Workload) -> float:  # type: ignore[no-untyped-def]
    quiet = (w.tenant_codes == 1) & (summary_records.status == 0)
    ttft = summary_records.first_token_s[quiet] - summary_records.arrival_s[quiet]
    return float(np.percentile(ttft, 99))


def test_fair_queueing_protects_a_quiet_tenant_from_a_flood() -> None:
    cat = default_catalog()
    # the quiet tenant needs ~3 concurrent slots; the burst (4) is the engine headroom beyond max_inflight
    w = _two_tenants(flood_rate=40.0, quiet_rate=0.2, seconds=120.0)
    alone = _two_tenants(flood_rate=0.0, quiet_rate=0.2, seconds=120.0)
    adm = {"max_inflight": 32, "max_queued": 100_000, "max_queue_wait_s": 10_000, "fair_share_burst": 4,
           "tenants": [{"name": "flood"}, {"name": "quiet"}]}  # fmt: skip
    no_adm = simulate(_deployment(None), w, cat).records  # type: ignore[arg-type]
    fair = simulate(_deployment(adm), w, cat).records  # type: ignore[arg-type]
    solo = simulate(_deployment(adm), alone, cat).records  # type: ignore[arg-type]
    assert np.all(fair.status == 0)  # queued, not dropped
    p_fair, p_plain, p_solo = _quiet_ttft_p99(fair, w), _quiet_ttft_p99(no_adm, w), _quiet_ttft_p99(solo, alone)
    # without admission the quiet tenant queues behind the flood inside the engine; with token-fair queueing
    # and the fair-share burst slots its requests overtake the flood's backlog
    assert p_fair < p_plain / 10
    # what remains is engine-level interference (its prefill shares steps with 32 long decodes), not queueing
    assert p_fair < p_solo + 2.0, (p_fair, p_plain, p_solo)


def test_budgets_and_queue_limits_reject_with_reasons() -> None:
    cat = default_catalog()
    w = _two_tenants(flood_rate=20.0, quiet_rate=1.0, seconds=60.0)
    adm = {"max_inflight": 8, "max_queued": 1000, "fair_share_burst": 2, "max_queue_wait_s": 1000,
           "tenants": [{"name": "flood", "tokens_per_min": 20_000, "max_queued": 20}, {"name": "quiet"}]}  # fmt: skip
    res = simulate(_deployment(adm), w, cat)
    s = res.summary
    assert s["completed"] + s["rejected"] == s["requests"] == len(w)
    reasons = " ".join(s["reject_reasons"])
    assert "tokens_per_min budget exhausted" in reasons
    rec = res.records
    flood = w.tenant_codes == 0
    # the flood's admitted tokens per minute stay within its budget (+ one request of debt), the quiet tenant loses nothing
    done_flood = (rec.status == 0) & flood
    assert int((rec.input_tokens[done_flood] + rec.output_tokens[done_flood]).sum()) <= 20_000 * 2 + 2200
    assert np.all(rec.status[~flood] == 0)
