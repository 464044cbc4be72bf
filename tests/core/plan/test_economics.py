"""Economics against hand calculations."""

from __future__ import annotations

import math

import pytest

from gpuyield.core.plan.economics import (
    HOURS_PER_MONTH,
    GpuPrice,
    OwnedDefaults,
    OwnedHardware,
    PoolCost,
    api_economics,
    break_even_tokens_per_month,
    fleet_economics,
    owned_gpu_price,
    parse_owned_hardware,
)
from gpuyield.core.plan.spec import ApiPrice, parse_api_price
from gpuyield.errors import ConfigError


def test_owned_tco_hand_calculation() -> None:
    hw = OwnedHardware(gpu="h100_sxm", capex_usd_per_gpu=35040.0, amortisation_years=4, power_w_per_gpu=1000.0,
                       pue=1.5, usd_per_kwh=0.10, ops_usd_per_gpu_year=876.0, source="quote", as_of="2026-01-01")
    price = owned_gpu_price(hw)
    # capex 35040 / (4 * 8760) = 1.00; power 1 kW * 1.5 * 0.10 = 0.15; ops 876 / 8760 = 0.10
    assert price.breakdown_usd_per_gpu_hour["capex"] == pytest.approx(1.0)
    assert price.breakdown_usd_per_gpu_hour["power"] == pytest.approx(0.15)
    assert price.breakdown_usd_per_gpu_hour["ops"] == pytest.approx(0.10)
    assert price.usd_per_gpu_hour == pytest.approx(1.25)
    assert price.kind == "owned" and price.as_of == "2026-01-01" and "quote" in price.source


def test_owned_defaults_fill_missing_fields_and_are_named_in_source() -> None:
    hw = OwnedHardware(gpu="l40s", capex_usd_per_gpu=8760.0, source="mine", as_of="2026-02-01")
    d = OwnedDefaults(amortisation_years=(1.0, "cat-a", "2025-01-01"), ops_usd_per_gpu_year=(0.0, "cat-b", "2025-01-01"),
                      power_w_per_gpu=(500.0, "tdp", "2025-01-01"), pue=(1.2, "uptime", "2024-01-01"),
                      usd_per_kwh=(0.2, "eia", "2025-06-01"))
    price = owned_gpu_price(hw, d)
    assert price.usd_per_gpu_hour == pytest.approx(1.0 + 0.5 * 1.2 * 0.2)
    assert "pue from uptime" in price.source and "usd_per_kwh from eia" in price.source
    assert price.as_of == "2026-02-01"  # the newest date involved
    with pytest.raises(ConfigError, match="pue"):
        owned_gpu_price(OwnedHardware(gpu="l40s", capex_usd_per_gpu=1, amortisation_years=1, power_w_per_gpu=1,
                                      usd_per_kwh=0.1, ops_usd_per_gpu_year=0))


def test_parse_owned_file_errors_name_the_field() -> None:
    ok = parse_owned_hardware({"owned": [{"gpu": "h100_sxm", "capex_usd_per_gpu": 30000}]}, origin="o.yaml")
    assert ok[0].gpu == "h100_sxm"
    with pytest.raises(ConfigError, match=r"o.yaml: field owned.0.capex_usd_per_gpu"):
        parse_owned_hardware({"owned": [{"gpu": "h100_sxm", "capex_usd_per_gpu": -1}]}, origin="o.yaml")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_owned_hardware({"owned": [{"gpu": "a"}, {"gpu": "a"}]}, origin="o.yaml")
    with pytest.raises(ConfigError, match="bogus"):
        parse_owned_hardware({"owned": [{"gpu": "a", "bogus": 1}]}, origin="o.yaml")


def test_break_even_hand_calculation() -> None:
    api = ApiPrice(0.10, 0.40, "list", "2026-01-01")
    # $2/h fleet -> $1460/month; 75 % input mix -> $0.175 per 1M tokens -> 8.343e9 tokens/month
    be = break_even_tokens_per_month(2.0, api, 0.75)
    assert be == pytest.approx(2.0 * HOURS_PER_MONTH / (0.175 / 1e6))
    assert break_even_tokens_per_month(2.0, ApiPrice(0, 0, "free", "x"), 0.5) == math.inf


def test_fleet_economics_splits_cost_by_prefill_share() -> None:
    price = GpuPrice("h100_sxm", 2.5, "cloud list", "2026-01-01")
    econ = fleet_economics(
        "plan", [PoolCost("mixed", "h100_sxm", 4, price)],
        input_tokens_per_s=1000.0, output_tokens_per_s=250.0, prefill_time_share=0.25,
        utilisation=0.6, capacity_scale=1.0, api=ApiPrice(0.1, 0.4, "api", "2026-01-01"),
    )
    assert econ.usd_per_hour == pytest.approx(10.0) and econ.num_gpus == 4
    assert econ.usd_per_1m_input == pytest.approx(10.0 * 0.25 / 3.6e6 * 1e6)
    assert econ.usd_per_1m_output == pytest.approx(10.0 * 0.75 / 0.9e6 * 1e6)
    # input + output dollars add back up to the fleet's $/hour
    total = econ.usd_per_1m_input * econ.input_tokens_per_hour / 1e6 + econ.usd_per_1m_output * econ.output_tokens_per_hour / 1e6
    assert total == pytest.approx(econ.usd_per_hour)
    assert econ.api_usd_per_hour == pytest.approx(3.6e6 * 0.1 / 1e6 + 0.9e6 * 0.4 / 1e6)
    assert econ.prices == (("h100_sxm", 2.5, "cloud list", "2026-01-01"),)
    api = api_economics(ApiPrice(0.1, 0.4, "api", "d"), input_tokens_per_s=1000, output_tokens_per_s=250)
    assert api.usd_per_hour == pytest.approx(econ.api_usd_per_hour)


def test_parse_api_price() -> None:
    p = parse_api_price("0.1,0.4", as_of="2026-11-22")
    assert (p.usd_per_1m_input, p.usd_per_1m_output) == (0.1, 0.4)
    for bad in ("0.1", "a,b", "0.1,-1"):
        with pytest.raises(ConfigError, match="api"):
            parse_api_price(bad, as_of="x")
