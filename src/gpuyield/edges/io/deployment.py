"""Read a deployment file (YAML or JSON) into a validated :class:`~gpuyield.core.sim.deployment.Deployment`."""

from __future__ import annotations

from pathlib import Path

import yaml

from gpuyield.core.sim.deployment import Deployment, parse_deployment
from gpuyield.errors import ConfigError

__all__ = ["load_deployment"]


def load_deployment(path: str | Path) -> Deployment:
    """Parse and validate ``path``; errors name the file and the offending field."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--deployment {p}: no such file")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_deployment(doc, origin=str(p))
