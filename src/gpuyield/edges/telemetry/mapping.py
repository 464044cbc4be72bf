"""User files for ``gpuyield baseline``: the mapping file (``--map``) and the prices file (``--prices``).

Mapping file (YAML)::

    deployments:
      - name: llama-8b                     # required, unique
        model: meta-llama/Llama-3.1-8B-Instruct   # optional: overrides the engine's model_name
        engines:                           # engine selectors: an engine matches when every label given is equal
          - {model_name: "tinyLlama/TinyLlama-1.1B-Chat-v1.0"}
          - {source: "captures/vllm-*.prom"}   # 'source' is a glob on the file or URL the series came from
        gpus:                              # GPU selectors (labels after normalisation: host, gpu, uuid, pod, ...)
          - {host: gpu-node-1, gpu: "0"}

Prices file (YAML; the same file ``gpuyield plan --prices`` reads; ``gpu_prices:`` is accepted as the key too)::

    prices:
      - gpu: "NVIDIA H100 80GB HBM3"       # DCGM modelName, or a catalogue id/alias (h100_sxm)
        usd_per_gpu_hour: 2.99
        source: "https://lambda.ai/pricing"
        as_of: 2026-01-15

Both are validated when loaded; a bad file raises :class:`~gpuyield.errors.ConfigError` naming the file,
the field and what was expected.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpuyield.edges.io.yaml_file import read_yaml
from gpuyield.errors import ConfigError

__all__ = [
    "DeploymentMap",
    "MapFile",
    "PriceRow",
    "PricesFile",
    "prices_document",
    "load_map_file",
    "load_prices_file",
    "selector_matches",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class DeploymentMap(BaseModel):
    model_config = _STRICT

    name: str = Field(min_length=1)
    model: str | None = None
    engines: list[dict[str, str | int]] = Field(default_factory=list)
    gpus: list[dict[str, str | int]] = Field(min_length=1)


class MapFile(BaseModel):
    model_config = _STRICT

    deployments: list[DeploymentMap] = Field(min_length=1)


class PriceRow(BaseModel):
    model_config = _STRICT

    gpu: str = Field(min_length=1)
    usd_per_gpu_hour: float = Field(gt=0, lt=1000)
    source: str = Field(min_length=1)
    as_of: _dt.date
    notes: str = ""


class PricesFile(BaseModel):
    model_config = _STRICT

    prices: list[PriceRow] = Field(min_length=1)


def _first_error(path: str | Path, what: str, exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return ConfigError(f"{what} {path}: field '{loc}': {err['msg']}")


def load_map_file(path: str | Path) -> MapFile:
    doc = read_yaml(path, "mapping file")
    try:
        parsed = MapFile.model_validate(doc)
    except ValidationError as exc:
        raise _first_error(path, "mapping file", exc) from None
    names = [d.name for d in parsed.deployments]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ConfigError(f"mapping file {path}: field 'deployments.name': '{dup}' appears twice; names must be unique")
    return parsed


def prices_document(doc: Any) -> Any:
    """The prices file's parsed YAML with ``gpu_prices:`` accepted as the top key (``plan`` and ``baseline`` share it)."""
    if isinstance(doc, dict) and "gpu_prices" in doc and "prices" not in doc:
        doc = {k: v for k, v in doc.items() if k != "gpu_prices"} | {"prices": doc["gpu_prices"]}
    return doc


def load_prices_file(path: str | Path) -> PricesFile:
    doc = prices_document(read_yaml(path, "prices file"))
    try:
        return PricesFile.model_validate(doc)
    except ValidationError as exc:
        raise _first_error(path, "prices file", exc) from None


def selector_matches(selector: dict[str, str | int], labels: dict[str, str], source: str) -> bool:
    """True when every label of ``selector`` equals the series' (``source`` is matched as a glob)."""
    for key, want in selector.items():
        if key == "source":
            if not (fnmatch.fnmatch(source, str(want)) or fnmatch.fnmatch(Path(source).name, str(want))):
                return False
        elif labels.get(key) != str(want):
            return False
    return True
