"""Physical floors under a closed-loop measurement: a data-quality check for measured rows.

In a closed loop of ``C`` clients (each sends its next request when the last one ends), requests complete at
``λ = C / E[e2e]`` (Little's law; ``e2e = TTFT + (osl - 1) × TPOT``). Two rates cap ``λ`` whatever the
engine does, on a deployment of ``G`` GPUs:

- **compute**: every prompt costs at least ``2 × P × isl`` FLOPs, ``P`` the decoder's active GEMM weights
  (attention, decode, embedding and LM head are left out), and the GPUs deliver at most ``G ×`` the fastest
  dense tensor rate they have at any precision;
- **memory**: every ``s`` output tokens after the first read at least their sequence's cache of the prompt
  once (``isl`` tokens at a 4-bit cache dtype, the smallest any engine offers; sliding windows and linear-
  attention state as the catalogue describes them), and the GPUs stream at most ``G ×`` HBM bandwidth.
  ``s`` = ``tokens_per_cache_read`` allows for speculative decoding (MTP, EAGLE: one verification step
  reads the cache once and may accept several tokens).

So ``E[e2e] ≥ C × max(2 P isl / (G F), (osl - 1) kv_bytes(isl) / (s G B))``. Both floors leave out most of
the real work, so a measurement below one is not a model error: either the row's recorded concurrency or
GPU count is not what ran, or the prompts were served from a prefix cache (which the compute floor
assumes they were not). ``gpuyield validate`` lists such rows (and still scores them).

Pure: plain numbers in, plain numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuyield.errors import ConfigError

__all__ = ["ClosedLoopFloor", "closed_loop_floor"]


@dataclass(frozen=True, slots=True)
class ClosedLoopFloor:
    """The least mean end-to-end latency a closed loop can have, and which resource sets it."""

    e2e_ms: float
    compute_e2e_ms: float
    memory_e2e_ms: float

    @property
    def bound_by(self) -> str:
        return "compute" if self.compute_e2e_ms >= self.memory_e2e_ms else "memory"


def closed_loop_floor(
    *,
    concurrency: int,
    isl: int,
    osl: int,
    num_gpus: int,
    params_active: float,
    kv_bytes_at_isl: float,
    peak_flops_per_gpu: float,
    memory_bytes_per_s_per_gpu: float,
    tokens_per_cache_read: float = 1.0,
) -> ClosedLoopFloor:
    """Floors on ``E[e2e]`` (ms) for ``concurrency`` clients on ``num_gpus`` GPUs (see the module doc)."""
    for name, v in (
        ("concurrency", concurrency),
        ("isl", isl),
        ("osl", osl),
        ("num_gpus", num_gpus),
        ("peak_flops_per_gpu", peak_flops_per_gpu),
        ("memory_bytes_per_s_per_gpu", memory_bytes_per_s_per_gpu),
        ("tokens_per_cache_read", tokens_per_cache_read),
    ):
        if not v > 0:
            raise ConfigError(f"closed_loop_floor: {name} must be > 0, got {v}")
    if params_active < 0 or kv_bytes_at_isl < 0:
        raise ConfigError("closed_loop_floor: params_active and kv_bytes_at_isl must be >= 0")
    compute_s = concurrency * 2.0 * params_active * isl / (num_gpus * peak_flops_per_gpu)
    memory_s = (
        concurrency * (osl - 1) * kv_bytes_at_isl / (tokens_per_cache_read * num_gpus * memory_bytes_per_s_per_gpu)
    )
    return ClosedLoopFloor(max(compute_s, memory_s) * 1e3, compute_s * 1e3, memory_s * 1e3)
