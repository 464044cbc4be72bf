"""The gateway's client for the data path: HTTP/1.1 to the engines over pooled keep-alive connections.

Why not aiohttp here: on this 2-core machine aiohttp's client cost ~170 µs of CPU per unary request and, per
streamed SSE event, a trip through its Python ``data_received``, ``StreamReader.feed_data``, a future
wake-up of the handler task and three generator layers (``__anext__`` → ``readany`` → ``_wait``) before the
gateway saw the bytes (profile in docs/benchmarks.md, "Gateway overhead and throughput", run 6). This client
parses responses with ``httptools`` (llhttp, the parser uvicorn uses) inside an :class:`asyncio.Protocol` and
hands each read's body bytes straight to a *sink* callback, so a streamed event is forwarded from the socket
callback without waking a task. aiohttp is still used for everything off the data path (health checks, metric
scrapes, sleep/wake calls).

Semantics the gateway relies on:

* :meth:`UpstreamPool.start` returns an :class:`Exchange` once the response's status line and headers are in,
  or raises :class:`UpstreamError` with ``reason`` ``connect`` (could not connect), ``broken`` (the connection
  closed or sent something that is not HTTP before the response was complete) or ``timeout``.
* A pooled connection the server closed while it was idle is not the replica's fault: when a reused
  connection dies before a single response byte arrived, the request is sent once more on a new connection.
* ``total_timeout_s`` bounds the whole exchange (connect + response), like aiohttp's ``ClientTimeout(total)``;
  ``connect_timeout_s`` bounds establishing a new connection.
* Body bytes are delivered per socket read (a read may hold several chunked-encoding chunks; they are joined),
  to the sink when one is set (with a flag saying whether the response ends with them), else buffered for
  :meth:`Exchange.read`.
* A connection is reused only after a complete response whose framing allows keep-alive; an aborted or broken
  exchange closes its connection (so an engine sees the client go away and can stop generating).
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Exchange", "UpstreamError", "UpstreamPool"]


class UpstreamError(Exception):
    """The upstream exchange failed; ``reason`` is ``connect``, ``broken``, ``timeout`` or ``aborted``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class _Origin:
    __slots__ = ("host", "port", "ssl", "host_header", "idle")

    def __init__(self, base_url: str) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.ssl = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.ssl else 80)
        default = (self.ssl and self.port == 443) or (not self.ssl and self.port == 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (host if default else f"{host}:{self.port}").encode("idna")
        self.idle: list[_Conn] = []


class Exchange:
    """One request/response. ``status`` and ``content_type`` are set when :meth:`UpstreamPool.start` returns."""

    __slots__ = ("status", "content_type", "_conn", "_chunks", "_sink", "_headers_fut", "_done_fut", "_error",
                 "_complete", "_timer", "_received", "_reused")

    def __init__(self, loop: asyncio.AbstractEventLoop, reused: bool) -> None:
        self.status = 0
        self.content_type: bytes | None = None
        self._conn: _Conn | None = None
        self._chunks: list[bytes] = []
        self._sink: Callable[[bytes, bool], None] | None = None
        self._headers_fut: asyncio.Future[None] = loop.create_future()
        self._done_fut: asyncio.Future[None] = loop.create_future()
        self._error: UpstreamError | None = None
        self._complete = False
        self._timer: asyncio.TimerHandle | None = None
        self._received = False
        self._reused = reused

    # ---- called by the connection ---------------------------------------------------------------------
    def _on_headers(self) -> None:
        if not self._headers_fut.done():
            self._headers_fut.set_result(None)

    def _on_body(self, data: bytes, last: bool) -> None:
        if self._sink is not None:
            self._sink(data, last)
        else:
            self._chunks.append(data)

    def _finish(self, error: UpstreamError | None) -> None:
        if self._complete:
            return
        self._complete = True
        self._error = error
        self._conn = None
        self._sink = None  # the sink usually references this exchange: no cycle left for the GC to find
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # results, never exceptions: a future nobody awaits must not log "exception was never retrieved"
        if not self._headers_fut.done():
            self._headers_fut.set_result(None)
        if not self._done_fut.done():
            self._done_fut.set_result(None)

    # ---- used by the gateway --------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return self._complete

    def set_sink(self, sink: Callable[[bytes, bool], None]) -> None:
        """Deliver body bytes to ``sink(data, last)`` from now on (bytes that arrived already are delivered
        first). ``last`` is true when these are the response's final bytes (the exchange completes right after
        the call), so the sink can end its own response in the same write."""
        if not self._complete:
            self._sink = sink
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks = []
            sink(data, self._complete and self._error is None)

    async def read(self) -> bytes:
        """The whole body (waits for the end of the response); raises :class:`UpstreamError`."""
        if not self._complete:
            await self._done_fut
        if self._error is not None:
            raise self._error
        data = b"".join(self._chunks)
        self._chunks = []
        return data

    async def wait(self) -> None:
        """Wait for the end of the response; raises :class:`UpstreamError` if it did not end well."""
        if not self._complete:
            await self._done_fut
        if self._error is not None:
            raise self._error

    def pause_reading(self) -> None:
        c = self._conn
        if c is not None and c.transport is not None and not c.closed:
            c.transport.pause_reading()

    def resume_reading(self) -> None:
        c = self._conn
        if c is not None and c.transport is not None and not c.closed:
            c.transport.resume_reading()

    def abort(self, reason: str = "aborted", detail: str = "aborted by the gateway") -> None:
        """Stop the exchange now and close its connection (the engine sees the client go away)."""
        c = self._conn
        self._finish(UpstreamError(reason, detail))
        if c is not None:
            c.ex = None
            c.close()


class _Conn(asyncio.Protocol):
    """One keep-alive connection to an origin; parses responses with httptools."""

    def __init__(self, pool: UpstreamPool, origin: _Origin) -> None:
        import httptools

        self.pool = pool
        self.origin = origin
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self._parser_error = httptools.HttpParserError
        self.ex: Exchange | None = None
        self.closed = False
        self.idle_since = 0.0
        self._body: list[bytes] = []
        self._msg_done = False
        self._keep_alive = False  # llhttp's verdict for the current response (read at headers-complete)
        self._framed = False  # the response has Content-Length or Transfer-Encoding (else it ends at EOF)
        self._informational = False  # a 1xx interim response: the real one follows

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:  # bytes while idle: the server is confused; do not reuse this connection
            self.close()
            return
        ex._received = True
        try:
            self.parser.feed_data(data)
        except self._parser_error as exc:
            self.ex = None
            ex._finish(UpstreamError("broken", f"malformed HTTP response: {exc}"))
            self.close()
            return
        body = self._body
        if body:
            self._body = []
            ex._on_body(body[0] if len(body) == 1 else b"".join(body), self._msg_done)
        if self._msg_done:
            self._msg_done = False
            self.ex = None
            ex._finish(None)
            if self._keep_alive and not self.closed:
                self.pool._release(self)
            else:
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        ex = self.ex
        if ex is not None:
            self.ex = None
            if ex.status and not self._framed and ex.status not in (204, 304):
                ex._finish(None)  # a body delimited by the end of the connection (HTTP/1.1 section 6.3)
                return
            reason = "stale" if ex._reused and not ex._received else "broken"
            detail = "the replica closed the connection before the response was complete"
            ex._finish(UpstreamError(reason, f"{detail}: {exc}" if exc else detail))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        n = len(name)
        if n == 12 and name.lower() == b"content-type":
            if self.ex is not None:
                self.ex.content_type = value
        elif (n == 14 and name.lower() == b"content-length") or (n == 17 and name.lower() == b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # e.g. 103 Early Hints: wait for the final response
            self._informational = True
            return
        ex = self.ex
        self._keep_alive = self.parser.should_keep_alive()
        if ex is not None:
            ex.status = status
            ex._on_headers()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._msg_done = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool._forget(self)
            if self.transport is not None:
                self.transport.close()


class UpstreamPool:
    """Keep-alive connections per origin (scheme, host, port). Create and use on one event loop."""

    def __init__(self, keepalive_s: float = 60.0, max_idle_per_origin: int = 1024,
                 ssl_context: _ssl.SSLContext | None = None) -> None:
        try:
            import httptools  # noqa: F401
        except ImportError as exc:  # pragma: no cover - httptools ships with gpuyield[serve]
            from gpuyield.errors import ConfigError

            raise ConfigError("gpuyield serve needs the 'httptools' package (pip install 'gpuyield[serve]')") from exc
        self.keepalive_s = keepalive_s
        self.max_idle_per_origin = max_idle_per_origin
        self._origins: dict[str, _Origin] = {}
        self._heads: dict[tuple[str, str, bytes], bytes] = {}
        self._active: set[_Conn] = set()
        self._ssl_ctx = ssl_context  # https origins; default: the system's trust store, hostname checked
        self.num_connects = 0  # connections opened (tests and benchmarks look at reuse)

    def _origin(self, base_url: str) -> _Origin:
        o = self._origins.get(base_url)
        if o is None:
            o = self._origins[base_url] = _Origin(base_url)
        return o

    def _head(self, base_url: str, path: str, extra_headers: bytes) -> bytes:
        """The request line and fixed headers, up to (not including) Content-Length."""
        key = (base_url, path, extra_headers)
        h = self._heads.get(key)
        if h is None:
            if len(self._heads) > 4096:
                self._heads.clear()
            o = self._origin(base_url)
            h = self._heads[key] = (b"POST " + path.encode("latin-1") + b" HTTP/1.1\r\nHost: " + o.host_header
                                    + b"\r\nContent-Type: application/json\r\n" + extra_headers)
        return h

    async def _connect(self, o: _Origin, connect_timeout_s: float) -> _Conn:
        loop = asyncio.get_running_loop()
        ssl_ctx: Any = None
        if o.ssl:
            if self._ssl_ctx is None:
                self._ssl_ctx = _ssl.create_default_context()
            ssl_ctx = self._ssl_ctx
        try:
            _t, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(self, o), o.host, o.port, ssl=ssl_ctx), connect_timeout_s)
        except TimeoutError:
            raise UpstreamError("connect", f"could not connect to {o.host}:{o.port} in {connect_timeout_s} s") \
                from None
        except OSError as exc:
            raise UpstreamError("connect", f"could not connect to {o.host}:{o.port}: {exc}") from None
        self.num_connects += 1
        return conn

    def _take_idle(self, o: _Origin, now: float) -> _Conn | None:
        idle = o.idle
        while idle:
            c = idle.pop()
            if c.closed or c.transport is None or c.transport.is_closing():
                c.close()
                continue
            if now - c.idle_since > self.keepalive_s:
                c.close()
                continue
            return c
        return None

    async def start(self, base_url: str, path: str, body: bytes, *, extra_headers: bytes = b"",
                    total_timeout_s: float = 600.0, connect_timeout_s: float = 10.0) -> Exchange:
        """Send ``POST base_url+path`` with a JSON ``body``; return once the response headers are in.

        ``extra_headers``: more header lines, each ending in CRLF (e.g. ``b"Authorization: Bearer k\\r\\n"``).
        """
        loop = asyncio.get_running_loop()
        o = self._origin(base_url)
        head = self._head(base_url, path, extra_headers)
        payload = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        deadline = loop.time() + total_timeout_s
        for _attempt in range(2):
            conn = self._take_idle(o, loop.time())
            reused = conn is not None
            if conn is None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise UpstreamError("timeout", f"no response within {total_timeout_s} s")
                conn = await self._connect(o, min(connect_timeout_s, remaining))
            ex = Exchange(loop, reused)
            ex._conn = conn
            conn.ex = ex
            self._active.add(conn)
            ex._timer = loop.call_at(deadline, _on_timeout, ex, total_timeout_s)
            try:
                if conn.closed or conn.transport.is_closing():
                    raise RuntimeError("closed")
                conn.transport.write(payload)
            except RuntimeError:  # the peer went away between connect/pick and write (uvloop raises here)
                ex.abort("stale" if reused else "connect", "the replica closed the connection before the request")
                if reused:
                    continue
                raise UpstreamError("connect", "the replica closed the connection before the request") from None
            if not ex._headers_fut.done():
                try:
                    await ex._headers_fut
                except asyncio.CancelledError:
                    ex.abort()
                    raise
            err = ex._error
            if err is None or ex.status:
                return ex  # headers are in (a later error surfaces from read()/wait())
            if err.reason == "stale":
                continue  # the server had closed this idle connection: once more on a new one
            raise err
        raise UpstreamError("broken", "the replica closed two connections in a row before answering")

    def _release(self, conn: _Conn) -> None:
        self._active.discard(conn)
        idle = conn.origin.idle
        if len(idle) >= self.max_idle_per_origin:
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        idle.append(conn)

    def _forget(self, conn: _Conn) -> None:
        self._active.discard(conn)
        idle = conn.origin.idle
        if conn in idle:
            idle.remove(conn)

    def sweep(self) -> int:
        """Close idle connections older than ``keepalive_s`` (also those of origins no longer in use);
        returns how many were closed."""
        now = asyncio.get_running_loop().time()
        closed = 0
        for o in self._origins.values():
            for c in [c for c in o.idle if now - c.idle_since > self.keepalive_s or c.closed]:
                c.close()
                closed += 1
        return closed

    def num_idle(self) -> int:
        return sum(len(o.idle) for o in self._origins.values())

    def close(self) -> None:
        """Close every connection (idle and active); active exchanges end with ``broken``."""
        for o in self._origins.values():
            for c in list(o.idle):
                c.close()
            o.idle.clear()
        for c in list(self._active):
            ex = c.ex
            if ex is not None:
                c.ex = None
                ex._finish(UpstreamError("broken", "the gateway is shutting down"))
            c.close()
        self._active.clear()


def _on_timeout(ex: Exchange, total_timeout_s: float) -> None:
    ex._timer = None
    ex.abort("timeout", f"no complete response within {total_timeout_s} s")
