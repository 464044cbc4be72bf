"""How `gpuyield profile` writes into a directory that already holds a profile, and keeps to its budget."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from gpuyield.edges.perf.profiler import _GEMM_COLS, _check_same_dtype, _write
from gpuyield.errors import ConfigError


def _row(version: str, m: int, n: int, lat: float, dtype: str = "float32") -> tuple[object, ...]:
    return ("TORCH", version, "cpu", "gemm", "torch.nn.functional.linear", dtype, m, n, 256, lat)


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_rows_of_an_older_torch_version_and_another_column_order_are_carried_forward(tmp_path):
    base = tmp_path / "data" / "cpu" / "gemm" / "torch"
    old = base / "2.12.0" / "gemm_perf.csv"
    old.parent.mkdir(parents=True)
    cols = list(reversed(_GEMM_COLS))  # written by hand, columns in another order
    with open(old, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in (_row("2.12.0", 1, 512, 0.5), _row("2.12.0", 8, 512, 0.9)):
            w.writerow(list(reversed(r)))
    new = base / "2.13.0" / "gemm_perf.csv"
    kept = _write(new, _GEMM_COLS, [_row("2.13.0", 8, 512, 0.7)])  # re-measures one of the two shapes
    assert kept == 1
    rows = _read(new)
    assert {(r["m"], r["latency"]) for r in rows} == {("1", "0.5"), ("8", "0.7")}  # the new timing wins
    # running again keeps everything once
    assert _write(new, _GEMM_COLS, [_row("2.13.0", 16, 512, 1.1)]) == 2
    assert len(_read(new)) == 3


def test_another_dtype_in_any_version_directory_is_refused(tmp_path):
    dev = tmp_path / "data" / "cpu"
    _write(dev / "gemm" / "torch" / "2.12.0" / "gemm_perf.csv", _GEMM_COLS, [_row("2.12.0", 1, 512, 0.5, "bfloat16")])
    with pytest.raises(ConfigError, match="would mix"):
        _check_same_dtype(dev, "torch", "float32")
    _check_same_dtype(dev, "torch", "bfloat16")  # the same dtype adds up
    # another backend's kernels in the same device directory: refused whatever the dtype
    with pytest.raises(ConfigError, match="already holds a torch profile of this device; profiling numpy"):
        _check_same_dtype(dev, "numpy", "bfloat16")


def test_a_shape_that_would_overrun_the_budget_is_skipped() -> None:
    """The profiler predicts a kernel's time (warm-up + repeats at the measured roofline, plus filling its inputs)
    and skips it when it would end past the deadline, so one wide model's large shapes cannot overrun the budget."""
    import time

    from gpuyield.edges.perf.profiler import _would_overrun

    now = time.perf_counter()
    # 1 TFLOP at 1 TFLOP/s, 5 repeats: about 6 s
    assert _would_overrun(now + 5.0, 1e12, 0.0, 1e12, 1e11, 5)
    assert not _would_overrun(now + 7.0, 1e12, 0.0, 1e12, 1e11, 5)
    # memory-bound: 10 GB at 100 GB/s, 5 repeats: 0.6 s; filling the inputs adds its own time
    assert not _would_overrun(now + 1.0, 0.0, 1e10, 1e12, 1e11, 5)
    assert _would_overrun(now + 1.0, 0.0, 1e10, 1e12, 1e11, 5, setup_s=0.5)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_profiling_a_wide_model_keeps_to_its_budget(tmp_path, backend) -> None:
    """DeepSeek-V4-Flash's 64 query heads on one 512-wide KV head: its long prefills and batch-16 decode inputs
    (gigabytes on the CPU) used to run the profile past --budget-s and leave decode attention unmeasured."""
    if backend == "torch":
        pytest.importorskip("torch")
    from gpuyield.core.catalog import default_catalog
    from gpuyield.edges.perf.profiler import run_profile

    res = run_profile(tmp_path / "prof", device="cpu", model=default_catalog().model("deepseek-ai/DeepSeek-V4-Flash"),
                      budget_s=8.0, backend=backend)  # fmt: skip
    assert res["elapsed_s"] < 8.0 * 1.25  # a busy machine slows kernels below the rates measured at the start
    assert res["generation_attention_rows"] > 0 and res["context_attention_rows"] > 0


def test_numpy_attention_is_softmax_attention() -> None:
    """The numpy backend times a real attention: its output matches softmax(q k^T / sqrt(d)) v computed in float64,
    causal with query i seeing keys 0..i (top-left, as torch's is_causal), for prefill, decode and unequal lengths."""
    import numpy as np

    from gpuyield.edges.perf.profiler import _Numpy

    kb = _Numpy("cpu", "fp32")

    def reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool) -> np.ndarray:
        q, k, v = (x.astype(np.float64) for x in (q, k, v))
        s = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
        if causal:
            i, j = np.indices(s.shape[-2:])
            s = np.where(j > i, -np.inf, s)
        w = np.exp(s - s.max(axis=-1, keepdims=True))
        return (w / w.sum(axis=-1, keepdims=True)) @ v

    for (lq, lk, causal) in ((64, 64, True), (1, 300, False), (16, 48, True), (8, 8, False)):
        q, k, v = kb.randn(2, 3, lq, 32), kb.randn(2, 3, lk, 32), kb.randn(2, 3, lk, 24)
        got = kb.sdpa(q, k, v, causal)
        assert got.shape == (2, 3, lq, 24) and got.dtype == np.float32
        np.testing.assert_allclose(got, reference(q, k, v, causal), rtol=1e-4, atol=1e-5)
    assert kb.linear(kb.randn(4, 8), kb.randn(16, 8)).shape == (4, 16)  # y = x W^T, as torch's linear
