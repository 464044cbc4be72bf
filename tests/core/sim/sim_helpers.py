"""Factories for simulator tests (vLLM-style ``make_*`` helpers) and a linear step-time test double."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpuyield.core.policy.routing import make_policy
from gpuyield.core.sim.cluster import Cluster, ReplicaSetup
from gpuyield.core.sim.engine import EngineConfig, EngineRequest, ReplicaEngine
from gpuyield.core.workload.workload import Workload, WorkloadMeta


@dataclass(frozen=True)
class LinearStepModel:
    """A test double satisfying ``StepTimeModel``: affine in every argument."""

    fixed_s: float = 0.005
    prefill_s_per_token: float = 5e-5
    attn_s_per_token_sq: float = 1e-9
    decode_s_per_seq: float = 1e-4
    decode_s_per_ctx_token: float = 2e-8

    def step_time_s(self, num_prefill_tokens: int, prefill_attn_tokens_sq: float, num_decode_seqs: int,
                    decode_ctx_tokens: int) -> float:  # fmt: skip
        return (
            self.fixed_s
            + self.prefill_s_per_token * num_prefill_tokens
            + self.attn_s_per_token_sq * prefill_attn_tokens_sq
            + self.decode_s_per_seq * num_decode_seqs
            + self.decode_s_per_ctx_token * decode_ctx_tokens
        )


def make_engine(num_blocks: int = 1000, **cfg: object) -> ReplicaEngine:
    return ReplicaEngine(EngineConfig(**cfg), LinearStepModel(), num_blocks)  # type: ignore[arg-type]


def make_requests(n: int, prompt: int = 100, output: int = 20, start: int = 0) -> list[EngineRequest]:
    return [EngineRequest(start + i, 0.0, prompt, output) for i in range(n)]


def make_workload(
    arrival_s: list[float] | np.ndarray,
    input_tokens: list[int] | np.ndarray,
    output_tokens: list[int] | np.ndarray,
    hashes: list[tuple[int, ...]] | None = None,
    block_size_tokens: int = 16,
    models: list[str | None] | None = None,
) -> Workload:
    n = len(arrival_s)
    kw: dict[str, object] = {}
    if hashes is not None:
        offs = np.zeros(n + 1, dtype=np.int64)
        offs[1:] = np.cumsum([len(h) for h in hashes])
        kw["hash_offsets"] = offs
        kw["hash_values"] = np.array([x for h in hashes for x in h], dtype=np.int64)
    if models is not None:
        table: dict[str | None, int] = {}
        codes = [table.setdefault(m, len(table)) for m in models]
        kw["model_codes"] = np.array(codes, dtype=np.int32)
        kw["models"] = tuple(table)
    return Workload(
        arrival_s=np.asarray(arrival_s, dtype=np.float64),
        input_tokens=np.asarray(input_tokens),
        output_tokens=np.asarray(output_tokens),
        meta=WorkloadMeta("test"),
        block_size_tokens=block_size_tokens,
        **kw,  # type: ignore[arg-type]
    )


def make_cluster(
    num_replicas: int = 2,
    policy: str = "round_robin",
    num_blocks: int = 2000,
    roles: list[str] | None = None,
    step_model: LinearStepModel | None = None,
    policy_args: dict[str, object] | None = None,
    **cfg: object,
) -> Cluster:
    roles = roles or ["mixed"] * num_replicas
    sm = step_model or LinearStepModel()
    setups = [
        ReplicaSetup(
            replica_id=f"r{i}",
            pool=roles[i],
            role=roles[i],
            gpu="fake",
            model="m",
            engine_config=EngineConfig(**cfg),  # type: ignore[arg-type]
            step_model=sm,
            num_gpu_blocks=num_blocks,
            kv_bytes_per_token=131072.0,
        )
        for i in range(len(roles))
    ]
    decode_policy = make_policy("least_kv") if "decode" in roles else None
    return Cluster(setups, make_policy(policy, **(policy_args or {})), decode_policy=decode_policy)


def drive(engine: ReplicaEngine, arrivals: list[tuple[float, EngineRequest]], check=None) -> dict[int, float]:  # type: ignore[no-untyped-def]
    """Run one engine over timed arrivals; ``check(engine, t)`` after every event. Returns idx -> finish time."""
    arrivals = sorted(arrivals, key=lambda x: x[0])
    finish: dict[int, float] = {}
    i = 0
    now = 0.0
    while True:
        t_run = engine.run_end_s
        t_arr = arrivals[i][0] if i < len(arrivals) else float("inf")
        if t_arr == float("inf") and t_run == float("inf"):
            return finish
        if t_arr <= t_run:
            assert t_arr >= now, "time went back"
            now = t_arr
            engine.add_request(arrivals[i][1], now)
            i += 1
        else:
            assert t_run >= now, "time went back"
            now = t_run
            done, first = engine.complete_run()
            for r in first:
                r.first_token_s = now
            for r in done:
                assert r.idx not in finish, "finished twice"
                finish[r.idx] = now
        if check is not None:
            check(engine, now)
