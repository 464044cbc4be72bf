"""Fitting the learned residual model (``gpuyield calibrate``): scikit-learn's HistGradientBoostingRegressor on
what the measured-point corrections leave, exported to the plain arrays of
:class:`gpuyield.core.perf.residual.LearnedResiduals`.

Training residuals must look like the ones the model will meet, so they are out-of-sample twice over:

1. **Cross-fitting.** Rows are split into ``folds`` groups by concurrency sweep (:func:`sweep_fold`). The
   ensemble of fold ``k`` is fitted on the other folds only; ``validate`` corrects a row of the calibration's own
   data with the ensemble of its own fold, so its reported error never includes a fit to that row's sweep.
2. **Inner cross-validation.** Within the other folds, every row's corrected prediction is made by measured
   points that exclude it: once with rows held out at random (a new measurement near known ones), once with
   whole sweeps held out (a new sweep of a known deployment) and once with whole deployments held out (a new
   layout of a known model). All three go into one training set, and the
   correction's own support and factors are features, so the trees learn how much to add in each case.

The loss is the absolute error of ``log(measured / corrected)`` weighted by ``corrected / measured``: the
weighted median it fits is the factor that minimises the mean absolute percentage error.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gpuyield.core.perf.calibration import Calibration
from gpuyield.core.perf.closed_loop import ClosedLoopResult
from gpuyield.core.perf.residual import FEATURES, LearnedResiduals, sweep_fold
from gpuyield.core.perf.validation import (
    GpuLookup,
    MeasurementRow,
    ModelLookup,
    build_corrections,
    correct_row,
    measurement_content,
    measurement_copies,
    predict_row,
    prediction_cache_key,
    residual_features,
    row_measurement_id,
    sweep_key,
)
from gpuyield.errors import ConfigError, GpuyieldError

# Chosen by nested cross-validation on shared/data/measurements/e2e_train.csv (docs/benchmarks.md, "Tenth pass").
PARAMS: dict[str, Any] = {
    "loss": "absolute_error",
    "max_iter": 400,
    "learning_rate": 0.1,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": False,
    "random_state": 0,
}
FOLDS = 5
INNER_FOLDS = 5
INNER_SEED = 123
INNER_GROUPINGS = ("row", "sweep", "deployment")
METRIC_NAMES = ("TTFT", "TPOT")


class TooFewRows(ConfigError):
    """Not enough usable rows to fit the learned residual model (calibrate then goes on without it)."""


MIN_ROWS_PER_FOLD = 50


def _sklearn() -> Any:
    try:
        from sklearn.ensemble import HistGradientBoostingRegressor
    except ImportError:
        raise ConfigError(
            "fitting the learned residual model needs scikit-learn: pip install 'gpuyield[fit]' "
            "(or give --no-learned to calibrate without it)"
        ) from None
    return HistGradientBoostingRegressor


def _export(h: Any) -> tuple[float, list[dict[str, np.ndarray]]]:
    """(baseline, one dict of node arrays per tree) of a fitted HistGradientBoostingRegressor."""
    try:
        baseline = float(np.ravel(h._baseline_prediction)[0])
        trees = []
        for per_iter in h._predictors:
            (pred,) = per_iter
            n = pred.nodes
            if np.any(n["is_categorical"]):
                raise ConfigError("learned residuals: categorical splits are not supported")
            leaf = n["is_leaf"].astype(bool)
            trees.append(
                {
                    "feature": np.where(leaf, -1, n["feature_idx"]).astype(np.int64),
                    "threshold": n["num_threshold"].astype(float),
                    "left": np.where(leaf, 0, n["left"]).astype(np.int64),
                    "right": np.where(leaf, 0, n["right"]).astype(np.int64),
                    "missing_left": n["missing_go_to_left"].astype(bool),
                    "value": np.where(leaf, n["value"], 0.0).astype(float),
                }
            )
    except (AttributeError, KeyError, ValueError) as exc:
        raise ConfigError(
            f"learned residuals: this scikit-learn's HistGradientBoostingRegressor cannot be exported ({exc}); "
            "use scikit-learn 1.3 to 1.9 (pip install 'scikit-learn<1.10')"
        ) from None
    return baseline, trees


def _groups(rows: Sequence[MeasurementRow], how: str, keys: dict[int, str], seed: int, k: int) -> dict[int, int]:
    """Row index -> inner fold, by single row, by sweep or by deployment (``keys``: sweep keys), shuffled with
    ``seed``."""

    def label_of(r: MeasurementRow) -> str:
        if how == "row":
            return str(r.index)
        return keys[r.index] if how == "sweep" else keys[r.index].rsplit("|", 2)[0]  # the deployment's part

    label = {r.index: label_of(r) for r in rows}
    names = sorted(set(label.values()))
    random.Random(seed).shuffle(names)
    fold = {g: i % k for i, g in enumerate(names)}
    return {i: fold[g] for i, g in label.items()}


def training_set(
    rows: Sequence[MeasurementRow],
    model_of: ModelLookup,
    gpu_of: GpuLookup,
    cal: Calibration,
    keys: dict[int, str],
    cache: dict[tuple[Any, ...], ClosedLoopResult | None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features and ``log(measured / corrected)`` of TTFT and TPOT (NaN where not measured) of ``rows``, each
    corrected by measured points that exclude it (:data:`INNER_GROUPINGS` × :data:`INNER_FOLDS`)."""
    assert cal.corrections is not None
    settings = cal.corrections.settings
    base = dataclasses.replace(cal, corrections=None)
    xs: list[list[float]] = []
    ys: list[tuple[float, float]] = []
    # a row's copies under other names (measurement_copies) are left out with it, as validate leaves them out
    copies = dict(zip((r.index for r in rows), measurement_copies(rows), strict=True))
    for how in INNER_GROUPINGS:
        inner = _groups(rows, how, keys, INNER_SEED, INNER_FOLDS)
        for j in range(INNER_FOLDS):
            train = [r for r in rows if inner[r.index] != j]
            table = build_corrections(train, model_of, gpu_of, base, settings, cache=cache)
            cal_j = dataclasses.replace(base, corrections=table)
            for row in rows:
                if inner[row.index] != j:
                    continue
                res = cache.get(prediction_cache_key("analytic", row))
                if res is None:
                    continue
                corrected, corr = correct_row(res, row, model_of, gpu_of, cal_j, exclude=copies[row.index])
                if corr is None or corr.at_query:  # where the model is applied: not at a measured query
                    continue
                mt, md = row.measured.get("ttft_ms"), row.measured.get("tpot_ms")
                t = math.log(mt / corrected.ttft_ms) if mt and corrected.ttft_ms > 0 else math.nan
                d = math.log(md / corrected.tpot_ms) if md and corrected.tpot_ms > 0 else math.nan
                if math.isnan(t) and math.isnan(d):
                    continue
                xs.append(residual_features(row, model_of, gpu_of, corrected, corr))
                ys.append((t, d))
    x = np.array(xs, dtype=float).reshape(-1, len(FEATURES))
    y = np.array(ys, dtype=float).reshape(-1, 2)
    return x, y[:, 0], y[:, 1]


def sklearn_available() -> bool:
    """Whether scikit-learn can be imported (``calibrate`` skips the learned model without it unless asked)."""
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None


def folds_digest(keys: Sequence[str], folds: int, aliases: Mapping[str, str] | None = None) -> str:
    """A digest of which concurrency sweeps went to which fold (through ``aliases``, :func:`fold_aliases`):
    ``validate`` on the training file is honest only while :func:`sweep_key` gives the same keys (a catalogue
    change can alter them); a test recomputes it."""
    import hashlib

    al = aliases or {}
    body = "\n".join(f"{k}\t{sweep_fold(al.get(k, k), folds)}" for k in sorted(set(keys)))
    return hashlib.sha1(body.encode()).hexdigest()[:12]


def fold_aliases(rows: Sequence[MeasurementRow], keys: Mapping[int, str]) -> dict[str, str]:
    """Sweep key -> the least sweep key tied to it by copies of one measurement (:func:`measurement_content`:
    one run filed under two model names or two layout spellings), for every sweep tied to a lesser one: such
    sweeps are cross-fitted in one fold, so the ensemble that corrects a row never saw its copy."""
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        while parent.get(k, k) != k:
            parent[k] = parent.get(parent[k], parent[k])
            k = parent[k]
        return k

    first: dict[tuple[Any, ...], str] = {}
    for r in rows:
        k = keys.get(r.index)
        c = measurement_content(r)
        if k is None or c is None:
            continue
        other = first.setdefault(c, k)
        a, b = find(k), find(other)
        if a != b:
            parent[max(a, b)] = min(a, b)
    out = {k: find(k) for k in set(keys.values())}
    return {k: v for k, v in out.items() if k != v}


def fit_learned_residuals(
    rows: Sequence[MeasurementRow],
    model_of: ModelLookup,
    gpu_of: GpuLookup,
    cal: Calibration,
    log: Callable[[str], None] = lambda _m: None,
    source: str = "",
) -> LearnedResiduals:
    """Fit the learned residual model on ``rows`` under ``cal`` (whose corrections' settings are used; its
    measured points are rebuilt per fold from ``rows``). Rows that cannot be predicted or keyed are skipped;
    :class:`TooFewRows` when fewer than ``MIN_ROWS_PER_FOLD x FOLDS`` remain (checked before scikit-learn is
    needed)."""
    if len({r.index for r in rows}) != len(rows):
        raise ConfigError("learned residuals: rows must have distinct indices (folds and copies are keyed by them)")
    cache: dict[tuple[Any, ...], ClosedLoopResult | None] = {}
    base = dataclasses.replace(cal, corrections=None)
    keys: dict[int, str] = {}
    usable: list[MeasurementRow] = []
    seen: set[str] = set()
    digest_keys: list[str] = []  # every measured closed-loop row's sweep, predictable or not (folds_digest)
    for r in rows:
        if r.concurrency is None or not (r.measured.get("ttft_ms") or r.measured.get("tpot_ms")):
            continue
        mid = row_measurement_id(r)  # a row repeated verbatim is one measurement
        if mid in seen:
            continue
        try:
            keys[r.index] = sweep_key(r, model_of, gpu_of)
            digest_keys.append(keys[r.index])
            cache[prediction_cache_key("analytic", r)] = predict_row(r, model_of, gpu_of, base, "analytic")
        except GpuyieldError:
            continue
        seen.add(mid)
        usable.append(r)
    if len(usable) < MIN_ROWS_PER_FOLD * FOLDS:
        raise TooFewRows(
            f"learned residuals: {len(usable)} usable closed-loop rows; at least {MIN_ROWS_PER_FOLD * FOLDS} are "
            "needed"
        )
    aliases = fold_aliases(usable, keys)
    if aliases:
        keys = {i: aliases.get(k, k) for i, k in keys.items()}
        log(f"learned residuals: {len(aliases)} sweep(s) share a fold with another holding copies of their measurements")
    hgb = _sklearn()
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    # one OpenMP thread: the trees are small, and several threads spin against any other busy process (a
    # parallel fit next to another took 8x longer here)
    with threadpool_limits(limits=1, user_api="openmp"):
        model = _fit(hgb, usable, keys, cache, model_of, gpu_of, cal, log, source)
    training = {**model.training, "folds_digest": folds_digest(digest_keys, FOLDS, aliases)}
    return dataclasses.replace(model, training=training, fold_aliases=aliases)


def _fit(
    hgb: Any,
    usable: Sequence[MeasurementRow],
    keys: dict[int, str],
    cache: dict[tuple[Any, ...], ClosedLoopResult | None],
    model_of: ModelLookup,
    gpu_of: GpuLookup,
    cal: Calibration,
    log: Callable[[str], None],
    source: str,
) -> LearnedResiduals:
    import sklearn

    fold = {r.index: sweep_fold(keys[r.index], FOLDS) for r in usable}
    nodes: dict[str, list[np.ndarray]] = {k: [] for k in ("feature", "threshold", "left", "right", "missing_left", "value")}
    starts: list[int] = []
    metric_of: list[int] = []
    fold_of: list[int] = []
    baseline = [[0.0] * FOLDS for _ in range(2)]
    offset = 0
    check_x: list[np.ndarray] = []
    check_y: list[tuple[int, int, np.ndarray]] = []
    sizes: list[int] = []
    for k in range(FOLDS):
        train = [r for r in usable if fold[r.index] != k]
        x, t, d = training_set(train, model_of, gpu_of, cal, keys, cache)
        sizes.append(len(x))
        log(f"learned residuals: fold {k + 1}/{FOLDS}: {len(x)} out-of-sample residuals of {len(train)} rows")
        for m, y in enumerate((t, d)):
            ok = ~np.isnan(y)
            if ok.sum() < MIN_ROWS_PER_FOLD * (FOLDS - 1):  # e.g. a file that measured TTFT only
                log(f"learned residuals: fold {k + 1}: {int(ok.sum())} {METRIC_NAMES[m]} residuals, too few: none")
                continue
            h = hgb(**PARAMS)
            h.fit(x[ok], y[ok], sample_weight=np.exp(-y[ok]))
            b, trees = _export(h)
            baseline[m][k] = b
            for tr in trees:
                starts.append(offset)
                metric_of.append(m)
                fold_of.append(k)
                offset += len(tr["feature"])
                for name in nodes:
                    nodes[name].append(tr[name])
            sample = x[ok][:: max(1, ok.sum() // 200)]
            check_x.append(sample)
            check_y.append((m, k, h.predict(sample)))
    if not starts:
        raise TooFewRows("learned residuals: too few measured TTFT or TPOT residuals to fit either")
    model = LearnedResiduals(
        features=FEATURES,
        folds=FOLDS,
        baseline=tuple(tuple(b) for b in baseline),
        **{name: np.concatenate(v) for name, v in nodes.items()},
        tree_start=np.array(starts, dtype=np.int64),
        tree_metric=np.array(metric_of, dtype=np.int64),
        tree_fold=np.array(fold_of, dtype=np.int64),
        source=source,
        training={
            "rows": len(usable),
            "residuals_per_fold": sizes,
            "estimator": f"scikit-learn {sklearn.__version__} HistGradientBoostingRegressor",
            "parameters": dict(PARAMS),
            "sample_weight": "corrected / measured (the weighted median minimises MAPE)",
            "inner_cv": f"{INNER_FOLDS}-fold by {' and by '.join(INNER_GROUPINGS)} (seed {INNER_SEED})",
            "folds": (f"{FOLDS} by concurrency sweep (crc32 of engine|architecture|gpu|precision|layout|num_gpus|isl|"
                      "osl; sweeps holding copies of one measurement share one: fold_aliases)"),
        },
    )
    worst = 0.0
    for sample, (m, k, want) in zip(check_x, check_y, strict=True):
        got = np.array([model.log_factors(v, k)[m] for v in sample])
        worst = max(worst, float(np.max(np.abs(got - want))) if len(want) else 0.0)
    if worst > 1e-6:
        raise ConfigError(
            f"learned residuals: the exported trees disagree with scikit-learn by {worst:.2g} (log units); "
            "this scikit-learn version is not supported"
        )
    log(f"learned residuals: {model.num_trees} trees, {offset} nodes (export checked against scikit-learn)")
    return model
