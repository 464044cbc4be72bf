"""Kernel-table reduction recovers known efficiencies from synthetic tables."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from gpuyield.edges.perf.kernel_tables import discover_devices, gpu_coefficients_from_tables, read_system_yaml

PEAK = 100e12  # FLOP/s
BW = 1e12  # B/s


def _write(path: Path, cols: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        w.writerows(rows)


def _tree(root: Path) -> None:
    (root).mkdir(parents=True, exist_ok=True)
    (root / "toy.yaml").write_text(
        yaml.safe_dump(
            {
                "gpu": {"mem_bw": BW, "bfloat16_tc_flops": PEAK, "mem_capacity": 80e9},
                "node": {"intra_node_bw": 100e9, "num_gpus_per_node": 8},
            }
        )
    )
    base = root / "data" / "toy"
    gemm = []
    for m in (1, 2, 4, 8, 16, 64, 256, 1024, 4096):
        for n, k in ((4096, 4096), (8192, 4096), (4096, 16384)):
            # truth: 5 us fixed + weights at 80 % of bandwidth, or compute at 50 % of peak
            t = max(5e-6 + n * k * 2 / (0.8 * BW), 2 * m * n * k / (0.5 * PEAK))
            gemm.append(["X", "1", "toy", "gemm", "k", "bfloat16", m, n, k, t * 1e3])
    _write(
        base / "gemm" / "fw" / "1.0" / "gemm_perf.csv",
        [
            "framework",
            "version",
            "device",
            "op_name",
            "kernel_source",
            "gemm_dtype",
            "m",
            "n",
            "k",
            "latency",
        ],
        gemm,
    )
    cols = [
        "framework",
        "version",
        "device",
        "op_name",
        "kernel_source",
        "batch_size",
        "isl",
        "num_heads",
        "num_key_value_heads",
        "head_dim",
        "beam_width",
        "attn_dtype",
        "kv_cache_dtype",
        "step",
        "window_size",
        "latency",
    ]
    ctx = [
        [
            "X",
            "1",
            "toy",
            "c",
            "k",
            1,
            s,
            32,
            8,
            128,
            1,
            "bfloat16",
            "bfloat16",
            0,
            0,
            4 * 32 * 128 * s * s / 2 / (0.4 * PEAK) * 1e3,
        ]
        for s in (1024, 2048, 4096)
    ]
    gen = [
        [
            "X",
            "1",
            "toy",
            "g",
            "k",
            b,
            s,
            32,
            8,
            128,
            1,
            "bfloat16",
            "bfloat16",
            0,
            0,
            b * s * 2 * 8 * 128 * 2 / (0.6 * BW) * 1e3,
        ]
        for b in (64, 128)
        for s in (2048, 4096)
    ]
    _write(base / "attention" / "fw" / "1.0" / "context_attention_perf.csv", cols, ctx)
    _write(base / "attention" / "fw" / "1.0" / "generation_attention_perf.csv", cols, gen)


def test_reduction_recovers_known_efficiencies(tmp_path):
    _tree(tmp_path)
    (dev,) = discover_devices(tmp_path)
    assert dev.device == "toy" and dev.system_yaml is not None
    spec = read_system_yaml(dev.system_yaml)
    assert spec["bf16_dense_tflops"] == pytest.approx(100.0)
    gc, counts = gpu_coefficients_from_tables(dev, spec)
    assert gc.mem_bw_eff == pytest.approx(0.8, rel=0.02)
    assert counts["gemm_fixed_latency_us"] == pytest.approx(5.0, rel=0.05)
    curve = gc.gemm_eff["bf16"]
    assert curve(4096) == pytest.approx(0.5, rel=0.02)
    assert gc.attn_prefill_eff == pytest.approx(0.4, rel=0.01)
    assert gc.attn_decode_bw_eff == pytest.approx(0.6, rel=0.01)
    assert "toy" in gc.source


def test_missing_tables_are_a_clear_error(tmp_path):
    from gpuyield.errors import ConfigError

    with pytest.raises(ConfigError, match="no kernel tables"):
        discover_devices(tmp_path)


def test_the_fit_moves_a_constant_first_token_overhead_into_the_per_layer_term():
    from gpuyield.core.perf.calibration import EngineCoefficients
    from gpuyield.edges.perf.calibrate import (
        FIRST_TOKEN_REFERENCE_LAYERS,
        FIT_PARAMETERS,
        REFINE_PARAMETERS,
        _per_layer_first_token,
    )

    old = EngineCoefficients(ttft_overhead_s=0.12, ttft_per_layer_s=0.0)
    new = _per_layer_first_token(old)
    assert new.ttft_overhead_s == 0.0
    # the same first token at the reference depth: only the starting point of the descent changes
    assert new.first_token_overhead_s(FIRST_TOKEN_REFERENCE_LAYERS) == pytest.approx(0.12)
    assert _per_layer_first_token(new) is new  # a calibration that has the term keeps it
    assert "ttft_per_layer_s" in FIT_PARAMETERS and "ttft_overhead_s" not in FIT_PARAMETERS
    assert "ttft_per_layer_s" in REFINE_PARAMETERS and "ttft_overhead_s" not in REFINE_PARAMETERS


def _vllm_rows(per_layout: int) -> list:  # type: ignore[type-arg]
    """Llama-3.1-8B vLLM rows at concurrency 1..per_layout, aggregated and 1P1D (the fit tests' input)."""
    from gpuyield.core.perf.validation import row_from_mapping

    row = {
        "gpu": "h100_sxm", "num_gpus": "1", "model": "meta-llama/Llama-3.1-8B", "engine": "vllm", "precision": "fp8",
        "layout": "agg tp1 pp1 adp1", "tp": "1", "isl": "1024", "osl": "256", "concurrency": "8", "num_requests": "",
        "ttft_ms": "80", "tpot_ms": "9", "e2e_ms": "", "throughput_tok_s": "", "source": "t",
    }  # fmt: skip
    disagg = {**row, "layout": "disagg 1x prefill(tp1 adp1 ep1) + 1x decode(tp1 adp1 ep1)", "num_gpus": "2"}
    return [row_from_mapping({**r, "concurrency": str(c)}, i) for i, (r, c) in
            enumerate((r, c) for r in (row, disagg) for c in range(1, per_layout + 1))]  # fmt: skip


def test_fit_engines_starts_every_fitted_group_from_the_per_layer_term(monkeypatch):
    import dataclasses

    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.perf.calibration import EngineCoefficients, default_calibration
    from gpuyield.edges.perf import calibrate

    old = EngineCoefficients(ttft_overhead_s=0.12, ttft_per_layer_s=0.0)
    base = dataclasses.replace(
        default_calibration(),
        corrections=None,
        engines={"vllm": old, "vllm:disagg": old, "vllm/fp8": old, "vllm/h100_sxm/fp8": old},
    )  # a calibration written before the per-layer term, with refined groups
    rows = _vllm_rows(24)
    starts: dict[str, EngineCoefficients] = {}

    def record(cal, engines, key, start, sub, lk, names, rounds, log):  # type: ignore[no-untyped-def]
        starts[key] = start
        return start

    monkeypatch.setattr(calibrate, "_fit_group", record)
    calibrate.fit_engines(base, rows, default_catalog(), rounds=1, refine=True)
    assert {"vllm", "vllm:disagg", "vllm/fp8", "vllm/h100_sxm/fp8"} <= set(starts)
    for key, ec in starts.items():
        assert ec.ttft_overhead_s == 0.0 and ec.ttft_per_layer_s == pytest.approx(0.12 / 60), key
    # the family fit also starts its all-reduce overhead above 0 (a multiplicative descent cannot leave 0), and
    # keeps a fitted one
    assert starts["vllm"].allreduce_overhead_s == calibrate.ALLREDUCE_OVERHEAD_START_S > 0
    assert "allreduce_overhead_s" in calibrate.FIT_PARAMETERS
    fitted = dataclasses.replace(base, engines={"vllm": dataclasses.replace(old, allreduce_overhead_s=3e-6)})
    starts.clear()
    calibrate.fit_engines(fitted, rows, default_catalog(), rounds=1, refine=False)
    assert starts["vllm"].allreduce_overhead_s == 3e-6


def test_fit_engines_through_the_engine_model_leaves_the_burst_share_to_the_analytic_solver(monkeypatch):
    import dataclasses

    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.perf.calibration import default_calibration
    from gpuyield.edges.perf import calibrate
    from gpuyield.errors import ConfigError

    rows = _vllm_rows(30)
    calls: list[tuple[str, tuple[str, ...], str]] = []

    def record(cal, engines, key, start, sub, lookups_, names, rounds, log, method="analytic"):
        calls.append((key, tuple(names), method))
        return dataclasses.replace(start, source=f"fitted on {len(sub)} end-to-end rows (loss 0.1{len(calls)})")

    monkeypatch.setattr(calibrate, "_fit_group", record)
    base = dataclasses.replace(default_calibration(), corrections=None)
    out = calibrate.fit_engines(base, rows, default_catalog(), rounds=1, refine=False, method="sim")
    family = [c for c in calls if c[0] == "vllm"]
    assert family[0][2] == "sim" and "ttft_sync_weight" not in family[0][1] and "prefill_scale" in family[0][1]
    assert family[1] == ("vllm", ("ttft_sync_weight",), "analytic")
    assert [c[2] for c in calls if c[0] == "vllm:disagg"] == ["analytic"]
    assert "ttft_sync_weight" in out.engines["vllm"].source
    with pytest.raises(ConfigError, match="fit method"):
        calibrate.fit_engines(base, rows, default_catalog(), method="exact")


def test_the_engines_own_all_reduce_tables_are_read_per_family_and_group_size(tmp_path):
    """custom_allreduce_perf: the newest version per engine family, CUDA-graph rows where the table has them,
    message_size in 16-bit elements (2 bytes each), latency in ms; other frameworks' tables are not engines'."""
    _tree(tmp_path)
    comm = tmp_path / "data" / "toy" / "comm"
    cols = ["framework", "version", "kernel_source", "allreduce_dtype", "num_gpus", "message_size", "latency"]
    rows = []
    for n in (2, 8):
        for size in (128, 4096, 1 << 20):
            graph_us = (4.0 if n == 2 else 8.0) + size * 2 / 100e3  # 100 kB per us beyond the latency
            rows.append(["vLLM", "0.2", "vLLM_custom_graph", "bfloat16", n, size, graph_us / 1e3])
            rows.append(["vLLM", "0.2", "vLLM_custom_eager", "bfloat16", n, size, 5 * graph_us / 1e3])
    # a float32 row is not a 16-bit all-reduce; group 4 has eager rows only (kept: no graph rows to prefer); a dip
    # at a larger size is taken out (the lower envelope)
    rows.append(["vLLM", "0.2", "vLLM_custom_graph", "float32", 2, 128, 1e-6])
    rows += [["vLLM", "0.2", "vLLM_custom_eager", "bfloat16", 4, size, us / 1e3]
             for size, us in ((128, 20.0), (4096, 30.0), (1 << 20, 25.0))]  # fmt: skip
    _write(comm / "vllm" / "0.2" / "custom_allreduce_perf.csv", cols, rows)
    # an older version of the same family is ignored
    _write(comm / "vllm" / "0.1" / "custom_allreduce_perf.csv", cols, [["vLLM", "0.1", "vLLM_custom_graph", "bfloat16", 4, 128, 1.0]])
    _write(
        comm / "trtllm" / "1.0" / "custom_allreduce_perf.csv",
        ["num_gpus", "message_size", "latency"],
        [[4, 128, 0.003], [4, 128, 0.005], [4, 1024, 0.006]],
    )
    _write(comm / "oneccl" / "1.0" / "custom_allreduce_perf.csv", ["num_gpus", "message_size", "latency"], [[2, 128, 0.01]])
    (dev,) = discover_devices(tmp_path)
    gc, counts = gpu_coefficients_from_tables(dev, read_system_yaml(dev.system_yaml))
    assert sorted(gc.allreduce_tables) == ["trtllm", "vllm"]
    vllm = gc.allreduce_tables["vllm"]
    assert sorted(vllm) == [2, 4, 8]
    assert vllm[4].seconds == pytest.approx((20e-6, 25e-6, 25e-6))  # eager rows, 30 us dip-corrected to 25
    assert vllm[2].sizes_bytes == (256.0, 8192.0, 2.0 * (1 << 20))
    assert vllm[2](256.0) == pytest.approx((4.0 + 256 / 100e3) * 1e-6)  # the graph rows, not the eager ones
    assert vllm[8](2.0 * (1 << 20)) == pytest.approx((8.0 + 2 * (1 << 20) / 100e3) * 1e-6)
    assert gc.allreduce_tables["trtllm"][4](256.0) == pytest.approx(4e-6)  # the median of repeats
    assert counts["custom_allreduce_rows"] == 6 + 3 + 3
    six = gc.allreduce_time("vllm:disagg", 6)  # between 4 and 8, in log space; a deployment mode is its family's
    assert six is not None and six.sizes_bytes[-1] == 2.0 * (1 << 20)
    w = 0.5849625007211562  # log(6 / 4) / log(8 / 4)
    assert six(256.0) == pytest.approx(20e-6 ** (1 - w) * ((8.0 + 256 / 100e3) * 1e-6) ** w)
    assert gc.allreduce_time("vllm", 16) is None and gc.allreduce_time("sglang", 2) is None


def test_nccl_tables_are_read_as_half_precision_bytes_per_operation_and_group_size(tmp_path):
    """nccl_perf: message_size counts elements of nccl_dtype; the half rows are kept and read at 2 bytes each
    (the int8 rows and alltoall are not read), as tables per operation and group size, and as the all-reduce fit's
    latency (median at most 128 KiB) and bus-bandwidth efficiency (the three largest messages)."""
    _tree(tmp_path)
    cols = ["framework", "version", "op_name", "nccl_dtype", "num_gpus", "message_size", "latency"]
    rows = []
    link = 100e9  # the toy system's intra_node_bw
    for op in ("all_gather", "all_reduce", "reduce_scatter", "alltoall"):
        for n in (2, 8):
            for elems in (256, 4096, 65536, 1 << 20, 1 << 24, 1 << 26, 1 << 27):
                nbytes = 2.0 * elems
                bus = 0.5 * link if op == "all_reduce" else link  # all-reduce: half the link, as bus bandwidth
                s = 10e-6 + nbytes * 2.0 * (n - 1) / n / bus
                rows.append(["NCCL", "2.0", op, "half", n, elems, s * 1e3])
                rows.append(["NCCL", "2.0", op, "int8", n, elems, 3 * s * 1e3])  # would drag the fit down
    _write(tmp_path / "data" / "toy" / "comm" / "nccl" / "2.0" / "nccl_perf.csv", cols, rows)
    (dev,) = discover_devices(tmp_path)
    gc, counts = gpu_coefficients_from_tables(dev, read_system_yaml(dev.system_yaml))
    assert sorted(gc.nccl_tables) == ["all_gather", "all_reduce", "reduce_scatter"]
    ag = gc.nccl_time("all_gather", 8)
    assert ag is not None and ag.sizes_bytes[0] == 512.0 and ag.sizes_bytes[-1] == 2.0 * (1 << 27)
    assert ag(2.0 * (1 << 20)) == pytest.approx(10e-6 + 2.0 * (1 << 20) * 2 * 7 / 8 / link)
    assert gc.nccl_time("all_reduce", 4) is not None and gc.nccl_time("all_reduce", 16) is None
    assert counts["nccl_table_rows"] == 3 * 2 * 7
    assert counts["allreduce_rows"] == 2 * 7  # the half all-reduce rows
    assert gc.allreduce_latency_s == pytest.approx(10e-6 + 2.0 * 4096 * 2 * 7 / 8 / (0.5 * link))  # median of 3
    # bus bandwidth of the largest half messages read as bytes: the fit's efficiency is 0.5 of the link (the
    # latency term takes a little)
    assert 0.49 < gc.allreduce_bw_eff <= 0.5


def test_an_nccl_table_without_a_dtype_column_is_read_whole_at_two_bytes_an_element(tmp_path):
    """A table without ``nccl_dtype`` (gpuyield profile writes none): every row counts, still 2 bytes an element."""
    _tree(tmp_path)
    rows = [[op, 4, elems, (5.0 + elems * 2 / 50e3) / 1e3]  # 5 us + 50 kB per us
            for op in ("all_gather", "reduce_scatter") for elems in (256, 1 << 16, 1 << 20)]  # fmt: skip
    _write(tmp_path / "data" / "toy" / "comm" / "nccl" / "1.0" / "nccl_perf.csv",
           ["op_name", "num_gpus", "message_size", "latency"], rows)  # fmt: skip
    (dev,) = discover_devices(tmp_path)
    gc, counts = gpu_coefficients_from_tables(dev, read_system_yaml(dev.system_yaml))
    rs = gc.nccl_time("reduce_scatter", 4)
    assert rs is not None and rs.sizes_bytes == (512.0, 2.0 * (1 << 16), 2.0 * (1 << 20))
    assert rs(2.0 * (1 << 20)) == pytest.approx((5.0 + 2.0 * (1 << 20) / 50e3) * 1e-6)
    assert gc.nccl_time("all_reduce", 4) is None and counts["nccl_table_rows"] == 6
    assert counts["allreduce_rows"] == 0  # no all-reduce rows: the fit keeps its defaults
