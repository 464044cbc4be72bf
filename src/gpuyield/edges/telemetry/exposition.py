"""A tolerant, fast parser for the Prometheus text exposition format (0.0.4, and OpenMetrics' common subset).

Why not ``prometheus_client.parser.text_string_to_metric_families``: it raises on the first malformed line
(losing the rest of the scrape) and builds one Python object per sample; on 1 M samples it is several times
slower than this parser (see ``benchmarks/baseline_ingest.py`` and docs/benchmarks.md). This parser:

- never raises on bad input: a malformed line is counted in :class:`ParseStats` (with the first few kept as
  examples naming file and line number) and skipped;
- parses each distinct series text (``name{labels}``) once and caches it, so a multi-scrape file costs one
  dict lookup and one ``float()`` per sample;
- accepts per-sample timestamps (milliseconds since the epoch, as in the exposition format) and the gpuyield
  scrape header ``# scrape at <ts> [{label="value",...}]`` that splits a file into several scrapes and may
  attach target labels (like Prometheus' ``pod``/``namespace``/``instance``) to every sample of that scrape.
  ``<ts>`` is epoch seconds (``1773144000`` or ``1773144000.5``) or ISO 8601 (``2026-03-10T12:00:00Z``).

Samples accumulate into a :class:`SampleBuffer` (column arrays, ready for DuckDB bulk insert).
"""

from __future__ import annotations

import math
import re
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

__all__ = [
    "MAX_MALFORMED_EXAMPLES",
    "ParseStats",
    "SampleBuffer",
    "SeriesKey",
    "parse_labels",
    "parse_scrape_header",
    "parse_timestamp_s",
]

MAX_MALFORMED_EXAMPLES = 5

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_SCRAPE_RE = re.compile(r"^#\s*scrape at\s+(\S+)\s*(\{.*\})?\s*$")
_UNESCAPE_RE = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """One series: metric name plus its labels, sorted by label name (target labels merged in)."""

    name: str
    labels: tuple[tuple[str, str], ...]

    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(slots=True)
class ParseStats:
    """Counts for one or many parsed texts. ``malformed_examples`` holds ``"file:line: text"`` strings."""

    num_lines: int = 0
    num_samples: int = 0
    num_malformed: int = 0
    num_scrapes: int = 0
    malformed_examples: list[str] = field(default_factory=list)

    def merge(self, other: ParseStats) -> None:
        self.num_lines += other.num_lines
        self.num_samples += other.num_samples
        self.num_malformed += other.num_malformed
        self.num_scrapes += other.num_scrapes
        room = MAX_MALFORMED_EXAMPLES - len(self.malformed_examples)
        self.malformed_examples.extend(other.malformed_examples[: max(room, 0)])


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _UNESCAPE_RE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_labels(text: str) -> dict[str, str] | None:
    """Parse the inside of ``{...}``; ``None`` if it is not a valid label set."""
    labels: dict[str, str] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _LABEL_RE.match(text, pos)
        if m is None:
            return None
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
        if m.group(3) == "" and pos < len(text):
            return None
    return labels


def parse_timestamp_s(text: str) -> float | None:
    """Epoch seconds or ISO 8601 (naive means UTC) → epoch seconds; ``None`` if neither."""
    try:
        value = float(text)
        return value if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_scrape_header(line: str) -> tuple[float, dict[str, str]] | None:
    """``# scrape at <ts> [{labels}]`` → (epoch seconds, target labels); ``None`` if the line is not one
    or is malformed (the caller counts it)."""
    m = _SCRAPE_RE.match(line.strip())
    if m is None:
        return None
    ts_s = parse_timestamp_s(m.group(1))
    if ts_s is None:
        return None
    labels: dict[str, str] = {}
    if m.group(2):
        parsed = parse_labels(m.group(2)[1:-1])
        if parsed is None:
            return None
        labels = parsed
    return ts_s, labels


class SampleBuffer:
    """Accumulates samples from many texts as columns: series index, timestamp (ms), value.

    ``series[i]`` is the :class:`SeriesKey` of index ``i``; ``types`` maps metric family names to their
    ``# TYPE``. Each ``add_text`` call is one source (a file, a URL fetch); its samples without their own
    timestamp get the current scrape's time.
    """

    def __init__(self) -> None:
        self.series: list[SeriesKey] = []
        self.series_source: list[str] = []
        self.types: dict[str, str] = {}
        self.stats = ParseStats()
        self._ids: dict[str, int] = {}
        self._cache: dict[tuple[str, str], dict[str, int]] = {}
        self._sid = array("i")
        self._ts = array("q")
        self._val = array("d")

    def __len__(self) -> int:
        return len(self._val)

    def _series_id(self, key: SeriesKey, source: str) -> int:
        text = source + "\x00" + key.name + "{" + ",".join(f"{k}={v!r}" for k, v in key.labels) + "}"
        sid = self._ids.get(text)
        if sid is None:
            sid = len(self.series)
            self._ids[text] = sid
            self.series.append(key)
            self.series_source.append(source)
        return sid

    def _parse_series(self, text: str, target: dict[str, str]) -> SeriesKey | None:
        brace = text.find("{")
        if brace < 0:
            name, labels = text.strip(), {}
        else:
            if not text.endswith("}"):
                return None
            name = text[:brace].strip()
            parsed = parse_labels(text[brace + 1 : -1])
            if parsed is None:
                return None
            labels = parsed
        if not _NAME_RE.match(name):
            return None
        merged = dict(target)
        merged.update(labels)  # the exposition's own labels win over target labels (honor_labels)
        return SeriesKey(name, tuple(sorted(merged.items())))

    def _parse_sample_line(
        self, line: str, target: dict[str, str], source: str
    ) -> tuple[int, float, int | None, bool] | None:
        """Slow path for one sample line: (series id, value, own timestamp ms or None, cacheable)."""
        exemplar = line.find(" # {")
        if exemplar >= 0:  # OpenMetrics exemplar: ignored
            line = line[:exemplar].rstrip()
        brace = line.rfind("}")
        if brace >= 0:
            series_text = line[: brace + 1]
            rest = line[brace + 1 :].split()
        else:
            parts = line.split()
            series_text = parts[0]
            rest = parts[1:]
        if not rest or len(rest) > 2:
            return None
        try:
            value = float(rest[0])
            ts_ms = int(float(rest[1])) if len(rest) == 2 else None
        except ValueError:
            return None
        key = self._parse_series(series_text, target)
        if key is None:
            return None
        sid = self._series_id(key, source)
        return sid, value, ts_ms, ts_ms is None and exemplar < 0

    def add_text(
        self,
        text: str,
        *,
        source: str,
        default_ts_s: float,
        target_labels: dict[str, str] | None = None,
        origin: str | None = None,
    ) -> ParseStats:
        """Parse one exposition text; returns this text's stats (also merged into ``self.stats``).

        ``source`` names the series' origin group: series are distinct per source, so the scrapes of one
        endpoint must share it (a directory of scrape files is one source). ``origin`` (default: source)
        names the file or URL in malformed-line messages.
        """
        stats = ParseStats()
        target = dict(target_labels or {})
        scrape_ts_ms = int(round(default_ts_s * 1000))
        target_key = repr(sorted(target.items()))
        cache = self._cache.setdefault((source, target_key), {})
        sid_append, ts_append, val_append = self._sid.append, self._ts.append, self._val.append
        num_samples = 0
        scrapes = 0

        def bad(lineno: int, line: str) -> None:
            stats.num_malformed += 1
            if len(stats.malformed_examples) < MAX_MALFORMED_EXAMPLES:
                stats.malformed_examples.append(f"{origin or source}:{lineno}: {line[:120]}")

        lines = text.splitlines()
        stats.num_lines = len(lines)
        for lineno, line in enumerate(lines, 1):
            if not line:
                continue
            # Fast path: "series value" with a series already seen in this scrape context.
            key, _, value_text = line.rpartition(" ")
            sid = cache.get(key)
            if sid is not None:
                try:
                    value = float(value_text)
                except ValueError:
                    bad(lineno, line)
                    continue
                sid_append(sid)
                ts_append(scrape_ts_ms)
                val_append(value)
                num_samples += 1
                continue
            stripped = line.strip()
            if not stripped:
                continue
            if stripped[0] == "#":
                if stripped == "# TYPE" or stripped.startswith("# TYPE "):
                    parts = stripped.split()
                    if len(parts) >= 4:
                        self.types[parts[2]] = parts[3]
                    else:
                        bad(lineno, line)
                elif stripped.startswith(("# scrape at", "#scrape at")):
                    header = parse_scrape_header(stripped)
                    if header is None:
                        bad(lineno, line)
                        continue
                    ts_s, labels = header
                    scrape_ts_ms = int(round(ts_s * 1000))
                    merged = dict(target_labels or {})
                    merged.update(labels)
                    target = merged
                    target_key = repr(sorted(target.items()))
                    cache = self._cache.setdefault((source, target_key), {})
                    scrapes += 1
                continue
            parsed_line = self._parse_sample_line(stripped, target, source)
            if parsed_line is None:
                bad(lineno, line)
                continue
            sid, value, ts_ms, cacheable = parsed_line
            if cacheable and key == stripped.rpartition(" ")[0]:
                cache[key] = sid
            sid_append(sid)
            ts_append(scrape_ts_ms if ts_ms is None else ts_ms)
            val_append(value)
            num_samples += 1
        stats.num_samples = num_samples
        stats.num_scrapes = scrapes if scrapes else (1 if num_samples else 0)
        self.stats.merge(stats)
        return stats

    def add_series(
        self, name: str, labels: dict[str, str], ts_ms: np.ndarray, values: np.ndarray, *, source: str
    ) -> None:
        """Append one already-parsed series (e.g. from the Prometheus HTTP API)."""
        sid = self._series_id(SeriesKey(name, tuple(sorted(labels.items()))), source)
        n = len(values)
        self._sid.extend(array("i", [sid]) * n)
        self._ts.extend(array("q", np.asarray(ts_ms, dtype=np.int64).tolist()))
        self._val.extend(array("d", np.asarray(values, dtype=np.float64).tolist()))
        self.stats.num_samples += n

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(series index int32, timestamp ms int64, value float64), in arrival order."""
        return (
            np.frombuffer(self._sid, dtype=np.int32).copy(),
            np.frombuffer(self._ts, dtype=np.int64).copy(),
            np.frombuffer(self._val, dtype=np.float64).copy(),
        )
