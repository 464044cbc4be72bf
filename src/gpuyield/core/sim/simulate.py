"""``simulate(deployment, workload, catalog, seed, slo) -> SimResult``: build the fleet, replay, summarise.

Step times and KV capacity come from :class:`gpuyield.core.perf.PerfModel` (one per pool); prices from the
catalogue (``catalog.gpu_price``) unless the deployment overrides them. Core code reads no clock: the caller
may pass ``wall_clock`` (e.g. ``time.perf_counter``) to fill ``sim_wall_s`` and ``sim_requests_per_s``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpuyield.core.policy.routing import make_policy
from gpuyield.core.sim.closed_loop import (
    engine_config_for_memory_plan,
    fixed_blocks_of_memory_plan,
    kv_blocks_from_memory_plan,
)
from gpuyield.core.sim.cluster import STATUS_COMPLETED, Cluster, ClusterRecords, ReplicaSetup
from gpuyield.core.sim.deployment import Deployment
from gpuyield.core.sim.measured import MeasuredAt, WorkloadLengths, routed_points
from gpuyield.core.sim.multiplex import MultiplexState, multiplex_summary
from gpuyield.core.workload.request import Request
from gpuyield.core.workload.stats import mean_p50_p90_p99
from gpuyield.core.workload.transforms import rate_scale as _rate_scale
from gpuyield.core.workload.transforms import slice_time
from gpuyield.core.workload.workload import Workload, WorkloadMeta
from gpuyield.errors import CatalogError, ConfigError

__all__ = ["SimResult", "SloTarget", "build_cluster", "simulate", "summarise"]


@dataclass(frozen=True, slots=True)
class SloTarget:
    """Per-request latency targets (ms). A request meets the SLO if it completed and meets every given target;
    the ``p99`` in the names says the fleet is judged at its 99th percentile (reported separately)."""

    ttft_p99_ms: float | None = None
    tpot_p99_ms: float | None = None
    e2e_p99_ms: float | None = None

    def __post_init__(self) -> None:
        for k in ("ttft_p99_ms", "tpot_p99_ms", "e2e_p99_ms"):
            v = getattr(self, k)
            if v is not None and not v > 0:
                raise ConfigError(f"slo.{k}: must be > 0 ms, got {v}")


@dataclass(slots=True)
class SimResult:
    summary: dict[str, Any]  # the summary JSON (keys documented in docs/cli.md, "gpuyield simulate")
    records: ClusterRecords  # per-request columns

    def record_rows(self) -> dict[str, Any]:
        """Per-request records as columns of plain lists (for Parquet/CSV/JSONL writers at the edge)."""
        r = self.records
        reasons = r.reasons
        ids = r.replica_ids

        def ms(a: np.ndarray) -> list[float | None]:
            return [None if math.isnan(x) else x for x in a.tolist()]

        return {
            "req_id": list(range(len(r.arrival_s))),
            "arrival_s": r.arrival_s.tolist(),
            "first_token_s": ms(r.first_token_s),
            "finish_s": ms(r.finish_s),
            "input_tokens": r.input_tokens.tolist(),
            "output_tokens": r.output_tokens.tolist(),
            "cached_tokens": r.cached_tokens.tolist(),
            "replica": [ids[k] if k >= 0 else None for k in r.replica.tolist()],
            "prefill_replica": [ids[k] if k >= 0 else None for k in r.prefill_replica.tolist()],
            "preemptions": r.preemptions.tolist(),
            "status": ["completed" if s == STATUS_COMPLETED else "rejected" for s in r.status.tolist()],
            "reject_reason": [reasons[k] if k >= 0 else None for k in r.reject_reason.tolist()],
        }


def _stats_ms(values_s: np.ndarray) -> dict[str, float | None]:
    if values_s.size == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    mean, p50, p90, p99 = mean_p50_p90_p99(values_s * 1e3)
    return {"mean": mean, "p50": p50, "p90": p90, "p99": p99}


def _p99_within(stats_ms: dict[str, float | None], limit_ms: float | None, *, empty_ok: bool) -> bool:
    """No limit, or the p99 of ``stats_ms`` is within it; no samples pass only when ``empty_ok``."""
    if limit_ms is None:
        return True
    p99 = stats_ms["p99"]
    return empty_ok if p99 is None else p99 <= limit_ms


def build_cluster(
    deployment: Deployment,
    catalog: Any,
    *,
    seed: int = 0,
    calibration: Any = None,
    measured_at: MeasuredAt | None = None,
) -> tuple[Cluster, list[dict[str, Any]]]:
    """The :class:`Cluster` for ``deployment`` and one info dict per pool (gpu, model, blocks, memory plan).
    ``calibration`` (a :class:`~gpuyield.core.perf.Calibration`; None = the shipped one) times every step.
    ``measured_at`` (mean prompt and output tokens for every replica, or a :class:`WorkloadLengths`, whose
    requests are routed to replicas as the cluster routes them, so each pool and each multiplexed model is
    adjusted at the mean lengths of the requests it receives): a pool whose architecture, engine and precision
    the calibration holds measured points of has its step times adjusted to them there
    (``gpuyield.core.sim.measured``; the info dict's ``measured_step_scales``), and so has each model of a
    multiplexed group. A prefill or decode pool takes the scales of an aggregated replica of its shape (the
    same kernels). None: the step model alone."""
    from gpuyield.core.perf import PerfModel
    from gpuyield.core.perf.closed_loop import own_scheduler_limits
    from gpuyield.core.sim.measured import with_measured_scales

    def resolve(name: str) -> str | None:
        found = catalog.find_model(name) if hasattr(catalog, "find_model") else None
        return found.id if found is not None else None

    default_model = None
    if deployment.default_model is not None:
        default_model = catalog.model(deployment.default_model).id
    points: dict[Any, tuple[int, int] | None] = {}
    if isinstance(measured_at, WorkloadLengths):
        kinds: list[tuple[Any, str, Sequence[str], str]] = [
            (("pool", p.name), catalog.model(p.model).id, tuple(p.served_model_names), p.role)
            for p in deployment.pools
        ]
        for g in deployment.multiplex.groups if deployment.multiplex is not None else ():
            for ref, arch in zip(g.models, g.model_archs, strict=True):
                lab = catalog.model(arch).id if isinstance(ref, str) else ref.name
                kinds.append((("mux", g.name, lab), lab, (), "mixed"))
        points = routed_points(measured_at, kinds, default_model, resolve)

    def point(key: Any) -> tuple[int, int] | None:
        return points.get(key) if isinstance(measured_at, WorkloadLengths) else measured_at

    setups: list[ReplicaSetup] = []
    pools_info: list[dict[str, Any]] = []
    for pool in deployment.pools:
        where = f"pools[{pool.name}]"
        model = catalog.model(pool.model)
        gpu = calibration.accelerator(catalog, pool.gpu) if calibration is not None else catalog.gpu(pool.gpu)
        perf = PerfModel.build_pool(  # a P/D pool runs the P/D constants, as `estimate --layout` does
            model,
            gpu,
            pool.role,
            tp=pool.tp,
            pp=pool.pp,
            ep=pool.ep,
            weight_precision=pool.weight_precision,
            kv_dtype=pool.kv_dtype,
            engine=pool.engine.family,
            calibration=calibration,
        )
        # the engine's own limits on this GPU, as `estimate` takes them (engine_families.yaml, or the calibration's)
        cfg = pool.engine.to_config(model_max_len=model.max_position_embeddings, own_limits=own_scheduler_limits(perf))
        if pool.speculative is not None:
            try:
                perf = perf.with_speculative(pool.speculative.to_core())
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        perf, scales = with_measured_scales(
            perf, model_id=model.id, gpu_id=gpu.id, engine=cfg.family, at=point(("pool", pool.name)),
            calibration=calibration, catalog=catalog, max_num_seqs=cfg.max_num_seqs,
        )  # fmt: skip
        plan = perf.memory(cfg.gpu_memory_utilization, cfg.max_model_len, prefix_caching=cfg.enable_prefix_caching)
        cfg = engine_config_for_memory_plan(cfg, plan)
        try:
            blocks = kv_blocks_from_memory_plan(plan, cfg.block_size)
        except Exception as exc:
            raise type(exc)(f"{where}: {exc}") from None
        kv_bpt = float(model.kv_bytes_per_token(pool.kv_dtype))
        pools_info.append(
            {"pool": pool.name, "role": pool.role, "gpu": gpu.id, "model": model.id, "replicas": pool.replicas,
             "gpus_per_replica": pool.gpus_per_replica, "num_gpu_blocks": blocks, "block_size": cfg.block_size,
             "kv_capacity_tokens": blocks * cfg.block_size, "engine": cfg.family, "max_num_seqs": cfg.max_num_seqs,
             "max_num_batched_tokens": cfg.max_num_batched_tokens,
             "measured_step_scales": scales.to_dict() if scales is not None else None}
        )  # fmt: skip
        for k in range(pool.replicas):
            setups.append(
                ReplicaSetup(
                    replica_id=f"{pool.name}-{k}",
                    pool=pool.name,
                    role=pool.role,
                    gpu=gpu.id,
                    model=model.id,
                    engine_config=cfg,
                    step_model=perf,
                    num_gpu_blocks=blocks,
                    kv_bytes_per_token=kv_bpt,
                    fixed_blocks_of=fixed_blocks_of_memory_plan(plan, cfg.block_size),
                    kv_bytes_for_prompt=functools.partial(model.kv_bytes_for_context, kv_dtype=pool.kv_dtype),
                    num_gpus=pool.gpus_per_replica,
                    tp=pool.tp,
                    served_model_names=tuple(pool.served_model_names),
                    first_token_overhead_s=perf.first_token_overhead_s,
                )
            )
    router = deployment.router
    policy = make_policy(router.policy, **router.args)
    mux = None
    if deployment.multiplex is not None:
        from gpuyield.core.sim.deployment import EngineSpec
        from gpuyield.core.sim.multiplex import ResidencyTrackingPolicy, build_multiplex

        mux_setups, mux, mux_info = build_multiplex(
            deployment.multiplex, catalog, EngineSpec, ReplicaSetup, calibration=calibration,
            measured_at=None if measured_at is None else lambda group, label: point(("mux", group, label)),
        )
        setups.extend(mux_setups)
        pools_info.extend(mux_info)
        policy = ResidencyTrackingPolicy(policy, mux)
    decode_policy = None
    bw, lat = 50e9, 25e-6
    if deployment.pd is not None or deployment.is_disaggregated:
        from gpuyield.core.sim.deployment import PdSpec

        pd = deployment.pd or PdSpec()
        decode_policy = make_policy(pd.decode_router.policy, **pd.decode_router.args)
        link = pd.resolved_link()
        bw, lat = link.bandwidth_gb_s * 1e9, link.latency_us * 1e-6

    cluster = Cluster(
        setups,
        policy,
        decode_policy=decode_policy,
        link_bandwidth_bytes_per_s=bw,
        link_latency_s=lat,
        default_model=default_model,
        model_resolver=resolve,
        residency=mux,
        admission=deployment.admission.build() if deployment.admission is not None else None,
        admission_per_replica=deployment.admission.max_inflight_per_replica if deployment.admission else None,
    )
    if mux is not None:
        mux.attach_engines({rt.setup.replica_id: rt.engine for rt in cluster.rts})
    if router.kv_events:
        cluster.follow_kv_events()
    return cluster, pools_info


def _prices(deployment: Deployment, catalog: Any, gpus: list[str]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    out: dict[str, float] = {}
    info: list[dict[str, Any]] = []
    for g in sorted(set(gpus)):
        override = deployment.prices.get(g)
        if override is None:
            for k, v in deployment.prices.items():
                try:
                    if catalog.gpu(k).id == g:
                        override = v
                except CatalogError:
                    continue
        if override is not None:
            out[g] = override
            info.append({"gpu": g, "usd_per_gpu_hour": override, "source": "deployment prices override", "as_of": None})
            continue
        try:
            p = catalog.gpu_price(g)
        except CatalogError as exc:
            info.append({"gpu": g, "usd_per_gpu_hour": None, "source": str(exc), "as_of": None})
            continue
        out[g] = float(p.usd_per_gpu_hour)
        info.append({"gpu": g, "usd_per_gpu_hour": float(p.usd_per_gpu_hour), "source": f"{p.provider} {p.tier}",
                     "as_of": str(p.as_of)})  # fmt: skip
    return out, info


def summarise(
    rec: ClusterRecords,
    slo: SloTarget | None,
    prices_usd_per_gpu_hour: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The summary dictionary (keys as the issue specifies) from per-request records."""
    n = len(rec.arrival_s)
    done = rec.status == STATUS_COMPLETED
    num_done = int(done.sum())
    start = float(rec.arrival_s.min()) if n else 0.0
    # the window ends at the last engine event or the last (first-token-overhead shifted) finish, if later
    last_finish = float(np.nanmax(rec.finish_s)) if np.isfinite(rec.finish_s).any() else start
    duration = max(max(rec.end_s, last_finish) - start, 0.0)
    ttft = rec.first_token_s[done] - rec.arrival_s[done]
    e2e = rec.finish_s[done] - rec.arrival_s[done]
    out_tok = rec.output_tokens[done]
    multi = out_tok > 1
    tpot = (rec.finish_s[done][multi] - rec.first_token_s[done][multi]) / (out_tok[multi] - 1)
    ok = np.ones(num_done, dtype=bool)
    if slo is not None:
        if slo.ttft_p99_ms is not None:
            ok &= ttft * 1e3 <= slo.ttft_p99_ms
        if slo.tpot_p99_ms is not None:
            tp_all = np.zeros(num_done)
            tp_all[multi] = tpot
            ok &= tp_all * 1e3 <= slo.tpot_p99_ms
        if slo.e2e_p99_ms is not None:
            ok &= e2e * 1e3 <= slo.e2e_p99_ms
    num_good = int(ok.sum())
    total_out = int(out_tok.sum())
    q = sum(r.prefix_query_tokens for r in rec.replicas)
    h = sum(r.prefix_hit_tokens for r in rec.replicas)
    per_replica = []
    for r in rec.replicas:
        per_replica.append(
            {
                "id": r.replica_id,
                "pool": r.pool,
                "role": r.role,
                "gpu": r.gpu,
                "model": r.model,
                "busy_frac": r.busy_s / duration if duration > 0 else 0.0,
                "requests": r.requests,
                "output_tokens": r.output_tokens,
                "kv_util_mean": r.kv_used_block_s / (duration * r.num_gpu_blocks) if duration > 0 else 0.0,
                "preemptions": r.preemptions,
            }
        )
    gpu_count = sum(r.num_gpus for r in rec.replicas)
    cost = None
    if prices_usd_per_gpu_hour is not None and all(r.gpu in prices_usd_per_gpu_hour for r in rec.replicas):
        cost = sum(r.num_gpus * prices_usd_per_gpu_hour[r.gpu] for r in rec.replicas)
    thr_out = total_out / duration if duration > 0 else 0.0
    reject_counts: dict[str, int] = {}
    for k in rec.reject_reason[rec.reject_reason >= 0].tolist():
        reject_counts[rec.reasons[k]] = reject_counts.get(rec.reasons[k], 0) + 1
    ttft_ms, tpot_ms, e2e_ms = _stats_ms(ttft), _stats_ms(tpot), _stats_ms(e2e)
    return {
        "requests": n,
        "completed": num_done,
        "rejected": n - num_done,
        "reject_reasons": reject_counts,
        "duration_s": duration,
        "throughput_output_tok_s": thr_out,
        "throughput_req_s": num_done / duration if duration > 0 else 0.0,
        "goodput_req_s": num_good / duration if duration > 0 else 0.0,
        "slo": None if slo is None else {k: getattr(slo, k) for k in ("ttft_p99_ms", "tpot_p99_ms", "e2e_p99_ms")},
        "slo_attainment": num_good / n if n else 0.0,
        "slo_met_at_p99": (
            None
            if slo is None
            else bool(
                _p99_within(ttft_ms, slo.ttft_p99_ms, empty_ok=False)
                and _p99_within(tpot_ms, slo.tpot_p99_ms, empty_ok=True)
                and _p99_within(e2e_ms, slo.e2e_p99_ms, empty_ok=False)
            )
        ),
        "ttft_ms": ttft_ms,
        "tpot_ms": tpot_ms,
        "e2e_ms": e2e_ms,
        "prefix_cache_hit_rate": h / q if q else 0.0,
        "preemptions": int(sum(r.preemptions for r in rec.replicas)),
        "per_replica": per_replica,
        "gpu_count": gpu_count,
        "cost_usd_per_hour": cost,
        "usd_per_1m_output_tokens": (cost / (thr_out * 3600.0) * 1e6) if cost is not None and thr_out > 0 else None,
        "sim_events": rec.num_events,
    }


def simulate(
    deployment: Deployment,
    workload: Workload | list[Request],
    catalog: Any,
    seed: int = 0,
    slo: SloTarget | None = None,
    *,
    rate_scale: float = 1.0,
    duration_s: float | None = None,
    progress: Callable[[int], None] | None = None,
    wall_clock: Callable[[], float] | None = None,
    calibration: Any = None,
    measured: bool = True,
    measured_at: MeasuredAt | None = None,
) -> SimResult:
    """Replay ``workload`` on ``deployment``; every request ends completed or rejected with a reason.

    ``rate_scale`` multiplies the arrival rate (arrival times divided by it); ``duration_s`` keeps only the
    arrivals in the first ``duration_s`` simulated seconds (after scaling); those all run to completion.
    ``seed`` seeds every random choice (routing policies here are deterministic; the same inputs and seed give
    byte-identical results). ``calibration`` times the steps (None = the shipped calibration).
    ``measured`` adjusts pools' step times to the calibration's measured operating points near their shape
    (:func:`build_cluster`), at ``measured_at`` (mean prompt and output tokens; None: each pool's and each
    multiplexed model's at the means of the requests routed to it); False: the step model alone.
    """
    t0 = wall_clock() if wall_clock is not None else None
    w = workload if isinstance(workload, Workload) else Workload.from_requests(workload, WorkloadMeta("requests"))
    if rate_scale <= 0 or not math.isfinite(rate_scale):
        raise ConfigError(f"--rate-scale must be a positive number, got {rate_scale}")
    if rate_scale != 1.0:
        w = _rate_scale(w, rate_scale)
    if duration_s is not None:
        if duration_s <= 0:
            raise ConfigError(f"--duration must be > 0 s, got {duration_s}")
        w = slice_time(w, 0.0, float(w.arrival_s[0]) + duration_s if len(w) else duration_s, rebase_time=False)
    if measured and measured_at is None and len(w):
        measured_at = WorkloadLengths.of(w.input_tokens, w.output_tokens, w.model_codes, w.models)
    cluster, pools_info = build_cluster(
        deployment, catalog, seed=seed, calibration=calibration, measured_at=measured_at if measured else None
    )
    rec = cluster.run(w, progress=progress)
    prices, price_info = _prices(deployment, catalog, [r.gpu for r in rec.replicas])
    summary = summarise(rec, slo, prices)
    summary["prices"] = price_info
    summary["pools"] = pools_info
    if isinstance(cluster.residency, MultiplexState):
        summary["multiplex"] = multiplex_summary(cluster.residency, rec, w, summary["duration_s"], slo)
    summary["seed"] = seed
    summary["workload"] = {"name": w.meta.name, "source": w.meta.source, "rate_scale": rate_scale,
                           "duration_s": duration_s}  # fmt: skip
    if t0 is not None and wall_clock is not None:
        wall = wall_clock() - t0
        summary["sim_wall_s"] = wall
        summary["sim_requests_per_s"] = len(w) / wall if wall > 0 else None
    else:
        summary["sim_wall_s"] = None
        summary["sim_requests_per_s"] = None
    return SimResult(summary=summary, records=rec)

