"""GPU-hour prices for the baseline: the user's ``--prices`` file first, then the catalogue.

A DCGM ``modelName`` ("NVIDIA H100 80GB HBM3") is matched to a price row by exact (case-insensitive) name,
or through the catalogue's aliases when both resolve to the same accelerator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpuyield.core.baseline import Price
from gpuyield.edges.telemetry.mapping import PricesFile

__all__ = ["make_price_fn"]


def make_price_fn(
    prices: PricesFile | None, *, catalog: Any | None = None
) -> tuple[Callable[[str | None], Price | None], list[str]]:
    """(device name → Price or None, notes about where prices came from). ``catalog`` (a
    :class:`gpuyield.core.catalog.Catalog`, or None for prices from the file only) resolves names and gives
    default prices."""
    notes: list[str] = []
    cat = catalog
    cache: dict[str | None, Price | None] = {}

    def gpu_id(name: str) -> str | None:
        if cat is None:
            return None
        found = cat.find_gpu(name)
        return None if found is None else str(found.id)

    def resolve(device: str | None) -> Price | None:
        if device in cache:
            return cache[device]
        price: Price | None = None
        if device is not None and prices is not None:
            dev_id = gpu_id(device)
            for row in prices.prices:
                if row.gpu.strip().lower() == device.strip().lower() or (dev_id and gpu_id(row.gpu) == dev_id):
                    price = Price(row.usd_per_gpu_hour, f"--prices: {row.source}", row.as_of.isoformat())
                    break
        if price is None and device is not None and cat is not None:
            try:
                entry = cat.gpu_price(device)
            except Exception:  # unknown GPU or no price row: reported as 'no price' by the computation
                entry = None
            if entry is not None:
                price = Price(
                    float(entry.usd_per_gpu_hour),
                    f"catalogue: {entry.provider} {entry.tier} ({entry.source})",
                    entry.as_of.isoformat(),
                )
        cache[device] = price
        return price

    return resolve, notes
