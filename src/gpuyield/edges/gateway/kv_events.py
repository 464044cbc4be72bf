"""Subscriber for vLLM's KV-cache event stream (ZeroMQ PUB), feeding the exact prefix index of the router.

vLLM started with ``--kv-events-config '{"enable_kv_cache_events": true, "publisher": "zmq",
"endpoint": "tcp://*:5557", "topic": "kv-events"}'`` publishes every engine step's cache changes as a
three-frame message: the topic, an 8-byte big-endian sequence number, and a msgpack payload (encoded by
msgspec) of a ``KVEventBatch``: ``ts``, ``events``, ``data_parallel_rank``. Each event is a tagged struct
``BlockStored`` (block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, lora_name, ...),
``BlockRemoved`` (block_hashes, medium, ...) or ``AllBlocksCleared``. vLLM releases encode structs either as
maps (with a ``type`` tag key) or as arrays (tag first); both are read here. Decoding is plain ``msgpack``
(pyzmq for the socket; both optional, in the ``serve`` extra).

A replica run with data parallelism (``--data-parallel-size N``) has one publisher per rank, on the endpoint's
tcp port + rank (``backends[].kv_events_dp_ranks``); one SUB socket per rank is read, and the batch's
``data_parallel_rank`` (or the socket's rank) says which cache an event describes.

Robustness: a malformed message is counted and skipped, never raised into the gateway. Sequence numbers grow
by one per batch and rank, from 0:
- a jump forward (messages lost) clears that rank's blocks and routes the replica by the guess for
  ``stale_s`` seconds (``router.kv_events_stale_s``) while the view refills;
- a jump back is a restarted publisher (the engine came back with an empty cache): the rank's blocks are
  cleared and the new stream followed at once;
- a first message with a sequence number above 0 means the stream was joined while running: blocks stored
  before are unknown, so the replica is routed by the guess for ``stale_s``.
With ``backends[].kv_events_replay_endpoint`` (vLLM's ``replay_endpoint``, a ZMQ ROUTER; port + rank per rank
too) lost messages are first asked for again: a DEALER sends the first missing sequence number (8 bytes,
big-endian) and reads the publisher's buffered batches (``[seq, payload]``, or ``[topic, seq, payload]`` in
later releases) up to its end marker (sequence -1, empty payload). When every missing batch comes back the
view stays exact; otherwise (the buffer no longer holds them, or no answer within ``replay_timeout_s``) the
rules above apply. A stream joined late is replayed from sequence 0 the same way (vLLM keeps
``buffer_steps`` batches, 10,000 by default), so a gateway that starts after the engine still gets an exact
view when the buffer reaches back to the start.

vLLM binds its PUB socket only for a wildcard (``tcp://*:5557``) or ``ipc://`` endpoint; for ``tcp://host:port``
it connects instead. The gateway connects, so start vLLM with ``tcp://*:PORT`` (or ``ipc://`` on one host) and
give the gateway ``tcp://ENGINE_HOST:PORT``. The replay endpoint is always bound by vLLM. The index therefore never claims blocks it cannot vouch for.

Blocks of a LoRA adapter or of a non-GPU medium (CPU offload tier) are skipped: the gateway's prompt hashes
describe base-model GPU blocks. If the socket fails, the replica goes back to the guess and the subscriber
reconnects after ``stale_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuyield.core.policy.kv_events import KVEventIndex

__all__ = ["KVEventListener", "KVEventStats", "KVEventSubscriber", "apply_message", "rank_endpoint"]

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
    gaps: int = 0  # lost messages, or a stream joined while running (view incomplete for stale_s)
    replayed: int = 0  # lost batches recovered from the publisher's replay buffer
    restarts: int = 0  # a publisher started again from a lower sequence number
    errors: int = 0
    skipped: int = 0  # LoRA or non-GPU blocks
    last_seq: dict[int, int] = field(default_factory=dict)  # data-parallel rank -> last sequence number


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


def _apply_event(index: KVEventIndex, replica: str, ev: Any, stats: KVEventStats, rank: int) -> None:
    tag, f = _decode_event(ev)
    if tag == "AllBlocksCleared":
        index.cleared(replica, rank)
        return
    if f.get("medium") not in (None, "GPU") or f.get("lora_id") is not None or f.get("lora_name") is not None:
        stats.skipped += 1
        return
    hashes = [_hashable(h) for h in f["block_hashes"]]
    if tag == "BlockRemoved":
        index.removed(replica, hashes, rank)
        return
    parent = f.get("parent_block_hash")
    index.stored(replica, hashes, None if parent is None else _hashable(parent), list(f["token_ids"]),
                 int(f["block_size"]), rank)  # fmt: skip


def rank_endpoint(endpoint: str, rank: int) -> str:
    """The publisher of data-parallel ``rank``: vLLM offsets a tcp endpoint's port by the rank."""
    if rank == 0 or not endpoint.startswith("tcp://"):
        return endpoint
    base, _, port = endpoint.rpartition(":")
    return f"{base}:{int(port) + rank}"


def apply_message(
    index: KVEventIndex,
    replica: str,
    frames: Sequence[bytes],
    stats: KVEventStats,
    socket_rank: int = 0,
    on_incomplete: Callable[[], None] | None = None,
) -> bool:
    """Decode one ZMQ message (topic, sequence, payload) and apply it; False (and counted) if malformed.

    ``on_incomplete`` is called when the replica's view can no longer be vouched for (a gap, or a stream
    joined while running); without it the replica is suspended until someone resumes it."""
    import msgpack

    try:
        if len(frames) != 3 or len(frames[1]) != 8:
            raise ValueError(f"expected [topic, 8-byte seq, payload], got {len(frames)} frame(s)")
        seq = int.from_bytes(frames[1], "big", signed=True)
        batch = msgpack.unpackb(frames[2], raw=False, strict_map_key=False)
        if isinstance(batch, dict):
            events, rank = batch["events"], batch.get("data_parallel_rank")
        elif isinstance(batch, list) and len(batch) >= 2:
            events, rank = batch[1], (batch[2] if len(batch) > 2 else None)
        else:
            raise ValueError("payload is not a KVEventBatch")
        if not isinstance(events, list):
            raise ValueError("KVEventBatch.events is not a list")
        if rank is None:
            rank = socket_rank
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
            raise ValueError(f"data_parallel_rank must be a non-negative int, got {rank!r}")
    except Exception:  # noqa: BLE001 - anything malformed is counted and skipped
        stats.errors += 1
        return False
    last = stats.last_seq.get(rank)
    incomplete = False
    if last is None:
        incomplete = seq > 0  # joined a running stream: what was stored before is unknown
    elif seq <= last:
        stats.restarts += 1  # the publisher restarted (empty cache): follow the new stream from here
        index.cleared(replica, rank)
    elif seq != last + 1:
        incomplete = True  # messages lost: drop this rank's blocks and refill from new events
        index.cleared(replica, rank)
    if incomplete:
        stats.gaps += 1
        (on_incomplete or (lambda: index.suspend(replica)))()
    stats.last_seq[rank] = seq
    stats.batches += 1
    for ev in events:
        try:
            _apply_event(index, replica, ev, stats, rank)
            stats.events += 1
        except Exception:  # noqa: BLE001
            stats.errors += 1
    return True


class KVEventSubscriber:
    """One replica's event streams: a ZMQ SUB socket per data-parallel rank, read on the event loop."""

    def __init__(
        self,
        replica: str,
        endpoint: str | None,
        index: KVEventIndex,
        topic: str = "",
        dp_ranks: int = 1,
        stale_s: float = 30.0,
        replay_endpoint: str | None = None,
        replay_timeout_s: float = 1.0,
    ) -> None:
        self.replica = replica
        self.endpoint = endpoint
        self.topic = topic
        self.index = index
        self.dp_ranks = max(1, int(dp_ranks))
        self.stale_s = float(stale_s)
        self.replay_endpoint = replay_endpoint
        self.replay_timeout_s = float(replay_timeout_s)
        self.stats = KVEventStats()
        self._task: asyncio.Task[None] | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._dealers: dict[int, Any] = {}  # rank -> replay socket (see _replay_socket)

    def start(self) -> None:
        """Follow the replica: read its own sockets, or (no ``endpoint``) wait for a
        :class:`KVEventListener` to :meth:`feed` it."""
        self.index.track(self.replica)
        if self.endpoint:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        for dealer in self._dealers.values():
            with contextlib.suppress(Exception):
                dealer.close(0)
        self._dealers.clear()
        self.index.forget(self.replica)

    async def feed(self, frames: Sequence[bytes], socket_rank: int = 0) -> None:
        """One message that arrived on a listener's socket (bound mode), with replay when configured."""
        await self.receive(frames, socket_rank, self._replay_socket(socket_rank))

    def _replay_socket(self, rank: int) -> Any:
        """The DEALER to ``rank``'s replay endpoint (made on first use, kept until :meth:`stop`), or None."""
        if not self.replay_endpoint:
            return None
        dealer = self._dealers.get(rank)
        if dealer is None:
            import zmq
            import zmq.asyncio

            dealer = zmq.asyncio.Context.instance().socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(rank_endpoint(self.replay_endpoint, rank))
            self._dealers[rank] = dealer
        return dealer

    def handle(self, frames: Sequence[bytes], socket_rank: int = 0) -> bool:
        """Apply one message (the socket loop calls this; tests may too)."""
        return apply_message(self.index, self.replica, frames, self.stats, socket_rank, self._incomplete)

    async def receive(self, frames: Sequence[bytes], rank: int, replay: Any = None) -> None:
        """One live message of socket ``rank``: first recover the batches it shows were lost (``replay``: that
        rank's DEALER socket, or None), then apply it."""
        if replay is not None and len(frames) == 3 and len(frames[1]) == 8:
            seq = int.from_bytes(frames[1], "big", signed=True)
            last = self.stats.last_seq.get(rank)
            if last is None and seq > 0:
                await self._replay(replay, rank, 0, seq)  # joined late: the buffer may still hold it all
            elif last is not None and seq > last + 1:
                await self._replay(replay, rank, last + 1, seq)
        self.handle(frames, rank)

    async def _replay(self, sock: Any, rank: int, first: int, stop: int) -> None:
        """Apply the batches ``first .. stop-1`` of ``rank`` from the publisher's replay buffer, in order, as far
        as they come back without a hole."""
        await sock.send_multipart([b"", first.to_bytes(8, "big")])
        deadline = asyncio.get_running_loop().time() + self.replay_timeout_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or not await sock.poll(int(left * 1000)):
                return  # no (complete) answer: the gap rules apply to the live message
            parts = await sock.recv_multipart()
            if parts and parts[0] == b"":
                parts = parts[1:]  # the envelope's empty delimiter
            if len(parts) not in (2, 3) or len(parts[-2]) != 8:
                self.stats.errors += 1
                continue
            seq = int.from_bytes(parts[-2], "big", signed=True)
            if seq < 0 or not parts[-1]:
                return  # end of the replay
            last = self.stats.last_seq.get(rank)
            in_order = first <= seq < stop and seq == (first if last is None else last + 1)
            if in_order and self.handle([b"", parts[-2], parts[-1]], rank):
                self.stats.replayed += 1

    def _incomplete(self) -> None:
        """Route the replica by the guess for ``stale_s`` while its view refills (a later gap restarts it)."""
        self.index.suspend(self.replica)
        if self._resume is not None:
            self._resume.cancel()
        self._resume = asyncio.get_running_loop().call_later(self.stale_s, self.index.resume, self.replica)

    async def _run(self) -> None:
        import zmq
        import zmq.asyncio

        ctx = zmq.asyncio.Context.instance()
        while True:
            socks: list[Any] = []
            try:
                poller = zmq.asyncio.Poller()
                for rank in range(self.dp_ranks):
                    sock = ctx.socket(zmq.SUB)
                    sock.setsockopt(zmq.LINGER, 0)
                    sock.setsockopt(zmq.SUBSCRIBE, self.topic.encode())
                    sock.connect(rank_endpoint(self.endpoint or "", rank))
                    poller.register(sock, zmq.POLLIN)
                    socks.append(sock)
                while True:
                    for sock, _ in await poller.poll():
                        rank = socks.index(sock)
                        await self.receive(await sock.recv_multipart(), rank, self._replay_socket(rank))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - never take the gateway down: guess, then reconnect
                self.stats.errors += 1
                print(f"gpuyield serve: KV-event stream of {self.replica} failed ({type(exc).__name__}: {exc}); "
                      f"routing it by the guess and reconnecting in {self.stale_s:g} s", file=sys.stderr)
                self.index.cleared(self.replica)
                self.stats.last_seq.clear()
                self.index.suspend(self.replica)
                await asyncio.sleep(self.stale_s)
                self.index.resume(self.replica)
            finally:
                for sock in socks:
                    with contextlib.suppress(Exception):
                        sock.close(0)


@dataclass(slots=True)
class KVEventListenerStats:
    messages: int = 0
    unknown_topic: int = 0  # messages whose topic names no backend
    errors: int = 0


class KVEventListener:
    """Bound mode: the gateway binds SUB sockets (``router.kv_events_bind``, port + rank for data-parallel
    ranks) and the engines connect to it, as vLLM does when its ``endpoint`` is ``tcp://GATEWAY_HOST:PORT``.
    Every engine publishes under its own topic (``backends[].kv_events_topic``); each message goes to the
    subscriber of that backend, which applies it exactly as in connect mode."""

    def __init__(self, endpoint: str, by_topic: dict[str, KVEventSubscriber], dp_ranks: int = 1) -> None:
        self.endpoint = endpoint
        self.by_topic = {t.encode(): sub for t, sub in by_topic.items()}
        self.dp_ranks = max(1, int(dp_ranks))
        self.stats = KVEventListenerStats()
        self._task: asyncio.Task[None] | None = None
        self._socks: list[Any] = []

    def start(self) -> None:
        import zmq
        import zmq.asyncio

        ctx = zmq.asyncio.Context.instance()
        for rank in range(self.dp_ranks):  # bind now, so a bad endpoint fails at startup, not silently later
            sock = ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.bind(rank_endpoint(self.endpoint, rank))
            self._socks.append(sock)
        for sub in self.by_topic.values():
            sub.start()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for sub in self.by_topic.values():
            sub.stop()
        for sock in self._socks:
            with contextlib.suppress(Exception):
                sock.close(0)
        self._socks.clear()

    async def _run(self) -> None:
        import zmq
        import zmq.asyncio

        poller = zmq.asyncio.Poller()
        for sock in self._socks:
            poller.register(sock, zmq.POLLIN)
        while True:
            for sock, _ in await poller.poll():
                frames = await sock.recv_multipart()
                self.stats.messages += 1
                sub = self.by_topic.get(frames[0]) if frames else None
                if sub is None:
                    self.stats.unknown_topic += 1
                    continue
                try:
                    await sub.feed(frames, self._socks.index(sock))
                except Exception as exc:  # noqa: BLE001 - one bad stream must not stop the others
                    self.stats.errors += 1
                    print(f"gpuyield serve: KV event for {sub.replica} not applied ({type(exc).__name__}: {exc})",
                          file=sys.stderr)
