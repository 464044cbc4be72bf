"""``gpuyield engine-emulator``: an OpenAI-compatible engine replica timed by gpuyield's engine model."""

from __future__ import annotations

import typer

from gpuyield.edges.cli.common import (
    SPEC_ACCEPTANCE_HELP,
    SPEC_METHOD_HELP,
    SPEC_TOKENS_HELP,
    console,
    parse_speculative,
    run_command,
)

__all__ = ["register"]

_HELP = """Run an emulated engine replica: an OpenAI-compatible server whose timing follows the engine model.

Continuous batching, prefix cache and KV limits in real time; vLLM-named /metrics; vLLM's sleep/wake API
(/sleep?level=N, /wake_up, /is_sleeping). Output text is deterministic fake words.

Examples:

  gpuyield engine-emulator --model llama-3.1-8b --gpu h100-sxm --port 8001

  gpuyield engine-emulator --model tiny --fixed-step-ms 5 --port 8002        # engine loop, fixed step time

  gpuyield engine-emulator --model tiny --fixed-delay-ms 2 --port 8003       # fixed delay (router benchmarks)

  gpuyield engine-emulator --models llama-3.1-8b,qwen2.5-7b --gpu h100-sxm --fixed-step-ms 5 --port 8004
      # several models on one server; /sleep?level=N&model=M, /wake_up?model=M, /models/load, /models/unload;
      # wake delays from the cost model for --gpu (or --wake-ms 200 --load-ms 5000)
"""


def register(app: typer.Typer) -> None:
    @app.command("engine-emulator", help=_HELP)
    def engine_emulator(
        model: list[str] = typer.Option([], "--model", help="Catalogue model id (or any name with --fixed-*); "
                                        "repeat to host several models on one server (sleep/wake per model)."),
        models: str | None = typer.Option(None, "--models", help="Several models, comma-separated (same as "
                                          "repeating --model)."),
        wake_ms: float | None = typer.Option(None, "--wake-ms", help="Several models: level-1 wake time "
                                             "(default: cost model for --gpu)."),
        wake_l2_ms: float | None = typer.Option(None, "--wake-l2-ms", help="Several models: level-2 wake time "
                                                "(default: --wake-ms, else cost model)."),
        load_ms: float | None = typer.Option(None, "--load-ms", help="Several models: cold-load time "
                                             "(default: --wake-l2-ms, else cost model)."),
        sleep_ms: float | None = typer.Option(None, "--sleep-ms", help="Several models: level-1 offload time "
                                              "(default: 0 with --wake-ms, else cost model)."),
        gpu: str | None = typer.Option(None, "--gpu", help="Catalogue GPU id, e.g. h100-sxm."),
        tp: int = typer.Option(1, "--tp", help="Tensor-parallel degree."),
        engine: str = typer.Option("vllm", "--engine", help="Engine family whose scheduler is modelled: vllm, sglang, trtllm."),
        port: int = typer.Option(8001, "--port", help="TCP port."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
        served_model_name: str | None = typer.Option(None, "--served-model-name", help="Model name clients send (default: --model)."),
        max_num_seqs: int | None = typer.Option(None, "--max-num-seqs", help="Max concurrent sequences in a batch "
                                                "(default: the engine family's, vLLM 256)."),
        max_num_batched_tokens: int | None = typer.Option(None, "--max-num-batched-tokens", help="Token budget per "
                                                          "step (default: the engine family's, 8192)."),
        block_size: int = typer.Option(16, "--block-size", help="Tokens per KV block."),
        num_kv_blocks: int | None = typer.Option(None, "--num-kv-blocks", help="KV capacity in blocks (default: memory model, else 4096)."),
        max_model_len: int = typer.Option(32768, "--max-model-len", help="Max prompt + output tokens."),
        no_prefix_caching: bool = typer.Option(False, "--no-prefix-caching", help="Disable the prefix cache."),
        gpu_memory_utilization: float = typer.Option(0.9, "--gpu-memory-utilization", help="Fraction of GPU memory for weights + KV."),
        mean_output_tokens: int = typer.Option(128, "--mean-output-tokens", help="Mean output length when ignore_eos is false."),
        tokenizer: str | None = typer.Option(None, "--tokenizer", help="Local tokenizer.json (or its folder); default bytes/4."),
        fixed_step_ms: float | None = typer.Option(None, "--fixed-step-ms", help="Engine loop with a fixed step time (not the fleet model)."),
        fixed_delay_ms: float | None = typer.Option(None, "--fixed-delay-ms", help="No engine: fixed time to first token (router benchmarks)."),
        fixed_itl_ms: float = typer.Option(0.0, "--fixed-itl-ms", help="With --fixed-delay-ms: time between tokens."),
        spec_method: str | None = typer.Option(None, "--spec-method", help="Fleet-model timing only. " + SPEC_METHOD_HELP),
        spec_tokens: int | None = typer.Option(None, "--spec-tokens", help=SPEC_TOKENS_HELP),
        spec_acceptance: float | None = typer.Option(None, "--spec-acceptance", help=SPEC_ACCEPTANCE_HELP),
        precision: str | None = typer.Option(None, "--precision", help="Weight precision (bf16, fp8, fp4, int4; "
                                             "default: the checkpoint's own, e.g. fp8 for deepseek-ai/DeepSeek-R1)."),
        kv_dtype: str | None = typer.Option(None, "--kv-dtype", help="KV-cache dtype (default: bf16, fp8 where "
                                            "the model's engines accept no other)."),
        calibration: str | None = typer.Option(None, "--calibration", help="Calibration YAML from `gpuyield "
                                               "calibrate` (default: the shipped one)."),
        measured_at: str | None = typer.Option(None, "--measured-at", help="ISL,OSL: time steps with the "
                                               "calibration's measured step scales at that operating point, as "
                                               "`simulate` does for a workload of those mean lengths (default: the "
                                               "step model alone)."),
        log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
    ) -> None:
        def body() -> None:
            from gpuyield.edges.emulator.server import EmulatorSpec, build_emulator, run_uvicorn
            from gpuyield.errors import ConfigError

            names = list(model) + [m.strip() for m in (models or "").split(",") if m.strip()]
            if not names:
                raise ConfigError("--model is required (repeat it, or use --models A,B, for several models)")
            at = None
            if measured_at is not None:
                parts = measured_at.replace("/", ",").split(",")
                try:
                    at = (int(parts[0]), int(parts[1]))
                except (ValueError, IndexError):
                    raise ConfigError(f"--measured-at '{measured_at}': expected ISL,OSL, e.g. 1024,256") from None
                if len(parts) != 2:  # positive counts: checked with the rest of the spec (EmulatorSpec)
                    raise ConfigError(f"--measured-at '{measured_at}': expected ISL,OSL, e.g. 1024,256")
            timed = fixed_step_ms is None and fixed_delay_ms is None
            if not timed and (precision or kv_dtype or calibration or at):
                raise ConfigError("--precision, --kv-dtype, --calibration and --measured-at time steps with the fleet "
                                  "model: not with --fixed-step-ms/--fixed-delay-ms")
            cal = None
            if calibration is not None:
                from gpuyield.edges.perf.io import load_calibration

                cal = load_calibration(calibration)
            spec = EmulatorSpec(
                model=names[0], gpu=gpu, tp=tp, engine=engine, served_model_name=served_model_name,
                max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                block_size_tokens=block_size, num_kv_blocks=num_kv_blocks, max_model_len=max_model_len,
                enable_prefix_caching=not no_prefix_caching, gpu_memory_utilization=gpu_memory_utilization,
                mean_output_tokens=mean_output_tokens, tokenizer=tokenizer, fixed_step_ms=fixed_step_ms,
                fixed_delay_ms=fixed_delay_ms, fixed_itl_ms=fixed_itl_ms,
                speculative=parse_speculative(spec_method, spec_tokens, spec_acceptance), weight_precision=precision,
                kv_dtype=kv_dtype, calibration=cal, measured_at=at)
            if len(names) > 1:
                from gpuyield.edges.emulator.multimodel import build_multi_emulator

                multi = build_multi_emulator(spec, names, wake_ms, wake_l2_ms, load_ms, sleep_ms)
                console.print(f"[bold]engine-emulator[/bold] {', '.join(names)} on http://{host}:{port} "
                              f"({multi.description})", highlight=False)
                run_uvicorn(multi, host, port, log_level)
                return
            emu = build_emulator(spec)
            console.print(f"[bold]engine-emulator[/bold] {emu.settings.served_model_name} on http://{host}:{port} "
                          f"({emu.settings.description})", highlight=False)
            run_uvicorn(emu, host, port, log_level)

        run_command(body)
