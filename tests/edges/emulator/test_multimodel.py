"""The multi-model engine emulator: per-model sleep/wake/load with transition delays, errors, CLI flags."""

from __future__ import annotations

import asyncio
import time

import pytest

httpx = pytest.importorskip("httpx")

from gpuyield.edges.emulator.multimodel import build_multi_emulator, transition_times  # noqa: E402
from gpuyield.edges.emulator.server import EmulatorSpec  # noqa: E402
from gpuyield.errors import ConfigError  # noqa: E402


def _spec(**kw: object) -> EmulatorSpec:
    return EmulatorSpec(model="a", fixed_delay_ms=1.0, **kw)  # type: ignore[arg-type]


def test_sleep_wake_load_per_model_with_delays() -> None:
    app = build_multi_emulator(_spec(), ["a", "b"], wake_ms=80, wake_l2_ms=120, load_ms=160)

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emu") as c:
            ids = [m["id"] for m in (await c.get("/v1/models")).json()["data"]]
            assert ids == ["a", "b"]
            assert (await c.post("/sleep", params={"level": 1, "model": "a"})).status_code == 200
            assert (await c.get("/is_sleeping", params={"model": "a"})).json() == {"is_sleeping": True}
            assert (await c.get("/is_sleeping", params={"model": "b"})).json() == {"is_sleeping": False}
            assert (await c.get("/is_sleeping")).json() == {"is_sleeping": False}  # not every model sleeps
            # a request for the sleeping model is held until someone wakes it
            req = asyncio.create_task(c.post("/v1/chat/completions", json={
                "model": "a", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}))
            await asyncio.sleep(0.1)
            assert not req.done()
            t0 = time.monotonic()
            w1, w2 = await asyncio.gather(c.post("/wake_up", params={"model": "a"}),
                                          c.post("/wake_up", params={"model": "a"}))  # share one transition
            assert w1.status_code == w2.status_code == 200
            assert 0.07 <= time.monotonic() - t0 < 0.5
            assert (await req).status_code == 200
            await c.post("/sleep", params={"level": 2, "model": "b"})
            t0 = time.monotonic()
            await c.post("/wake_up", params={"model": "b"})
            assert time.monotonic() - t0 >= 0.11  # level-2 wake time
            r = await c.post("/models/unload", json={"model": "b"})
            assert r.json() == {"success": True}
            statuses = {m["id"]: m["status"]["value"] for m in (await c.get("/models")).json()["data"]}
            assert statuses == {"a": "loaded", "b": "unloaded"}
            t0 = time.monotonic()
            assert (await c.post("/models/load", json={"model": "b"})).status_code == 200  # answers at once
            assert time.monotonic() - t0 < 0.1
            statuses = {m["id"]: m["status"]["value"] for m in (await c.get("/models")).json()["data"]}
            assert statuses["b"] == "loading"
            await asyncio.sleep(0.25)
            statuses = {m["id"]: m["status"]["value"] for m in (await c.get("/models")).json()["data"]}
            assert statuses["b"] == "loaded"
            text = (await c.get("/metrics")).text
            assert 'gpuyield_emulator_wake_calls_total{model_name="a"} 2' in text
            assert text.count("# TYPE vllm:num_requests_running gauge") == 1  # one family, two models
            assert (await c.post("/sleep", params={"level": 3, "model": "a"})).status_code == 400
            assert (await c.post("/wake_up", params={"model": "zz"})).status_code == 404
            assert (await c.post("/models/load", json={"nope": 1})).status_code == 400
            assert (await c.post("/v1/completions", json={"model": "zz", "prompt": "x"})).status_code == 404

    asyncio.run(run())


def test_transition_times_from_the_cost_model() -> None:
    from gpuyield.core.sim.multiplex import multiplex_costs

    t = transition_times(EmulatorSpec(model="llama-3.1-8b", gpu="h100-sxm", fixed_delay_ms=1.0))
    c = multiplex_costs()
    assert t.wake_l1_s > c["wake_fixed_s"]["value"] and t.cold_load_s > c["engine_start_s"]["value"]
    assert t.wake_l1_s < t.wake_l2_s < t.cold_load_s
    assert "cost model" in t.source


def test_bad_multi_model_input() -> None:
    with pytest.raises(ConfigError, match="--gpu"):
        build_multi_emulator(_spec(), ["a", "b"])
    with pytest.raises(ConfigError, match="each model once"):
        build_multi_emulator(_spec(), ["a", "a"], wake_ms=1)
    with pytest.raises(ConfigError, match="served-model-name"):
        build_multi_emulator(_spec(served_model_name="x"), ["a", "b"], wake_ms=1)
    with pytest.raises(ConfigError, match="--wake-ms must be >= 0"):
        build_multi_emulator(_spec(), ["a", "b"], wake_ms=-1)


def test_cli_needs_a_model() -> None:
    from typer.testing import CliRunner

    from gpuyield.edges.cli.main import app

    res = CliRunner().invoke(app, ["engine-emulator", "--fixed-delay-ms", "1"])
    assert res.exit_code == 2 and "--model is required" in res.output
    res = CliRunner().invoke(app, ["engine-emulator", "--models", "a,b", "--fixed-delay-ms", "1"])
    assert res.exit_code == 2 and "--wake-ms" in res.output
