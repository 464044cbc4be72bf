"""The gateway's upstream HTTP/1.1 client against scripted raw-socket servers (framing, reuse, failures)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

pytest.importorskip("httptools")

from gpuyield.edges.gateway.upstream import UpstreamError, UpstreamPool  # noqa: E402

Handler = Callable[..., Awaitable[None]]  # (reader, writer, state)


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return head, body


def _run(handler: Handler, test: Callable[[str, dict[str, Any]], Awaitable[None]]) -> dict[str, Any]:
    """Serve ``handler`` on 127.0.0.1 and run ``test(base_url, state)``; returns the shared state."""
    state: dict[str, Any] = {"connections": 0, "requests": []}

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state["connections"] += 1
        try:
            await handler(reader, writer, state)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await asyncio.wait_for(test(f"http://127.0.0.1:{port}", state), 20)
        finally:
            server.close()

    asyncio.run(main())
    return state


def _json_server(close_after: int | None = None) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
        served = 0
        while True:
            head, body = await _read_request(reader)
            state["requests"].append((head, body))
            out = b'{"echo":' + body + b"}"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(out), out))
            await writer.drain()
            served += 1
            if close_after is not None and served >= close_after:
                return

    return handler


def test_unary_reuses_one_connection_and_sends_the_body() -> None:
    async def test(url: str, state: dict[str, Any]) -> None:
        pool = UpstreamPool()
        for i in range(5):
            ex = await pool.start(url, "/v1/completions", b'{"i":%d}' % i,
                                  extra_headers=b"Authorization: Bearer k\r\n")
            assert ex.status == 200 and ex.content_type == b"application/json"
            assert await ex.read() == b'{"echo":{"i":%d}}' % i
        assert pool.num_connects == 1 and pool.num_idle() == 1
        assert pool.sweep() == 0
        pool.keepalive_s = 0.0
        await asyncio.sleep(0.01)
        assert pool.sweep() == 1 and pool.num_idle() == 0  # idle past its keep-alive: closed
        head, _ = state["requests"][0]
        assert head.startswith(b"POST /v1/completions HTTP/1.1\r\n")
        assert b"\r\nAuthorization: Bearer k\r\n" in head and b"\r\nContent-Length: 7\r\n" in head
        pool.close()

    state = _run(_json_server(), test)
    assert state["connections"] == 1


def test_a_reused_connection_that_dies_before_answering_is_retried_on_a_new_one() -> None:
    # the keep-alive race: the server drops a pooled connection just as the next request goes out on it
    answer = _json_server()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
        if state["connections"] == 1:
            head, body = await _read_request(reader)
            state["requests"].append((head, body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
            await _read_request(reader)  # the second request on this connection: close without a word
            return
        await answer(reader, writer, state)

    async def test(url: str, state: dict[str, Any]) -> None:
        pool = UpstreamPool()
        assert await (await pool.start(url, "/x", b"1")).read() == b"{}"
        ex = await pool.start(url, "/x", b"2")
        assert await ex.read() == b'{"echo":2}'
        assert pool.num_connects == 2 and state["connections"] == 2
        pool.close()

    _run(handler, test)


def test_chunked_stream_reaches_the_sink_per_read_and_split_chunks_join() -> None:
    events = [b'data: {"a":1}\n\n', b'data: {"a":2}\n\n', b"data: [DONE]\n\n"]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _s: Any) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for ev in events:
            wire = b"%x\r\n%s\r\n" % (len(ev), ev)
            writer.write(wire[:5])  # a chunk split across TCP writes
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(wire[5:])
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()  # keep the connection open until the client closes it

    async def test(url: str, _state: dict[str, Any]) -> None:
        pool = UpstreamPool()
        ex = await pool.start(url, "/v1/chat/completions", b"{}")
        assert ex.status == 200 and ex.content_type == b"text/event-stream"
        got: list[tuple[bytes, bool]] = []
        ex.set_sink(lambda data, last: got.append((data, last)))
        await ex.wait()
        assert b"".join(d for d, _ in got) == b"".join(events)
        assert not any(last for _, last in got[:-1])
        assert pool.num_idle() == 1  # the chunked response ended cleanly: reusable
        pool.close()

    _run(handler, test)


def test_connect_refused_timeout_and_garbage_raise_upstream_errors() -> None:
    async def silent(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter, _s: Any) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async def test_timeout(url: str, _state: dict[str, Any]) -> None:
        pool = UpstreamPool()
        with pytest.raises(UpstreamError) as ei:
            await pool.start(url, "/x", b"{}", total_timeout_s=0.2)
        assert ei.value.reason == "timeout"
        pool.close()

    _run(silent, test_timeout)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _s: Any) -> None:
        await _read_request(reader)
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def test_garbage(url: str, _state: dict[str, Any]) -> None:
        pool = UpstreamPool()
        with pytest.raises(UpstreamError) as ei:
            await pool.start(url, "/x", b"{}")
        assert ei.value.reason == "broken"
        assert pool.num_idle() == 0
        pool.close()

    _run(garbage, test_garbage)

    async def refused() -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound, not listening: connection refused
            pool = UpstreamPool()
            with pytest.raises(UpstreamError) as ei:
                await pool.start(f"http://127.0.0.1:{port}", "/x", b"{}", connect_timeout_s=1)
            assert ei.value.reason == "connect"

    asyncio.run(refused())


def test_mid_body_disconnect_is_broken_and_abort_closes_the_connection() -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _s: Any) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(0.05)

    async def test_half(url: str, _state: dict[str, Any]) -> None:
        pool = UpstreamPool()
        ex = await pool.start(url, "/x", b"{}")
        assert ex.status == 200
        with pytest.raises(UpstreamError) as ei:
            await ex.read()
        assert ei.value.reason == "broken"
        pool.close()

    _run(half, test_half)

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _s: Any) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(200):
            writer.write(b"3\r\nabc\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async def test_abort(url: str, state: dict[str, Any]) -> None:
        pool = UpstreamPool()
        ex = await pool.start(url, "/x", b"{}")
        got: list[bytes] = []
        ex.set_sink(lambda data, _last: got.append(data))
        await asyncio.sleep(0.05)
        ex.abort("cancelled", "client went away")
        with pytest.raises(UpstreamError) as ei:
            await ex.wait()
        assert ei.value.reason == "cancelled" and got
        assert pool.num_idle() == 0
        ex2 = await asyncio.wait_for(pool.start(url, "/x", b"{}"), 5)  # a fresh connection
        ex2.abort()
        assert state["connections"] == 2
        pool.close()

    _run(endless, test_abort)


def test_gateway_reuses_upstream_connections_and_a_client_disconnect_closes_the_upstream(tmp_path: Any) -> None:
    import json
    import socket
    import time

    from gateway_harness import KEY_A, MODEL, gateway_config, start_emulator, start_gateway, wait_idle

    emu = start_emulator(fixed_delay_ms=1.0, fixed_itl_ms=20.0)
    srv, gw = start_gateway(gateway_config([emu.url], tmp_path))
    try:
        import httpx

        with httpx.Client(base_url=srv.url, timeout=20, headers={"authorization": f"Bearer {KEY_A}"}) as c:
            for stream in (False, True, False, True):
                r = c.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 4, "stream": stream,
                                                         "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200
        assert gw.upstream.num_connects == 1  # one keep-alive connection carried all four

        # a stream of 200 tokens (~4 s); the client reads two events and hangs up
        body = json.dumps({"model": MODEL, "max_tokens": 200, "ignore_eos": True, "stream": True,
                           "messages": [{"role": "user", "content": "long"}]}).encode()
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer " + KEY_A.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
                      + body)
            got = b""
            while got.count(b"data: ") < 2:
                got += s.recv(65536)
        t0 = time.monotonic()
        wait_idle(gw)
        assert time.monotonic() - t0 < 2.5  # the stream had ~4 s to go
        # its upstream connection was closed, not pooled (the engine sees its client go away)
        assert gw.upstream.num_idle() == 0 and not gw.upstream._active
        assert gw.log_writer is not None
        gw.log_writer.flush()
        recs = [json.loads(x) for x in (tmp_path / "requests.jsonl").read_text().splitlines()]
        assert recs[-1]["status"] == "cancelled" and recs[-1]["stream"] is True
    finally:
        srv.stop()
        emu.stop()


def test_sse_forward_keeps_order_and_pauses_upstream_under_client_back_pressure() -> None:
    from gpuyield.edges.gateway.app import _Ctx, _SSEForward

    class FakeExchange:
        complete = False
        paused = 0
        resumed = 0

        def pause_reading(self) -> None:
            self.paused += 1

        def resume_reading(self) -> None:
            self.resumed += 1

        def abort(self, *_a: Any) -> None:
            self.complete = True

    class Itl:
        n = 0

        def observe(self, _v: float) -> None:
            self.n += 1

    class Gw:
        def _usage_into(self, ctx: Any, usage: Any) -> None:
            ctx.output_tokens = usage["completion_tokens"]

    class Rep:
        outstanding_prefill_tokens = 5

    async def main() -> None:
        sent: list[dict[str, Any]] = []
        gate = asyncio.Event()

        async def send(msg: dict[str, Any]) -> None:
            if len(sent) == 1:  # the first body write finds the client's socket full
                await gate.wait()
            sent.append(msg)

        ctx = _Ctx("r1", 0.0, 0.0)
        ctx.prefill_held = 5
        ex, itl = FakeExchange(), Itl()
        fwd = _SSEForward(Gw(), ctx, Rep(), send, ex, itl, client_usage=False)  # type: ignore[arg-type]
        fwd(b'data: {"a":1}\n\ndata: {"a"', False)  # one whole event and half of the next
        fwd(b':2}\n\n', False)
        fwd(b'data: {"choices":[],"usage":{"completion_tokens":2}}\n\ndata: [DONE]\n\n', False)
        assert [m["type"] for m in sent] == ["http.response.start"] and ex.paused == 1
        fwd.finish()
        drained = asyncio.ensure_future(fwd.drained())
        await asyncio.sleep(0.01)
        assert not drained.done()
        gate.set()
        await asyncio.wait_for(drained, 2)
        bodies = [m["body"] for m in sent[1:]]
        assert bodies == [b'data: {"a":1}\n\n', b'data: {"a":2}\n\n', b"data: [DONE]\n\n", b""]
        assert sent[-1]["more_body"] is False and ex.resumed == 1
        assert ctx.output_tokens == 2 and itl.n == 2 and ctx.prefill_held == 0 and fwd.error is None

        # the read that ends the upstream response also ends the client's, in one send
        sent.clear()
        sent.append({})  # (past the back-pressure gate)
        fwd2 = _SSEForward(Gw(), _Ctx("r2", 0.0, 0.0), Rep(), send, FakeExchange(), Itl(),  # type: ignore[arg-type]
                           client_usage=True)
        fwd2(b'data: {"a":1}\n\n', False)
        fwd2(b'data: {"choices":[{}],"usage":{"completion_tokens":1}}\n\ndata: [DONE]\n\n', True)
        fwd2.finish()  # nothing left to do
        await fwd2.drained()
        assert [(m["body"][-14:], m["more_body"]) for m in sent[2:]] == [
            (b'data: {"a":1}\n\n'[-14:], True), (b"data: [DONE]\n\n", False)]

    asyncio.run(main())


def test_interim_1xx_is_skipped_and_an_eof_delimited_body_completes() -> None:
    async def hints_then_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _s: Any) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"a\":")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"1}")
        await writer.drain()
        # the handler returns: the connection closes, which ends the body

    async def test(url: str, _state: dict[str, Any]) -> None:
        pool = UpstreamPool()
        ex = await pool.start(url, "/x", b"{}")
        assert ex.status == 200
        assert await ex.read() == b'{"a":1}'
        assert pool.num_idle() == 0
        pool.close()

    _run(hints_then_eof, test)


def test_https_origin(tmp_path: Any) -> None:
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl binary to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    handler = _json_server()

    async def main() -> None:
        state: dict[str, Any] = {"connections": 0, "requests": []}
        server = await asyncio.start_server(lambda r, w: handler(r, w, state), "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            pool = UpstreamPool(ssl_context=ssl.create_default_context(cafile=str(cert)))
            for i in range(2):
                ex = await pool.start(f"https://127.0.0.1:{port}", "/x", b"%d" % i)
                assert await ex.read() == b'{"echo":%d}' % i
            assert pool.num_connects == 1
            pool.close()
            strict = UpstreamPool()  # the system trust store does not know this certificate
            with pytest.raises(UpstreamError) as ei:
                await strict.start(f"https://127.0.0.1:{port}", "/x", b"{}")
            assert ei.value.reason == "connect"
        finally:
            server.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_gateway_retries_a_5xx_replica_and_passes_a_4xx_through() -> None:
    import httpx
    from gateway_harness import (
        KEY_A,
        MODEL,
        ServerThread,
        gateway_config,
        start_emulator,
        start_gateway,
        wait_idle,
    )

    async def failing(scope: Any, receive: Any, send: Any) -> None:  # healthy, but answers 503 or 400 to work
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        if scope["method"] == "GET":
            status, body = (200, b"{}") if scope["path"] == "/health" else (404, b"{}")
        else:
            more = True
            while more:
                more = (await receive()).get("more_body", False)
            status = 400 if bad_request["on"] else 503
            body = b'{"error":{"message":"nope","type":"x","param":null,"code":null}}'
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    bad_request = {"on": False}
    bad = ServerThread(failing)
    emu = start_emulator(fixed_step_ms=1.0)
    srv, gw = start_gateway(gateway_config([bad.url, emu.url]))
    try:
        with httpx.Client(base_url=srv.url, timeout=20, headers={"authorization": f"Bearer {KEY_A}"}) as c:
            for stream in (False, True, False, True):
                r = c.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 3, "stream": stream,
                                                         "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200
            text = c.get("/metrics").text
            assert 'gpuyield_retries_total{backend="r0",reason="http_503"}' in text
        wait_idle(gw)
        # a 4xx is the client's problem: passed through as the replica sent it, not retried
        bad_request["on"] = True
        srv2, gw2 = start_gateway(gateway_config([bad.url]))
        try:
            with httpx.Client(base_url=srv2.url, timeout=20, headers={"authorization": f"Bearer {KEY_A}"}) as c:
                for stream in (False, True):
                    r = c.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 3, "stream": stream,
                                                             "messages": [{"role": "user", "content": "hi"}]})
                    assert r.status_code == 400 and r.json()["error"]["message"] == "nope"
                assert "gpuyield_retries_total{" not in c.get("/metrics").text
            wait_idle(gw2)
        finally:
            srv2.stop()
    finally:
        srv.stop()
        bad.stop()
        emu.stop()


def test_a_finished_stream_leaves_no_reference_cycle() -> None:
    # a cycle per stream (exchange -> sink -> exchange) made the collector run twice as often and cost ~8 % CPU
    import gc

    from gpuyield.edges.gateway.app import _Ctx, _SSEForward
    from gpuyield.edges.gateway.upstream import Exchange

    class Sink:
        def observe(self, _v: float) -> None:
            pass

        def _usage_into(self, _ctx: Any, _usage: Any) -> None:
            pass

        outstanding_prefill_tokens = 0

    async def one_stream() -> None:
        ex = Exchange(asyncio.get_running_loop(), False)
        ex.status = 200

        async def send(_msg: dict[str, Any]) -> None:
            pass

        s = Sink()
        fwd = _SSEForward(s, _Ctx("r", 0.0, 0.0), s, send, ex, s, client_usage=False)  # type: ignore[arg-type]
        ex.set_sink(fwd)
        ex._on_body(b"data: {}\n\n", False)
        ex._on_body(b"data: [DONE]\n\n", True)
        ex._finish(None)
        await fwd.drained()
        assert fwd.error is None, repr(fwd.error)

    gc.collect()
    flags = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        asyncio.run(one_stream())
        gc.collect()
        leaked = [type(o).__name__ for o in gc.garbage if isinstance(o, (Exchange, _SSEForward))]
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
    assert leaked == []


@pytest.mark.parametrize("uv", [False, True])
def test_a_connection_closed_between_connect_and_write_is_a_connect_error(uv: bool) -> None:
    """The replica dies right after accepting (seen under failover): the write must not raise uvloop's
    RuntimeError (a 500 from the gateway) nor hang; it is a retryable ``connect`` error."""
    if uv:
        uvloop = pytest.importorskip("uvloop")
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def test(url: str, state: dict[str, Any]) -> None:
        pool = UpstreamPool()
        real = pool._connect

        async def connect_then_die(*a: Any, **k: Any) -> Any:
            conn = await real(*a, **k)
            conn.transport.close()  # the peer went away before our request was written
            await asyncio.sleep(0)
            return conn

        pool._connect = connect_then_die  # type: ignore[method-assign]
        with pytest.raises(UpstreamError) as ei:
            await pool.start(url, "/v1/completions", b"{}", total_timeout_s=2.0)
        assert ei.value.reason == "connect"
        pool.close()

    try:
        _run(_json_server(), test)
    finally:
        asyncio.set_event_loop_policy(None)
