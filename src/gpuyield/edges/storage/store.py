"""The DuckDB telemetry store behind ``gpuyield baseline --db`` and ``gpuyield baseline watch``.

Tables (documented in docs/formats.md):

- ``series(series_id, metric, labels, source, metric_type)``: one row per distinct metric + label set
  (+ source file/URL); ``labels`` is a JSON object text with sorted keys.
- ``samples(series_id, ts_ms, value)``: one row per sample; ``ts_ms`` is epoch milliseconds.
- ``ingests(ingest_id, source, ingested_at, num_samples, num_malformed, num_scrapes, first_malformed)``.
- ``gpus(gpu_id, host, gpu_index, uuid, device_name, mig_profile, pod, namespace)`` and
  ``deployments(name, model_name, joined_by, engine_ids, gpu_ids)``: what the last ``baseline`` run derived.

Ingest is columnar: new series are appended in one statement, samples are inserted from NumPy arrays by
DuckDB's replacement scan (no per-row Python); ≥ 1 M samples per second on the project machine
(``benchmarks/baseline_ingest.py``). The same sample ingested twice is stored twice; readers keep the last
value per (series, timestamp).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuyield.edges.telemetry.exposition import ParseStats, SampleBuffer, SeriesKey
from gpuyield.errors import ConfigError

if TYPE_CHECKING:
    from gpuyield.core.baseline import BaselineInputs

__all__ = ["SCHEMA_SQL", "IngestResult", "TelemetryStore"]

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS series (
    series_id   INTEGER PRIMARY KEY,
    metric      VARCHAR NOT NULL,
    labels      VARCHAR NOT NULL,
    source      VARCHAR NOT NULL,
    metric_type VARCHAR
);
CREATE TABLE IF NOT EXISTS samples (
    series_id INTEGER NOT NULL,
    ts_ms     BIGINT NOT NULL,
    value     DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS ingests (
    ingest_id       INTEGER PRIMARY KEY,
    source          VARCHAR NOT NULL,
    ingested_at     TIMESTAMP WITH TIME ZONE NOT NULL,
    num_samples     BIGINT NOT NULL,
    num_malformed   BIGINT NOT NULL,
    num_scrapes     INTEGER NOT NULL,
    first_malformed VARCHAR
);
CREATE TABLE IF NOT EXISTS gpus (
    gpu_id      VARCHAR PRIMARY KEY,
    host        VARCHAR,
    gpu_index   VARCHAR,
    uuid        VARCHAR,
    device_name VARCHAR,
    mig_profile VARCHAR,
    pod         VARCHAR,
    namespace   VARCHAR
);
CREATE TABLE IF NOT EXISTS deployments (
    name       VARCHAR PRIMARY KEY,
    model_name VARCHAR,
    joined_by  VARCHAR NOT NULL,
    engine_ids VARCHAR[] NOT NULL,
    gpu_ids    VARCHAR[] NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class IngestResult:
    num_samples: int
    num_new_series: int
    num_malformed: int


def _family(metric: str) -> str:
    for suffix in ("_bucket", "_sum", "_count", "_total", "_created"):
        if metric.endswith(suffix):
            return metric[: -len(suffix)]
    return metric


class TelemetryStore:
    """A DuckDB file (or ``":memory:"``) holding raw samples. Use as a context manager."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        import duckdb

        self.path = str(path)
        try:
            self.con = duckdb.connect(self.path)
        except duckdb.Error as exc:
            raise ConfigError(f"--db {self.path}: cannot open as a DuckDB file ({exc})") from None
        self.con.execute(SCHEMA_SQL)
        self._ids: dict[tuple[str, str, str], int] = {
            (m, lab, src): int(i)
            for i, m, lab, src in self.con.execute("SELECT series_id, metric, labels, source FROM series").fetchall()
        }

    def __enter__(self) -> TelemetryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    # ------------------------------------------------------------------ writing
    def ingest(self, buffer: SampleBuffer, *, sources: Sequence[tuple[str, ParseStats]] = ()) -> IngestResult:
        """Append every sample of ``buffer``; ``sources`` (name, stats) rows go to ``ingests``."""
        sid, ts_ms, values = buffer.arrays()
        remap = np.empty(len(buffer.series), dtype=np.int32)
        new_rows: list[tuple[int, str, str, str, str | None]] = []
        next_id = max(self._ids.values(), default=-1) + 1
        for i, (key, source) in enumerate(zip(buffer.series, buffer.series_source, strict=True)):
            labels = json.dumps(dict(key.labels), sort_keys=True)
            ident = (key.name, labels, source)
            found = self._ids.get(ident)
            if found is None:
                found = next_id
                next_id += 1
                self._ids[ident] = found
                new_rows.append((found, key.name, labels, source, buffer.types.get(_family(key.name))
                                 or buffer.types.get(key.name)))
            remap[i] = found
        self.con.execute("BEGIN TRANSACTION")
        try:
            if new_rows:
                cols = list(zip(*new_rows, strict=True))
                new_series = {  # noqa: F841 - read by DuckDB's replacement scan
                    "series_id": np.asarray(cols[0], dtype=np.int32),
                    "metric": np.asarray(cols[1], dtype=object),
                    "labels": np.asarray(cols[2], dtype=object),
                    "source": np.asarray(cols[3], dtype=object),
                    "metric_type": np.asarray(cols[4], dtype=object),
                }
                self.con.execute("INSERT INTO series SELECT * FROM new_series")
            if len(sid):
                batch = {  # noqa: F841 - read by DuckDB's replacement scan
                    "series_id": remap[sid],
                    "ts_ms": ts_ms,
                    "value": values,
                }
                self.con.execute("INSERT INTO samples SELECT * FROM batch")
            now = datetime.now(UTC)
            base = self.con.execute("SELECT coalesce(max(ingest_id), -1) + 1 FROM ingests").fetchone()
            first_id = int(base[0]) if base else 0
            for k, (source, stats) in enumerate(sources):
                self.con.execute(
                    "INSERT INTO ingests VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [first_id + k, source, now, stats.num_samples, stats.num_malformed, stats.num_scrapes,
                     stats.malformed_examples[0] if stats.malformed_examples else None],
                )
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise
        return IngestResult(len(sid), len(new_rows), buffer.stats.num_malformed)

    def record_entities(self, inputs: BaselineInputs) -> None:
        """Replace ``gpus`` and ``deployments`` with what a baseline run derived."""
        self.con.execute("BEGIN TRANSACTION")
        self.con.execute("DELETE FROM gpus")
        self.con.execute("DELETE FROM deployments")
        if inputs.gpus:
            self.con.executemany(
                "INSERT INTO gpus VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [[g.gpu_id, g.host, g.index, g.uuid, g.device_name, g.mig_profile, g.pod, g.namespace]
                 for g in inputs.gpus],
            )
        if inputs.deployments:
            self.con.executemany(
                "INSERT INTO deployments VALUES (?, ?, ?, ?, ?)",
                [[d.name, d.model_name, d.joined_by, list(d.engine_ids), list(d.gpu_ids)] for d in inputs.deployments],
            )
        self.con.execute("COMMIT")

    # ------------------------------------------------------------------ reading
    def num_samples(self) -> int:
        row = self.con.execute("SELECT count(*) FROM samples").fetchone()
        return int(row[0]) if row else 0

    def load(
        self, *, start_ms: int | None = None, end_ms: int | None = None
    ) -> tuple[list[SeriesKey], list[str], np.ndarray, np.ndarray, np.ndarray]:
        """(series keys, their sources, series index, ts_ms, value) for samples in ``[start_ms, end_ms]``;
        the series index refers to positions in the returned key list."""
        rows = self.con.execute("SELECT series_id, metric, labels, source FROM series ORDER BY series_id").fetchall()
        keys = [SeriesKey(m, tuple(sorted(json.loads(lab).items()))) for _, m, lab, _ in rows]
        sources = [src for *_, src in rows]
        pos = {int(r[0]): i for i, r in enumerate(rows)}
        where, params = [], []
        if start_ms is not None:
            where.append("ts_ms >= ?")
            params.append(start_ms)
        if end_ms is not None:
            where.append("ts_ms <= ?")
            params.append(end_ms)
        sql = "SELECT series_id, ts_ms, value FROM samples" + (" WHERE " + " AND ".join(where) if where else "")
        res: dict[str, Any] = self.con.execute(sql, params).fetchnumpy()
        sid_store = np.asarray(res["series_id"], dtype=np.int64)
        lookup = np.full(max(pos, default=-1) + 1, -1, dtype=np.int64)
        for store_id, i in pos.items():
            lookup[store_id] = i
        sid = lookup[sid_store] if len(sid_store) else sid_store
        return keys, sources, sid, np.asarray(res["ts_ms"], dtype=np.int64), np.asarray(res["value"], dtype=np.float64)
