"""Fairness: one tenant floods, a quiet tenant's latency stays within 1.5x of running alone."""

from __future__ import annotations

import asyncio
import time

import pytest
from gateway_harness import MODEL, gateway_config, hash_key, kill, spawn_emulator, spawn_gateway

aiohttp = pytest.importorskip("aiohttp")


def _p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]


async def _quiet_run(url: str, n: int) -> list[float]:
    body = {"model": MODEL, "prompt": "quiet question", "max_tokens": 20, "ignore_eos": True}
    out = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            t0 = time.perf_counter()
            async with s.post(url, json=body, headers={"authorization": "Bearer sk-quiet"}) as r:
                await r.read()
                assert r.status == 200
            out.append(time.perf_counter() - t0)
            await asyncio.sleep(0.01)
    return out


async def _with_flood(url: str, n: int, flood_workers: int) -> tuple[list[float], int]:
    stop = asyncio.Event()
    done = 0
    body = {"model": MODEL, "prompt": "flood " * 200, "max_tokens": 20, "ignore_eos": True}

    async def flood(s: aiohttp.ClientSession) -> None:
        nonlocal done
        while not stop.is_set():
            async with s.post(url, json=body, headers={"authorization": "Bearer sk-flood"}) as r:
                await r.read()
                done += r.status == 200

    async with aiohttp.ClientSession() as s:
        tasks = [asyncio.create_task(flood(s)) for _ in range(flood_workers)]
        await asyncio.sleep(0.5)  # the flood fills the gateway queue first
        lat = await _quiet_run(url, n)
        stop.set()
        await asyncio.gather(*tasks)
    return lat, done


def test_quiet_tenant_p99_within_1_5x_of_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    emu, emu_url = spawn_emulator("--fixed-step-ms", "5", "--max-num-seqs", "64")
    cfg = gateway_config([emu_url], tenants=[
        {"name": "flood", "api_key_sha256": [hash_key("sk-flood")]},
        {"name": "quiet", "api_key_sha256": [hash_key("sk-quiet")]},
    ])
    cfg["backends"][0]["max_inflight"] = 4  # the gateway, not the engine, holds the queue
    gw, gw_url = spawn_gateway(cfg, tmp_path)
    url = gw_url + "/v1/completions"
    try:
        asyncio.run(_quiet_run(url, 3))  # warm up connections
        alone = asyncio.run(_quiet_run(url, 20))
        flooded, flood_done = asyncio.run(_with_flood(url, 20, flood_workers=24))
    finally:
        kill(gw)
        kill(emu)
    assert flood_done > 40  # the flood really ran (and was served) while the quiet tenant measured
    ratio = _p99(flooded) / _p99(alone)
    assert ratio <= 1.5, (f"quiet p99 alone {_p99(alone) * 1e3:.1f} ms, with flood {_p99(flooded) * 1e3:.1f} ms",
                          ratio)
