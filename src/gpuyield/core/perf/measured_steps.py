"""Measured step scales: the step-time model adjusted, step by step, to a deployment's measured points.

``estimate`` and ``validate`` correct a closed-loop answer (TTFT, TPOT) by the residuals of measured
operating points near it (:mod:`gpuyield.core.perf.corrections`). The simulator and the planner time single
engine steps, so a correction of an end-to-end answer cannot be applied to them as it is. This module holds
the step-level form of one: for a grid of batch sizes (running sequences), a multiplier of a step's prefill
part and one of its decode part, solved (:func:`gpuyield.core.sim.measured.measured_step_scales`) so that the
closed-loop answer at that concurrency, with the scaled steps, equals the corrected answer.

A step with ``D`` decoding sequences is timed ``decode(D) * t_decode + prefill(D) * (t - t_decode)``, where
``t`` is the step model's time of the whole step and ``t_decode`` that of its decoding sequences alone (for a
step that only prefills, one sequence at no context: the weight read and per-step overhead every step pays);
the multipliers are interpolated in log space over the grid and held at its ends. Affine in the decode context
for a fixed batch, like the plain step model.

Pure: plain data; the solver lives with the engine model it runs.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

from gpuyield.errors import ConfigError

__all__ = ["MeasuredStepScales"]


@dataclass(frozen=True)
class MeasuredStepScales:
    """Per-batch-size multipliers of one deployment's step times (prefill part, decode part)."""

    concurrency: tuple[int, ...]  # the grid: running sequences, ascending
    prefill: tuple[float, ...]  # multiplier of a step's prefill part at each grid point
    decode: tuple[float, ...]  # multiplier of its decode part (decoding sequences, per-step overhead)
    isl: int  # the operating point's prompt and output lengths the multipliers were solved at
    osl: int
    support: float  # the corrections' kernel support at the best-supported grid point
    points: int  # measured points within reach there
    same_deployment: bool  # some of them measured this very deployment (not only other layouts or GPUs)

    def __post_init__(self) -> None:
        n = len(self.concurrency)
        if n == 0 or len(self.prefill) != n or len(self.decode) != n:
            raise ConfigError("measured step scales: the grid and both multiplier lists need one value per point")
        if any(b <= a for a, b in zip(self.concurrency, self.concurrency[1:], strict=False)) or self.concurrency[0] < 1:
            raise ConfigError("measured step scales: the concurrency grid must be positive and ascending")
        for v in (*self.prefill, *self.decode):
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"measured step scales: multiplier {v!r} is not a positive number")
        object.__setattr__(self, "_logc", tuple(math.log(c) for c in self.concurrency))

    def at(self, running_seqs: int) -> tuple[float, float]:
        """(prefill, decode) multipliers for a step with ``running_seqs`` decoding sequences."""
        c = self.concurrency
        if running_seqs <= c[0]:
            return self.prefill[0], self.decode[0]
        if running_seqs >= c[-1]:
            return self.prefill[-1], self.decode[-1]
        i = bisect.bisect_right(c, running_seqs)
        lc: tuple[float, ...] = self._logc  # type: ignore[attr-defined]
        f = (math.log(running_seqs) - lc[i - 1]) / (lc[i] - lc[i - 1])
        p = math.exp((1 - f) * math.log(self.prefill[i - 1]) + f * math.log(self.prefill[i]))
        d = math.exp((1 - f) * math.log(self.decode[i - 1]) + f * math.log(self.decode[i]))
        return p, d

    def describe(self) -> str:
        """One line for notes and reports."""
        lo, hi = self.concurrency[0], self.concurrency[-1]
        rng = lambda xs: f"×{min(xs):.2f}" if max(xs) - min(xs) < 0.005 else f"×{min(xs):.2f}–{max(xs):.2f}"  # noqa: E731
        return (
            f"step times adjusted to {self.points} measured operating points (ISL {self.isl}, OSL {self.osl}; "
            f"{'this deployment' if self.same_deployment else 'other layouts or GPUs only'}; kernel support "
            f"{self.support:.2g}): prefill {rng(self.prefill)}, decode {rng(self.decode)} over {lo}–{hi} running "
            "sequences"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": list(self.concurrency),
            "prefill": [round(v, 4) for v in self.prefill],
            "decode": [round(v, 4) for v in self.decode],
            "isl": self.isl,
            "osl": self.osl,
            "support": round(self.support, 4),
            "points": self.points,
            "same_deployment": self.same_deployment,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeasuredStepScales:
        """The inverse of :meth:`to_dict` (a simulation summary's ``measured_step_scales``)."""
        try:
            return cls(
                tuple(int(c) for c in d["concurrency"]), tuple(float(v) for v in d["prefill"]),
                tuple(float(v) for v in d["decode"]), int(d["isl"]), int(d["osl"]), float(d["support"]),
                int(d["points"]), bool(d["same_deployment"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"measured step scales: {exc!r} in {d!r}") from None
