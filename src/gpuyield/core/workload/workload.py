"""``Workload``: requests in arrival order, stored column-wise so a million requests fit in a few tens of MB.

Columns are numpy arrays (one entry per request); string attributes (model, tenant, session) are stored as
int32 codes into small label tables; prefix block hashes are a CSR pair (``hash_offsets``, ``hash_values``).
``workload[i]`` materialises one :class:`~gpuyield.core.workload.request.Request`; iterating yields them in
arrival order. Consumers that care about speed (the simulator) read the columns directly.

Memory: 48 bytes per request plus 8 bytes per prefix block (1 M requests without hashes: 48 MB).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gpuyield.core.workload.request import Request
from gpuyield.errors import WorkloadError

__all__ = ["Workload", "WorkloadMeta", "encode_labels"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]


@dataclass(frozen=True, slots=True)
class WorkloadMeta:
    """Where a workload came from."""

    name: str  # short name, e.g. "azure-conv"
    source: str = ""  # file path, builtin:NAME or a description of the generator
    licence: str = ""  # licence of the underlying data, e.g. "CC-BY-4.0"
    notes: tuple[str, ...] = field(default_factory=tuple)  # what loading/transforms did (sorted rows, ...)

    def with_note(self, note: str) -> WorkloadMeta:
        return WorkloadMeta(self.name, self.source, self.licence, (*self.notes, note))


def encode_labels(values: Sequence[str | None]) -> tuple[I32, tuple[str | None, ...]]:
    """Codes and label table for a column of strings; the table is in order of first appearance."""
    table: dict[str | None, int] = {}
    codes = np.empty(len(values), dtype=np.int32)
    for i, v in enumerate(values):
        c = table.get(v)
        if c is None:
            c = len(table)
            table[v] = c
        codes[i] = c
    return codes, tuple(table)


def _as(arr: object, dtype: type, n: int, name: str) -> npt.NDArray[np.generic]:
    a: npt.NDArray[np.generic] = np.ascontiguousarray(np.asarray(arr), dtype=dtype)
    if a.shape != (n,):
        raise WorkloadError(f"workload column {name}: expected shape ({n},), got {a.shape}")
    return a


class Workload:
    """Requests in arrival order plus metadata. Immutable: transforms return new workloads."""

    __slots__ = (
        "arrival_s",
        "block_size_tokens",
        "hash_offsets",
        "hash_values",
        "input_tokens",
        "meta",
        "model_codes",
        "models",
        "output_tokens",
        "priority",
        "session_codes",
        "sessions",
        "tenant_codes",
        "tenants",
    )

    arrival_s: F64  # seconds from the start of the workload, non-decreasing
    input_tokens: I64  # >= 1
    output_tokens: I64  # >= 1
    priority: I32
    model_codes: I32  # index into models
    models: tuple[str | None, ...]
    tenant_codes: I32  # index into tenants
    tenants: tuple[str | None, ...]
    session_codes: I32  # index into sessions; -1 = no session
    sessions: tuple[str | None, ...]
    hash_offsets: I64  # len n+1; request i's hashes are hash_values[hash_offsets[i]:hash_offsets[i+1]]
    hash_values: I64  # chained block hashes in [0, 2**63)
    block_size_tokens: int  # tokens per hash block
    meta: WorkloadMeta

    def __init__(
        self,
        *,
        arrival_s: object,
        input_tokens: object,
        output_tokens: object,
        meta: WorkloadMeta,
        block_size_tokens: int = 512,
        priority: object | None = None,
        model_codes: object | None = None,
        models: Sequence[str | None] = (None,),
        tenant_codes: object | None = None,
        tenants: Sequence[str | None] = ("default",),
        session_codes: object | None = None,
        sessions: Sequence[str | None] = (),
        hash_offsets: object | None = None,
        hash_values: object | None = None,
        validate: bool = True,
    ) -> None:
        arr = np.ascontiguousarray(np.asarray(arrival_s), dtype=np.float64)
        if arr.ndim != 1:
            raise WorkloadError(f"workload column arrival_s: expected a 1-D array, got shape {arr.shape}")
        n = arr.shape[0]
        self.arrival_s = arr
        self.input_tokens = _as(input_tokens, np.int64, n, "input_tokens")  # type: ignore[assignment]
        self.output_tokens = _as(output_tokens, np.int64, n, "output_tokens")  # type: ignore[assignment]
        zeros32 = np.zeros(n, dtype=np.int32)
        self.priority = zeros32 if priority is None else _as(priority, np.int32, n, "priority")  # type: ignore[assignment]
        self.model_codes = zeros32 if model_codes is None else _as(model_codes, np.int32, n, "model_codes")  # type: ignore[assignment]
        self.tenant_codes = (
            zeros32 if tenant_codes is None else _as(tenant_codes, np.int32, n, "tenant_codes")  # type: ignore[assignment]
        )
        self.session_codes = (
            np.full(n, -1, dtype=np.int32)
            if session_codes is None
            else _as(session_codes, np.int32, n, "session_codes")  # type: ignore[assignment]
        )
        self.models = tuple(models)
        self.tenants = tuple(tenants)
        self.sessions = tuple(sessions)
        if hash_offsets is None:
            self.hash_offsets = np.zeros(n + 1, dtype=np.int64)
            self.hash_values = np.zeros(0, dtype=np.int64)
        else:
            self.hash_offsets = _as(hash_offsets, np.int64, n + 1, "hash_offsets")  # type: ignore[assignment]
            self.hash_values = np.ascontiguousarray(np.asarray(hash_values), dtype=np.int64)
        self.block_size_tokens = int(block_size_tokens)
        self.meta = meta
        if validate:
            self._validate()

    # ------------------------------------------------------------------ checks
    def _validate(self) -> None:
        n = len(self)
        name = self.meta.name
        if self.block_size_tokens < 1:
            raise WorkloadError(f"workload {name}: block_size_tokens must be >= 1, got {self.block_size_tokens}")
        if n and not np.all(np.isfinite(self.arrival_s)):
            i = int(np.flatnonzero(~np.isfinite(self.arrival_s))[0])
            raise WorkloadError(f"workload {name}: request {i} has a non-finite arrival time")
        if n > 1 and np.any(np.diff(self.arrival_s) < 0):
            i = int(np.flatnonzero(np.diff(self.arrival_s) < 0)[0]) + 1
            raise WorkloadError(f"workload {name}: arrival times decrease at request {i}; sort the requests first")
        for col in ("input_tokens", "output_tokens"):
            a = getattr(self, col)
            if n and a.min() < 1:
                i = int(np.flatnonzero(a < 1)[0])
                raise WorkloadError(f"workload {name}: request {i} has {col}={int(a[i])}; expected >= 1")
        for col, table in (("model_codes", self.models), ("tenant_codes", self.tenants)):
            a = getattr(self, col)
            if n and (a.min() < 0 or a.max() >= len(table)):
                raise WorkloadError(f"workload {name}: {col} out of range of its label table ({len(table)} labels)")
        if n and (self.session_codes.min() < -1 or self.session_codes.max() >= len(self.sessions)):
            raise WorkloadError(f"workload {name}: session_codes out of range ({len(self.sessions)} sessions)")
        off = self.hash_offsets
        if off[0] != 0 or off[-1] != len(self.hash_values) or (n and np.any(np.diff(off) < 0)):
            raise WorkloadError(f"workload {name}: hash_offsets are not a valid CSR index into hash_values")
        if len(self.hash_values):
            counts = np.diff(off)
            max_blocks = -(-self.input_tokens // self.block_size_tokens)
            if np.any(counts > max_blocks):
                i = int(np.flatnonzero(counts > max_blocks)[0])
                raise WorkloadError(
                    f"workload {name}: request {i} has {int(counts[i])} block hashes but input_tokens="
                    f"{int(self.input_tokens[i])} allows at most {int(max_blocks[i])} blocks of {self.block_size_tokens}"
                )
            if self.hash_values.min() < 0:
                raise WorkloadError(f"workload {name}: block hashes must be in [0, 2**63)")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_requests(
        cls, requests: Iterable[Request], meta: WorkloadMeta, *, sort: bool = True
    ) -> Workload:
        """Build from :class:`Request` records (sorted by arrival, stable, unless ``sort=False``)."""
        reqs = list(requests)
        bs = {r.block_size_tokens for r in reqs if r.block_hashes}
        if len(bs) > 1:
            raise WorkloadError(f"workload {meta.name}: requests mix block sizes {sorted(bs)}; use one block size")
        block_size = bs.pop() if bs else (reqs[0].block_size_tokens if reqs else 512)
        model_codes, models = encode_labels([r.model for r in reqs])
        tenant_codes, tenants = encode_labels([r.tenant for r in reqs])
        sess = [r.session_id for r in reqs]
        sess_codes, sess_table = encode_labels(sess)
        if None in sess_table:
            none_code = sess_table.index(None)
            remap = np.array([i - (i > none_code) for i in range(len(sess_table))], dtype=np.int32)
            remap[none_code] = -1
            sess_codes = remap[sess_codes] if len(sess_codes) else sess_codes
            sess_table = tuple(s for s in sess_table if s is not None)
        lens = np.array([len(r.block_hashes) for r in reqs], dtype=np.int64)
        offsets = np.zeros(len(reqs) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        values = np.fromiter((h for r in reqs for h in r.block_hashes), dtype=np.int64, count=int(offsets[-1]))
        w = cls(
            arrival_s=np.array([r.arrival_s for r in reqs], dtype=np.float64),
            input_tokens=np.array([r.input_tokens for r in reqs], dtype=np.int64),
            output_tokens=np.array([r.output_tokens for r in reqs], dtype=np.int64),
            priority=np.array([r.priority for r in reqs], dtype=np.int32),
            model_codes=model_codes,
            models=models or (None,),
            tenant_codes=tenant_codes,
            tenants=tenants or ("default",),
            session_codes=sess_codes,
            sessions=sess_table,
            hash_offsets=offsets,
            hash_values=values,
            block_size_tokens=block_size,
            meta=meta,
            validate=not sort,
        )
        return w.sorted() if sort else w

    def sorted(self) -> Workload:
        """Stable sort by arrival time; returns ``self`` if already sorted (a note records a re-sort)."""
        if len(self) < 2 or not np.any(np.diff(self.arrival_s) < 0):
            self._validate()
            return self
        order = np.argsort(self.arrival_s, kind="stable")
        num_moved = int(np.count_nonzero(order != np.arange(len(self))))
        out = self.take(order, validate=False)
        out.meta = self.meta.with_note(f"{num_moved} requests were out of arrival order and were sorted")
        out._validate()
        return out

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def num_requests(self) -> int:
        return len(self)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival (0 for fewer than two requests)."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0

    @property
    def has_hashes(self) -> bool:
        return len(self.hash_values) > 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns."""
        cols = (
            self.arrival_s, self.input_tokens, self.output_tokens, self.priority, self.model_codes,
            self.tenant_codes, self.session_codes, self.hash_offsets, self.hash_values,
        )  # fmt: skip
        return int(sum(c.nbytes for c in cols))

    def block_hashes(self, i: int) -> I64:
        """Request ``i``'s block hashes as an int64 array view."""
        return self.hash_values[self.hash_offsets[i] : self.hash_offsets[i + 1]]

    def model_of(self, i: int) -> str | None:
        return self.models[int(self.model_codes[i])]

    def tenant_of(self, i: int) -> str:
        t = self.tenants[int(self.tenant_codes[i])]
        return "default" if t is None else t

    def session_of(self, i: int) -> str | None:
        c = int(self.session_codes[i])
        return None if c < 0 else self.sessions[c]

    def __getitem__(self, i: int) -> Request:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"request index {i} out of range for {n} requests")
        return Request(
            req_id=i,
            arrival_s=float(self.arrival_s[i]),
            input_tokens=int(self.input_tokens[i]),
            output_tokens=int(self.output_tokens[i]),
            block_hashes=tuple(self.block_hashes(i).tolist()),
            block_size_tokens=self.block_size_tokens,
            model=self.model_of(i),
            tenant=self.tenant_of(i),
            priority=int(self.priority[i]),
            session_id=self.session_of(i),
        )

    def __iter__(self) -> Iterator[Request]:
        for i in range(len(self)):
            yield self[i]

    def requests(self) -> list[Request]:
        return list(self)

    def __repr__(self) -> str:
        return (
            f"Workload(name={self.meta.name!r}, requests={len(self)}, duration_s={self.duration_s:.1f}, "
            f"hashes={len(self.hash_values)})"
        )

    # ------------------------------------------------------------------ structural helpers
    def take(self, index: npt.NDArray[np.integer] | Sequence[int], *, validate: bool = True) -> Workload:
        """A workload of the requests at ``index`` (in that order); label tables are kept as they are."""
        idx = np.asarray(index, dtype=np.int64)
        starts = self.hash_offsets[idx]
        lens = self.hash_offsets[idx + 1] - starts
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        total = int(offsets[-1])
        if total:
            pos = np.repeat(starts - offsets[:-1], lens) + np.arange(total, dtype=np.int64)
            values = self.hash_values[pos]
        else:
            values = np.zeros(0, dtype=np.int64)
        return Workload(
            arrival_s=self.arrival_s[idx],
            input_tokens=self.input_tokens[idx],
            output_tokens=self.output_tokens[idx],
            priority=self.priority[idx],
            model_codes=self.model_codes[idx],
            models=self.models,
            tenant_codes=self.tenant_codes[idx],
            tenants=self.tenants,
            session_codes=self.session_codes[idx],
            sessions=self.sessions,
            hash_offsets=offsets,
            hash_values=values,
            block_size_tokens=self.block_size_tokens,
            meta=self.meta,
            validate=validate,
        )

    def replace(self, **changes: object) -> Workload:
        """A copy with some columns or metadata replaced (validated)."""
        kw: dict[str, object] = {name: getattr(self, name) for name in self.__slots__}
        kw.update(changes)
        return Workload(**kw)  # type: ignore[arg-type]
