"""The fleet simulator: event core, engine model (vLLM v1 scheduler, paged KV, prefix cache, offload),
cluster (pools, routing, P/D, several models) and ``simulate()``."""

from gpuyield.core.sim.closed_loop import (
    ClosedLoopResult,
    EngineEstimate,
    LatencyStats,
    estimate_with_engine_model,
    kv_blocks_from_memory_plan,
    run_closed_loop,
)
from gpuyield.core.sim.engine import (
    ENGINE_FAMILIES,
    EngineConfig,
    EngineRequest,
    OffloadTierConfig,
    ReplicaEngine,
    RequestStatus,
)
from gpuyield.core.sim.events import EventQueue, SimClock, make_rng
from gpuyield.core.sim.steptime import StepTimeModel

__all__ = [
    "ENGINE_FAMILIES",
    "ClosedLoopResult",
    "EngineConfig",
    "EngineEstimate",
    "EngineRequest",
    "EventQueue",
    "LatencyStats",
    "OffloadTierConfig",
    "ReplicaEngine",
    "RequestStatus",
    "SimClock",
    "StepTimeModel",
    "estimate_with_engine_model",
    "kv_blocks_from_memory_plan",
    "make_rng",
    "run_closed_loop",
]
