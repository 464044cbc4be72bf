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

__all__ = [
    "ENGINE_FAMILIES",
    "EngineConfig",
    "OffloadTierConfig",
    "engine_family_defaults",
    "resolve_scheduler_limits",
    "scheduler_defaults",
    "scheduler_limit_rules",
]

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
    engine emulator resolve here, against the same own pair (:func:`scheduler_defaults`)."""
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
    """Scheduler knobs of one replica. Names follow vLLM's engine arguments.

    The field defaults serve direct construction (tests, small scripts); every command builds its configs from
    ``sim/data/engine_families.yaml`` instead, with the scheduler limits of the replica's GPU
    (:func:`scheduler_defaults`, through ``EngineSpec.to_config`` or :meth:`for_family` with the limits given)."""

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
    # Most tokens one prompt computes in a step (None: the step budget). A replica of attention-DP ranks runs one
    # scheduler per rank: the engine model holds it as one scheduler with every rank's budget and seats, and a
    # prompt, which sits on one rank, takes at most one rank's budget a step.
    max_prefill_chunk_tokens: int | None = None

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
            and min(self.max_num_batched_tokens, self.max_prefill_chunk_tokens or self.max_num_batched_tokens)
            < self.max_model_len
        ):
            # vLLM refuses this (SchedulerConfig.verify_max_model_len): without chunking a sequence, and a preempted
            # one recomputed whole, must fit one step's budget
            raise ConfigError(
                f"engine.max_num_batched_tokens ({self.max_num_batched_tokens}) is smaller than max_model_len "
                f"({self.max_model_len}) with chunked prefill off; raise the budget or lower max_model_len, as vLLM "
                "requires"
            )
        if self.max_prefill_chunk_tokens is not None and self.max_prefill_chunk_tokens < 1:
            raise ConfigError(f"engine.max_prefill_chunk_tokens: must be >= 1, got {self.max_prefill_chunk_tokens}")
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
        """The family's documented defaults (a large data-centre GPU's limits; :func:`scheduler_defaults` gives
        them on another device), with ``overrides`` applied."""
        base = dict(engine_family_defaults(family))
        base.update({k: v for k, v in overrides.items() if v is not None})
        base["family"] = family
        return cls(**base)


@cache
def _families() -> dict[str, Any]:
    text = resources.files("gpuyield.core.sim").joinpath("data/engine_families.yaml").read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


_RULE_KEYS = frozenset({"device_ids", "memory_below_gib", "memory_at_least_gib", "name_contains"})
_GIB = float(1 << 30)


def _rule_matches(when: dict[str, Any], accelerator: Any) -> bool:
    """Whether one ``device_rules`` condition holds for ``accelerator`` (any of its keys matching)."""
    unknown = set(when) - _RULE_KEYS
    if unknown:
        raise ConfigError(f"engine_families.yaml: unknown device rule key(s) {sorted(unknown)}")
    dev_id = str(getattr(accelerator, "id", "")).lower()
    text = f"{dev_id} {str(getattr(accelerator, 'name', '')).lower()}"
    gib = _memory_gib(accelerator)
    return (
        dev_id in {str(d).lower() for d in when.get("device_ids", ())}
        or any(str(n).lower() in text for n in when.get("name_contains", ()))
        or (gib is not None and "memory_below_gib" in when and gib < float(when["memory_below_gib"]))
        or (gib is not None and "memory_at_least_gib" in when and gib >= float(when["memory_at_least_gib"]))
    )


def _memory_gib(accelerator: Any) -> float | None:
    """The capacity the device reports, GiB (as the engines read it), or None when unknown."""
    total = getattr(accelerator, "memory_capacity_bytes", None)
    if total is None and getattr(accelerator, "memory_gb", None):
        total = float(accelerator.memory_gb) * 1e9
    return float(total) / _GIB if total else None


def engine_family_defaults(family: str, accelerator: Any = None) -> dict[str, Any]:
    """Scheduler defaults of an engine family (from ``sim/data/engine_families.yaml``) on ``accelerator`` (a
    catalogue :class:`~gpuyield.core.catalog.Accelerator` or anything with its ``id``, ``name`` and memory): the
    first of the family's ``device_rules`` that matches it replaces its keys, as the engines set some defaults
    from the device they start on (vLLM's batch limits, SGLang's chunked-prefill size). None: the family's
    defaults for a large data-centre GPU."""
    fams = _families()["families"]
    if family not in fams:
        raise ConfigError(f"engine.family: unknown engine {family!r}; expected one of {sorted(fams)}")
    out = dict(fams[family]["defaults"])
    if accelerator is not None:
        for rule in fams[family].get("device_rules") or ():
            if _rule_matches(dict(rule["when"]), accelerator):
                out.update({k: v for k, v in rule.items() if k != "when"})
                break
    return out


def scheduler_limit_rules() -> dict[str, Any]:
    """Each family's scheduler-limit defaults and the device rules that set them (plain data): what a prediction
    with unpinned limits depends on, for the calibration's coefficients fingerprint."""
    keys = ("max_num_seqs", "max_num_batched_tokens")
    out: dict[str, Any] = {}
    for name, fam in sorted(_families()["families"].items()):
        rules = [{"when": dict(r["when"]), **{k: r[k] for k in keys if k in r}} for r in fam.get("device_rules") or ()]
        out[name] = {"defaults": {k: fam["defaults"][k] for k in keys}, "device_rules": rules}
    return out


def scheduler_defaults(
    family: str,
    accelerator: Any = None,
    pinned_max_num_seqs: int | None = None,
    pinned_max_num_batched_tokens: int | None = None,
) -> tuple[int, int]:
    """The engine's own (running-sequence limit, per-step token budget) before any setting is given: what a
    calibration pins (the limits its measurements ran with), else the family's defaults on ``accelerator``
    (:func:`engine_family_defaults`). ``estimate``, ``simulate``, ``plan`` and the emulator all start here, then
    apply :func:`resolve_scheduler_limits` to what the user gave."""
    fam = family if family in ENGINE_FAMILIES else "vllm"
    key = (str(getattr(accelerator, "id", "")), str(getattr(accelerator, "name", "")), _memory_gib(accelerator))
    seqs, budget = _device_limits(fam, key) if accelerator is not None else _device_limits(fam, None)
    return int(pinned_max_num_seqs or seqs), int(pinned_max_num_batched_tokens or budget)


@cache
def _device_limits(family: str, key: tuple[str, str, float | None] | None) -> tuple[int, int]:
    """The family's (max_num_seqs, max_num_batched_tokens) on a device known by (id, name, GiB); cached, as the
    analytic solver asks for every prompt it times."""
    acc = None if key is None else _DeviceKey(*key)
    d = engine_family_defaults(family, acc)
    return int(d["max_num_seqs"]), int(d["max_num_batched_tokens"])


@dataclass(frozen=True, slots=True)
class _DeviceKey:
    id: str
    name: str
    gib: float | None

    @property
    def memory_capacity_bytes(self) -> float | None:
        return None if self.gib is None else self.gib * _GIB
