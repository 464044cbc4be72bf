"""The fleet in simulated time: replicas in pools, a router, P/D hand-off over a modelled link.

Event loop (SimPy-style heap from ``events.py`` semantics, inlined for speed): arrivals come from the
workload's columns in order and are processed before replica events at the same time; a replica has at most one
live "run end" event (a stale one is recognised by the replica's ``version``); P/D transfers end with a
"transfer done" event. Routing policies see only :class:`ReplicaSnapshot` s, which the cluster refreshes after
every change to a replica, and report back through ``on_dispatch``/``on_complete`` exactly as in the gateway.
KV utilisation in a snapshot is the replica's state at its last event (during an analytic decode run: as of
the run's first step), like a gateway's view of scraped engine metrics.

Several models: each replica serves one model (its catalogue id and ``served_model_names``); a request goes to
the replicas of the model it names. :class:`ModelResidency` is the hook for replicas that host several
models and sleep/wake them (filled in by the multiplexing work); the default keeps every model awake.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from gpuyield.core.policy.admission import AdmissionController, Ticket, Verdict
from gpuyield.core.policy.base import ReplicaSnapshot, RequestView, RoutingPolicy
from gpuyield.core.policy.kv_events import leading_hits
from gpuyield.core.sim.engine.config import EngineConfig
from gpuyield.core.sim.engine.replica import ReplicaEngine
from gpuyield.core.sim.engine.request import EngineRequest
from gpuyield.core.sim.steptime import StepTimeModel
from gpuyield.core.workload.workload import Workload
from gpuyield.errors import ConfigError

__all__ = [
    "STATUS_COMPLETED",
    "STATUS_REJECTED",
    "Cluster",
    "ClusterRecords",
    "ModelResidency",
    "ReplicaSetup",
    "ReplicaStats",
]

STATUS_COMPLETED = 0
STATUS_REJECTED = 1
_INF = float("inf")


class ModelResidency(Protocol):
    """Hook for replicas hosting several models: the extra delay before ``model`` can run on a replica.

    ``wake_delay_s`` is asked once when a request is dispatched; the request is delivered after that delay.
    ``inf`` means *held*: memory cannot be freed yet. A residency that holds requests defines
    ``retry_delay_s(replica_id, model, now_s)``, asked for every held request (in arrival order) after each
    completion, until it answers a finite delay (see ``gpuyield.core.sim.multiplex``).
    """

    def wake_delay_s(self, replica_id: str, model: str, now_s: float) -> float: ...


@dataclass(frozen=True, slots=True)
class ReplicaSetup:
    """Everything the cluster needs to build one replica (plain data plus its step-time model)."""

    replica_id: str
    pool: str
    role: str  # "mixed" | "prefill" | "decode"
    gpu: str
    model: str  # canonical model id
    engine_config: EngineConfig
    step_model: StepTimeModel
    num_gpu_blocks: int
    kv_bytes_per_token: float = 0.0  # whole model, all layers (transfer size / offload sizing)
    # blocks a sequence of a given length holds for its bounded cache (sliding windows filled to min(length,
    # window), linear-attention state; MemoryPlan.fixed_blocks_for); None: none
    fixed_blocks_of: Callable[[int], int] | None = None
    # bytes of a prompt's cache over all layer kinds (ModelSpec.kv_bytes_for_context), for the P/D transfer;
    # None: prompt tokens x kv_bytes_per_token
    kv_bytes_for_prompt: Callable[[int], float] | None = None
    num_gpus: int = 1
    tp: int = 1
    served_model_names: tuple[str, ...] = ()
    # the engine family's first-token latency outside the forward steps (API server, tokenisation, eager
    # prefill launches; EngineCoefficients.first_token_overhead_s): added to the first token and the end of
    # every request whose first token this replica produces, as `estimate` adds it (non-blocking: the
    # replica's schedule does not wait for it)
    first_token_overhead_s: float = 0.0


@dataclass(slots=True)
class ReplicaStats:
    replica_id: str
    pool: str
    role: str
    gpu: str
    model: str
    num_gpus: int
    busy_s: float
    requests: int  # requests dispatched to it
    output_tokens: int  # output tokens it generated
    kv_used_block_s: float
    num_gpu_blocks: int
    num_steps: int
    num_runs: int
    preemptions: int
    prefix_query_tokens: int
    prefix_hit_tokens: int


@dataclass(slots=True)
class ClusterRecords:
    """Per-request outcome columns (index = request index in the workload) and per-replica statistics."""

    arrival_s: npt.NDArray[np.float64]
    first_token_s: npt.NDArray[np.float64]  # NaN if rejected
    finish_s: npt.NDArray[np.float64]  # NaN if rejected
    input_tokens: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    cached_tokens: npt.NDArray[np.int64]  # prefix-cache hit tokens at first scheduling
    replica: npt.NDArray[np.int32]  # replica index that produced the output (-1 if rejected)
    prefill_replica: npt.NDArray[np.int32]  # P/D: replica that ran the prefill (-1 otherwise)
    preemptions: npt.NDArray[np.int32]
    status: npt.NDArray[np.int8]  # STATUS_COMPLETED | STATUS_REJECTED
    reject_reason: npt.NDArray[np.int16]  # index into reasons, -1 if completed
    reasons: list[str]
    replicas: list[ReplicaStats]
    end_s: float  # simulated time of the last event
    num_events: int
    replica_ids: list[str] = field(default_factory=list)


class _Rt:
    """A replica at run time: engine, router snapshot and counters."""

    __slots__ = ("idx", "setup", "engine", "snap", "outstanding", "prefill_tokens", "requests", "output_tokens",
                 "link_free_s")  # fmt: skip

    def __init__(self, idx: int, setup: ReplicaSetup) -> None:
        self.idx = idx
        self.setup = setup
        self.engine = ReplicaEngine(
            setup.engine_config,
            setup.step_model,
            setup.num_gpu_blocks,
            setup.kv_bytes_per_token,
            fixed_blocks_of=setup.fixed_blocks_of,
        )
        m = setup.step_model
        per_tok = m.step_time_s(2048, 2048 * 1024.0, 0, 0) / 2048.0
        self.snap = ReplicaSnapshot(
            replica_id=setup.replica_id,
            pool=setup.role,
            models=(setup.model, *setup.served_model_names),
            max_num_seqs=setup.engine_config.max_num_seqs,
            prefill_s_per_token=per_tok,
            decode_step_s=m.step_time_s(0, 0.0, 1, 1024),
        )
        self.outstanding = 0
        self.link_free_s = 0.0  # P/D: when this replica's NICs finish the KV transfers queued on them
        self.prefill_tokens = 0
        self.requests = 0
        self.output_tokens = 0

    def refresh(self) -> None:
        s = self.snap
        eng = self.engine
        s.outstanding_requests = self.outstanding
        s.num_waiting = len(eng.scheduler.waiting)
        s.kv_util = eng.kv_usage
        s.outstanding_prefill_tokens = self.prefill_tokens
        if eng.last_step_s:
            s.decode_step_s = eng.last_step_s


def _unit_view(hashes: tuple[int, ...], hash_block: int, engine_block: int, num_prompt: int) -> tuple[tuple[int, ...], int]:
    """Cache units for a replica: (unit hashes over full units of the prompt, blocks per unit)."""
    if hash_block % engine_block == 0:
        n = min(len(hashes), num_prompt // hash_block)
        return hashes[:n], hash_block // engine_block
    if engine_block % hash_block == 0:
        g = engine_block // hash_block
        n = min(len(hashes) // g, num_prompt // engine_block)
        return hashes[g - 1 : g * n : g], 1
    raise ConfigError(
        f"prefix hash block of {hash_block} tokens and engine block_size {engine_block} do not divide each other"
    )


class _EngineCacheView:
    """``KVEventIndex``'s query side over the simulated engines' prefix caches (request hashes = unit hashes)."""

    def __init__(self, rts: list[_Rt]) -> None:
        self._cached = {rt.setup.replica_id: rt.engine.kv.pool.cached for rt in rts
                        if rt.engine.kv.enable_prefix_caching}  # fmt: skip

    def tracks(self, replica: str) -> bool:
        return replica in self._cached

    def match(self, replica: str, block_hashes: Sequence[int]) -> int:
        cached = self._cached.get(replica)
        return leading_hits(block_hashes, cached) if cached is not None else 0


class Cluster:
    """Replicas, routers and the event loop."""

    def __init__(
        self,
        replicas: Sequence[ReplicaSetup],
        policy: RoutingPolicy,
        *,
        decode_policy: RoutingPolicy | None = None,
        link_bandwidth_bytes_per_s: float = 50e9,
        link_latency_s: float = 25e-6,
        default_model: str | None = None,
        model_resolver: Callable[[str], str | None] | None = None,
        residency: ModelResidency | None = None,
        admission: AdmissionController | None = None,
        admission_per_replica: int | None = None,
    ) -> None:
        if not replicas:
            raise ConfigError("a cluster needs at least one replica")
        ids = [r.replica_id for r in replicas]
        if len(set(ids)) != len(ids):
            raise ConfigError("replica ids must be unique")
        self.rts = [_Rt(i, s) for i, s in enumerate(replicas)]
        self.policy = policy
        self.decode_policy = decode_policy
        self.link_bandwidth_bytes_per_s = link_bandwidth_bytes_per_s
        self.link_latency_s = link_latency_s
        self.default_model = default_model or replicas[0].model
        self.model_resolver = model_resolver
        self.residency = residency
        self.admission = admission  # the gateway's admission/fairness controller, in simulated time
        # as the gateway: each model's in-flight requests limited to this × its (entry) replicas
        self.admission_per_replica = admission_per_replica
        self._by_id = {rt.setup.replica_id: rt for rt in self.rts}

    def follow_kv_events(self) -> None:
        """Give the routing policies the engines' exact prefix-cache view (what ``serve`` builds from vLLM's KV
        events, here read losslessly from the simulated engines)."""
        view = _EngineCacheView(self.rts)
        for pol in (self.policy, self.decode_policy):
            if pol is not None and hasattr(pol, "exact"):
                pol.exact = view

    # ------------------------------------------------------------------ model -> replicas
    def _targets(self, label: str | None) -> tuple[list[_Rt], list[_Rt]] | None:
        """(entry replicas, decode replicas) for a request naming ``label``; None if no replica serves it."""
        name = self.default_model if label is None else label
        match = [rt for rt in self.rts if name == rt.setup.model or name in rt.setup.served_model_names]
        if not match and self.model_resolver is not None:
            canon = self.model_resolver(name)
            if canon is not None:
                match = [rt for rt in self.rts if rt.setup.model == canon]
        if not match:
            return None
        entry = [rt for rt in match if rt.setup.role != "decode"]
        decode = [rt for rt in match if rt.setup.role == "decode"]
        if not entry:
            return None
        if any(rt.setup.role == "prefill" for rt in entry) and not decode:
            return None
        return entry, decode

    # ------------------------------------------------------------------ run
    def run(
        self,
        w: Workload,
        progress: Callable[[int], None] | None = None,
        progress_every: int = 2000,
        *,
        closed_loop_clients: int | None = None,
    ) -> ClusterRecords:
        """Serve ``w`` and record every request's outcome.

        ``closed_loop_clients`` (C) replays ``w`` as a closed loop instead, as a fixed-concurrency benchmark
        drives a deployment: the first C requests arrive together at their (equal) ``arrival_s``, and each later one
        the moment an earlier request's last token leaves its engine (or it is rejected), in index order; the
        first-token overhead a replica adds to the records (``ReplicaSetup.first_token_overhead_s``) does not delay
        it. ``arrival_s`` of the records holds the times they were sent."""
        n = len(w)
        arrival = w.arrival_s
        arr = arrival.tolist()
        next_send = n  # closed loop: the next request a finished client sends
        if closed_loop_clients is not None:
            if closed_loop_clients < 1:
                raise ConfigError(f"closed_loop_clients must be >= 1, got {closed_loop_clients}")
            if self.residency is not None:
                raise ConfigError("closed_loop_clients: not with models that sleep and wake (a held request has no "
                                  "client to answer)")
            if n and any(a != arr[0] for a in arr[: min(closed_loop_clients, n)]):
                raise ConfigError("closed_loop_clients: the first wave must arrive together (every client's first "
                                  "request at the same time), as a fixed-concurrency benchmark sends it")
            next_send = min(closed_loop_clients, n)
            arr[next_send:] = [_INF] * (n - next_send)

        def send_next(t_s: float) -> None:
            """Closed loop: the client whose request just ended sends the next one now."""
            nonlocal next_send
            if next_send < n:
                arr[next_send] = t_s
                next_send += 1

        inp = w.input_tokens.tolist()
        outl = w.output_tokens.tolist()
        mcodes = w.model_codes.tolist()
        has_hashes = bool(len(w.hash_values))
        hoffs = w.hash_offsets.tolist() if has_hashes else None
        hvals = w.hash_values
        hb = w.block_size_tokens
        first_tok = np.full(n, np.nan)
        first_overhead = np.zeros(n)  # per request: the first-token overhead of the replica that produced it
        finish = np.full(n, np.nan)
        cached = np.zeros(n, dtype=np.int64)
        replica_col = np.full(n, -1, dtype=np.int32)
        prefill_col = np.full(n, -1, dtype=np.int32)
        preempt_col = np.zeros(n, dtype=np.int32)
        status = np.full(n, STATUS_COMPLETED, dtype=np.int8)
        reason_col = np.full(n, -1, dtype=np.int16)
        reasons: list[str] = []
        reason_idx: dict[str, int] = {}

        def reject(i: int, why: str) -> None:
            k = reason_idx.get(why)
            if k is None:
                k = reason_idx[why] = len(reasons)
                reasons.append(why)
            status[i] = STATUS_REJECTED
            reason_col[i] = k
            send_next(now)

        targets_by_code: dict[int, tuple[list[_Rt], list[_Rt]] | None] = {}
        snaps_by_code: dict[int, tuple[list[ReplicaSnapshot], list[ReplicaSnapshot]]] = {}
        for code in set(mcodes):
            tg0 = self._targets(w.models[code])
            targets_by_code[code] = tg0
            if tg0 is not None:
                snaps_by_code[code] = ([r.snap for r in tg0[0]], [r.snap for r in tg0[1]])
        pool_of = {code: w.models[code] or self.default_model for code in targets_by_code}
        if self.admission is not None and self.admission_per_replica:
            per = self.admission_per_replica
            self.admission.set_max_inflight(per * sum(1 for rt in self.rts if rt.setup.role != "decode"))
            self.admission.set_pool_limits({pool_of[c]: per * len(tg[0]) for c, tg in targets_by_code.items() if tg})
        by_id = self._by_id
        policy = self.policy
        choose = policy.choose
        on_dispatch = policy.on_dispatch
        track_complete = type(policy).on_complete is not RoutingPolicy.on_complete
        dpolicy = self.decode_policy or policy
        views: dict[int, RequestView] = {}
        bw = self.link_bandwidth_bytes_per_s
        lat = self.link_latency_s
        residency = self.residency

        heap: list[tuple[float, int, int, _Rt, object]] = []
        push = heapq.heappush
        pop = heapq.heappop
        seq = 0
        now = 0.0
        num_events = 0
        prefill_rt_of: dict[int, _Rt] = {}
        held: list[tuple[_Rt, EngineRequest]] = []  # requests waiting for the residency to make room
        retry_held = getattr(residency, "retry_delay_s", None)

        def after(rt: _Rt, t_end: float | None) -> None:
            nonlocal seq
            eng = rt.engine
            if t_end is not None:
                push(heap, (t_end, 0, seq, rt, eng.version))
                seq += 1
            if eng.new_transfers:
                for er in eng.new_transfers:
                    # One NIC per GPU: a transfer uses min(tp) links and queues behind the transfers already
                    # using the sender's or the receiver's links (FIFO; no sharing of bandwidth).
                    src = prefill_rt_of.get(er.idx)
                    tp = min(rt.setup.tp, src.setup.tp) if src is not None else rt.setup.tp
                    size = rt.setup.kv_bytes_for_prompt
                    nbytes = (
                        size(er.num_prompt_tokens)
                        if size is not None
                        else er.num_prompt_tokens * rt.setup.kv_bytes_per_token
                    )
                    wire = nbytes / (bw * tp)
                    start = now if rt.link_free_s < now else rt.link_free_s
                    if src is not None and src.link_free_s > start:
                        start = src.link_free_s
                    rt.link_free_s = start + wire
                    if src is not None:
                        src.link_free_s = start + wire
                    push(heap, (start + wire + lat, 1, seq, rt, er))
                    seq += 1
                eng.new_transfers.clear()
            rt.refresh()

        admission = self.admission
        tickets: dict[int, Ticket] = {}  # request index -> its admission ticket (admitted, not finished)
        queued_idx: dict[int, int] = {}  # ticket id -> request index, while queued by admission
        tenants = w.tenants
        tcodes = w.tenant_codes.tolist() if admission is not None else []
        prio = w.priority.tolist() if admission is not None else []

        def release_ticket(idx: int, tokens: int, t_s: float) -> None:
            tk = tickets.pop(idx, None)
            if tk is not None and admission is not None:
                admission.complete(tk, tokens, t_s)

        def drain(t_s: float) -> None:
            """Dispatch what admission lets go now; reject what waited too long in its queue."""
            if admission is None:
                return
            for old in admission.expire(t_s):
                k = queued_idx.pop(old.ticket_id)
                tickets.pop(k, None)
                reject(k, f"admission: queued longer than {admission.limits.max_queue_wait_s:g} s")
            while (ready := admission.next_ready(t_s)) is not None:
                route(queued_idx.pop(ready.ticket_id))

        def route(i: int) -> None:
            """Send request ``i`` (admitted at ``now``) to a replica, or reject it."""
            nonlocal seq
            code = mcodes[i]
            tg = targets_by_code[code]
            p_tok = inp[i]
            o_tok = outl[i]
            if tg is None:
                label = w.models[code]
                reject(i, f"no replica serves model {label if label is not None else self.default_model!r}")
                if admission is not None:
                    release_ticket(i, 0, now)
            else:
                hashes: tuple[int, ...] = ()
                if hoffs is not None:
                    a, b = hoffs[i], hoffs[i + 1]
                    if b > a:
                        hashes = tuple(hvals[a:b].tolist())
                view = RequestView(str(i), w.models[code] or self.default_model, p_tok, o_tok, hashes, hb)
                rid = choose(view, snaps_by_code[code][0], now)
                rt = by_id[rid]
                pd = rt.setup.role == "prefill"
                why = rt.engine.can_ever_fit(p_tok, 1 if pd else o_tok)
                if why is None and pd:
                    dsnaps = snaps_by_code[code][1]
                    # every decode replica of a pool is alike; check the first
                    why = by_id[dsnaps[0].replica_id].engine.can_ever_fit(p_tok, o_tok)
                if why is not None:
                    reject(i, why)
                    if admission is not None:
                        release_ticket(i, 0, now)
                else:
                    on_dispatch(view, rid, now)
                    if track_complete:
                        views[i] = view
                    eng_bs = rt.setup.engine_config.block_size
                    uh, ub = _unit_view(hashes, hb, eng_bs, p_tok) if hashes else ((), 1)
                    er = EngineRequest(i, now, p_tok, 1 if pd else o_tok, uh, ub)
                    rt.outstanding += 1
                    rt.requests += 1
                    rt.prefill_tokens += p_tok
                    wake = residency.wake_delay_s(rid, rt.setup.model, now) if residency is not None else 0.0
                    if wake == _INF:  # held until the residency can make room (see ModelResidency)
                        held.append((rt, er))
                        rt.refresh()
                    elif wake > 0:  # the model must be woken first: deliver the request later
                        push(heap, (now + wake, 2, seq, rt, er))
                        seq += 1
                        rt.refresh()
                    else:
                        after(rt, rt.engine.add_request(er, now))

        i = 0
        t_next = arr[0] if n else _INF
        while True:
            t_ev = heap[0][0] if heap else _INF
            if i < n and t_next == _INF:
                t_next = arr[i]  # closed loop: sent since
            if t_next <= t_ev:
                if t_next == _INF:
                    break
                # ---------------------------------------------------------------- arrival
                if t_next < now:
                    raise RuntimeError(f"simulated time went back: {t_next} < {now}")
                now = t_next
                num_events += 1
                if admission is None:
                    route(i)
                else:
                    ticket = admission.make_ticket(
                        tenants[tcodes[i]] or "default", inp[i], outl[i], now, prio[i], pool_of[mcodes[i]]
                    )
                    decision = admission.submit(ticket, now)
                    if decision.verdict == Verdict.REJECTED:
                        reject(i, f"admission: {decision.reason}")
                    else:
                        tickets[i] = ticket
                        if decision.verdict == Verdict.DISPATCH:
                            route(i)
                        else:
                            queued_idx[ticket.ticket_id] = i
                    drain(now)
                i += 1
                if progress is not None and i % progress_every == 0:
                    progress(progress_every)
                t_next = arr[i] if i < n else _INF
                continue
            # -------------------------------------------------------------------- replica events
            t, kind, _s, rt, obj = pop(heap)
            if t < now:
                raise RuntimeError(f"simulated time went back: {t} < {now}")
            eng = rt.engine
            if kind == 0:
                if obj != eng.version:
                    continue
                now = t
                num_events += 1
                done, first = eng.complete_run()
                for er in first:
                    if er.first_token_s < 0:
                        er.first_token_s = t
                    first_tok[er.idx] = er.first_token_s
                    if rt.setup.role == "decode":
                        # P/D: the client streams from the decode engine, so its first token arrives with the
                        # request's first decode step (the engine dates it), after the KV transfer and any wait for
                        # a decode seat: vLLM's proxy, SGLang's router and TRT-LLM's disaggregated server all
                        # forward the decode engine's stream
                        continue
                    first_overhead[er.idx] = rt.setup.first_token_overhead_s
                    rt.prefill_tokens -= er.num_prompt_tokens
                for er in done:
                    idx = er.idx
                    if rt.setup.role == "prefill":
                        rt.outstanding -= 1  # its token is dropped: the decode replica computes every output token
                        cached[idx] = er.num_cached_tokens
                        preempt_col[idx] = er.num_preemptions
                        prefill_col[idx] = rt.idx
                        if track_complete:
                            policy.on_complete(views[idx], rt.setup.replica_id, t)
                        o_tok = outl[idx]
                        if o_tok < 1:
                            finish[idx] = t
                            send_next(t)
                            replica_col[idx] = rt.idx
                            if admission is not None:
                                release_ticket(idx, inp[idx] + o_tok, t)
                            if track_complete:
                                del views[idx]
                            continue
                        code = mcodes[idx]
                        dsnaps = snaps_by_code[code][1]
                        view = views.get(idx) or RequestView(str(idx), w.models[code] or self.default_model, er.num_prompt_tokens, o_tok)
                        drid = dpolicy.choose(view, dsnaps, t)
                        drt = by_id[drid]
                        dpolicy.on_dispatch(view, drid, t)
                        der = EngineRequest(idx, t, er.num_prompt_tokens, o_tok, remote_kv=True)
                        # vLLM's P/D, followed for every engine family: the decode engine computes every output
                        # token itself (the prefill's token is dropped), so the client's first token is its first
                        # step's (SGLang streams the prefill's token as the request enters decoding, one step sooner)
                        der.num_output_tokens = 0
                        der.num_cached_tokens = er.num_cached_tokens
                        prefill_rt_of[idx] = rt
                        drt.outstanding += 1
                        drt.requests += 1
                        after(drt, drt.engine.add_request(der, t))
                        continue
                    finish[idx] = t
                    send_next(t)
                    replica_col[idx] = rt.idx
                    preempt_col[idx] += er.num_preemptions
                    if admission is not None:
                        release_ticket(idx, inp[idx] + outl[idx], t)
                    if er.num_cached_tokens > 0 and prefill_col[idx] < 0:
                        cached[idx] = er.num_cached_tokens
                    rt.outstanding -= 1
                    if prefill_col[idx] >= 0:
                        prefill_rt_of.pop(idx, None)
                        rt.output_tokens += er.max_output_tokens
                        if track_complete and dpolicy is not policy:
                            dpolicy.on_complete(views[idx], rt.setup.replica_id, t)
                    else:
                        rt.output_tokens += er.max_output_tokens
                        if track_complete:
                            policy.on_complete(views[idx], rt.setup.replica_id, t)
                    if track_complete:
                        views.pop(idx, None)
                after(rt, eng.run_end_s if eng.run is not None else None)
                if admission is not None and done:
                    drain(t)
                if held and done and retry_held is not None:
                    still: list[tuple[_Rt, EngineRequest]] = []
                    for hrt, her in held:  # something finished: memory may be freed now (FIFO order)
                        d = retry_held(hrt.setup.replica_id, hrt.setup.model, t)
                        if d == _INF:
                            still.append((hrt, her))
                        else:
                            push(heap, (t + d, 2, seq, hrt, her))
                            seq += 1
                    held = still
            elif kind == 1:
                now = t
                num_events += 1
                after(rt, eng.finish_transfer(obj, t))  # type: ignore[arg-type]
            else:
                now = t
                num_events += 1
                after(rt, eng.add_request(obj, t))  # type: ignore[arg-type]

        for hrt, her in held:  # nothing left that could free memory for these
            reject(her.idx, f"model {hrt.setup.model} could not be woken on {hrt.setup.replica_id}: no memory could be freed")
            release_ticket(her.idx, 0, now)
            hrt.outstanding -= 1
        stats = []
        for rt in self.rts:
            s = rt.setup
            eng = rt.engine
            sch = eng.scheduler
            stats.append(
                ReplicaStats(
                    replica_id=s.replica_id,
                    pool=s.pool,
                    role=s.role,
                    gpu=s.gpu,
                    model=s.model,
                    num_gpus=s.num_gpus,
                    busy_s=eng.busy_s,
                    requests=rt.requests,
                    output_tokens=rt.output_tokens,
                    kv_used_block_s=eng.kv_used_block_s,
                    num_gpu_blocks=s.num_gpu_blocks,
                    num_steps=eng.num_steps,
                    num_runs=eng.num_runs,
                    preemptions=sch.num_preemptions,
                    prefix_query_tokens=sch.prefix_query_tokens,
                    prefix_hit_tokens=sch.prefix_hit_tokens,
                )
            )
            if sch.num_unfinished:
                raise RuntimeError(f"replica {s.replica_id} ended with {sch.num_unfinished} unfinished requests")
        return ClusterRecords(
            arrival_s=np.asarray(arr if closed_loop_clients is not None else arrival, dtype=np.float64),
            first_token_s=first_tok + first_overhead,
            finish_s=finish + first_overhead,
            input_tokens=np.asarray(w.input_tokens, dtype=np.int64),
            output_tokens=np.asarray(w.output_tokens, dtype=np.int64),
            cached_tokens=cached,
            replica=replica_col,
            prefill_replica=prefill_col,
            preemptions=preempt_col,
            status=status,
            reject_reason=reason_col,
            reasons=reasons,
            replicas=stats,
            end_s=now,
            num_events=num_events,
            replica_ids=[rt.setup.replica_id for rt in self.rts],
        )
