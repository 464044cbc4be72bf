"""Model arguments at the edge: a catalogue id/alias, or a local Hugging Face ``config.json``.

Every command that takes a model accepts either form; :func:`resolve_model` decides which it is.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gpuyield.core.catalog import Catalog, ModelSpec, load_hf_config, parse_catalog_yaml
from gpuyield.errors import CatalogError

__all__ = ["load_hf_config_file", "looks_like_path", "read_catalog_files", "resolve_model"]


def read_catalog_files(paths: Iterable[str | Path]) -> list[tuple[str, Any]]:
    """``--catalog`` / ``GPUYIELD_CATALOG`` files as ``(origin, document)`` pairs for ``Catalog.with_overrides``.

    A missing or unreadable file, or invalid YAML, raises :class:`CatalogError` naming the file.
    """
    docs: list[tuple[str, Any]] = []
    for src in paths:
        path = Path(src)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CatalogError(f"catalogue file '{path}' does not exist") from None
        except OSError as exc:
            raise CatalogError(f"catalogue file '{path}' cannot be read: {exc.strerror}") from None
        docs.append((str(path), parse_catalog_yaml(str(path), text)))
    return docs


def looks_like_path(text: str) -> bool:
    """True when ``text`` names something on disk rather than a catalogue id.

    Explicit paths (``*.json``, ``./``, ``/``, ``~``) always count; a bare name such as
    ``meta-llama/Llama-3.1-8B`` counts only if it is a file or a directory that holds a ``config.json``.
    """
    if text.endswith(".json") or text.startswith(("./", "../", "/", "~")):
        return True
    p = Path(text)
    return p.is_file() or (p.is_dir() and (p / "config.json").is_file())


def load_hf_config_file(path: str | Path) -> ModelSpec:
    """A :class:`ModelSpec` from a ``config.json`` file or a directory holding one.

    The model id is the directory name (a HF snapshot directory is usually named after the model), the
    source is the file path and ``as_of`` the file's modification date.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise CatalogError(f"model config '{path}' not found (expected a config.json or a directory containing one)")
    data = _read_json(p)
    if p.name == "config.json" and isinstance(data, dict) and "quantization_config" not in data:
        # NVIDIA ModelOpt exports describe their quantisation in hf_quant_config.json beside config.json
        quant = _read_hf_quant_config(p.parent / "hf_quant_config.json")
        if quant is not None:
            data["quantization_config"] = {"quant_method": "modelopt", **quant}
    as_of = _dt.datetime.fromtimestamp(p.stat().st_mtime, tz=_dt.UTC).date()
    model_id = p.parent.name if p.name == "config.json" and p.parent.name else p.stem
    try:
        return load_hf_config(data, model_id=model_id, source=str(p), as_of=as_of)
    except CatalogError as exc:
        raise CatalogError(f"{p}: {exc}") from None


def _read_json(path: Path) -> Any:
    """The parsed JSON file ``path``; a clear error naming it when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise CatalogError(f"{path}: cannot be read ({exc.strerror})") from None


def _read_hf_quant_config(path: Path) -> dict[str, Any] | None:
    """The ``quantization`` section of a ModelOpt ``hf_quant_config.json``, or None when there is no such file."""
    if not path.is_file():
        return None
    data = _read_json(path)
    quant = data.get("quantization") if isinstance(data, dict) else None
    if not isinstance(quant, dict):
        raise CatalogError(f"{path}: expected a JSON object with a 'quantization' object (NVIDIA ModelOpt's format)")
    return quant


def resolve_model(catalog: Catalog, text: str) -> ModelSpec:
    """A catalogue model by id/alias, or a local ``config.json`` (file or directory) when ``text`` is a path."""
    if looks_like_path(text):
        return load_hf_config_file(text)
    return catalog.model(text)
