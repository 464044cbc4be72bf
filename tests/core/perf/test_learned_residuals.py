"""The learned residual model: tree evaluation, cross-fitting folds, plain-data form, and how validate/estimate
apply it (core/perf/residual.py, validation.correct_row)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf.calibration import calibration_from_dict, calibration_to_dict, default_calibration
from gpuyield.core.perf.residual import FEATURES, LearnedResiduals, sweep_fold
from gpuyield.core.perf.validation import (
    build_corrections,
    correct_row,
    predict_row,
    residual_features,
    row_from_mapping,
    sweep_key,
    validate_rows,
)
from gpuyield.errors import ConfigError, GpuyieldError

CAT = default_catalog()
BASE = dataclasses.replace(default_calibration(), corrections=None)
ISL = FEATURES.index("log_isl")
THR = math.log(2048)


def _stumps(**kw: object) -> LearnedResiduals:
    """Two folds; TTFT trees split on log ISL at 2048, TPOT trees are single leaves."""
    nodes = [
        # tree 0: TTFT, fold 0
        (ISL, THR, 1, 2, True, 0.0), (-1, 0.0, 0, 0, False, 0.1), (-1, 0.0, 0, 0, False, 0.3),
        # tree 1: TPOT, fold 0
        (-1, 0.0, 0, 0, False, -0.2),
        # tree 2: TTFT, fold 1 (NaN goes right)
        (ISL, THR, 1, 2, False, 0.0), (-1, 0.0, 0, 0, False, 0.0), (-1, 0.0, 0, 0, False, 0.1),
        # tree 3: TPOT, fold 1
        (-1, 0.0, 0, 0, False, 0.0),
    ]  # fmt: skip
    cols = list(zip(*nodes, strict=True))
    args: dict[str, object] = {
        "features": FEATURES,
        "folds": 2,
        "baseline": ((0.01, 0.02), (0.0, 0.0)),
        "feature": np.array(cols[0]),
        "threshold": np.array(cols[1], dtype=float),
        "left": np.array(cols[2]),
        "right": np.array(cols[3]),
        "missing_left": np.array(cols[4], dtype=bool),
        "value": np.array(cols[5], dtype=float),
        "tree_start": np.array([0, 3, 4, 7]),
        "tree_metric": np.array([0, 1, 0, 1]),
        "tree_fold": np.array([0, 0, 1, 1]),
    }
    args.update(kw)
    return LearnedResiduals(**args)  # type: ignore[arg-type]


def _x(isl: float) -> list[float]:
    x = [0.0] * len(FEATURES)
    x[ISL] = math.log(isl) if isl == isl else math.nan
    return x


def test_each_fold_sums_its_trees_and_a_new_query_takes_their_mean() -> None:
    m = _stumps()
    assert m.log_factors(_x(1024), 0) == pytest.approx((0.11, -0.2))
    assert m.log_factors(_x(1024), 1) == pytest.approx((0.02, 0.0))
    assert m.log_factors(_x(8192), 0) == pytest.approx((0.31, -0.2))
    assert m.log_factors(_x(2048), 1) == pytest.approx((0.02, 0.0))  # <= the threshold goes left
    assert m.log_factors(_x(1024)) == pytest.approx((0.065, -0.1))
    assert m.factors(_x(8192)) == pytest.approx((math.exp((0.31 + 0.12) / 2), math.exp(-0.1)))


def test_an_unknown_feature_follows_the_trees_missing_branch() -> None:
    m = _stumps()
    assert m.log_factors(_x(math.nan), 0)[0] == pytest.approx(0.11)  # left
    assert m.log_factors(_x(math.nan), 1)[0] == pytest.approx(0.12)  # right


def test_plain_data_round_trip_and_calibration_file() -> None:
    m = _stumps(source="unit test", training={"rows": 4})
    back = LearnedResiduals.from_dict(m.to_dict())
    for isl in (100, 2048, 5000, math.nan):
        for fold in (None, 0, 1):
            assert back.log_factors(_x(isl), fold) == m.log_factors(_x(isl), fold)
    assert back.source == "unit test" and back.training == {"rows": 4}
    rows = [_row(0)]
    table = dataclasses.replace(build_corrections(rows, CAT.model, CAT.gpu, BASE), learned=m)
    cal = calibration_from_dict(calibration_to_dict(dataclasses.replace(BASE, corrections=table)))
    assert cal.corrections is not None and cal.corrections.learned is not None
    assert cal.corrections.learned.log_factors(_x(8192)) == m.log_factors(_x(8192))


def test_sweep_folds_are_stable() -> None:
    # crc32: the fold of a sweep must not change between runs, machines or versions (validate relies on it)
    assert 0xE8B7BE43 % 5 == 2  # crc32(b"a")
    assert [sweep_fold(k, 5) for k in ("a", "")] == [2, 0]
    assert sweep_fold("a", 7) == 0xE8B7BE43 % 7


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"features": FEATURES[:-1]}, "features"),
        ({"folds": 1}, "folds"),
        ({"baseline": ((0.0, 0.0),)}, "baseline"),
        ({"left": np.array([1, 0, 0, 0, 5, 0, 0, 0])}, "outside its tree"),
        ({"value": np.array([0, 0.1, math.inf, 0, 0, 0, 0.1, 0])}, "finite"),
        ({"tree_fold": np.array([0, 0, 2, 1])}, "fold"),
        ({"tree_metric": np.array([0, 3, 0, 1])}, "TTFT"),
        ({"tree_start": np.array([0, 3, 3, 7])}, "offsets"),
        ({"feature": np.array([99, -1, -1, -1, ISL, -1, -1, -1])}, "unknown feature"),
        ({"left": np.array([0, 0, 0, 0, 1, 0, 0, 0])}, "cycle"),
    ],
)
def test_malformed_trees_are_refused_with_the_reason(change: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _stumps(**change)


def test_malformed_plain_data_is_refused() -> None:
    d = _stumps().to_dict()
    for bad, match in (
        ({**d, "trees": "not base64!"}, "trees"),
        ({**d, "extra": 1}, "unknown"),
        ({k: v for k, v in d.items() if k != "trees"}, "missing"),
        ({**d, "baseline": [["x"]]}, "numbers"),
        ({**d, "folds": 2.7}, "integer"),
        ({**d, "features": 5}, "feature names"),
    ):
        with pytest.raises(ConfigError, match=match):
            LearnedResiduals.from_dict(bad)
    with pytest.raises(ConfigError, match="features"):
        _stumps().log_factors([0.0] * 3)
    with pytest.raises(ConfigError, match="fold_aliases"):
        LearnedResiduals.from_dict({**d, "fold_aliases": []})
    with pytest.raises(ConfigError, match="itself aliased"):  # a chain would split what it ties
        LearnedResiduals.from_dict({**d, "fold_aliases": {"a": "b", "b": "c"}})
    tied = LearnedResiduals.from_dict({**d, "fold_aliases": {"a": "c", "b": "c"}})
    assert tied.fold_of("a") == tied.fold_of("b") == tied.fold_of("c")
    assert LearnedResiduals.from_dict(tied.to_dict()).fold_aliases == {"a": "c", "b": "c"}


def _row(i: int, **kw: str):  # type: ignore[no-untyped-def]
    base = {
        "gpu": "h100_sxm", "num_gpus": "2", "model": "Qwen/Qwen3-32B", "engine": "vllm", "precision": "bf16",
        "layout": "agg tp2 pp1 adp1 moe_tp0 ep0", "tp": "2", "isl": "1024", "osl": "1024", "concurrency": "16",
        "num_requests": "", "ttft_ms": "300", "tpot_ms": "20", "e2e_ms": "", "throughput_tok_s": "", "source": "t",
    }  # fmt: skip
    base.update(kw)
    return row_from_mapping(base, i)


def test_validate_applies_the_ensemble_that_never_saw_the_rows_sweep_on_own_data() -> None:
    rows = [_row(i, concurrency=str(c), isl=str(isl)) for i, (c, isl) in enumerate([(8, 1024), (16, 1024), (16, 8192), (32, 8192)])]
    table = dataclasses.replace(build_corrections(rows, CAT.model, CAT.gpu, BASE), learned=_stumps())
    cal = dataclasses.replace(BASE, corrections=table)
    plain = dataclasses.replace(BASE, corrections=dataclasses.replace(table, learned=None))
    own = validate_rows(rows, CAT.model, CAT.gpu, cal)  # the table's own data: leave-one-out
    new = validate_rows(rows, CAT.model, CAT.gpu, cal, leave_own_out=False)
    before = validate_rows(rows, CAT.model, CAT.gpu, plain)
    assert own["own_rows"]["left_out"] and own["learned_rows"] == own["corrected_rows"] > 0
    for rec, rec_new, rec0, row in zip(own["rows"], new["rows"], before["rows"], rows, strict=True):
        if "correction" not in rec:
            continue
        fold = sweep_fold(sweep_key(row, CAT.model, CAT.gpu), 2)
        want = _stumps().factors(_x(row.isl), fold)
        assert rec["correction"]["learned_factors"] == pytest.approx(list(want))
        assert rec["predicted_tpot_ms"] == pytest.approx(rec0["predicted_tpot_ms"] * want[1])
        assert rec["predicted_ttft_ms"] == pytest.approx(rec0["predicted_ttft_ms"] * want[0])
        # kept, the row's own measurement is a measurement of the query itself: the learned model leaves it alone
        assert "learned_factors" not in rec_new["correction"]
    # a new query between measured ones gets the mean of the folds' ensembles
    q = _row(9, concurrency="12")
    res = predict_row(q, CAT.model, CAT.gpu, cal, "analytic")
    _, corr = correct_row(res, q, CAT.model, CAT.gpu, cal)
    assert corr is not None and not corr.at_query
    assert corr.learned_factors == pytest.approx(_stumps().factors(_x(1024)))
    # the fold's ensemble only when the caller says the row is the calibration's own (leaving points out alone
    # does not make it so)
    fold = sweep_fold(sweep_key(q, CAT.model, CAT.gpu), 2)
    _, corr_out = correct_row(res, q, CAT.model, CAT.gpu, cal, exclude=("nothing",))
    _, corr_own = correct_row(res, q, CAT.model, CAT.gpu, cal, own_data=True)
    assert corr_out is not None and corr_out.learned_factors == pytest.approx(_stumps().factors(_x(1024)))
    assert corr_own is not None and corr_own.learned_factors == pytest.approx(_stumps().factors(_x(1024), fold))
    # left out as own data, a row the table does not hold still gets the mean: no ensemble ever saw it
    mixed = validate_rows([*rows, q], CAT.model, CAT.gpu, cal, leave_own_out=True)
    assert mixed["own_rows"]["left_out"]
    assert mixed["rows"][-1]["correction"]["learned_factors"] == pytest.approx(list(_stumps().factors(_x(1024))))


def test_estimate_path_notes_the_learned_share_and_unmeasured_models_are_left_alone() -> None:
    rows = [_row(0), _row(1, concurrency="32")]
    table = dataclasses.replace(build_corrections(rows, CAT.model, CAT.gpu, BASE), learned=_stumps())
    cal = dataclasses.replace(BASE, corrections=table)
    q = _row(2, concurrency="24", ttft_ms="", tpot_ms="")
    res = predict_row(q, CAT.model, CAT.gpu, cal, "analytic")
    out, corr = correct_row(res, q, CAT.model, CAT.gpu, cal)
    assert corr is not None and corr.learned_factors == pytest.approx(_stumps().factors(_x(1024)))
    assert "learned residual model" in out.notes[-1]
    assert corr.learned_factors[0] != 1.0  # in its measured sweep too: both factors
    # a query whose own sweep (ISL, OSL) has no measured point gets both as well
    far = _row(4, isl="2048", concurrency="24", ttft_ms="", tpot_ms="")
    _, corr_far = correct_row(predict_row(far, CAT.model, CAT.gpu, cal, "analytic"), far, CAT.model, CAT.gpu, cal)
    assert corr_far is not None and corr_far.learned_factors == pytest.approx(_stumps().factors(_x(2048)))
    assert corr_far.learned_factors[0] != 1.0
    other = _row(3, model="meta-llama/Llama-3.1-8B", layout="agg tp1", tp="1", num_gpus="1")
    res2 = predict_row(other, CAT.model, CAT.gpu, cal, "analytic")
    assert correct_row(res2, other, CAT.model, CAT.gpu, cal) == (res2, None)


def test_features_describe_the_row() -> None:
    rows = [_row(0), _row(1, concurrency="32")]
    cal = dataclasses.replace(BASE, corrections=build_corrections(rows, CAT.model, CAT.gpu, BASE))
    q = _row(2, layout="disagg 0x prefill(tp1 adp1 ep1) + 2x decode(tp2 adp1 ep1)", num_gpus="0")
    res = predict_row(_row(5), CAT.model, CAT.gpu, cal, "analytic")
    _, corr = correct_row(res, _row(5, concurrency="24"), CAT.model, CAT.gpu, cal)
    assert corr is not None
    f = dict(zip(FEATURES, residual_features(q, CAT.model, CAT.gpu, res, corr), strict=True))
    assert f["disaggregated"] == 1 and f["worker_counts_unknown"] == 1
    assert (f["prefill_tp"], f["decode_tp"], f["decode_workers"], f["tp"]) == (1, 2, 2, 0)
    assert f["engine_code"] == 0 and f["weight_bits"] == 16 and f["is_moe"] == 0
    assert f["log_isl"] == pytest.approx(math.log(1024)) and f["log_concurrency"] == pytest.approx(math.log(16))
    assert f["log_tpot_factor"] == pytest.approx(math.log(corr.tpot_factor))
    # one deployment, one set of features, however it is written (estimate --tp, --layout, a CSV row)
    forms = [
        _row(7, layout="agg tp2 pp1 adp1 moe_tp2 ep2"), _row(7, layout="agg tp2"), _row(7, layout="agg tp2 pp1 adp1 ep1"),
        _row(7, layout="agg tp2 pp1 adp1 moe_tp0 ep0", num_gpus="0"),
    ]  # fmt: skip
    seen = {tuple(residual_features(r, CAT.model, CAT.gpu, res, corr)) for r in forms}
    assert len(seen) == 1
    dense = dict(zip(FEATURES, seen.pop(), strict=True))
    assert (dense["ep"], dense["moe_tp"], dense["num_gpus"]) == (0, 0, 2)
    moe = [_row(8, model="deepseek-ai/DeepSeek-R1", gpu="b200_sxm", precision="fp8", layout=lay, num_gpus="8")
           for lay in ("agg tp8 pp1 adp1 ep8", "agg tp8 pp1 adp1 moe_tp1 ep8")]  # fmt: skip
    a, b = (dict(zip(FEATURES, residual_features(r, CAT.model, CAT.gpu, res, corr), strict=True)) for r in moe)
    assert a == b and (a["ep"], a["moe_tp"], a["num_gpus"], a["weight_bits"]) == (8, 1, 8, 8)
    unknown = dict(zip(FEATURES, residual_features(_row(6, engine="mystery"), CAT.model, CAT.gpu, res, corr), strict=True))
    assert math.isnan(unknown["engine_code"])


E2E = Path(__file__).resolve().parents[4] / "shared/data/measurements/e2e_train.csv"


@pytest.mark.skipif(not E2E.exists(), reason="needs ../shared/data/measurements/e2e_train.csv")
def test_shipped_learned_stage_lowers_the_leave_one_out_error_on_its_training_file() -> None:
    from gpuyield.edges.perf.calibrate import load_measurements, lookups

    cal = default_calibration()
    assert cal.corrections is not None and cal.corrections.learned is not None
    model_of, gpu_of = lookups(CAT, cal)
    rows = load_measurements(E2E)
    with_learned = validate_rows(rows, model_of, gpu_of, cal)
    without = validate_rows(
        rows, model_of, gpu_of, dataclasses.replace(cal, corrections=dataclasses.replace(cal.corrections, learned=None))
    )
    # each row by the cross-fitted ensemble that never saw its sweep, after measured points without its own;
    # rows the file measured twice at the same point with other values keep what their twin says (about a
    # quarter of this file)
    n = with_learned["corrected_rows"]
    assert with_learned["own_rows"]["left_out"] and 0.6 * n < with_learned["learned_rows"] < n
    # the folds the shipped ensembles were fitted with are still the folds validate assigns (a catalogue change
    # that alters the sweep keys would make "the ensemble that never saw this sweep" a false claim)
    from gpuyield.edges.perf.learned import folds_digest

    learned = cal.corrections.learned
    keys = []
    for r in rows:
        if r.concurrency is not None and (r.measured["ttft_ms"] or r.measured["tpot_ms"]):
            with contextlib.suppress(GpuyieldError):  # a model outside the catalogue has no sweep key
                keys.append(sweep_key(r, model_of, gpu_of))
    assert learned.training["folds_digest"] == folds_digest(keys, learned.folds, learned.fold_aliases)
    # and sweeps holding copies of one measurement (DeepSeek-R1 and -V3 names) share a fold
    from gpuyield.core.perf.validation import measurement_content

    learned_rows = {rec["row"] for rec in with_learned["rows"] if "learned_factors" in rec.get("correction", {})}
    fold_of: dict[tuple[object, ...], set[int]] = {}
    for r in rows:
        c = measurement_content(r)
        if c is not None and r.index in learned_rows:
            fold_of.setdefault(c, set()).add(learned.fold_of(sweep_key(r, model_of, gpu_of)))
    assert learned.fold_aliases and any(len(f) > 1 for f in _copies_by_content(rows))
    assert all(len(f) == 1 for f in fold_of.values())
    # leave-one-out with copies under other names left out everywhere (sixteenth pass): TPOT 13.7 -> 13.4 %;
    # TTFT is only touched where the row's own sweep has no other measured point, and there about evenly
    # (23.45 -> 23.49 %): the trees' TTFT gain is on sweeps without measured points (whole sweeps held out,
    # benchmarks/perf_corrections_cv.py: 40 -> 30 %)
    a, b = with_learned["summary"], without["summary"]
    assert a["tpot_ms"]["mape"] < b["tpot_ms"]["mape"] - 0.002
    assert a["ttft_ms"]["mape"] < b["ttft_ms"]["mape"] + 0.003


def _copies_by_content(rows):  # type: ignore[no-untyped-def]
    """Groups of rows holding one measurement (by content), as sets of their model names and layouts."""
    from gpuyield.core.perf.validation import measurement_content

    groups: dict[object, set[tuple[str, str]]] = {}
    for r in rows:
        c = measurement_content(r)
        if c is not None:
            groups.setdefault(c, set()).add((r.model, r.layout))
    return list(groups.values())
