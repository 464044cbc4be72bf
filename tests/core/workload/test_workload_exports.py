import importlib

import gpuyield.core.workload as pkg

MODULES = ["arrivals", "hashing", "prefix", "request", "request_log", "stats", "synth", "transforms", "workload"]


def test_every_module_declares_all_and_exports_exist():
    for name in MODULES:
        mod = importlib.import_module(f"gpuyield.core.workload.{name}")
        assert hasattr(mod, "__all__"), name
        for sym in mod.__all__:
            assert hasattr(mod, sym), f"{name}.{sym}"


def test_package_reexports_are_real_and_sorted():
    assert all(hasattr(pkg, s) for s in pkg.__all__)
    assert pkg.__all__ == sorted(pkg.__all__, key=lambda s: (not s.isupper(), s))
    for core_name in ("Workload", "WorkloadMeta", "Request", "RequestLogRecord", "inspect", "merge", "rate_scale"):
        assert core_name in pkg.__all__
