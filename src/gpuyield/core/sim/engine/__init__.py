"""The per-replica engine model, split like vLLM v1: request state, block pool, KV manager, scheduler."""

from gpuyield.core.sim.engine.block_pool import BlockPool, CacheEntry
from gpuyield.core.sim.engine.config import (
    ENGINE_FAMILIES,
    EngineConfig,
    OffloadTierConfig,
    engine_family_defaults,
    scheduler_defaults,
)
from gpuyield.core.sim.engine.kv_cache import KVCacheManager, OffloadTier
from gpuyield.core.sim.engine.output import SchedulerOutput
from gpuyield.core.sim.engine.replica import ReplicaEngine
from gpuyield.core.sim.engine.request import EngineRequest, RequestStatus
from gpuyield.core.sim.engine.scheduler import Scheduler

__all__ = [
    "ENGINE_FAMILIES",
    "BlockPool",
    "CacheEntry",
    "EngineConfig",
    "EngineRequest",
    "KVCacheManager",
    "OffloadTier",
    "OffloadTierConfig",
    "ReplicaEngine",
    "RequestStatus",
    "Scheduler",
    "SchedulerOutput",
    "engine_family_defaults",
    "scheduler_defaults",
]
