"""Where telemetry comes from: exposition files and directories, live ``/metrics`` endpoints, and a
Prometheus server's HTTP API (``/api/v1/query_range``).

Timestamps, in order of precedence: a sample's own timestamp; the ``# scrape at <ts>`` header before it;
for a file without either, a UTC time in its name (``scrape-01-20261122T060102Z.prom``: ``YYYYMMDDTHHMMSSZ``),
else the file's modification time; for a live endpoint, the time of the fetch.
A directory is one source (its files are successive scrapes of the same targets, read in name order).
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from gpuyield.edges.telemetry.exposition import ParseStats, SampleBuffer
from gpuyield.edges.telemetry.families import (
    ENGINE_COUNTERS,
    ENGINE_GAUGES,
    ENGINE_HISTOGRAMS,
    GATEWAY_COUNTERS,
    GPU_COUNTERS,
    GPU_GAUGES,
)
from gpuyield.errors import ConfigError, TelemetryError

__all__ = [
    "EXPOSITION_SUFFIXES",
    "PROMETHEUS_MAX_POINTS",
    "SourceStats",
    "fetch_text",
    "file_time_s",
    "parse_duration_s",
    "query_prometheus",
    "read_metrics",
    "relevant_metric_regex",
]

EXPOSITION_SUFFIXES = (".prom", ".txt", ".metrics", ".om")
PROMETHEUS_MAX_POINTS = 11_000  # Prometheus refuses query_range answers above 11,000 points per series
_USER_AGENT = "gpuyield-baseline"
_NAME_TIME_RE = re.compile(r"(\d{8}T\d{6}Z)")


@dataclass(frozen=True, slots=True)
class SourceStats:
    origin: str
    stats: ParseStats


def parse_duration_s(text: str, what: str = "--window") -> float:
    """``90``, ``15s``, ``5m``, ``24h``, ``7d``, ``1h30m`` → seconds; ConfigError naming ``what`` otherwise."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
    s = text.strip().lower()
    try:
        value = float(s)
        if value > 0 and math.isfinite(value):
            return value
    except ValueError:
        pass
    total, num = 0.0, ""
    i = 0
    while i < len(s):
        ch = s[i]
        if ch.isdigit() or ch == ".":
            num += ch
            i += 1
            continue
        unit = "ms" if s.startswith("ms", i) else ch
        if unit not in units or not num:
            raise ConfigError(f"{what} '{text}': expected a duration like 90s, 15m, 24h or 7d")
        total += float(num) * units[unit]
        num = ""
        i += len(unit)
    if num or total <= 0:
        raise ConfigError(f"{what} '{text}': expected a duration like 90s, 15m, 24h or 7d")
    return total


def fetch_text(url: str, *, timeout_s: float = 10.0) -> str:
    """GET ``url`` as text; TelemetryError naming the URL on any failure."""
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept": "text/plain;version=0.0.4"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return str(resp.read().decode("utf-8", errors="replace"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TelemetryError(f"cannot fetch {url}: {exc}") from None


def read_metrics(specs: Sequence[str], buffer: SampleBuffer, *, now_s: float | None = None) -> list[SourceStats]:
    """Read files, directories and URLs into ``buffer``; returns per-origin parse statistics."""
    out: list[SourceStats] = []
    for spec in specs:
        if spec.startswith(("http://", "https://")):
            fetched_at = time.time() if now_s is None else now_s
            text = fetch_text(spec)
            out.append(SourceStats(spec, buffer.add_text(text, source=spec, default_ts_s=fetched_at)))
            continue
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in EXPOSITION_SUFFIXES)
            if not files:
                raise ConfigError(f"--metrics {spec}: directory has no {'/'.join(EXPOSITION_SUFFIXES)} files")
            for f in files:
                out.append(SourceStats(str(f), _read_file(f, buffer, source=str(path))))
        elif path.is_file():
            out.append(SourceStats(str(path), _read_file(path, buffer, source=str(path))))
        else:
            raise ConfigError(f"--metrics {spec}: no such file, directory or http(s) URL")
    return out


def file_time_s(path: Path) -> float:
    """The scrape time a file stands for: a ``YYYYMMDDTHHMMSSZ`` stamp in its name, else its mtime."""
    m = _NAME_TIME_RE.search(path.name)
    if m:
        return datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    return path.stat().st_mtime


def _read_file(path: Path, buffer: SampleBuffer, *, source: str) -> ParseStats:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"--metrics {path}: cannot read ({exc.strerror})") from None
    return buffer.add_text(text, source=source, default_ts_s=file_time_s(path), origin=str(path))


def relevant_metric_regex() -> str:
    """A PromQL ``__name__`` regex matching every metric the baseline reads (histograms via suffixes)."""
    names: set[str] = set(GPU_GAUGES) | set(GPU_COUNTERS) | set(GATEWAY_COUNTERS) | {"vllm:cache_config_info"}
    for table in (ENGINE_COUNTERS, ENGINE_GAUGES):
        for group in table.values():
            names.update(group)
    for group in ENGINE_HISTOGRAMS.values():
        for n in group:
            names.update({f"{n}_bucket", f"{n}_sum", f"{n}_count"})
    return "|".join(sorted(n.replace(".", "\\\\.") for n in names))


def query_prometheus(
    base_url: str, *, window_s: float, end_s: float, buffer: SampleBuffer, step_s: float | None = None,
    timeout_s: float = 60.0,
) -> SourceStats:
    """Read ``[end - window, end]`` of every relevant series from a Prometheus server into ``buffer``."""
    step = step_s or max(15.0, math.ceil(window_s / (PROMETHEUS_MAX_POINTS - 1)))
    if window_s / step >= PROMETHEUS_MAX_POINTS:
        raise ConfigError(f"--window {window_s:g}s with step {step:g}s exceeds Prometheus' {PROMETHEUS_MAX_POINTS} points")
    params = urllib.parse.urlencode({
        "query": '{__name__=~"' + relevant_metric_regex() + '"}',
        "start": f"{end_s - window_s:.3f}",
        "end": f"{end_s:.3f}",
        "step": f"{step:g}",
    })
    url = base_url.rstrip("/") + "/api/v1/query_range?" + params
    text = fetch_text(url, timeout_s=timeout_s)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise TelemetryError(f"--prometheus {base_url}: query_range did not answer JSON") from None
    if doc.get("status") != "success":
        raise TelemetryError(f"--prometheus {base_url}: query_range failed: {doc.get('errorType')}: {doc.get('error')}")
    data = doc.get("data") or {}
    if data.get("resultType") != "matrix":
        raise TelemetryError(f"--prometheus {base_url}: expected a matrix result, got {data.get('resultType')!r}")
    stats = ParseStats(num_scrapes=0)
    for item in data.get("result", []):
        labels = dict(item.get("metric", {}))
        name = labels.pop("__name__", None)
        points = item.get("values", [])
        if not name or not points:
            stats.num_malformed += 1
            continue
        ts = np.array([float(p[0]) * 1000.0 for p in points]).round().astype(np.int64)
        vals = np.array([float(p[1]) for p in points], dtype=np.float64)
        buffer.add_series(name, labels, ts, vals, source=base_url)
        stats.num_samples += len(vals)
        stats.num_scrapes = max(stats.num_scrapes, len(vals))
    return SourceStats(base_url, stats)
