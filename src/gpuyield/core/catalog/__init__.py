"""Catalogues of accelerators, model architectures and prices, with provenance.

>>> from gpuyield.core.catalog import default_catalog
>>> cat = default_catalog()
>>> cat.gpu("NVIDIA H100 80GB HBM3").bf16_dense_tflops
989.0
>>> cat.model("meta-llama/Llama-3.1-8B-Instruct").kv_bytes_per_token("bf16")
131072
"""

from gpuyield.core.catalog.accelerator import DTYPE_FAMILIES, Accelerator
from gpuyield.core.catalog.catalog import (
    CATALOG_SECTIONS,
    DATA_FILES,
    Catalog,
    CatalogDefaults,
    checkpoint_precision,
    default_catalog,
    normalise_gpu_name,
    normalise_model_name,
    parse_catalog_document,
    parse_catalog_yaml,
    resolve_checkpoint,
)
from gpuyield.core.catalog.hf_config import load_hf_config
from gpuyield.core.catalog.model import (
    BYTES_PER_KV_ELEMENT,
    WEIGHT_PRECISIONS,
    AttentionKind,
    GemmShape,
    LayerKind,
    ModelSpec,
    bytes_per_weight,
    kv_element_bytes,
)
from gpuyield.core.catalog.prices import (
    ApiPrice,
    ElectricityPrice,
    GpuPrice,
    OwnedHardware,
    PriceEntry,
    ProviderKind,
    PueEntry,
    Tier,
)

__all__ = [
    "BYTES_PER_KV_ELEMENT",
    "CATALOG_SECTIONS",
    "DATA_FILES",
    "DTYPE_FAMILIES",
    "WEIGHT_PRECISIONS",
    "Accelerator",
    "ApiPrice",
    "AttentionKind",
    "Catalog",
    "CatalogDefaults",
    "checkpoint_precision",
    "resolve_checkpoint",
    "ElectricityPrice",
    "GemmShape",
    "GpuPrice",
    "LayerKind",
    "ModelSpec",
    "OwnedHardware",
    "PriceEntry",
    "ProviderKind",
    "PueEntry",
    "Tier",
    "bytes_per_weight",
    "default_catalog",
    "kv_element_bytes",
    "load_hf_config",
    "normalise_gpu_name",
    "normalise_model_name",
    "parse_catalog_document",
    "parse_catalog_yaml",
]
