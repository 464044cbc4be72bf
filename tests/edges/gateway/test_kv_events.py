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
from gpuyield.edges.gateway.kv_events import KVEventStats, apply_message  # noqa: E402
from gpuyield.edges.gateway.tokens import TokenCounter  # noqa: E402

BS = 16


def _stored_map(hashes, parent, tokens):  # type: ignore[no-untyped-def]
    # msgspec's map encoding of vLLM's tagged BlockStored struct
    return {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": parent, "token_ids": tokens,
            "block_size": BS, "lora_id": None, "medium": "GPU", "lora_name": None}  # fmt: skip


def _frames(seq: int, events: list, array_form: bool = False, topic: bytes = b"kv-events") -> list[bytes]:  # type: ignore[type-arg]
    batch = [time.time(), events, 0] if array_form else {"ts": time.time(), "events": events, "data_parallel_rank": 0}
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
    cfg = gateway_config([e.url for e in emus], router={"policy": "prefix_affinity", "max_retries": 2})
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
        while gw.kv_index.num_blocks("r2") < n and time.monotonic() < deadline:
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
