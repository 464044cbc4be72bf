"""Loading the planner's user files: ``--prices FILE`` and ``--owned FILE`` (formats in docs/formats.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gpuyield.core.plan.economics import GpuPrice, OwnedHardware, parse_owned_hardware
from gpuyield.edges.io.yaml_file import read_yaml
from gpuyield.edges.telemetry.mapping import PricesFile, prices_document
from gpuyield.errors import ConfigError

__all__ = ["load_owned_file", "load_prices_file"]


def load_prices_file(path: Path, resolve_gpu: Any) -> dict[str, GpuPrice]:
    """``prices: [{gpu, usd_per_gpu_hour, source, as_of, notes?}]`` -> gpu id -> price. ``resolve_gpu`` maps aliases.

    One schema with ``gpuyield baseline --prices`` (:class:`gpuyield.edges.telemetry.mapping.PricesFile`), so the
    same file serves both commands.
    """
    doc = prices_document(read_yaml(path, "--prices"))
    try:
        parsed = PricesFile.model_validate(doc)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        raise ConfigError(f"--prices {path}: field {loc}: {e['msg']}") from None
    out: dict[str, GpuPrice] = {}
    for row in parsed.prices:
        gid = resolve_gpu(row.gpu)
        if gid in out:
            raise ConfigError(f"--prices {path}: GPU {row.gpu!r} listed twice; expected one price per GPU")
        out[gid] = GpuPrice(gid, row.usd_per_gpu_hour, f"user prices file {path.name}: {row.source}", row.as_of.isoformat())
    return out


def load_owned_file(path: Path, resolve_gpu: Any) -> dict[str, OwnedHardware]:
    """``owned: [OwnedHardware]`` -> gpu id -> entry (GPU ids resolved through the catalogue)."""
    doc = read_yaml(path, "--owned")
    entries = parse_owned_hardware(doc, origin=f"--owned {path}")
    out: dict[str, OwnedHardware] = {}
    for e in entries:
        gid = resolve_gpu(e.gpu)
        out[gid] = e.model_copy(update={"gpu": gid, "source": f"{path.name}: {e.source}"})
    return out
