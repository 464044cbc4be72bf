"""Synthetic prefix structure for traces that have none: shared system prompts, multi-turn sessions and RAG
documents, all seeded. The result carries chained block hashes (:mod:`gpuyield.core.workload.hashing`), so the
simulator's prefix cache sees the same sharing a real engine would.

Model. Each prompt is a sequence of *segments* ``(uid, tokens)``:

``[system prompt] [RAG document] [earlier turns of the session + their outputs] [this request's own message]``

- **System prompts**: ``count`` prompts of ``tokens`` tokens; a request uses one with probability ``fraction``,
  chosen with Zipf(``zipf_s``) popularity (``zipf_s = 0``: uniform).
- **Sessions**: each arrival starts a new session with probability ``1 / mean_turns``, otherwise continues a
  random open session whose last turn arrived at least ``min_think_s`` earlier (sessions idle for more than
  ``max_idle_s`` close; a session whose context would exceed ``max_context_tokens`` closes and the request
  starts a new one). Turn ``k+1``'s prompt is turn ``k``'s full context (prompt + output) followed by its own
  message, so its first block hashes equal turn ``k``'s. The arrival times are not changed.
- **RAG documents**: with probability ``fraction`` a session's first turn (or a session-less request) includes
  one of ``num_docs`` documents of ``doc_tokens`` tokens, chosen with Zipf(``zipf_s``) popularity.

``preserve_input_tokens``: when False (default) the table's input length is the request's *own message* and
the shared segments are added in front (input lengths grow). When True the shared segments are laid over the
start of the existing prompt and truncated to its length, so every request keeps its input length (use this for
traces whose lengths already include history and system prompts, such as Azure conv).
"""

from __future__ import annotations

import bisect

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gpuyield.core.workload.hashing import (
    ROOT_HASH,
    chain_hash,
    chain_hashes_np,
    content_key,
    mix64,
    mix64_np,
)
from gpuyield.core.workload.workload import Workload

__all__ = ["PrefixSpec", "RagSpec", "SessionSpec", "SystemPromptSpec", "apply_prefix_structure"]


class SystemPromptSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    count: int = Field(8, ge=1)  # distinct system prompts
    tokens: int = Field(1024, ge=1)  # tokens per system prompt
    zipf_s: float = Field(1.0, ge=0)  # popularity skew; 0 = uniform
    fraction: float = Field(1.0, ge=0, le=1)  # share of sessions/requests that use a system prompt


class SessionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    mean_turns: float = Field(4.0, ge=1)  # mean turns per session (geometric)
    min_think_s: float = Field(5.0, ge=0)  # a session's next turn comes at least this long after its last
    max_idle_s: float = Field(600.0, gt=0)  # a session idle for longer closes
    max_context_tokens: int | None = Field(None, ge=1)  # a context that would grow past this starts a new session


class RagSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    num_docs: int = Field(1000, ge=1)
    doc_tokens: int = Field(2048, ge=1)
    zipf_s: float = Field(1.1, ge=0)
    fraction: float = Field(1.0, ge=0, le=1)


class PrefixSpec(BaseModel):
    """Synthetic prefix structure; any part may be omitted."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    system_prompts: SystemPromptSpec | None = None
    sessions: SessionSpec | None = None
    rag: RagSpec | None = None
    preserve_input_tokens: bool = False
    block_size_tokens: int = Field(512, ge=1)

    def describe(self) -> str:
        parts = []
        if self.system_prompts:
            s = self.system_prompts
            parts.append(f"{s.count} system prompts x {s.tokens} tok (zipf {s.zipf_s:g}, {s.fraction:.0%})")
        if self.sessions:
            parts.append(f"multi-turn sessions (mean {self.sessions.mean_turns:g} turns)")
        if self.rag:
            r = self.rag
            parts.append(f"RAG {r.num_docs} docs x {r.doc_tokens} tok (zipf {r.zipf_s:g}, {r.fraction:.0%})")
        mode = "overlaid on existing prompts" if self.preserve_input_tokens else "prepended to each message"
        return ("; ".join(parts) or "no shared prefixes") + f"; {mode}; blocks of {self.block_size_tokens} tokens"


def _zipf_choice(rng: np.random.Generator, n: int, s: float, size: int) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    return rng.choice(n, size=size, p=w / w.sum())


Segment = tuple[int, int]  # (uid, tokens)


_KEY_SEED = 0x51ED27
_KEY_MUL = 0x632BE59BD9B4E019
_PIECE_SALT = 0x3C6EF372FE94F82B
_M64 = (1 << 64) - 1
_VECTOR_MIN_BLOCKS = 8  # runs at least this long are hashed with numpy (same values as the Python path)


def _inside_keys_np(uid: int, offsets: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = np.uint64(uid & _M64) + np.uint64(_KEY_MUL) * (offsets.astype(np.uint64) + np.uint64(1))
    return mix64_np(np.uint64(_KEY_SEED) ^ mix64_np(x))


def _block_hashes(
    segments: list[Segment], total_tokens: int, bs: int, prev: tuple[int, ...], prev_fixed_blocks: int
) -> tuple[int, ...]:
    """Hashes of the full blocks of a segment layout; the first ``prev_fixed_blocks`` are taken from ``prev``.

    A block that straddles segments is chained on the block before it: ``chain_hash(h[k-1], key)`` with a key
    naming every (segment, offset, length) piece it holds. A block lying entirely inside one segment is
    ``chain_hash(h[first-1], key(uid, offset))``, where ``first`` is the segment's first whole block: the
    parent captures everything before the segment and the key the block's place in it, so equal hashes still
    mean equal prefixes, and a long segment's blocks can be hashed in one vectorised step. The result depends
    only on the layout, never on how much was copied from ``prev``.
    """
    num_blocks = total_tokens // bs
    out = list(prev[:prev_fixed_blocks])
    seg_starts = []
    pos = 0
    for uid, n in segments:
        if n > 0:
            seg_starts.append((pos, uid, n))
        pos += n
    si = 0
    b = prev_fixed_blocks
    while b < num_blocks:
        lo, hi = b * bs, (b + 1) * bs
        while si < len(seg_starts) and seg_starts[si][0] + seg_starts[si][2] <= lo:
            si += 1
        start, uid, n = seg_starts[si]
        if start <= lo and hi <= start + n:  # inside one segment: hash the whole run of such blocks
            first = -(-start // bs)
            parent = out[first - 1] if first > 0 else ROOT_HASH
            stop = min(num_blocks, (start + n) // bs)
            if stop - b >= _VECTOR_MIN_BLOCKS:
                offs = np.arange(b, stop, dtype=np.int64) * bs - start
                hs = chain_hashes_np(_inside_keys_np(uid, offs).astype(np.int64), np.full(stop - b, parent, dtype=np.int64))
                out.extend(hs.tolist())
            else:
                for k in range(b, stop):
                    key = mix64(_KEY_SEED ^ mix64(uid + _KEY_MUL * (k * bs - start + 1)))
                    out.append(chain_hash(parent, key))
            b = stop
            continue
        key = _KEY_SEED
        j = si
        while j < len(seg_starts) and seg_starts[j][0] < hi:
            st, u, sn = seg_starts[j]
            a, z = max(lo, st), min(hi, st + sn)  # this piece: segment u's tokens [a - st, z - st)
            key = mix64(key ^ mix64(u + _KEY_MUL * (a - st + 1)) ^ mix64(z - a + _PIECE_SALT))
            j += 1
        out.append(chain_hash(out[-1] if out else ROOT_HASH, key))
        b += 1
    return tuple(out)


class _SessionPicker:
    """Open sessions ordered by their last turn's arrival, for O(1)-amortised expiry and uniform choice among
    sessions idle for at least the think time. Entries are appended in time order; an entry is stale once its
    session has a newer turn or is closed (lazy deletion)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.times: list[float] = []
        self.codes: list[int] = []
        self.head = 0
        self.last: dict[int, float] = {}  # open session -> time of its valid entry
        self.rng = rng  # for retries only, so the main stream stays aligned

    def _valid(self, k: int) -> bool:
        return self.last.get(self.codes[k]) == self.times[k]

    def touch(self, code: int, t: float) -> None:
        self.last[code] = t
        self.times.append(t)
        self.codes.append(code)

    def close(self, code: int) -> None:
        self.last.pop(code, None)

    def expire(self, before_t: float) -> list[int]:
        """Close sessions whose last turn is before ``before_t``; returns their codes."""
        closed = []
        while self.head < len(self.times) and self.times[self.head] < before_t:
            if self._valid(self.head):
                closed.append(self.codes[self.head])
                del self.last[self.codes[self.head]]
            self.head += 1
        if self.head > 4096 and self.head > len(self.times) // 2:
            del self.times[: self.head], self.codes[: self.head]
            self.head = 0
        return closed

    def pick(self, latest_t: float, u: float) -> int | None:
        """A uniformly random open session whose last turn is at or before ``latest_t``, or None."""
        hi = bisect.bisect_right(self.times, latest_t, lo=self.head)
        span = hi - self.head
        if span <= 0:
            return None
        k = self.head + int(u * span)
        for _ in range(64):  # rejection sampling over stale entries
            if self._valid(k):
                return self.codes[k]
            k = self.head + int(self.rng.integers(span))
        valid = [j for j in range(self.head, hi) if self._valid(j)]
        return self.codes[valid[int(u * len(valid))]] if valid else None


def apply_prefix_structure(w: Workload, spec: PrefixSpec, seed: int = 0) -> Workload:
    """A copy of ``w`` with synthetic block hashes (and, for sessions, session ids; input lengths grow unless
    ``spec.preserve_input_tokens``). Arrival times, output lengths, models and tenants are unchanged."""
    n = len(w)
    rng = np.random.default_rng(seed)
    bs = spec.block_size_tokens
    salt = content_key("gpuyield.prefix", seed)

    def uid(kind: str, *ids: int) -> int:
        return content_key(kind, salt, *ids)

    def per_request_uids(kind: str) -> list[int]:  # one unique id per request, vectorised
        with np.errstate(over="ignore"):
            x = np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(uid(kind))
        return [int(v) for v in mix64_np(x).tolist()]

    msg_uids = per_request_uids("msg")
    out_uids = per_request_uids("out")

    sp = spec.system_prompts
    sys_choice = _zipf_choice(rng, sp.count, sp.zipf_s, n) if sp else np.zeros(n, dtype=np.int64)
    sys_used = (rng.random(n) < sp.fraction) if sp else np.zeros(n, dtype=bool)
    rg = spec.rag
    doc_choice = _zipf_choice(rng, rg.num_docs, rg.zipf_s, n) if rg else np.zeros(n, dtype=np.int64)
    doc_used = (rng.random(n) < rg.fraction) if rg else np.zeros(n, dtype=bool)
    ss = spec.sessions
    u_new = rng.random(n)
    u_pick = rng.random(n)

    new_inputs = np.empty(n, dtype=np.int64)
    session_codes = np.full(n, -1, dtype=np.int32)
    all_hashes: list[tuple[int, ...]] = []
    # open sessions: code -> (last_arrival_s, segments, context_tokens, prompt_hashes, prompt_tokens)
    open_sessions: dict[int, tuple[float, list[Segment], int, tuple[int, ...], int]] = {}
    num_sessions = 0
    picker = _SessionPicker(np.random.default_rng([seed, 1]))

    for i in range(n):
        t = float(w.arrival_s[i])
        own = int(w.input_tokens[i])
        out_tokens = int(w.output_tokens[i])
        cont: int | None = None
        if ss is not None:
            for code in picker.expire(t - ss.max_idle_s):
                open_sessions.pop(code, None)
            if u_new[i] >= 1.0 / ss.mean_turns:
                cont = picker.pick(t - ss.min_think_s, float(u_pick[i]))
        segments: list[Segment]
        prev_hashes: tuple[int, ...] = ()
        fixed = 0
        if cont is not None:
            _, prev_segs, ctx, prev_hashes, prev_prompt = open_sessions[cont]
            segments = list(prev_segs)
            fixed = prev_prompt // bs
            total_base = ctx
            if (
                ss is not None
                and ss.max_context_tokens is not None
                and not spec.preserve_input_tokens
                and ctx + own > ss.max_context_tokens
            ):
                del open_sessions[cont]
                picker.close(cont)
                cont = None
        if cont is None:
            segments = []
            if sp is not None and sys_used[i]:
                segments.append((uid("sys", int(sys_choice[i])), sp.tokens))
            if rg is not None and doc_used[i]:
                segments.append((uid("doc", int(doc_choice[i])), rg.doc_tokens))
            total_base = sum(n_ for _, n_ in segments)
            prev_hashes, fixed = (), 0
        if spec.preserve_input_tokens:
            total = own
            msg = max(0, own - total_base)
            if total < total_base:  # truncated shared part: hashes beyond the truncation point must be redone
                fixed = min(fixed, total // bs)
        else:
            total = total_base + own
            msg = own
        segments.append((msg_uids[i], msg))
        hashes = _block_hashes(segments, total, bs, prev_hashes, fixed)
        all_hashes.append(hashes)
        new_inputs[i] = total
        if ss is not None:
            if cont is None:
                cont = num_sessions
                num_sessions += 1
            session_codes[i] = cont
            # keep the layout up to this prompt's length, then the output
            kept: list[Segment] = []
            acc = 0
            for u_, n_ in segments:
                take = min(n_, total - acc)
                if take > 0:
                    kept.append((u_, take))
                acc += take
            kept.append((out_uids[i], out_tokens))
            open_sessions[cont] = (t, kept, total + out_tokens, hashes, total)
            picker.touch(cont, t)

    lens = np.fromiter((len(h) for h in all_hashes), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    values = np.fromiter((x for h in all_hashes for x in h), dtype=np.int64, count=int(offsets[-1]))
    meta = w.meta.with_note(f"synthetic prefix structure (seed {seed}): {spec.describe()}")
    changes: dict[str, object] = {
        "input_tokens": new_inputs,
        "hash_offsets": offsets,
        "hash_values": values,
        "block_size_tokens": bs,
        "meta": meta,
    }
    if ss is not None:
        changes["session_codes"] = session_codes
        changes["sessions"] = tuple(f"s{k}" for k in range(num_sessions))
    return w.replace(**changes)
