"""A baseline's deployments as measurement rows: what the fleet did, in the schema ``validate`` and ``calibrate``
read. This closes the loop from measurement to model: ``gpuyield baseline --measurements-out fleet.csv``, then
``gpuyield calibrate --base shipped --measurements fleet.csv --no-fit`` stores them as measured operating
points, and ``estimate``/``validate`` correct queries near them.

One row per deployment measured over a window (two scrapes or more). Traffic in production is open-loop, not a
fixed number of clients: the row's ``concurrency`` is the mean number of requests in flight, by Little's law
(request rate × mean latency, ``ttft + (osl - 1) × tpot``), or the engines' mean running requests when the rate
is not measured. ISL/OSL are the window's means. The precision is the catalogue model's native dtype
(telemetry does not say how the weights were quantised). A deployment that cannot give a row is listed with the
reason, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpuyield.core.baseline.result import ModelResult

__all__ = ["PERF_ENGINES", "measurement_rows"]

PERF_ENGINES = ("vllm", "sglang", "trtllm")  # engine families the performance model knows


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def measurement_rows(models: Sequence[ModelResult], catalog: Any) -> tuple[list[dict[str, str]], list[str]]:
    """(rows in the measurement CSV schema, one per measured deployment; reasons for the deployments left out)."""
    rows: list[dict[str, str]] = []
    skipped: list[str] = []
    for m in models:
        name = m.deployment

        def skip(reason: str, name: str = name) -> None:
            skipped.append(f"deployment {name}: {reason}")

        if m.basis != "window":
            skip("one scrape only: no window to measure")
            continue
        if m.engine_kind not in PERF_ENGINES:
            skip(f"engine '{m.engine_kind}' is not an engine family of the performance model ({', '.join(PERF_ENGINES)})")
            continue
        if not m.gpus or not m.engines:
            skip("no GPU joined to its engines")
            continue
        gpu = catalog.find_gpu(m.device_name) if m.device_name else None
        if gpu is None:
            skip(f"GPU '{m.device_name}' is not in the catalogue")
            continue
        needed = {
            "model name": m.model,
            "mean input tokens": m.mean_input_tokens,
            "mean output tokens": m.mean_output_tokens,
            "mean TTFT": m.ttft_mean_s,
            "mean TPOT": m.tpot_mean_s,
        }
        missing = [k for k, v in needed.items() if not v]
        if missing:
            skip(f"not measured: {', '.join(missing)}")
            continue
        assert m.model and m.mean_input_tokens and m.mean_output_tokens and m.ttft_mean_s and m.tpot_mean_s
        isl = max(1, round(m.mean_input_tokens))
        osl = max(1, round(m.mean_output_tokens))
        latency_s = m.ttft_mean_s + (osl - 1) * m.tpot_mean_s
        if m.request_rate_per_s:
            in_flight = m.request_rate_per_s * latency_s
            how = "Little's law"
        elif m.mean_running:
            in_flight = m.mean_running * len(m.engines)
            how = "mean running requests"
        else:
            skip("neither the request rate nor the running requests are measured")
            continue
        spec = catalog.find_model(m.model)
        tp = max(1, len(m.gpus) // len(m.engines))
        rows.append(
            {
                "gpu": gpu.id,
                "num_gpus": str(len(m.gpus)),
                "model": spec.id if spec is not None else m.model,
                "engine": m.engine_kind,
                "precision": (spec.native_dtype if spec is not None else None) or "bf16",
                "layout": f"agg tp{tp} pp1 adp1",
                "tp": str(tp),
                "isl": str(isl),
                "osl": str(osl),
                "concurrency": str(max(1, round(in_flight))),
                "num_requests": "",
                "ttft_ms": _fmt(m.ttft_mean_s * 1e3),
                "tpot_ms": _fmt(m.tpot_mean_s * 1e3),
                "e2e_ms": "",
                "throughput_tok_s": _fmt(m.output_tokens / m.window_s) if m.output_tokens and m.window_s else "",
                "source": (
                    f"gpuyield baseline: deployment {name}, {m.window_s:.0f} s window, open-loop traffic, "
                    f"{in_flight:.2f} requests in flight ({how})"
                    + ("" if spec is not None else "; model not in the catalogue, precision assumed bf16")
                ),
            }
        )
    return rows, skipped
