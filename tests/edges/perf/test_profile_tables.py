"""How `gpuyield profile` writes into a directory that already holds a profile (no torch needed)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from gpuyield.edges.perf.profiler import _GEMM_COLS, _check_same_dtype, _write
from gpuyield.errors import ConfigError


def _row(version: str, m: int, n: int, lat: float, dtype: str = "float32") -> tuple[object, ...]:
    return ("TORCH", version, "cpu", "gemm", "torch.nn.functional.linear", dtype, m, n, 256, lat)


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_rows_of_an_older_torch_version_and_another_column_order_are_carried_forward(tmp_path):
    base = tmp_path / "data" / "cpu" / "gemm" / "torch"
    old = base / "2.12.0" / "gemm_perf.csv"
    old.parent.mkdir(parents=True)
    cols = list(reversed(_GEMM_COLS))  # written by hand, columns in another order
    with open(old, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in (_row("2.12.0", 1, 512, 0.5), _row("2.12.0", 8, 512, 0.9)):
            w.writerow(list(reversed(r)))
    new = base / "2.13.0" / "gemm_perf.csv"
    kept = _write(new, _GEMM_COLS, [_row("2.13.0", 8, 512, 0.7)])  # re-measures one of the two shapes
    assert kept == 1
    rows = _read(new)
    assert {(r["m"], r["latency"]) for r in rows} == {("1", "0.5"), ("8", "0.7")}  # the new timing wins
    # running again keeps everything once
    assert _write(new, _GEMM_COLS, [_row("2.13.0", 16, 512, 1.1)]) == 2
    assert len(_read(new)) == 3


def test_another_dtype_in_any_version_directory_is_refused(tmp_path):
    dev = tmp_path / "data" / "cpu"
    _write(dev / "gemm" / "torch" / "2.12.0" / "gemm_perf.csv", _GEMM_COLS, [_row("2.12.0", 1, 512, 0.5, "bfloat16")])
    with pytest.raises(ConfigError, match="would mix"):
        _check_same_dtype(dev, "2.13.0", "float32")
    _check_same_dtype(dev, "2.13.0", "bfloat16")  # the same dtype adds up
