"""Baseline: how many useful tokens each GPU-dollar produced, what sat idle, and how far that is from what
the same GPUs could deliver on the same workload. Pure: plain grouped telemetry in, results out.

>>> from gpuyield.core.baseline import compute_baseline, BaselineInputs
"""

from gpuyield.core.baseline.achievable import (
    Achievable,
    AchievableFn,
    WorkloadMix,
    default_achievable,
    not_measured_achievable,
    perf_model_achievable,
)
from gpuyield.core.baseline.compute import MAX_TIMELINE_BINS, compute_baseline, plan_command
from gpuyield.core.baseline.inputs import (
    BaselineInputs,
    Deployment,
    EngineTelemetry,
    GpuTelemetry,
    Price,
    TenantTelemetry,
)
from gpuyield.core.baseline.result import (
    BaselineResult,
    FleetResult,
    GapCause,
    GpuResult,
    ModelResult,
    TenantResult,
    TimelinePoint,
)
from gpuyield.core.baseline.series import (
    Histogram,
    TimeSeries,
    counter_increase,
    counter_increments,
    gauge_integral,
    gauge_mean,
    histogram_quantile,
)

__all__ = [
    "MAX_TIMELINE_BINS",
    "Achievable",
    "AchievableFn",
    "BaselineInputs",
    "BaselineResult",
    "Deployment",
    "EngineTelemetry",
    "FleetResult",
    "GapCause",
    "GpuResult",
    "GpuTelemetry",
    "Histogram",
    "ModelResult",
    "Price",
    "TenantResult",
    "TenantTelemetry",
    "TimeSeries",
    "TimelinePoint",
    "WorkloadMix",
    "compute_baseline",
    "counter_increase",
    "counter_increments",
    "default_achievable",
    "gauge_integral",
    "gauge_mean",
    "histogram_quantile",
    "not_measured_achievable",
    "perf_model_achievable",
    "plan_command",
]
