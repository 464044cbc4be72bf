"""Gateway config validation, token counting and engine-metric parsing (no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuyield.edges.gateway.backends import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, parse_load_metrics
from gpuyield.edges.gateway.config import hash_key, load_config
from gpuyield.edges.gateway.tokens import TokenCounter, chat_to_text, prompt_text
from gpuyield.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def _base() -> dict:
    return {"backends": [{"name": "a", "url": "http://127.0.0.1:1", "models": ["m"]}],
            "tenants": [{"name": "t", "api_key_sha256": [hash_key("k")]}]}


def test_example_config_loads() -> None:
    cfg = load_config(ROOT / "examples" / "gateway.yaml")
    assert len(cfg.backends) == 2 and cfg.router.policy == "prefix_affinity"


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d["backends"][0].update(url="localhost:1"), "backends.0.url"),
        (lambda d: d["backends"].append(dict(d["backends"][0])), "duplicate name"),
        (lambda d: d["tenants"][0].update(api_key_sha256=["abc"]), "sha256"),
        (lambda d: d["tenants"].append({"name": "u", "api_key_sha256": [hash_key("k")]}), "both"),
        (lambda d: d.update(bogus=1), "bogus"),
        (lambda d: d["tenants"][0].update(weight=0), "weight"),
        (lambda d: d.update(tenants=[]), "allow_anonymous"),
        (lambda d: d["backends"][0].update(kind="tgi"), "kind"),
    ],
)
def test_bad_configs_name_the_field(mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    d = _base()
    mutate(d)
    with pytest.raises(ConfigError, match=match):
        load_config(d)


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^gateway config .*missing.yaml: file not found$"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("backends: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_policy_name_checked_at_gateway_build() -> None:
    from gpuyield.edges.gateway.app import Gateway

    d = _base()
    d["router"] = {"policy": "fastest"}
    with pytest.raises(ConfigError, match="unknown policy"):
        Gateway(load_config(d))


def test_approximate_tokens_and_shared_prefix_hashes() -> None:
    tc = TokenCounter(None, block_size_tokens=4)
    assert tc.count("abcd" * 10) == 10 and tc.count("") == 1
    n1, h1 = tc.count_and_hash("system prompt " * 20 + "question one")
    n2, h2 = tc.count_and_hash("system prompt " * 20 + "another question")
    assert n1 > 60 and len(h1) == n1 // 4
    common = 0
    for a, b in zip(h1, h2, strict=False):
        if a != b:
            break
        common += 1
    assert common >= 17  # 280 shared bytes = 70 shared tokens = 17 full blocks of 4


def test_exact_tokenizer(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tok = tokenizers.Tokenizer(WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    tc = TokenCounter(tmp_path, block_size_tokens=2)
    assert tc.exact and tc.count("hello world hello") == 3
    assert len(tc.count_and_hash("hello world hello world")[1]) == 2
    with pytest.raises(ConfigError, match="does not exist"):
        TokenCounter(tmp_path / "nope.json")


def test_prompt_text_shapes() -> None:
    assert chat_to_text([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]) == \
        "<|user|>\na\n"
    assert prompt_text({"prompt": ["a", "b"]}, chat=False) == "ab"
    with pytest.raises(ValueError):
        prompt_text({"messages": []}, chat=True)
    with pytest.raises(ValueError):
        prompt_text({"prompt": {"x": 1}}, chat=False)


def test_parse_load_metrics_current_and_legacy_names() -> None:
    v1 = ('vllm:num_requests_running{model_name="m"} 3\nvllm:num_requests_waiting{model_name="m"} 1\n'
          'vllm:kv_cache_usage_perc{model_name="m"} 0.25\n# HELP x\ngarbage line\n')
    assert parse_load_metrics(v1) == {"running": 3.0, "waiting": 1.0, "kv_usage": 0.25}
    legacy = 'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\nvllm:num_requests_running{model_name="m"} 2.0\n'
    assert parse_load_metrics(legacy) == {"kv_usage": 0.5, "running": 2.0}
    sg = "sglang:num_running_reqs 4\nsglang:num_queue_reqs 2\nsglang:token_usage 0.1\n"
    assert parse_load_metrics(sg) == {"running": 4.0, "waiting": 2.0, "kv_usage": 0.1}
    real = (Path("/work/shared/data/telemetry/vllm_metrics_sample_legacy_tinyllama.prom"))
    if real.exists():
        assert "kv_usage" in parse_load_metrics(real.read_text())


def test_circuit_breaker_states() -> None:
    b = CircuitBreaker(failure_threshold=2, open_s=5.0)
    b.failure(0.0)
    assert b.state == CLOSED and b.allow(0.0)
    b.failure(1.0)
    assert b.state == OPEN and not b.allow(2.0)
    assert b.allow(6.5) and b.state == HALF_OPEN
    b.on_dispatch()
    assert not b.allow(6.6)  # one probe at a time
    b.failure(7.0)
    assert b.state == OPEN and not b.allow(8.0)
    assert b.allow(12.5)
    b.success()
    assert b.state == CLOSED and b.failures == 0


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300), block=st.sampled_from([1, 3, 16]))
def test_fast_ids_and_hashes_equal_the_reference_definition(text: str, block: int) -> None:
    # the documented approximation: 4-byte little-endian pieces, hashed by core.workload.hashing from a list
    from gpuyield.core.workload.hashing import hash_token_blocks

    data = text.encode("utf-8", "surrogatepass")
    ref_ids = [int.from_bytes(data[i : i + 4], "little") for i in range(0, len(data), 4)]
    tc = TokenCounter(None, block)
    assert tc.token_ids(text) == ref_ids
    assert tc.count_and_hash(text) == (max(1, len(ref_ids)), hash_token_blocks(ref_ids, block))
