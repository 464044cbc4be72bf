"""Accelerators: datasheet numbers with provenance, and the dtype → peak-rate rule."""

from __future__ import annotations

import datetime as _dt

from pydantic import BaseModel, ConfigDict, Field

from gpuyield.errors import CatalogError

__all__ = ["DTYPE_FAMILIES", "Accelerator"]

# dtype spelling → the rate family it runs at
DTYPE_FAMILIES: dict[str, str] = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "bf16",
    "float16": "bf16",
    "half": "bf16",
    "fp8": "fp8",
    "fp8_e4m3": "fp8",
    "fp8_e5m2": "fp8",
    "float8": "fp8",
    "fp4": "fp4",
    "nvfp4": "fp4",
    "mxfp4": "fp4",
    "int8": "int8",
    "w8a8": "int8",
}


class Accelerator(BaseModel):
    """One accelerator (GPU or other) as sold, with dense (non-sparse) peak rates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="canonical id, e.g. 'h100_sxm'")
    aliases: tuple[str, ...] = ()
    name: str = Field(min_length=1)
    vendor: str = Field(min_length=1)
    form_factor: str = Field(min_length=1)
    memory_gb: float = Field(gt=0, description="nominal memory capacity as the vendor quotes it")
    memory_bytes: int | None = Field(
        None, gt=0, description="capacity in bytes as the device reports it (nvidia-smi / AIConfigurator)"
    )
    memory_type: str | None = None
    memory_bandwidth_tb_s: float = Field(gt=0)
    bf16_dense_tflops: float | None = Field(None, gt=0, description="None when not published")
    fp8_dense_tflops: float | None = Field(None, gt=0, description="None if no FP8 tensor cores")
    fp4_dense_tflops: float | None = Field(None, gt=0, description="None if no FP4 tensor cores")
    int8_dense_tops: float | None = Field(None, gt=0)
    interconnect_kind: str = Field(min_length=1, description="intra-node scale-up link, e.g. 'NVLink4'")
    interconnect_gb_s: float = Field(gt=0, description="intra-node GB/s per GPU, one direction")
    inter_node_gb_s: float | None = Field(None, gt=0, description="scale-out GB/s per GPU, one direction")
    gpus_per_node: int = Field(8, gt=0)
    tdp_w: float | None = Field(None, gt=0, description="None when unpublished")
    source: str = Field(min_length=1)
    as_of: _dt.date
    notes: str = ""

    @property
    def memory_capacity_bytes(self) -> int:
        """``memory_bytes`` when known, else ``memory_gb`` x 1e9 (the conservative reading)."""
        return self.memory_bytes if self.memory_bytes is not None else int(self.memory_gb * 1e9)

    @property
    def memory_bandwidth_bytes_per_s(self) -> float:
        return self.memory_bandwidth_tb_s * 1e12

    def dense_tflops(self, dtype: str) -> float:
        """Peak dense tensor-core rate for GEMMs in ``dtype`` (TFLOP/s, TOP/s for int8).

        Fallbacks, when the hardware has no tensor cores for ``dtype``: fp4 runs at the fp8 rate, fp8 at
        the bf16 rate (e.g. fp8 weights on A100 are dequantised and multiplied in bf16), int8 at the bf16
        rate. Raises :class:`CatalogError` for an unknown dtype or when no rate is published at all.
        """
        family = DTYPE_FAMILIES.get(dtype.strip().lower())
        if family is None:
            raise CatalogError(
                f"unknown dtype '{dtype}' for {self.id}; expected one of {', '.join(DTYPE_FAMILIES)}"
            )
        chain = {
            "bf16": (self.bf16_dense_tflops,),
            "fp8": (self.fp8_dense_tflops, self.bf16_dense_tflops),
            "fp4": (self.fp4_dense_tflops, self.fp8_dense_tflops, self.bf16_dense_tflops),
            "int8": (self.int8_dense_tops, self.bf16_dense_tflops),
        }[family]
        for value in chain:
            if value is not None:
                return value
        raise CatalogError(
            f"{self.id}: no published dense tensor rate for {dtype} (bf16_dense_tflops is unset)"
        )

    def has_native(self, dtype: str) -> bool:
        """True when the hardware has tensor cores for ``dtype`` (no fallback)."""
        family = DTYPE_FAMILIES.get(dtype.strip().lower())
        return {
            "bf16": self.bf16_dense_tflops,
            "fp8": self.fp8_dense_tflops,
            "fp4": self.fp4_dense_tflops,
            "int8": self.int8_dense_tops,
        }.get(family or "") is not None
