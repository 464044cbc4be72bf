"""Backend replicas: engine adapters (vLLM, SGLang, llama.cpp server, generic OpenAI), health checks with
backoff, and a circuit breaker.

Each :class:`Replica` is one engine endpoint. Its adapter knows where the engine's health and metrics live and
which metric names carry its load (``running``, ``waiting``, KV usage -- current and legacy names, from
``gpuyield.edges.telemetry.families.ENGINE_GAUGES``, e.g. vLLM v1's ``vllm:kv_cache_usage_perc`` and the
older ``vllm:gpu_cache_usage_perc``). The vLLM adapter also knows the sleep/wake API (``POST /sleep?level=N``,
``POST /wake_up``, ``GET /is_sleeping``); llama.cpp's adapter reads ``/slots`` when ``/metrics`` is off.

Circuit breaker: ``failure_threshold`` consecutive failures (connection errors, 5xx, broken responses) *open*
the circuit: the replica takes no traffic for ``open_s``; then it is *half-open*: one request (or a passing
health check) is let through; success closes the circuit, failure opens it again. Health checks run every
``interval_s`` while healthy and back off exponentially (``interval_s × 2^k``, at most ``max_backoff_s``)
while failing.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

from gpuyield.edges.gateway.config import BackendConfig, HealthConfig

__all__ = ["ADAPTERS", "Adapter", "CircuitBreaker", "Replica", "parse_load_metrics"]

CLOSED, HALF_OPEN, OPEN = 0, 1, 2


def _gauge_names() -> dict[str, tuple[str, ...]]:
    try:
        from gpuyield.edges.telemetry.families import ENGINE_GAUGES

        names = {k: ENGINE_GAUGES[k] for k in ("running", "waiting", "kv_usage") if k in ENGINE_GAUGES}
        if len(names) == 3:
            return names
    except ImportError:  # pragma: no cover - telemetry package always ships with gpuyield
        pass
    return {  # pragma: no cover
        "running": ("vllm:num_requests_running", "sglang:num_running_reqs", "llamacpp:requests_processing"),
        "waiting": ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "llamacpp:requests_deferred"),
        "kv_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage",
                     "llamacpp:kv_cache_usage_ratio"),
    }


_GAUGES = _gauge_names()
_WANTED = {name: (canon, rank) for canon, names in _GAUGES.items() for rank, name in enumerate(names)}


def parse_load_metrics(text: str) -> dict[str, float]:
    """``{"running", "waiting", "kv_usage"}`` from an engine's exposition text (summed over series; the first
    name in preference order that is present wins). Malformed lines are skipped."""
    best: dict[str, tuple[int, float]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        sp = line.find(" ")
        if sp < 0:
            continue
        name = line[: brace if 0 <= brace < sp else sp]
        hit = _WANTED.get(name)
        if hit is None:
            continue
        canon, rank = hit
        try:
            value = float(line.rsplit("}", 1)[-1].split()[0]) if brace >= 0 else float(line[sp:].split()[0])
        except (ValueError, IndexError):
            continue
        cur = best.get(canon)
        if cur is None or rank < cur[0]:
            best[canon] = (rank, value)
        elif rank == cur[0]:
            best[canon] = (rank, cur[1] + value if canon != "kv_usage" else max(cur[1], value))
    return {k: v for k, (_r, v) in best.items()}


@dataclass(frozen=True, slots=True)
class Adapter:
    kind: str
    health_path: str
    metrics_path: str | None
    sleep_api: bool = False
    slots_path: str | None = None


ADAPTERS: dict[str, Adapter] = {
    "vllm": Adapter("vllm", "/health", "/metrics", sleep_api=True),
    "sglang": Adapter("sglang", "/health", "/metrics"),
    "llamacpp": Adapter("llamacpp", "/health", "/metrics", slots_path="/slots"),
    "openai": Adapter("openai", "/v1/models", None),
}


@dataclass(slots=True)
class CircuitBreaker:
    failure_threshold: int = 3
    open_s: float = 5.0
    state: int = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probe_inflight: bool = False

    def allow(self, now: float) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN and now - self.opened_at >= self.open_s:
            self.state = HALF_OPEN
            self.probe_inflight = False
        return bool(self.state == HALF_OPEN and not self.probe_inflight)

    def on_dispatch(self) -> None:
        if self.state == HALF_OPEN:
            self.probe_inflight = True

    def success(self) -> None:
        self.state = CLOSED
        self.failures = 0
        self.probe_inflight = False

    def failure(self, now: float) -> None:
        self.failures += 1
        self.probe_inflight = False
        if self.state == HALF_OPEN or self.failures >= self.failure_threshold:
            self.state = OPEN
            self.opened_at = now


@dataclass(slots=True)
class Replica:
    """One backend endpoint and the gateway's view of its state."""

    config: BackendConfig
    health: HealthConfig
    models: tuple[str, ...] = ()
    healthy: bool = True  # optimistic until the first check says otherwise
    asleep: bool = False
    outstanding: int = 0  # requests the gateway has in flight here
    outstanding_prefill_tokens: int = 0  # prompt tokens of those not yet past their first token
    engine_running: float = 0.0
    engine_waiting: float = 0.0
    kv_usage: float = 0.0
    last_check_s: float = 0.0
    last_success_s: float = -1e9  # monotonic time of the last request this replica answered well
    check_failures: int = 0
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.models = tuple(self.config.models)
        self.breaker = CircuitBreaker(self.health.failure_threshold, self.health.open_s)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def adapter(self) -> Adapter:
        return ADAPTERS[self.config.kind]

    def headers(self) -> dict[str, str]:
        h = {"content-type": "application/json"}
        env = self.config.api_key_env
        if env and os.environ.get(env):
            h["authorization"] = f"Bearer {os.environ[env]}"
        return h

    def eligible(self, now: float) -> bool:
        return self.healthy and self.breaker.allow(now) and self.outstanding < self.config.max_inflight

    # ---- engine-specific calls ----------------------------------------------------------------------
    async def check(self, session: Any, now: float) -> bool:
        """One health check (and load scrape). Updates ``healthy``, models, load and the breaker."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.health.timeout_s)
        ad = self.adapter
        ok = False
        try:
            async with session.get(self.url + ad.health_path, headers=self.headers(), timeout=timeout) as resp:
                body = await resp.read()
                ok = resp.status == 200
                if ok and ad.kind == "openai" and not self.config.models:
                    self._models_from(body)
            if ok and not self.models and ad.kind != "openai":
                async with session.get(self.url + "/v1/models", headers=self.headers(), timeout=timeout) as resp:
                    if resp.status == 200:
                        self._models_from(await resp.read())
            if ok and self.health.scrape_metrics and ad.metrics_path:
                async with session.get(self.url + ad.metrics_path, timeout=timeout) as resp:
                    if resp.status == 200:
                        load = parse_load_metrics((await resp.read()).decode("utf-8", "replace"))
                        self.engine_running = load.get("running", 0.0)
                        self.engine_waiting = load.get("waiting", 0.0)
                        self.kv_usage = max(0.0, min(1.0, load.get("kv_usage", 0.0)))
                    elif ad.slots_path:
                        await self._scrape_slots(session, timeout)
            if ok and ad.sleep_api:
                async with session.get(self.url + "/is_sleeping", timeout=timeout) as resp:
                    if resp.status == 200:
                        data = await resp.json(content_type=None)
                        self.asleep = bool(isinstance(data, dict) and data.get("is_sleeping"))
        except (TimeoutError, aiohttp.ClientError, ValueError, UnicodeDecodeError):
            ok = False
        self.last_check_s = now
        if ok:
            self.check_failures = 0
            self.healthy = True
            if self.breaker.state != CLOSED:
                self.breaker.success()
        elif now - self.last_success_s > 2 * self.health.interval_s + self.health.timeout_s:
            # a replica that is answering requests right now is alive even if a probe timed out under load
            self.check_failures += 1
            if self.check_failures >= self.health.failure_threshold or self.breaker.state != CLOSED:
                self.healthy = False
        return ok

    def _models_from(self, body: bytes) -> None:
        import json

        try:
            data = json.loads(body)
            ids = tuple(str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and "id" in m)
        except (ValueError, AttributeError, TypeError, KeyError):
            return
        if ids:
            self.models = ids

    async def _scrape_slots(self, session: Any, timeout: Any) -> None:
        async with session.get(self.url + (self.adapter.slots_path or "/slots"), timeout=timeout) as resp:
            if resp.status != 200:
                return
            slots = await resp.json(content_type=None)
        if isinstance(slots, list):
            self.engine_running = float(sum(1 for s in slots if isinstance(s, dict) and s.get("is_processing")))

    async def wake_up(self, session: Any) -> bool:
        """vLLM: ask a sleeping engine to wake up (``POST /wake_up``)."""
        import aiohttp

        if not self.adapter.sleep_api:
            return False
        try:
            async with session.post(self.url + "/wake_up", timeout=aiohttp.ClientTimeout(total=60)) as resp:
                ok = resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False
        if ok:
            self.asleep = False
        return ok

    async def sleep(self, session: Any, level: int = 1) -> bool:
        """vLLM: put the engine to sleep (``POST /sleep?level=N``; level 1 offloads weights, 2 discards them)."""
        import aiohttp

        if not self.adapter.sleep_api:
            return False
        try:
            async with session.post(f"{self.url}/sleep?level={int(level)}",
                                    timeout=aiohttp.ClientTimeout(total=60)) as resp:
                ok = resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False
        if ok:
            self.asleep = True
        return ok

    # ---- health loop --------------------------------------------------------------------------------
    def start(self, session: Any) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(session))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _loop(self, session: Any) -> None:
        h = self.health
        while True:
            ok = await self.check(session, time.monotonic())
            delay = h.interval_s if ok else min(h.max_backoff_s, h.interval_s * 2 ** min(self.check_failures, 16))
            await asyncio.sleep(delay)
