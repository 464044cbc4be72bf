"""Fixtures for gateway tests (helpers live in gateway_harness.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# the helpers module sits beside this file; make it importable under any --import-mode
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_harness import ServerThread, start_emulator  # noqa: E402


@pytest.fixture(scope="module")
def two_emulators() -> Iterator[list[ServerThread]]:
    emus = [start_emulator(fixed_step_ms=2.0), start_emulator(fixed_step_ms=2.0)]
    yield emus
    for e in emus:
        e.stop()
