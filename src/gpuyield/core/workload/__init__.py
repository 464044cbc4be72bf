"""core/workload: the request record, the ``Workload`` container, transforms, synthetic arrivals and prefix
structure, block hashing, inspection statistics and the gateway's request-log schema. Pure: no I/O."""

from gpuyield.core.workload.arrivals import (
    ArrivalSpec,
    RateCurve,
    gamma_arrivals,
    generate_arrivals,
    poisson_arrivals,
    rate_curve_arrivals,
)
from gpuyield.core.workload.hashing import chain_hash, chain_hashes, content_key, hash_token_blocks
from gpuyield.core.workload.prefix import (
    PrefixSpec,
    RagSpec,
    SessionSpec,
    SystemPromptSpec,
    apply_prefix_structure,
)
from gpuyield.core.workload.request import Request, SimTime
from gpuyield.core.workload.request_log import REQUEST_LOG_SCHEMA_VERSION, RequestLogRecord
from gpuyield.core.workload.stats import LengthStats, WorkloadStats, inspect
from gpuyield.core.workload.synth import synthesize
from gpuyield.core.workload.transforms import (
    merge,
    rate_scale,
    rebase,
    sample,
    slice_index,
    slice_time,
    time_scale,
)
from gpuyield.core.workload.workload import Workload, WorkloadMeta

__all__ = [
    "REQUEST_LOG_SCHEMA_VERSION",
    "ArrivalSpec",
    "LengthStats",
    "PrefixSpec",
    "RagSpec",
    "RateCurve",
    "Request",
    "RequestLogRecord",
    "SessionSpec",
    "SimTime",
    "SystemPromptSpec",
    "Workload",
    "WorkloadMeta",
    "WorkloadStats",
    "apply_prefix_structure",
    "chain_hash",
    "chain_hashes",
    "content_key",
    "gamma_arrivals",
    "generate_arrivals",
    "hash_token_blocks",
    "inspect",
    "merge",
    "poisson_arrivals",
    "rate_curve_arrivals",
    "rate_scale",
    "rebase",
    "sample",
    "slice_index",
    "slice_time",
    "synthesize",
    "time_scale",
]
