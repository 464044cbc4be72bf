"""Hostile and malformed requests: no crash, a correct status each time, nothing leaked."""

from __future__ import annotations

import json

import httpx
import pytest
from gateway_harness import KEY_A, MODEL, gateway_config, start_emulator, start_gateway, wait_idle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_VALID_MSGS = [{"role": "user", "content": "hi"}]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from([MODEL, MODEL, MODEL, "nope", "", 3, None]),
        "messages": st.sampled_from([_VALID_MSGS, _VALID_MSGS, "hi", [], [{"role": 1}],
                                     [{"role": "user", "content": {"a": 1}}], [{"role": "user", "content": None}],
                                     [{"role": "user", "content": [{"type": "text", "text": "x"}]}]]),
        "prompt": st.sampled_from(["hello", ["a", "b"], [1, 2, 3], [], 5, None]),
        "max_tokens": st.sampled_from([None, 1, 3, 0, -5, "3", 1.5, True, 10**6]),
        "stream": st.sampled_from([True, False, None, "yes", 1]),
        "stream_options": st.sampled_from([None, {}, {"include_usage": True}, "x", []]),
        "ignore_eos": st.booleans(),
        "n": st.sampled_from([1, 2]),
        "extra": json_values,
    },
)
bodies = st.one_of(
    fields.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.just(b'{"model": "' + MODEL.encode() + b'", "prompt": "\\ud800"}'),
    st.just(b'{"model": 1e999}'),
)
auths = st.sampled_from([f"Bearer {KEY_A}"] * 4 + [None, "Bearer", "Basic abc", "Bearer wrong", "Bearer \u00e9\u00e8"])


@pytest.fixture(scope="module")
def gateway():  # type: ignore[no-untyped-def]
    # a short context: 'ignore_eos' without 'max_tokens' generates up to max_model_len tokens (32k by default
    # took ~40 s on a busy machine, past the client timeout)
    emu = start_emulator(fixed_step_ms=1.0, max_model_len=1024)
    srv, gw = start_gateway(gateway_config([emu.url]))
    client = httpx.Client(base_url=srv.url, timeout=20)
    yield client, gw, emu
    client.close()
    srv.stop()
    emu.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, auth=auths, chat=st.booleans())
def test_hostile_requests(gateway, body: bytes, auth: str | None, chat: bool) -> None:  # type: ignore[no-untyped-def]
    client, gw, _emu = gateway
    headers: dict[str, bytes] = {"content-type": b"application/json"}
    if auth is not None:
        headers["authorization"] = auth.encode("utf-8")
    path = "/v1/chat/completions" if chat else "/v1/completions"
    r = client.post(path, content=body, headers=headers)
    valid_key = auth == f"Bearer {KEY_A}"
    if not valid_key:
        assert r.status_code == 401
    else:
        assert r.status_code in (200, 400, 404), (r.status_code, r.text[:200])
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            parsed = None
        if not isinstance(parsed, dict):
            assert r.status_code == 400
    if r.status_code != 200:
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["message"] and "type" in err and "code" in err
    elif r.headers["content-type"].startswith("text/event-stream"):
        assert r.text.rstrip().endswith("data: [DONE]")
    else:
        assert r.json()["usage"]["completion_tokens"] >= 1
    wait_idle(gw)


def test_no_leak_after_fuzz(gateway) -> None:  # type: ignore[no-untyped-def]
    client, gw, emu = gateway
    wait_idle(gw)
    eng = emu.app.engine
    assert eng is not None and eng.num_unfinished == 0 and eng.num_running == 0 and eng.num_waiting == 0
    assert client.get("/readyz").status_code == 200
