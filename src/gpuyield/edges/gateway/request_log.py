"""The request log writer: one JSON line per request, written off the data path, rotated by size.

The data path calls :meth:`RequestLogWriter.write` with a plain dict (a ``put`` on an unbounded queue, no
I/O, no validation). A daemon thread serialises each record (orjson when installed) and writes it as one line,
flushing when the queue runs dry (it polls the queue every 20 ms rather than being woken per record). With ``validate=True`` (the default) every record is first checked against
:class:`gpuyield.core.workload.request_log.RequestLogRecord`; the gateway passes ``validate=False`` on its hot
path because it builds every field itself (its tests validate what it writes by loading the log back). When the file passes ``rotate_bytes`` it is renamed ``path.1`` (older ones shift to ``.2`` ... ``.keep``,
the oldest is deleted) and a fresh file is started. A record that fails validation is counted in
``num_invalid`` and logged to stderr once, never written half-formed.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["RequestLogWriter"]

_STOP = object()
_POLL_S = 0.02  # the writer thread's polling period

try:
    import orjson

    def _dumps(obj: Any) -> str:
        return orjson.dumps(obj).decode()

except ImportError:  # pragma: no cover
    import json

    def _dumps(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"))


class RequestLogWriter:
    def __init__(self, path: str | Path, rotate_bytes: int = 256 * 1024 * 1024, keep: int = 5,
                 validate: bool = True) -> None:
        self.path = Path(path)
        self.validate = validate
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self.num_written = 0
        self.num_invalid = 0
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - owned by the thread
        self._size = self._fh.tell()
        self._thread = threading.Thread(target=self._run, name="gpuyield-request-log", daemon=True)
        self._thread.start()
        self._warned = False

    def write(self, record: dict[str, Any]) -> None:
        """Queue one record (a dict of RequestLogRecord fields). Never blocks."""
        self._q.put(record)

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued, then stop the thread and close the file."""
        self._q.put(_STOP)
        self._thread.join(timeout_s)

    def flush(self, timeout_s: float = 5.0) -> None:
        """Block until everything queued so far is on disk (for tests and shutdown)."""
        ev = threading.Event()
        self._q.put(ev)
        ev.wait(timeout_s)

    def _rotate(self) -> None:
        self._fh.close()
        if self.keep <= 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.keep, 0, -1):
                src = self.path if i == 1 else self.path.with_name(f"{self.path.name}.{i - 1}")
                dst = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, dst)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._size = 0

    def _run(self) -> None:
        from gpuyield.core.workload.request_log import REQUEST_LOG_SCHEMA_VERSION, RequestLogRecord

        q = self._q
        while True:
            # poll instead of blocking on every record: a blocked reader would be woken (a thread switch
            # fighting the event loop for the GIL) once per request; this drains a batch every 20 ms
            try:
                item = q.get_nowait()
            except queue.Empty:
                self._fh.flush()
                time.sleep(_POLL_S)
                continue
            if item is _STOP:
                self._fh.flush()
                self._fh.close()
                return
            if isinstance(item, threading.Event):
                self._fh.flush()
                item.set()
                continue
            if self.validate:
                try:
                    rec = RequestLogRecord.model_validate(item)
                except Exception as exc:  # a bug upstream; keep the log well-formed
                    self.num_invalid += 1
                    if not self._warned:
                        self._warned = True
                        print(f"gpuyield serve: request-log record dropped: {exc}".splitlines()[0], file=sys.stderr)
                    continue
                line = rec.model_dump_json(exclude_none=True) + "\n"
            else:
                line = _dumps({"schema_version": REQUEST_LOG_SCHEMA_VERSION,
                               **{k: v for k, v in item.items() if v is not None}}) + "\n"
            self._fh.write(line)
            self._size += len(line)
            self.num_written += 1
            if self._size >= self.rotate_bytes:
                self._rotate()
