"""Benchmark: workload loading, synthesis, inspection and memory (gpuyield.edges.io.traces, core.workload).

Each case runs in a fresh Python process so its peak RSS is its own. Usage::

    python benchmarks/workload_io.py            # all cases, about a minute on 2 cores
    python benchmarks/workload_io.py --json out.json

Reported per case: wall and CPU seconds of the work alone (imports and test-data preparation excluded), requests,
requests per CPU second, Workload column bytes and the process's peak RSS (everything, including test data). On a
shared machine CPU seconds are the stable figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "traces"

_BIG_AZURE = """
import os, tempfile
from datetime import datetime, timedelta
src = (SHARED / "AzureLLMInferenceTrace_conv.csv").read_text().splitlines()[1:]
big = os.path.join(tempfile.mkdtemp(), "azure_1m.csv")
t_base = datetime(2023, 11, 16)
with open(big, "w") as f:
    f.write("TIMESTAMP,ContextTokens,GeneratedTokens\\n")
    k = 0
    while k < 1_000_000:
        for line in src:
            ts, a, b = line.split(",")
            f.write(f"{(t_base + timedelta(seconds=k * 0.18)).isoformat(sep=' ')},{a},{b}\\n")
            k += 1
            if k == 1_000_000:
                break
t0, c0 = time.perf_counter(), time.process_time()
"""

CASES: dict[str, str] = {
    "load builtin:azure-conv (19k)": """
w = load_workload("builtin:azure-conv")
""",
    "load builtin:mooncake-synthetic (4k, 122k blocks)": """
w = load_workload("builtin:mooncake-synthetic")
""",
    "load 1M-row Azure-format CSV": _BIG_AZURE + """
w = load_workload(big)
""",
    "peer: DuckDB read_csv of the same 1M-row CSV (no validation)": _BIG_AZURE + """
import duckdb
con = duckdb.connect()
d = con.sql(f"SELECT epoch(TIMESTAMP) AS t, ContextTokens AS i, GeneratedTokens AS o FROM read_csv('{big}', header=true) ORDER BY t").fetchnumpy()
class W:
    nbytes = sum(v.nbytes for v in d.values())
    def __len__(self): return len(d["t"])
w = W()
""",
    "load ServeGen deepseek-r1, full day": """
w = load_workload(str(SHARED / "servegen" / "deepseek-r1"), seed=0)
""",
    "synth 1M requests (ShareGPT lengths, gamma CV 2)": """
w = load_workload("builtin:sharegpt", arrival="gamma", rate=300.0, cv=2.0, num_requests=1_000_000, seed=0)
""",
    "synth 200k + system prompts + sessions (prefix hashing)": """
from gpuyield.core.workload import PrefixSpec, SessionSpec, SystemPromptSpec
spec = PrefixSpec(system_prompts=SystemPromptSpec(count=16, tokens=1024), sessions=SessionSpec(mean_turns=4))
w = load_workload("builtin:sharegpt", arrival="poisson", rate=100.0, num_requests=200_000, seed=0, prefix=spec)
""",
    "inspect 1M requests, 20M blocks": """
from gpuyield.core.workload import Workload, WorkloadMeta, inspect
rng = np.random.default_rng(0)
n = 1_000_000
per = rng.integers(1, 40, size=n)
offs = np.zeros(n + 1, dtype=np.int64)
np.cumsum(per, out=offs[1:])
vals = rng.integers(0, 2**62, size=int(offs[-1]))
vals[::3] = 7  # some reuse
w = Workload(arrival_s=np.arange(n) / 100.0, input_tokens=per * 512, output_tokens=np.full(n, 100),
             hash_offsets=offs, hash_values=vals, meta=WorkloadMeta("big"))
t0, c0 = time.perf_counter(), time.process_time()
s = inspect(w)
""",
    "request log round trip, 100k (JSONL write + read)": """
import os, tempfile
from gpuyield.edges.io.request_log import write_request_log
src = load_workload("builtin:sharegpt", arrival="poisson", rate=100.0, num_requests=100_000, seed=0)
p = os.path.join(tempfile.mkdtemp(), "log.jsonl")
t0, c0 = time.perf_counter(), time.process_time()
write_request_log(src, p)
w = load_workload(p)
""",
}

RUNNER = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
from gpuyield.edges.io.traces import load_workload
SHARED = Path({shared!r})
t0, c0 = time.perf_counter(), time.process_time()
{body}
dt, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({{"wall_s": dt, "cpu_s": cpu, "requests": len(w), "column_bytes": w.nbytes,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None, help="write results to this file")
    args = ap.parse_args()
    results = {}
    for name, body in CASES.items():
        out = subprocess.run(
            [sys.executable, "-c", RUNNER.format(body=body, shared=str(SHARED))], capture_output=True, text=True, timeout=600
        )
        if out.returncode != 0:
            print(f"{name}: FAILED\n{out.stderr}", file=sys.stderr)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["requests_per_s"] = r["requests"] / r["wall_s"]
        r["requests_per_cpu_s"] = r["requests"] / r["cpu_s"]
        results[name] = r
        print(
            f"{name:55s} {r['wall_s']:7.2f} s wall {r['cpu_s']:7.2f} s CPU  {r['requests']:>9,} req  "
            f"{r['requests_per_cpu_s']:>11,.0f} req/CPU-s  "
            f"columns {r['column_bytes'] / 2**20:7.1f} MiB  peak RSS {r['peak_rss_mb']:7.1f} MiB"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
