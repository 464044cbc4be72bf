"""``gpuyield plan --prices``: the same file format as ``gpuyield baseline --prices`` (one schema)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuyield.core.catalog import default_catalog
from gpuyield.edges.plan.files import load_prices_file
from gpuyield.errors import ConfigError

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "telemetry"


def _resolve(name: str) -> str:
    return default_catalog().gpu(name).id


def test_baseline_prices_file_with_notes_and_gpu_prices_key_loads(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(
        "gpu_prices:\n"
        "  - {gpu: 'NVIDIA H100 80GB HBM3', usd_per_gpu_hour: 2.10, source: contract, as_of: 2026-11-01,"
        " notes: reserved 1y}\n"
    )
    prices = load_prices_file(f, _resolve)
    assert list(prices) == ["h100_sxm"]
    p = prices["h100_sxm"]
    assert p.usd_per_gpu_hour == 2.10 and p.as_of == "2026-11-01" and "contract" in p.source


def test_prices_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("prices:\n  - {gpu: h100_sxm, usd_per_gpu_hour: -1, source: x, as_of: 2026-11-01}\n")
    with pytest.raises(ConfigError, match=r"--prices .*p\.yaml: field prices\.0\.usd_per_gpu_hour"):
        load_prices_file(f, _resolve)
    f.write_text(
        "prices:\n  - {gpu: h100_sxm, usd_per_gpu_hour: 2, source: x, as_of: 2026-11-01}\n"
        "  - {gpu: H100, usd_per_gpu_hour: 3, source: y, as_of: 2026-11-01}\n"
    )
    with pytest.raises(ConfigError, match="listed twice"):
        load_prices_file(f, _resolve)


def test_baseline_test_prices_fixture_names_a_gpu_outside_the_catalogue() -> None:
    # The baseline fixture prices an RTX 4000 Ada by its DCGM name; the planner needs catalogue GPUs and says so.
    with pytest.raises(ConfigError, match="RTX 4000 Ada"):
        load_prices_file(FIX / "prices_test.yaml", _resolve)
