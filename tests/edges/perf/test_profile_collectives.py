"""`gpuyield profile --collectives`: all-reduce, all-gather and reduce-scatter timed through torch.distributed (gloo
ranks on the CPU here), written as AIConfigurator's nccl_perf table and read back by calibrate."""

from __future__ import annotations

import csv

import pytest

from gpuyield.errors import ConfigError


def test_group_sizes_double_up_to_the_largest_and_include_it() -> None:
    from gpuyield.edges.perf.collectives import group_sizes

    assert group_sizes(2) == [2]
    assert group_sizes(8) == [2, 4, 8]
    assert group_sizes(6) == [2, 4, 6]
    assert group_sizes(0) == [] and group_sizes(1) == []


def test_collectives_need_torch_and_two_ranks(tmp_path) -> None:
    from gpuyield.edges.perf.profiler import run_profile

    with pytest.raises(ConfigError, match=r"torch\.distributed \(--backend torch\)"):
        run_profile(tmp_path / "p", device="cpu", backend="numpy", budget_s=5.0, collectives=2)
    for bad in (1, -2):
        with pytest.raises(ConfigError, match="at least 2 ranks"):
            run_profile(tmp_path / "p", device="cpu", backend="numpy", budget_s=5.0, collectives=bad)
    assert not (tmp_path / "p").exists()  # refused before measuring anything


def _need_gloo() -> None:
    pytest.importorskip("torch")
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("this torch build has no gloo backend")


def test_collectives_over_gloo_ranks_smallest_first_in_equal_shares() -> None:
    """Groups of 2 and 3 ranks: every op at every size, all-gather and reduce-scatter buffers rounded down to a
    multiple of the group (3 ranks split 256 elements as 255)."""
    _need_gloo()
    import time

    from gpuyield.edges.perf.collectives import profile_collectives

    rows, framework, version, stopped = profile_collectives("cpu", 3, time.time() + 120.0, elements=(256, 1024),
                                                            repeats=2)  # fmt: skip
    assert framework == "gloo" and version and not stopped
    got = {(op, n, el) for op, n, el, ms in rows}
    for n in (2, 3):
        assert ("all_reduce", n, 256) in got and ("all_reduce", n, 1024) in got
    assert {("all_gather", 2, 256), ("reduce_scatter", 2, 1024), ("all_gather", 3, 255), ("reduce_scatter", 3, 1023)} <= got
    assert len(rows) == 12 and all(ms > 0 for *_, ms in rows)
    # a deadline already past: nothing starts, and the run says it was cut short
    rows, *_, stopped = profile_collectives("cpu", 2, time.time() - 1.0, elements=(256,))
    assert rows == [] and stopped


def test_the_profile_loop_times_collectives_and_calibrate_reads_them(tmp_path) -> None:
    _need_gloo()
    from gpuyield.core.catalog import default_catalog
    from gpuyield.edges.perf.kernel_tables import (
        discover_devices,
        gpu_coefficients_from_tables,
        read_system_yaml,
    )
    from gpuyield.edges.perf.profiler import run_profile

    res = run_profile(tmp_path / "prof", device="cpu", model=default_catalog().model("tiny-llama"), budget_s=90.0,
                      collectives=2)  # fmt: skip
    assert res["collective_group_sizes"] == [2] and res["collective_rows"] >= 3
    (table,) = (tmp_path / "prof" / "data" / "cpu" / "comm" / "nccl").glob("*/nccl_perf.csv")
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["op_name"] for r in rows} == {"all_reduce", "all_gather", "reduce_scatter"}
    assert {(r["nccl_dtype"], r["num_gpus"], r["framework"]) for r in rows} == {("half", "2", "gloo")}
    assert all(float(r["latency"]) > 0 for r in rows)
    (dev,) = discover_devices(tmp_path / "prof")
    gc, counts = gpu_coefficients_from_tables(dev, read_system_yaml(dev.system_yaml))
    assert counts["nccl_table_rows"] == len(rows)
    ag = gc.nccl_time("all_gather", 2)
    assert ag is not None and ag.sizes_bytes[0] == 512.0  # 256 elements of 2 bytes
    # a second profile into the same --out without collectives leaves the table as it was
    before = table.read_text()
    again = run_profile(tmp_path / "prof", device="cpu", budget_s=10.0, collectives=0)
    assert again["collective_rows"] == 0 and table.read_text() == before


def test_ranks_that_fail_are_reported_and_the_run_stops_without_waiting_out_the_budget(monkeypatch) -> None:
    """Ranks whose process group cannot start (here: a backend the CPU lacks) report the error; the parent logs it,
    keeps what was measured (nothing), says the run was cut short and does not wait for the deadline."""
    _need_gloo()
    import time

    from gpuyield.edges.perf import collectives

    monkeypatch.setattr(collectives, "check_collectives", lambda device, largest: ("no-such-backend", "x", "0"))
    said: list[str] = []
    t0 = time.time()
    rows, *_, stopped = collectives.profile_collectives("cpu", 4, time.time() + 300.0, elements=(256,), log=said.append)
    assert rows == [] and stopped
    assert time.time() - t0 < 120.0
    assert len(said) == 1 and "failed" in said[0] and "larger groups skipped" in said[0]
