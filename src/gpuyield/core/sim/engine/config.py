"""Engine configuration as the scheduler sees it: a frozen, already-validated value object.

User-facing validation (pydantic, ``extra="forbid"``) happens once in ``gpuyield.core.sim.deployment``;
this object is built from it (or directly by callers such as :func:`~gpuyield.core.sim.closed_loop.run_closed_loop`)
and is never re-validated inside the event loop. Family defaults live in ``sim/data/engine_families.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from gpuyield.errors import ConfigError

__all__ = ["ENGINE_FAMILIES", "EngineConfig", "OffloadTierConfig", "engine_family_defaults", "resolve_scheduler_limits"]

ENGINE_FAMILIES = ("vllm", "sglang", "trtllm")


def resolve_scheduler_limits(
    family: str,
    own_max_num_seqs: int,
    own_max_num_batched_tokens: int,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
) -> tuple[int, int]:
    """(running-sequence limit, per-step token budget) of one scheduler: each one given, else the engine's own.

    The engine model runs one token budget a step for prompts and decodes alike, so the budget must hold the limit.
    When a given value breaks that, each family's own reading applies:

    - ``vllm``: refused, as vLLM's ``SchedulerConfig`` refuses ``max_num_batched_tokens < max_num_seqs``;
    - ``trtllm``: ``max_num_tokens`` counts decode tokens too, so a step carries at most the budget's worth of
      sequences: the limit is lowered to the budget;
    - ``sglang``: ``--chunked-prefill-size`` caps prompt chunks only and decode batches are limited by
      ``--max-running-requests`` alone: the budget is raised to the limit (so prompt chunks may then be larger than
      asked: the engine model's single budget cannot keep the two apart).

    The engine's own pair is taken as it is. ``estimate`` (both paths), ``simulate``'s engine configs and the
    engine emulator resolve here, each against its own defaults (``estimate``: the calibration's engine limits;
    ``simulate`` and the emulator: ``sim/data/engine_families.yaml``)."""
    seqs = int(max_num_seqs or own_max_num_seqs)
    budget = int(max_num_batched_tokens or own_max_num_batched_tokens)
    if not (max_num_seqs or max_num_batched_tokens) or budget >= seqs:
        return seqs, budget
    if family == "trtllm":
        return budget, budget
    if family == "sglang":
        return seqs, seqs
    if max_num_seqs and max_num_batched_tokens:
        given = f"max_num_batched_tokens {budget} and max_num_seqs {seqs}"
    elif max_num_batched_tokens:
        given = f"max_num_batched_tokens {budget} and the engine's own max_num_seqs {seqs}"
    else:
        given = f"max_num_seqs {seqs} and the engine's own max_num_batched_tokens {budget}"
    raise ConfigError(
        f"{given}: vLLM requires the token budget to be >= the sequence limit (every running sequence decodes a "
        "token in each step); give both, the budget at least the limit"
    )


@dataclass(frozen=True, slots=True)
class OffloadTierConfig:
    """A second KV tier (CPU DRAM or local NVMe) that keeps prefix blocks evicted from GPU memory."""

    kind: str  # "cpu" | "nvme"
    capacity_bytes: int  # bytes of KV the tier holds per replica
    read_bytes_per_s: float  # reload bandwidth into GPU memory


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Scheduler knobs of one replica. Names follow vLLM's engine arguments."""

    family: str = "vllm"  # "vllm" | "sglang" | "trtllm"
    block_size: int = 16  # tokens per KV block (SGLang's page size; TRT-LLM's tokens_per_block)
    max_num_seqs: int = 256  # running requests per step
    max_num_batched_tokens: int = 8192  # token budget per step (>= max_num_seqs)
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    max_model_len: int | None = None  # prompt + output tokens; None = limited by KV capacity only
    gpu_memory_utilization: float = 0.9
    # Admission: "on_demand" allocates KV as tokens are computed and preempts by recompute when it runs out
    # (vLLM, SGLang); "max_output" admits a request only if KV for prompt + all its output fits alongside the
    # running requests' reservations (TRT-LLM's GUARANTEED_NO_EVICT capacity scheduler), so it never preempts.
    kv_admission: str = "on_demand"
    offload: OffloadTierConfig | None = None
    # Longest run of pure-decode steps advanced analytically in one event (None = unbounded; 1 = step by step).
    max_decode_run_steps: int | None = None
    # prefix-cache hits count in whole multiples of this many tokens: vLLM caches a hybrid (linear-attention) model's
    # prefixes at its raised block (MemoryPlan.hybrid_block_tokens); 0 = any whole block
    prefix_hit_tokens: int = 0

    def __post_init__(self) -> None:
        if self.family not in ENGINE_FAMILIES:
            raise ConfigError(f"engine.family: unknown engine {self.family!r}; expected one of {ENGINE_FAMILIES}")
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"engine.{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ConfigError(
                f"engine.max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs "
                f"({self.max_num_seqs}), as vLLM requires"
            )
        if (
            not self.enable_chunked_prefill
            and self.max_model_len is not None
            and self.max_num_batched_tokens < self.max_model_len
        ):
            # vLLM refuses this (SchedulerConfig.verify_max_model_len): without chunking a sequence, and a preempted
            # one recomputed whole, must fit one step's budget
            raise ConfigError(
                f"engine.max_num_batched_tokens ({self.max_num_batched_tokens}) is smaller than max_model_len "
                f"({self.max_model_len}) with chunked prefill off; raise the budget or lower max_model_len, as vLLM "
                "requires"
            )
        if self.kv_admission not in ("on_demand", "max_output"):
            raise ConfigError(f"engine.kv_admission: expected 'on_demand' or 'max_output', got {self.kv_admission!r}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ConfigError(f"engine.gpu_memory_utilization: expected 0 < x <= 1, got {self.gpu_memory_utilization}")
        if self.prefix_hit_tokens < 0:
            raise ConfigError(f"engine.prefix_hit_tokens: must be >= 0, got {self.prefix_hit_tokens}")
        if self.max_decode_run_steps is not None and self.max_decode_run_steps < 1:
            raise ConfigError(f"engine.max_decode_run_steps: must be >= 1, got {self.max_decode_run_steps}")

    @classmethod
    def for_family(cls, family: str, **overrides: Any) -> EngineConfig:
        """The family's documented defaults, with ``overrides`` applied."""
        base = dict(engine_family_defaults(family))
        base.update({k: v for k, v in overrides.items() if v is not None})
        base["family"] = family
        return cls(**base)


@cache
def _families() -> dict[str, Any]:
    text = resources.files("gpuyield.core.sim").joinpath("data/engine_families.yaml").read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def engine_family_defaults(family: str) -> dict[str, Any]:
    """Scheduler defaults of an engine family (from ``sim/data/engine_families.yaml``)."""
    fams = _families()["families"]
    if family not in fams:
        raise ConfigError(f"engine.family: unknown engine {family!r}; expected one of {sorted(fams)}")
    return dict(fams[family]["defaults"])
