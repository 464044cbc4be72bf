"""The planner: search space, analytic screen, simulator verification, economics (issue 5).

Pure: no I/O, clock or environment. ``gpuyield.edges.cli.cmd_plan`` wires it to workloads, files and executors.

- :mod:`~gpuyield.core.plan.spec`: what the user asks (SLO, mode, constraints, API price).
- :mod:`~gpuyield.core.plan.space`: deployment shapes and their enumeration.
- :mod:`~gpuyield.core.plan.profile`: workload statistics the screen needs.
- :mod:`~gpuyield.core.plan.screen`: the analytic screen (step-time model + queueing approximations).
- :mod:`~gpuyield.core.plan.verify`: replica-count and capacity searches by simulation, the Pareto set.
- :mod:`~gpuyield.core.plan.search`: the whole search and its result; the naive baseline.
- :mod:`~gpuyield.core.plan.economics`: $/hour, TCO, $ per 1M tokens, break-even.
- :mod:`~gpuyield.core.plan.context`, :mod:`~gpuyield.core.plan.simulator`,
  :mod:`~gpuyield.core.plan.to_deployment`: bindings to the catalogue, performance model and simulator.
"""

from gpuyield.core.plan.context import PlanContext, build_plan_inputs
from gpuyield.core.plan.economics import FleetEconomics, GpuPrice, OwnedHardware, owned_gpu_price
from gpuyield.core.plan.executor import Executor, LocalExecutor
from gpuyield.core.plan.profile import WorkloadProfile, profile_workload
from gpuyield.core.plan.search import PlanInputs, PlanResult, naive_candidates, run_plan
from gpuyield.core.plan.simulator import SimulatorBinding
from gpuyield.core.plan.space import Candidate, PoolShape, Rejection, SearchSpace, enumerate_candidates
from gpuyield.core.plan.spec import ApiPrice, PlanMode, PlanRequest, Slo, parse_api_price, parse_slo
from gpuyield.core.plan.to_deployment import candidate_to_deployment

__all__ = [
    "ApiPrice",
    "Candidate",
    "Executor",
    "FleetEconomics",
    "GpuPrice",
    "LocalExecutor",
    "OwnedHardware",
    "PlanContext",
    "PlanInputs",
    "PlanMode",
    "PlanRequest",
    "PlanResult",
    "PoolShape",
    "Rejection",
    "SearchSpace",
    "SimulatorBinding",
    "Slo",
    "WorkloadProfile",
    "build_plan_inputs",
    "candidate_to_deployment",
    "enumerate_candidates",
    "naive_candidates",
    "owned_gpu_price",
    "parse_api_price",
    "parse_slo",
    "profile_workload",
    "run_plan",
]
