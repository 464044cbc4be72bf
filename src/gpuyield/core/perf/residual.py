"""Learned second stage of the measured-point corrections: boosted trees on what is left.

The measured-point corrections (:mod:`gpuyield.core.perf.corrections`) interpolate residuals of the *same*
architecture, engine and precision near a query. What they leave is not noise alone: on held-out concurrency
sweeps it depends on the deployment's shape (disaggregated or not, parallel degrees, worker counts), the
workload (ISL, OSL, concurrency), the model's and the GPU's size, and on the correction itself (how far it had
to reach, how large it is). :class:`LearnedResiduals` holds gradient-boosted regression trees of that
left-over ``log(measured / corrected)`` for TTFT and TPOT, fitted by ``gpuyield calibrate`` (scikit-learn's
``HistGradientBoostingRegressor``, :mod:`gpuyield.edges.perf.learned`) and evaluated here without it.

Cross-fitting keeps it honest. The training rows are split into ``folds`` groups by their concurrency sweep
(deployment, ISL and OSL: :meth:`LearnedResiduals.fold_of`), and one ensemble is fitted per fold without that
fold's sweeps. A row of the calibration's own data is corrected by the ensemble that never saw its sweep;
any other query by the mean of all of them.

Plain data, no I/O: the trees are arrays, stored in the calibration file as one base64 string
(:meth:`LearnedResiduals.to_dict`).
"""

from __future__ import annotations

import base64
import io
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpuyield.errors import ConfigError

METRICS = ("ttft", "tpot")

# The features, in order (gpuyield.core.perf.validation.residual_features computes them). A feature that does
# not apply is 0 (e.g. prefill_tp of an aggregated layout); an unknown one is NaN (the trees route it).
FEATURES: tuple[str, ...] = (
    "engine_code",  # vllm 0, sglang 1, trtllm 2 (ENGINE_CODES)
    "disaggregated",
    "worker_counts_unknown",  # a disaggregated layout recorded without its worker counts (0x)
    "tp",
    "pp",
    "adp",
    "ep",
    "moe_tp",
    "prefill_tp",
    "prefill_adp",
    "prefill_ep",
    "decode_tp",
    "decode_adp",
    "decode_ep",
    "prefill_workers",
    "decode_workers",
    "num_gpus",
    "log_isl",
    "log_osl",
    "log_concurrency",
    "weight_bits",
    "log_params_active",
    "log_params_total",
    "is_moe",
    "uses_mla",
    "num_layers",
    "gpu_memory_bandwidth_tb_s",
    "gpu_fp8_dense_tflops",
    "gpu_memory_gb",
    "log_ttft_ms",  # the prediction after the measured-point correction
    "log_tpot_ms",
    "log_ttft_factor",  # the measured-point correction itself
    "log_tpot_factor",
    "support",  # its kernel support (how much measured data backs it)
    "limited_code",  # what limits the batch: concurrency 0, max_num_seqs 1, kv_cache 2 (LIMITED_CODES)
)
ENGINE_CODES = {"vllm": 0, "sglang": 1, "trtllm": 2}
LIMITED_CODES = {"concurrency": 0, "max_num_seqs": 1, "kv_cache": 2}

_ARRAYS = ("feature", "threshold", "left", "right", "missing_left", "value", "tree_start", "tree_metric", "tree_fold")


def sweep_fold(sweep_key: str, folds: int) -> int:
    """The cross-fitting fold of a concurrency sweep (stable across runs and machines)."""
    return zlib.crc32(sweep_key.encode()) % folds


@dataclass(frozen=True)
class LearnedResiduals:
    """Boosted trees of ``log(measured / corrected)`` per metric and cross-fitting fold.

    Nodes of every tree are concatenated: ``feature`` (-1 at a leaf), ``threshold`` (go left when the value is
    ``<=`` it), ``left``/``right`` (indices *within the tree*), ``missing_left`` (where NaN goes) and
    ``value`` (a leaf's contribution, learning rate included). Tree ``t`` starts at ``tree_start[t]`` and adds
    to metric ``tree_metric[t]`` (0 TTFT, 1 TPOT) of fold ``tree_fold[t]``; ``baseline[m][f]`` starts each
    sum."""

    features: tuple[str, ...]
    folds: int
    baseline: tuple[tuple[float, ...], ...]  # [metric][fold]
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    value: np.ndarray
    tree_start: np.ndarray
    tree_metric: np.ndarray
    tree_fold: np.ndarray
    source: str = ""
    training: dict[str, Any] = field(default_factory=dict)  # how it was fitted (rows, parameters, CV figures)
    # sweep key -> the sweep key whose fold it shares: sweeps holding copies of one measurement (one run filed
    # under two model names or layout spellings) are cross-fitted together
    fold_aliases: Mapping[str, str] = field(default_factory=dict)
    _roots: np.ndarray = field(init=False, repr=False, compare=False)
    _left: np.ndarray = field(init=False, repr=False, compare=False)
    _right: np.ndarray = field(init=False, repr=False, compare=False)
    _depth: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if tuple(self.features) != FEATURES:
            raise ConfigError(
                "corrections.learned: its features are not this version's "
                f"({len(self.features)} stored, {len(FEATURES)} expected); refit it with `gpuyield calibrate`"
            )
        if self.folds < 2:
            raise ConfigError(f"corrections.learned.folds: expected >= 2, got {self.folds}")
        if len(self.baseline) != len(METRICS) or any(len(b) != self.folds for b in self.baseline):
            raise ConfigError("corrections.learned.baseline: expected one value per metric and fold")
        n = len(self.feature)
        if not all(len(getattr(self, a)) == n for a in ("threshold", "left", "right", "missing_left", "value")):
            raise ConfigError("corrections.learned: node arrays of different lengths")
        nt = len(self.tree_start)
        if len(self.tree_metric) != nt or len(self.tree_fold) != nt or nt == 0:
            raise ConfigError("corrections.learned: tree arrays of different lengths, or no trees")
        start = self.tree_start.astype(np.int64)
        end = np.append(start[1:], n)
        if start[0] != 0 or np.any(end <= start):
            raise ConfigError("corrections.learned.tree_start: expected increasing node offsets from 0")
        size = np.repeat(end - start, end - start)
        leaf = self.feature < 0
        for side in (self.left, self.right):
            if np.any(~leaf & ((side < 0) | (side >= size))):
                raise ConfigError("corrections.learned: a child index points outside its tree")
        if np.any(self.feature >= len(FEATURES)):
            raise ConfigError("corrections.learned: a node splits on an unknown feature")
        if not (np.all(np.isfinite(self.value)) and np.all(np.isfinite(np.asarray(self.baseline)))):
            raise ConfigError("corrections.learned: leaf values must be finite")
        if np.any((self.tree_metric < 0) | (self.tree_metric >= len(METRICS))):
            raise ConfigError("corrections.learned.tree_metric: expected 0 (TTFT) or 1 (TPOT)")
        if np.any((self.tree_fold < 0) | (self.tree_fold >= self.folds)):
            raise ConfigError("corrections.learned.tree_fold: expected a fold below folds")
        base = np.repeat(start, end - start)
        # global child indices; a leaf points to itself, so descending further leaves it in place
        own = np.arange(n)
        object.__setattr__(self, "_left", np.where(leaf, own, base + self.left))
        object.__setattr__(self, "_right", np.where(leaf, own, base + self.right))
        object.__setattr__(self, "_roots", start)
        object.__setattr__(self, "_depth", _max_depth(leaf, self._left, self._right, start))

    @property
    def num_trees(self) -> int:
        return len(self.tree_start)

    def fold_of(self, sweep_key: str) -> int:
        """The fold whose ensemble never saw the sweep ``sweep_key`` (see :func:`sweep_fold`), or a sweep holding a
        copy of one of its measurements (:attr:`fold_aliases`)."""
        return sweep_fold(self.fold_aliases.get(sweep_key, sweep_key), self.folds)

    def log_factors(self, x: Sequence[float], fold: int | None = None) -> tuple[float, float]:
        """``log`` multipliers for (TTFT, TPOT) at the feature vector ``x``: the ensemble of ``fold``, or the
        mean over the folds' ensembles when ``fold`` is None."""
        v = np.asarray(x, dtype=float)
        if v.shape != (len(FEATURES),):
            raise ConfigError(f"learned residuals: expected {len(FEATURES)} features, got shape {v.shape}")
        if fold is not None and not 0 <= fold < self.folds:
            raise ConfigError(f"learned residuals: fold {fold} outside 0..{self.folds - 1}")
        keep = slice(None) if fold is None else self.tree_fold == fold
        idx = self._roots[keep]
        for _ in range(self._depth):
            f = self.feature[idx]
            leaf = f < 0
            if leaf.all():
                break
            xv = v[np.where(leaf, 0, f)]
            go_left = np.where(np.isnan(xv), self.missing_left[idx], xv <= self.threshold[idx])
            idx = np.where(go_left, self._left[idx], self._right[idx])
        sums = np.zeros((len(METRICS), self.folds))
        np.add.at(sums, (self.tree_metric[keep], self.tree_fold[keep]), self.value[idx])
        sums += np.asarray(self.baseline)
        out = sums[:, fold] if fold is not None else sums.mean(axis=1)
        return float(out[0]), float(out[1])

    def factors(self, x: Sequence[float], fold: int | None = None) -> tuple[float, float]:
        """Multipliers for (TTFT, TPOT); see :meth:`log_factors`."""
        lt, ld = self.log_factors(x, fold)
        return math.exp(lt), math.exp(ld)

    # ------------------------------------------------------------------ plain-data form
    def to_dict(self) -> dict[str, Any]:
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            feature=self.feature.astype(np.int8),
            threshold=self.threshold.astype(np.float64),
            left=self.left.astype(np.uint8 if self.left.max(initial=0) < 256 else np.int32),
            right=self.right.astype(np.uint8 if self.right.max(initial=0) < 256 else np.int32),
            missing_left=self.missing_left.astype(np.bool_),
            value=self.value.astype(np.float64),
            tree_start=self.tree_start.astype(np.int32),
            tree_metric=self.tree_metric.astype(np.int8),
            tree_fold=self.tree_fold.astype(np.int8),
        )
        return {
            "source": self.source,
            "training": self.training,
            "features": list(self.features),
            "folds": self.folds,
            "baseline": [list(b) for b in self.baseline],
            "trees": base64.b64encode(buf.getvalue()).decode("ascii"),
        } | ({"fold_aliases": dict(sorted(self.fold_aliases.items()))} if self.fold_aliases else {})

    @classmethod
    def from_dict(cls, data: Any, where: str = "corrections.learned") -> LearnedResiduals:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = set(data) - {"source", "training", "features", "folds", "baseline", "trees", "fold_aliases"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
        missing = {"features", "folds", "baseline", "trees"} - set(data)
        if missing:
            raise ConfigError(f"{where}: missing field(s) {sorted(missing)}")
        try:
            raw = base64.b64decode(str(data["trees"]).replace("\n", "").replace(" ", ""), validate=True)
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                arrays = {a: np.array(z[a]) for a in _ARRAYS}
        except (ValueError, OSError, KeyError, zlib.error) as exc:
            raise ConfigError(f"{where}.trees: not the base64 .npz this version writes ({exc})") from None
        folds = data["folds"]
        if not isinstance(folds, int) or isinstance(folds, bool):
            raise ConfigError(f"{where}.folds: expected an integer, got {folds!r}")
        if not isinstance(data["features"], list) or not all(isinstance(f, str) for f in data["features"]):
            raise ConfigError(f"{where}.features: expected a list of feature names")
        try:
            baseline = tuple(tuple(float(v) for v in b) for b in data["baseline"])
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.baseline: expected one list of numbers per metric") from None
        training = data.get("training") or {}
        if not isinstance(training, dict):
            raise ConfigError(f"{where}.training: expected a mapping")
        aliases = data.get("fold_aliases", {})
        if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
            raise ConfigError(f"{where}.fold_aliases: expected a mapping of sweep keys to sweep keys")
        chained = sorted(k for k, v in aliases.items() if v in aliases)
        if chained:
            raise ConfigError(f"{where}.fold_aliases: '{chained[0]}' points at a key that is itself aliased")
        return cls(
            features=tuple(data["features"]),
            folds=folds,
            baseline=baseline,
            feature=arrays["feature"].astype(np.int64),
            threshold=arrays["threshold"].astype(float),
            left=arrays["left"].astype(np.int64),
            right=arrays["right"].astype(np.int64),
            missing_left=arrays["missing_left"].astype(bool),
            value=arrays["value"].astype(float),
            tree_start=arrays["tree_start"].astype(np.int64),
            tree_metric=arrays["tree_metric"].astype(np.int64),
            tree_fold=arrays["tree_fold"].astype(np.int64),
            source=str(data.get("source", "")),
            training=dict(training),
            fold_aliases=dict(aliases),
        )


def _max_depth(leaf: np.ndarray, left: np.ndarray, right: np.ndarray, roots: np.ndarray) -> int:
    """Depth of the deepest leaf (descents needed to reach every leaf from the roots); raises on a cycle."""
    frontier = roots[~leaf[roots]]
    depth = 0
    while len(frontier):
        depth += 1
        if depth > len(leaf):
            raise ConfigError("corrections.learned: the trees have a cycle")
        nxt = np.concatenate([left[frontier], right[frontier]])
        frontier = nxt[~leaf[nxt]]
    return depth
