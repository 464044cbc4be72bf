"""Write a :class:`~gpuyield.core.workload.Workload` (or gateway records) as a gpuyield request log.

JSONL (``*.jsonl``, optionally ``*.jsonl.gz``) or Parquet (``*.parquet``, needs pyarrow). The schema is
:class:`~gpuyield.core.workload.request_log.RequestLogRecord`; see docs/formats.md. A workload written here and
read back with ``load_workload`` gives the same requests (arrivals, lengths, hashes, model, tenant, priority,
session).
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from gpuyield.core.workload import RequestLogRecord, Workload
from gpuyield.errors import WorkloadError

__all__ = ["workload_records", "write_request_log", "write_records"]


def workload_records(w: Workload, *, start_ts: float = 0.0) -> Iterator[dict[str, Any]]:
    """Request-log rows for a workload's requests (no timing or outcome: they were not served yet)."""
    for i in range(len(w)):
        rec: dict[str, Any] = {
            "request_id": str(i),
            "arrival_ts": start_ts + float(w.arrival_s[i]),
            "tenant": w.tenant_of(i),
            "model": w.model_of(i),
            "priority": int(w.priority[i]),
            "session_id": w.session_of(i),
            "input_tokens": int(w.input_tokens[i]),
            "output_tokens": int(w.output_tokens[i]),
        }
        hashes = w.block_hashes(i)
        if len(hashes):
            rec["block_size_tokens"] = w.block_size_tokens
            rec["block_hashes"] = hashes.tolist()
        yield rec


def write_records(records: Iterable[dict[str, Any] | RequestLogRecord], path: str | Path) -> int:
    """Validate and write request-log records to ``path`` (format from the extension). Returns the count."""
    p = Path(path)
    rows: list[dict[str, Any]] = []
    for k, r in enumerate(records):
        try:
            rec = r if isinstance(r, RequestLogRecord) else RequestLogRecord.model_validate(r)
        except Exception as exc:
            raise WorkloadError(f"request-log record {k}: {exc}") from None
        rows.append(rec.model_dump(mode="json", exclude_none=True))
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    name = p.name.lower()
    if name.endswith(".parquet"):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise WorkloadError("writing Parquet needs pyarrow; install it with pip install 'gpuyield[parquet]'") from None
        fields = list(RequestLogRecord.model_fields)
        types = {
            "block_hashes": pa.list_(pa.int64()),
            "arrival_ts": pa.float64(),
            "first_token_ts": pa.float64(),
            "finish_ts": pa.float64(),
        }
        cols = {f: [row.get(f) for row in rows] for f in fields}
        table = pa.table({f: pa.array(v, type=types.get(f)) for f, v in cols.items() if any(x is not None for x in v)})
        pq.write_table(table, p, compression="zstd")
    elif name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        with open(p, "wb") as fh:
            raw: Any = gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=fh, mtime=0) if name.endswith(".gz") else fh
            with io.TextIOWrapper(raw, encoding="utf-8", newline="\n") as f:
                for row in rows:
                    f.write(json.dumps(row, separators=(",", ":")) + "\n")
    else:
        raise WorkloadError(f"{p}: unknown request-log extension; expected .jsonl, .jsonl.gz or .parquet")
    return len(rows)


def write_request_log(w: Workload, path: str | Path, *, start_ts: float = 0.0) -> int:
    """Write a workload as a request log (arrival times offset by ``start_ts`` epoch seconds)."""
    return write_records(workload_records(w, start_ts=start_ts), path)
