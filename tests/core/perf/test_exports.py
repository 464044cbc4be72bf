"""Every public name of gpuyield.core.perf modules is declared and importable."""

from __future__ import annotations

import importlib

import gpuyield.core.perf as pkg

MODULES = ["bounds", "calibration", "closed_loop", "corrections", "model", "validation"]


def test_every_module_declares_all_and_exports_exist():
    for name in MODULES:
        mod = importlib.import_module(f"gpuyield.core.perf.{name}")
        assert hasattr(mod, "__all__"), name
        for sym in mod.__all__:
            assert hasattr(mod, sym), (name, sym)
    assert sorted(pkg.__all__) == pkg.__all__
    assert all(hasattr(pkg, s) for s in pkg.__all__)
