"""Every core.plan module declares ``__all__``; every listed name exists; the package re-exports its API."""

from __future__ import annotations

import importlib
import pkgutil

import gpuyield.core.plan as plan


def test_modules_declare_all_and_names_exist() -> None:
    for info in pkgutil.iter_modules(plan.__path__, "gpuyield.core.plan."):
        mod = importlib.import_module(info.name)
        assert hasattr(mod, "__all__"), info.name
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert not missing, (info.name, missing)
    assert sorted(plan.__all__) == list(plan.__all__)
    assert all(hasattr(plan, n) for n in plan.__all__)
