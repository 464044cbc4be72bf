"""Trace loaders: files and built-in data -> :class:`~gpuyield.core.workload.Workload`.

``load_workload(spec)`` accepts a file path, a ServeGen directory or ``builtin:NAME``. Formats are detected
from the extension and the header (override with ``format=``):

==============  =====================================================================================
``azure``       Azure LLM inference trace CSV: ``TIMESTAMP,ContextTokens,GeneratedTokens`` (datetimes)
``mooncake``    Mooncake JSONL: ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids``
``servegen``    a ServeGen per-client directory (``chunk-N-trace.csv`` + ``chunk-N-dataset.json``)
``lengths``     a length-only CSV (ShareGPT / arXiv stats: ``num_prefill_tokens,num_decode_tokens``)
``request-log`` gpuyield's request log, JSONL or Parquet (:class:`RequestLogRecord`)
==============  =====================================================================================

Every row is validated; a bad row raises :class:`WorkloadError` naming the file, line and field. With
``lenient=True`` bad rows are skipped instead, counted and reported in the workload's notes -- never dropped
silently. Rows out of time order are sorted (stable) with a note.
"""

from __future__ import annotations

import ast
import csv
import functools
import gzip
import io
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from gpuyield.core.workload import (
    ArrivalSpec,
    PrefixSpec,
    RateCurve,
    RequestLogRecord,
    Workload,
    WorkloadMeta,
    apply_prefix_structure,
    synthesize,
)
from gpuyield.core.workload.hashing import HASH_MASK, content_key, mix64_np
from gpuyield.errors import WorkloadError

__all__ = [
    "BUILTINS",
    "FORMATS",
    "BuiltinTrace",
    "detect_format",
    "load_rate_curve",
    "load_workload",
    "parse_arrival",
    "parse_timestamp",
    "resolve_spec",
]

FORMATS = ("azure", "mooncake", "servegen", "lengths", "request-log")
Progress = Callable[[int], None]


@dataclass(frozen=True)
class BuiltinTrace:
    name: str
    file: str  # inside gpuyield/data/traces
    format: str
    licence: str
    description: str
    attribution: str


BUILTINS: dict[str, BuiltinTrace] = {
    b.name: b
    for b in (
        BuiltinTrace(
            "azure-conv",
            "azure_conv_2023.csv.gz",
            "azure",
            "CC-BY-4.0",
            "Azure LLM inference trace 2023, conversation service: 19,366 requests over 1 h, no prefix hashes",
            "Azure/AzurePublicDataset (AzureLLMInferenceTrace_conv), Patel et al., Splitwise, ISCA 2024",
        ),
        BuiltinTrace(
            "mooncake-synthetic",
            "mooncake_synthetic.jsonl.gz",
            "mooncake",
            "Apache-2.0",
            "Mooncake FAST'25 synthetic trace: 3,993 requests over 17 min, 512-token prefix block hashes",
            "kvcache-ai/Mooncake FAST25-release/traces/synthetic_trace.jsonl",
        ),
        BuiltinTrace(
            "sharegpt",
            "sharegpt_lengths.csv.gz",
            "lengths",
            "Apache-2.0",
            "30,731 ShareGPT (prompt, completion) token lengths (Llama-2 tokenizer), no timestamps",
            "microsoft/sarathi-serve data/processed_traces/sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
        ),
    )
}


# --------------------------------------------------------------------------- small helpers
def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")  # noqa: SIM115


def _builtin_path(name: str) -> tuple[Path, BuiltinTrace]:
    b = BUILTINS.get(name)
    if b is None:
        raise WorkloadError(f"unknown built-in trace {name!r}; expected one of: " + ", ".join(sorted(BUILTINS)))
    ref = resources.files("gpuyield") / "data" / "traces" / b.file
    with resources.as_file(ref) as p:
        if not p.exists():
            raise WorkloadError(f"built-in trace {name!r}: package data file {b.file} is missing from the install")
        return Path(p), b


def resolve_spec(spec: str) -> tuple[Path, BuiltinTrace | None]:
    """``builtin:NAME`` or a path -> (path, builtin or None). Missing files are an error naming the path."""
    if spec.startswith("builtin:"):
        return _builtin_path(spec.split(":", 1)[1])
    p = Path(spec).expanduser()
    if not p.exists():
        hint = " (built-in traces are named builtin:" + "|".join(sorted(BUILTINS)) + ")" if ":" not in spec else ""
        raise WorkloadError(f"workload file not found: {spec}{hint}")
    return p, None


def _first_line(path: Path) -> str:
    with _open_text(path) as f:
        for line in f:
            if line.strip():
                return line.strip()
    return ""


def detect_format(path: Path) -> str:
    """Guess a trace's format from its name and first line."""
    if path.is_dir():
        if any(path.glob("chunk-*-trace.csv")):
            return "servegen"
        raise WorkloadError(f"{path}: a directory but not a ServeGen client directory (no chunk-*-trace.csv)")
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        return "request-log"
    head = _first_line(path)
    if not head:
        raise WorkloadError(f"{path}: empty file; expected a trace or a request log")
    if name.endswith((".jsonl", ".json", ".ndjson")) or head.startswith("{"):
        try:
            obj = json.loads(head)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"{path}:1: not valid JSON ({exc.msg}); expected one JSON object per line") from None
        if not isinstance(obj, dict):
            raise WorkloadError(f"{path}:1: expected a JSON object per line")
        if "arrival_ts" in obj or "request_id" in obj:
            return "request-log"
        if "input_length" in obj or "hash_ids" in obj:
            return "mooncake"
        raise WorkloadError(
            f"{path}:1: unknown JSONL record with fields {sorted(obj)[:8]}; expected a Mooncake trace "
            "(timestamp, input_length, output_length, hash_ids) or a gpuyield request log (request_id, arrival_ts, ...)"
        )
    cols = [c.strip().lower() for c in head.split(",")]
    if {"timestamp", "contexttokens", "generatedtokens"} <= set(cols):
        return "azure"
    if _length_columns(cols) is not None:
        return "lengths"
    if "total_rate_rps" in cols or "rate_per_s" in cols:
        raise WorkloadError(
            f"{path}: a rate curve, not a trace; use it as an arrival process (arrival 'curve:{path}') "
            "for a length-only table"
        )
    raise WorkloadError(
        f"{path}:1: unrecognised header {head[:120]!r}; expected an Azure trace (TIMESTAMP,ContextTokens,"
        "GeneratedTokens), a length table (num_prefill_tokens,num_decode_tokens), Mooncake JSONL or a request log"
    )


_LENGTH_PAIRS = (
    ("num_prefill_tokens", "num_decode_tokens"),
    ("input_tokens", "output_tokens"),
    ("prompt_tokens", "completion_tokens"),
    ("input_length", "output_length"),
    ("contexttokens", "generatedtokens"),
)


def _length_columns(cols: list[str]) -> tuple[int, int] | None:
    for a, b in _LENGTH_PAIRS:
        if a in cols and b in cols:
            return cols.index(a), cols.index(b)
    return None


_TS_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?\s*(Z|[+-]\d{2}:?\d{2})?$")


@functools.lru_cache(maxsize=1024)
def _day_epoch(date: str) -> float:
    """Epoch seconds of a UTC midnight (cached: a trace has few distinct dates)."""
    try:
        return datetime.fromisoformat(date).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise ValueError(f"unparseable date {date!r}") from None


def parse_timestamp(text: str) -> float:
    """Epoch seconds from an ISO-like datetime (any number of fractional digits, optional Z/offset; naive =
    UTC) or from a plain number of seconds. Raises ValueError with the text when unparseable."""
    s = text.strip()
    m = _TS_RE.match(s)
    if m:
        date, hh, mm, ss, frac, tz = m.groups()
        if int(hh) > 23 or int(mm) > 59 or int(ss) > 59:
            raise ValueError(f"unparseable timestamp {text!r}: time of day out of range")
        day = _day_epoch(date)
        base = day + int(hh) * 3600 + int(mm) * 60 + int(ss)
        if tz and tz != "Z":
            sign = 1 if tz[0] == "+" else -1
            digits = tz[1:].replace(":", "")
            base -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
        return base + (float("0." + frac) if frac else 0.0)
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"unparseable timestamp {text!r}; expected e.g. 2023-11-16 18:15:46.680 or epoch seconds") from None
    if not math.isfinite(v):
        raise ValueError(f"non-finite timestamp {text!r}")
    return v


def _int_field(value: Any, name: str, minimum: int) -> int:
    orig = value
    if isinstance(value, bool):
        raise ValueError(f"field {name}: {value!r} is not an integer")
    if isinstance(value, str):
        value = value.strip()
        try:
            value = int(value) if re.fullmatch(r"[+-]?\d+", value) else float(value)
        except ValueError:
            raise ValueError(f"field {name}: {value!r} is not an integer") from None
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"field {name}: {orig!r} is not an integer")
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(f"field {name}: {value!r} is not an integer")
    if value < minimum:
        raise ValueError(f"field {name}: {value} is below the minimum {minimum}")
    return value


@dataclass
class _Rows:
    """Accumulates validated rows; in lenient mode counts and remembers skipped ones."""

    path: Path
    lenient: bool
    skipped: int = 0
    first_errors: list[str] = field(default_factory=list)

    def bad(self, line: int, msg: str) -> None:
        text = f"{self.path}:{line}: {msg}"
        if not self.lenient:
            raise WorkloadError(text)
        self.skipped += 1
        if len(self.first_errors) < 3:
            self.first_errors.append(text)

    def note(self) -> str | None:
        if not self.skipped:
            return None
        return f"lenient: skipped {self.skipped} bad rows (first: {'; '.join(self.first_errors)})"


def _finish(
    arrival: list[float] | np.ndarray,
    isl: list[int] | np.ndarray,
    osl: list[int] | np.ndarray,
    meta: WorkloadMeta,
    rows: _Rows,
    *,
    rebase: bool = True,
    block_size_tokens: int = 512,
    **extra: Any,
) -> Workload:
    arr = np.asarray(arrival, dtype=np.float64)
    if len(arr) == 0:
        raise WorkloadError(f"{rows.path}: no requests in the file" + (f" ({rows.note()})" if rows.skipped else ""))
    note = rows.note()
    if note:
        meta = meta.with_note(note)
    w = Workload(
        arrival_s=arr,
        input_tokens=np.asarray(isl, dtype=np.int64),
        output_tokens=np.asarray(osl, dtype=np.int64),
        meta=meta,
        block_size_tokens=block_size_tokens,
        validate=False,
        **extra,
    ).sorted()
    if rebase and w.arrival_s[0] != 0.0:
        w = w.replace(arrival_s=w.arrival_s - w.arrival_s[0])
    return w


def _tracked_lines(f: io.TextIOBase, progress: Progress | None) -> Iterator[str]:
    for line in f:
        if progress is not None:
            progress(len(line))
        yield line


# --------------------------------------------------------------------------- format loaders
_FAST_MIN_BYTES = 2_000_000  # below this the Python reader is as quick as starting DuckDB


def _azure_fast(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Read a large Azure CSV with DuckDB (a core dependency). Returns None whenever anything is unusual --
    a parse error, a null, a value out of range, unexpected columns -- so the Python reader can find and name
    the offending line. Timestamps get DuckDB's microsecond resolution."""
    import duckdb

    try:
        con = duckdb.connect()
        con.execute("SET threads TO 2")
        cols = con.execute("SELECT * FROM read_csv(?, header = true) LIMIT 0", [str(path)]).description or []
        names = [c[0].lower() for c in cols]
        if sorted(names) != ["contexttokens", "generatedtokens", "timestamp"]:
            return None
        real = {c[0].lower(): c[0] for c in cols}
        ts, ic, gc = real["timestamp"], real["contexttokens"], real["generatedtokens"]
        con.execute(
            "CREATE TEMP TABLE raw AS SELECT * FROM read_csv(?, header = true, all_varchar = true)", [str(path)]
        )
        # only plain naive datetimes (UTC); zones, epoch numbers and anything else go to the Python reader
        # and plain decimal integers (DuckDB would round '5.5' to 6)
        plain = con.execute(
            f"""SELECT bool_and(regexp_full_match(trim("{ts}"), '\\d{{4}}-\\d{{2}}-\\d{{2}}[ T]\\d{{2}}:\\d{{2}}:\\d{{2}}([.]\\d+)?')
                               AND regexp_full_match(trim("{ic}"), '\\d+') AND regexp_full_match(trim("{gc}"), '\\d+'))
                FROM raw"""
        ).fetchone()
        if not plain or plain[0] is not True:
            return None
        d = con.execute(
            f'SELECT epoch(trim("{ts}")::TIMESTAMP)::DOUBLE AS t, trim("{ic}")::BIGINT AS i, '
            f'trim("{gc}")::BIGINT AS o FROM raw'
        ).fetchnumpy()
    except (duckdb.Error, ValueError, TypeError):
        return None
    t, i, o = (np.asarray(d[k]) for k in ("t", "i", "o"))
    for a in (t, i, o):
        if np.ma.isMaskedArray(a) or a.dtype == object:
            return None
    if len(t) == 0 or not np.all(np.isfinite(t)) or i.min() < 1 or o.min() < 0:
        return None
    return t.astype(np.float64), i.astype(np.int64), o.astype(np.int64)


def _load_azure(path: Path, meta: WorkloadMeta, lenient: bool, progress: Progress | None) -> Workload:
    if not lenient and path.stat().st_size >= _FAST_MIN_BYTES:
        fast = _azure_fast(path)
        if fast is not None:
            if progress is not None:
                progress(path.stat().st_size)
            t, i, o = fast
            num_zero = int(np.count_nonzero(o == 0))
            if num_zero:
                meta = meta.with_note(f"{num_zero} requests with GeneratedTokens=0 replayed as 1 output token")
            return _finish(t, i, np.maximum(o, 1), meta.with_note("read with DuckDB"), _Rows(path, lenient))
    rows = _Rows(path, lenient)
    arrival: list[float] = []
    isl: list[int] = []
    osl: list[int] = []
    with _open_text(path) as f:
        reader = csv.reader(_tracked_lines(f, progress))
        header = next(reader, None)
        if header is None:
            raise WorkloadError(f"{path}: empty file; expected header TIMESTAMP,ContextTokens,GeneratedTokens")
        cols = [c.strip().lower() for c in header]
        try:
            it, ic, ig = cols.index("timestamp"), cols.index("contexttokens"), cols.index("generatedtokens")
        except ValueError:
            raise WorkloadError(
                f"{path}:1: header {','.join(header)!r} lacks a column; expected TIMESTAMP,ContextTokens,GeneratedTokens"
            ) from None
        width = len(cols)
        for line_no, rec in enumerate(reader, start=2):
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue
            if len(rec) != width:
                rows.bad(line_no, f"{len(rec)} fields; expected {width}")
                continue
            try:
                t = parse_timestamp(rec[it])
            except ValueError as exc:
                rows.bad(line_no, f"field TIMESTAMP: {exc}")
                continue
            try:
                a = _int_field(rec[ic], "ContextTokens", 1)
                b = _int_field(rec[ig], "GeneratedTokens", 0)
            except ValueError as exc:
                rows.bad(line_no, str(exc))
                continue
            arrival.append(t)
            isl.append(a)
            osl.append(b)
    osl_arr = np.asarray(osl, dtype=np.int64)
    num_zero = int(np.count_nonzero(osl_arr == 0))
    if num_zero:
        meta = meta.with_note(f"{num_zero} requests with GeneratedTokens=0 replayed as 1 output token")
        osl_arr = np.maximum(osl_arr, 1)
    return _finish(arrival, isl, osl_arr, meta, rows)


def _mooncake_hash(ids: np.ndarray, namespace: int) -> np.ndarray:
    """Re-key Mooncake ``hash_ids`` (small ints, one id per distinct prefix block) into 63-bit hashes, salted
    by the trace so two different traces never share blocks by accident."""
    with np.errstate(over="ignore"):
        v = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(namespace)
    return (mix64_np(v) & np.uint64(HASH_MASK)).astype(np.int64)


def _load_mooncake(
    path: Path, meta: WorkloadMeta, lenient: bool, progress: Progress | None, block_size_tokens: int
) -> Workload:
    rows = _Rows(path, lenient)
    arrival: list[float] = []
    isl: list[int] = []
    osl: list[int] = []
    lens: list[int] = []
    ids: list[int] = []
    with _open_text(path) as f:
        for line_no, line in enumerate(_tracked_lines(f, progress), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                rows.bad(line_no, f"not valid JSON ({exc.msg})")
                continue
            if not isinstance(obj, dict):
                rows.bad(line_no, "expected a JSON object")
                continue
            missing = [k for k in ("timestamp", "input_length", "output_length") if k not in obj]
            if missing:
                rows.bad(line_no, f"missing field {missing[0]}; expected timestamp, input_length, output_length")
                continue
            try:
                ts = obj["timestamp"]
                if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 0:
                    raise ValueError(f"field timestamp: {ts!r}; expected milliseconds >= 0")
                a = _int_field(obj["input_length"], "input_length", 1)
                b = _int_field(obj["output_length"], "output_length", 0)
                h = obj.get("hash_ids", [])
                if not isinstance(h, list) or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in h):
                    raise ValueError("field hash_ids: expected a list of non-negative integers")
                if len(h) > -(-a // block_size_tokens):
                    raise ValueError(
                        f"field hash_ids: {len(h)} blocks for input_length {a} exceeds ceil({a}/{block_size_tokens}); "
                        "wrong block size?"
                    )
            except ValueError as exc:
                rows.bad(line_no, str(exc))
                continue
            arrival.append(float(ts) / 1000.0)
            isl.append(a)
            osl.append(max(b, 1))
            lens.append(len(h))
            ids.extend(h)
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(np.asarray(lens, dtype=np.int64), out=offsets[1:])
    ns = content_key("mooncake", int.from_bytes(path.name.removesuffix(".gz").encode()[:8].ljust(8, b"\0"), "little"))
    values = _mooncake_hash(np.asarray(ids, dtype=np.int64), ns)
    return _finish(
        arrival, isl, osl, meta, rows, rebase=False, block_size_tokens=block_size_tokens,
        hash_offsets=offsets, hash_values=values,
    )  # fmt: skip


def _load_lengths(
    path: Path, meta: WorkloadMeta, lenient: bool, progress: Progress | None
) -> tuple[np.ndarray, np.ndarray, WorkloadMeta]:
    rows = _Rows(path, lenient)
    isl: list[int] = []
    osl: list[int] = []
    with _open_text(path) as f:
        reader = csv.reader(_tracked_lines(f, progress))
        header = next(reader, None)
        cols = [c.strip().lower() for c in (header or [])]
        pos = _length_columns(cols)
        if pos is None:
            raise WorkloadError(
                f"{path}:1: no length columns in header {','.join(header or [])!r}; expected "
                "num_prefill_tokens,num_decode_tokens (or input_tokens,output_tokens)"
            )
        names = (cols[pos[0]], cols[pos[1]])
        for line_no, rec in enumerate(reader, start=2):
            if not rec:
                continue
            if len(rec) != len(cols):
                rows.bad(line_no, f"{len(rec)} fields; expected {len(cols)}")
                continue
            try:
                isl.append(_int_field(rec[pos[0]], names[0], 1))
                osl.append(max(1, _int_field(rec[pos[1]], names[1], 0)))
            except ValueError as exc:
                if len(isl) > len(osl):
                    isl.pop()
                rows.bad(line_no, str(exc))
    if not isl:
        raise WorkloadError(f"{path}: no rows in the length table")
    note = rows.note()
    return np.asarray(isl, np.int64), np.asarray(osl, np.int64), (meta.with_note(note) if note else meta)


def _load_request_log(path: Path, meta: WorkloadMeta, lenient: bool, progress: Progress | None) -> Workload:
    from pydantic import ValidationError

    rows = _Rows(path, lenient)
    records: list[RequestLogRecord] = []

    def add(line_no: int, obj: Any) -> None:
        try:
            # JSON lines are parsed and validated in one step by pydantic-core (several times faster)
            rec = RequestLogRecord.model_validate_json(obj) if isinstance(obj, str) else RequestLogRecord.model_validate(obj)
        except ValidationError as exc:
            err = exc.errors()[0]
            if err["type"] == "json_invalid":
                rows.bad(line_no, f"not valid JSON ({err['msg']})")
            elif err["type"] == "model_type":
                rows.bad(line_no, "expected a JSON object (one request record per line)")
            else:
                loc = ".".join(str(x) for x in err["loc"]) or "record"
                rows.bad(line_no, f"field {loc}: {err['msg']}")
            return
        if rec.input_tokens < 1:
            rows.bad(line_no, "field input_tokens: 0 cannot be replayed; expected >= 1")
            return
        records.append(rec)

    if path.name.lower().removesuffix(".gz").endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise WorkloadError(
                f"{path}: reading Parquet needs pyarrow; install it with pip install 'gpuyield[parquet]'"
            ) from None
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises many types
            raise WorkloadError(f"{path}: not a readable Parquet file ({exc})") from None
        for i, obj in enumerate(table.to_pylist(), start=1):
            add(i, {k: v for k, v in obj.items() if v is not None})
            if progress is not None and i % 1000 == 0:
                progress(1000)
    else:
        with _open_text(path) as f:
            for line_no, line in enumerate(_tracked_lines(f, progress), start=1):
                if not line.strip():
                    continue
                add(line_no, line)
    if not records:
        raise WorkloadError(f"{path}: no request records" + (f" ({rows.note()})" if rows.skipped else ""))
    sizes = {r.block_size_tokens for r in records if r.block_hashes}
    if len(sizes) > 1:
        raise WorkloadError(f"{path}: records mix block sizes {sorted(s for s in sizes if s)}; expected one")
    block_size = next(iter(sizes)) if sizes else 512
    filled = 0
    osl = []
    for r in records:
        o = r.output_tokens
        if o < 1:
            o = r.max_output_tokens or 1
            filled += 1
        osl.append(o)
    if filled:
        meta = meta.with_note(
            f"{filled} requests without output tokens (not ok / none generated) replayed with max_output_tokens or 1"
        )
    statuses: dict[str, int] = {}
    for r in records:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    if set(statuses) != {"ok"}:
        meta = meta.with_note("statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    from gpuyield.core.workload.workload import encode_labels

    model_codes, models = encode_labels([r.model for r in records])
    tenant_codes, tenants = encode_labels([r.tenant for r in records])
    sess_ids = sorted({r.session_id for r in records if r.session_id is not None})
    sess_index = {s: k for k, s in enumerate(sess_ids)}
    lens = np.array([len(r.block_hashes or ()) for r in records], dtype=np.int64)
    offsets = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    return _finish(
        [r.arrival_ts for r in records],
        [r.input_tokens for r in records],
        osl,
        meta,
        rows,
        block_size_tokens=block_size,
        priority=np.array([r.priority for r in records], dtype=np.int32),
        model_codes=model_codes,
        models=models,
        tenant_codes=tenant_codes,
        tenants=tenants,
        session_codes=np.array(
            [-1 if r.session_id is None else sess_index[r.session_id] for r in records], dtype=np.int32
        ),
        sessions=tuple(sess_ids),
        hash_offsets=offsets,
        hash_values=np.fromiter(
            (h for r in records for h in (r.block_hashes or ())), dtype=np.int64, count=int(offsets[-1])
        ),
    )


# --------------------------------------------------------------------------- ServeGen
_PMF_KEY = re.compile(r"([{,]\s*)([-+0-9.eE]+)\s*:")


def _parse_pmf(text: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """ServeGen stores each distribution as the text of a Python dict ``{value: probability, ...}``."""
    d: Any = text
    if isinstance(text, str):
        try:  # fast path: quote the numeric keys and read it as JSON
            d = json.loads(_PMF_KEY.sub(r'\1"\2":', text))
        except json.JSONDecodeError:
            try:
                d = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise WorkloadError(f"{where}: not a {{value: probability}} mapping") from None
    if not isinstance(d, dict):
        raise WorkloadError(f"{where}: expected a {{value: probability}} mapping")
    if not d:
        return np.zeros(0), np.zeros(0)
    vals = np.array(list(d.keys()), dtype=np.float64)
    probs = np.array(list(d.values()), dtype=np.float64)
    if np.any(probs < 0) or not np.isfinite(probs).all() or probs.sum() <= 0:
        raise WorkloadError(f"{where}: probabilities must be non-negative and sum to > 0")
    return vals, probs / probs.sum()


def _load_servegen(
    path: Path,
    meta: WorkloadMeta,
    seed: int,
    start_s: float,
    duration_s: float | None,
    progress: Progress | None,
) -> Workload:
    traces = sorted(path.glob("chunk-*-trace.csv"), key=lambda p: int(p.name.split("-")[1]))
    rng = np.random.default_rng(seed)
    end_s = math.inf if duration_s is None else start_s + duration_s
    arr_parts: list[np.ndarray] = []
    isl_parts: list[np.ndarray] = []
    osl_parts: list[np.ndarray] = []
    ten_parts: list[np.ndarray] = []
    tenants: list[str] = []
    skipped_windows = 0
    for tp in traces:
        cid = int(tp.name.split("-")[1])
        ds_path = path / f"chunk-{cid}-dataset.json"
        if not ds_path.exists():
            raise WorkloadError(f"{tp}: no matching dataset file {ds_path.name}")
        windows: list[tuple[int, float, float, str, float, float]] = []
        with open(tp, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                parts = line.strip().split(",")
                if len(parts) != 6:
                    raise WorkloadError(f"{tp}:{line_no}: {len(parts)} fields; expected timestamp,rate,cv,pattern,arg1,arg2")
                try:
                    ts = int(parts[0])
                    rate = float(parts[1])
                    cv = float(parts[2]) if parts[2] else 0.0
                    a1 = float(parts[4]) if parts[4] else 0.0
                    a2 = float(parts[5]) if parts[5] else 0.0
                except ValueError:
                    raise WorkloadError(f"{tp}:{line_no}: non-numeric timestamp/rate/cv/arguments") from None
                if rate < 0:
                    raise WorkloadError(f"{tp}:{line_no}: field rate: {rate}; expected >= 0")
                if parts[3] not in ("", "Gamma", "Weibull", "Exponential"):
                    raise WorkloadError(f"{tp}:{line_no}: field pattern: {parts[3]!r}; expected Gamma, Weibull or empty")
                windows.append((ts, rate, cv, parts[3], a1, a2))
        if progress is not None:
            progress(tp.stat().st_size)
        try:
            dataset = json.loads(ds_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"{ds_path}: not valid JSON ({exc.msg})") from None
        try:
            ds_ts = sorted(int(k) for k in dataset)
        except (TypeError, ValueError):
            raise WorkloadError(f"{ds_path}: window keys must be integer seconds") from None
        pmfs: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {}

        def pmf(k: int, ds_path: Path = ds_path, dataset: Any = dataset, pmfs: Any = pmfs) -> dict[str, Any]:
            if k not in pmfs:  # parsed lazily: only the windows inside the span
                fields = dataset[str(k)]
                for fld in ("input_tokens", "output_tokens"):
                    if not isinstance(fields, dict) or fld not in fields:
                        raise WorkloadError(f"{ds_path}: window {k}: missing field {fld}")
                pmfs[k] = {
                    fld: _parse_pmf(fields[fld], f"{ds_path}: window {k}: field {fld}")
                    for fld in ("input_tokens", "output_tokens")
                }
            return pmfs[k]  # type: ignore[no-any-return]
        if progress is not None:
            progress(ds_path.stat().st_size)
        tenant_code = len(tenants)
        tenants.append(f"client-{cid}")
        for j, (ts, rate, _cv, pat, a1, a2) in enumerate(windows):
            width = (windows[j + 1][0] - ts) if j + 1 < len(windows) else (ts - windows[j - 1][0] if j else 600)
            lo, hi = max(ts, start_s), min(ts + width, end_s)
            if not pat or rate <= 0 or hi <= lo:
                continue
            if a1 <= 0 or a2 <= 0:
                raise WorkloadError(f"{tp}: window {ts}: {pat} parameters must be > 0, got {a1}, {a2}")
            ds_key = max((k for k in ds_ts if k <= ts), default=None)
            if ds_key is None or pmf(ds_key)["input_tokens"][0].size == 0 or pmf(ds_key)["output_tokens"][0].size == 0:
                skipped_windows += 1
                continue
            expected = rate * width
            m = int(expected * 1.5 + 10 * math.sqrt(expected + 1) + 10)
            if pat == "Gamma":
                gaps = rng.gamma(a1, a2, size=m)
            elif pat == "Weibull":
                gaps = a2 * rng.weibull(a1, size=m)
            else:
                gaps = rng.exponential(a1, size=m)
            t = ts + np.cumsum(gaps) - gaps[0] * rng.uniform()
            t = t[(t >= lo) & (t < hi)]
            if t.size == 0:
                continue
            iv, ip = pmf(ds_key)["input_tokens"]
            ov, op = pmf(ds_key)["output_tokens"]
            arr_parts.append(t)
            isl_parts.append(np.maximum(1, rng.choice(iv, size=t.size, p=ip)).astype(np.int64))
            osl_parts.append(np.maximum(1, rng.choice(ov, size=t.size, p=op)).astype(np.int64))
            ten_parts.append(np.full(t.size, tenant_code, dtype=np.int32))
    if not arr_parts:
        raise WorkloadError(f"{path}: no requests in the chosen time span [{start_s}, {end_s}) s")
    arrival = np.concatenate(arr_parts)
    if skipped_windows:
        meta = meta.with_note(f"{skipped_windows} client windows had a rate but no length distribution and were left out")
    meta = meta.with_note(
        f"sampled from {len(traces)} ServeGen clients (seed {seed}), span [{start_s:g} s, "
        f"{'end' if duration_s is None else f'{end_s:g} s'}); tenants are client-N"
    )
    w = Workload(
        arrival_s=arrival - start_s,
        input_tokens=np.concatenate(isl_parts),
        output_tokens=np.concatenate(osl_parts),
        tenant_codes=np.concatenate(ten_parts),
        tenants=tuple(tenants),
        meta=meta,
        validate=False,
    )
    order = np.argsort(w.arrival_s, kind="stable")
    return w.take(order)


# --------------------------------------------------------------------------- rate curves and arrival specs
def load_rate_curve(spec: str) -> RateCurve:
    """A rate curve from a CSV: ``FILE`` or ``FILE#SERIES`` where SERIES picks rows whose ``model`` (or
    ``category/model``) matches, e.g. ``servegen_aggregate_rate_10min.csv#m-large``. Columns:
    ``window_start_s`` (or ``start_s``), ``window_s``, ``total_rate_rps`` (or ``rate_per_s``)."""
    file, _, series = spec.partition("#")
    path = Path(file).expanduser()
    if not path.exists():
        raise WorkloadError(f"rate curve file not found: {file}")
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise WorkloadError(f"{path}: empty rate curve file")
        cols = {c.strip().lower(): c for c in reader.fieldnames}
        start_c = cols.get("window_start_s") or cols.get("start_s")
        width_c = cols.get("window_s")
        rate_c = cols.get("total_rate_rps") or cols.get("rate_per_s")
        if not (start_c and width_c and rate_c):
            raise WorkloadError(
                f"{path}:1: rate curve needs columns window_start_s, window_s and total_rate_rps (or rate_per_s)"
            )
        groups: dict[str, list[tuple[float, float, float]]] = {}
        for line_no, row in enumerate(reader, start=2):
            key = "/".join(row[cols[c]] for c in ("category", "model") if c in cols) or "all"
            try:
                groups.setdefault(key, []).append((float(row[start_c]), float(row[width_c]), float(row[rate_c])))
            except (TypeError, ValueError):
                raise WorkloadError(f"{path}:{line_no}: non-numeric {start_c}/{width_c}/{rate_c}") from None
    if series:
        chosen = [k for k in groups if k == series or k.endswith("/" + series)]
        if len(chosen) != 1:
            raise WorkloadError(f"{path}: series {series!r} not found; expected one of: " + ", ".join(groups))
        key = chosen[0]
    elif len(groups) == 1:
        key = next(iter(groups))
    else:
        raise WorkloadError(f"{path}: {len(groups)} series; pick one with FILE#SERIES, one of: " + ", ".join(groups))
    return RateCurve.from_windows(groups[key])


def parse_arrival(arrival: str | ArrivalSpec | None, rate: float | None, cv: float | None) -> ArrivalSpec:
    """``poisson`` | ``gamma`` | ``curve:FILE[#SERIES]`` (+ rate, cv) -> :class:`ArrivalSpec`."""
    if isinstance(arrival, ArrivalSpec):
        return arrival
    kind = (arrival or ("gamma" if cv is not None and cv != 1.0 else "poisson")).strip()
    if kind.startswith("curve:"):
        return ArrivalSpec("curve", rate_per_s=rate, cv=1.0 if cv is None else cv, curve=load_rate_curve(kind[6:]))
    if kind not in ("poisson", "gamma"):
        raise WorkloadError(f"arrival process {kind!r}; expected poisson, gamma or curve:FILE[#SERIES]")
    if kind == "gamma" and cv is None:
        raise WorkloadError("gamma arrivals need a CV (--cv)")
    return ArrivalSpec(kind, rate_per_s=1.0 if rate is None else rate, cv=1.0 if cv is None else cv)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- entry point
def load_workload(
    spec: str,
    *,
    format: str | None = None,
    block_size_tokens: int | None = None,
    seed: int = 0,
    arrival: str | ArrivalSpec | None = None,
    rate: float | None = None,
    cv: float | None = None,
    num_requests: int | None = None,
    start_s: float = 0.0,
    duration_s: float | None = None,
    prefix: PrefixSpec | None = None,
    lenient: bool = False,
    progress: Progress | None = None,
) -> Workload:
    """Load a trace, a ServeGen directory, a request log or ``builtin:NAME`` as a :class:`Workload`.

    - ``block_size_tokens``: block size of ``hash_ids`` for Mooncake (default 512) and of synthetic prefixes.
    - ``arrival``/``rate``/``cv``/``num_requests``: arrivals for length-only tables (default Poisson, 1 req/s,
      one request per row).
    - ``start_s``/``duration_s``: the span sampled from ServeGen descriptions (default: everything).
    - ``prefix``: synthesise prefix structure (system prompts, sessions, RAG) on top of the loaded trace.
    - ``seed`` drives every random choice; the same arguments give the same workload.
    - ``progress(n)`` is called with bytes read, for a progress bar.
    """
    path, builtin = resolve_spec(spec)
    fmt = format or (builtin.format if builtin else detect_format(path))
    if fmt not in FORMATS:
        raise WorkloadError(f"unknown trace format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    name = builtin.name if builtin else path.name.split(".")[0] or path.name
    meta = WorkloadMeta(
        name=name,
        source=spec,
        licence=builtin.licence if builtin else "",
        notes=(f"format {fmt}",),
    )
    if fmt == "servegen" and not path.is_dir():
        raise WorkloadError(f"{path}: ServeGen input must be a client directory (chunk-N-trace.csv + chunk-N-dataset.json)")
    if fmt != "servegen" and path.is_dir():
        raise WorkloadError(f"{path}: a directory; format {fmt} needs a file")
    if block_size_tokens is not None and block_size_tokens < 1:
        raise WorkloadError(f"block size must be >= 1 token, got {block_size_tokens}")
    if fmt != "lengths":
        given = [k for k, v in (("arrival", arrival), ("rate", rate), ("cv", cv), ("num_requests", num_requests)) if v is not None]
        if given:
            raise WorkloadError(
                f"{spec}: {', '.join(given)} only apply to length-only tables; this {fmt} input has its own arrival "
                "times (scale them with a rate scale instead)"
            )
    if fmt != "servegen" and (start_s != 0.0 or duration_s is not None):
        raise WorkloadError(f"{spec}: start/duration select a span of ServeGen descriptions; for a {fmt} input slice it instead")
    if fmt == "azure":
        w = _load_azure(path, meta, lenient, progress)
    elif fmt == "mooncake":
        w = _load_mooncake(path, meta, lenient, progress, block_size_tokens or 512)
    elif fmt == "request-log":
        w = _load_request_log(path, meta, lenient, progress)
    elif fmt == "servegen":
        if start_s < 0 or (duration_s is not None and duration_s <= 0):
            raise WorkloadError(f"ServeGen span: start {start_s} s must be >= 0 and duration {duration_s} s > 0")
        w = _load_servegen(path, meta, seed, start_s, duration_s, progress)
    else:
        isl, osl, meta2 = _load_lengths(path, meta, lenient, progress)
        if arrival is None and rate is None:
            meta2 = meta2.with_note("the table has no timestamps; default arrivals used (set arrival/rate)")
        spec_arr = parse_arrival(arrival, rate, cv)
        w = synthesize(
            isl, osl, spec_arr, meta2, num_requests=num_requests, seed=seed,
            block_size_tokens=block_size_tokens or 512,
        )  # fmt: skip
    if prefix is not None:
        if block_size_tokens is not None and prefix.block_size_tokens != block_size_tokens:
            prefix = prefix.model_copy(update={"block_size_tokens": block_size_tokens})
        if w.has_hashes:
            w.meta = w.meta.with_note("existing block hashes replaced by the synthetic prefix structure")
        w = apply_prefix_structure(w, prefix, seed=seed)
    return w
