"""DuckDB storage for telemetry (``gpuyield baseline --db``, ``gpuyield baseline watch``)."""

from gpuyield.edges.storage.store import SCHEMA_SQL, IngestResult, TelemetryStore

__all__ = ["SCHEMA_SQL", "IngestResult", "TelemetryStore"]
