"""scripts/refresh_shipped_corrections.py: settings changes are checked before anything is rebuilt or written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "args",
    [["--set", "same_point_weight=abc", "--why", "x"], ["--set", "slope_ridge=1"], ["--why", "no settings"]],
)
def test_refresh_script_refuses_bad_settings_before_writing(args, tmp_path):
    script = ROOT / "scripts" / "refresh_shipped_corrections.py"
    shipped = ROOT / "src/gpuyield/core/perf/data/calibration.yaml"
    before = shipped.read_bytes()
    # a CSV that does not exist: even a refusal that came too late could not rebuild (and write) anything
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "none.csv"), *args], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "--set and --why go together" in r.stderr or "takes a number" in r.stderr
    assert shipped.read_bytes() == before
