"""One emulated server hosting several models, with sleep, wake and load delays from the cost model.

``gpuyield engine-emulator --model A --model B ...`` (or ``--models A,B``) serves every model from one port;
each model has its own emulated engine (an :class:`~gpuyield.edges.emulator.app.EmulatorApp`) and a residency
state: awake, asleep (level 1 or 2) or unloaded. Control endpoints (the model is named by ``?model=NAME``;
without it they act on every model, as vLLM's endpoints act on its one engine):

- vLLM style: ``POST /sleep?level=N&model=M`` (answers after the offload time), ``POST /wake_up?model=M``
  (answers once the model is awake: level-1, level-2 or cold-load time), ``GET /is_sleeping?model=M``;
- llama.cpp router style: ``POST /models/load`` and ``POST /models/unload`` with ``{"model": M}``, and
  ``GET /models`` (each model's ``status.value``: ``loaded``, ``sleeping`` or ``unloaded``).

A completion for a model that is not awake is held until it is woken, as vLLM holds requests while asleep
(it does not wake the model itself): the gateway must wake it. Concurrent wake calls for one model share one
transition. Transition times: ``--wake-ms`` etc. when given, else the sourced cost model
(:func:`gpuyield.core.sim.multiplex.transition_footprint`) for the model's weights on ``--gpu`` (from the
performance model's memory plan). ``GET /metrics`` adds ``gpuyield_emulator_wake_calls_total``,
``gpuyield_emulator_sleep_calls_total`` per model (API calls received) and
``gpuyield_emulator_busy_sleeps_total`` (sleeps received while the model had requests in progress).
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from dataclasses import dataclass, replace
from typing import Any

from gpuyield.edges.emulator.app import EmulatorApp
from gpuyield.edges.emulator.server import EmulatorSpec, build_emulator
from gpuyield.edges.gateway.asgi import (
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    error_body,
    loads,
    query_param,
    read_body,
    send_bytes,
    send_json,
)
from gpuyield.errors import ConfigError

__all__ = ["MultiModelEmulator", "TransitionTimes", "build_multi_emulator", "transition_times"]

AWAKE, ASLEEP_L1, ASLEEP_L2, UNLOADED = 0, 1, 2, 3
_STATUS = {AWAKE: "loaded", ASLEEP_L1: "sleeping", ASLEEP_L2: "sleeping", UNLOADED: "unloaded"}


@dataclass(frozen=True, slots=True)
class TransitionTimes:
    wake_l1_s: float
    wake_l2_s: float
    cold_load_s: float
    sleep_s: float
    source: str


def transition_times(spec: EmulatorSpec, wake_ms: float | None = None, wake_l2_ms: float | None = None,
                     load_ms: float | None = None, sleep_ms: float | None = None) -> TransitionTimes:
    """Explicit times when ``wake_ms`` is given; else the cost model for ``spec.model`` on ``spec.gpu``."""
    for label, v in (("--wake-ms", wake_ms), ("--wake-l2-ms", wake_l2_ms), ("--load-ms", load_ms),
                     ("--sleep-ms", sleep_ms)):
        if v is not None and v < 0:
            raise ConfigError(f"{label} must be >= 0, got {v}")
    if wake_ms is not None:
        l2 = wake_ms if wake_l2_ms is None else wake_l2_ms
        return TransitionTimes(wake_ms / 1e3, l2 / 1e3, (l2 if load_ms is None else load_ms) / 1e3,
                               (sleep_ms or 0.0) / 1e3, "given (--wake-ms)")
    if spec.gpu is None:
        raise ConfigError("several models need transition times: give --gpu (cost model) or --wake-ms")
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.sim.multiplex import transition_footprint
    from gpuyield.edges.emulator.server import perf_model_for

    cat = default_catalog()
    pm, _ = perf_model_for(replace(spec, speculative=None, measured_at=None), cat)  # weights: as served
    gpu = pm.gpu
    plan = pm.memory(spec.gpu_memory_utilization, spec.max_model_len)
    fp = transition_footprint(spec.model, gpu.id, spec.tp, plan.weights_gb, plan.runtime_reserve_gb, 1.0)
    return TransitionTimes(
        fp.wake_l1_s if wake_ms is None else wake_ms / 1e3,
        fp.wake_l2_s if wake_l2_ms is None else wake_l2_ms / 1e3,
        fp.cold_load_s if load_ms is None else load_ms / 1e3,
        fp.sleep_s if sleep_ms is None else sleep_ms / 1e3,
        f"cost model: {plan.weights_gb:.1f} GB weights/GPU on {spec.tp} x {gpu.id}")


class _Hosted:
    def __init__(self, app: EmulatorApp, times: TransitionTimes) -> None:
        self.app = app
        self.times = times
        self.state = AWAKE
        self.lock = asyncio.Lock()
        self.wake_calls = 0
        self.sleep_calls = 0
        self.loading = False
        self.active = 0  # requests inside this model's app (held or running)
        self.busy_sleeps = 0  # sleep/unload calls that arrived while requests were active (a caller's bug)


class MultiModelEmulator:
    """ASGI app: several emulated models behind one server (see the module docstring)."""

    def __init__(self, hosted: dict[str, tuple[EmulatorApp, TransitionTimes]]) -> None:
        if not hosted:
            raise ConfigError("a multi-model emulator needs at least one model")
        self.models = {name: _Hosted(app, t) for name, (app, t) in hosted.items()}
        self._started = False
        self._bg: set[asyncio.Task[None]] = set()
        self.description = "; ".join(f"{n}: {h.app.settings.description}; transitions {h.times.source} "
                                     f"(wake L1 {h.times.wake_l1_s * 1e3:.0f} ms)" for n, h in self.models.items())

    # ---- lifecycle ---------------------------------------------------------------------------------------
    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        for h in self.models.values():
            if h.app.engine is not None:
                h.app.engine.start()
                h.app._started = True  # noqa: SLF001 - the sub-app would start it on first request otherwise

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await self._start()
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    for h in self.models.values():
                        if h.app.engine is not None:
                            await h.app.engine.stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        await self._start()
        path, method = scope["path"], scope["method"]
        try:
            if method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
                await self._completion(scope, receive, send)
            elif method == "GET" and path == "/v1/models":
                await send_json(send, 200, {"object": "list", "data": [
                    {"id": n, "object": "model", "created": 0, "owned_by": "gpuyield-emulator",
                     "max_model_len": h.app.settings.max_model_len} for n, h in self.models.items()]})
            elif method == "GET" and path == "/models":
                await send_json(send, 200, {"object": "list", "data": [
                    {"id": n, "object": "model", "status": {"value": "loading" if h.loading else _STATUS[h.state]}}
                    for n, h in self.models.items()]})
            elif path in ("/health", "/healthz"):
                await send_bytes(send, 200, b"", [(b"content-type", b"text/plain")])
            elif method == "GET" and path == "/metrics":
                await send_bytes(send, 200, self.metrics_text().encode(),
                                 [(b"content-type", b"text/plain; version=0.0.4")])
            elif method == "POST" and path in ("/sleep", "/wake_up", "/models/load", "/models/unload"):
                await self._control(scope, receive, send, path)
            elif method == "GET" and path == "/is_sleeping":
                hs = self._selected(query_param(scope, "model"))
                if hs is None:
                    await send_json(send, 404, error_body(404, "unknown model", "model_not_found", "model"))
                    return
                await send_json(send, 200, {"is_sleeping": all(h.state != AWAKE for h in hs)})
            elif method == "GET" and path == "/version":
                await send_json(send, 200, {"version": "gpuyield-emulator", "timing": self.description})
            else:
                await send_json(send, 404, error_body(404, f"no route {method} {path}"))
        except ConnectionResetError:
            return

    def _selected(self, model: str | None) -> list[_Hosted] | None:
        if model is None:
            return list(self.models.values())
        h = self.models.get(model)
        return None if h is None else [h]

    # ---- transitions -------------------------------------------------------------------------------------
    async def _control(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        model = query_param(scope, "model")
        if path.startswith("/models/"):
            try:
                body = loads(await read_body(receive, 65536, scope))
            except (BodyTooLarge, ValueError, TypeError):
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                await send_json(send, 400, error_body(400, 'body must be {"model": NAME}', param="model"))
                return
            model = body["model"]
        hs = self._selected(model)
        if hs is None:
            await send_json(send, 404, error_body(404, f"The model `{model}` does not exist.", "model_not_found",
                                                  "model"))
            return
        if path == "/sleep":
            level_s = query_param(scope, "level") or "1"
            if level_s not in ("1", "2"):
                await send_json(send, 400, error_body(400, "level must be 1 or 2", param="level"))
                return
            await asyncio.gather(*(self._sleep(h, int(level_s)) for h in hs))
        elif path == "/models/unload":
            await asyncio.gather(*(self._sleep(h, UNLOADED) for h in hs))
        elif path == "/models/load":  # like llama-server: answer at once, load in the background
            for h in hs:
                if h.state != AWAKE:
                    h.loading = True
                    self._bg.add(t := asyncio.get_running_loop().create_task(self._wake(h)))
                    t.add_done_callback(self._bg.discard)
        else:
            await asyncio.gather(*(self._wake(h) for h in hs))
        if path.startswith("/models/"):
            await send_json(send, 200, {"success": True})
        else:
            await send_bytes(send, 200, b"", [(b"content-type", b"text/plain")])

    async def _sleep(self, h: _Hosted, target: int) -> None:
        h.sleep_calls += 1
        if h.active and h.state == AWAKE:
            h.busy_sleeps += 1
        async with h.lock:
            if h.state == AWAKE:
                await asyncio.sleep(h.times.sleep_s if target == ASLEEP_L1 else 0.0)
                await _call(h.app, "/sleep", b"level=%d" % (1 if target == ASLEEP_L1 else 2))
            if target > h.state:
                h.state = target

    async def _wake(self, h: _Hosted) -> None:
        h.wake_calls += 1
        async with h.lock:  # concurrent wake calls share one transition
            if h.state == AWAKE:
                return
            delay = {ASLEEP_L1: h.times.wake_l1_s, ASLEEP_L2: h.times.wake_l2_s}.get(h.state, h.times.cold_load_s)
            await asyncio.sleep(delay)
            await _call(h.app, "/wake_up", b"")
            h.state = AWAKE
            h.loading = False

    # ---- requests ----------------------------------------------------------------------------------------
    async def _completion(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            raw = await read_body(receive, 4 * 1024 * 1024, scope)
        except BodyTooLarge:
            await send_json(send, 413, error_body(413, "request body too large"))
            return
        try:
            body = loads(raw)
        except Exception:
            body = None
        model = body.get("model") if isinstance(body, dict) else None
        h = self.models.get(model) if isinstance(model, str) else None
        if h is None:
            await send_json(send, 404, error_body(404, f"The model `{model}` does not exist.", "model_not_found",
                                                  "model"))
            return
        sent = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        h.active += 1
        try:
            await h.app(scope, replay, send)  # a sleeping model's app holds the request until it is woken
        finally:
            h.active -= 1

    def metrics_text(self) -> str:
        seen: set[str] = set()
        out: list[str] = []
        for h in self.models.values():
            for line in h.app.metrics_text().splitlines():
                if line.startswith("#"):
                    if line in seen:
                        continue
                    seen.add(line)
                out.append(line)
        for name, attr, help_ in (("wake_calls", "wake_calls", "wake/load API calls received"),
                                  ("sleep_calls", "sleep_calls", "sleep/unload API calls received"),
                                  ("busy_sleeps", "busy_sleeps", "sleep/unload calls received while requests "
                                   "for the model were in progress")):
            out.append(f"# HELP gpuyield_emulator_{name}_total {help_}, per model.")
            out.append(f"# TYPE gpuyield_emulator_{name}_total counter")
            for n, h in self.models.items():
                label = n.replace("\\", "\\\\").replace('"', '\\"')
                out.append(f'gpuyield_emulator_{name}_total{{model_name="{label}"}} {getattr(h, attr)}')
        return "\n".join(out) + "\n"


async def _call(app: EmulatorApp, path: str, query: bytes) -> None:
    """Drive one of the sub-app's own control endpoints in-process."""
    scope = {"type": "http", "method": "POST", "path": path, "query_string": query, "headers": []}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_msg: MutableMapping[str, Any]) -> None:
        return None

    await app(scope, receive, send)


def build_multi_emulator(spec: EmulatorSpec, models: list[str], wake_ms: float | None = None,
                         wake_l2_ms: float | None = None, load_ms: float | None = None,
                         sleep_ms: float | None = None) -> MultiModelEmulator:
    """One emulated engine per model (``spec`` with ``model`` replaced), behind one server."""
    if len(set(models)) != len(models):
        raise ConfigError(f"--model: each model once, got {models}")
    if spec.served_model_name is not None:
        raise ConfigError("--served-model-name applies to one model; with several, the --model values are the names")
    hosted: dict[str, tuple[EmulatorApp, TransitionTimes]] = {}
    for name in models:
        s = replace(spec, model=name)
        hosted[name] = (build_emulator(s), transition_times(s, wake_ms, wake_l2_ms, load_ms, sleep_ms))
    return MultiModelEmulator(hosted)
