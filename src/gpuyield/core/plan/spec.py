"""What the user asks the planner for: the SLO, the mode, the constraints, the prices to use.

Plain frozen dataclasses, validated when built (a bad value raises :class:`~gpuyield.errors.ConfigError`
naming the field). Parsing of command-line strings (``ttft_p99_ms=2000,tpot_p99_ms=100``,
``in_usd_per_1m,out_usd_per_1m``) lives here too because it is pure string work; the CLI only calls it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gpuyield.errors import ConfigError

__all__ = [
    "ApiPrice",
    "PlanMode",
    "PlanRequest",
    "Slo",
    "parse_api_price",
    "parse_slo",
]

# SLO keys the planner understands, and the simulator summary key each one is checked against.
_SLO_KEYS = ("ttft_p99_ms", "tpot_p99_ms", "ttft_p50_ms", "tpot_p50_ms", "e2e_p99_ms")


class PlanMode(StrEnum):
    """What the planner optimises."""

    MIN_COST = "min-cost"  # cheapest deployment meeting the SLO at the workload's rate (default)
    MAX_GOODPUT = "max-goodput"  # most SLO-meeting traffic for a fixed $/hour budget
    CAPACITY = "capacity"  # how much of this traffic a given fleet carries at the SLO


@dataclass(frozen=True, slots=True)
class Slo:
    """Latency targets, in milliseconds. ``None`` means "no target on this metric"."""

    ttft_p99_ms: float | None = None
    tpot_p99_ms: float | None = None
    ttft_p50_ms: float | None = None
    tpot_p50_ms: float | None = None
    e2e_p99_ms: float | None = None

    def __post_init__(self) -> None:
        for key in _SLO_KEYS:
            value = getattr(self, key)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise ConfigError(f"--slo {key}={value}: expected a positive number of milliseconds")
        if all(getattr(self, k) is None for k in _SLO_KEYS):
            raise ConfigError(f"--slo: give at least one target, e.g. ttft_p99_ms=2000,tpot_p99_ms=100 (keys: {', '.join(_SLO_KEYS)})")

    def targets(self) -> dict[str, float]:
        """The set targets as ``{metric: limit_ms}``, in a fixed order."""
        return {k: float(v) for k in _SLO_KEYS if (v := getattr(self, k)) is not None}

    def violations(self, summary: dict[str, float]) -> list[tuple[str, float, float]]:
        """``(metric, measured_ms, limit_ms)`` for every target ``summary`` misses (NaN/absent = miss)."""
        out: list[tuple[str, float, float]] = []
        for key, limit in self.targets().items():
            measured = summary.get(key, math.nan)
            if measured is None or not math.isfinite(float(measured)) or float(measured) > limit:
                out.append((key, float("nan") if measured is None else float(measured), limit))
        return out

    def describe(self) -> str:
        return ",".join(f"{k}={v:g}" for k, v in self.targets().items())


def parse_slo(text: str) -> Slo:
    """Parse ``ttft_p99_ms=2000,tpot_p99_ms=100`` (also accepts ``ttft_p99=2s`` style units ``ms``/``s``)."""
    values: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" not in part:
            raise ConfigError(f"--slo {part!r}: expected KEY=VALUE, e.g. ttft_p99_ms=2000")
        key, _, raw = part.partition("=")
        key, raw = key.strip(), raw.strip().lower()
        scale = 1.0
        if raw.endswith("ms"):
            raw = raw[:-2]
        elif raw.endswith("s"):
            raw, scale = raw[:-1], 1000.0
        if not key.endswith("_ms") and f"{key}_ms" in _SLO_KEYS:
            key = f"{key}_ms"
        if key not in _SLO_KEYS:
            raise ConfigError(f"--slo key {key!r}: expected one of {', '.join(_SLO_KEYS)}")
        try:
            values[key] = float(raw) * scale
        except ValueError:
            raise ConfigError(f"--slo {key}={raw!r}: expected a number of milliseconds") from None
    return Slo(**values)


@dataclass(frozen=True, slots=True)
class ApiPrice:
    """A hosted API's list price for the same model, in USD per million tokens."""

    usd_per_1m_input: float
    usd_per_1m_output: float
    source: str
    as_of: str

    def __post_init__(self) -> None:
        for name in ("usd_per_1m_input", "usd_per_1m_output"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"api price {name}={v}: expected a non-negative number of USD per 1M tokens")


def parse_api_price(text: str, *, as_of: str) -> ApiPrice:
    """Parse ``--api-price IN,OUT`` (USD per 1M input and output tokens); ``as_of`` is the date given."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise ConfigError(f"--api-price {text!r}: expected IN_USD_PER_1M,OUT_USD_PER_1M, e.g. 0.10,0.40")
    try:
        usd_in, usd_out = float(parts[0]), float(parts[1])
    except ValueError:
        raise ConfigError(f"--api-price {text!r}: expected two numbers, e.g. 0.10,0.40") from None
    return ApiPrice(usd_in, usd_out, source="user (--api-price)", as_of=as_of)


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """Everything the search needs besides the workload, the catalogue and the executor."""

    model_id: str
    slo: Slo
    gpu_ids: tuple[str, ...]  # allowed accelerator ids (catalogue ids); the search may mix them for P/D
    mode: PlanMode = PlanMode.MIN_COST
    max_gpus: int | None = None  # cap on GPUs in any plan (and the fleet size in capacity mode)
    budget_usd_per_hour: float | None = None  # required in max-goodput mode; a hard cap otherwise
    allow_lower_precision: bool = False  # lets the search try fp8 weights / fp8 KV (a quality trade-off)
    # weight precision of the checkpoint to deploy (catalog.checkpoint_precision of the name asked for: an alias
    # such as nvidia/DeepSeek-R1-NVFP4 is nvfp4); None: the model's native dtype
    checkpoint_dtype: str | None = None
    allow_disaggregated: bool = True
    top_k: int = 12  # candidates verified by simulation
    seed: int = 0
    engine: str = "vllm"
    max_replicas_per_candidate: int = 64
    # speculative decoding of every decode-capable pool (a gpuyield.core.perf.SpeculativeDecoding), None: off
    speculative: Any = None

    def __post_init__(self) -> None:
        if not self.gpu_ids:
            raise ConfigError("--gpus: expected at least one GPU id, e.g. h100_sxm,a100_sxm,l40s")
        if self.max_gpus is not None and self.max_gpus < 1:
            raise ConfigError(f"--max-gpus {self.max_gpus}: expected a positive integer")
        if self.budget_usd_per_hour is not None and not self.budget_usd_per_hour > 0:
            raise ConfigError(f"--budget-usd-per-hour {self.budget_usd_per_hour}: expected a positive number")
        if self.mode is PlanMode.MAX_GOODPUT and self.budget_usd_per_hour is None:
            raise ConfigError("--mode max-goodput needs --budget-usd-per-hour X")
        if self.mode is PlanMode.CAPACITY and self.max_gpus is None:
            raise ConfigError("--mode capacity needs the fleet size: --max-gpus N (with --gpus naming its GPU types)")
        if self.top_k < 1:
            raise ConfigError(f"--top-k {self.top_k}: expected a positive integer")
