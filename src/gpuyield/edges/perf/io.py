"""Calibration files on disk, and the model/GPU/calibration resolution shared by the perf commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gpuyield.core.perf.calibration import (
    Calibration,
    calibration_from_dict,
    calibration_to_dict,
    default_calibration,
)
from gpuyield.edges.io.yaml_file import read_yaml

__all__ = ["load_calibration", "resolve_gpu", "write_calibration"]


def load_calibration(path: str | Path | None) -> Calibration:
    """The calibration in ``path`` (YAML or JSON), or the shipped one when ``path`` is None."""
    if path is None:
        return default_calibration()
    p = Path(path)
    data = read_yaml(p, "--calibration")
    return calibration_from_dict(data or {}, str(p))


def write_calibration(cal: Calibration, path: str | Path, header: str = "") -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(calibration_to_dict(cal), sort_keys=False, width=120)
    p.write_text((header + "\n" if header else "") + text)


def resolve_gpu(catalog: Any, cal: Calibration, gpu: str) -> Any:
    """A catalogue accelerator, or a device the calibration itself describes (e.g. ``cpu`` from profile)."""
    return cal.accelerator(catalog, gpu)
