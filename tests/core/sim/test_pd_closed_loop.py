"""The engine model's closed loop beyond one replica: the cluster driven by a fixed number of clients, and the P/D
estimate built on it (``estimate --layout 'disagg ...' --method sim``, ``validate --method sim``)."""

from __future__ import annotations

import numpy as np
import pytest

from gpuyield.core.catalog import default_catalog
from gpuyield.core.perf import PerfModel, default_calibration
from gpuyield.core.perf.closed_loop import estimate_disaggregated
from gpuyield.core.policy.routing import make_policy
from gpuyield.core.sim.closed_loop import (
    estimate_disaggregated_with_engine_model,
    estimate_with_engine_model,
    kv_blocks_from_memory_plan,
    run_closed_loop,
)
from gpuyield.core.sim.cluster import Cluster, ReplicaSetup
from gpuyield.core.sim.engine.config import EngineConfig
from gpuyield.core.workload.workload import Workload, WorkloadMeta
from gpuyield.errors import ConfigError

CAT = default_catalog()
CAL = default_calibration()
QWEN = CAT.model("Qwen/Qwen3-32B")
H100 = CAT.gpu("h100_sxm")


def _workload(n: int, isl: int, osl: int) -> Workload:
    return Workload(arrival_s=np.zeros(n), input_tokens=np.full(n, isl), output_tokens=np.full(n, osl),
                    meta=WorkloadMeta(name="test"))  # fmt: skip


def test_a_one_replica_cluster_in_closed_loop_is_run_closed_loop():
    perf = PerfModel.build(QWEN, H100, tp=2, calibration=CAL)
    cfg = EngineConfig.for_family("vllm", max_num_seqs=64, max_num_batched_tokens=4096)
    plan = perf.memory(cfg.gpu_memory_utilization, 2048 + 256)
    blocks = kv_blocks_from_memory_plan(plan, cfg.block_size)
    overhead_s = 0.05  # the first-token overhead the records carry; it does not delay the client's next request
    setup = ReplicaSetup("r-0", "r", "mixed", "h100_sxm", QWEN.id, cfg, perf, blocks, first_token_overhead_s=overhead_s)
    clients, n = 24, 72
    rec = Cluster([setup], make_policy("round_robin")).run(_workload(n, 2048, 256), closed_loop_clients=clients)
    ref = run_closed_loop(perf, cfg, 2048, 256, clients, num_requests=n, num_gpu_blocks=blocks)
    assert (rec.status == 0).all()
    ttft = (rec.first_token_s - rec.arrival_s) * 1e3
    assert ttft.mean() == pytest.approx(ref.ttft_ms.mean + overhead_s * 1e3, rel=1e-9)
    assert ((rec.finish_s - rec.arrival_s) * 1e3).mean() == pytest.approx(ref.e2e_ms.mean + overhead_s * 1e3, rel=1e-9)
    # the first wave at t = 0, every later request the moment an earlier one's last token left the engine
    assert (rec.arrival_s[:clients] == 0).all() and (np.sort(rec.arrival_s[clients:]) > 0).all()
    assert set(np.round(rec.arrival_s[clients:], 9)) <= set(np.round(rec.finish_s - overhead_s, 9))
    with pytest.raises(ConfigError, match="closed_loop_clients"):
        Cluster([setup], make_policy("round_robin")).run(_workload(4, 8, 8), closed_loop_clients=0)
    staggered = _workload(4, 8, 8)
    staggered.arrival_s[1:] = 100.0  # a first wave that does not arrive together has no closed-loop reading
    with pytest.raises(ConfigError, match="first wave"):
        Cluster([setup], make_policy("round_robin")).run(staggered, closed_loop_clients=2)


def _pools(engine: str = "vllm") -> tuple[PerfModel, PerfModel]:
    pre = PerfModel.build_pool(QWEN, H100, "prefill", engine=engine, calibration=CAL, tp=1)
    dec = PerfModel.build_pool(QWEN, H100, "decode", engine=engine, calibration=CAL, tp=2)
    return pre, dec


def test_the_pd_engine_estimate_agrees_with_the_analytic_one_where_nothing_queues():
    pre, dec = _pools()
    for c in (1, 4):
        eng = estimate_disaggregated_with_engine_model(pre, dec, 1024, 256, c, num_prefill=1, num_decode=1)
        ana = estimate_disaggregated(pre, dec, 1024, 256, c, num_prefill=1, num_decode=1)
        assert eng.tpot_ms == pytest.approx(ana.tpot_ms, rel=0.05), c
        assert eng.ttft_ms == pytest.approx(ana.ttft_ms, rel=0.25), c
        assert "P/D cluster" in eng.method
    # more clients than one prefill replica clears at once: the first token waits behind the others' prefills
    busy = estimate_disaggregated_with_engine_model(pre, dec, 4096, 256, 64, num_prefill=1, num_decode=1)
    assert busy.ttft_ms > 3 * estimate_disaggregated_with_engine_model(pre, dec, 4096, 256, 1, num_prefill=1,
                                                                       num_decode=1).ttft_ms  # fmt: skip


def test_alike_slices_of_a_pd_deployment_are_simulated_once():
    pre, dec = _pools()
    one = estimate_disaggregated_with_engine_model(pre, dec, 1024, 256, 16, num_prefill=1, num_decode=2)
    two = estimate_disaggregated_with_engine_model(pre, dec, 1024, 256, 32, num_prefill=2, num_decode=4)
    assert two.ttft_ms == pytest.approx(one.ttft_ms) and two.tpot_ms == pytest.approx(one.tpot_ms)
    assert two.throughput_tok_s == pytest.approx(2 * one.throughput_tok_s)
    # a client count the slices cannot share evenly is simulated whole: one client is one client's throughput
    lone = [estimate_disaggregated_with_engine_model(pre, dec, 1024, 256, 1, num_prefill=k, num_decode=k)
            for k in (1, 2)]  # fmt: skip
    assert lone[1].throughput_tok_s == pytest.approx(lone[0].throughput_tok_s, rel=1e-6)
    # Little's law counts the clients that have a request: 64 clients of 8 requests are 8
    few = estimate_disaggregated_with_engine_model(pre, dec, 1024, 256, 64, num_prefill=1, num_decode=1,
                                                   num_requests=8)  # fmt: skip
    eight = estimate_disaggregated_with_engine_model(pre, dec, 1024, 256, 8, num_prefill=1, num_decode=1,
                                                     num_requests=8)  # fmt: skip
    assert few.throughput_tok_s == pytest.approx(eight.throughput_tok_s)
    # the P/D cluster's throughput is Little's law on the engine's cycle, as the aggregated path's
    assert one.throughput_tok_s == pytest.approx(16 * 256 / ((one.e2e_ms / 1e3) - pre.first_token_overhead_s))
    # offline: every request at t = 0, throughput over the makespan
    off = estimate_disaggregated_with_engine_model(pre, dec, 1024, 256, None, num_prefill=1, num_decode=1,
                                                   num_requests=8)  # fmt: skip
    assert off.num_requests_simulated == 8 and off.throughput_tok_s == pytest.approx(off.sim_window_output_tok_s)
    for bad in (dict(num_prefill=0, num_decode=1), dict(num_prefill=1, num_decode=1, num_requests=0)):
        with pytest.raises(ConfigError):
            estimate_disaggregated_with_engine_model(pre, dec, 1024, 256, 4, **bad)  # type: ignore[arg-type]


def test_every_attention_dp_rank_schedules_its_own_batch_in_the_engine_model():
    """max_num_seqs is per scheduler, and each attention-DP rank has one (as the analytic admission counts it): 4
    ranks of 4 seats run 16 clients at once, exactly as 4 ranks of 16 seats do."""
    dsr1 = CAT.model("deepseek-ai/DeepSeek-R1")
    perf = PerfModel.build(dsr1, CAT.gpu("h200_sxm"), tp=1, attention_dp=8, ep=8, weight_precision="fp8",
                           kv_dtype="fp8", engine="trtllm", calibration=CAL)  # fmt: skip
    narrow = estimate_with_engine_model(perf, 1024, 128, 32, max_num_seqs=4, max_num_batched_tokens=8192)
    wide = estimate_with_engine_model(perf, 1024, 128, 32, max_num_seqs=64, max_num_batched_tokens=8192)
    assert narrow.ttft_ms == pytest.approx(wide.ttft_ms) and narrow.tpot_ms == pytest.approx(wide.tpot_ms)
    starved = estimate_with_engine_model(perf, 1024, 128, 64, max_num_seqs=4, max_num_batched_tokens=8192)
    assert starved.ttft_ms > 2 * narrow.ttft_ms  # 64 clients, 32 seats: half wait a whole request


def test_assumed_decode_workers_admit_every_client_under_the_familys_kv_admission():
    """A `0x` layout's decode workers are as many as admit every client at once: at the mean context for an engine
    that allocates KV as tokens come (vLLM), at the whole length for one that reserves a request's whole output
    before admitting it (TensorRT-LLM's GUARANTEED_NO_EVICT), as the engine model's schedulers do."""
    import math

    from gpuyield.core.perf.closed_loop import replica_seq_limit

    isl, osl, c = 1024, 8192, 4096
    for engine, length in (("vllm", isl + osl // 2), ("trtllm", isl + osl)):
        pre, dec = _pools(engine)
        res = estimate_disaggregated(pre, dec, isl, osl, c, num_prefill=None, num_decode=None)
        mem = dec.memory(0.9, max_model_len=isl + osl)
        seats = replica_seq_limit(dec, res.scheduler_limits[0])  # type: ignore[index]
        cap = min(c, seats, mem.max_concurrent_seqs(length, bounded_tokens=isl + osl))
        assert res.pd_workers is not None and res.pd_workers[1] == max(1, math.ceil(c / cap)), engine
