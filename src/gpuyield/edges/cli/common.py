"""Conventions shared by every CLI command.

- Human output goes through Rich (``console``); machine output through :func:`emit_json`.
- ``--json`` alone prints JSON to stdout; ``--json FILE`` writes it to FILE (see :func:`normalise_json_flag`).
- Exit codes: 0 ok, 2 bad input (:class:`~gpuyield.errors.ConfigError` and friends, one line naming the
  offending field/file/value and what was expected), 1 internal error.
- Long work shows a progress bar: use :func:`progress`.

Command modules import heavy dependencies (duckdb, starlette, torch, ray) inside the command function, so
``gpuyield --help`` stays fast.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gpuyield.errors import (
    ConfigError,
    DoesNotFitError,
    GpuyieldError,
    InfeasiblePlanError,
)

__all__ = [
    "CATALOG_ENV",
    "CATALOG_OPTION_HELP",
    "JSON_OPTION_HELP",
    "SPEC_ACCEPTANCE_HELP",
    "SPEC_METHOD_HELP",
    "SPEC_TOKENS_HELP",
    "console",
    "err_console",
    "emit_json",
    "fail",
    "catalog_paths",
    "load_catalog",
    "normalise_json_flag",
    "parse_speculative",
    "progress",
    "run_command",
    "to_jsonable",
]

console = Console()
err_console = Console(stderr=True)

CATALOG_ENV = "GPUYIELD_CATALOG"
CATALOG_OPTION_HELP = (
    "Extra catalogue YAML layered over the built-in GPUs/models/prices (repeatable; also "
    "GPUYIELD_CATALOG=FILE[:FILE...]). Entries with an existing id or alias override it, new ids are added."
)
JSON_OPTION_HELP = "Machine output: '--json' prints JSON to stdout, '--json FILE' writes it to FILE."
# the --spec-* flags of estimate, plan and engine-emulator (gpuyield.core.perf.speculative)
SPEC_METHOD_HELP = ("Speculative decoding: mtp (the model's MTP layers), eagle or eagle3 (a one-layer drafter head) "
                    "or ngram (no drafter).")  # fmt: skip
SPEC_TOKENS_HELP = "Draft tokens per step (default 1)."
SPEC_ACCEPTANCE_HELP = "Per-position acceptance rate of a draft token, 0..1 (default 0.7)."
_JSON_FILE_SUFFIXES = (".json", ".jsonl")

T = TypeVar("T")


def parse_speculative(method: str | None, tokens: int | None, acceptance: float | None) -> Any:
    """The --spec-* flags as a :class:`gpuyield.core.perf.SpeculativeDecoding` (defaults: its own), or None
    when --spec-method is not given."""
    from gpuyield.core.perf import SpeculativeDecoding
    from gpuyield.errors import ConfigError

    if method is None:
        if tokens is not None or acceptance is not None:
            raise ConfigError("--spec-tokens/--spec-acceptance need --spec-method (mtp, eagle, eagle3 or ngram)")
        return None
    given: dict[str, Any] = {"num_draft_tokens": tokens, "acceptance_rate": acceptance}
    return SpeculativeDecoding(method=method.strip().lower(), **{k: v for k, v in given.items() if v is not None})


def normalise_json_flag(argv: list[str]) -> list[str]:
    """Let ``--json`` be used bare or with a file name.

    ``--json`` is rewritten to ``--json=-`` (stdout) unless the next token is a file name: it ends with
    ``.json``/``.jsonl``, or contains a path separator, or is ``-``.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--json":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and (nxt == "-" or nxt.endswith(_JSON_FILE_SUFFIXES) or "/" in nxt):
                out.append(f"--json={nxt}")
                i += 2
                continue
            out.append("--json=-")
        else:
            out.append(tok)
        i += 1
    return out


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, pydantic models, numpy scalars, Paths and NaN to plain JSON values."""
    import dataclasses

    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if hasattr(obj, "model_dump"):
        return to_jsonable(obj.model_dump(mode="json"))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return to_jsonable(obj.item())
    if hasattr(obj, "tolist"):
        return to_jsonable(obj.tolist())
    return str(obj)


def emit_json(data: Any, target: str | None) -> None:
    """Write ``data`` as JSON to stdout (target ``-``) or to the file ``target``."""
    text = json.dumps(to_jsonable(data), indent=2, sort_keys=False)
    if target is None or target == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    else:
        path = Path(target)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        err_console.print(f"[dim]wrote {path}[/dim]")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    from rich.markup import escape  # a message may hold brackets ("pip install 'gpuyield[fit]'")

    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def run_command(fn: Callable[[], T]) -> T:
    """Run a command body, mapping gpuyield errors to exit codes (2 bad input, 1 internal)."""
    import os

    try:
        return fn()
    except (ConfigError, InfeasiblePlanError, DoesNotFitError) as exc:
        raise fail(str(exc), 2) from None
    except GpuyieldError as exc:
        raise fail(str(exc), 1) from None
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
    except Exception as exc:
        if os.environ.get("GPUYIELD_DEBUG"):
            raise
        raise fail(f"internal error: {type(exc).__name__}: {exc} (set GPUYIELD_DEBUG=1 for a traceback)", 1) from None


@contextmanager
def progress(description: str, total: int | None, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar on stderr; yields ``advance(n)``. Disabled when stderr is not a terminal."""
    if not enabled or not err_console.is_terminal:
        yield lambda n=1: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as prog:
        task = prog.add_task(description, total=total)
        yield lambda n=1: prog.advance(task, n)


def catalog_paths(paths: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Override files in the order they apply: ``GPUYIELD_CATALOG`` (os.pathsep-separated), then ``paths``."""
    import os

    env = os.environ.get(CATALOG_ENV, "")
    out = [p for p in env.split(os.pathsep) if p.strip()]
    out.extend(p for p in (paths or ()) if p)
    return out


def load_catalog(paths: list[str] | tuple[str, ...] | None = None) -> Any:
    """The built-in catalogue with ``GPUYIELD_CATALOG`` and ``--catalog`` files layered on top.

    Raises :class:`~gpuyield.errors.CatalogError` (exit 2 via :func:`run_command`) naming the file and field
    of a malformed override.
    """
    from gpuyield.core.catalog import default_catalog
    from gpuyield.edges.io.models import read_catalog_files

    files = catalog_paths(paths)
    catalog = default_catalog()
    return catalog.with_overrides(read_catalog_files(files)) if files else catalog
