"""Where verification work runs. The search hands an executor a module-level function and a list of
picklable items; the executor calls ``fn(item, simulate)`` for each and returns the results in item order.

:class:`LocalExecutor` runs them one after another in this process. The Ray executor
(``gpuyield.edges.plan.ray_executor``) runs each call as a Ray task with the same function, the same items
and a simulator rebuilt from the same inputs in the worker, so results are identical for the same seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from gpuyield.core.plan.verify import SimulateFn

__all__ = ["Executor", "LocalExecutor"]

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs ``fn(item, simulate)`` for every item; results in item order."""

    name: str

    def map(
        self,
        fn: Callable[[T, SimulateFn], R],
        items: Sequence[T],
        on_done: Callable[[int], None] | None = None,
    ) -> list[R]: ...


class LocalExecutor:
    """Sequential, in-process."""

    name = "local"

    def __init__(self, simulate: SimulateFn) -> None:
        self.simulate = simulate

    def map(
        self,
        fn: Callable[[T, SimulateFn], R],
        items: Sequence[T],
        on_done: Callable[[int], None] | None = None,
    ) -> list[R]:
        out: list[R] = []
        for item in items:
            out.append(fn(item, self.simulate))
            if on_done is not None:
                on_done(1)
        return out
