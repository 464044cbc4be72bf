"""Which models of a shared GPU group are awake: wake on demand, evict by LRU + demand forecast, idle sleep.

One :class:`ResidencyPolicy` manages one *GPU group* (one or more GPUs that host several models' engines).
It is pure: time arrives as ``now_s``; it never sleeps or performs I/O. The simulator and the live gateway
use the same class:

- a request for ``model`` calls :meth:`ResidencyPolicy.acquire`. The answer is the time the model is (or will
  be) ready, or ``None`` when it cannot be woken now because the awake models that must make room still have
  work in flight; the caller then *holds* the request and calls :meth:`retry` after each :meth:`release`.
  Models chosen to make room are marked *draining*: they finish what they are running but take no new work
  (new requests for them are held too), so a busy model cannot starve a waiting one;
- the request's end calls :meth:`release`;
- :meth:`due_sleeps` lists models that have been idle for ``idle_sleep_s`` (and are not forecast to be
  needed soon); the caller puts them to sleep (the gateway through the engine's API) and calls
  :meth:`mark_asleep`.

Invariants (checked by the tests): a model with requests in flight is never put to sleep or evicted; a model
has at most one wake in progress, and concurrent requests for a sleeping model share it; the awake models'
weights + KV budgets never exceed the group's memory.

Model states: ``UNLOADED`` (never started: a wake is a cold load), ``ASLEEP_L2`` (weights discarded: reload
from storage), ``ASLEEP_L1`` (weights in host RAM: copy back over the host link), ``WAKING``, ``AWAKE``.
Sleep level 1 is used while host RAM has room for the weights, else level 2 (vLLM's two sleep levels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

from gpuyield.errors import ConfigError

__all__ = ["ModelFootprint", "ModelState", "ResidencyPolicy", "ResidencyStats"]


class ModelState(IntEnum):
    UNLOADED = 0
    ASLEEP_L2 = 1
    ASLEEP_L1 = 2
    WAKING = 3
    AWAKE = 4


@dataclass(frozen=True, slots=True)
class ModelFootprint:
    """A model's memory and transition costs on one GPU group (all GPUs of the group together)."""

    model: str
    weight_bytes: float  # weights resident while awake
    kv_budget_bytes: float  # KV cache reserved while awake
    wake_l1_s: float  # wake from level-1 sleep (weights back from host RAM)
    wake_l2_s: float  # wake from level-2 sleep (weights reloaded from storage)
    cold_load_s: float  # start from nothing (engine start + weight load)
    sleep_s: float  # time to offload (level 1) before the memory is free

    @property
    def resident_bytes(self) -> float:
        return self.weight_bytes + self.kv_budget_bytes


@dataclass(slots=True)
class ResidencyStats:
    wakes: int = 0
    cold_loads: int = 0
    sleeps: int = 0
    evictions: int = 0  # sleeps forced to make room for another model
    wake_time_s: float = 0.0  # total time spent waking (sum over wakes)
    awake_time_s: dict[str, float] = field(default_factory=dict)  # per model, up to the last update
    wakes_by_model: dict[str, int] = field(default_factory=dict)


class _M:
    __slots__ = ("fp", "state", "ready_at", "in_flight", "waiting", "draining", "last_used", "rate", "rate_t",
                 "awake_since", "idle_since")

    def __init__(self, fp: ModelFootprint) -> None:
        self.fp = fp
        self.state = ModelState.UNLOADED
        self.ready_at = 0.0  # when WAKING: the end of the wake
        self.in_flight = 0  # requests delivered (or about to be, at the end of a wake) to the engine
        self.waiting = 0  # requests held by the caller until memory can be freed
        self.draining = False  # chosen to make room: finishes its work, takes no new work
        self.last_used = -math.inf
        self.rate = 0.0  # decayed arrival count (forecast), in requests per half-life-scaled window
        self.rate_t = 0.0
        self.awake_since = 0.0
        self.idle_since = 0.0


class ResidencyPolicy:
    """Residency of several models on one GPU group (see the module docstring)."""

    def __init__(
        self,
        group_id: str,
        memory_bytes: float,
        footprints: list[ModelFootprint],
        *,
        host_memory_bytes: float = 0.0,
        initially_awake: tuple[str, ...] = (),
        prewarmed: bool = False,
        idle_sleep_s: float | None = None,
        forecast_halflife_s: float = 60.0,
    ) -> None:
        if memory_bytes <= 0:
            raise ConfigError(f"group {group_id}: memory must be > 0 bytes")
        if not footprints:
            raise ConfigError(f"group {group_id}: needs at least one model")
        self.group_id = group_id
        self.memory_bytes = float(memory_bytes)
        self.host_memory_bytes = float(host_memory_bytes)
        self.idle_sleep_s = idle_sleep_s
        self.halflife_s = float(forecast_halflife_s)
        self._m: dict[str, _M] = {}
        for fp in footprints:
            if fp.model in self._m:
                raise ConfigError(f"group {group_id}: model {fp.model!r} listed twice")
            if fp.resident_bytes > self.memory_bytes:
                raise ConfigError(
                    f"group {group_id}: model {fp.model!r} needs {fp.resident_bytes / 2**30:.1f} GiB "
                    f"(weights + KV budget) but the group has {self.memory_bytes / 2**30:.1f} GiB"
                )
            self._m[fp.model] = _M(fp)
        self.host_used_bytes = 0.0
        self.log: list[tuple[float, str, str]] = []  # (time_s, model, "wake" | "ready" | "sleep"), for audits
        self.stats = ResidencyStats(
            awake_time_s={k: 0.0 for k in self._m}, wakes_by_model={k: 0 for k in self._m}
        )
        used = 0.0
        for name in initially_awake:
            m = self._get(name)
            if used + m.fp.resident_bytes > self.memory_bytes:
                raise ConfigError(f"group {group_id}: initially_awake models do not fit together in memory")
            used += m.fp.resident_bytes
            m.state = ModelState.AWAKE
            m.awake_since = 0.0
        if prewarmed:  # loaded once at start-up, then put to sleep: the first wake is not a cold load
            for m in self._m.values():
                if m.state == ModelState.UNLOADED:
                    if self.host_used_bytes + m.fp.weight_bytes <= self.host_memory_bytes:
                        m.state = ModelState.ASLEEP_L1
                        self.host_used_bytes += m.fp.weight_bytes
                    else:
                        m.state = ModelState.ASLEEP_L2

    # ------------------------------------------------------------------ queries
    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._m)

    def state(self, model: str, now_s: float) -> ModelState:
        m = self._get(model)
        self._settle(m, now_s)
        return m.state

    def footprints(self) -> list[ModelFootprint]:
        return [m.fp for m in self._m.values()]

    def in_flight(self, model: str) -> int:
        return self._get(model).in_flight

    def used_bytes(self) -> float:
        return sum(m.fp.resident_bytes for m in self._m.values() if m.state >= ModelState.WAKING)

    def forecast_rate_per_s(self, model: str, now_s: float) -> float:
        """Short-term demand forecast: exponentially decayed arrival rate (requests/s)."""
        m = self._get(model)
        return self._decayed(m, now_s) * math.log(2) / self.halflife_s

    # ------------------------------------------------------------------ requests
    def acquire(self, model: str, now_s: float) -> float | None:
        """A request for ``model`` arrived: return when the model is ready, or ``None`` to hold it."""
        m = self._get(model)
        m.rate = self._decayed(m, now_s) + 1.0
        m.rate_t = now_s
        m.last_used = now_s
        ready = self._try(m, now_s)
        if ready is None:
            m.waiting += 1
        else:
            m.in_flight += 1
        return ready

    def retry(self, model: str, now_s: float) -> float | None:
        """A held request (``acquire`` returned ``None``) asks again."""
        m = self._get(model)
        if m.waiting <= 0:
            raise ValueError(f"retry for {model!r} with no held request")
        ready = self._try(m, now_s)
        if ready is not None:
            m.waiting -= 1
            m.in_flight += 1
        return ready

    def waiting(self, model: str) -> int:
        return self._get(model).waiting

    def abandon(self, model: str, now_s: float) -> None:
        """A held request (``acquire`` returned ``None``) gave up (timeout, client gone) without being served."""
        m = self._get(model)
        if m.waiting <= 0:
            raise ValueError(f"abandon for {model!r} with no held request")
        m.waiting -= 1
        if not any(o.waiting > 0 for o in self._m.values()):
            for o in self._m.values():
                o.draining = False

    def mark_awake(self, model: str, now_s: float) -> None:
        """The caller observed the wake of ``model`` finish at ``now_s`` (earlier than its estimated ready time)."""
        m = self._get(model)
        if m.state == ModelState.WAKING and now_s < m.ready_at:
            for i in range(len(self.log) - 1, -1, -1):  # keep the audit log's "ready" entry truthful
                t, name, ev = self.log[i]
                if name == model and ev == "ready":
                    self.log[i] = (now_s, name, ev)
                    break
            m.ready_at = now_s
            self._settle(m, now_s)

    def wake_failed(self, model: str, now_s: float) -> None:
        """The wake of ``model`` failed or timed out: it is not resident (treated as level-2 asleep).

        The requests that shared the wake are still counted in flight; the caller releases each of them."""
        m = self._get(model)
        if m.state not in (ModelState.WAKING, ModelState.AWAKE):
            return
        self.log.append((now_s, m.fp.model, "wake_failed"))
        m.draining = False
        m.state = ModelState.ASLEEP_L2

    def release(self, model: str, now_s: float) -> None:
        """A request for ``model`` finished (or failed) at the engine."""
        m = self._get(model)
        if m.in_flight <= 0:
            raise ValueError(f"release for {model!r} with no request in flight")
        m.in_flight -= 1
        m.last_used = now_s
        if m.in_flight == 0:
            m.idle_since = now_s

    # ------------------------------------------------------------------ idle sleep
    def due_sleeps(self, now_s: float) -> list[str]:
        """Awake models idle for ``idle_sleep_s`` with nothing in flight and no demand forecast soon."""
        if self.idle_sleep_s is None:
            return []
        out = []
        for name, m in self._m.items():
            self._settle(m, now_s)
            if m.state != ModelState.AWAKE or m.in_flight > 0 or m.waiting > 0:
                continue
            if now_s - m.idle_since < self.idle_sleep_s:
                continue
            expected = self.forecast_rate_per_s(name, now_s) * self.idle_sleep_s
            if expected < 0.5:
                out.append(name)
        return out

    def mark_asleep(self, model: str, now_s: float) -> None:
        """The caller put ``model`` to sleep (idle policy). Refuses while work is in flight."""
        m = self._get(model)
        self._settle(m, now_s)
        if m.in_flight > 0:
            raise ValueError(f"model {model!r} has {m.in_flight} requests in flight; it must not sleep")
        if m.state == ModelState.AWAKE:
            self._sleep(m, now_s)

    def next_idle_sleep_s(self, model: str) -> float | None:
        """When ``model`` becomes due for idle sleep if nothing else happens (None: never)."""
        m = self._get(model)
        if self.idle_sleep_s is None or m.in_flight > 0 or m.state < ModelState.WAKING:
            return None
        return max(m.idle_since, m.ready_at) + self.idle_sleep_s

    def finish(self, now_s: float) -> ResidencyStats:
        """Close the books at ``now_s`` (awake time of models still awake) and return the statistics."""
        for name, m in self._m.items():
            self._settle(m, now_s)
            if m.state == ModelState.AWAKE:
                self.stats.awake_time_s[name] += max(0.0, now_s - m.awake_since)
                m.awake_since = now_s
        return self.stats

    # ------------------------------------------------------------------ internals
    def _get(self, model: str) -> _M:
        m = self._m.get(model)
        if m is None:
            raise ConfigError(f"group {self.group_id}: model {model!r} is not placed here")
        return m

    def _decayed(self, m: _M, now_s: float) -> float:
        dt = max(0.0, now_s - m.rate_t)
        return m.rate * 0.5 ** (dt / self.halflife_s)

    def _settle(self, m: _M, now_s: float) -> None:
        if m.state == ModelState.WAKING and now_s >= m.ready_at:
            m.state = ModelState.AWAKE
            m.awake_since = m.ready_at
            if m.in_flight == 0:
                m.idle_since = m.ready_at

    def _sleep(self, m: _M, now_s: float) -> None:
        if m.in_flight > 0:  # the policy's central invariant; reaching here is a bug, not bad input
            raise RuntimeError(f"model {m.fp.model!r} would sleep with {m.in_flight} requests in flight")
        m.draining = False
        self.log.append((now_s, m.fp.model, "sleep"))
        self.stats.awake_time_s[m.fp.model] += max(0.0, now_s - m.awake_since)
        self.stats.sleeps += 1
        if self.host_used_bytes + m.fp.weight_bytes <= self.host_memory_bytes:
            m.state = ModelState.ASLEEP_L1
            self.host_used_bytes += m.fp.weight_bytes
        else:
            m.state = ModelState.ASLEEP_L2

    def _try(self, m: _M, now_s: float) -> float | None:
        self._settle(m, now_s)
        if m.draining:
            if any(o.waiting > 0 for o in self._m.values() if o is not m):
                return None  # making room for a waiting model: new work waits until it has slept and woken again
            m.draining = False  # nobody is waiting for its memory any more
        if m.state == ModelState.AWAKE:
            return now_s
        if m.state == ModelState.WAKING:
            return m.ready_at  # share the wake in progress
        need = m.fp.resident_bytes
        free = self.memory_bytes - self.used_bytes()
        victims: list[_M] = []
        if need > free:
            awake = []
            for other in self._m.values():
                if other is not m:
                    self._settle(other, now_s)
                    if other.state == ModelState.AWAKE:
                        awake.append(other)
            # idle models first; among them the one least likely to be needed soon, ties by least recently used
            awake.sort(key=lambda o: (o.in_flight > 0, self._decayed(o, now_s), o.last_used))
            room = free
            chosen: list[_M] = []
            for other in awake:
                if room >= need:
                    break
                chosen.append(other)
                room += other.fp.resident_bytes
            if room < need:
                return None  # cannot fit even with every awake model asleep (models mid-wake hold memory)
            if any(o.in_flight > 0 for o in chosen):
                for o in chosen:
                    if o.in_flight > 0:
                        o.draining = True
                return None
            victims = chosen
        for o in self._m.values():  # the room is made; draining marks are re-derived by the next held request
            o.draining = False
        start = now_s
        for v in victims:
            self._sleep(v, now_s)
            self.stats.evictions += 1
            start = max(start, now_s + v.fp.sleep_s)
        if m.state == ModelState.ASLEEP_L1:
            dur = m.fp.wake_l1_s
            self.host_used_bytes -= m.fp.weight_bytes
        elif m.state == ModelState.ASLEEP_L2:
            dur = m.fp.wake_l2_s
        else:
            dur = m.fp.cold_load_s
            self.stats.cold_loads += 1
        m.state = ModelState.WAKING
        m.ready_at = start + dur
        self.log.append((now_s, m.fp.model, "wake"))
        self.log.append((m.ready_at, m.fp.model, "ready"))
        self.stats.wakes += 1
        self.stats.wakes_by_model[m.fp.model] += 1
        self.stats.wake_time_s += m.ready_at - now_s
        return m.ready_at
