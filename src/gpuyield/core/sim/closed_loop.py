"""Closed-loop and offline benchmarks of one replica, for ``gpuyield estimate`` / ``validate``.

How to call it (performance engineer)::

    from gpuyield.core.sim import EngineConfig, run_closed_loop
    perf = PerfModel.build(model_spec, accelerator, tp=1, engine="vllm")
    cfg = EngineConfig.for_family("vllm", max_num_seqs=256, max_num_batched_tokens=8192)
    res = run_closed_loop(perf, cfg, isl=2000, osl=500, concurrency=32)             # C clients, closed loop
    res = run_closed_loop(perf, cfg, isl=2000, osl=500, concurrency=64, offline=True)  # N requests at t=0
    res.ttft_ms.p50, res.tpot_ms.mean, res.output_tok_s

KV capacity comes from ``perf.memory(cfg.gpu_memory_utilization, max_model_len)`` (``kv_capacity_tokens`` and
``fits``; ``max_model_len`` is ``cfg.max_model_len``, else ``isl + osl``, as a benchmark sets it) unless
``num_gpu_blocks`` is given. Prefix caching is irrelevant here (prompts share nothing).

Closed loop: ``concurrency`` clients each send a request, and the next one the moment the previous finishes,
until ``num_requests`` have been sent. This follows the protocol of the benchmark clients that produce
published numbers (vLLM's and SGLang's ``bench_serving``, genai-perf/aiperf at fixed concurrency): every
client sends its first request at t = 0 and latencies are the mean over every request. ``num_requests``
defaults to :data:`REQUESTS_PER_CLIENT` per client (at most :data:`MAX_REQUESTS` in total, never fewer than
the clients): three, fitted to measured mean TTFTs (``sim/data/closed_loop.yaml``; ten, bench_serving's
convention, weighed the first wave too little). The first wave is a burst whose prompts queue behind each
other, packed into steps by the token budget; clients whose prompts shared a step finish together and send
together again, so later waves stay partly packed. ``start_spread > 0`` instead starts client ``i`` at a
seeded uniform offset in ``[0, start_spread x T)`` (``T``: one request's zero-queue duration at full
concurrency), and ``exclude_warmup=True`` drops the first ``concurrency`` requests from the latencies, for a
desynchronised steady state. Output throughput is measured over the steady window between the
``concurrency``-th completion and the last send, when concurrency is exactly C.

Offline (``offline=True``): all ``num_requests`` (default ``concurrency``) are queued at time 0; throughput is
total output tokens over the makespan, latencies cover every request.

Deterministic: the same ``seed`` gives the same start offsets and byte-identical results.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import yaml

from gpuyield.core.perf.closed_loop import replica_seq_limit, scheduler_limits
from gpuyield.core.sim.engine.config import ENGINE_FAMILIES, EngineConfig
from gpuyield.core.sim.engine.replica import ReplicaEngine
from gpuyield.core.sim.engine.request import EngineRequest
from gpuyield.core.sim.steptime import StepTimeModel
from gpuyield.core.workload.stats import mean_p50_p90_p99
from gpuyield.errors import ConfigError, DoesNotFitError

__all__ = [
    "MAX_REQUESTS",
    "REQUESTS_PER_CLIENT",
    "ClosedLoopResult",
    "EngineEstimate",
    "LatencyStats",
    "estimate_disaggregated_with_engine_model",
    "estimate_with_engine_model",
    "fixed_blocks_of_memory_plan",
    "kv_blocks_from_memory_plan",
    "run_closed_loop",
]


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Distribution summary in milliseconds."""

    mean: float
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values_ms: np.ndarray) -> LatencyStats:
        if values_ms.size == 0:
            nan = float("nan")
            return cls(nan, nan, nan, nan)
        return cls(*mean_p50_p90_p99(values_ms))


@dataclass(frozen=True, slots=True)
class ClosedLoopResult:
    isl: int
    osl: int
    concurrency: int
    offline: bool
    num_requests: int  # requests simulated
    num_measured: int  # requests the latency statistics cover
    ttft_ms: LatencyStats
    tpot_ms: LatencyStats  # (finish - first token) / (osl - 1); NaN stats when osl == 1
    e2e_ms: LatencyStats
    output_tok_s: float  # output tokens per second (steady window, or makespan when offline)
    request_per_s: float
    duration_s: float  # simulated time until the last request finished
    num_preemptions: int
    prefill_tok_s: float  # prompt tokens per second over the same window
    seed: int


def _protocol(text: str | None = None, where: str = "gpuyield/core/sim/data/closed_loop.yaml") -> dict[str, Any]:
    """The closed-loop benchmark protocol (``sim/data/closed_loop.yaml``, or ``text`` in its form, named ``where``
    in errors), checked."""
    if text is None:
        text = resources.files("gpuyield.core.sim").joinpath("data/closed_loop.yaml").read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping")
    for name in ("requests_per_client", "max_requests"):
        v = data.get(name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{where}: {name} must be a positive integer, got {v!r}")
    if not str(data.get("source") or "").strip():
        raise ConfigError(f"{where}: source is required (where the protocol comes from)")
    return data


_PROTOCOL = _protocol()
# Requests each client sends by default (the first wave's share of the mean TTFT is one in this many), and the cap
# on the total: the shipped protocol, fitted to measured mean TTFTs (``sim/data/closed_loop.yaml``).
REQUESTS_PER_CLIENT: int = _PROTOCOL["requests_per_client"]
MAX_REQUESTS: int = _PROTOCOL["max_requests"]


def kv_blocks_from_memory_plan(plan: Any, block_size: int) -> int:
    """KV blocks from a perf ``MemoryPlan`` (``fits``, ``reason``, ``kv_capacity_tokens``)."""
    if not getattr(plan, "fits", True):
        raise DoesNotFitError(str(getattr(plan, "reason", "the model does not fit in GPU memory")))
    for name in ("kv_capacity_tokens", "kv_tokens", "kv_cache_tokens"):
        tokens = getattr(plan, name, None)
        if tokens is not None:
            blocks = int(tokens) // block_size
            if blocks < 1:
                raise DoesNotFitError(f"KV capacity {tokens} tokens is less than one {block_size}-token block")
            return blocks
    raise ConfigError(f"memory plan {type(plan).__name__} has no kv_capacity_tokens")


def engine_config_for_memory_plan(config: EngineConfig, plan: Any) -> EngineConfig:
    """``config`` with the prefix-hit granule the memory plan implies: vLLM caches a hybrid (linear-attention)
    model's prefixes in its raised blocks (``MemoryPlan.hybrid_block_tokens``); unchanged otherwise."""
    granule = int(getattr(plan, "hybrid_block_tokens", 0) or 0)
    return dataclasses.replace(config, prefix_hit_tokens=granule) if granule else config


def fixed_blocks_of_memory_plan(plan: Any, block_size: int) -> Callable[[int], int] | None:
    """``length -> blocks`` a sequence of that many tokens holds for its bounded cache (windows filled to
    min(length, window)), from a perf ``MemoryPlan``; None for a plan without it."""
    method = getattr(plan, "fixed_blocks_for", None)
    if not callable(method):
        return None
    return functools.partial(method, block_size=block_size)


def _request_duration_s(perf_model: StepTimeModel, cfg: EngineConfig, isl: int, osl: int, c: int) -> float:
    """Zero-queue duration of one request among ``c`` running ones: its (chunked) prefill alone, then
    ``osl - 1`` decode steps of ``c`` sequences at mean context ``isl + osl/2``. Sets the start spread."""
    budget = max(1, int(cfg.max_num_batched_tokens))
    t = 0.0
    done = 0
    while done < isl:
        k = min(budget, isl - done)
        t += perf_model.step_time_s(k, k * (done + k / 2.0), 0, 0)
        done += k
    if osl > 1:
        t += (osl - 1) * perf_model.step_time_s(0, 0.0, c, int(c * (isl + osl / 2.0)))
    return t


def run_closed_loop(
    perf_model: StepTimeModel,
    engine_config: EngineConfig,
    isl: int,
    osl: int,
    concurrency: int,
    num_requests: int | None = None,
    seed: int = 0,
    *,
    offline: bool = False,
    num_gpu_blocks: int | None = None,
    start_spread: float = 0.0,
    exclude_warmup: bool = False,
    fixed_blocks_per_seq: int | None = None,
) -> ClosedLoopResult:
    """Simulate C clients in a closed loop (or N requests queued at once) against one replica. Without
    ``num_gpu_blocks`` the KV blocks and the blocks each sequence's bounded cache takes come from the perf
    model's memory plan; ``fixed_blocks_per_seq`` overrides the latter (0 when ``num_gpu_blocks`` is given)."""
    if isl < 1 or osl < 1:
        raise ConfigError(f"isl and osl must be >= 1, got isl={isl} osl={osl}")
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    if not 0.0 <= start_spread <= 10.0:
        raise ConfigError(f"start_spread must be in [0, 10] request durations, got {start_spread}")
    if num_requests is None:
        num_requests = concurrency if offline else max(concurrency, min(REQUESTS_PER_CLIENT * concurrency, MAX_REQUESTS))
    if num_requests < 1:
        raise ConfigError(f"num_requests must be >= 1, got {num_requests}")
    fixed_blocks = fixed_blocks_per_seq or 0
    fixed_of = None
    if num_gpu_blocks is None:
        memory = getattr(perf_model, "memory", None)
        if memory is None:
            raise ConfigError("num_gpu_blocks not given and the perf model has no memory(...)")
        # a benchmark of fixed lengths runs its engine with a context that holds them (--max-model-len), as
        # estimate's memory report and the analytic solver assume, unless the config sets its own
        plan = memory(
            engine_config.gpu_memory_utilization,
            engine_config.max_model_len or isl + osl,
            prefix_caching=engine_config.enable_prefix_caching,
        )
        num_gpu_blocks = kv_blocks_from_memory_plan(plan, engine_config.block_size)
        engine_config = engine_config_for_memory_plan(engine_config, plan)
        if fixed_blocks_per_seq is None:
            fixed_of = fixed_blocks_of_memory_plan(plan, engine_config.block_size)
    eng = ReplicaEngine(
        engine_config, perf_model, num_gpu_blocks, fixed_blocks_per_seq=fixed_blocks, fixed_blocks_of=fixed_of
    )
    reason = eng.can_ever_fit(isl, osl)
    if reason is not None:
        raise DoesNotFitError(f"isl={isl} osl={osl}: {reason}")

    n = num_requests
    arrival = np.zeros(n)
    first = np.zeros(n)
    finish = np.zeros(n)
    clients = n if offline else min(concurrency, n)
    starts = np.zeros(clients)
    if not offline and clients > 1:
        starts = np.sort(np.random.default_rng(seed).uniform(0.0, 1.0, clients))
        starts -= starts[0]  # the first client starts at t=0
        starts *= start_spread * _request_duration_s(perf_model, engine_config, isl, osl, clients)
    pending = 0  # clients whose first request is not yet sent
    if offline:
        for i in range(clients):
            eng.add_request(EngineRequest(i, 0.0, isl, osl), 0.0)
        pending = clients
    issued = pending
    completions: list[float] = []
    while True:
        t = eng.run_end_s
        if pending < clients and issued >= n:
            pending = clients  # the early finishers already sent every request
        if pending < clients and starts[pending] <= t:
            ta = float(starts[pending])
            arrival[issued] = ta
            eng.add_request(EngineRequest(issued, ta, isl, osl), ta)
            issued += 1
            pending += 1
            continue
        if t == float("inf"):
            break
        done, first_tok = eng.complete_run()
        for r in first_tok:
            r.first_token_s = t
            first[r.idx] = t
        for r in done:
            finish[r.idx] = t
            completions.append(t)
            if issued < n:
                arrival[issued] = t
                eng.add_request(EngineRequest(issued, t, isl, osl), t)
                issued += 1
    duration_s = float(finish.max())
    if offline:
        lo = 0
        window = (0.0, duration_s)
        num_out = n * osl
        num_in = n * isl
    else:
        lo = clients if exclude_warmup and n >= 2 * clients else 0
        t0 = completions[clients - 1] if n >= 2 * clients else completions[0]
        t1 = completions[n - clients - 1] if n > clients else duration_s
        if t1 > t0:
            in_win = sum(1 for c in completions if t0 < c <= t1)
            window = (t0, t1)
        else:
            in_win, window = n, (0.0, duration_s)
        num_out = in_win * osl
        num_in = in_win * isl
    span = window[1] - window[0]
    sel = slice(lo, n)
    ttft = (first[sel] - arrival[sel]) * 1e3
    e2e = (finish[sel] - arrival[sel]) * 1e3
    tpot = (finish[sel] - first[sel]) * 1e3 / (osl - 1) if osl > 1 else np.zeros(0)
    return ClosedLoopResult(
        isl=isl,
        osl=osl,
        concurrency=concurrency,
        offline=offline,
        num_requests=n,
        num_measured=n - lo,
        ttft_ms=LatencyStats.of(ttft),
        tpot_ms=LatencyStats.of(tpot),
        e2e_ms=LatencyStats.of(e2e),
        output_tok_s=num_out / span if span > 0 else float("nan"),
        request_per_s=(num_out / osl) / span if span > 0 else float("nan"),
        duration_s=duration_s,
        num_preemptions=eng.scheduler.num_preemptions,
        prefill_tok_s=num_in / span if span > 0 else float("nan"),
        seed=seed,
    )


@dataclass(frozen=True, slots=True)
class EngineEstimate:
    """What ``gpuyield estimate`` reports from the engine model for a deployment of identical replicas."""

    ttft_ms: float  # mean, including the engine family's fitted first-token overhead
    ttft_p90_ms: float
    tpot_ms: float
    tpot_p90_ms: float
    e2e_ms: float
    throughput_tok_s: float  # output tokens/s of all replicas
    sim_window_output_tok_s: float  # the simulator's own steady-window estimate (reference)
    num_requests_simulated: int
    num_preemptions: int
    method: str = "engine model (gpuyield.core.sim.run_closed_loop) + fitted first-token overhead"


def _engine_config(
    perf: Any, max_num_seqs: int | None, max_num_batched_tokens: int | None, gpu_memory_utilization: float
) -> EngineConfig:
    """The engine config one replica of ``perf`` runs with in the engine model: its family's scheduler, under the
    analytic solver's limit rule (:func:`gpuyield.core.perf.closed_loop.scheduler_limits`), one ``max_num_seqs``
    (:func:`~gpuyield.core.perf.closed_loop.replica_seq_limit`) and one token budget per attention-DP rank, a
    prompt taking at most one rank's budget a step (it sits on one rank)."""
    family = str(getattr(perf, "engine", "vllm")).split(":", 1)[0]  # "trtllm:disagg" -> "trtllm"
    seqs, budget = scheduler_limits(perf, max_num_seqs, max_num_batched_tokens)
    seqs = replica_seq_limit(perf, seqs)
    adp = int(getattr(perf, "attention_dp", 1) or 1)
    return EngineConfig.for_family(
        family if family in ENGINE_FAMILIES else "vllm",
        max_num_seqs=min(seqs, 1 << 16),
        max_num_batched_tokens=max(budget * adp, min(seqs, 1 << 16)),
        max_prefill_chunk_tokens=budget if adp > 1 else None,
        gpu_memory_utilization=gpu_memory_utilization,
    )


def estimate_with_engine_model(
    perf_model: Any,
    isl: int,
    osl: int,
    concurrency: int | None,
    *,
    num_requests: int | None = None,
    num_replicas: int = 1,
    gpu_memory_utilization: float = 0.9,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    seed: int = 0,
) -> EngineEstimate:
    """Closed-loop (or offline, ``concurrency=None``) estimate of ``num_replicas`` replicas by the engine model.

    The clients are split evenly over the replicas; each replica is simulated by :func:`run_closed_loop` with
    the scheduler of the perf model's engine family and its own limits on its GPU
    (:func:`gpuyield.core.perf.closed_loop.own_scheduler_limits`) unless given. The fitted first-token
    overhead (API server, tokenisation) is added to TTFT and E2E. Closed-loop throughput is Little's law on the
    mean end-to-end latency (every client always has one request in flight), robust to the first burst;
    offline throughput is total output over the makespan.
    """
    if num_replicas < 1:
        raise ConfigError(f"num_replicas must be >= 1, got {num_replicas}")
    cfg = _engine_config(perf_model, max_num_seqs, max_num_batched_tokens, gpu_memory_utilization)
    c_rep = None if concurrency is None else max(1, -(-concurrency // num_replicas))
    n_rep = None if num_requests is None else max(1, -(-num_requests // num_replicas))
    offline = c_rep is None
    res = run_closed_loop(perf_model, cfg, isl, osl, c_rep or n_rep or 1, num_requests=n_rep, offline=offline,
                          seed=seed)  # fmt: skip
    overhead_ms = float(perf_model.first_token_overhead_s) * 1e3
    # Little's law: the clients that really have a request in flight (no more than the requests)
    per_replica_tok_s = res.output_tok_s if c_rep is None else min(c_rep, res.num_requests) * osl / (res.e2e_ms.mean / 1e3)
    throughput = per_replica_tok_s * num_replicas
    return EngineEstimate(
        ttft_ms=res.ttft_ms.mean + overhead_ms,
        ttft_p90_ms=res.ttft_ms.p90 + overhead_ms,
        tpot_ms=res.tpot_ms.mean if osl > 1 else 0.0,
        tpot_p90_ms=res.tpot_ms.p90 if osl > 1 else 0.0,
        e2e_ms=res.e2e_ms.mean + overhead_ms,
        throughput_tok_s=throughput,
        sim_window_output_tok_s=res.output_tok_s * num_replicas,
        num_requests_simulated=res.num_requests * num_replicas,
        num_preemptions=res.num_preemptions,
    )


def estimate_disaggregated_with_engine_model(
    prefill: Any,
    decode: Any,
    isl: int,
    osl: int,
    concurrency: int | None,
    *,
    num_prefill: int,
    num_decode: int,
    num_requests: int | None = None,
    kv_transfer_gb_s: float | None = None,
    gpu_memory_utilization: float = 0.9,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    seed: int = 0,
) -> EngineEstimate:
    """Closed-loop (or offline, ``concurrency=None``) estimate of a P/D deployment by the engine model: the
    cluster simulator that ``gpuyield simulate`` replays P/D deployments with, driven by a fixed number of clients.

    ``num_prefill`` prefill replicas (``prefill``'s step model) feed ``num_decode`` decode replicas (``decode``'s)
    over the P/D link (:func:`gpuyield.core.perf.closed_loop.pd_link_gb_s` per GPU, on as many GPUs as the smaller
    replica has). Each pool's scheduler runs with the engine family's own limits on its GPU unless given (the
    rule of :func:`gpuyield.core.perf.closed_loop.scheduler_limits`); both routers are round-robin, as vLLM's P/D
    proxy, SGLang's router and TensorRT-LLM's disaggregated server route by default. The clients follow the
    protocol of :func:`run_closed_loop` (every client's first request at t = 0, :data:`REQUESTS_PER_CLIENT`
    requests each, at most :data:`MAX_REQUESTS` a decode replica); the decode engine computes every output token
    and the client streams from it, so the first token comes with the request's first decode step, plus the
    prefill engine's first-token overhead. Throughput is Little's law on the mean end-to-end latency (closed loop) or total output
    over the makespan (offline), as :func:`estimate_with_engine_model`. Round-robin routing splits the deployment
    into alike slices (the greatest common divisor of the worker counts, the clients and the requests), each with
    its share of the clients; one is simulated."""
    from gpuyield.core.perf.closed_loop import pd_link_gb_s
    from gpuyield.core.policy.routing import make_policy
    from gpuyield.core.sim.cluster import STATUS_COMPLETED, Cluster, ReplicaSetup
    from gpuyield.core.workload.workload import Workload, WorkloadMeta

    if isl < 1 or osl < 1:
        raise ConfigError(f"isl and osl must be >= 1, got isl={isl} osl={osl}")
    if num_prefill < 1 or num_decode < 1:
        raise ConfigError(f"a P/D deployment needs >= 1 replica a pool, got {num_prefill} prefill, {num_decode} decode")
    offline = concurrency is None
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    if num_requests is not None and num_requests < 1:
        raise ConfigError(f"num_requests must be >= 1, got {num_requests}")
    # Round-robin routers split the deployment into g alike slices of num_prefill / g prefill and num_decode / g
    # decode replicas, each serving an equal share of the clients (or requests): one slice is simulated. g divides
    # the clients and the requests too, so the slices are exactly alike.
    g = math.gcd(num_prefill, num_decode)
    for k in (concurrency, num_requests):
        if k is not None:
            g = math.gcd(g, k)
    clients = None if concurrency is None else concurrency // g
    if offline:
        n = (num_requests or 1) // g
    elif num_requests is not None:
        n = num_requests // g
    else:
        assert clients is not None  # the closed-loop protocol per decode replica, as run_closed_loop's per replica
        n = max(clients, min(REQUESTS_PER_CLIENT * clients, MAX_REQUESTS * (num_decode // g)))
    setups: list[Any] = []
    for role, perf, count in (("prefill", prefill, num_prefill // g), ("decode", decode, num_decode // g)):
        cfg = _engine_config(perf, max_num_seqs, max_num_batched_tokens, gpu_memory_utilization)
        plan = perf.memory(gpu_memory_utilization, isl + osl, prefix_caching=cfg.enable_prefix_caching)
        try:
            blocks = kv_blocks_from_memory_plan(plan, cfg.block_size)
        except DoesNotFitError as exc:
            raise DoesNotFitError(f"{role} pool: {exc}") from None
        cfg = engine_config_for_memory_plan(cfg, plan)
        model = perf.model
        # every prompt has isl tokens: its cache's size once, not at every transfer
        prompt_bytes = functools.lru_cache(maxsize=8)(functools.partial(model.kv_bytes_for_context, kv_dtype=perf.kv_dtype))
        for k in range(count):
            setups.append(
                ReplicaSetup(
                    replica_id=f"{role}-{k}",
                    pool=role,
                    role=role,
                    gpu=perf.gpu_id,
                    model=model.id,
                    engine_config=cfg,
                    step_model=perf,
                    num_gpu_blocks=blocks,
                    kv_bytes_per_token=float(model.kv_bytes_per_token(perf.kv_dtype)),
                    fixed_blocks_of=fixed_blocks_of_memory_plan(plan, cfg.block_size),
                    kv_bytes_for_prompt=prompt_bytes,
                    num_gpus=perf.num_gpus,
                    tp=perf.num_gpus,  # the link: every GPU of a replica sends (receives) its shard
                    first_token_overhead_s=float(perf.first_token_overhead_s),
                )
            )
    cluster = Cluster(
        setups,
        make_policy("round_robin"),
        decode_policy=make_policy("round_robin"),
        link_bandwidth_bytes_per_s=pd_link_gb_s(decode, kv_transfer_gb_s) * 1e9,
    )
    w = Workload(
        arrival_s=np.zeros(n),
        input_tokens=np.full(n, isl),
        output_tokens=np.full(n, osl),
        meta=WorkloadMeta(name="closed-loop", source=f"{n} requests of {isl}/{osl} tokens"),
    )
    rec = cluster.run(w, closed_loop_clients=clients)
    if (rec.status != STATUS_COMPLETED).any():
        first = rec.reasons[int(rec.reject_reason[rec.status != STATUS_COMPLETED][0])]
        raise DoesNotFitError(f"isl={isl} osl={osl}: {first}")
    ttft = (rec.first_token_s - rec.arrival_s) * 1e3
    e2e = (rec.finish_s - rec.arrival_s) * 1e3
    tpot = (rec.finish_s - rec.first_token_s) * 1e3 / (osl - 1) if osl > 1 else np.zeros(0)
    makespan = float(rec.finish_s.max())
    out_tok_s = n * osl / makespan if makespan > 0 else float("nan")
    # Little's law on the clients' cycle: a client sends again when its last token leaves the engine, before the
    # first-token overhead the records carry (as estimate_with_engine_model, whose run excludes it)
    cycle_s = float(e2e.mean()) / 1e3 - float(prefill.first_token_overhead_s)
    slice_tok_s = out_tok_s if clients is None else min(clients, n) * osl / cycle_s
    ttft_s, tpot_s = LatencyStats.of(ttft), LatencyStats.of(tpot)
    return EngineEstimate(
        ttft_ms=ttft_s.mean,
        ttft_p90_ms=ttft_s.p90,
        tpot_ms=tpot_s.mean if osl > 1 else 0.0,
        tpot_p90_ms=tpot_s.p90 if osl > 1 else 0.0,
        e2e_ms=float(e2e.mean()),
        throughput_tok_s=slice_tok_s * g,
        sim_window_output_tok_s=out_tok_s * g,
        num_requests_simulated=n * g,
        num_preemptions=int(rec.preemptions.sum()),
        method="engine model, P/D cluster (gpuyield.core.sim.Cluster, closed loop) + fitted first-token overhead",
    )
