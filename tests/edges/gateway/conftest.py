"""Fixtures for gateway tests (helpers live in gateway_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gateway_harness import ServerThread, start_emulator


@pytest.fixture(scope="module")
def two_emulators() -> Iterator[list[ServerThread]]:
    emus = [start_emulator(fixed_step_ms=2.0), start_emulator(fixed_step_ms=2.0)]
    yield emus
    for e in emus:
        e.stop()
