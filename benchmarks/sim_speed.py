"""Simulator speed: simulated requests per CPU-second on the issue-4 example, against vllm-sr-sim.

    python benchmarks/sim_speed.py [--repeats 3] [--skip-peer] [--skip-million] [--json out.json]

1. Capacity probe: replay ``builtin:azure-conv`` (19,366 requests) on ``examples/deployments/llama8b-h100-x8.yaml``
   heavily overloaded; the completed-request rate is the fleet's capacity. The timed runs use the rate scale that
   offers 80 % of it (prefix caching and chunked prefill on, as in the example).
2. gpuyield: ``simulate()`` ``--repeats`` times; requests / CPU second (``time.process_time``, one core: the
   simulator is single-threaded) and wall time.
3. Peer, same process, same requests (the rate-scaled arrival times and lengths): vllm-sr-sim's ``Fleet.run`` on
   one pool of 8 H100s (its own H100 profile and length router); its Azure loader cannot parse the trace's
   datetime timestamps, so requests are handed over as its ``Request`` objects.
   With ``--peer-recipe`` also the recipe command from ``/work/shared/recipes/README.md`` (its CLI, 200k requests
   sampled from its Azure CDF, 24 GPUs), timed as a process (CPU time of the child), for the issue's reference.
4. Memory for 1 M requests: a child process tiles the trace to 1,000,000 requests (same rate) and simulates it;
   its peak RSS (``ru_maxrss``) and its RSS before simulating are reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENT = ROOT / "examples" / "deployments" / "llama8b-h100-x8.yaml"


def _setup():  # type: ignore[no-untyped-def]
    from gpuyield.core.catalog import default_catalog
    from gpuyield.edges.io.deployment import load_deployment
    from gpuyield.edges.io.traces import load_workload

    return load_deployment(DEPLOYMENT), load_workload("builtin:azure-conv"), default_catalog()


def capacity_rate_scale(dep, w, cat, load: float = 0.8) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    from gpuyield.core.sim.simulate import simulate

    base_rate = len(w) / float(w.arrival_s[-1] - w.arrival_s[0])
    res = simulate(dep, w, cat, rate_scale=100.0)
    capacity = res.summary["completed"] / res.summary["duration_s"]
    return load * capacity / base_rate, capacity


def run_ours(dep, w, cat, rate_scale: float, repeats: int) -> dict:  # type: ignore[no-untyped-def]
    from gpuyield.core.sim.simulate import simulate

    cpu, wall = [], []
    summary = None
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        res = simulate(dep, w, cat, rate_scale=rate_scale)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        summary = res.summary
    assert summary is not None
    n = len(w)
    return {
        "requests": n,
        "cpu_s": cpu,
        "wall_s": wall,
        "req_per_cpu_s_best": n / min(cpu),
        "req_per_cpu_s_median": n / statistics.median(cpu),
        "req_per_wall_s_best": n / min(wall),
        "completed": summary["completed"],
        "throughput_output_tok_s": summary["throughput_output_tok_s"],
        "ttft_p99_ms": summary["ttft_ms"]["p99"],
        "tpot_p99_ms": summary["tpot_ms"]["p99"],
        "preemptions": summary["preemptions"],
        "busy_frac_mean": statistics.mean(r["busy_frac"] for r in summary["per_replica"]),
        "events": summary["sim_events"],
    }


def run_peer(w, rate_scale: float, repeats: int) -> dict | None:  # type: ignore[no-untyped-def]
    try:
        from fleet_sim import __version__ as peer_version
        from fleet_sim.core.fleet import Fleet, FleetConfig, PoolConfig
        from fleet_sim.core.request import Request
        from fleet_sim.gpu_profiles.profiles import H100_80GB
    except ImportError:
        return None
    from gpuyield.core.workload.transforms import rate_scale as scale

    ws = scale(w, rate_scale)
    rows = list(zip(ws.arrival_s.tolist(), ws.input_tokens.tolist(), ws.output_tokens.tolist(), strict=True))
    cpu, wall = [], []
    summary = {}
    for _ in range(repeats):
        arr = [(t, Request(req_id=i, arrival_time=t, l_in=a, l_out=b)) for i, (t, a, b) in enumerate(rows)]
        fc = FleetConfig(pools=[PoolConfig("h100", H100_80GB, 8, 8192)], router_type="LengthRouter",
                         router_kwargs={"threshold": 8192})  # fmt: skip
        c0, w0 = time.process_time(), time.perf_counter()
        res = Fleet(fc).run(arr, verbose=False)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        summary = res.summary(500)
    n = len(rows)
    return {
        "version": peer_version,
        "requests": n,
        "cpu_s": cpu,
        "wall_s": wall,
        "req_per_cpu_s_best": n / min(cpu),
        "req_per_cpu_s_median": n / statistics.median(cpu),
        "completed": summary.get("total_completed"),
        "p99_ttft_ms": summary.get("fleet_p99_ttft_ms"),
        "mean_utilisation": summary.get("mean_utilisation"),
    }


_CHILD = r"""
import json, resource, sys, time
import numpy as np
from gpuyield.core.catalog import default_catalog
from gpuyield.core.workload.transforms import merge, rate_scale, slice_index
from gpuyield.edges.io.deployment import load_deployment
from gpuyield.edges.io.traces import load_workload
from gpuyield.core.sim.simulate import simulate
n_target, rs, dep_path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
w = rate_scale(load_workload("builtin:azure-conv"), rs)
span = float(w.arrival_s[-1]) + 1.0
copies = -(-n_target // len(w))
big = slice_index(merge([w] * copies, offsets_s=[k * span for k in range(copies)]), 0, n_target)
del w
rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
c0 = time.process_time()
res = simulate(load_deployment(dep_path), big, default_catalog())
cpu = time.process_time() - c0
print(json.dumps({"requests": len(big), "completed": res.summary["completed"], "cpu_s": cpu,
                  "rss_before_sim_mib": rss_before_kb / 1024,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_million(rate_scale: float, n: int = 1_000_000) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(rate_scale), str(DEPLOYMENT)],
                         capture_output=True, text=True, check=True, timeout=900)  # fmt: skip
    d = json.loads(out.stdout.strip().splitlines()[-1])
    d["req_per_cpu_s"] = d["requests"] / d["cpu_s"]
    return d


def run_peer_recipe() -> dict | None:
    import shutil

    exe = shutil.which("vllm-sr-sim")
    if exe is None:
        return None
    import fleet_sim

    cdf = Path(fleet_sim.__file__).parent / "data" / "azure_cdf.json"
    n = 200_000
    cmd = [exe, "simulate", "--cdf", str(cdf), "--lam", "200", "--slo", "500", "--b-short", "6144", "--n-s", "19",
           "--n-l", "5", "--gamma", "1.3", "--n-req", str(n)]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900)
    wall = time.perf_counter() - w0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"command": " ".join(cmd), "requests": n, "cpu_s": cpu, "wall_s": wall, "req_per_cpu_s": n / cpu,
            "req_per_wall_s": n / wall}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--skip-million", action="store_true")
    ap.add_argument("--peer-recipe", action="store_true", help="also time vllm-sr-sim's recipe CLI run (~40 s)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()

    dep, w, cat = _setup()
    rs, cap = capacity_rate_scale(dep, w, cat)
    print(f"capacity {cap:.1f} req/s -> rate scale {rs:.2f} (80 %)", flush=True)
    ours = run_ours(dep, w, cat, rs, args.repeats)
    print(f"gpuyield: {ours['req_per_cpu_s_best']:,.0f} req/CPU-s best, {ours['req_per_cpu_s_median']:,.0f} median", flush=True)
    peer = None if args.skip_peer else run_peer(w, rs, args.repeats)
    if peer:
        print(f"vllm-sr-sim {peer['version']}: {peer['req_per_cpu_s_best']:,.0f} req/CPU-s best", flush=True)
    recipe = run_peer_recipe() if args.peer_recipe else None
    if recipe:
        print(f"vllm-sr-sim recipe CLI: {recipe['req_per_cpu_s']:,.0f} req/CPU-s ({recipe['wall_s']:.1f} s wall)", flush=True)
    million = None if args.skip_million else run_million(rs)
    if million:
        print(f"1M requests: {million['req_per_cpu_s']:,.0f} req/CPU-s, peak RSS {million['peak_rss_mib']:.0f} MiB "
              f"({million['rss_before_sim_mib']:.0f} MiB before simulating)", flush=True)  # fmt: skip
    result = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "python": platform.python_version(),
        "load_average_1m": __import__("os").getloadavg()[0],
        "capacity_req_s": cap,
        "rate_scale": rs,
        "gpuyield": ours,
        "vllm_sr_sim": peer,
        "vllm_sr_sim_recipe_cli": recipe,
        "million": million,
        "ratio_best": (ours["req_per_cpu_s_best"] / peer["req_per_cpu_s_best"]) if peer else None,
        "max_rss_this_process_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
