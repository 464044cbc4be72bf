"""Every simulator and policy module declares ``__all__`` and exports only names it defines or imports."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import gpuyield.core.policy as policy
import gpuyield.core.sim as sim

MODULES = sorted(
    m.name
    for pkg in (sim, policy)
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
    if m.name.split(".")[-1] in {"events", "steptime", "closed_loop", "cluster", "deployment", "simulate",
                                 "engine", "block_pool", "kv_cache", "request", "output", "scheduler",
                                 "replica", "config", "routing"}  # fmt: skip
)


@pytest.mark.parametrize("name", MODULES)
def test_module_all(name: str) -> None:
    mod = importlib.import_module(name)
    assert hasattr(mod, "__all__"), name
    for export in mod.__all__:
        assert hasattr(mod, export), f"{name}.{export}"
    assert len(set(mod.__all__)) == len(mod.__all__)
