"""No engine needed: the fixture builder agrees with the catalogue, and the recorded captures are what
their README says (counters only grow within one process; the restart series shows a reset)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from gpuyield.core.catalog import default_catalog

ROOT = Path(__file__).resolve().parents[3]
CAPTURES = ROOT / "tests/fixtures/telemetry/vllm_cpu"
SAMPLE_RE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})?\s+(?P<value>\S+)", re.M)


def _builder():
    spec = importlib.util.spec_from_file_location("make_tiny_llama", ROOT / "scripts/make_tiny_llama.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # top level imports only the standard library
    return module


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-llama-100m"])
def test_fixture_builder_presets_match_the_catalogue(preset: str) -> None:
    builder = _builder()
    args = builder.parse_args(["/unused", "--preset", preset])
    spec = default_catalog().model(preset)
    assert (spec.vocab_size, spec.num_layers, spec.hidden_size, spec.num_attention_heads, spec.num_kv_heads) == (
        args.vocab, args.layers, args.hidden, args.heads, args.kv_heads)
    assert spec.intermediate_size == args.intermediate
    assert spec.head_dim == args.hidden // args.heads
    assert spec.max_position_embeddings == args.max_pos
    assert not spec.tie_word_embeddings
    count = builder.llama_param_count(args.vocab, args.layers, args.hidden, args.heads, args.kv_heads,
                                      args.intermediate)
    assert spec.params_total == count


def test_explicit_100m_flags_are_named_by_their_preset() -> None:
    builder = _builder()
    args = builder.parse_args(["/unused", "--layers", "12", "--hidden", "768", "--heads", "12", "--kv-heads", "4"])
    assert args.preset == "tiny-llama-100m"
    assert builder.parse_args(["/unused", "--layers", "2"]).preset == "custom"


def _series(folder: Path) -> list[tuple[dict, dict[str, float]]]:
    manifest = json.loads((folder / "manifest.json").read_text())
    out = []
    for entry in manifest["scrapes"]:
        text = (folder / entry["file"]).read_text()
        values = {m.group("name") + (m.group("labels") or ""): float(m.group("value"))
                  for m in SAMPLE_RE.finditer(text)}
        out.append((entry, values))
    return out


def _counter(values: dict[str, float], name: str) -> float:
    return sum(v for k, v in values.items() if k == name or k.startswith(name + "{"))


def test_load_capture_counters_grow_and_match_the_load() -> None:
    folder = CAPTURES / "load_tiny_llama"
    manifest = json.loads((folder / "manifest.json").read_text())
    series = _series(folder)
    assert len(series) == 6
    assert [e["phase"] for e, _ in series][0].endswith("before-load")
    for name in ("vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:prefix_cache_hits_total"):
        values = [_counter(v, name) for _, v in series]
        assert values == sorted(values), name
    first, last = series[0][1], series[-1][1]
    load = manifest["phases"][0]
    assert _counter(last, "vllm:generation_tokens_total") - _counter(first, "vllm:generation_tokens_total") == \
        load["completion_tokens"] == 40 * 64
    assert _counter(last, "vllm:prompt_tokens_total") - _counter(first, "vllm:prompt_tokens_total") == \
        load["prompt_tokens"]
    assert _counter(last, "vllm:prefix_cache_hits_total") > 0
    times = [e["scraped_at_unix_s"] for e, _ in series]
    assert times == sorted(times)


def test_restart_capture_shows_a_counter_reset() -> None:
    series = _series(CAPTURES / "restart_tiny_llama")
    starts = [v["process_start_time_seconds"] for _, v in series]
    assert len(set(starts)) == 2
    prompt = [_counter(v, "vllm:prompt_tokens_total") for _, v in series]
    resets = [i for i in range(1, len(prompt)) if prompt[i] < prompt[i - 1]]
    assert resets == [3]
    assert starts[3] > starts[2]
    assert all(files.endswith(".prom") for files in (e["file"] for e, _ in series))


def test_saturated_capture_shows_queueing_full_kv_and_preemption() -> None:
    series = _series(CAPTURES / "saturated_tiny_llama")
    under = [v for e, v in series if e["phase"].endswith("under-load")]
    assert max(_counter(v, "vllm:num_requests_waiting") for v in under) > 0
    assert max(_counter(v, "vllm:kv_cache_usage_perc") for v in under) == 1.0
    assert _counter(series[0][1], "vllm:num_preemptions_total") == 0
    assert _counter(series[-1][1], "vllm:num_preemptions_total") > 0
    assert _counter(series[-1][1], "vllm:generation_tokens_total") == 48 * 96
