"""Small raw-ASGI helpers shared by the gateway and the engine emulator.

The gateway is a plain ASGI callable rather than a Starlette app: on this machine Starlette's routing,
``Request`` and ``Response`` objects cost measurably more per request than these few functions (see
``benchmarks/gateway_overhead.py --asgi-micro`` and docs/benchmarks.md), and the data path needs none of
Starlette's features. Bodies are read with a size limit; JSON is encoded with ``orjson`` when installed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "Receive",
    "Scope",
    "Send",
    "BodyTooLarge",
    "dumps",
    "error_body",
    "header",
    "loads",
    "query_param",
    "read_body",
    "send_bytes",
    "send_json",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

try:  # orjson is ~5x faster than json for our payloads
    import orjson as _orjson

    def dumps(obj: Any) -> bytes:
        return _orjson.dumps(obj)

    def loads(data: bytes | str) -> Any:
        return _orjson.loads(data)

except ImportError:  # pragma: no cover - depends on the environment

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(data: bytes | str) -> Any:
        return json.loads(data)


class BodyTooLarge(Exception):
    """The request body exceeded the configured limit."""


JSON_HEADERS = [(b"content-type", b"application/json")]


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case bytes), or None."""
    for k, v in scope.get("headers", ()):
        if k == name:
            return bytes(v)
    return None


def query_param(scope: Scope, name: str) -> str | None:
    from urllib.parse import parse_qs

    qs = scope.get("query_string", b"").decode("latin-1")
    vals = parse_qs(qs).get(name)
    return vals[0] if vals else None


async def read_body(receive: Receive, max_bytes: int, scope: Scope | None = None) -> bytes:
    """Read the whole request body, raising :class:`BodyTooLarge` past ``max_bytes``."""
    if scope is not None:
        cl = header(scope, b"content-length")
        if cl is not None and cl.isdigit() and int(cl) > max_bytes:
            raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ConnectionResetError("client disconnected while sending the body")
        body = msg.get("body", b"")
        if body:
            size += len(body)
            if size > max_bytes:
                raise BodyTooLarge
            chunks.append(body)
        if not msg.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_bytes(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    hdrs = list(headers or JSON_HEADERS)
    hdrs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, obj: Any, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send_bytes(send, status, dumps(obj), JSON_HEADERS + (extra_headers or []))


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_error",
    502: "api_error",
    503: "service_unavailable",
    504: "timeout_error",
}


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error JSON shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "api_error"),
            "param": param,
            "code": code,
        }
    }
