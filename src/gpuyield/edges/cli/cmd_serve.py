"""``gpuyield serve``: the OpenAI-compatible gateway running the fleet's routing and admission policies."""

from __future__ import annotations

import typer

from gpuyield.edges.cli.common import console, run_command

__all__ = ["register"]

_HELP = """Run the OpenAI-compatible gateway in front of engine replicas (vLLM, SGLang, llama.cpp, any OpenAI API).

Routes with the simulator's policies, admits with token budgets and token-fair queueing per tenant, retries
failed replicas, exposes /metrics and writes a request log that `simulate` replays. SIGHUP reloads the config.

Examples:

  gpuyield serve --config examples/gateway.yaml

  gpuyield serve --config gw.yaml --port 9000 --log-level info

  gpuyield serve --check --config gw.yaml            # validate the config and exit

  gpuyield serve --hash-key sk-team-a-secret          # print the sha256 to put in tenants[].api_key_sha256
"""


def register(app: typer.Typer) -> None:
    @app.command("serve", help=_HELP)
    def serve(
        config: str | None = typer.Option(None, "--config", "-c", help="Gateway YAML (see docs/formats.md)."),
        host: str | None = typer.Option(None, "--host", help="Override listen.host."),
        port: int | None = typer.Option(None, "--port", help="Override listen.port."),
        check: bool = typer.Option(False, "--check", help="Validate the config and exit."),
        hash_key: str | None = typer.Option(None, "--hash-key", help="Print the sha256 of an API key and exit."),
        log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
    ) -> None:
        def body() -> None:
            from gpuyield.edges.gateway.config import hash_key as _hash
            from gpuyield.edges.gateway.config import load_config
            from gpuyield.errors import ConfigError

            if hash_key is not None:
                typer.echo(_hash(hash_key))
                return
            if config is None:
                raise ConfigError("--config: a gateway YAML is required (see examples/gateway.yaml)")
            cfg = load_config(config)
            if check:
                console.print(f"[green]ok[/green] {config}: {len(cfg.backends)} backends, {len(cfg.tenants)} tenants, "
                              f"policy {cfg.router.policy}", highlight=False)
                return
            from gpuyield.edges.gateway.server import serve as _serve

            console.print(f"[bold]gpuyield serve[/bold] on http://{host or cfg.listen.host}:{port or cfg.listen.port} "
                          f"({len(cfg.backends)} backends, policy {cfg.router.policy})", highlight=False)
            _serve(config, host, port, log_level)

        run_command(body)
