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
    """This machine: in-process one after another (``jobs=1``), or ``jobs`` worker processes.

    Items are independent and each result depends only on its item and the simulator's inputs, so the
    results are the same for any ``jobs``.
    """

    name = "local"

    def __init__(self, simulate: SimulateFn, jobs: int = 1) -> None:
        self.simulate = simulate
        self.jobs = max(1, int(jobs))

    def map(
        self,
        fn: Callable[[T, SimulateFn], R],
        items: Sequence[T],
        on_done: Callable[[int], None] | None = None,
    ) -> list[R]:
        if self.jobs == 1 or len(items) <= 1:
            out: list[R] = []
            for item in items:
                out.append(fn(item, self.simulate))
                if on_done is not None:
                    on_done(1)
            return out
        from concurrent.futures import ProcessPoolExecutor, as_completed

        results: list[R | None] = [None] * len(items)
        with ProcessPoolExecutor(max_workers=min(self.jobs, len(items))) as pool:
            futures = {pool.submit(fn, item, self.simulate): i for i, item in enumerate(items)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                if on_done is not None:
                    on_done(1)
        return results  # type: ignore[return-value]
