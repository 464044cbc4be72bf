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


def test_the_profile_loop_times_collectives_over_gloo_ranks_and_calibrate_reads_them(tmp_path) -> None:
    pytest.importorskip("torch")
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("this torch build has no gloo backend")
    from gpuyield.core.catalog import default_catalog
    from gpuyield.edges.perf.kernel_tables import (
        discover_devices,
        gpu_coefficients_from_tables,
        read_system_yaml,
    )
    from gpuyield.edges.perf.profiler import run_profile

    res = run_profile(tmp_path / "prof", device="cpu", model=default_catalog().model("tiny-llama"), budget_s=40.0,
                      collectives=2)  # fmt: skip
    assert res["collective_group_sizes"] == [2] and res["collective_rows"] >= 3 * 4
    (table,) = (tmp_path / "prof" / "data" / "cpu" / "comm" / "nccl").glob("gloo-*/nccl_perf.csv")
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["op_name"] for r in rows} == {"all_reduce", "all_gather", "reduce_scatter"}
    assert {(r["nccl_dtype"], r["num_gpus"], r["framework"]) for r in rows} == {("half", "2", "gloo")}
    assert all(float(r["latency"]) > 0 for r in rows)
    sizes = sorted({int(r["message_size"]) for r in rows if r["op_name"] == "all_gather"})
    assert sizes[0] == 256 and all(b == 4 * a for a, b in zip(sizes, sizes[1:], strict=False))  # smallest first
    (dev,) = discover_devices(tmp_path / "prof")
    gc, counts = gpu_coefficients_from_tables(dev, read_system_yaml(dev.system_yaml))
    assert counts["nccl_table_rows"] == len(rows)
    ag = gc.nccl_time("all_gather", 2)
    assert ag is not None and ag.sizes_bytes[0] == 512.0  # 256 elements of 2 bytes
    # the largest timed message takes at least as long as the smallest (the table's lower envelope is monotone)
    assert ag(ag.sizes_bytes[-1]) >= ag(512.0) > 0
    # a second profile into the same --out keeps the first's timings of shapes it does not re-measure
    again = run_profile(tmp_path / "prof", device="cpu", budget_s=10.0, collectives=0)
    assert again["collective_rows"] == 0 and table.exists()
