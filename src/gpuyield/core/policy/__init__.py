"""Routing and admission policies, shared by the simulator and the live gateway."""

from gpuyield.core.policy.admission import (
    AdmissionController,
    AdmissionLimits,
    Decision,
    TenantLimits,
    Ticket,
    TokenBucket,
    Verdict,
)
from gpuyield.core.policy.base import ReplicaSnapshot, RequestView, RoutingPolicy
from gpuyield.core.policy.routing import (
    POLICY_NAMES,
    CostPolicy,
    LeastKvPolicy,
    LeastOutstandingPolicy,
    PrefixAffinityPolicy,
    PrefixIndex,
    RoundRobinPolicy,
    make_policy,
)

__all__ = [
    "POLICY_NAMES",
    "AdmissionController",
    "AdmissionLimits",
    "CostPolicy",
    "Decision",
    "LeastKvPolicy",
    "LeastOutstandingPolicy",
    "PrefixAffinityPolicy",
    "PrefixIndex",
    "ReplicaSnapshot",
    "RequestView",
    "RoundRobinPolicy",
    "RoutingPolicy",
    "TenantLimits",
    "Ticket",
    "TokenBucket",
    "Verdict",
    "make_policy",
]
