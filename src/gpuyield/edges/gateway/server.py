"""Run the gateway under uvicorn (uvloop + httptools), with SIGHUP reloading the config file.

Server settings chosen for the data path (each measured with ``benchmarks/gateway_overhead.py``): no access log,
no ``X-Forwarded-For`` rewriting (the gateway never reads the client address), no ``server`` header, and the
objects alive once start-up completed (uvicorn, aiohttp and the lazily imported modules included) frozen out of
garbage collection (``gc.freeze``), so a full collection walks only what the running gateway created (36 ms
pauses before, when the freeze ran before uvicorn started). The collection thresholds stay at CPython's defaults: raising the young generation's to
20,000 saved no GC time (the survivors are scanned either way) and made each pause 7-9 ms instead of 0.2-0.4 ms,
which is a p99 latency spike on the event loop (measured with ``gc.callbacks`` on the stream path).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path

from gpuyield.edges.gateway.app import Gateway
from gpuyield.edges.gateway.config import GatewayConfig, load_config
from gpuyield.errors import ConfigError

__all__ = ["build_gateway", "serve"]


def build_gateway(config: GatewayConfig | str | Path) -> Gateway:
    cfg = config if isinstance(config, GatewayConfig) else load_config(config)
    return Gateway(cfg)


def _install_sighup(gw: Gateway, path: Path) -> None:
    import asyncio

    def reload() -> None:
        try:
            cfg = load_config(path)
            gw.reload(cfg)
            print(f"gpuyield serve: reloaded {path}", file=sys.stderr)
        except ConfigError as exc:
            print(f"gpuyield serve: reload failed, keeping the running config: {exc}", file=sys.stderr)

    # not the main thread, or no SIGHUP on this platform: no reload by signal
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


class _WithReload:
    """Wraps the gateway's lifespan to install the SIGHUP handler once the loop runs."""

    def __init__(self, gw: Gateway, path: Path | None) -> None:
        self.gw = gw
        self.path = path

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            if self.path is not None:
                _install_sighup(self.gw, self.path)

            async def send_then_freeze(msg):  # type: ignore[no-untyped-def]
                if msg.get("type") == "lifespan.startup.complete":
                    _freeze_after_startup(self.gw)
                await send(msg)

            await self.gw(scope, receive, send_then_freeze)
            return
        await self.gw(scope, receive, send)


def _freeze_after_startup(gw: Gateway) -> None:
    """Import what the first requests would import lazily, then move every object alive now out of the
    collector's reach: a full collection then walks only what the running gateway created."""
    import gc

    gw.tokens.count_and_hash("warm-up")
    gc.collect()
    gc.freeze()


def serve(config_path: str | Path, host: str | None = None, port: int | None = None,
          log_level: str = "warning") -> None:
    import uvicorn

    path = Path(config_path)
    gw = build_gateway(path)
    h = host or gw.config.listen.host
    p = port or gw.config.listen.port
    loop = "uvloop"
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - uvloop ships with gpuyield[serve] except on Windows
        loop = "asyncio"
    uvicorn.run(_WithReload(gw, path), host=h, port=p, loop=loop, http="httptools", log_level=log_level,
                access_log=False, proxy_headers=False, server_header=False, lifespan="on",
                timeout_keep_alive=75, backlog=4096)
