"""Wake-on-request: the gateway holds requests for sleeping models, wakes them through the engines' own APIs
and puts idle models to sleep, using the simulator's :class:`~gpuyield.core.policy.residency.ResidencyPolicy`
(one per ``residency_groups`` entry of the gateway config).

Per request for a managed model, :meth:`WakeManager.acquire` asks the policy:

- the model is awake: go on at once (cost: one dict lookup and a policy call);
- it is asleep: the policy starts a wake; the gateway first puts to sleep the models the policy evicted to
  make room (the policy only evicts models with nothing in flight), then calls the engine's wake API; every
  request that arrives meanwhile awaits the same wake (one HTTP call: *coalescing*);
- there is no room yet (the models that must make room are busy and now *draining*): the request is held and
  retried after every release, up to ``wake_timeout_s``.

Engine APIs (the backend's ``kind``):

- ``vllm``: ``POST /sleep?level=N``, ``POST /wake_up``, ``GET /is_sleeping``; ``model=NAME`` is added to the
  query so one server hosting several models (the multi-model ``engine-emulator``) knows which one; a real
  vLLM engine (one model per server) ignores the extra parameter;
- ``llamacpp`` (llama-server router mode): ``POST /models/load`` / ``POST /models/unload`` with
  ``{"model": NAME}``. Level-1 sleep does not exist there: a sleep is an unload, a wake a load.

A wake that fails (HTTP error, connection error) or does not finish within ``wake_timeout_s`` fails every
request waiting for it with :class:`WakeError` (the gateway answers 503 + ``Retry-After`` in the OpenAI error
shape) and opens the backend's circuit breaker. A background task puts models idle for ``idle_sleep_s`` to
sleep (:meth:`ResidencyPolicy.due_sleeps`); the policy never chooses a model with requests in flight, and a
streaming request stays in flight until its last byte.

Metrics (registered on the gateway's registry): ``gpuyield_model_wakes_total``, ``gpuyield_model_sleeps_total``
(reason ``idle``/``evict``/``startup``), ``gpuyield_model_wake_failures_total`` (reason), the histogram
``gpuyield_model_wake_duration_seconds`` (wall time of the wake API call), ``gpuyield_wake_held_requests``
(gauge: requests waiting for a wake or for room now), ``gpuyield_wake_holds_total`` (requests held, by reason
``wake`` or ``room``), ``gpuyield_model_awake_seconds_total`` and ``gpuyield_model_residency_state`` (0 unloaded, 1 asleep
level 2, 2 asleep level 1, 3 waking, 4 awake).
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import Callable
from typing import Any

from gpuyield.core.policy.residency import ModelFootprint, ModelState, ResidencyPolicy
from gpuyield.edges.gateway.wake_config import ResidencyGroupConfig
from gpuyield.errors import ConfigError

__all__ = ["WakeError", "WakeManager", "group_footprints"]

_WAKE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class WakeError(Exception):
    """A held request could not be served: its model's wake failed or timed out."""

    def __init__(self, message: str, code: str = "model_wake_failed", retry_after_s: float = 5.0) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s


def group_footprints(g: ResidencyGroupConfig) -> list[ModelFootprint]:
    """Footprints of a group's models: memory from the config, transition times from the config or else from
    the sourced cost model (:func:`gpuyield.core.sim.multiplex.transition_footprint`)."""
    from gpuyield.core.sim.multiplex import transition_footprint

    gpu_id = ""
    if g.gpu is not None:
        from gpuyield.core.catalog import default_catalog

        try:
            gpu_id = default_catalog().gpu(g.gpu).id
        except Exception as exc:
            raise ConfigError(f"residency_groups.{g.name}.gpu: {exc}") from None
    out = []
    for m in g.models:
        per_gpu = m.weight_gb / g.num_gpus
        fp = transition_footprint(m.model, gpu_id, g.num_gpus, per_gpu, 0.0, m.kv_budget_gb / g.num_gpus)
        out.append(ModelFootprint(
            model=m.model, weight_bytes=m.weight_gb * 1e9, kv_budget_bytes=m.kv_budget_gb * 1e9,
            wake_l1_s=m.wake_l1_s or fp.wake_l1_s, wake_l2_s=m.wake_l2_s or fp.wake_l2_s,
            cold_load_s=m.cold_load_s or fp.cold_load_s,
            sleep_s=fp.sleep_s if m.sleep_s is None else m.sleep_s))
    return out


class _Group:
    def __init__(self, cfg: ResidencyGroupConfig, host_of: dict[str, str]) -> None:
        self.cfg = cfg
        self.policy = ResidencyPolicy(
            cfg.name, cfg.memory_gb * 1e9, group_footprints(cfg), host_memory_bytes=cfg.host_memory_gb * 1e9,
            initially_awake=tuple(cfg.initially_awake), prewarmed=cfg.prewarmed, idle_sleep_s=cfg.idle_sleep_s,
            forecast_halflife_s=cfg.forecast_halflife_s)
        self.host_of = host_of  # model -> backend name
        self.locks = {m.model: asyncio.Lock() for m in cfg.models}  # one transition at a time per model
        self.wakes: dict[str, asyncio.Task[None]] = {}  # wake in progress per model
        self.changed = asyncio.Event()  # set (and replaced) whenever memory may have been freed

    def notify(self) -> None:
        old, self.changed = self.changed, asyncio.Event()
        old.set()


class WakeManager:
    """Wake-on-request and idle sleep for the gateway's ``residency_groups``."""

    def __init__(self, groups: list[ResidencyGroupConfig], backends: dict[str, Any],
                 replica: Callable[[str], Any], registry: Any) -> None:
        """``backends``: backend name -> BackendConfig; ``replica(name)``: the live Replica (for its URL,
        headers and circuit breaker); ``registry``: the gateway's prometheus registry."""
        from prometheus_client import Counter, Gauge, Histogram

        self._replica = replica
        self._t0 = time.monotonic()
        self._groups: list[_Group] = []
        self._of: dict[str, _Group] = {}
        for g in groups:
            host_of = {}
            for m in g.models:
                if len(g.backends) == 1:
                    host_of[m.model] = g.backends[0]
                else:
                    host_of[m.model] = next(b for b in g.backends if m.model in backends[b].models)
            grp = _Group(g, host_of)
            self._groups.append(grp)
            for m in g.models:
                self._of[m.model] = grp
        self._kind = {name: b.kind for name, b in backends.items()}
        self.session: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._bg: set[asyncio.Task[Any]] = set()
        r = registry
        self.m_wakes = Counter("gpuyield_model_wakes", "Wakes (or loads) of a model through the engine API.",
                               ["group", "model"], registry=r)
        self.m_sleeps = Counter("gpuyield_model_sleeps", "Sleeps (or unloads) of a model through the engine API, "
                                "by reason: idle, evict (room for another model), startup.",
                                ["group", "model", "reason"], registry=r)
        self.m_fail = Counter("gpuyield_model_wake_failures", "Wakes that failed or timed out, by reason.",
                              ["group", "model", "reason"], registry=r)
        self.m_wake_s = Histogram("gpuyield_model_wake_duration_seconds",
                                  "Time spent waking a model (the wake API call, after any evictions).",
                                  ["group", "model"], buckets=_WAKE_BUCKETS, registry=r)
        self.m_held = Gauge("gpuyield_wake_held_requests", "Requests held now, waiting for their model to wake "
                            "or for room on its GPU group.", ["model"], registry=r)
        self.m_holds = Counter("gpuyield_wake_holds", "Requests that were held, by reason: room (the models that "
                               "must make room were busy) or wake (waited for a wake).", ["model", "reason"],
                               registry=r)
        r.register(_ResidencyCollector(self))

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def manages(self, model: str) -> bool:
        return model in self._of

    def now_s(self) -> float:
        return time.monotonic() - self._t0

    def start(self, session: Any) -> None:
        self.session = session
        loop = asyncio.get_running_loop()
        for g in self._groups:
            if g.cfg.sync_on_start:
                for m in g.cfg.models:
                    if m.model not in g.cfg.initially_awake:
                        self._spawn(self._sleep_call(g, m.model, "startup", quiet=True))
            if g.cfg.idle_sleep_s is not None:
                self._tasks.append(loop.create_task(self._idle_loop(g)))

    def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        self._tasks.clear()
        for t in list(self._bg):
            t.cancel()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        t = asyncio.get_running_loop().create_task(coro)
        self._bg.add(t)
        t.add_done_callback(_discard_from(self._bg))
        return t

    # ---- requests ----------------------------------------------------------------------------------------
    async def acquire(self, model: str) -> None:
        """Return when ``model`` is awake and the request counts as in flight; raise :class:`WakeError`.
        Every successful ``acquire`` must be paired with :meth:`release`."""
        g = self._of[model]
        pol = g.policy
        n = len(pol.log)
        ready = pol.acquire(model, self.now_s())
        if ready is not None and model not in g.wakes and len(pol.log) == n:
            return  # awake: the fast path
        t_start = time.monotonic()
        deadline = t_start + g.cfg.wake_timeout_s
        if ready is None:
            self.m_holds.labels(model, "room").inc()
            held = self.m_held.labels(model)
            held.inc()
            try:
                while ready is None:
                    ev = g.changed
                    left = deadline - time.monotonic()
                    if left <= 0:
                        pol.abandon(model, self.now_s())
                        self.m_fail.labels(g.cfg.name, model, "no_room").inc()
                        raise WakeError(f"model '{model}' could not be woken within {g.cfg.wake_timeout_s:g} s: "
                                        f"the models sharing its GPUs (group '{g.cfg.name}') are busy",
                                        "model_wake_timeout", g.cfg.wake_timeout_s)
                    try:
                        await asyncio.wait_for(ev.wait(), left)
                    except TimeoutError:
                        pass
                    except asyncio.CancelledError:
                        pol.abandon(model, self.now_s())
                        raise
                    n = len(pol.log)
                    ready = pol.retry(model, self.now_s())
            finally:
                held.dec()
        self._start_transitions(g, model, n)
        task = g.wakes.get(model)
        if task is None:
            return
        self.m_holds.labels(model, "wake").inc()
        held = self.m_held.labels(model)
        held.inc()
        try:
            await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self.release(model)
            raise WakeError(f"model '{model}' did not wake within {g.cfg.wake_timeout_s:g} s",
                            "model_wake_timeout") from None
        except WakeError:
            self.release(model)
            raise
        except BaseException:
            self.release(model)
            raise
        finally:
            held.dec()

    def release(self, model: str) -> None:
        g = self._of[model]
        g.policy.release(model, self.now_s())
        g.notify()

    def _start_transitions(self, g: _Group, model: str, n: int) -> None:
        """Act on what the last policy call logged (from index ``n``): evictions and the start of a wake."""
        new = g.policy.log[n:]
        victims = [m for (_t, m, ev) in new if ev == "sleep"]
        if any(m == model and ev == "wake" for (_t, m, ev) in new):
            task = self._spawn(self._wake(g, model, victims))
            g.wakes[model] = task
            task.add_done_callback(functools.partial(_wake_done, g, model))

    async def _wake(self, g: _Group, model: str, victims: list[str]) -> None:
        for v in victims:  # the policy chose them with nothing in flight; free their memory first
            await self._sleep_call(g, v, "evict")
        async with g.locks[model]:
            r = self._replica(g.host_of[model])
            t0 = time.monotonic()
            err = await self._call(r, model, "wake", 0, g.cfg.wake_timeout_s)
            if err is None:
                self.m_wake_s.labels(g.cfg.name, model).observe(time.monotonic() - t0)
                self.m_wakes.labels(g.cfg.name, model).inc()
                g.policy.mark_awake(model, self.now_s())
                if r is not None:
                    r.asleep = False
                return
            reason, detail = err
            self.m_fail.labels(g.cfg.name, model, reason).inc()
            g.policy.wake_failed(model, self.now_s())
            if r is not None:  # mark the backend: open its circuit
                now = time.monotonic()
                r.breaker.failures = max(r.breaker.failures, r.breaker.failure_threshold)
                r.breaker.failure(now)
            raise WakeError(f"waking model '{model}' on backend '{g.host_of[model]}' failed: {detail}",
                            "model_wake_timeout" if reason == "timeout" else "model_wake_failed")

    async def _sleep_call(self, g: _Group, model: str, reason: str, quiet: bool = False) -> None:
        async with g.locks[model]:
            st = g.policy.state(model, self.now_s())
            if st >= ModelState.WAKING:
                return  # woken again since the decision (a request arrived): nothing to do
            level = 1 if st == ModelState.ASLEEP_L1 else 2
            r = self._replica(g.host_of[model])
            err = await self._call(r, model, "sleep", level, g.cfg.wake_timeout_s)
            if err is None:
                self.m_sleeps.labels(g.cfg.name, model, reason).inc()
            elif not quiet:
                print(f"gpuyield serve: putting model '{model}' to sleep failed: {err[1]}", file=sys.stderr)
        g.notify()

    async def _call(self, r: Any, model: str, what: str, level: int, timeout_s: float) -> tuple[str, str] | None:
        """One engine API call; None on success, else (metric reason, message)."""
        import aiohttp

        if r is None or self.session is None:
            return ("no_backend", "the backend is not configured any more")
        kind = r.config.kind
        q = {"model": model}
        body: Any = None
        if kind == "llamacpp":
            path = "/models/load" if what == "wake" else "/models/unload"
            body, q = {"model": model}, {}
        elif what == "wake":
            path = "/wake_up"
        else:
            path, q = "/sleep", {"level": str(level), "model": model}
        deadline = time.monotonic() + timeout_s
        try:
            async with self.session.post(r.url + path, params=q or None, json=body, headers=r.headers(),
                                         timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                await resp.read()
                status = resp.status
            if kind == "llamacpp":
                # llama-server's router answers at once and loads/unloads in the background: poll GET /models
                want = "loaded" if what == "wake" else "unloaded"
                while True:
                    got = await self._llama_status(r, model, max(0.05, deadline - time.monotonic()))
                    if got == want:
                        return None
                    if status != 200 and got not in ("loading", "unloading"):
                        break
                    if what == "wake" and got == "failed":
                        return ("load_failed", f"llama-server reports the load of '{model}' failed")
                    if time.monotonic() >= deadline:
                        return ("timeout", f"'{model}' not {want} within {timeout_s:g} s (status {got!r})")
                    await asyncio.sleep(0.05)
            if status != 200:
                return (f"http_{status}", f"{path} answered HTTP {status}")
        except TimeoutError:
            return ("timeout", f"{path} did not answer within {timeout_s:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return ("connect", f"{path}: {type(exc).__name__}: {exc}")
        return None

    async def _llama_status(self, r: Any, model: str, timeout_s: float) -> str | None:
        """``status.value`` of ``model`` in llama-server's ``GET /models`` (None when absent)."""
        import aiohttp

        async with self.session.get(r.url + "/models", headers=r.headers(),
                                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                return None
            data = await resp.json(content_type=None)
        for m in data.get("data", []) if isinstance(data, dict) else []:
            if isinstance(m, dict) and m.get("id") == model:
                st = m.get("status")
                return str(st.get("value")) if isinstance(st, dict) else None
        return None

    async def _idle_loop(self, g: _Group) -> None:
        idle = g.cfg.idle_sleep_s or 1.0
        tick = max(0.01, min(0.5, idle / 4))
        while True:
            await asyncio.sleep(tick)
            now = self.now_s()
            for model in g.policy.due_sleeps(now):
                if g.policy.in_flight(model) == 0 and model not in g.wakes:
                    g.policy.mark_asleep(model, now)
                    self._spawn(self._sleep_call(g, model, "idle"))

    # ---- introspection -----------------------------------------------------------------------------------
    def snapshot(self) -> list[tuple[str, str, int, float]]:
        """(group, model, state, awake seconds so far) for every managed model."""
        out = []
        now = self.now_s()
        for g in self._groups:
            stats = g.policy.finish(now)
            for m in g.cfg.models:
                out.append((g.cfg.name, m.model, int(g.policy.state(m.model, now)),
                            stats.awake_time_s.get(m.model, 0.0)))
        return out


def _discard_from(s: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def cb(t: asyncio.Task[Any]) -> None:
        s.discard(t)
        if not t.cancelled():
            t.exception()  # retrieved: failures are reported to the requests that awaited the wake

    return cb


def _wake_done(g: _Group, model: str, t: asyncio.Task[None]) -> None:
    if g.wakes.get(model) is t:
        del g.wakes[model]
    g.notify()


class _ResidencyCollector:
    """Scrape-time series: awake seconds and state per managed model."""

    def __init__(self, wm: WakeManager) -> None:
        self.wm = wm

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        awake = CounterMetricFamily("gpuyield_model_awake_seconds", "Time each managed model has been awake.",
                                    labels=["group", "model"])
        state = GaugeMetricFamily("gpuyield_model_residency_state", "0 unloaded, 1 asleep (level 2), "
                                  "2 asleep (level 1), 3 waking, 4 awake.", labels=["group", "model"])
        for group, model, st, secs in self.wm.snapshot():
            awake.add_metric([group, model], secs)
            state.add_metric([group, model], st)
        yield awake
        yield state
