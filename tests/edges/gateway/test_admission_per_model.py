"""`serve` admits per model: a flood on one model does not queue another model's requests (openai SDK client)."""

from __future__ import annotations

import asyncio
import time

import pytest
from gateway_harness import KEY_A, MODEL, ServerThread, gateway_config, start_gateway, wait_http

openai = pytest.importorskip("openai")

from gpuyield.edges.emulator.server import EmulatorSpec, build_emulator  # noqa: E402

QUIET = "quiet-model"


def _emulator(name: str) -> ServerThread:
    srv = ServerThread(build_emulator(EmulatorSpec(model=name, fixed_step_ms=20.0, max_num_seqs=64)))
    wait_http(srv.url + "/health")
    return srv


async def _flood_and_probe(base_url: str) -> tuple[float, int, int]:
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=KEY_A, max_retries=0, timeout=60.0)

    async def one(model: str, tokens: int) -> int:
        r = await client.completions.create(model=model, prompt="hello " * 50, max_tokens=tokens,
                                            extra_body={"ignore_eos": True})  # fmt: skip
        return r.usage.completion_tokens if r.usage else 0

    flood = [asyncio.create_task(one(MODEL, 40)) for _ in range(24)]
    await asyncio.sleep(0.3)  # the flood holds its model's slots and queues in the gateway
    t0 = time.perf_counter()
    quiet_tokens = await one(QUIET, 5)
    quiet_s = time.perf_counter() - t0
    done = await asyncio.gather(*flood)
    await client.close()
    return quiet_s, quiet_tokens, sum(1 for d in done if d == 40)


def test_a_flooded_model_does_not_queue_a_quiet_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    busy_emu, quiet_emu = _emulator(MODEL), _emulator(QUIET)
    cfg = gateway_config([busy_emu.url, quiet_emu.url])
    cfg["backends"][0].update({"models": [MODEL], "max_inflight": 2})
    cfg["backends"][1].update({"models": [QUIET], "max_inflight": 2})
    srv, gw = start_gateway(cfg)
    try:
        quiet_s, quiet_tokens, flood_ok = asyncio.run(_flood_and_probe(srv.url))
        # 24 flood requests of ~0.8 s each, 2 at a time: with one gateway-wide queue (limit 4) the quiet
        # request would wait for the backlog ahead of it (seconds); with per-model admission it goes at once
        assert quiet_tokens == 5 and flood_ok == 24
        assert quiet_s < 1.0, quiet_s
        text = asyncio.run(_metrics(srv.url))
        assert 'gpuyield_model_inflight_limit{model="quiet-model"} 2.0' in text
        assert 'gpuyield_model_inflight_limit{model="emu-model"} 2.0' in text
    finally:
        srv.stop()
        busy_emu.stop()
        quiet_emu.stop()


async def _metrics(url: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        return await r.text()
