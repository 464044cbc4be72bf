"""The ``gpuyield`` command line: one Typer app, one module per command group.

Each ``cmd_*.py`` module defines ``register(app: typer.Typer) -> None``. Modules are listed in
``COMMAND_MODULES``; a module that is missing (a command still being built) is skipped.
"""

from __future__ import annotations

import importlib
import sys

import typer

from gpuyield import __version__
from gpuyield.edges.cli.common import normalise_json_flag

__all__ = ["COMMAND_MODULES", "app", "main"]

app = typer.Typer(
    name="gpuyield",
    help="gpuyield: measure (baseline), model (simulate, plan) and run (serve) self-hosted LLM inference fleets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Order here is the order in --help.
COMMAND_MODULES = [
    "catalog",
    "estimate",
    "validate",
    "calibrate",
    "profile",
    "workload",
    "simulate",
    "plan",
    "baseline",
    "serve",
    "emulator",
]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"gpuyield {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """gpuyield: the optimisation layer for self-hosted LLM inference fleets."""


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"gpuyield.edges.cli.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"gpuyield.edges.cli.cmd_{name}":
                continue
            raise
        module.register(app)


_register_all()


def main(argv: list[str] | None = None) -> None:
    args = normalise_json_flag(list(sys.argv[1:] if argv is None else argv))
    app(args=args, prog_name="gpuyield")


if __name__ == "__main__":
    main()
