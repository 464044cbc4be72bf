"""benchmarks/perf_holdout_structure.py: ladder holes tell a split by rows from a split by whole sweeps."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "perf_holdout_structure.py"


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("perf_holdout_structure", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(n_sweeps: int = 40) -> list[dict[str, str]]:
    rows = []
    for s in range(n_sweeps):
        for c in (1, 2, 4, 8, 16, 32, 64):
            rows.append({"gpu": "h100_sxm", "num_gpus": "1", "model": f"m{s}", "engine": "vllm", "precision": "bf16",
                         "layout": "agg tp1", "tp": "1", "isl": "1024", "osl": "1024", "concurrency": str(c),
                         "num_requests": "", "_row": f"{s}-{c}"})  # fmt: skip
    return rows


def test_holes_count_missing_powers_of_two_inside_a_sweep() -> None:
    mod = _module()
    rows = _rows(2)
    assert mod.ladder_holes(rows) == (0, 14)
    gap = [r for r in rows if not (r["model"] == "m0" and r["concurrency"] in ("4", "8"))]
    assert mod.ladder_holes(gap) == (2, 14)
    # the ends are not holes: a sweep from 2 to 64 has six slots
    short = [r for r in rows if not (r["model"] == "m1" and r["concurrency"] == "1")]
    assert mod.ladder_holes(short) == (0, 13)


def test_a_row_split_leaves_holes_a_sweep_split_does_not() -> None:
    mod = _module()
    rows = _rows()
    by_row = mod.split(rows, lambda r: r["_row"], 0.2, seed=0)
    by_sweep = mod.split(rows, lambda r: r["model"], 0.2, seed=0)
    assert len(by_sweep) == 32 * 7
    assert mod.ladder_holes(by_sweep)[0] == 0
    assert mod.ladder_holes(by_row)[0] > 10  # about a fifth of the interior slots


def test_the_script_reports_a_bad_file_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("gpu,model\nh100,m\n")
    out = subprocess.run([sys.executable, str(SCRIPT), "--measurements", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "missing column" in out.stderr


def test_repeat_groups_count_whole_and_broken_rich_groups() -> None:
    mod = _module()
    base = {k: "x" for k in mod.INPUTS} | {"layout": "agg tp1"}
    # one input group of six rows: values a, a, b, b, c, d -> shape (2, 2, 1, 1)
    group = [base | {"ttft_ms": v, "tpot_ms": "1"} for v in ("a", "a", "b", "b", "c", "d")]
    rich = mod.rich_shapes(group)
    assert rich["agg"] == {(2, 2, 1, 1)} and rich["disagg"] == set()
    assert mod.repeat_groups(group, rich)["agg"] == (1, 0)
    # one row dropped: (2, 1, 1, 1) or (2, 2, 1), one row short of the rich shape
    assert mod.repeat_groups(group[1:], rich)["agg"] == (0, 1)
    assert mod.repeat_groups(group[:-1], rich)["agg"] == (0, 1)
    # two rows dropped is neither
    assert mod.repeat_groups(group[2:], rich)["agg"] == (0, 0)
