"""The gateway: a raw ASGI app that authenticates, admits, routes and proxies OpenAI-compatible requests.

Per request (``POST /v1/chat/completions`` or ``/v1/completions``):

1. **Auth**: ``Authorization: Bearer KEY`` → sha256 → tenant (unknown key 401; no key 401 unless
   ``auth.allow_anonymous``).
2. **Body**: read with ``limits.max_body_bytes`` (413), parsed as a JSON object (400), fields checked (400).
3. **Model**: not allowed for the tenant 403; served by no replica 404; no healthy replica 503.
4. **Tokens**: the prompt is counted and its prefix blocks hashed (:mod:`~gpuyield.edges.gateway.tokens`).
5. **Admission** (:class:`gpuyield.core.policy.admission.AdmissionController`, the class the simulator uses):
   budget exhausted 429, queue full 429/503, all with ``Retry-After``; otherwise dispatched now or queued in
   token-fair order.
6. **Routing** (:mod:`gpuyield.core.policy.routing`, the simulator's classes) among the healthy replicas that
   serve the model and whose circuit is closed.
7. **Proxy** over pooled keep-alive connections (:mod:`~gpuyield.edges.gateway.upstream`: httptools in an
   ``asyncio.Protocol``; aiohttp only off the data path). Non-streaming bodies pass through unchanged. A
   stream passes through event by event, forwarded from the socket callback; the gateway adds
   ``stream_options.include_usage`` so it learns the token counts, and drops the extra usage chunk if the
   client did not ask for it; a client that hangs up mid-stream closes the upstream connection at once. A replica that fails
   before anything was sent to the client (connect error, 5xx, broken response) is marked in its circuit
   breaker and the request is retried on another replica (``router.max_retries``), so a dying replica loses
   no request that has not started streaming. A stream that breaks after it started ends with an SSE
   ``data: {"error": {...}}`` event.
8. **Record**: metrics, and one request-log record (written by a background thread).

Every error body has the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import time
import uuid
from collections import deque
from typing import Any

from gpuyield.core.policy.admission import AdmissionController, AdmissionLimits, TenantLimits, Verdict
from gpuyield.core.policy.base import ReplicaSnapshot, RequestView, RoutingPolicy
from gpuyield.edges.gateway.asgi import (
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    dumps,
    error_body,
    header,
    loads,
    read_body,
    send_bytes,
    send_json,
)
from gpuyield.edges.gateway.backends import CLOSED, Replica
from gpuyield.edges.gateway.config import GatewayConfig, TenantConfig
from gpuyield.edges.gateway.metrics import GatewayMetrics
from gpuyield.edges.gateway.request_log import RequestLogWriter
from gpuyield.edges.gateway.tokens import TokenCounter, prompt_text
from gpuyield.edges.gateway.upstream import Exchange, UpstreamError, UpstreamPool

__all__ = ["Gateway"]

_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]
_JSON = [(b"content-type", b"application/json")]


class _Retryable(Exception):
    """The replica failed before anything was sent to the client: try another."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class _Ctx:
    """One request's state inside the gateway."""

    __slots__ = ("rid", "arrival_ts", "t0", "tenant", "model", "stream", "chat", "input_tokens", "estimated",
                 "cached", "output_tokens", "max_tokens", "status", "http_status", "error", "replica", "reason",
                 "first_ts", "finish_ts", "hashes", "session", "priority", "policy_name", "prefill_held")

    def __init__(self, rid: str, arrival_ts: float, t0: float) -> None:
        self.rid = rid
        self.arrival_ts = arrival_ts
        self.t0 = t0
        self.tenant = "default"
        self.model: str | None = None
        self.stream: bool | None = None
        self.chat = True
        self.input_tokens = 0
        self.estimated = True
        self.cached: int | None = None
        self.output_tokens = 0
        self.max_tokens: int | None = None
        self.status = "ok"
        self.http_status: int | None = None
        self.error: str | None = None
        self.replica: str | None = None
        self.reason: str | None = None
        self.first_ts: float | None = None
        self.finish_ts: float | None = None
        self.hashes: tuple[int, ...] = ()
        self.session: str | None = None
        self.priority = 0
        self.policy_name: str | None = None
        self.prefill_held = 0  # prompt tokens counted in the replica's outstanding_prefill_tokens


def _tenant_limits(t: TenantConfig) -> TenantLimits:
    return TenantLimits(name=t.name, priority=t.priority, weight=t.weight, tokens_per_min=t.tokens_per_min,
                        tokens_per_day=t.tokens_per_day, max_concurrency=t.max_concurrency,
                        max_queued=t.max_queued)


class _SSEForward:
    """Forwards a 200 event stream from the upstream socket callback to the client without a task wake-up.

    Called with each read's body bytes (:meth:`Exchange.set_sink`). It forwards whole SSE events only (a
    partial event waits for the rest), reads the usage chunk (the only event it parses), drops the usage-only
    chunk the client did not ask for, observes inter-chunk latency and the first token. When the read holds the
    end of the upstream response, the last events and the end of the client's response go out in one write.
    ASGI ``send`` calls are driven synchronously (uvicorn's ``send`` only suspends under write back-pressure);
    when one suspends, upstream reading pauses until it completes, and later messages queue behind it in order.
    """

    __slots__ = ("gw", "ctx", "r", "send", "ex", "itl", "client_usage", "sep", "buf", "last_t", "started", "ended",
                 "error", "_q", "_coro", "_busy", "_paused", "_drained")

    def __init__(self, gw: Gateway, ctx: _Ctx, r: Replica, send: Send, ex: Exchange, itl: Any,
                 client_usage: bool) -> None:
        self.gw = gw
        self.ctx = ctx
        self.r = r
        self.send = send
        self.ex = ex
        self.itl = itl
        self.client_usage = client_usage
        self.sep = b"\n\n"  # SSE event separator; CRLF servers are detected on their first read
        self.buf = b""
        self.last_t: float | None = None
        self.started = False
        self.ended = False  # the client's response is complete
        self.error: BaseException | None = None
        self._q: deque[dict[str, Any]] = deque()
        self._coro: Any = None
        self._busy = False
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    def __call__(self, data: bytes, last: bool) -> None:
        try:
            self._feed(data, last)
        except Exception as exc:  # never raise into the protocol callback: end the exchange instead
            self.error = exc
            self.ex.abort("aborted", f"forwarding failed: {type(exc).__name__}: {exc}")

    def _feed(self, data: bytes, last: bool) -> None:
        ctx = self.ctx
        sep = self.sep
        if self.last_t is None and b"\r\n\r\n" in data:
            sep = self.sep = b"\r\n\r\n"
        # forward whole SSE events only; the common case is one or more complete events per read
        buf = self.buf
        chunk = buf + data if buf else data
        if chunk.endswith(sep):
            self.buf = b""
        else:
            cut = chunk.rfind(sep)
            if cut < 0:
                self.buf = chunk
                return
            self.buf, chunk = chunk[cut + len(sep):], chunk[: cut + len(sep)]
        if b'"usage":{' in chunk:  # rare: the usage chunk (maybe with others); look at each event
            kept = []
            for ev in chunk.split(sep):
                if b'"usage":{' in ev:
                    try:
                        obj = loads(ev[ev.index(b"{"):])
                        self.gw._usage_into(ctx, obj.get("usage"))
                        if not self.client_usage and not obj.get("choices"):
                            continue  # the usage-only chunk the client did not ask for
                    except Exception:
                        pass
                if ev:
                    kept.append(ev)
            if not kept:
                return
            chunk = sep.join(kept) + sep
        now = time.monotonic()
        if ctx.first_ts is None:
            ctx.first_ts = ctx.arrival_ts + (now - ctx.t0)
            self.r.outstanding_prefill_tokens -= ctx.prefill_held  # the prompt is prefilled
            ctx.prefill_held = 0
        elif self.last_t is not None:
            self.itl.observe(now - self.last_t)
        self.last_t = now
        if not self.started:
            self.started = True
            self.push({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        if last and not self.buf:  # the upstream ended cleanly with this read: end ours in the same write
            self.ended = True
            self.push({"type": "http.response.body", "body": chunk, "more_body": False})
        else:
            self.push({"type": "http.response.body", "body": chunk, "more_body": True})

    def finish(self) -> None:
        """The upstream ended well: forward a last event without its blank line, then end the response."""
        if self.ended:
            return
        self.ended = True
        if self.buf.strip():
            self.push({"type": "http.response.body", "body": self.buf.rstrip(b"\r\n") + b"\n\n",
                       "more_body": True})
        self.push({"type": "http.response.body", "body": b"", "more_body": False})

    # ---- the ASGI send pump ------------------------------------------------------------------------------
    def push(self, msg: dict[str, Any]) -> None:
        if self.error is not None:
            return
        if self._busy:  # an earlier send is suspended: keep the order
            self._q.append(msg)
            return
        coro = self.send(msg)  # fast path: nothing queued, drive this send now
        try:
            yielded = coro.send(None)
        except StopIteration:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting handler
            self._failed(exc)
            return
        self._busy = True
        self._coro = coro
        self._suspend(yielded)

    def _suspend(self, yielded: Any) -> None:
        # write back-pressure: stop reading upstream until this send completes
        if not self._paused:
            self._paused = True
            self.ex.pause_reading()
        if yielded is None:
            asyncio.get_running_loop().call_soon(self._resume)
        else:
            yielded._asyncio_future_blocking = False
            yielded.add_done_callback(self._resume)

    def _failed(self, exc: BaseException) -> None:
        self._coro = None
        self._q.clear()
        self._busy = False
        self.error = exc
        if not self.ex.complete:
            self.ex.abort("aborted", f"sending to the client failed: {type(exc).__name__}")
        self._wake_drained()

    def _resume(self, _fut: Any = None) -> None:
        while True:
            coro = self._coro
            if coro is None:
                if not self._q:
                    break
                coro = self._coro = self.send(self._q.popleft())
            try:
                yielded = coro.send(None)
            except StopIteration:
                self._coro = None
                continue
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting handler
                self._failed(exc)
                return
            self._suspend(yielded)
            return
        self._busy = False
        if self._paused:
            self._paused = False
            self.ex.resume_reading()
        self._wake_drained()

    def _wake_drained(self) -> None:
        d = self._drained
        if d is not None and not d.done():
            d.set_result(None)

    async def drained(self) -> None:
        """Wait until every pushed message was handed to the server."""
        if self._busy:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained


class Gateway:
    """The ``gpuyield serve`` ASGI application. Create with a validated :class:`GatewayConfig`."""

    def __init__(self, config: GatewayConfig) -> None:
        self.metrics = GatewayMetrics()
        self.replicas: dict[str, Replica] = {}
        self.policy: RoutingPolicy
        self.admission: AdmissionController | None = None
        self.log_writer: RequestLogWriter | None = None
        self.session: Any = None  # aiohttp, off the data path: health checks, scrapes, sleep/wake
        self.upstream = UpstreamPool(keepalive_s=60.0)  # the data path (gpuyield.edges.gateway.upstream)
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self.num_active = 0  # requests inside the handler (leak check)
        self._last_num_candidates = 0
        self._rid_prefix = uuid.uuid4().hex[:12]  # request ids: per-process random prefix + counter
        self._seq = 0
        self._started = False
        self._bg: list[asyncio.Task[None]] = []
        self.kv_index: Any = None  # KVEventIndex when some backend publishes KV events
        self.kv_subscribers: list[Any] = []
        self.kv_listener: Any = None  # KVEventListener in bound mode (router.kv_events_bind)
        self.config = config
        self._apply(config, first=True)
        self.wake: Any = None  # wake-on-request for residency_groups (gpuyield.edges.gateway.wake)
        if config.residency_groups:
            from gpuyield.edges.gateway.wake import WakeManager

            self.wake = WakeManager(list(config.residency_groups), {b.name: b for b in config.backends},
                                    lambda name: self.replicas.get(name), self.metrics.registry)

    # ---- configuration ----------------------------------------------------------------------------------
    def _apply(self, cfg: GatewayConfig, first: bool = False) -> None:
        from gpuyield.core.policy.routing import make_policy

        old = None if first else self.config
        self._keys = {d: t for t in cfg.tenants for d in t.api_key_sha256}
        self._tenants = {t.name: t for t in cfg.tenants}
        if old is None or old.router.policy != cfg.router.policy or old.router.options != cfg.router.options:
            self.policy = make_policy(cfg.router.policy, **cfg.router.options)
        if old is None or old.tokenizer != cfg.tokenizer or old.router.block_size_tokens != cfg.router.block_size_tokens:
            self.tokens = TokenCounter(cfg.tokenizer, cfg.router.block_size_tokens)
        bound = cfg.router.kv_events_bind is not None
        if any(b.follows_kv_events(bound) for b in cfg.backends) and hasattr(self.policy, "exact"):  # config checks
            from gpuyield.core.policy.kv_events import KVEventIndex

            if self.kv_index is None or self.kv_index.block_size_tokens != cfg.router.block_size_tokens:
                self.kv_index = KVEventIndex(cfg.router.block_size_tokens)
            self.policy.exact = self.kv_index
        limits = AdmissionLimits(max_inflight=sum(b.max_inflight for b in cfg.backends),
                                 max_queued=cfg.admission.max_queued, max_queue_wait_s=cfg.admission.max_queue_wait_s,
                                 default_output_tokens=cfg.admission.default_output_tokens,
                                 fair_share_burst=cfg.admission.fair_share_burst)
        tlimits = [_tenant_limits(t) for t in cfg.tenants]
        if self.admission is None:
            anon = TenantLimits(name=cfg.auth.anonymous_tenant)
            self.admission = AdmissionController(tlimits, limits, default_tenant=anon)
        else:
            self.admission.limits = limits
            self.admission.update_tenants(tlimits)
        # replicas: keep unchanged ones (with their state), replace changed, add new, drop removed
        new: dict[str, Replica] = {}
        for b in cfg.backends:
            cur = self.replicas.get(b.name)
            if cur is not None and cur.config == b and (old is None or old.health == cfg.health):
                new[b.name] = cur
            else:
                if cur is not None:
                    cur.stop()
                r = Replica(b, cfg.health)
                new[b.name] = r
                if self._started:
                    r.start(self.session)
        for name, r in self.replicas.items():
            if name not in new:
                r.stop()
                self.policy.on_replica_removed(name)
        self.replicas = new
        if old is None or old.request_log != cfg.request_log:
            if self.log_writer is not None:
                self.log_writer.close()
            rl = cfg.request_log
            self.log_writer = RequestLogWriter(rl.path, rl.rotate_bytes, rl.keep, validate=False) if rl.path else None
        self.config = cfg
        self._refresh_capacity()

    def reload(self, cfg: GatewayConfig) -> None:
        """Apply a new config (SIGHUP): in-flight requests finish on the replicas they were sent to."""
        if cfg.listen != self.config.listen:
            print("gpuyield serve: listen address changes need a restart; keeping the old one", file=sys.stderr)
        if cfg.residency_groups != self.config.residency_groups:
            print("gpuyield serve: residency_groups changes need a restart; keeping the old ones", file=sys.stderr)
        self._apply(cfg)
        self._pump()

    def _refresh_capacity(self) -> None:
        """Gateway-wide limit: max_inflight of the usable replicas; per model (its own admission queue): of the
        usable replicas that serve it (a replica serving several models counts for each), at least 1, so a
        model whose replicas are down or asleep still queues and can wake them."""
        assert self.admission is not None
        now = time.monotonic()
        per_model: dict[str, int] = {}
        cap = 0
        for r in self.replicas.values():
            usable = r.healthy and r.breaker.allow(now)
            cap += r.config.max_inflight if usable else 0
            for name in r.models:
                per_model[name] = per_model.get(name, 0) + (r.config.max_inflight if usable else 0)
        self.admission.set_max_inflight(max(1, cap))
        self.admission.set_pool_limits(per_model)

    # ---- ASGI --------------------------------------------------------------------------------------------
    async def startup(self) -> None:
        if self._started:
            return
        import aiohttp

        self._started = True
        conn = aiohttp.TCPConnector(limit=0, keepalive_timeout=60.0, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(connector=conn, auto_decompress=False, skip_auto_headers=("User-Agent",))
        for r in self.replicas.values():
            r.start(self.session)
        if self.kv_index is not None:
            from gpuyield.edges.gateway.kv_events import KVEventListener, KVEventSubscriber

            rc = self.config.router
            by_topic: dict[str, KVEventSubscriber] = {}
            for b in self.config.backends:
                if not b.follows_kv_events(rc.kv_events_bind is not None):
                    continue
                sub = KVEventSubscriber(b.name, b.kv_events_endpoint, self.kv_index, b.kv_events_topic,
                                        b.kv_events_dp_ranks, rc.kv_events_stale_s, b.kv_events_replay_endpoint)
                self.kv_subscribers.append(sub)
                if b.kv_events_endpoint:
                    sub.start()
                else:
                    by_topic[b.kv_events_topic] = sub
            if by_topic and rc.kv_events_bind:
                ranks = max(b.kv_events_dp_ranks for b in self.config.backends if b.kv_events_topic in by_topic)
                self.kv_listener = KVEventListener(rc.kv_events_bind, by_topic, ranks)
                self.kv_listener.start()
        self._bg.append(asyncio.get_running_loop().create_task(self._housekeeping()))
        if self.wake is not None:
            self.wake.start(self.session)

    async def shutdown(self) -> None:
        if self.wake is not None:
            self.wake.stop()
        for r in self.replicas.values():
            r.stop()
        if self.kv_listener is not None:
            self.kv_listener.stop()
            self.kv_listener = None
        for sub in self.kv_subscribers:
            sub.stop()
        self.kv_subscribers.clear()
        for t in self._bg:
            t.cancel()
        self._bg.clear()
        self.upstream.close()
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.log_writer is not None:
            self.log_writer.close()
        self._started = False

    async def _housekeeping(self) -> None:
        assert self.admission is not None
        ticks = 0
        while True:
            await asyncio.sleep(0.25)
            ticks += 1
            if ticks % 20 == 0:  # every 5 s: close upstream connections idle past their keep-alive
                self.upstream.sweep()
            self._refresh_capacity()
            self._pump()
            now = time.monotonic()
            for t in self.admission.expire(now):
                fut = self._waiters.get(t.ticket_id)
                if fut is not None and not fut.done():
                    fut.set_exception(TimeoutError())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        typ = scope["type"]
        if typ == "http":
            if not self._started:
                await self.startup()
            path = scope["path"]
            if path == "/v1/chat/completions" or path == "/v1/completions":
                if scope["method"] != "POST":
                    await send_json(send, 405, error_body(405, f"use POST for {path}"))
                    return
                self.num_active += 1
                try:
                    await self._completion(scope, receive, send, path == "/v1/chat/completions")
                finally:
                    self.num_active -= 1
            elif path == "/v1/models":
                await self._models(scope, send)
            elif path == "/healthz":
                await send_json(send, 200, {"status": "ok"})
            elif path == "/readyz":
                ready = [r.name for r in self.replicas.values() if r.healthy]
                await send_json(send, 200 if ready else 503, {"ready": bool(ready), "healthy_replicas": ready})
            elif path == "/metrics":
                await send_bytes(send, 200, self._metrics_text(),
                                 [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])
            else:
                await send_json(send, 404, error_body(404, f"no route {scope['method']} {path}"))
        elif typ == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await self.startup()
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await self.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    # ---- endpoints -------------------------------------------------------------------------------------
    def _authenticate(self, scope: Scope) -> tuple[TenantConfig | None, str | None]:
        """(tenant config or None for anonymous, error message or None)."""
        auth = header(scope, b"authorization")
        key: str | None = None
        if auth is not None:
            parts = auth.split(None, 1)
            if len(parts) == 2 and parts[0].lower() == b"bearer":
                key = parts[1].strip().decode("latin-1")
        if key is None:
            xkey = header(scope, b"x-api-key")
            key = xkey.decode("latin-1") if xkey is not None else None
        if not key:
            if self.config.auth.allow_anonymous:
                return self._tenants.get(self.config.auth.anonymous_tenant), None
            return None, "missing API key: send 'Authorization: Bearer <key>'"
        import hashlib

        t = self._keys.get(hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest())
        if t is None:
            return None, "Incorrect API key provided."
        return t, None

    async def _models(self, scope: Scope, send: Send) -> None:
        tenant, err = self._authenticate(scope)
        if err is not None:
            await send_json(send, 401, error_body(401, err, "invalid_api_key"))
            return
        seen: dict[str, list[str]] = {}
        for r in self.replicas.values():
            for m in r.models:
                if tenant is None or tenant.allows(m):
                    seen.setdefault(m, []).append(r.name)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "gpuyield", "replicas": names}
                for m, names in sorted(seen.items())]
        await send_json(send, 200, {"object": "list", "data": data})

    async def _reject(self, send: Send, ctx: _Ctx, status: int, message: str, code: str | None, reason: str,
                      retry_after_s: float | None = None, param: str | None = None) -> None:
        extra = []
        if retry_after_s is not None:
            extra.append((b"retry-after", str(max(1, math.ceil(retry_after_s))).encode()))
        self.metrics.child(self.metrics.rejections, ctx.tenant, reason).inc()
        ctx.status = "rejected"  # refused before any backend work
        ctx.http_status = status
        ctx.error = message
        await send_json(send, status, error_body(status, message, code, param), extra)

    async def _completion(self, scope: Scope, receive: Receive, send: Send, chat: bool) -> None:
        self._seq += 1
        ctx = _Ctx(f"gy-{self._rid_prefix}{self._seq:010x}", time.time(), time.monotonic())
        ctx.chat = chat
        try:
            await self._completion_inner(scope, receive, send, ctx)
        except ConnectionResetError:
            ctx.status, ctx.error = "cancelled", "client disconnected"
        finally:
            if ctx.finish_ts is None:
                ctx.finish_ts = ctx.arrival_ts + (time.monotonic() - ctx.t0)
            self._record(ctx)

    async def _completion_inner(self, scope: Scope, receive: Receive, send: Send, ctx: _Ctx) -> None:
        m = self.metrics
        tenant, err = self._authenticate(scope)
        if err is not None:
            await self._reject(send, ctx, 401, err, "invalid_api_key", "unauthenticated")
            return
        ctx.tenant = tenant.name if tenant is not None else self.config.auth.anonymous_tenant
        try:
            raw = await read_body(receive, self.config.limits.max_body_bytes, scope)
        except BodyTooLarge:
            await self._reject(send, ctx, 413, f"request body larger than {self.config.limits.max_body_bytes} bytes",
                               "request_too_large", "body_too_large")
            return
        try:
            body = loads(raw)
        except Exception:
            await self._reject(send, ctx, 400, "request body is not valid JSON", "invalid_json", "bad_request")
            return
        if not isinstance(body, dict):
            await self._reject(send, ctx, 400, "request body must be a JSON object", "invalid_request", "bad_request")
            return
        model = body.get("model")
        if not isinstance(model, str) or not model:
            await self._reject(send, ctx, 400, "'model' must be a non-empty string", "invalid_request",
                               "bad_request", param="model")
            return
        ctx.model = model
        stream = body.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            await self._reject(send, ctx, 400, "'stream' must be a boolean", "invalid_request", "bad_request",
                               param="stream")
            return
        ctx.stream = stream
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                       or max_tokens < 1):
            await self._reject(send, ctx, 400, "'max_tokens' must be a positive integer", "invalid_request",
                               "bad_request", param="max_tokens")
            return
        ctx.max_tokens = max_tokens
        so = body.get("stream_options")
        if so is not None and not isinstance(so, dict):
            await self._reject(send, ctx, 400, "'stream_options' must be an object", "invalid_request",
                               "bad_request", param="stream_options")
            return
        try:
            text = prompt_text(body, ctx.chat)
        except ValueError as exc:
            await self._reject(send, ctx, 400, str(exc), "invalid_request", "bad_request",
                               param="messages" if ctx.chat else "prompt")
            return
        user = body.get("user")
        sess = header(scope, b"x-session-id")
        ctx.session = sess.decode("latin-1") if sess else (user if isinstance(user, str) and user else None)
        if tenant is not None and not tenant.allows(model):
            await self._reject(send, ctx, 403, f"tenant '{ctx.tenant}' may not use model '{model}'",
                               "model_not_allowed", "model_not_allowed", param="model")
            return
        now = time.monotonic()
        serving = [r for r in self.replicas.values() if model in r.models]
        if not serving:
            await self._reject(send, ctx, 404, f"The model `{model}` does not exist.", "model_not_found",
                               "unknown_model", param="model")
            return
        if not any(r.healthy and r.breaker.allow(now) for r in serving):
            await self._reject(send, ctx, 503, f"no healthy replica serves model '{model}'", "no_healthy_backend",
                               "no_backend", retry_after_s=self.config.health.interval_s)
            return
        ctx.input_tokens, ctx.hashes = self.tokens.count_and_hash(text)
        # ---- admission ----
        adm = self.admission
        assert adm is not None
        if not adm.has_pool_limit(model):  # a model first listed by a replica since the last refresh
            self._refresh_capacity()
        ticket = adm.make_ticket(ctx.tenant, ctx.input_tokens, max_tokens, now, pool=model)
        ctx.priority = ticket.priority
        decision = adm.submit(ticket, now)
        if decision.verdict is Verdict.REJECTED:
            reason = "budget" if decision.error_code in ("rate_limit_exceeded", "insufficient_quota") and \
                "budget" in decision.reason else "queue_full"
            await self._reject(send, ctx, decision.http_status, decision.reason, decision.error_code, reason,
                               retry_after_s=decision.retry_after_s)
            return
        if decision.verdict is Verdict.QUEUED:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters[ticket.ticket_id] = fut
            try:
                await asyncio.wait_for(asyncio.shield(fut), timeout=self.config.admission.max_queue_wait_s)
            except TimeoutError:
                if ticket.state == "queued":
                    adm.cancel(ticket, time.monotonic())
                if ticket.state != "inflight":
                    await self._reject(send, ctx, 503, "request waited too long in the gateway queue",
                                       "queue_timeout", "queue_timeout", retry_after_s=1.0)
                    return
            except asyncio.CancelledError:
                if ticket.state == "queued":
                    adm.cancel(ticket, time.monotonic())
                elif ticket.state == "inflight":
                    adm.complete(ticket, 0, time.monotonic())
                    self._pump()
                raise
            finally:
                self._waiters.pop(ticket.ticket_id, None)
            m.child(m.queue_wait, ctx.tenant).observe(time.monotonic() - now)
        # ---- dispatch ----
        try:
            await self._dispatch(scope, receive, send, ctx, body, raw)
        finally:
            # charge what the engine did (a request no replica answered is refunded)
            used = ctx.input_tokens + ctx.output_tokens if ctx.http_status == 200 else 0
            adm.complete(ticket, used, time.monotonic())
            self._pump()

    def _pump(self) -> None:
        adm = self.admission
        assert adm is not None
        now = time.monotonic()
        while (t := adm.next_ready(now)) is not None:
            fut = self._waiters.get(t.ticket_id)
            if fut is not None and not fut.done():
                fut.set_result(None)
            else:  # its waiter is gone: release the slot
                adm.complete(t, 0, now)

    # ---- routing and proxying ----------------------------------------------------------------------------
    def _choose(self, ctx: _Ctx, view: RequestView, exclude: set[str]) -> Replica | None:
        now = time.monotonic()
        assert ctx.model is not None
        cands = [r for r in self.replicas.values()
                 if ctx.model in r.models and r.name not in exclude and r.eligible(now)]
        if not cands:  # every eligible replica is at its max_inflight: take the healthy ones anyway
            cands = [r for r in self.replicas.values() if ctx.model in r.models and r.name not in exclude
                     and r.healthy and r.breaker.allow(now)]
        self._last_num_candidates = len(cands)
        if not cands:
            return None
        if len(cands) == 1 and self.policy.name in ("round_robin", "least_outstanding", "least_kv"):
            return cands[0]
        snaps = [ReplicaSnapshot(replica_id=r.name, pool=r.config.pool, models=r.models, healthy=True,
                                 outstanding_requests=r.outstanding,
                                 outstanding_prefill_tokens=r.outstanding_prefill_tokens,
                                 num_waiting=int(r.engine_waiting), kv_util=r.kv_usage, asleep=r.asleep)
                 for r in cands]
        rid = self.policy.choose(view, snaps, now)
        return self.replicas.get(rid) or cands[0]

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, ctx: _Ctx, body: dict[str, Any],
                        raw: bytes) -> None:
        wake = self.wake
        if wake is None or not wake.manages(ctx.model or ""):
            await self._dispatch_routed(scope, receive, send, ctx, body, raw)
            return
        from gpuyield.edges.gateway.wake import WakeError

        try:  # hold the request until its model is awake (wake-on-request)
            await wake.acquire(ctx.model)
        except WakeError as exc:
            ctx.status, ctx.http_status, ctx.error = "error", 503, str(exc)
            self.metrics.child(self.metrics.rejections, ctx.tenant, "wake_failed").inc()
            await send_json(send, 503, error_body(503, str(exc), exc.code),
                            [(b"retry-after", str(max(1, math.ceil(exc.retry_after_s))).encode())])
            return
        try:
            await self._dispatch_routed(scope, receive, send, ctx, body, raw)
        finally:
            wake.release(ctx.model)

    async def _dispatch_routed(self, scope: Scope, receive: Receive, send: Send, ctx: _Ctx, body: dict[str, Any],
                               raw: bytes) -> None:
        m = self.metrics
        cfg = self.config
        view = RequestView(req_id=ctx.rid, model=ctx.model or "", input_tokens=ctx.input_tokens,
                           max_output_tokens=ctx.max_tokens, block_hashes=ctx.hashes,
                           block_size_tokens=self.tokens.block_size_tokens, tenant=ctx.tenant,
                           priority=ctx.priority, session_id=ctx.session)
        path = scope["path"]
        client_usage = False
        if ctx.stream:
            so = dict(body.get("stream_options") or {})
            client_usage = bool(so.get("include_usage"))
            if not client_usage:
                so["include_usage"] = True
                body = dict(body)
                body["stream_options"] = so
                raw = dumps(body)
        tried: set[str] = set()
        last_error = "no replica available"
        policy = self.policy
        ctx.policy_name = policy.name
        for _attempt in range(cfg.router.max_retries + 1):
            r = self._choose(ctx, view, tried)
            if r is None:
                break
            ctx.reason = (f"retry {len(tried)} after {', '.join(sorted(tried))} failed" if tried
                          else "only eligible replica" if self._last_num_candidates == 1 else None)
            tried.add(r.name)
            ctx.replica = r.name
            m.child(m.routing, policy.name, r.name).inc()
            if r.asleep and r.adapter.sleep_api and (self.wake is None or not self.wake.manages(ctx.model or "")):
                await r.wake_up(self.session)
            now = time.monotonic()
            policy.on_dispatch(view, r.name, now)
            r.breaker.on_dispatch()
            r.outstanding += 1
            ctx.prefill_held = ctx.input_tokens
            r.outstanding_prefill_tokens += ctx.prefill_held
            try:
                if ctx.stream:
                    await self._proxy_stream(r, path, raw, send, receive, ctx, client_usage)
                else:
                    await self._proxy_unary(r, path, raw, send, ctx)
                r.breaker.success()
                r.last_success_s = time.monotonic()
                return
            except _Retryable as exc:
                r.breaker.failure(time.monotonic())
                if r.breaker.state != CLOSED:
                    self._refresh_capacity()
                m.child(m.retries, r.name, exc.reason).inc()
                last_error = f"replica {r.name}: {exc}"
            finally:
                r.outstanding -= 1
                r.outstanding_prefill_tokens -= ctx.prefill_held
                ctx.prefill_held = 0
                policy.on_complete(view, r.name, time.monotonic())
        if not tried:  # every replica went down between admission and routing
            ctx.replica = None
            ctx.status, ctx.http_status, ctx.error = "rejected", 503, "no healthy replica"
            m.child(m.rejections, ctx.tenant, "no_backend").inc()
            await send_json(send, 503, error_body(503, f"no healthy replica serves model '{ctx.model}'",
                                                  "no_healthy_backend"), [(b"retry-after", b"1")])
            return
        ctx.status, ctx.http_status, ctx.error = "error", 502, last_error
        m.child(m.rejections, ctx.tenant, "backend_failed").inc()
        await send_json(send, 502, error_body(502, f"all replicas failed: {last_error}", "backend_error"))

    def _usage_into(self, ctx: _Ctx, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(pt, int) and pt >= 0:
            ctx.input_tokens, ctx.estimated = pt, False
        if isinstance(ct, int) and ct >= 0:
            ctx.output_tokens = ct
        det = usage.get("prompt_tokens_details")
        if isinstance(det, dict) and isinstance(det.get("cached_tokens"), int):
            ctx.cached = min(det["cached_tokens"], ctx.input_tokens)

    def _upstream_headers(self, r: Replica) -> bytes:
        """Header lines the engine needs beyond Host/Content-Type/Content-Length (its API key, when set)."""
        env = r.config.api_key_env
        if env:
            key = os.environ.get(env)
            if key:
                return b"Authorization: Bearer " + key.strip().encode("latin-1", "replace") + b"\r\n"
        return b""

    async def _start_upstream(self, r: Replica, path: str, raw: bytes) -> Exchange:
        lim = self.config.limits
        try:
            return await self.upstream.start(r.url, path, raw, extra_headers=self._upstream_headers(r),
                                             total_timeout_s=lim.request_timeout_s,
                                             connect_timeout_s=lim.connect_timeout_s)
        except UpstreamError as exc:
            raise _Retryable("connect" if exc.reason == "connect" else "broken", f"{exc.reason}: {exc}") from None

    async def _proxy_unary(self, r: Replica, path: str, raw: bytes, send: Send, ctx: _Ctx) -> None:
        ex = await self._start_upstream(r, path, raw)
        try:
            data = await ex.read()
        except UpstreamError as exc:
            raise _Retryable("broken", f"{exc.reason}: {exc}") from None
        finally:
            if not ex.complete:  # cancelled while reading: drop the connection
                ex.abort()
        status = ex.status
        if status >= 500:
            raise _Retryable(f"http_{status}", f"HTTP {status}")
        ctx.http_status = status
        if status == 200:
            try:
                self._usage_into(ctx, loads(data).get("usage"))
            except Exception:
                raise _Retryable("bad_body", "response is not a JSON object") from None
            now = time.monotonic()
            ctx.first_ts = ctx.arrival_ts + (now - ctx.t0)
        else:
            ctx.status = "error"
            ctx.error = f"backend answered HTTP {status}"
        await send_bytes(send, status, data, [(b"content-type", ex.content_type or b"application/json")])
        ctx.finish_ts = ctx.arrival_ts + (time.monotonic() - ctx.t0)

    async def _proxy_stream(self, r: Replica, path: str, raw: bytes, send: Send, receive: Receive, ctx: _Ctx,
                            client_usage: bool) -> None:
        m = self.metrics
        disconnect = asyncio.get_running_loop().create_task(_wait_disconnect(receive))
        ex: Exchange | None = None
        try:
            ex = await self._start_upstream(r, path, raw)
            if ex.status >= 500:
                with contextlib.suppress(UpstreamError):
                    await ex.read()
                raise _Retryable(f"http_{ex.status}", f"HTTP {ex.status}")
            if ex.status != 200:
                try:
                    data = await ex.read()
                except UpstreamError as exc:
                    raise _Retryable("broken", f"{exc.reason}: {exc}") from None
                ctx.http_status, ctx.status, ctx.error = ex.status, "error", f"backend answered HTTP {ex.status}"
                await send_bytes(send, ex.status, data, _JSON)
                return
            ctx.http_status = 200
            fwd = _SSEForward(self, ctx, r, send, ex, m.child(m.itl, ctx.model or "", r.name), client_usage)
            exchange = ex

            def _on_disconnect(_t: Any) -> None:
                if not exchange.complete:
                    exchange.abort("cancelled", "client disconnected")

            disconnect.add_done_callback(_on_disconnect)
            ex.set_sink(fwd)
            try:
                await ex.wait()
            except UpstreamError as exc:
                if fwd.error is not None:
                    raise fwd.error from None
                if exc.reason == "cancelled":
                    ctx.status, ctx.error = "cancelled", "client disconnected"
                    return
                if not fwd.started:
                    raise _Retryable("broken", f"{exc.reason}: {exc}") from None
                m.child(m.stream_errors, r.name).inc()
                ctx.status, ctx.error = "error", f"stream from replica {r.name} broke: {exc.reason}"
                err = {"error": {"message": f"the backend replica failed mid-stream ({exc.reason}); "
                                 "the response is incomplete", "type": "api_error", "param": None,
                                 "code": "backend_stream_error"}}
                fwd.push({"type": "http.response.body", "body": b"data: " + dumps(err) + b"\n\n",
                          "more_body": False})
                await fwd.drained()
                ctx.finish_ts = ctx.arrival_ts + (time.monotonic() - ctx.t0)
                return
            if fwd.error is not None:
                raise fwd.error
            if not fwd.started:
                raise _Retryable("empty_stream", "stream ended before any event")
            fwd.finish()
            await fwd.drained()
            if fwd.error is not None:
                raise fwd.error
            ctx.finish_ts = ctx.arrival_ts + (time.monotonic() - ctx.t0)
        finally:
            disconnect.cancel()
            if ex is not None and not ex.complete:
                ex.abort()

    # ---- records -----------------------------------------------------------------------------------------
    def _record(self, ctx: _Ctx) -> None:
        m = self.metrics
        model = ctx.model or ""
        backend = ctx.replica or ""
        status = str(ctx.http_status or (499 if ctx.status == "cancelled" else 0))
        m.child(m.requests, model, backend, ctx.tenant, status).inc()
        if ctx.replica is not None and ctx.status == "ok":
            m.child(m.tokens, model, backend, ctx.tenant, "prompt").inc(ctx.input_tokens)
            m.child(m.tokens, model, backend, ctx.tenant, "completion").inc(ctx.output_tokens)
            if ctx.cached:
                m.child(m.tokens, model, backend, ctx.tenant, "cached").inc(ctx.cached)
            if ctx.first_ts is not None:
                m.child(m.ttft, model, backend, ctx.tenant).observe(ctx.first_ts - ctx.arrival_ts)
            if ctx.finish_ts is not None:
                m.child(m.e2e, model, backend, ctx.tenant).observe(ctx.finish_ts - ctx.arrival_ts)
        w = self.log_writer
        if w is None:
            return
        rec: dict[str, Any] = {
            "request_id": ctx.rid, "arrival_ts": ctx.arrival_ts, "first_token_ts": ctx.first_ts,
            "finish_ts": ctx.finish_ts, "tenant": ctx.tenant, "model": ctx.model, "priority": ctx.priority,
            "session_id": ctx.session, "backend": (ctx.replica and self._pool_of(ctx.replica)),
            "replica": ctx.replica, "routing_policy": ctx.policy_name if ctx.replica else None,
            "routing_reason": ctx.reason if ctx.replica else None,
            "input_tokens": ctx.input_tokens, "input_tokens_estimated": ctx.estimated,
            "cached_tokens": ctx.cached, "output_tokens": ctx.output_tokens, "max_output_tokens": ctx.max_tokens,
            "status": ctx.status, "http_status": ctx.http_status, "error": ctx.error, "stream": ctx.stream,
        }
        if ctx.hashes:
            bs = self.tokens.block_size_tokens
            n = min(len(ctx.hashes), -(-ctx.input_tokens // bs))
            if n:
                rec["block_size_tokens"] = bs
                rec["block_hashes"] = list(ctx.hashes[:n])
        w.write(rec)

    def _pool_of(self, replica: str) -> str | None:
        r = self.replicas.get(replica)
        return r.config.pool if r is not None else None

    def _metrics_text(self) -> bytes:
        m = self.metrics
        adm = self.admission
        assert adm is not None
        for tenant, (queued, _inflight) in adm.tenant_counts().items():
            m.child(m.queue_depth, tenant).set(queued)
        for model, (queued, inflight, limit) in adm.pool_counts().items():
            m.child(m.model_queue_depth, model).set(queued)
            m.child(m.model_inflight, model).set(inflight)
            m.child(m.model_inflight_limit, model).set(limit or 0)
        now = time.monotonic()
        for r in self.replicas.values():
            m.child(m.inflight, r.name).set(r.outstanding)
            m.child(m.backend_up, r.name).set(1 if r.healthy and r.breaker.allow(now) else 0)
            m.child(m.circuit, r.name).set(r.breaker.state)
            m.child(m.engine_running, r.name).set(r.engine_running)
            m.child(m.engine_waiting, r.name).set(r.engine_waiting)
            m.child(m.engine_kv, r.name).set(r.kv_usage)
        if self.kv_listener is not None:
            m.kv_event_unknown_topic.set(self.kv_listener.stats.unknown_topic)
        for sub in self.kv_subscribers:
            st = sub.stats
            m.child(m.kv_event_batches, sub.replica).set(st.batches)
            m.child(m.kv_event_gaps, sub.replica).set(st.gaps)
            m.child(m.kv_event_restarts, sub.replica).set(st.restarts)
            m.child(m.kv_event_replayed, sub.replica).set(st.replayed)
            m.child(m.kv_view_exact, sub.replica).set(1 if self.kv_index.tracks(sub.replica) else 0)
            m.child(m.kv_event_errors, sub.replica).set(st.errors)
            m.child(m.kv_index_blocks, sub.replica).set(self.kv_index.num_blocks(sub.replica))
        return m.exposition()


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return
