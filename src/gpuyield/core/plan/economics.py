"""Plan economics: $/hour, $ per 1M input and output tokens, utilisation, break-even against an API.

Conventions (documented in docs/formats.md):

- A GPU-hour costs either a cloud price (catalogue or ``--prices`` file) or the owned total cost of
  ownership: ``capex / (amortisation_years * 8760) + power_kw * pue * usd_per_kwh + ops_usd_per_year / 8760``.
- A fleet's $/hour is the sum over pools of ``num_gpus * usd_per_gpu_hour``; it is paid whether busy or idle.
- The fleet's cost is split between input and output tokens by the share of engine time spent on prefill
  (``prefill_time_share``, from the performance model at the workload's mix): input tokens carry
  ``usd_per_hour * share`` and output tokens the rest. ``$ per 1M input = usd_per_hour * share /
  input_tokens_per_hour * 1e6`` (every prompt token counts, cached or not, as an API would bill it).
- Break-even monthly volume: the number of tokens per month (at the workload's input:output mix) at which
  buying them from the API costs as much as running the fleet for a month (730 h). Above it, self-hosting
  is cheaper, provided the fleet can carry that volume (``capacity_tokens_per_month``). The min-cost search
  passes ``capacity_scale=1.0`` (the fleet is verified at the workload's rate only), so there the capacity is
  the workload's own volume and a break-even above it is not shown to be reachable by this fleet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpuyield.core.plan.spec import ApiPrice
from gpuyield.errors import ConfigError

__all__ = [
    "HOURS_PER_MONTH",
    "HOURS_PER_YEAR",
    "FleetEconomics",
    "GpuPrice",
    "OwnedHardware",
    "OwnedDefaults",
    "OwnedHardwareFile",
    "PoolCost",
    "api_economics",
    "api_usd_per_hour",
    "break_even_tokens_per_month",
    "fleet_economics",
    "owned_gpu_price",
    "parse_owned_hardware",
]

HOURS_PER_YEAR = 8760.0
HOURS_PER_MONTH = HOURS_PER_YEAR / 12.0  # 730 h


@dataclass(frozen=True, slots=True)
class GpuPrice:
    """The price of one GPU-hour of one accelerator type, with where it came from."""

    gpu_id: str
    usd_per_gpu_hour: float
    source: str
    as_of: str
    kind: str = "cloud"  # "cloud" | "owned"
    # For owned hardware: the parts of usd_per_gpu_hour (capex, power, ops), each in USD per GPU-hour.
    breakdown_usd_per_gpu_hour: dict[str, float] = field(default_factory=dict)


class OwnedHardware(BaseModel):
    """One owned accelerator type in an ``--owned FILE`` (money in USD, per GPU).

    Every field but ``gpu`` may be left out; it then comes from the catalogue's defaults (owned-hardware
    capex/amortisation/ops for that GPU, the GPU's TDP as average power, the default PUE and electricity
    price), and the price's ``source`` names each default used.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu: str = Field(min_length=1, description="catalogue GPU id, e.g. h100_sxm")
    capex_usd_per_gpu: float | None = Field(None, gt=0, description="purchase price per GPU incl. server share")
    amortisation_years: float | None = Field(None, gt=0, le=10, description="straight-line depreciation period")
    power_w_per_gpu: float | None = Field(None, gt=0, description="average wall power per GPU incl. server share, W")
    pue: float | None = Field(None, ge=1.0, le=3.0, description="data-centre power usage effectiveness")
    usd_per_kwh: float | None = Field(None, ge=0, lt=2, description="electricity price")
    ops_usd_per_gpu_year: float | None = Field(None, ge=0, description="space, network, staff, support (not power)")
    source: str = Field("user --owned file", min_length=1, description="where the given numbers come from")
    as_of: str | None = Field(None, description="date of the given numbers, YYYY-MM-DD")


class OwnedHardwareFile(BaseModel):
    """The ``--owned FILE`` document: ``owned: [OwnedHardware, ...]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    owned: list[OwnedHardware] = Field(min_length=1)


def parse_owned_hardware(data: object, *, origin: str) -> list[OwnedHardware]:
    """Validate a parsed ``--owned`` YAML document; ``origin`` (the file name) is named in errors."""
    try:
        doc = OwnedHardwareFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{origin}: field {loc or '(root)'}: {first['msg']}") from None
    seen: set[str] = set()
    for entry in doc.owned:
        if entry.gpu in seen:
            raise ConfigError(f"{origin}: GPU {entry.gpu!r} listed twice; expected one entry per GPU type")
        seen.add(entry.gpu)
    return list(doc.owned)


@dataclass(frozen=True, slots=True)
class OwnedDefaults:
    """Catalogue defaults for the fields an ``--owned`` entry leaves out, each with (value, source, as_of)."""

    capex_usd_per_gpu: tuple[float, str, str] | None = None
    amortisation_years: tuple[float, str, str] | None = None
    ops_usd_per_gpu_year: tuple[float, str, str] | None = None
    power_w_per_gpu: tuple[float, str, str] | None = None
    pue: tuple[float, str, str] | None = None
    usd_per_kwh: tuple[float, str, str] | None = None


def owned_gpu_price(hw: OwnedHardware, defaults: OwnedDefaults | None = None, *, gpu_id: str | None = None) -> GpuPrice:
    """Total cost of ownership of one GPU-hour: amortised capex + power x PUE x $/kWh + ops.

    ``capex / (years * 8760) + power_w / 1000 * pue * usd_per_kwh + ops_per_year / 8760``.
    """
    d = defaults or OwnedDefaults()
    used: list[str] = []
    dates: list[str] = [hw.as_of] if hw.as_of else []

    def pick(name: str) -> float:
        given = getattr(hw, name)
        if given is not None:
            return float(given)
        default = getattr(d, name)
        if default is None:
            raise ConfigError(f"--owned entry for {hw.gpu}: field {name} is missing and the catalogue has no default")
        used.append(f"{name} from {default[1]}")
        dates.append(default[2])
        return float(default[0])

    capex_total, years = pick("capex_usd_per_gpu"), pick("amortisation_years")
    power_w, pue, kwh, ops_year = pick("power_w_per_gpu"), pick("pue"), pick("usd_per_kwh"), pick("ops_usd_per_gpu_year")
    capex = capex_total / (years * HOURS_PER_YEAR)
    power = power_w / 1000.0 * pue * kwh
    ops = ops_year / HOURS_PER_YEAR
    source = f"owned TCO: {hw.source}" + (f"; defaults: {'; '.join(used)}" if used else "")
    return GpuPrice(
        gpu_id=gpu_id or hw.gpu,
        usd_per_gpu_hour=capex + power + ops,
        source=source,
        as_of=max(dates) if dates else "unknown",
        kind="owned",
        breakdown_usd_per_gpu_hour={"capex": capex, "power": power, "ops": ops},
    )


@dataclass(frozen=True, slots=True)
class PoolCost:
    """One pool's share of a fleet's price."""

    pool: str
    gpu_id: str
    num_gpus: int
    price: GpuPrice

    @property
    def usd_per_hour(self) -> float:
        return self.num_gpus * self.price.usd_per_gpu_hour


@dataclass(frozen=True, slots=True)
class FleetEconomics:
    """Money for one deployment (plan or naive) or for the API, at the workload's traffic."""

    label: str  # "plan" | "naive" | "api"
    num_gpus: int
    usd_per_hour: float
    pools: tuple[PoolCost, ...]
    input_tokens_per_hour: float  # at the workload's rate
    output_tokens_per_hour: float
    prefill_time_share: float  # share of engine time spent on prefill, 0..1 (splits cost in/out)
    usd_per_1m_input: float
    usd_per_1m_output: float
    usd_per_1m_tokens: float  # blended over the workload's mix
    utilisation: float  # mean fraction of engine time busy, 0..1 (NaN for the API)
    capacity_tokens_per_month: float  # workload tokens/month x capacity_scale (1.0 = only the workload's rate verified); inf for API
    api_usd_per_hour: float | None  # the same traffic bought from the API
    break_even_tokens_per_month: float | None  # None without an API price
    prices: tuple[tuple[str, float, str, str], ...]  # (gpu_id, usd_per_gpu_hour, source, as_of) shown


def api_usd_per_hour(api: ApiPrice, input_tokens_per_hour: float, output_tokens_per_hour: float) -> float:
    """What the API charges for one hour of this traffic."""
    return (input_tokens_per_hour * api.usd_per_1m_input + output_tokens_per_hour * api.usd_per_1m_output) / 1e6


def break_even_tokens_per_month(usd_per_hour: float, api: ApiPrice, input_fraction: float) -> float:
    """Tokens per month (mix: ``input_fraction`` of them are input) where API cost = fleet cost.

    ``usd_per_hour * 730 / blended_api_usd_per_token``; ``inf`` when the API is free.
    """
    if not 0.0 <= input_fraction <= 1.0:
        raise ValueError(f"input_fraction={input_fraction}: expected 0..1")
    usd_per_token = (input_fraction * api.usd_per_1m_input + (1 - input_fraction) * api.usd_per_1m_output) / 1e6
    if usd_per_token <= 0:
        return math.inf
    return usd_per_hour * HOURS_PER_MONTH / usd_per_token


def fleet_economics(
    label: str,
    pools: list[PoolCost],
    *,
    input_tokens_per_s: float,
    output_tokens_per_s: float,
    prefill_time_share: float,
    utilisation: float,
    capacity_scale: float,
    api: ApiPrice | None,
) -> FleetEconomics:
    """Economics of a fleet serving the workload; ``capacity_scale`` = max traffic multiple at the SLO (>= 1)."""
    if not 0.0 <= prefill_time_share <= 1.0:
        raise ValueError(f"prefill_time_share={prefill_time_share}: expected 0..1")
    usd_per_hour = sum(p.usd_per_hour for p in pools)
    in_h, out_h = input_tokens_per_s * 3600.0, output_tokens_per_s * 3600.0
    usd_in = usd_per_hour * prefill_time_share / in_h * 1e6 if in_h > 0 else math.nan
    usd_out = usd_per_hour * (1 - prefill_time_share) / out_h * 1e6 if out_h > 0 else math.nan
    total_h = in_h + out_h
    blended = usd_per_hour / total_h * 1e6 if total_h > 0 else math.nan
    in_frac = in_h / total_h if total_h > 0 else 0.5
    api_hour = api_usd_per_hour(api, in_h, out_h) if api is not None else None
    be = break_even_tokens_per_month(usd_per_hour, api, in_frac) if api is not None else None
    prices = tuple(sorted({(p.gpu_id, p.price.usd_per_gpu_hour, p.price.source, p.price.as_of) for p in pools}))
    return FleetEconomics(
        label=label,
        num_gpus=sum(p.num_gpus for p in pools),
        usd_per_hour=usd_per_hour,
        pools=tuple(pools),
        input_tokens_per_hour=in_h,
        output_tokens_per_hour=out_h,
        prefill_time_share=prefill_time_share,
        usd_per_1m_input=usd_in,
        usd_per_1m_output=usd_out,
        usd_per_1m_tokens=blended,
        utilisation=utilisation,
        capacity_tokens_per_month=total_h * HOURS_PER_MONTH * capacity_scale,
        api_usd_per_hour=api_hour,
        break_even_tokens_per_month=be,
        prices=prices,
    )


def api_economics(api: ApiPrice, *, input_tokens_per_s: float, output_tokens_per_s: float) -> FleetEconomics:
    """The API column of the plan / naive / API table."""
    in_h, out_h = input_tokens_per_s * 3600.0, output_tokens_per_s * 3600.0
    usd_h = api_usd_per_hour(api, in_h, out_h)
    total = in_h + out_h
    return FleetEconomics(
        label="api",
        num_gpus=0,
        usd_per_hour=usd_h,
        pools=(),
        input_tokens_per_hour=in_h,
        output_tokens_per_hour=out_h,
        prefill_time_share=math.nan,
        usd_per_1m_input=api.usd_per_1m_input,
        usd_per_1m_output=api.usd_per_1m_output,
        usd_per_1m_tokens=usd_h / total * 1e6 if total > 0 else math.nan,
        utilisation=math.nan,
        capacity_tokens_per_month=math.inf,
        api_usd_per_hour=usd_h,
        break_even_tokens_per_month=None,
        prices=(("api", math.nan, api.source, api.as_of),),
    )

