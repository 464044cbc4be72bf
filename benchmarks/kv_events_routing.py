"""Prefix routing on the engines' exact cache view (`router.kv_events: true`) vs the router's guess, simulated.

    python benchmarks/kv_events_routing.py [RATE_SCALE [POLICY]]      (POLICY: prefix_affinity (default) or cost)

8 x H100 replicas of Llama-3.1-8B with prefix caching and gpu_memory_utilization 0.5 (evictions), the built-in
Mooncake-synthetic trace, seed 1. Prints one JSON line per setting (prefix-cache hit rate, TTFT p50/p99).
"""

from __future__ import annotations

import json
import sys
import time

from gpuyield.core.catalog import default_catalog
from gpuyield.core.sim.deployment import parse_deployment
from gpuyield.core.sim.simulate import simulate
from gpuyield.core.workload.transforms import rate_scale
from gpuyield.edges.io.traces import load_workload


def main() -> None:
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    policy = sys.argv[2] if len(sys.argv) > 2 else "prefix_affinity"
    cat = default_catalog()
    w = rate_scale(load_workload("builtin:mooncake-synthetic"), scale)
    for kv_events in (False, True):
        pool = {"name": "p", "replicas": 8, "gpu": "h100_sxm", "model": "meta-llama/Llama-3.1-8B",
                "engine": {"enable_prefix_caching": True, "gpu_memory_utilization": 0.5}}  # fmt: skip
        dep = parse_deployment({"name": "kv-events", "pools": [pool],
                                "router": {"policy": policy, "kv_events": kv_events}})  # fmt: skip
        t0 = time.perf_counter()
        s = simulate(dep, w, cat, seed=1).summary
        print(json.dumps({"rate_scale": scale, "policy": policy, "kv_events": kv_events, "requests": len(w),
                          "prefix_cache_hit_rate": round(s["prefix_cache_hit_rate"], 4),
                          "ttft_p50_ms": round(s["ttft_ms"]["p50"]), "ttft_p99_ms": round(s["ttft_ms"]["p99"]),
                          "wall_s": round(time.perf_counter() - t0, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
