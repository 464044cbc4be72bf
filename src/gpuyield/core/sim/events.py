"""A tiny SimPy-style event core: a heap of ``(time_s, priority, seq, payload)``.

The sequence counter breaks ties, so events at the same time and priority come out in the order they were
scheduled (deterministic FIFO). There is no wall clock anywhere: simulated time is float seconds
(:data:`~gpuyield.core.workload.request.SimTime`) and only moves forward. Randomness, where a caller needs
it, is an explicit seeded :class:`random.Random` passed in by the caller (see :func:`make_rng`).
"""

from __future__ import annotations

import heapq
import itertools
import random
from typing import Any

from gpuyield.core.workload.request import SimTime

__all__ = ["NORMAL", "URGENT", "EventQueue", "SimClock", "make_rng"]

URGENT = 0  # processed before NORMAL events at the same time
NORMAL = 1


def make_rng(seed: int) -> random.Random:
    """The one way the simulator makes randomness: an explicit generator from an explicit seed."""
    return random.Random(seed)


class SimClock:
    """Simulated seconds. ``advance`` refuses to go backwards (a broken model fails loudly)."""

    __slots__ = ("now_s",)

    def __init__(self, start_s: SimTime = 0.0) -> None:
        self.now_s: SimTime = start_s

    def advance(self, t_s: SimTime) -> None:
        if t_s < self.now_s:
            raise RuntimeError(f"simulated time went back: {t_s!r} < {self.now_s!r}")
        self.now_s = t_s


class EventQueue:
    """Min-heap of events ordered by ``(time_s, priority, seq)``."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, time_s: SimTime, payload: Any, priority: int = NORMAL) -> None:
        heapq.heappush(self._heap, (time_s, priority, next(self._seq), payload))

    def peek_time_s(self) -> float:
        """Time of the next event, or ``inf`` when empty."""
        return self._heap[0][0] if self._heap else float("inf")

    def pop(self) -> tuple[SimTime, Any]:
        """Remove and return ``(time_s, payload)`` of the next event (``IndexError`` when empty)."""
        t, _prio, _seq, payload = heapq.heappop(self._heap)
        return t, payload
