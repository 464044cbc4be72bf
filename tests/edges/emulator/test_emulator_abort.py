"""The emulator aborts a request whose client went away: its slot and KV are freed, as vLLM does."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))
from gateway_harness import MODEL, start_emulator  # noqa: E402


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def _wait_for(pred, timeout_s: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_a_client_that_hangs_up_mid_stream_frees_its_kv_and_is_counted_as_abort() -> None:
    emu = start_emulator(fixed_step_ms=20.0)
    try:
        eng = emu.app.engine
        body = {"model": MODEL, "prompt": "long prompt " * 400, "max_tokens": 500, "ignore_eos": True,
                "stream": True}  # fmt: skip
        with httpx.Client(timeout=30) as c, c.stream("POST", emu.url + "/v1/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            got = 0
            for line in lines:
                if line.startswith("data: {"):
                    got += 1
                if got >= 5:
                    break
            assert eng.kv_usage > 0 and eng.num_running == 1
        # the stream is closed: the request must leave the engine long before its 500 tokens (10 s) would end
        assert _wait_for(lambda: eng.num_running == 0 and eng.kv_usage == 0.0), (eng.num_running, eng.kv_usage)
        assert eng.num_unfinished == 0
        text = httpx.get(emu.url + "/metrics").text
        assert _metric(text, "vllm:request_success_total") >= 1  # the abort reason is counted
        assert 'finished_reason="abort"' in text
        assert eng.stats.request_success_total["abort"] == 1
        # the engine still serves: a new request runs normally on the freed blocks
        ok = httpx.post(emu.url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 3,
                                                            "ignore_eos": True}, timeout=30)  # fmt: skip
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
    finally:
        emu.stop()
