"""Time ``gpuyield validate`` on 5,000 distinct rows (goal: <= 60 s on the 2-core CI machine).

The training CSV has 4,571 rows; 429 more distinct rows are made by shifting the concurrency of the first
429 rows by one, so the solver's per-row cache cannot help. Runs the real CLI in a subprocess.

    python benchmarks/perf_validate_speed.py --measurements ../shared/data/measurements/e2e_train.csv
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measurements", required=True)
    ap.add_argument("--rows", type=int, default=5000)
    args = ap.parse_args()
    with open(args.measurements, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        rows = list(reader)
    extra = []
    for r in rows:
        if len(rows) + len(extra) >= args.rows:
            break
        if r["concurrency"].isdigit():
            extra.append({**r, "concurrency": str(int(r["concurrency"]) + 1)})
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rows.csv"
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            w.writerows(rows + extra)
        t0 = time.perf_counter()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "gpuyield.edges.cli.main",
                "validate",
                "--measurements",
                str(path),
                "--report",
                str(Path(d) / "r.html"),
                "--json",
                str(Path(d) / "r.json"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - t0
        print(f"rows={len(rows) + len(extra)} exit={out.returncode} wall_s={elapsed:.1f}")
        if out.returncode:
            print(out.stderr[-2000:])


if __name__ == "__main__":
    main()
