"""Prices: GPU-hours by provider and tier, energy, owned-hardware defaults and hosted-API token prices.

Prices go stale: every entry carries ``as_of`` and ``source``; the CLI prints ``as_of`` beside every price.
"""

from __future__ import annotations

import datetime as _dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ApiPrice",
    "ElectricityPrice",
    "GpuPrice",
    "OwnedHardware",
    "PriceEntry",
    "ProviderKind",
    "PueEntry",
    "Tier",
]

Tier = Literal["on_demand", "spot", "reserved_1y", "reserved_3y", "committed"]
ProviderKind = Literal["hyperscaler", "specialised", "marketplace"]

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class GpuPrice(BaseModel):
    """Rental price of one GPU for one hour (instance price / GPUs per instance)."""

    model_config = _FROZEN

    gpu: str = Field(min_length=1, description="accelerator id or alias")
    provider: str = Field(min_length=1, description="e.g. 'aws', 'lambda', 'runpod'")
    provider_kind: ProviderKind
    tier: Tier
    usd_per_gpu_hour: float = Field(gt=0, lt=1000)
    instance: str | None = None  # e.g. 'p5.48xlarge'
    region: str | None = None
    source: str = Field(min_length=1)
    as_of: _dt.date
    notes: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.gpu, self.provider, self.tier, self.region or "")


PriceEntry = GpuPrice  # the name the planner uses


class ApiPrice(BaseModel):
    """A hosted-API price for an open model, per million tokens."""

    model_config = _FROZEN

    model: str = Field(min_length=1, description="catalogue model id or alias")
    provider: str = Field(min_length=1)
    usd_per_1m_input_tokens: float = Field(ge=0, lt=1000)
    usd_per_1m_output_tokens: float = Field(ge=0, lt=1000)
    usd_per_1m_cached_input_tokens: float | None = Field(None, ge=0, lt=1000)
    variant: str | None = None  # e.g. 'turbo (fp8)', 'batch'
    source: str = Field(min_length=1)
    as_of: _dt.date
    notes: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model, self.provider, self.variant or "")


class ElectricityPrice(BaseModel):
    """Electricity price for a region and customer class."""

    model_config = _FROZEN

    region: str = Field(min_length=1)
    usd_per_kwh: float = Field(gt=0, lt=2)
    sector: str = "industrial"
    source: str = Field(min_length=1)
    as_of: _dt.date
    notes: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.region, self.sector)


class PueEntry(BaseModel):
    """Power usage effectiveness (facility power / IT power) of a kind of data centre."""

    model_config = _FROZEN

    facility: str = Field(min_length=1)
    pue: float = Field(ge=1.0, le=3.0)
    source: str = Field(min_length=1)
    as_of: _dt.date
    notes: str = ""

    @property
    def key(self) -> str:
        return self.facility


class OwnedHardware(BaseModel):
    """Defaults for buying the hardware instead of renting it."""

    model_config = _FROZEN

    gpu: str = Field(min_length=1)
    capex_usd_per_gpu: float = Field(gt=0, lt=1e6, description="GPU plus its share of the server and network")
    amortisation_years: float = Field(gt=0, le=10)
    ops_usd_per_gpu_year: float = Field(
        ge=0, lt=1e5, description="colocation, support, staff share; not power"
    )
    source: str = Field(min_length=1)
    as_of: _dt.date
    notes: str = ""

    @property
    def key(self) -> str:
        return self.gpu

    def usd_per_gpu_hour(self, *, power_w: float = 0.0, usd_per_kwh: float = 0.0, pue: float = 1.0) -> float:
        """Amortised capex + ops + energy per GPU-hour (8,760 h a year, no utilisation discount)."""
        hours = 8760.0
        energy = power_w / 1000.0 * pue * usd_per_kwh
        return (
            self.capex_usd_per_gpu / (self.amortisation_years * hours)
            + self.ops_usd_per_gpu_year / hours
            + energy
        )
