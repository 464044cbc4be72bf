"""Gateway wake-on-request against a multi-model engine emulator on 127.0.0.1 (in-process servers)."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from gateway_harness import KEY_A, ServerThread, gateway_config, start_gateway, wait_http, wait_idle

openai = pytest.importorskip("openai")

from gpuyield.edges.emulator.multimodel import MultiModelEmulator, TransitionTimes, build_multi_emulator  # noqa: E402
from gpuyield.edges.emulator.server import EmulatorSpec, build_emulator  # noqa: E402
from gpuyield.edges.gateway.config import load_config  # noqa: E402
from gpuyield.errors import ConfigError  # noqa: E402

WAKE_S = 0.15


def _emulator(models: list[str], wake_ms: float = WAKE_S * 1e3, itl_ms: float = 0.0) -> ServerThread:
    spec = EmulatorSpec(model=models[0], fixed_delay_ms=1.0, fixed_itl_ms=itl_ms)
    srv = ServerThread(build_multi_emulator(spec, models, wake_ms=wake_ms, sleep_ms=10))
    wait_http(srv.url + "/health")
    return srv


def _config(url: str, models: list[str], **group: Any) -> dict[str, Any]:
    g = {"name": "g0", "backends": ["r0"], "memory_gb": 20, "host_memory_gb": 100,
         "models": [{"model": m, "weight_gb": 8, "kv_budget_gb": 2} for m in models],
         "initially_awake": [models[0]], "wake_timeout_s": 5, **group}
    cfg = gateway_config([url])
    cfg["backends"][0]["models"] = models
    cfg["residency_groups"] = [g]
    return cfg


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        return str(r.read().decode())


def _value(text: str, prefix: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(prefix):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _sleeping(emu: ServerThread, model: str) -> bool:
    import json

    with urllib.request.urlopen(f"{emu.url}/is_sleeping?model={model}", timeout=5) as r:
        return bool(json.loads(r.read())["is_sleeping"])


def _client(url: str) -> Any:
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY_A, max_retries=0, timeout=20)


def _ask(client: Any, model: str, **kw: Any) -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=4, **kw)


def _wait(cond: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


@pytest.fixture()
def pair() -> Iterator[tuple[ServerThread, ServerThread, Any]]:
    emu = _emulator(["m-a", "m-b", "m-c"])
    srv, gw = start_gateway(_config(emu.url, ["m-a", "m-b", "m-c"]))
    _wait(lambda: _sleeping(emu, "m-b") and _sleeping(emu, "m-c"))  # sync_on_start put them to sleep
    yield emu, srv, gw
    srv.stop()
    emu.stop()


def test_request_for_sleeping_model_wakes_it(pair: tuple[ServerThread, ServerThread, Any]) -> None:
    emu, srv, gw = pair
    client = _client(srv.url)
    t0 = time.monotonic()
    r = _ask(client, "m-a")  # awake: no wake
    assert r.choices[0].message.content and time.monotonic() - t0 < WAKE_S
    t0 = time.monotonic()
    r = _ask(client, "m-b")
    assert r.model == "m-b" and r.choices[0].message.content
    assert time.monotonic() - t0 >= WAKE_S  # it really waited for the engine's wake
    assert not _sleeping(emu, "m-b")
    em = _metrics(emu.url)
    assert _value(em, 'gpuyield_emulator_wake_calls_total{model_name="m-b"}') == 1
    assert _value(em, 'gpuyield_emulator_wake_calls_total{model_name="m-a"}') == 0
    wait_idle(gw)


def test_concurrent_requests_share_one_wake_and_evict_an_idle_model(
        pair: tuple[ServerThread, ServerThread, Any]) -> None:
    emu, srv, gw = pair
    client = _client(srv.url)
    _ask(client, "m-b")  # m-a and m-b awake: memory (20 GB) is full
    results: list[Any] = []

    def one() -> None:
        try:
            results.append(_ask(client, "m-c", stream=False))
        except Exception as exc:  # pragma: no cover - reported below
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert all(not isinstance(r, Exception) for r in results), results
    assert len(results) == 8
    em = _metrics(emu.url)
    assert _value(em, 'gpuyield_emulator_wake_calls_total{model_name="m-c"}') == 1
    # room was made by putting one idle model (the least recently used, m-a) to sleep through the API
    assert _sleeping(emu, "m-a") and not _sleeping(emu, "m-b") and not _sleeping(emu, "m-c")
    gm = _metrics(srv.url)
    assert _value(gm, 'gpuyield_model_sleeps_total{group="g0",model="m-a",reason="evict"}') == 1
    assert _value(gm, 'gpuyield_model_wakes_total{group="g0",model="m-c"}') == 1
    assert _value(gm, 'gpuyield_model_wake_duration_seconds_count{group="g0",model="m-c"}') == 1
    assert _value(gm, 'gpuyield_wake_holds_total{model="m-c",reason="room"}') == 0  # nothing was busy
    assert _value(gm, 'gpuyield_wake_holds_total{model="m-c",reason="wake"}') == 8  # all 8 waited for the wake
    assert _value(gm, 'gpuyield_wake_held_requests{model="m-c"}') == 0
    assert _value(gm, 'gpuyield_model_awake_seconds_total{group="g0",model="m-a"}') > 0
    assert _value(gm, 'gpuyield_model_residency_state{group="g0",model="m-c"}') == 4
    wait_idle(gw)


def _stream_in_thread(client: Any, model: str, tokens: int, out: dict[str, float]) -> threading.Thread:
    """Stream ``tokens`` tokens of ``model`` in a thread; records first-chunk and end times in ``out``."""
    def run() -> None:
        stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": model}],
                                                max_tokens=tokens, stream=True, extra_body={"ignore_eos": True})
        n = 0
        for _ in stream:
            n += 1
            out.setdefault("first", time.monotonic())
        out["end"] = time.monotonic()
        out["chunks"] = n

    t = threading.Thread(target=run)
    t.start()
    return t


def test_busy_models_are_never_evicted_and_requests_wait_for_them_to_drain() -> None:
    emu = _emulator(["m-a", "m-b", "m-c"], itl_ms=20)
    srv, gw = start_gateway(_config(emu.url, ["m-a", "m-b", "m-c"]))
    try:
        _wait(lambda: _sleeping(emu, "m-b") and _sleeping(emu, "m-c"))
        client = _client(srv.url)
        _ask(client, "m-b")  # m-a (least recently used) and m-b awake; memory full
        sa: dict[str, float] = {}
        ta = _stream_in_thread(client, "m-a", 40, sa)
        _wait(lambda: "first" in sa)
        _ask(client, "m-c")  # needs room: the idle m-b is evicted, not the busy (and LRU) m-a
        assert _sleeping(emu, "m-b") and not _sleeping(emu, "m-a")
        ta.join(10)
        # now m-a and m-c both stream: a request for m-b must wait until one of them has drained
        s1: dict[str, float] = {}
        s2: dict[str, float] = {}
        t1, t2 = _stream_in_thread(client, "m-a", 30, s1), _stream_in_thread(client, "m-c", 30, s2)
        _wait(lambda: "first" in s1 and "first" in s2)
        r = _ask(client, "m-b")
        t_b = time.monotonic()
        t1.join(10)
        t2.join(10)
        assert r.choices[0].message.content
        assert t_b >= min(s1["end"], s2["end"])  # held until a busy model finished its stream
        assert s1["chunks"] >= 30 and s2["chunks"] >= 30
        gm = _metrics(srv.url)
        assert _value(gm, 'gpuyield_wake_holds_total{model="m-b",reason="room"}') == 1
        assert _value(gm, 'gpuyield_wake_held_requests{model="m-b"}') == 0
        wait_idle(gw)
    finally:
        srv.stop()
        emu.stop()


def test_wake_failure_gives_503_and_opens_the_circuit() -> None:
    emu = _emulator(["m-a"])
    cfg = _config(emu.url, ["m-a", "ghost"])  # the engine does not know 'ghost': its wake answers 404
    srv, gw = start_gateway(cfg)
    try:
        client = _client(srv.url)
        with pytest.raises(openai.APIStatusError) as ei:
            _ask(client, "ghost")
        resp = ei.value.response
        assert resp.status_code == 503 and int(resp.headers["retry-after"]) >= 1
        err = resp.json()["error"]
        assert err["code"] == "model_wake_failed" and "ghost" in err["message"]
        assert gw.replicas["r0"].breaker.state == 2  # marked: circuit open
        gm = _metrics(srv.url)
        assert _value(gm, 'gpuyield_model_wake_failures_total{group="g0",model="ghost",reason="http_404"}') == 1
        assert _value(gm, 'gpuyield_backend_up{backend="r0"}') == 0
        wait_idle(gw)
    finally:
        srv.stop()
        emu.stop()


def test_wake_timeout_gives_503() -> None:
    spec = EmulatorSpec(model="slow", fixed_delay_ms=1.0)
    emu_app = MultiModelEmulator({
        "fast": (build_emulator(EmulatorSpec(model="fast", fixed_delay_ms=1.0)),
                 TransitionTimes(0.01, 0.01, 0.01, 0.0, "test")),
        "slow": (build_emulator(spec), TransitionTimes(3.0, 3.0, 3.0, 0.0, "test")),
    })
    emu = ServerThread(emu_app)
    wait_http(emu.url + "/health")
    srv, gw = start_gateway(_config(emu.url, ["fast", "slow"], wake_timeout_s=0.3))
    try:
        _wait(lambda: _sleeping(emu, "slow"))
        t0 = time.monotonic()
        with pytest.raises(openai.APIStatusError) as ei:
            _ask(_client(srv.url), "slow")
        assert time.monotonic() - t0 < 2.0
        assert ei.value.status_code == 503
        assert ei.value.response.json()["error"]["code"] == "model_wake_timeout"
        assert int(ei.value.response.headers["retry-after"]) >= 1
        _wait(lambda: gw.replicas["r0"].breaker.state == 2)  # the wake call itself timed out: backend marked
        assert _value(_metrics(srv.url), 'gpuyield_model_wake_failures_total{group="g0",model="slow",'
                      'reason="timeout"}') == 1
        wait_idle(gw)
    finally:
        srv.stop()
        emu.stop()


def test_idle_sleep_after_idle_sleep_s_never_while_streaming() -> None:
    emu = _emulator(["m-a", "m-b"], itl_ms=20)
    srv, gw = start_gateway(_config(emu.url, ["m-a", "m-b"], idle_sleep_s=0.3))
    try:
        client = _client(srv.url)
        t0 = time.monotonic()
        stream = client.chat.completions.create(model="m-a", messages=[{"role": "user", "content": "x"}],
                                                max_tokens=40, stream=True, extra_body={"ignore_eos": True})
        chunks = 0
        for _ in stream:  # ~0.8 s of streaming, longer than idle_sleep_s
            chunks += 1
            assert not _sleeping(emu, "m-a")
        assert chunks >= 40 and time.monotonic() - t0 > 0.6
        _wait(lambda: _sleeping(emu, "m-a"), 3.0)  # idle for 0.3 s after the stream ended: put to sleep
        gm = _metrics(srv.url)
        assert _value(gm, 'gpuyield_model_sleeps_total{group="g0",model="m-a",reason="idle"}') == 1
        r = _ask(client, "m-a")  # and woken again on demand
        assert r.choices[0].message.content
        wait_idle(gw)
    finally:
        srv.stop()
        emu.stop()


def test_group_gpu_alias_and_unknown_gpu() -> None:
    from gpuyield.edges.gateway.wake import group_footprints

    cfg = load_config(_config("http://127.0.0.1:9", ["m-a"], gpu="h100-sxm"))
    slow = load_config(_config("http://127.0.0.1:9", ["m-a"], gpu="l40s"))
    fast_fp = group_footprints(cfg.residency_groups[0])[0]
    slow_fp = group_footprints(slow.residency_groups[0])[0]
    assert fast_fp.wake_l1_s < slow_fp.wake_l1_s  # PCIe Gen5 host link vs Gen4, from multiplex.yaml
    bad = load_config(_config("http://127.0.0.1:9", ["m-a"], gpu="no-such-gpu"))
    with pytest.raises(ConfigError, match="residency_groups.g0.gpu"):
        group_footprints(bad.residency_groups[0])


def test_config_validation() -> None:
    base = _config("http://127.0.0.1:9", ["m-a", "m-b"])
    base["residency_groups"][0]["backends"] = ["nope"]
    with pytest.raises(ConfigError, match="backend 'nope' is not in backends"):
        load_config(base)
    base = _config("http://127.0.0.1:9", ["m-a", "m-b"])
    base["backends"][0]["kind"] = "openai"
    with pytest.raises(ConfigError, match="kind vllm or llamacpp"):
        load_config(base)
    base = _config("http://127.0.0.1:9", ["m-a", "m-b"], initially_awake=["zz"])
    with pytest.raises(ConfigError, match="initially_awake"):
        load_config(base)
    base = _config("http://127.0.0.1:9", ["m-a", "m-b"], memory_gb=5)
    with pytest.raises(ConfigError, match="exceeds memory_gb"):
        load_config(base)


def test_llamacpp_router_api_loads_an_unloaded_model() -> None:
    """kind llamacpp: /models/unload at start-up, /models/load on demand (the emulator speaks both APIs)."""
    emu = _emulator(["m-a", "m-b"])
    cfg = _config(emu.url, ["m-a", "m-b"], prewarmed=False)
    cfg["backends"][0]["kind"] = "llamacpp"
    srv, gw = start_gateway(cfg)
    try:
        def status(model: str) -> str:
            import json

            with urllib.request.urlopen(emu.url + "/models", timeout=5) as r:
                return str(next(m["status"]["value"] for m in json.loads(r.read())["data"] if m["id"] == model))

        _wait(lambda: status("m-b") == "unloaded")
        r = _ask(_client(srv.url), "m-b")
        assert r.choices[0].message.content and status("m-b") == "loaded"
        assert _value(_metrics(emu.url), 'gpuyield_emulator_wake_calls_total{model_name="m-b"}') == 1
        wait_idle(gw)
    finally:
        srv.stop()
        emu.stop()


def test_random_traffic_never_sleeps_a_busy_model() -> None:
    """Seeded random mix of 3 models (room for 2), streams and short requests, idle sleep 0.1 s: every request
    succeeds, and the engine never receives a sleep for a model with a request in progress."""
    import random

    models = ["m-a", "m-b", "m-c"]
    emu = _emulator(models, wake_ms=30, itl_ms=5)
    srv, gw = start_gateway(_config(emu.url, models, idle_sleep_s=0.1))
    try:
        client = _client(srv.url)
        rng = random.Random(7)
        plan = [(rng.choice(models), rng.choice([1, 4, 20]), rng.random() < 0.5, rng.random() * 0.3)
                for _ in range(36)]
        errors: list[Exception] = []

        def run(items: list[tuple[str, int, bool, float]]) -> None:
            for model, tokens, stream, pause in items:
                time.sleep(pause)
                try:
                    if stream:
                        n = sum(1 for _ in client.chat.completions.create(
                            model=model, messages=[{"role": "user", "content": "q"}], max_tokens=tokens,
                            stream=True, extra_body={"ignore_eos": True}))
                        assert n >= tokens
                    else:
                        assert _ask(client, model).choices[0].message.content
                except Exception as exc:  # pragma: no cover - reported below
                    errors.append(exc)

        threads = [threading.Thread(target=run, args=(plan[i::6],)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[:3]
        em = _metrics(emu.url)
        assert _value(em, "gpuyield_emulator_busy_sleeps_total") == 0
        assert _value(em, "gpuyield_emulator_sleep_calls_total") > 0  # the scenario did exercise sleeps
        gm = _metrics(srv.url)
        assert _value(gm, "gpuyield_model_wakes_total") >= 1
        assert _value(gm, "gpuyield_model_wake_failures_total") == 0
        wait_idle(gw)
    finally:
        srv.stop()
        emu.stop()
