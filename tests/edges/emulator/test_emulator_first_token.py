"""The emulator adds the engine family's first-token overhead as the simulator does: the whole stream shifts."""

from __future__ import annotations

import asyncio

import pytest

from gpuyield.edges.emulator.engine import EmulatedEngine, EmuRequest, EngineConfig, FixedStepTime
from gpuyield.edges.emulator.server import EmulatorSpec, build_emulator

STEP_S = 0.02


async def _run(overhead_s: float, max_tokens: int = 5, abort_after_s: float | None = None,  # type: ignore[no-untyped-def]
               linger_s: float = 0.0):
    eng = EmulatedEngine(FixedStepTime(STEP_S), EngineConfig(first_token_overhead_s=overhead_s))
    eng.start()
    loop = asyncio.get_running_loop()
    req = EmuRequest("r", prompt_tokens=8, block_hashes=(), max_tokens=max_tokens, arrival_s=loop.time())
    eng.add_request(req)
    assert req.queue is not None
    seen: list[tuple[int, float]] = []

    async def read() -> None:
        assert req.queue is not None
        while True:
            n = await req.queue.get()
            seen.append((n, loop.time() - req.arrival_s))
            if n == -1:
                return

    reader = asyncio.create_task(read())
    if abort_after_s is not None:
        await asyncio.sleep(abort_after_s)
        eng.abort(req)
    await asyncio.wait_for(reader, 5.0)
    await asyncio.sleep(linger_s)  # anything still due would land on the queue now
    assert req.queue.empty(), "tokens arrived after the end marker"
    await eng.stop()
    return eng, seen


def test_overhead_delays_first_token_and_end_but_not_the_gaps() -> None:
    eng0, seen0 = asyncio.run(_run(0.0))
    eng, seen = asyncio.run(_run(0.1))
    assert [n for n, _ in seen] == [1] * 5 + [-1] == [n for n, _ in seen0]
    # engine side: one step to the first token, one per later token; the client sees each 0.1 s later
    assert eng0.stats.ttft_s[0] == pytest.approx(STEP_S, abs=0.015)
    assert eng.stats.ttft_s[0] == pytest.approx(STEP_S + 0.1, abs=0.015)
    assert seen[0][1] == pytest.approx(STEP_S + 0.1, abs=0.03)
    assert seen[0][1] - seen0[0][1] == pytest.approx(0.1, abs=0.03)
    assert eng.stats.e2e_s[0] - eng0.stats.e2e_s[0] == pytest.approx(0.1, abs=0.03)
    # what the client sees: the gaps between tokens are the step time (TPOT unchanged, as in the simulator),
    # and the end marker comes with the last token, at the engine's end plus the overhead
    gaps = [b - a for (_, a), (_, b) in zip(seen[:5], seen[1:5], strict=False)]
    assert len(gaps) == 4 and all(g == pytest.approx(STEP_S, abs=0.015) for g in gaps)
    assert seen[-1][1] == pytest.approx(eng.stats.e2e_s[0], abs=0.03)
    assert seen[-1][1] - seen0[-1][1] == pytest.approx(0.1, abs=0.03)


def test_abort_during_the_overhead_ends_the_stream_without_more_tokens() -> None:
    # the engine has produced tokens, the client has not seen them yet when it goes away
    eng, seen = asyncio.run(_run(0.2, max_tokens=50, abort_after_s=0.1, linger_s=0.3))
    assert [n for n, _ in seen] == [-1]  # nothing was due before the abort (first token at 0.22 s)
    assert eng.stats.request_success_total["abort"] == 1
    assert eng.num_unfinished == 0


def test_a_client_gone_after_the_engine_finished_but_before_its_tokens_is_an_abort() -> None:
    # 3 tokens take 3 steps (60 ms); the client sees them from 0.32 s; it leaves at 0.15 s
    eng, seen = asyncio.run(_run(0.3, max_tokens=3, abort_after_s=0.15, linger_s=0.3))
    assert [n for n, _ in seen] == [-1]
    assert eng.stats.request_success_total["abort"] == 1  # counted, as the e2e sample is
    assert len(eng.stats.e2e_s) == 1 and eng.num_unfinished == 0


def test_negative_overhead_is_refused() -> None:
    with pytest.raises(ValueError, match="first_token_overhead_s"):
        EmulatedEngine(FixedStepTime(STEP_S), EngineConfig(first_token_overhead_s=-1.0))


def test_fleet_model_emulator_takes_the_engine_familys_overhead() -> None:
    pytest.importorskip("gpuyield.core.perf")
    from gpuyield.core.catalog import default_catalog
    from gpuyield.core.perf import PerfModel

    cat = default_catalog()
    model = cat.model("llama-3.1-8b")
    for engine in ("vllm", "sglang"):
        emu = build_emulator(EmulatorSpec(model="llama-3.1-8b", gpu="h100-sxm", engine=engine))
        assert emu.engine is not None
        pm = PerfModel.build(model, cat.gpu("h100-sxm"), tp=1, engine=engine)
        want = pm.engine_coeffs.first_token_overhead_s(model.num_layers)
        assert want > 0
        assert emu.engine.config.first_token_overhead_s == pytest.approx(want)
        assert "first-token overhead" in emu.settings.description
    # the fixed-step router-benchmark mode is not the fleet model and adds nothing
    fixed = build_emulator(EmulatorSpec(model="m", fixed_step_ms=5))
    assert fixed.engine is not None and fixed.engine.config.first_token_overhead_s == 0.0


def test_a_request_that_fits_only_without_the_bounded_cache_is_refused_up_front() -> None:
    """Each sequence also holds its sliding-window / linear-state blocks (fleet-model mode): a request whose own
    blocks fit but not with those is refused when it arrives, not left at the head of the queue forever."""
    eng = EmulatedEngine(FixedStepTime(STEP_S), EngineConfig(num_kv_blocks=10, block_size_tokens=16,
                                                             fixed_blocks_per_seq=9))  # fmt: skip
    with pytest.raises(ValueError, match="needs 11 KV blocks, the engine has 10"):
        eng.add_request(EmuRequest("big", prompt_tokens=16, block_hashes=(), max_tokens=1, arrival_s=0.0))
    eng.add_request(EmuRequest("ok", prompt_tokens=8, block_hashes=(), max_tokens=1, arrival_s=0.0))


def test_fleet_model_mode_passes_the_bounded_cache_to_the_engine() -> None:
    app = build_emulator(EmulatorSpec(model="google/gemma-4-26B-A4B", gpu="h100_sxm", tp=1, max_model_len=8192))
    engine = app.engine
    assert engine.config.fixed_blocks_per_seq > 0
    assert engine.kv.fixed_blocks == engine.config.fixed_blocks_per_seq
    # windows filled to the request's length: a short request holds less of them
    assert engine.kv.fixed_for(100, 10) < engine.kv.fixed_for(4000, 10) == engine.config.fixed_blocks_per_seq


def test_emulator_scheduler_limits_follow_the_family_rule() -> None:
    """Unset limits are the engine family's (as simulate's); one given alone is resolved by the rule estimate and
    simulate use: vLLM refuses a budget below its sequence limit (it used to be raised silently), TensorRT-LLM runs at
    most the budget's worth of sequences, SGLang's budget rises to the limit."""
    from gpuyield.errors import ConfigError

    def limits(**kw: object) -> tuple[int, int]:
        emu = build_emulator(EmulatorSpec(model="m", fixed_step_ms=5, **kw))  # type: ignore[arg-type]
        assert emu.engine is not None
        return emu.engine.config.max_num_seqs, emu.engine.config.max_num_batched_tokens

    assert limits() == (1024, 8192) and limits(engine="sglang") == (4096, 8192)
    assert limits(engine="trtllm", max_num_batched_tokens=64) == (64, 64)
    assert limits(engine="sglang", max_num_batched_tokens=64) == (4096, 4096)
    assert limits(max_num_seqs=64) == (64, 8192)
    with pytest.raises(ConfigError, match="max_num_batched_tokens 64 and the engine's own max_num_seqs 1024"):
        limits(max_num_batched_tokens=64)
    # on a given GPU the engine's own defaults there, as estimate and simulate take them: vLLM below 70 GiB
    # (an L40S) 256 / 2048, SGLang's chunked prefill 16,384 tokens on a B200
    assert limits(gpu="l40s") == (256, 2048) and limits(engine="sglang", gpu="b200_sxm") == (4096, 16384)
    with pytest.raises(ConfigError, match="max_num_batched_tokens 64 and the engine's own max_num_seqs 256"):
        limits(gpu="l40s", max_num_batched_tokens=64)
    with pytest.raises(ConfigError, match="--max-num-seqs must be >= 1"):
        limits(max_num_seqs=0)
