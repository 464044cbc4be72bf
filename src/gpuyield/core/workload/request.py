"""The request record every workload loader produces and every consumer (simulator, planner, gateway
replay, baseline) reads.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Request", "SimTime"]

SimTime = float  # simulated seconds since the start of the workload


@dataclass(frozen=True, slots=True)
class Request:
    """One inference request of a workload.

    ``block_hashes`` are chained hashes of the prompt's full blocks of ``block_size_tokens`` tokens, in
    prefix order: two requests share a cached prefix of ``k`` blocks iff their first ``k`` hashes are equal.
    Mooncake traces give 512-token blocks; synthesised prefixes use the same convention.
    """

    req_id: int  # unique within a workload, dense from 0 in arrival order after loading
    arrival_s: SimTime  # arrival time, seconds from the start of the workload (non-decreasing)
    input_tokens: int  # prompt length, >= 1
    output_tokens: int  # tokens to generate, >= 1
    block_hashes: tuple[int, ...] = ()  # prefix block hashes, len <= ceil(input_tokens / block_size_tokens)
    block_size_tokens: int = 512  # tokens per entry of block_hashes
    model: str | None = None  # catalogue model id; None = the deployment's only model
    tenant: str = "default"
    priority: int = 0  # larger = more important
    session_id: str | None = None
