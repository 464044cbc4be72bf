"""Fixtures shared by the CLI tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture
def calibration_file(tmp_path: Path) -> Callable[..., Path]:
    """``make(decode_factor=1.0, devices=None)``: the shipped calibration (without its measured points) with every
    engine's ``decode_scale`` multiplied by ``decode_factor`` and extra ``devices``, written to a YAML file."""
    from gpuyield.core.perf.calibration import calibration_to_dict, default_calibration

    def make(decode_factor: float = 1.0, devices: dict[str, Any] | None = None) -> Path:
        d = calibration_to_dict(dataclasses.replace(default_calibration(), corrections=None))
        for e in d["engines"].values():
            e["decode_scale"] = min(3.0, e["decode_scale"] * decode_factor)
        if devices:
            d["devices"] = devices
        path = tmp_path / f"cal-{decode_factor:g}-{len(devices or {})}.yaml"
        path.write_text(yaml.safe_dump(d, sort_keys=False))
        return path

    return make
