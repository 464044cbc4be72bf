"""What a held-out file drawn from the same study as a measurement CSV can look like.

Which cross-validation figure predicts the error on held-out measurements depends on how they were split off:
single rows at random (then a held-out row's verbatim twin is often in the training file, and repeats of one
operating point straddle the split), whole operating points, whole concurrency sweeps, or coarser units. The
training file itself tells them apart, because every split leaves its mark on what stays:

1. **Concurrency ladders.** Studies sweep concurrency in powers of two. A split by rows or by operating points
   punches holes into the ladders that remain; a split by whole sweeps or deployments does not.
2. **Repeat groups.** Rows with the same inputs (every CSV column but the measured ones) form a group: some
   values repeated verbatim, some distinct (another run, or another unrecorded deployment). A split by rows
   breaks groups apart, so for every intact group of a rich shape (e.g. two verbatim pairs and two singles)
   there are reduced ones (one pair broken).

The script measures both on the file, then applies each kind of split (``--holdout`` of the units, seeded) to
the file itself and measures them again: if the file were what is left after such a split, its statistics
would look like the split ones, not like the file's own. Pure counting; no model involved.

    python benchmarks/perf_holdout_structure.py --measurements ../shared/data/measurements/e2e_train.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

INPUTS = ("gpu", "num_gpus", "model", "engine", "precision", "layout", "tp", "isl", "osl", "concurrency", "num_requests")  # an operating point
SWEEP = ("gpu", "num_gpus", "model", "engine", "precision", "layout", "tp", "isl", "osl")
DEPLOYMENT = ("gpu", "num_gpus", "model", "engine", "precision", "layout", "tp")

Row = dict[str, str]


def ladder_holes(rows: Sequence[Row]) -> tuple[int, int]:
    """(missing, slots): power-of-two concurrencies missing between the lowest and highest measured one, over
    aggregated sweeps with at least three power-of-two points."""
    by: dict[tuple[str, ...], set[int]] = defaultdict(set)
    for r in rows:
        c = r["concurrency"].strip()
        if r["layout"].strip().lower().startswith("agg") and c.replace(".", "", 1).isdigit():
            by[tuple(r[k] for k in SWEEP)].add(int(float(c)))
    missing = slots = 0
    for cs in by.values():
        p2 = sorted(c for c in cs if c > 0 and c & (c - 1) == 0)
        if len(p2) < 3:
            continue
        ladder = [2**i for i in range(int(math.log2(p2[0])), int(math.log2(p2[-1])) + 1)]
        slots += len(ladder)
        missing += sum(1 for c in ladder if c not in cs)
    return missing, slots


Shapes = dict[str, set[tuple[int, ...]]]


def _shapes(rows: Sequence[Row]) -> dict[str, Counter[tuple[int, ...]]]:
    """Per layout kind, how many input groups have each shape (the multiplicities of a group's distinct
    measured (TTFT, TPOT) values, largest first)."""
    groups: dict[tuple[str, ...], Counter[tuple[str, str]]] = defaultdict(Counter)
    for r in rows:
        groups[tuple(r[k] for k in INPUTS)][(r["ttft_ms"], r["tpot_ms"])] += 1
    out: dict[str, Counter[tuple[int, ...]]] = {"agg": Counter(), "disagg": Counter()}
    for key, g in groups.items():
        kind = "agg" if key[INPUTS.index("layout")].strip().lower().startswith("agg") else "disagg"
        out[kind][tuple(sorted(g.values(), reverse=True))] += 1
    return out


def rich_shapes(rows: Sequence[Row]) -> Shapes:
    """Per kind, the group shapes of five rows or more in ``rows`` (the reference the splits are counted by)."""
    return {kind: {x for x in c if sum(x) >= 5} for kind, c in _shapes(rows).items()}


def repeat_groups(rows: Sequence[Row], rich: Shapes) -> dict[str, tuple[int, int]]:
    """Per kind: (groups with one of the ``rich`` shapes, groups one row short of one of them)."""
    out: dict[str, tuple[int, int]] = {}
    for kind, c in _shapes(rows).items():
        short: set[tuple[int, ...]] = set()
        for x in rich.get(kind, set()):
            for i in range(len(x)):
                t = list(x)
                t[i] -= 1
                short.add(tuple(sorted((v for v in t if v), reverse=True)))
        short -= rich.get(kind, set())
        out[kind] = (sum(c[x] for x in rich.get(kind, set())), sum(c[x] for x in short))
    return out


def split(rows: Sequence[Row], unit: Callable[[Row], object], holdout: float, seed: int) -> list[Row]:
    units = sorted({str(unit(r)) for r in rows})
    rng = random.Random(seed)
    held = set(rng.sample(units, round(holdout * len(units))))
    return [r for r in rows if str(unit(r)) not in held]


def _groups_text(rg: dict[str, tuple[float, float]]) -> str:
    return "  the file's repeat groups of >= 5 rows (one row short): " + ", ".join(
        f"{k} {a:.0f} ({b:.0f})" for k, (a, b) in rg.items()
    )


def describe(label: str, rows: Sequence[Row], rich: Shapes) -> str:
    missing, slots = ladder_holes(rows)
    return (
        f"{label:<34} rows {len(rows):>5}  ladder holes {missing:>4} / {slots:<5} ({100 * missing / max(slots, 1):4.1f} %)"
        + _groups_text({k: (float(a), float(b)) for k, (a, b) in repeat_groups(rows, rich).items()})
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measurements", required=True)
    ap.add_argument("--holdout", type=float, default=0.2, help="share of units a simulated split holds out")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    if not 0.0 < args.holdout < 1.0:
        ap.error("--holdout must be between 0 and 1")
    with Path(args.measurements).open(newline="") as fh:
        rows = [{**r, "_row": str(i)} for i, r in enumerate(csv.DictReader(fh))]
    missing = [k for k in (*INPUTS, "ttft_ms", "tpot_ms") if not rows or k not in rows[0]]
    if missing:
        ap.error(f"{args.measurements}: missing column(s) {', '.join(missing)}")
    rich = rich_shapes(rows)
    print(describe("the file as it is", rows, rich))
    print("the file after a further split of", f"{args.holdout:.0%}", "of its units (mean over seeds):")
    units: dict[str, Callable[[Row], object]] = {
        "single rows": lambda r: r["_row"],
        "operating points (inputs)": lambda r: tuple(r[k] for k in INPUTS),
        "concurrency sweeps": lambda r: tuple(r[k] for k in SWEEP),
        "deployments": lambda r: tuple(r[k] for k in DEPLOYMENT),
    }
    for name, unit in units.items():
        kept = [split(rows, unit, args.holdout, s) for s in range(args.seeds)]
        stats = [ladder_holes(k) for k in kept]
        m = sum(h[0] for h in stats) / len(stats)
        sl = sum(h[1] for h in stats) / len(stats)
        rgs = [repeat_groups(k, rich) for k in kept]
        rg = {kind: (sum(g[kind][0] for g in rgs) / len(rgs), sum(g[kind][1] for g in rgs) / len(rgs)) for kind in rgs[0]}
        print(f"  {name:<32} ladder holes {m:6.0f} / {sl:<5.0f} ({100 * m / max(sl, 1):4.1f} %)" + _groups_text(rg))


if __name__ == "__main__":
    main()
