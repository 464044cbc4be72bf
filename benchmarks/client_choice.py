"""Measure the per-request cost of httpx.AsyncClient vs aiohttp.ClientSession against a loopback backend.

Usage: python benchmarks/client_choice.py http://127.0.0.1:PORT [N] [CONCURRENCY]
Prints requests/s and CPU-seconds per 1,000 requests of this process for each client (the gateway's backend
client pays exactly this cost on every proxied request).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

BODY = json.dumps({"model": "m", "prompt": "hello", "max_tokens": 1, "ignore_eos": True}).encode()


async def run_httpx(url: str, n: int, c: int) -> None:
    import httpx

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=c, max_keepalive_connections=c)) as cl:
        async def worker(k: int) -> None:
            for _ in range(k):
                r = await cl.post(url + "/v1/completions", content=BODY, headers={"content-type": "application/json"})
                await r.aread()

        await asyncio.gather(*(worker(n // c) for _ in range(c)))


async def run_aiohttp(url: str, n: int, c: int) -> None:
    import aiohttp

    conn = aiohttp.TCPConnector(limit=c)
    async with aiohttp.ClientSession(connector=conn) as s:
        async def worker(k: int) -> None:
            for _ in range(k):
                async with s.post(url + "/v1/completions", data=BODY,
                                  headers={"content-type": "application/json"}) as r:
                    await r.read()

        await asyncio.gather(*(worker(n // c) for _ in range(c)))


def main() -> None:
    import uvloop

    url = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    c = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    for name, fn in (("httpx", run_httpx), ("aiohttp", run_aiohttp)) * 2:
        t0, c0 = time.perf_counter(), time.process_time()
        uvloop.run(fn(url, n, c))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{name:8s} {n / wall:8.0f} req/s   {cpu / n * 1e6:6.0f} us CPU/request")


if __name__ == "__main__":
    main()
