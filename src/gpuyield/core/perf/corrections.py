"""Measured operating points: a correction of the closed-loop estimate learned from end-to-end measurements.

The step-time model generalises across models and GPUs but leaves a residual that is specific to one
deployment (a model's kernels on one engine version, scheduler settings the measurements do not record,
MTP on or off). Where the user has *measured* a deployment, that residual is known at the measured points:
``log(measured / predicted)`` of TTFT and of TPOT (against the analytic solver and, for aggregated rows,
against the engine model too). This module stores those residuals and, for a new query, interpolates them in
log space over ISL, OSL and concurrency with Gaussian kernel weights (a weighted mean of the log ratios, or
the weighted median that minimises the neighbours' percentage error; see ``ESTIMATORS``), the way per-op
times come from measured tables interpolated in log space.

Rules:

- Only measurements of the **same architecture, engine family and weight precision** are used. The
  architecture is the model's catalogue shape (layers, widths, heads, experts, attention kind: everything but
  its name, provenance and context limit), so DeepSeek-V3, -R1 and -V3.1 share their measurements and no other
  model does. Penalties, in squared kernel-distance units, are added for another model of the architecture
  (``other_model_penalty``), another layout on the same GPU (growing with how far its parallel degrees and
  counts are from the queried layout's, up to ``other_layout_penalty``) and another GPU
  (``other_gpu_penalty``). A query with no such measurement is not corrected: an unseen architecture gets the
  physics model alone, never another architecture's residual.
- The correction shrinks towards none as the query moves away from the measured points: a prior of weight
  ``prior_weight`` at zero residual joins the neighbours, so a far query is barely corrected.
- The interpolation is local-linear (``slope_ridge``): the neighbours' weighted slope over log ISL, OSL and
  concurrency, shrunk towards zero by a ridge, is taken out of their residuals before they are averaged, so a
  query at the edge of its measured points (the highest concurrency measured, say) follows their trend
  instead of being pulled towards their middle. TPOT pools over a wider ISL/OSL neighbourhood than TTFT
  (``tpot_scale_log_isl``/``_osl``): decode speed varies slowly with the lengths, the first token does not.
- A measurement of the queried deployment at the queried operating point itself (same ISL, OSL and
  concurrency) gets ``same_point_weight`` on top of its kernel weight: a repeat of the query is better
  evidence than its neighbours. (A row repeated verbatim is one measurement: ``build_corrections`` stores it
  once.)
- Residuals belong to the coefficients they were measured under: the table keeps their fingerprint and the
  calibration loader refuses a table whose coefficients changed.
- A measurement never predicts itself: ``exclude`` drops points by measurement id (on the calibration's own
  rows ``validate`` passes the id of the row it predicts, so the errors it reports there are leave-one-out
  errors).

Pure: plain data in, plain data out; the YAML form is read and written by the calibration module.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpuyield.core.perf.residual import LearnedResiduals
from gpuyield.errors import ConfigError

__all__ = [
    "Correction",
    "CorrectionSettings",
    "DeploymentKey",
    "MeasuredCorrections",
    "MeasuredPoint",
    "apply_correction",
    "architecture_id",
    "measurement_id",
]


# log_mean: the kernel-weighted mean of log(measured / predicted) (a geometric mean of the ratios);
# mape_median: the factor that minimises the kernel-weighted mean absolute percentage error over the
#   neighbours, i.e. the weighted median of the ratios with weights w / ratio. Robust to neighbours in another
#   regime (TTFT residuals are heavy-tailed where queueing sets in) and optimal for the error the goals use.
# total kernel weight below which a query counts as uncorrected (the prior, 0.1, outweighs it 100 to 1)
MIN_SUPPORT = 1e-3
ESTIMATORS = ("log_mean", "mape_median")
_COLUMNS = (
    "isl",
    "osl",
    "concurrency",
    "log_ttft",
    "log_tpot",
    "measurement_id",
    "log_ttft_sim",
    "log_tpot_sim",
    "log_throughput",
)


@dataclass(frozen=True, slots=True)
class CorrectionSettings:
    """Kernel length scales (natural-log units) and penalties; chosen by grouped cross-validation."""

    scale_log_isl: float = 0.8
    scale_log_osl: float = 0.8
    scale_log_concurrency: float = 0.7
    # TPOT's own ISL/OSL length scales (None: the ones above). Decode speed varies more slowly with the prompt
    # and output length than the first token does, so its residuals can be pooled over a wider neighbourhood.
    tpot_scale_log_isl: float | None = 1.6
    tpot_scale_log_osl: float | None = 1.6
    other_model_penalty: float = 2.0
    # another layout on the same GPU: min(other_layout_penalty, near_layout_penalty + layout_distance_penalty x
    # distance), the distance being the sum of |log2| ratios of the parallel degrees and replica/worker counts
    # (_layout_distance): tp8 ep8 counts more for tp4 ep4 (distance 2) than for tp1 adp8 (distance 6)
    other_layout_penalty: float = 12.0
    near_layout_penalty: float = 2.0
    layout_distance_penalty: float = 1.0
    other_gpu_penalty: float = 16.0
    prior_weight: float = 0.1
    # local-linear correction: the kernel-weighted residuals' slope in log ISL/OSL/concurrency (in kernel length
    # units), shrunk towards zero by this ridge weight, is taken out before the estimator, so a query at the
    # edge of its measured points is not pulled towards their middle; None: local-constant (no slope)
    slope_ridge: float | None = 1.0
    # extra kernel weight of a point measured on the queried deployment at the queried operating point itself
    # (same ISL, OSL and concurrency): a repeat of the query outweighs its neighbours
    same_point_weight: float = 1.0
    # how the kernel-weighted residuals become one factor (see ESTIMATORS)
    ttft_estimator: str = "mape_median"
    tpot_estimator: str = "mape_median"
    source: str = "defaults"

    def __post_init__(self) -> None:
        for name in ("ttft_estimator", "tpot_estimator"):
            if getattr(self, name) not in ESTIMATORS:
                raise ConfigError(
                    f"corrections.settings.{name}: expected one of {', '.join(ESTIMATORS)}, got {getattr(self, name)!r}"
                )
        if self.slope_ridge is not None and not (
            isinstance(self.slope_ridge, (int, float))
            and not isinstance(self.slope_ridge, bool)
            and math.isfinite(self.slope_ridge)
            and self.slope_ridge > 0
        ):
            raise ConfigError(
                f"corrections.settings.slope_ridge: expected a positive number or null, got {self.slope_ridge!r}"
            )
        for name in (
            "scale_log_isl",
            "scale_log_osl",
            "scale_log_concurrency",
            "prior_weight",
            "tpot_scale_log_isl",
            "tpot_scale_log_osl",
        ):
            v = getattr(self, name)
            if v is None and name.startswith("tpot_"):
                continue
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"corrections.settings.{name}: expected a positive number, got {v!r}")
        for name in (
            "other_model_penalty",
            "other_layout_penalty",
            "near_layout_penalty",
            "layout_distance_penalty",
            "other_gpu_penalty",
            "same_point_weight",
        ):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0):
                raise ConfigError(f"corrections.settings.{name}: expected a number >= 0, got {v!r}")
        if not math.isfinite(self.same_point_weight):  # an infinite penalty only zeroes a weight; this would not
            raise ConfigError(f"corrections.settings.same_point_weight: expected a finite number, got {self.same_point_weight!r}")


def settings_with(settings: CorrectionSettings, overrides: Sequence[str]) -> CorrectionSettings:
    """``settings`` with ``NAME=VALUE`` overrides (as scripts take them: a number, an estimator name, or
    ``null`` for an optional setting); a clear error for an unknown name or a value the setting refuses."""
    changes: dict[str, Any] = {}
    for item in overrides:
        name, sep, text = item.partition("=")
        if not sep or name not in CorrectionSettings.__dataclass_fields__ or name == "source":
            known = ", ".join(n for n in CorrectionSettings.__dataclass_fields__ if n != "source")
            raise ConfigError(f"setting '{item}': expected NAME=VALUE with NAME one of {known}")
        if text == "null" or name.endswith("estimator"):
            changes[name] = None if text == "null" else text
            continue
        try:
            changes[name] = float(text)
        except ValueError:
            raise ConfigError(f"setting '{item}': {name} takes a number") from None
    return dataclasses.replace(settings, **changes)


@dataclass(frozen=True, slots=True)
class DeploymentKey:
    """What a measurement was taken on. ``architecture`` is :func:`architecture_id` of the model, ``layout``
    the canonical layout text, ``num_gpus`` the replica count (aggregated) or GPUs (0 if unknown)."""

    engine: str
    model: str
    architecture: str
    gpu: str
    precision: str
    layout: str
    num_gpus: int = 0

    def text(self) -> str:
        return "|".join(
            (self.engine, self.model, self.architecture, self.gpu, self.precision, self.layout, str(self.num_gpus))
        )

    @classmethod
    def parse(cls, text: str, where: str = "corrections") -> DeploymentKey:
        parts = text.split("|")
        if len(parts) != 7:
            raise ConfigError(
                f"{where}: deployment key '{text}' must be engine|model|architecture|gpu|precision|layout|num_gpus"
            )
        try:
            n = int(parts[6])
        except ValueError:
            raise ConfigError(f"{where}: deployment key '{text}': num_gpus must be an integer") from None
        engine, model, arch, gpu, precision, layout = parts[:6]
        return cls(engine, model, arch, gpu, precision, layout, n)


# catalogue fields that name or document a model rather than shape its kernels
_NOT_ARCHITECTURE = frozenset(
    # the linear layers' state dtype is how an engine holds the cache, not a kernel shape; nvfp4_kept how a release
    # is quantised
    {
        "id", "aliases", "name", "source", "as_of", "notes", "max_position_embeddings", "native_dtype",
        "native_dense_dtype", "alias_dtypes", "linear_state_dtype", "nvfp4_kept", "int4_group_size",
    }  # fmt: skip
)


# shape fields added to ModelSpec after measured points were first stored, with their defaults: hashed only when
# set, so every model that does not use them keeps the id its stored points are filed under
_HASHED_WHEN_SET: Mapping[str, Any] = {
    "full_attention_head_dim": None,
    "full_attention_kv_heads": None,
    "full_attention_k_eq_v": False,
    "mlp_free_layers": (),
    "mlp_gated": True,
    "moe_latent_size": None,
    "linear_attention_type": "gated_deltanet",
    "csa_compress_ratio": None,
    "hca_compress_ratio": None,
    "index_topk": None,
    "kv_shared": False,
    "o_groups": None,
    "o_lora_rank": None,
    "hc_mult": 1,
    "linear_gate_rank": None,
}


def architecture_id(model: Any) -> str:
    """A short hash of a catalogue model's shape (every field but its names, provenance and context limit)."""
    data = model.model_dump() if hasattr(model, "model_dump") else dict(vars(model))
    shape = {
        k: v
        for k, v in sorted(data.items())
        if k not in _NOT_ARCHITECTURE and not (k in _HASHED_WHEN_SET and v == _HASHED_WHEN_SET[k])
    }
    return hashlib.sha1(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass(frozen=True, slots=True)
class MeasuredPoint:
    """One measured operating point and its residuals ``log(measured / predicted)`` (None = not measured)
    against the analytic solver and, optionally, against the engine model."""

    isl: int
    osl: int
    concurrency: int
    log_ttft: float | None
    log_tpot: float | None
    measurement_id: str = ""
    # the same residuals against the engine model (``--method sim``); None = as the analytic ones
    log_ttft_sim: float | None = None
    log_tpot_sim: float | None = None
    # log(measured / predicted) output throughput of the deployment, where the row measured it
    log_throughput: float | None = None


@dataclass(frozen=True, slots=True)
class Correction:
    """Multiplicative factors for TTFT and TPOT at one query, and how much measured data backs them."""

    ttft_factor: float
    tpot_factor: float
    # kernel weight of the points used (a point at the query itself: 1 + same_point_weight); the larger of TTFT's
    # and TPOT's kernels, each metric being corrected only where its own kernel reaches (MIN_SUPPORT)
    support: float
    num_points: int  # points of this architecture/engine/precision with non-zero weight
    same_deployment: bool  # whether points of the queried deployment itself exist
    # from measured throughputs where the points have them; None = throughput follows TTFT/TPOT (Little's law)
    throughput_factor: float | None = None
    # whether the table holds a measurement of this very query (the deployment at its ISL, OSL and concurrency)
    at_query: bool = False
    # the learned second stage's share of ttft_factor / tpot_factor (core/perf/residual.py); None: not applied
    learned_factors: tuple[float, float] | None = None

    def note(self) -> str:
        tput = "" if self.throughput_factor is None else f", throughput ×{self.throughput_factor:.3g}"
        learned = (
            ""
            if self.learned_factors is None
            else f"; the learned residual model's share: TTFT ×{self.learned_factors[0]:.3g}, TPOT "
            f"×{self.learned_factors[1]:.3g}"
        )
        return (
            f"corrected by measured operating points: TTFT ×{self.ttft_factor:.3g}, TPOT ×{self.tpot_factor:.3g}"
            f"{tput} (kernel support {self.support:.2g} of {self.num_points} points"
            f"{'' if self.same_deployment else ', none of this exact layout'}{learned})"
        )


def _detrend(w: np.ndarray, dx: np.ndarray, r: np.ndarray, ridge: float) -> np.ndarray:
    """``r`` minus its weighted local slope in ``dx`` (offsets from the query, kernel units): a weighted least-
    squares fit of ``r ~ a + b . dx`` with a ridge of ``ridge`` on ``b``; NaN residuals stay NaN."""
    ok = ~np.isnan(r)
    if np.count_nonzero(ok) < 2:
        return r
    w, x, y = w[ok], dx[ok], r[ok]
    design = np.hstack([np.ones((len(y), 1)), x])
    a = design.T @ (design * w[:, None])
    a[1:, 1:] += ridge * np.eye(x.shape[1])
    coef = np.linalg.solve(a + 1e-12 * np.eye(len(a)), design.T @ (w * y))
    out = r.copy()
    out[ok] = y - x @ coef[1:]
    return out


def _estimate(w: np.ndarray, r: np.ndarray, prior_weight: float, estimator: str) -> float:
    """One log factor from kernel weights ``w`` and log residuals ``r`` (NaN = not measured), with a prior
    of weight ``prior_weight`` at zero (no correction)."""
    ok = ~np.isnan(r) & (w > 0)
    w, r = w[ok], r[ok]
    if estimator == "log_mean":
        return float((w * r).sum() / (w.sum() + prior_weight))
    # mape_median: weighted median of the ratios exp(r) with weights w / exp(r), prior atom at ratio 1 (the
    # weights are scaled by exp(min r), which leaves the median alone and keeps exp from overflowing)
    vals = np.append(r, 0.0)
    wts = np.append(w, prior_weight) * np.exp(-(vals - vals.min()))
    order = np.argsort(vals, kind="stable")
    cum = np.cumsum(wts[order])
    return float(vals[order][int(np.searchsorted(cum, 0.5 * cum[-1]))])


_POOL = re.compile(r"(?:(\d+)x\s+)?(\w+)\(([^)]*)\)")
_DEGREE = re.compile(r"([a-z_]+?)(\d+)$")


_Degrees = tuple[tuple[str, int], ...]  # sorted (name, degree) pairs: immutable, so safe to cache


@functools.lru_cache(maxsize=4096)
def _pools(layout: str) -> tuple[str, tuple[tuple[str, int, _Degrees], ...]]:
    """(kind, ((pool name, count, ((degree name, n), ...)), ...)) of a canonical layout text."""
    kind, _, rest = layout.partition(" ")

    def degrees(text: str) -> _Degrees:
        return tuple(sorted((m.group(1), int(m.group(2))) for t in text.split() if (m := _DEGREE.match(t))))

    if kind == "agg":
        return kind, (("replica", 1, degrees(rest)),)
    return kind, tuple((m.group(2), int(m.group(1) or 0), degrees(m.group(3))) for m in _POOL.finditer(rest))


def _log2_gap(a: int, b: int) -> float:
    return abs(math.log2(max(a, 1)) - math.log2(max(b, 1)))


def _layout_distance(a: DeploymentKey, b: DeploymentKey) -> float:
    """How far apart two layouts are: the sum over pools of |log2| ratios of their parallel degrees (tp, pp,
    adp, ep, moe_tp) and of their replica or worker counts (an unrecorded count is 1 away from any other);
    infinite between aggregated and disaggregated."""
    ka, pa = _pools(a.layout)
    kb, pb = _pools(b.layout)
    if ka != kb or [p[0] for p in pa] != [p[0] for p in pb] or not all(p[2] for p in (*pa, *pb)):
        return math.inf  # other kinds, or a layout without degrees (a bare "agg": its count means GPUs)
    d = 0.0
    for (_, ca, ta), (_, cb, tb) in zip(pa, pb, strict=True):
        da, db = dict(ta), dict(tb)
        for name in sorted(set(da) | set(db)):  # sorted: the same float sum on every run
            d += _log2_gap(da.get(name, 1), db.get(name, 1))
        if ka != "agg":
            d += 0.0 if ca == cb else (1.0 if 0 in (ca, cb) else _log2_gap(ca, cb))
    if ka == "agg":
        d += 0.0 if a.num_gpus == b.num_gpus else _log2_gap(a.num_gpus, b.num_gpus)
    return d


def measurement_id(fields: Sequence[Any]) -> str:
    """A short stable id of one measurement (its inputs and measured values)."""
    text = "|".join("" if f is None else (f"{f:.6g}" if isinstance(f, float) else str(f)) for f in fields)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _Group:
    key: DeploymentKey
    x: np.ndarray  # (n, 3) log isl, log osl, log concurrency
    r_ttft: np.ndarray  # NaN where not measured
    r_tpot: np.ndarray
    ids: tuple[str, ...]
    r_ttft_sim: np.ndarray  # against the engine model; the analytic residual where none was stored
    r_tpot_sim: np.ndarray
    r_tput: np.ndarray  # output throughput; NaN where not measured


@dataclass(frozen=True)
class MeasuredCorrections:
    """Residuals of measured deployments, interpolated for queries near them."""

    deployments: Mapping[str, tuple[MeasuredPoint, ...]] = field(default_factory=dict)
    settings: CorrectionSettings = field(default_factory=CorrectionSettings)
    source: str = ""
    # fingerprint of the coefficients the residuals were measured under (calibration.coefficients_fingerprint)
    coefficients: str = ""
    # the learned second stage (boosted trees on what these points leave; core/perf/residual.py), or None
    learned: LearnedResiduals | None = None
    _index: dict[tuple[str, str, str], list[_Group]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for text, pts in self.deployments.items():
            key = DeploymentKey.parse(text)
            if not pts:
                continue
            for p in pts:
                if p.isl < 1 or p.osl < 1 or p.concurrency < 1:
                    raise ConfigError(f"corrections: {text}: isl, osl and concurrency must be >= 1, got {p}")
            x = np.log(np.array([[p.isl, p.osl, p.concurrency] for p in pts], dtype=float))
            rt = np.array([np.nan if p.log_ttft is None else p.log_ttft for p in pts], dtype=float)
            rd = np.array([np.nan if p.log_tpot is None else p.log_tpot for p in pts], dtype=float)
            st = np.array([v if (v := p.log_ttft_sim) is not None else np.nan for p in pts], dtype=float)
            sd = np.array([v if (v := p.log_tpot_sim) is not None else np.nan for p in pts], dtype=float)
            st = np.where(np.isnan(st), rt, st)
            sd = np.where(np.isnan(sd), rd, sd)
            tp = np.array([np.nan if p.log_throughput is None else p.log_throughput for p in pts], dtype=float)
            group = _Group(key, x, rt, rd, tuple(p.measurement_id for p in pts), st, sd, tp)
            self._index.setdefault((key.engine, key.architecture, key.precision), []).append(group)

    def __len__(self) -> int:
        return sum(len(v) for v in self.deployments.values())

    def measurement_ids(self) -> frozenset[str]:
        """Ids of the measurements the table holds (see :func:`measurement_id`)."""
        return frozenset(p.measurement_id for pts in self.deployments.values() for p in pts if p.measurement_id)

    def merged(self, other: MeasuredCorrections) -> MeasuredCorrections:
        """This table plus ``other``'s points (same coefficients assumed; a point already present, by
        measurement id, is not added twice). Settings stay this table's."""
        deps = {k: list(v) for k, v in self.deployments.items()}
        for k, pts in other.deployments.items():
            mine = deps.setdefault(k, [])
            where = {p.measurement_id: i for i, p in enumerate(mine)}
            for p in pts:
                i = where.get(p.measurement_id)
                if i is None:
                    mine.append(p)
                elif mine[i].log_throughput is None and p.log_throughput is not None:
                    mine[i] = p  # the same measurement, now with its throughput residual
        source = "; ".join(x for x in (self.source, other.source) if x)
        return MeasuredCorrections(
            deployments={k: tuple(v) for k, v in sorted(deps.items())},
            settings=self.settings,
            source=source,
            coefficients=self.coefficients,
            learned=self.learned,  # fitted on this table's rows; the new points reach it through its features
        )

    def correct(
        self,
        key: DeploymentKey,
        isl: int,
        osl: int,
        concurrency: int,
        exclude: Iterable[str] = (),
        method: str = "analytic",
    ) -> Correction | None:
        """The correction at one query, or None when no measurement of this architecture/engine/precision
        exists or none is within reach (total kernel weight below ``MIN_SUPPORT``). ``method`` picks the residuals of the prediction being corrected (``analytic`` or ``sim``)."""
        if method not in ("analytic", "sim"):
            raise ConfigError(f"corrections: method must be 'analytic' or 'sim', got '{method}'")
        groups = self._index.get((key.engine, key.architecture, key.precision))
        if not groups:
            return None
        s = self.settings
        q = np.log(np.array([isl, osl, concurrency], dtype=float))
        scale = np.array([s.scale_log_isl, s.scale_log_osl, s.scale_log_concurrency])
        scale_d = np.array(
            [
                s.scale_log_isl if s.tpot_scale_log_isl is None else s.tpot_scale_log_isl,
                s.scale_log_osl if s.tpot_scale_log_osl is None else s.tpot_scale_log_osl,
                s.scale_log_concurrency,
            ]
        )
        own_tpot_kernel = not np.array_equal(scale, scale_d)
        skip = set(exclude)
        weights: list[np.ndarray] = []
        weights_d: list[np.ndarray] = []
        res_t: list[np.ndarray] = []
        res_d: list[np.ndarray] = []
        res_tp: list[np.ndarray] = []
        xs: list[np.ndarray] = []
        xs_d: list[np.ndarray] = []
        # (length scales, weights, offsets) per kernel: TTFT's (also throughput's), then TPOT's when it differs
        kernels = [(scale, weights, xs)] + ([(scale_d, weights_d, xs_d)] if own_tpot_kernel else [])
        same = False
        at_query = False  # a kept point of this deployment at the query's own ISL, OSL and concurrency
        for g in groups:
            pen = 0.0 if g.key.model == key.model else s.other_model_penalty
            if g.key.gpu != key.gpu:
                pen += s.other_gpu_penalty
            elif (g.key.layout, g.key.num_gpus) != (key.layout, key.num_gpus):
                dist = _layout_distance(g.key, key)
                pen += (
                    s.other_layout_penalty
                    if math.isinf(dist)
                    else min(s.other_layout_penalty, s.near_layout_penalty + s.layout_distance_penalty * dist)
                )
            # points of the queried deployment at the query's own ISL, OSL and concurrency
            here = np.all(g.x == q, axis=1) if g.key == key else np.zeros(len(g.x), dtype=bool)
            extra = s.same_point_weight * here
            keep = np.array([i not in skip for i in g.ids]) if skip else np.ones(len(g.x), dtype=bool)
            at_query = at_query or bool(np.any(keep & here))
            for scl, ws, xl in kernels:
                dx = (g.x - q) / scl
                w = np.where(keep, np.exp(-0.5 * (np.sum(dx**2, axis=1) + pen)) + extra, 0.0)
                ws.append(w)
                xl.append(dx)
            reach = np.count_nonzero(weights[-1]) + (np.count_nonzero(weights_d[-1]) if own_tpot_kernel else 0)
            same = same or (g.key == key and bool(reach))
            res_t.append(g.r_ttft_sim if method == "sim" else g.r_ttft)
            res_d.append(g.r_tpot_sim if method == "sim" else g.r_tpot)
            res_tp.append(g.r_tput)
        w_all = np.concatenate(weights)
        w_d = np.concatenate(weights_d) if own_tpot_kernel else w_all
        n_points = int(np.count_nonzero(w_all + w_d))
        support_t, support_d = float(w_all.sum()), float(w_d.sum())
        support = max(support_t, support_d)
        if n_points == 0 or support < MIN_SUPPORT:
            return None  # no measured point within reach: the correction would be 1 to within a per cent
        r_t, r_d, r_tp = np.concatenate(res_t), np.concatenate(res_d), np.concatenate(res_tp)
        if s.slope_ridge is not None:
            dx = np.concatenate(xs)
            dx_d = np.concatenate(xs_d) if own_tpot_kernel else dx
            r_t, r_tp = (_detrend(w_all, dx, r, s.slope_ridge) for r in (r_t, r_tp))
            r_d = _detrend(w_d, dx_d, r_d, s.slope_ridge)
        # a metric whose own kernel does not reach the query is not corrected (TPOT's kernel is the wider one)
        lt = _estimate(w_all, r_t, s.prior_weight, s.ttft_estimator) if support_t >= MIN_SUPPORT else 0.0
        ld = _estimate(w_d, r_d, s.prior_weight, s.tpot_estimator) if support_d >= MIN_SUPPORT else 0.0
        tput_factor = None
        # throughput's own factor only where measured throughputs carry most of the support (else it follows
        # TTFT/TPOT by Little's law); none stored against the engine model, so never for method="sim"
        w_tp = float(w_all[~np.isnan(r_tp)].sum())
        if method == "analytic" and support_t >= MIN_SUPPORT and w_tp > 0.5 * support_t:
            tput_factor = math.exp(_estimate(w_all, r_tp, s.prior_weight, "log_mean"))
        return Correction(math.exp(lt), math.exp(ld), support, n_points, same, tput_factor, at_query=at_query)

    # ------------------------------------------------------------------ plain-data form
    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "source": self.source,
            "coefficients": self.coefficients,
            "settings": {
                "scale_log_isl": s.scale_log_isl,
                "scale_log_osl": s.scale_log_osl,
                "scale_log_concurrency": s.scale_log_concurrency,
                "tpot_scale_log_isl": s.tpot_scale_log_isl,
                "tpot_scale_log_osl": s.tpot_scale_log_osl,
                "other_model_penalty": s.other_model_penalty,
                "other_layout_penalty": s.other_layout_penalty,
                "near_layout_penalty": s.near_layout_penalty,
                "layout_distance_penalty": s.layout_distance_penalty,
                "other_gpu_penalty": s.other_gpu_penalty,
                "prior_weight": s.prior_weight,
                "slope_ridge": s.slope_ridge,
                "same_point_weight": s.same_point_weight,
                "ttft_estimator": s.ttft_estimator,
                "tpot_estimator": s.tpot_estimator,
                "source": s.source,
            },
            "columns": list(_COLUMNS),
            "deployments": {
                k: [
                    [
                        p.isl,
                        p.osl,
                        p.concurrency,
                        None if p.log_ttft is None else round(p.log_ttft, 5),
                        None if p.log_tpot is None else round(p.log_tpot, 5),
                        p.measurement_id,
                        None if p.log_ttft_sim is None else round(p.log_ttft_sim, 5),
                        None if p.log_tpot_sim is None else round(p.log_tpot_sim, 5),
                    ]
                    + ([] if p.log_throughput is None else [round(p.log_throughput, 5)])
                    for p in pts
                ]
                for k, pts in self.deployments.items()
            },
        } | ({} if self.learned is None else {"learned": self.learned.to_dict()})

    @classmethod
    def from_dict(cls, data: Any, where: str = "corrections") -> MeasuredCorrections:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = set(data) - {"source", "coefficients", "settings", "columns", "deployments", "learned"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
        st = data.get("settings") or {}
        if not isinstance(st, dict):
            raise ConfigError(f"{where}.settings: expected a mapping")
        bad = set(st) - set(CorrectionSettings.__dataclass_fields__)
        if bad:
            raise ConfigError(f"{where}.settings: unknown field(s) {sorted(bad)}")
        settings = CorrectionSettings(**st)
        deps: dict[str, tuple[MeasuredPoint, ...]] = {}
        for k, rows in (data.get("deployments") or {}).items():
            w = f"{where}.deployments[{k}]"
            DeploymentKey.parse(str(k), w)
            if not isinstance(rows, list):
                raise ConfigError(f"{w}: expected a list of rows [{', '.join(_COLUMNS)}]")
            pts = []
            for i, r in enumerate(rows):
                if not isinstance(r, list) or len(r) not in (6, 8, 9):
                    raise ConfigError(f"{w}[{i}]: expected [{', '.join(_COLUMNS)}] (the last three optional)")
                try:
                    pts.append(
                        MeasuredPoint(
                            int(r[0]),
                            int(r[1]),
                            int(r[2]),
                            None if r[3] is None else float(r[3]),
                            None if r[4] is None else float(r[4]),
                            str(r[5]),
                            None if len(r) < 8 or r[6] is None else float(r[6]),
                            None if len(r) < 8 or r[7] is None else float(r[7]),
                            None if len(r) < 9 or r[8] is None else float(r[8]),
                        )
                    )
                except (TypeError, ValueError):
                    raise ConfigError(f"{w}[{i}]: not numbers: {r!r}") from None
                if any(isinstance(v, float) and math.isinf(v) for v in r[3:5] + r[6:]):
                    raise ConfigError(f"{w}[{i}]: residuals must be finite, got {r!r}")
            deps[str(k)] = tuple(pts)
        return cls(
            deployments=deps,
            settings=settings,
            source=str(data.get("source", "")),
            coefficients=str(data.get("coefficients", "") or ""),
            learned=None if data.get("learned") is None else LearnedResiduals.from_dict(data["learned"], f"{where}.learned"),
        )


def apply_correction(result: Any, corr: Correction) -> Any:
    """A closed-loop result (any dataclass with ``ttft_ms``, ``tpot_ms``, ``e2e_ms``, ``throughput_tok_s``)
    with TTFT and TPOT scaled (their p90s too, when present); throughput and request rate follow Little's law
    (clients / end-to-end latency), or the measured throughputs' own factor when the points have one; a
    ``notes`` tuple gets the correction's note."""
    import dataclasses

    ttft = result.ttft_ms * corr.ttft_factor
    tpot = result.tpot_ms * corr.tpot_factor
    steps = (result.e2e_ms - result.ttft_ms) / result.tpot_ms if result.tpot_ms > 0 else 0.0
    e2e = ttft + steps * tpot
    ratio = result.e2e_ms / e2e if e2e > 0 else 1.0
    if corr.throughput_factor is not None:
        ratio = corr.throughput_factor
    changes: dict[str, Any] = {
        "ttft_ms": ttft,
        "tpot_ms": tpot,
        "e2e_ms": e2e,
        "throughput_tok_s": result.throughput_tok_s * ratio,
    }
    names = {f.name for f in dataclasses.fields(result)}
    if "request_rate_per_s" in names:
        changes["request_rate_per_s"] = result.request_rate_per_s * ratio
    if "ttft_p90_ms" in names:
        changes["ttft_p90_ms"] = result.ttft_p90_ms * corr.ttft_factor
    if "tpot_p90_ms" in names:
        changes["tpot_p90_ms"] = result.tpot_p90_ms * corr.tpot_factor
    if "notes" in names:
        changes["notes"] = (*result.notes, corr.note())
    return dataclasses.replace(result, **changes)
