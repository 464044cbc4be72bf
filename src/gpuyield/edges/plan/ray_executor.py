"""``--executor ray``: run the planner's verifications as Ray tasks.

The simulator binding (workload, catalogue, model, seed, SLO) is put in Ray's object store once; each task
calls the same module-level function the local executor calls, with the same item, so the results are the
same as ``--executor local`` for the same seed (the simulator is deterministic).

Local Ray (default): ``ray.init(num_cpus=N, include_dashboard=False)`` on this machine's cores. A multi-node
cluster: start it with ``ray start --head`` / ``ray start --address HEAD:6379`` (every node needs gpuyield
installed, e.g. ``pip install 'gpuyield[ray]'``) and pass ``--ray-address HEAD:6379`` (or ``auto`` on a
node of the cluster).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from gpuyield.core.plan.verify import SimulateFn
from gpuyield.errors import ConfigError

__all__ = ["RayExecutor"]

T = TypeVar("T")
R = TypeVar("R")


def _run(fn: Callable[[Any, SimulateFn], Any], item: Any, simulate: SimulateFn) -> Any:
    return fn(item, simulate)


class RayExecutor:
    """Runs ``fn(item, simulate)`` for each item as a Ray task (one CPU each)."""

    name = "ray"

    def __init__(self, simulate: SimulateFn, *, address: str | None = None, num_cpus: int | None = None) -> None:
        self.simulate = simulate
        self.address = address
        self.num_cpus = num_cpus
        self._started = False

    def _init(self) -> Any:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'gpuyield[ray]'") from None
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
            if self.address:
                kwargs["address"] = self.address
            else:
                kwargs["num_cpus"] = self.num_cpus or os.cpu_count() or 1
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise ConfigError(f"--ray-address {self.address}: cannot connect to a Ray cluster ({exc})") from None
            self._started = True
        return ray

    def map(
        self,
        fn: Callable[[T, SimulateFn], R],
        items: Sequence[T],
        on_done: Callable[[int], None] | None = None,
    ) -> list[R]:
        if not items:
            return []
        ray = self._init()
        remote = ray.remote(num_cpus=1, max_retries=0)(_run)
        sim_ref = ray.put(self.simulate)
        refs = [remote.remote(fn, item, sim_ref) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                results[index[ref]] = ray.get(ref)
                if on_done is not None:
                    on_done(1)
        return results

    def shutdown(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
