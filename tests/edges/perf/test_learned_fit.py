"""Fitting the learned residual model (edges/perf/learned.py) on synthetic measurements with a known effect the
measured-point corrections cannot interpolate, and calibrate's --learned switch."""

from __future__ import annotations

import csv
import dataclasses
import math
import random
from pathlib import Path

import numpy as np
import pytest

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf.calibration import default_calibration
from gpuyield.core.perf.validation import (
    CSV_COLUMNS,
    build_corrections,
    predict_row,
    row_from_mapping,
    validate_rows,
)
from gpuyield.errors import ConfigError

pytest.importorskip("sklearn")

from gpuyield.edges.perf import learned as learned_mod  # noqa: E402

CAT = default_catalog()
BASE = dataclasses.replace(default_calibration(), corrections=None)


def _mapping(i: int, gpu: str, tp: int, isl: int, osl: int, conc: int) -> dict[str, str]:
    return {
        "gpu": gpu, "num_gpus": str(tp), "model": "Qwen/Qwen3-32B", "engine": "vllm", "precision": "bf16",
        "layout": f"agg tp{tp} pp1 adp1", "tp": str(tp), "isl": str(isl), "osl": str(osl),
        "concurrency": str(conc), "num_requests": "", "ttft_ms": "", "tpot_ms": "", "e2e_ms": "",
        "throughput_tok_s": "", "source": "synthetic",
    }  # fmt: skip


def _measured(specs: list[tuple[str, int, int, int, int]], seed: int, start: int = 0) -> list[dict[str, str]]:
    """Rows 'measured' as the step-time model's prediction times a known effect: decode is 1.6x slower on
    H200 from ISL 4096 up at concurrency >= 16 (a kernel cliff no neighbouring sweep of the same deployment
    shows), with 3 % noise."""
    rng = random.Random(seed)
    out = []
    for i, (gpu, tp, isl, osl, conc) in enumerate(specs, start):
        m = _mapping(i, gpu, tp, isl, osl, conc)
        res = predict_row(row_from_mapping(m, i), CAT.model, CAT.gpu, BASE, "analytic")
        cliff = 1.6 if (gpu == "h200_sxm" and isl >= 4096 and conc >= 16) else 1.0
        m["ttft_ms"] = f"{res.ttft_ms * rng.uniform(0.97, 1.03):.4f}"
        m["tpot_ms"] = f"{res.tpot_ms * cliff * rng.uniform(0.97, 1.03):.4f}"
        out.append(m)
    return out


GRID = [
    (gpu, tp, isl, osl, conc)
    for gpu in ("h100_sxm", "h200_sxm")
    for tp in (2, 4)
    for isl in (512, 1024, 4096, 8192)
    for osl in (256, 512, 1024)
    for conc in (1, 4, 8, 16, 32, 64, 128)
]


@pytest.fixture()
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(learned_mod, "PARAMS", {**learned_mod.PARAMS, "max_iter": 60, "min_samples_leaf": 10})


def test_learned_model_finds_what_the_measured_points_miss(quick: None) -> None:
    train = [row_from_mapping(m, i) for i, m in enumerate(_measured(GRID, seed=1))]
    logs: list[str] = []
    table = build_corrections(train, CAT.model, CAT.gpu, BASE)
    cal = dataclasses.replace(BASE, corrections=table)
    model = learned_mod.fit_learned_residuals(train, CAT.model, CAT.gpu, cal, log=logs.append, source="test")
    assert model.folds == learned_mod.FOLDS and model.num_trees == 2 * learned_mod.FOLDS * 60
    assert "export checked against scikit-learn" in logs[-1]
    # new sweeps on known deployments: ISL 2048 and 6000 (between and beyond the measured ones)
    new_specs = [(g, tp, isl, 512, c) for g in ("h100_sxm", "h200_sxm") for tp in (2, 4) for isl in (6000,)
                 for c in (2, 8, 24, 48)]  # fmt: skip
    test = [row_from_mapping(m, 1000 + i) for i, m in enumerate(_measured(new_specs, seed=2, start=1000))]
    with_learned = dataclasses.replace(BASE, corrections=dataclasses.replace(table, learned=model))
    a = validate_rows(test, CAT.model, CAT.gpu, cal)["summary"]["tpot_ms"]["mape"]
    b = validate_rows(test, CAT.model, CAT.gpu, with_learned)["summary"]["tpot_ms"]["mape"]
    assert b < 0.75 * a, (a, b)


def test_too_few_rows_are_refused(quick: None) -> None:
    rows = [row_from_mapping(m, i) for i, m in enumerate(_measured(GRID[:20], seed=3))]
    cal = dataclasses.replace(BASE, corrections=build_corrections(rows, CAT.model, CAT.gpu, BASE))
    with pytest.raises(ConfigError, match="at least"):
        learned_mod.fit_learned_residuals(rows, CAT.model, CAT.gpu, cal)


def test_calibrate_fits_and_writes_it_and_no_learned_leaves_it_out(
    quick: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from gpuyield.edges.cli.main import app
    from gpuyield.edges.perf.io import load_calibration

    path = tmp_path / "m.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
        w.writeheader()
        w.writerows(_measured(GRID, seed=4))
    runner = CliRunner()
    out = tmp_path / "c.yaml"
    args = ["calibrate", "--base", "shipped", "--measurements", str(path), "--rounds", "1", "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    cal = load_calibration(str(out))
    assert cal.corrections is not None and cal.corrections.learned is not None
    assert cal.corrections.learned.training["rows"] == len(GRID)
    x = [0.0] * len(cal.corrections.learned.features)
    assert all(math.isfinite(v) for v in cal.corrections.learned.log_factors(x))
    r = runner.invoke(app, [*args[:-1], str(tmp_path / "d.yaml"), "--no-learned"])
    assert r.exit_code == 0, r.output
    plain = load_calibration(str(tmp_path / "d.yaml"))
    assert plain.corrections is not None and plain.corrections.learned is None
    assert np.isclose(len(plain.corrections), len(cal.corrections))


def test_a_file_without_tpot_fits_ttft_only(quick: None) -> None:
    ms = _measured(GRID, seed=5)
    for m in ms:
        m["tpot_ms"] = ""
    rows = [row_from_mapping(m, i) for i, m in enumerate(ms)]
    cal = dataclasses.replace(BASE, corrections=build_corrections(rows, CAT.model, CAT.gpu, BASE))
    logs: list[str] = []
    model = learned_mod.fit_learned_residuals(rows, CAT.model, CAT.gpu, cal, log=logs.append)
    assert set(model.tree_metric.tolist()) == {0}  # TTFT trees only
    assert model.log_factors([0.0] * len(model.features))[1] == 0.0  # TPOT left alone
    assert any("TPOT residuals, too few" in m for m in logs)


def test_calibrate_without_scikit_learn_skips_it_unless_asked(
    quick: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from gpuyield.edges.cli.main import app
    from gpuyield.edges.perf.io import load_calibration

    def missing() -> None:
        raise ConfigError("fitting the learned residual model needs scikit-learn: pip install 'gpuyield[fit]'")

    monkeypatch.setattr(learned_mod, "sklearn_available", lambda: False)
    monkeypatch.setattr(learned_mod, "_sklearn", missing)
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
        w.writeheader()
        w.writerows(_measured(GRID, seed=6))
    args = ["calibrate", "--base", "shipped", "--measurements", str(path), "--rounds", "1"]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a.yaml")])
    assert r.exit_code == 0, r.output
    assert "scikit-learn is not installed" in r.output and "gpuyield[fit]" in " ".join(r.output.split())
    cal = load_calibration(str(tmp_path / "a.yaml"))
    assert cal.corrections is not None and cal.corrections.learned is None
    r = CliRunner().invoke(app, [*args, "--learned", "--out", str(tmp_path / "b.yaml")])
    assert r.exit_code == 2 and "gpuyield[fit]" in r.output  # the brackets survive the error printer
    assert not (tmp_path / "b.yaml").exists()
