"""Read a deployment file (YAML or JSON) into a validated :class:`~gpuyield.core.sim.deployment.Deployment`."""

from __future__ import annotations

from pathlib import Path

from gpuyield.core.sim.deployment import Deployment, parse_deployment
from gpuyield.edges.io.yaml_file import read_yaml

__all__ = ["load_deployment"]


def load_deployment(path: str | Path) -> Deployment:
    """Parse and validate ``path``; errors name the file and the offending field."""
    doc = read_yaml(path, "--deployment")
    return parse_deployment(doc, origin=str(path))
