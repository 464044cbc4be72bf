"""Subscriber for vLLM's KV-cache event stream (ZeroMQ PUB), feeding the exact prefix index of the router.

vLLM started with ``--kv-events-config '{"enable_kv_cache_events": true, "publisher": "zmq",
"endpoint": "tcp://*:5557", "topic": "kv-events"}'`` publishes every engine step's cache changes as a
three-frame message: the topic, an 8-byte big-endian sequence number, and a msgpack payload (encoded by
msgspec) of a ``KVEventBatch``: ``ts``, ``events``, ``data_parallel_rank``. Each event is a tagged struct
``BlockStored`` (block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, lora_name, ...),
``BlockRemoved`` (block_hashes, medium, ...) or ``AllBlocksCleared``. vLLM releases encode structs either as
maps (with a ``type`` tag key) or as arrays (tag first); both are read here. Decoding is plain ``msgpack``
(pyzmq for the socket; both optional, in the ``serve`` extra).

Robustness: a malformed message is counted and skipped, never raised into the gateway. A gap in the sequence
numbers (a dropped message, or the publisher restarted) clears the replica's view, which then refills from
new events -- the index never holds blocks it cannot vouch for. Blocks of a LoRA adapter or of a non-GPU
medium (CPU offload tier) are skipped: the gateway's prompt hashes describe base-model GPU blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from gpuyield.core.policy.kv_events import KVEventIndex

__all__ = ["KVEventStats", "KVEventSubscriber", "apply_message"]

# positional field order of the array encoding, after the tag
_FIELDS = {
    "BlockStored": ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "lora_name"),
    "BlockRemoved": ("block_hashes", "medium"),
    "AllBlocksCleared": (),
}


@dataclass(slots=True)
class KVEventStats:
    batches: int = 0
    events: int = 0
    gaps: int = 0
    errors: int = 0
    skipped: int = 0  # LoRA or non-GPU blocks
    last_seq: int | None = None


def _hashable(h: Any) -> Hashable:
    return tuple(h) if isinstance(h, list) else h


def _decode_event(ev: Any) -> tuple[str, dict[str, Any]]:
    """(tag, fields) of one event, from the map form ({"type": tag, ...}) or the array form ([tag, ...])."""
    if isinstance(ev, dict):
        tag, fields = str(ev.get("type", "")), ev
    elif isinstance(ev, list) and ev:
        tag = str(ev[0])
        fields = dict(zip(_FIELDS.get(tag, ()), ev[1:], strict=False))
    else:
        raise ValueError(f"event is neither a map nor an array: {type(ev).__name__}")
    if tag not in _FIELDS:
        raise ValueError(f"unknown KV event type {tag!r}")
    return tag, fields


def _apply_event(index: KVEventIndex, replica: str, ev: Any, stats: KVEventStats) -> None:
    tag, f = _decode_event(ev)
    if tag == "AllBlocksCleared":
        index.cleared(replica)
        return
    if f.get("medium") not in (None, "GPU") or f.get("lora_id") is not None or f.get("lora_name") is not None:
        stats.skipped += 1
        return
    hashes = [_hashable(h) for h in f["block_hashes"]]
    if tag == "BlockRemoved":
        index.removed(replica, hashes)
        return
    parent = f.get("parent_block_hash")
    index.stored(replica, hashes, None if parent is None else _hashable(parent), list(f["token_ids"]),
                 int(f["block_size"]))  # fmt: skip


def apply_message(index: KVEventIndex, replica: str, frames: Sequence[bytes], stats: KVEventStats) -> bool:
    """Decode one ZMQ message (topic, sequence, payload) and apply it; False (and counted) if malformed."""
    import msgpack

    try:
        if len(frames) != 3 or len(frames[1]) != 8:
            raise ValueError(f"expected [topic, 8-byte seq, payload], got {len(frames)} frame(s)")
        seq = int.from_bytes(frames[1], "big", signed=True)
        batch = msgpack.unpackb(frames[2], raw=False, strict_map_key=False)
        if isinstance(batch, dict):
            events = batch["events"]
        elif isinstance(batch, list) and len(batch) >= 2:
            events = batch[1]
        else:
            raise ValueError("payload is not a KVEventBatch")
        if not isinstance(events, list):
            raise ValueError("KVEventBatch.events is not a list")
    except Exception:  # noqa: BLE001 - anything malformed is counted and skipped
        stats.errors += 1
        return False
    if stats.last_seq is not None and seq != stats.last_seq + 1:
        stats.gaps += 1  # missed or replayed messages, or a restarted publisher: restart from an empty view
        index.cleared(replica)
    stats.last_seq = seq
    stats.batches += 1
    for ev in events:
        try:
            _apply_event(index, replica, ev, stats)
            stats.events += 1
        except Exception:  # noqa: BLE001
            stats.errors += 1
    return True


class KVEventSubscriber:
    """One replica's event stream: a ZMQ SUB socket connected to ``endpoint``, read on the event loop."""

    def __init__(self, replica: str, endpoint: str, index: KVEventIndex, topic: str = "") -> None:
        self.replica = replica
        self.endpoint = endpoint
        self.topic = topic
        self.index = index
        self.stats = KVEventStats()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.index.track(self.replica)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.index.forget(self.replica)

    async def _run(self) -> None:
        import zmq
        import zmq.asyncio

        ctx = zmq.asyncio.Context.instance()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, self.topic.encode())
        sock.connect(self.endpoint)
        try:
            while True:
                frames = await sock.recv_multipart()
                apply_message(self.index, self.replica, frames, self.stats)
        finally:
            with contextlib.suppress(Exception):
                sock.close(0)
