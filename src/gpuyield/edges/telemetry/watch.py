"""``gpuyield baseline watch``: scrape ``/metrics`` endpoints into the DuckDB store, for users without
Prometheus.

Targets file (YAML)::

    targets:
      - url: http://10.0.0.5:9400/metrics          # dcgm-exporter
        labels: {host: gpu-node-1}                 # optional target labels added to every sample
      - url: http://10.0.0.5:8000/metrics          # vLLM
        labels: {pod: vllm-llama-0, namespace: serving}

Target labels play the part of Prometheus' ``pod``/``namespace``/``instance`` labels: give an engine the
pod that DCGM reports on its GPU and the two are joined. Every tick scrapes all targets (concurrently),
parses them into one batch and appends it to the store; a failed target is reported and retried next tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpuyield.edges.io.yaml_file import read_yaml
from gpuyield.edges.storage.store import TelemetryStore
from gpuyield.edges.telemetry.exposition import SampleBuffer
from gpuyield.edges.telemetry.sources import fetch_text
from gpuyield.errors import ConfigError, TelemetryError

__all__ = ["Target", "TargetsFile", "WatchReport", "load_targets", "watch"]


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://")
    labels: dict[str, str] = Field(default_factory=dict)


class TargetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: list[Target] = Field(min_length=1)


def load_targets(path: str | Path) -> TargetsFile:
    p = Path(path)
    doc = read_yaml(p, "--targets")
    try:
        return TargetsFile.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"--targets {p}: field '{loc}': {err['msg']}") from None


@dataclass(slots=True)
class WatchReport:
    num_ticks: int = 0
    num_samples: int = 0
    num_malformed: int = 0
    errors: list[str] = field(default_factory=list)


def watch(
    targets: TargetsFile,
    store: TelemetryStore,
    *,
    every_s: float,
    duration_s: float | None,
    on_tick: Callable[[int, int, list[str]], None] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    timeout_s: float | None = None,
) -> WatchReport:
    """Scrape every ``every_s`` seconds until ``duration_s`` has passed (or forever; Ctrl-C stops)."""
    report = WatchReport()
    start = clock()
    per_target_timeout = timeout_s if timeout_s is not None else max(1.0, min(10.0, every_s * 0.8))

    def one(t: Target) -> tuple[Target, str | None, str | None]:
        try:
            return t, fetch_text(t.url, timeout_s=per_target_timeout), None
        except TelemetryError as exc:
            return t, None, str(exc)

    with ThreadPoolExecutor(max_workers=min(8, len(targets.targets))) as pool:
        tick = 0
        while True:
            tick_start = start + tick * every_s
            now = clock()
            if duration_s is not None and tick * every_s > duration_s + 1e-6:
                break
            if tick_start > now:
                sleep(tick_start - now)
            scraped_at = clock()
            buffer = SampleBuffer()
            sources = []
            errors = []
            for t, text, err in pool.map(one, targets.targets):
                if err is not None or text is None:
                    errors.append(err or f"{t.url}: empty answer")
                    continue
                sources.append((t.url, buffer.add_text(text, source=t.url, default_ts_s=scraped_at,
                                                       target_labels=dict(t.labels))))
            store.ingest(buffer, sources=sources)
            report.num_ticks += 1
            report.num_samples += len(buffer)
            report.num_malformed += buffer.stats.num_malformed
            report.errors.extend(errors)
            if on_tick is not None:
                on_tick(tick, len(buffer), errors)
            tick += 1
    return report
