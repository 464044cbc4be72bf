"""vLLM KV-cache events (ZMQ) feeding the gateway's exact prefix index: wire format, gaps, routing."""

from __future__ import annotations

import time

import httpx
import pytest
from gateway_harness import KEY_A, MODEL, free_port, gateway_config, start_emulator, start_gateway

msgpack = pytest.importorskip("msgpack")
zmq = pytest.importorskip("zmq")

from gpuyield.core.policy.kv_events import KVEventIndex  # noqa: E402
from gpuyield.core.workload.hashing import hash_token_blocks  # noqa: E402
from gpuyield.edges.gateway.kv_events import (  # noqa: E402
    KVEventStats,
    KVEventSubscriber,
    apply_message,
    rank_endpoint,
)
from gpuyield.edges.gateway.tokens import TokenCounter  # noqa: E402

BS = 16


def _stored_map(hashes, parent, tokens):  # type: ignore[no-untyped-def]
    # msgspec's map encoding of vLLM's tagged BlockStored struct
    return {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": parent, "token_ids": tokens,
            "block_size": BS, "lora_id": None, "medium": "GPU", "lora_name": None}  # fmt: skip


def _frames(seq: int, events: list, array_form: bool = False, topic: bytes = b"kv-events",  # type: ignore[type-arg]
            rank: int | None = 0) -> list[bytes]:
    if array_form:
        batch: object = [time.time(), events] + ([] if rank is None else [rank])
    else:
        batch = {"ts": time.time(), "events": events, "data_parallel_rank": rank}
    return [topic, seq.to_bytes(8, "big"), msgpack.packb(batch, use_bin_type=True)]


def test_vllm_wire_format_both_encodings_gaps_and_garbage() -> None:
    tokens = list(range(64))
    ours = hash_token_blocks(tokens, BS)
    idx, st = KVEventIndex(BS), KVEventStats()
    h = [bytes([k]) * 32 for k in range(4)]  # vLLM's sha256 block hashes are bytes
    assert apply_message(idx, "r", _frames(0, [_stored_map(h[:2], None, tokens[:32])]), st)
    # array form (older vLLM: array_like structs, tag first)
    arr = ["BlockStored", h[2:], h[1], tokens[32:], BS, None, "GPU", None]
    assert apply_message(idx, "r", _frames(1, [arr], array_form=True), st)
    assert idx.match("r", ours) == 4 and st.batches == 2 and st.events == 2
    apply_message(idx, "r", _frames(2, [{"type": "BlockRemoved", "block_hashes": [h[3]], "medium": "GPU"}]), st)
    assert idx.match("r", ours) == 3
    apply_message(idx, "r", _frames(3, [{"type": "BlockStored", "block_hashes": [b"x"], "parent_block_hash": None,
                                         "token_ids": tokens[:16], "block_size": BS, "lora_id": 7,
                                         "medium": "GPU", "lora_name": "ad"}]), st)  # fmt: skip
    assert st.skipped == 1  # LoRA blocks are not the base model's prefix
    assert apply_message(idx, "r", _frames(9, [["AllBlocksCleared"]]), st)  # a gap: seq 4..8 missed
    assert st.gaps == 1 and idx.match("r", ours) == 0
    assert not apply_message(idx, "r", [b"kv-events", b"\x00\x01", b"junk"], st)
    assert not apply_message(idx, "r", [b"t", (10).to_bytes(8, "big"), b"\xc1"], st)  # invalid msgpack
    apply_message(idx, "r", _frames(10, [{"type": "Nope"}]), st)
    assert st.errors == 3


def test_gateway_routes_to_the_replica_whose_events_say_it_holds_the_prefix() -> None:
    emus = [start_emulator(fixed_step_ms=1.0) for _ in range(3)]
    port = free_port()
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.bind(f"tcp://127.0.0.1:{port}")
    cfg = gateway_config([e.url for e in emus],
                         router={"policy": "prefix_affinity", "max_retries": 2, "kv_events_stale_s": 0.2})  # fmt: skip
    cfg["backends"][2]["kv_events_endpoint"] = f"tcp://127.0.0.1:{port}"
    cfg["backends"][2]["kv_events_topic"] = "kv-events"
    srv, gw = start_gateway(cfg)
    def served(k: int) -> int:
        st = emus[k].app.engine.stats.request_success_total
        return st["length"] + st["stop"]

    def ask(prompt: str) -> int:
        before = [served(k) for k in range(3)]
        r = httpx.post(srv.url + "/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 2},
                       headers={"authorization": f"Bearer {KEY_A}"}, timeout=30)  # fmt: skip
        assert r.status_code == 200
        deadline = time.monotonic() + 5  # the emulator counts a request just after its response is sent
        while time.monotonic() < deadline:
            done = [k for k in range(3) if served(k) > before[k]]
            if done:
                return done[0]
            time.sleep(0.01)
        raise AssertionError("no emulator counted the request")

    try:
        # the router's guess: a short prefix P went to some replica other than r2
        for variant in range(20):
            short = f"system prompt variant {variant}: " + "be brief. " * 20
            if ask(short) != 2:
                break
        else:
            pytest.fail("the hash ring sent every variant to r2")
        longer = short + "and here is a long shared document. " * 30
        ids = TokenCounter(None, BS).token_ids(longer)
        n = len(ids) // BS
        engine_hashes = [f"blk{k}".encode() for k in range(n)]
        stored = [["AllBlocksCleared"], _stored_map(engine_hashes, None, ids[: n * BS])]
        # ZMQ's slow joiner: publish (a contiguous sequence) until the subscriber has applied the blocks
        deadline = time.monotonic() + 10
        seq = 0
        # (a first message past seq 0 means a stream joined late: r2 is guessed for kv_events_stale_s)
        while not (gw.kv_index.num_blocks("r2") == n and gw.kv_index.tracks("r2")) and time.monotonic() < deadline:
            pub.send_multipart(_frames(seq, stored))
            seq += 1
            time.sleep(0.05)
        assert gw.kv_index.num_blocks("r2") == n
        # the engines' view: r2 holds all of the longer prompt; the guess only knows P elsewhere
        assert ask(longer + " question?") == 2
        text = httpx.get(srv.url + "/metrics").text
        assert f'gpuyield_kv_index_blocks{{backend="r2"}} {float(n)}' in text
    finally:
        srv.stop()
        pub.close(0)
        for e in emus:
            e.stop()


def test_sequences_are_per_rank_and_restarts_and_late_joins_are_told_apart() -> None:
    tokens = list(range(32))
    ours = hash_token_blocks(tokens, BS)
    idx, st = KVEventIndex(BS), KVEventStats()
    idx.track("r")
    h = [bytes([k]) * 32 for k in range(2)]
    both = [_stored_map(h, None, tokens)]
    assert apply_message(idx, "r", _frames(0, both, rank=0), st)
    assert apply_message(idx, "r", _frames(0, both, rank=1), st)  # rank 1 counts its own sequence
    assert apply_message(idx, "r", _frames(1, [], rank=0), st)
    # no rank in the batch (older array form): the socket's rank
    assert apply_message(idx, "r", _frames(1, [], array_form=True, rank=None), st, socket_rank=1)
    assert (st.gaps, st.restarts, idx.tracks("r"), idx.match("r", ours)) == (0, 0, True, 2)
    assert st.last_seq == {0: 1, 1: 1}
    # rank 1's engine restarted (sequence back to 0, empty cache): its blocks go, the view stays exact
    assert apply_message(idx, "r", _frames(0, [["AllBlocksCleared"]], rank=1), st)
    assert st.restarts == 1 and idx.tracks("r") and idx.match("r", ours) == 2  # rank 0 still holds them
    # messages of rank 0 lost: its blocks go and the replica is guessed until resumed
    assert apply_message(idx, "r", _frames(5, [], rank=0), st)
    assert st.gaps == 1 and not idx.tracks("r") and idx.match("r", ours) == 0
    # joining a running stream: what was stored before is unknown
    idx2, st2 = KVEventIndex(BS), KVEventStats()
    idx2.track("r")
    assert apply_message(idx2, "r", _frames(7, both), st2)
    assert st2.gaps == 1 and not idx2.tracks("r")
    assert not apply_message(idx2, "r", _frames(8, both, rank=-1), st2) and st2.errors == 1


def test_rank_endpoints_offset_the_tcp_port() -> None:
    assert rank_endpoint("tcp://10.0.0.5:5557", 0) == "tcp://10.0.0.5:5557"
    assert rank_endpoint("tcp://10.0.0.5:5557", 3) == "tcp://10.0.0.5:5560"
    assert rank_endpoint("ipc:///tmp/kv", 2) == "ipc:///tmp/kv"


def test_subscriber_follows_every_data_parallel_rank_and_resumes_after_a_late_join() -> None:
    import asyncio

    tokens = list(range(64))
    ours = hash_token_blocks(tokens, BS)
    ctx = zmq.Context.instance()
    for _ in range(20):  # two consecutive free ports: rank r publishes on port + r
        port = free_port()
        pubs = []
        try:
            for r in range(2):
                p = ctx.socket(zmq.PUB)
                pubs.append(p)
                p.bind(f"tcp://127.0.0.1:{port + r}")
            break
        except zmq.ZMQError:
            for p in pubs:
                p.close(0)
    else:
        pytest.skip("no two consecutive free ports")

    async def run() -> tuple[int, bool, KVEventStats]:
        idx = KVEventIndex(BS)
        sub = KVEventSubscriber("r", f"tcp://127.0.0.1:{port}", idx, "kv-events", dp_ranks=2, stale_s=0.2)
        sub.start()
        try:
            # rank 0 holds the first two blocks, rank 1 the first four (each its own sequence from 0)
            e0 = [_stored_map([b"a", b"b"], None, tokens[:32])]
            e1 = [_stored_map([b"a", b"b", b"c", b"d"], None, tokens)]
            seq = 0
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (idx.tracks("r") and idx.match("r", ours) == 4
                                                       and len(sub.stats.last_seq) == 2):  # fmt: skip
                pubs[0].send_multipart(_frames(seq, [["AllBlocksCleared"], *e0], rank=None))
                pubs[1].send_multipart(_frames(seq, [["AllBlocksCleared"], *e1], rank=None))
                seq += 1
                await asyncio.sleep(0.05)
            return idx.match("r", ours), idx.tracks("r"), sub.stats
        finally:
            sub.stop()

    try:
        hits, tracked, stats = asyncio.run(run())
    finally:
        for p in pubs:
            p.close(0)
    assert hits == 4 and tracked
    assert set(stats.last_seq) == {0, 1} and stats.errors == 0


def test_kv_events_config_needs_a_prefix_policy_and_the_libraries(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import importlib.util

    from gpuyield.edges.gateway.config import load_config
    from gpuyield.errors import ConfigError

    cfg = gateway_config(["http://127.0.0.1:9"], router={"policy": "round_robin"})
    cfg["backends"][0]["kv_events_endpoint"] = "tcp://127.0.0.1:5557"
    with pytest.raises(ConfigError, match="does not route by prefix"):
        load_config(cfg)
    cfg["router"]["policy"] = "cost"
    cfg["backends"][0]["kv_events_dp_ranks"] = 4
    assert load_config(cfg).backends[0].kv_events_dp_ranks == 4
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "zmq" else real(name, *a))
    with pytest.raises(ConfigError, match="needs pyzmq and msgpack"):
        load_config(cfg)


def _two_free_ports() -> int:
    import socket

    for _ in range(50):
        port = free_port()
        with socket.socket() as s1, socket.socket() as s2:
            try:
                s1.bind(("127.0.0.1", port))
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    pytest.skip("no two consecutive free ports")


def _replay_scenario(live: list[int], buffered: int, with_topic: bool = False) -> tuple[int, bool, KVEventStats]:
    """A vLLM-like publisher (XPUB, so the test sees the subscription arrive, plus a ROUTER replay buffer holding
    batches ``0 .. buffered-1``) of a 4-block prompt, one block per batch; only the batches ``live`` go out on the
    live stream. Returns (blocks the subscriber's index matches, whether its view is exact, its stats)."""
    import asyncio

    import zmq.asyncio

    tokens = list(range(64))
    ours = hash_token_blocks(tokens, BS)
    port = _two_free_ports()
    h = [f"b{k}".encode() for k in range(4)]
    batches = [_frames(k, [_stored_map([h[k]], None if k == 0 else h[k - 1], tokens[k * BS:(k + 1) * BS])])
               for k in range(4)]  # fmt: skip

    async def run() -> tuple[int, bool, KVEventStats]:
        ctx = zmq.asyncio.Context.instance()
        pub, router = ctx.socket(zmq.XPUB), ctx.socket(zmq.ROUTER)
        pub.bind(f"tcp://127.0.0.1:{port}")
        router.bind(f"tcp://127.0.0.1:{port + 1}")

        async def serve_replay() -> None:
            while True:
                client, _, start = await router.recv_multipart()
                for k in range(int.from_bytes(start, "big"), buffered):
                    topic = [b"kv-events"] if with_topic else []  # later vLLM releases add the topic frame
                    await router.send_multipart([client, b"", *topic, batches[k][1], batches[k][2]])
                await router.send_multipart([client, b"", (-1).to_bytes(8, "big", signed=True), b""])

        server = asyncio.create_task(serve_replay())
        idx = KVEventIndex(BS)
        sub = KVEventSubscriber("r", f"tcp://127.0.0.1:{port}", idx, "kv-events", stale_s=60.0,
                                replay_endpoint=f"tcp://127.0.0.1:{port + 1}")  # fmt: skip
        sub.start()
        try:
            deadline = time.monotonic() + 10
            await asyncio.wait_for(pub.recv(), 10)  # subscribed: nothing published from now on is lost
            for k in live:
                await pub.send_multipart(batches[k])
            while sub.stats.last_seq.get(0) != live[-1] and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return idx.match("r", ours), idx.tracks("r"), sub.stats
        finally:
            sub.stop()
            server.cancel()
            pub.close(0)
            router.close(0)

    return asyncio.run(run())


@pytest.mark.parametrize("with_topic", [False, True])
def test_lost_batches_are_recovered_from_the_publishers_replay_socket(with_topic: bool) -> None:
    """Batches 1 and 2 are lost on the live stream; the subscriber asks for them again and its view stays
    exact (no gap, no guessing), in both of vLLM's replay reply layouts."""
    hits, tracked, st = _replay_scenario(live=[0, 3], buffered=4, with_topic=with_topic)
    assert st.replayed == 2 and st.gaps == 0 and st.errors == 0
    assert hits == 4 and tracked


def test_a_late_joiner_is_replayed_from_the_start_and_stays_exact() -> None:
    # batches 0..2 went out before the gateway subscribed; it first hears batch 3
    hits, tracked, st = _replay_scenario(live=[3], buffered=3)
    assert st.replayed == 3 and st.gaps == 0
    assert hits == 4 and tracked


def test_replay_endpoint_needs_an_event_endpoint() -> None:
    from gpuyield.edges.gateway.config import load_config
    from gpuyield.errors import ConfigError

    cfg = gateway_config(["http://127.0.0.1:9"], router={"policy": "prefix_affinity"})
    cfg["backends"][0]["kv_events_replay_endpoint"] = "tcp://127.0.0.1:5558"
    with pytest.raises(ConfigError, match="needs kv_events_endpoint"):
        load_config(cfg)


def test_bound_mode_engines_connect_to_the_gateway_and_are_told_apart_by_topic() -> None:
    """router.kv_events_bind: the gateway binds, two engines connect and publish under their own topics (as vLLM
    does with "endpoint": "tcp://GATEWAY:PORT"); each topic's events land on its own backend's view."""
    import asyncio

    import zmq.asyncio

    from gpuyield.edges.gateway.kv_events import KVEventListener

    tokens = list(range(64))
    ours = hash_token_blocks(tokens, BS)
    port = free_port()

    async def run() -> tuple[int, int, int, bool, int]:
        idx = KVEventIndex(BS)
        subs = {f"kv@r{k}": KVEventSubscriber(f"r{k}", None, idx, f"kv@r{k}", stale_s=60.0) for k in range(2)}
        listener = KVEventListener(f"tcp://127.0.0.1:{port}", subs)
        listener.start()
        ctx = zmq.asyncio.Context.instance()
        engines = [ctx.socket(zmq.PUB) for _ in range(2)]
        try:
            for e in engines:
                e.connect(f"tcp://127.0.0.1:{port}")
            await asyncio.sleep(0.3)  # the engines' connections come up
            # r0 holds the first two blocks, r1 all four; a third engine's topic is nobody's
            await engines[0].send_multipart(_frames(0, [_stored_map([b"a", b"b"], None, tokens[:32])], topic=b"kv@r0"))
            await engines[1].send_multipart(_frames(0, [_stored_map([b"a", b"b", b"c", b"d"], None, tokens)],
                                                    topic=b"kv@r1"))  # fmt: skip
            await engines[1].send_multipart(_frames(0, [], topic=b"kv@other"))
            deadline = time.monotonic() + 10
            while listener.stats.messages < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return (idx.match("r0", ours), idx.match("r1", ours), listener.stats.unknown_topic,
                    idx.tracks("r0") and idx.tracks("r1"), subs["kv@r1"].stats.batches)  # fmt: skip
        finally:
            listener.stop()
            for e in engines:
                e.close(0)

    r0, r1, unknown, tracked, batches = asyncio.run(run())
    assert (r0, r1, unknown, tracked, batches) == (2, 4, 1, True, 1)


def test_bound_mode_config_needs_unique_topics() -> None:
    from gpuyield.edges.gateway.config import load_config
    from gpuyield.errors import ConfigError

    cfg = gateway_config(["http://127.0.0.1:9", "http://127.0.0.1:10"],
                         router={"policy": "cost", "kv_events_bind": "tcp://127.0.0.1:5557"})  # fmt: skip
    with pytest.raises(ConfigError, match="no backend has a kv_events_topic"):
        load_config(cfg)
    for b in cfg["backends"]:
        b["kv_events_topic"] = "kv"
    with pytest.raises(ConfigError, match="used by several backends"):
        load_config(cfg)
    cfg["backends"][1]["kv_events_topic"] = "kv@r1"
    loaded = load_config(cfg)
    assert all(b.follows_kv_events(True) for b in loaded.backends)


def test_serve_in_bound_mode_fills_the_index_from_a_connecting_engine() -> None:
    emus = [start_emulator(fixed_step_ms=1.0) for _ in range(2)]
    port = free_port()
    cfg = gateway_config([e.url for e in emus], router={"policy": "prefix_affinity",
                                                        "kv_events_bind": f"tcp://127.0.0.1:{port}"})  # fmt: skip
    cfg["backends"][1]["kv_events_topic"] = "kv@r1"
    srv, gw = start_gateway(cfg)
    pub = zmq.Context.instance().socket(zmq.PUB)
    try:
        pub.connect(f"tcp://127.0.0.1:{port}")
        tokens = list(range(48))
        deadline = time.monotonic() + 10
        seq = 0
        while gw.kv_index.num_blocks("r1") < 3 and time.monotonic() < deadline:
            pub.send_multipart(_frames(seq, [["AllBlocksCleared"], _stored_map([b"x", b"y", b"z"], None, tokens)],
                                       topic=b"kv@r1"))  # fmt: skip
            seq += 1
            time.sleep(0.05)
        assert gw.kv_index.num_blocks("r1") == 3
        assert not gw.kv_index.tracks("r0")  # r0 publishes no events: routed by the guess
        text = httpx.get(srv.url + "/metrics").text
        assert 'gpuyield_kv_index_blocks{backend="r1"} 3.0' in text and "gpuyield_kv_event_unknown_topic 0.0" in text
    finally:
        srv.stop()
        pub.close(0)
        for e in emus:
            e.stop()
