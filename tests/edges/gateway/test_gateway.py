"""The gateway in front of emulated engines, driven by the official openai SDK and raw HTTP."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gateway_harness import (
    KEY_A,
    KEY_B,
    KEY_LIMITED,
    MODEL,
    assert_openai_error,
    gateway_config,
    kill,
    spawn_emulator,
    start_emulator,
    start_gateway,
    wait_idle,
)

openai = pytest.importorskip("openai")


def _client(url: str, key: str = KEY_A) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def test_sdk_chat_completions_and_streams(two_emulators, tmp_path: Path) -> None:
    srv, gw = start_gateway(gateway_config([e.url for e in two_emulators], tmp_path))
    try:
        c = _client(srv.url)
        r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=7,
                                      extra_body={"ignore_eos": True})
        assert r.choices[0].finish_reason == "length"
        assert r.usage is not None and r.usage.completion_tokens == 7 and r.usage.prompt_tokens > 0
        assert len(r.choices[0].message.content.split()) == 7
        # streaming, client did not ask for usage: the gateway's added usage chunk is not forwarded
        chunks = list(c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=5, stream=True, extra_body={"ignore_eos": True}))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert len(text.split()) == 5
        assert all(ch.choices for ch in chunks) and all(ch.usage is None for ch in chunks)
        # streaming with usage requested
        chunks = list(c.completions.create(model=MODEL, prompt="tell me", max_tokens=4, stream=True,
                                           stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
        # legacy completions, non-streamed
        r2 = c.completions.create(model=MODEL, prompt="x" * 100, max_tokens=3, extra_body={"ignore_eos": True})
        assert r2.usage.completion_tokens == 3
        models = c.models.list()
        assert [m.id for m in models.data] == [MODEL]
        wait_idle(gw)
        # the request log holds every request with real token counts, and the workload loader reads it
        gw.log_writer.flush()
        lines = [json.loads(x) for x in (tmp_path / "requests.jsonl").read_text().splitlines()]
        assert len(lines) == 4 and all(x["status"] == "ok" for x in lines)
        assert [x["output_tokens"] for x in lines] == [7, 5, 4, 3]
        assert all(not x["input_tokens_estimated"] for x in lines)
        assert all(x["first_token_ts"] >= x["arrival_ts"] for x in lines)
        from gpuyield.edges.io.traces import load_workload

        wl = load_workload(str(tmp_path / "requests.jsonl"))
        reqs = list(wl)
        assert len(reqs) == 4 and [r.output_tokens for r in reqs] == [7, 5, 4, 3]
    finally:
        srv.stop()


def test_errors_have_openai_shape(two_emulators) -> None:
    srv, gw = start_gateway(gateway_config([e.url for e in two_emulators]))
    url = srv.url + "/v1/chat/completions"
    ok_body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    try:
        with httpx.Client(timeout=10) as h:
            assert_openai_error(h.post(url, json=ok_body), 401)
            assert_openai_error(h.post(url, json=ok_body, headers={"authorization": "Bearer nope"}), 401)
            auth = {"authorization": f"Bearer {KEY_A}"}
            err = assert_openai_error(h.post(url, content=b"{not json", headers=auth), 400)
            assert err["type"] == "invalid_request_error"
            assert_openai_error(h.post(url, content=b"[1,2]", headers=auth), 400)
            assert_openai_error(h.post(url, json={**ok_body, "max_tokens": -1}, headers=auth), 400)
            assert_openai_error(h.post(url, json={**ok_body, "messages": "hi"}, headers=auth), 400)
            assert_openai_error(h.post(url, json={**ok_body, "stream": "yes"}, headers=auth), 400)
            assert_openai_error(h.post(url, json={**ok_body, "model": 3}, headers=auth), 400)
            big = {**ok_body, "messages": [{"role": "user", "content": "x" * 100_000}]}
            assert_openai_error(h.post(url, json=big, headers=auth), 413)
            assert_openai_error(h.post(url, json={**ok_body, "model": "nope"}, headers=auth), 404)
            assert_openai_error(h.get(url, headers=auth), 405)
            err = assert_openai_error(h.post(url, json=ok_body, headers={"authorization": f"Bearer {KEY_B}"}), 403)
            assert err["code"] == "model_not_allowed"
            # budget: 200 tokens/min; the first request (charged ~prompt + 150) passes, the second is refused
            lim = {"authorization": f"Bearer {KEY_LIMITED}"}
            assert h.post(url, json={**ok_body, "max_tokens": 150}, headers=lim).status_code == 200
            r = h.post(url, json={**ok_body, "max_tokens": 150}, headers=lim)
            err = assert_openai_error(r, 429)
            assert err["code"] == "rate_limit_exceeded" and int(r.headers["retry-after"]) >= 1
            assert h.get(srv.url + "/healthz").status_code == 200
            assert h.get(srv.url + "/readyz").json()["ready"] is True
        wait_idle(gw)
    finally:
        srv.stop()


def test_queue_full_429_with_retry_after(tmp_path: Path) -> None:
    emu = start_emulator(fixed_step_ms=20.0)
    srv, gw = start_gateway(gateway_config([emu.url]))
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 10, "ignore_eos": True}
    try:
        with httpx.Client(timeout=20) as h, ThreadPoolExecutor(4) as pool:
            auth = {"authorization": f"Bearer {KEY_LIMITED}"}
            small = {**body, "max_tokens": 5}
            futs = [pool.submit(h.post, srv.url + "/v1/completions", json=small, headers=auth) for _ in range(4)]
            codes = sorted(f.result().status_code for f in futs)
            # tenant 'limited': 1 in flight, 1 queued; the rest are refused (429: queue or budget)
            assert codes.count(200) >= 2 and set(codes) <= {200, 429}
            rej = [f.result() for f in futs if f.result().status_code == 429]
            assert all("retry-after" in r.headers for r in rej)
        wait_idle(gw)
    finally:
        srv.stop()
        emu.stop()


def test_routing_round_robin_and_prefix_affinity(two_emulators, tmp_path: Path) -> None:
    urls = [e.url for e in two_emulators]
    srv, gw = start_gateway(gateway_config(urls, tmp_path))
    try:
        c = _client(srv.url)
        for i in range(6):
            c.completions.create(model=MODEL, prompt=f"q{i}", max_tokens=1)
        wait_idle(gw)
        gw.log_writer.flush()
        reps = [json.loads(x)["replica"] for x in (tmp_path / "requests.jsonl").read_text().splitlines()]
        assert reps.count("r0") == 3 and reps.count("r1") == 3
    finally:
        srv.stop()
    log2 = tmp_path / "pa"
    log2.mkdir()
    # pure affinity (the recent-dispatch balance guard off): 4 groups on 2 replicas may hash 3:1, which the
    # guard would rebalance; balance is tested in tests/core/policy and benchmarks/gateway_routing.py
    srv, gw = start_gateway(gateway_config(urls, log2, router={"policy": "prefix_affinity",
                                                               "options": {"rate_halflife_s": 0}}))
    try:
        c = _client(srv.url)
        system = "You are a careful assistant. " * 40  # ~300 tokens shared by every request of a group
        groups = {g: f"[{g}] " + system for g in ("alpha", "beta", "gamma", "delta")}
        for i in range(5):
            for g, prefix in groups.items():
                c.completions.create(model=MODEL, prompt=prefix + f"question {i} about {g}", max_tokens=1)
        wait_idle(gw)
        gw.log_writer.flush()
        recs = [json.loads(x) for x in (log2 / "requests.jsonl").read_text().splitlines()]
        by_group: dict[str, set[str]] = {}
        for k, rec in enumerate(recs):
            by_group.setdefault(list(groups)[k % 4], set()).add(rec["replica"])
        assert all(len(v) == 1 for v in by_group.values()), by_group  # each prefix group sticks to one replica
        cached = [rec["cached_tokens"] for rec in recs[4:]]
        assert min(cached) > 200  # the repeats hit the prefix cache on the replica they went to
        assert all(r["block_hashes"] for r in recs)
    finally:
        srv.stop()


def test_failover_loses_no_unstreamed_request() -> None:
    procs = [spawn_emulator("--fixed-step-ms", "5"), spawn_emulator("--fixed-step-ms", "5")]
    srv, gw = start_gateway(gateway_config([u for _p, u in procs], router={"policy": "round_robin"}))
    try:
        body = {"model": MODEL, "prompt": "hello", "max_tokens": 40, "ignore_eos": True}

        client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=32))

        def one(i: int) -> tuple[int, str]:
            r = client.post(srv.url + "/v1/completions", json=body, headers={"authorization": f"Bearer {KEY_A}"})
            return r.status_code, ("" if r.status_code == 200 else r.text[:400])

        with ThreadPoolExecutor(16) as pool:
            futs = [pool.submit(one, i) for i in range(48)]
            deadline = time.monotonic() + 10
            while gw.replicas["r0"].outstanding < 3 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert gw.replicas["r0"].outstanding >= 3
            kill(procs[0][0])  # SIGKILL one replica while it has requests in flight
            results = [f.result() for f in futs]
        client.close()
        assert [c for c, _ in results] == [200] * 48, [t for c, t in results if c != 200]
        # a stream that already started on a replica that dies ends with an SSE error event
        with httpx.Client(timeout=30) as h:
            sbody = {**body, "max_tokens": 400, "stream": True}
            with h.stream("POST", srv.url + "/v1/completions", json=sbody,
                          headers={"authorization": f"Bearer {KEY_A}"}) as r:
                assert r.status_code == 200
                lines = []
                for line in r.iter_lines():
                    lines.append(line)
                    if len(lines) == 6:
                        kill(procs[1][0])
        errors = [json.loads(x[6:]) for x in lines if x.startswith("data: {\"error\"")]
        assert len(errors) == 1 and errors[0]["error"]["code"] == "backend_stream_error"
        wait_idle(gw)
        text = httpx.get(srv.url + "/metrics").text
        assert 'gpuyield_retries_total{backend="r0"' in text, [x for x in text.splitlines() if 'retr' in x or 'stream_err' in x]
        assert "gpuyield_stream_errors_total" in text
    finally:
        srv.stop()
        for p, _u in procs:
            kill(p)


def test_metrics_scrape(two_emulators) -> None:
    srv, gw = start_gateway(gateway_config([e.url for e in two_emulators]))
    try:
        c = _client(srv.url)
        c.completions.create(model=MODEL, prompt="x", max_tokens=2, extra_body={"ignore_eos": True})
        list(c.completions.create(model=MODEL, prompt="x", max_tokens=2, stream=True, extra_body={"ignore_eos": True}))
        time.sleep(0.5)  # one health/scrape cycle
        text = httpx.get(srv.url + "/metrics").text
        from prometheus_client.parser import text_string_to_metric_families

        fams = {f.name: f for f in text_string_to_metric_families(text)}
        for name in ("gpuyield_requests", "gpuyield_tokens", "gpuyield_time_to_first_token_seconds",
                     "gpuyield_inter_token_latency_seconds", "gpuyield_e2e_request_latency_seconds",
                     "gpuyield_queue_depth", "gpuyield_routing_decisions", "gpuyield_backend_up",
                     "gpuyield_backend_kv_cache_usage_ratio", "gpuyield_backend_engine_running_requests"):
            assert name in fams, name
        reqs = sum(s.value for s in fams["gpuyield_requests"].samples if s.name == "gpuyield_requests_total")
        assert reqs == 2
        completion = sum(s.value for s in fams["gpuyield_tokens"].samples
                         if s.name == "gpuyield_tokens_total" and s.labels["kind"] == "completion")
        assert completion == 4
        assert all(s.value == 1 for s in fams["gpuyield_backend_up"].samples)
    finally:
        srv.stop()


def test_reload_keeps_inflight_and_applies_new_tenants(two_emulators) -> None:
    from gpuyield.edges.gateway.config import hash_key, load_config

    urls = [e.url for e in two_emulators]
    cfg = gateway_config(urls)
    srv, gw = start_gateway(cfg)
    try:
        with httpx.Client(timeout=30) as h, ThreadPoolExecutor(2) as pool:
            body = {"model": MODEL, "prompt": "x", "max_tokens": 100, "ignore_eos": True}
            fut = pool.submit(h.post, srv.url + "/v1/completions", json=body,
                              headers={"authorization": f"Bearer {KEY_A}"})
            time.sleep(0.05)
            new = dict(cfg)
            new["tenants"] = [*cfg["tenants"], {"name": "c", "api_key_sha256": [hash_key("sk-new")]}]
            new["backends"] = cfg["backends"][:1]
            srv.call(lambda: gw.reload(load_config(new)))
            r = fut.result()
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 100
            r2 = h.post(srv.url + "/v1/completions", json={**body, "max_tokens": 1},
                        headers={"authorization": "Bearer sk-new"})
            assert r2.status_code == 200
        assert list(gw.replicas) == ["r0"]
        wait_idle(gw)
    finally:
        srv.stop()


def test_request_log_replays_through_simulate(tmp_path: Path) -> None:
    import subprocess
    import sys

    from gateway_harness import ServerThread, wait_http

    from gpuyield.edges.emulator.server import EmulatorSpec, build_emulator

    emu = ServerThread(build_emulator(EmulatorSpec(model="llama-3.1-8b", fixed_step_ms=1.0)))
    wait_http(emu.url + "/health")
    cfg = gateway_config([emu.url], tmp_path)
    cfg["backends"][0]["models"] = ["llama-3.1-8b"]
    srv, gw = start_gateway(cfg)
    try:
        c = _client(srv.url)
        for i in range(3):
            c.completions.create(model="llama-3.1-8b", prompt=f"replay me {i} " * 30, max_tokens=5,
                                 extra_body={"ignore_eos": True})
        wait_idle(gw)
        gw.log_writer.flush()
    finally:
        srv.stop()
        emu.stop()
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-m", "gpuyield.edges.cli.main", "simulate", "--deployment",
                          str(root / "examples/deployments/llama8b-h100-x8.yaml"), "--workload",
                          str(tmp_path / "requests.jsonl"), "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["requests"] == 3 and summary["completed"] == 3


def test_sighup_reloads_config_file(two_emulators, tmp_path: Path) -> None:
    import os
    import signal

    import yaml
    from gateway_harness import hash_key, spawn_gateway

    cfg = gateway_config([e.url for e in two_emulators])
    proc, url = spawn_gateway(cfg, tmp_path)
    try:
        body = {"model": MODEL, "prompt": "x", "max_tokens": 1}
        assert httpx.post(url + "/v1/completions", json=body, headers={"authorization": "Bearer sk-late"}).status_code == 401
        on_disk = yaml.safe_load((tmp_path / "gateway.yaml").read_text())
        on_disk["tenants"].append({"name": "late", "api_key_sha256": [hash_key("sk-late")]})
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(on_disk))
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        code = 0
        while time.monotonic() < deadline:
            code = httpx.post(url + "/v1/completions", json=body, headers={"authorization": "Bearer sk-late"}).status_code
            if code == 200:
                break
            time.sleep(0.1)
        assert code == 200
        (tmp_path / "gateway.yaml").write_text("backends: 3\n")  # a broken file: the running config stays
        os.kill(proc.pid, signal.SIGHUP)
        time.sleep(0.3)
        assert httpx.post(url + "/v1/completions", json=body, headers={"authorization": "Bearer sk-late"}).status_code == 200
        assert proc.poll() is None
    finally:
        kill(proc)
