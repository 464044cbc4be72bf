"""The catalogue: accelerators, models and prices, looked up by id or alias.

``default_catalog()`` is built from the package data (``core/catalog/data/*.yaml``, read through
``importlib.resources``). ``Catalog.with_overrides(...)`` layers user documents on top: an entry whose id or
alias matches an existing one is merged into it (fields given replace fields, aliases are added), a new id is
added. Every override entry must carry its own ``source`` and ``as_of``.

Lookup normalisation: case, spaces, ``_`` and ``-`` are ignored, a leading ``NVIDIA``/``AMD``/``Intel``
is dropped for accelerators; for models the ``org/`` prefix is optional and ``-Instruct``, ``-Chat``,
quantisation suffixes (``-FP8``, ``-NVFP4``, ``-FP4``, ``-MXFP4``, ``-FP8-Dynamic``, ``-FP8-Static-PerTensor``, ``-W4A16``, ``-W8A8``,
``-AWQ``, ``-GPTQ``, ``-INT4``, ``-BF16``) and ``-hf`` are stripped when the full name is not known.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from statistics import median_low
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gpuyield.core.catalog.accelerator import Accelerator
from gpuyield.core.catalog.model import ModelSpec
from gpuyield.core.catalog.prices import ApiPrice, ElectricityPrice, GpuPrice, OwnedHardware, PueEntry
from gpuyield.errors import CatalogError

__all__ = [
    "CATALOG_SECTIONS",
    "DATA_FILES",
    "Catalog",
    "CatalogDefaults",
    "checkpoint_precision",
    "default_catalog",
    "resolve_checkpoint",
    "normalise_gpu_name",
    "normalise_model_name",
    "parse_catalog_document",
    "parse_catalog_yaml",
]

DATA_FILES = ("gpus.yaml", "models.yaml", "prices.yaml")
CATALOG_SECTIONS = (
    "gpus",
    "models",
    "gpu_prices",
    "api_prices",
    "electricity",
    "pue",
    "owned_hardware",
    "defaults",
)
# quantisation/release suffixes of checkpoint names; the precision itself is always a separate argument
_MODEL_SUFFIXES = (
    "instruct", "chat", "fp8staticpertensor", "fp8pertensor", "fp8static", "fp8dynamic", "fp8", "nvfp4", "mxfp4", "fp4", "w4a16", "w8a8", "awq", "gptq", "int4", "bf16", "hf"
)  # longer suffixes before the ones they end with
_GPU_PREFIXES = ("nvidia", "amd", "intel", "google")

M = TypeVar("M", bound=BaseModel)
_KeyFn = Callable[[str], list[str]]


@lru_cache(maxsize=8192)
def _squash(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", text.strip().lower())


# quantisation suffixes of checkpoint names -> the weight precision such a checkpoint holds
_SUFFIX_PRECISION = (
    ("nvfp4", "nvfp4"), ("mxfp4", "mxfp4"), ("fp4", "nvfp4"), ("fp8", "fp8"), ("w8a8", "int8"), ("w4a16", "int4"),
    ("awq", "int4"), ("gptq", "int4"), ("int4", "int4"), ("bf16", "bf16"),
)  # fmt: skip


def checkpoint_precision(
    name: str, native_dtype: str, alias_dtypes: Mapping[str, str] | Iterable[tuple[str, str]] | None = None
) -> str:
    """The weight precision of the checkpoint called ``name``: its quantisation suffix (``-NVFP4``, ``-FP8``,
    ``-FP8-Dynamic``, ``-AWQ``, ...) where it has one, else its entry's ``alias_dtypes`` for it, else the entry's
    ``native_dtype``; e.g. ``nvidia/DeepSeek-R1-NVFP4`` is an nvfp4 checkpoint of DeepSeek-R1 (native fp8)."""
    parts = [p for p in re.split(r"[-_/]", name.strip().lower()) if p]
    for part in reversed(parts[-3:]):
        for suffix, precision in _SUFFIX_PRECISION:
            if part == suffix:
                return precision
    key = _squash(name)
    for alias, dtype in dict(alias_dtypes or ()).items():
        if _squash(alias) == key:
            return dtype
    return native_dtype


def resolve_checkpoint(spec: ModelSpec, name: str) -> tuple[str, str]:
    """(repository id, weight precision) of the checkpoint ``name`` asks for among ``spec``'s id and aliases, spelt
    as the catalogue spells it; a name it does not list is taken as typed when it looks like a repository
    (``org/name``); a short name (no ``org/``) is a listed repository's name without its org, else the entry's
    own id at its own precision."""
    key = _squash(name)
    names = (spec.id, *spec.aliases)
    repo = next((c for c in names if _squash(c) == key), None)
    if repo is None and "/" not in name:  # a listed repository named without its org (DeepSeek-R1-NVFP4)
        repo = next((c for c in names if "/" in c and _squash(c.split("/", 1)[1]) == key), None)
    if repo is not None and "/" in repo:
        return repo, checkpoint_precision(repo, spec.native_dtype, spec.alias_dtypes)
    if "/" in name:  # a repository the catalogue does not list, taken as typed
        return name.strip(), checkpoint_precision(name, spec.native_dtype, spec.alias_dtypes)
    # a short name (deepseek-r1, gpt-oss-120b): the entry's own repository at its own precision, so the two always
    # match (an unlisted quantised release, Qwen3-32B-AWQ, is named as org/name to be deployed as such)
    return spec.id, checkpoint_precision(spec.id, spec.native_dtype, spec.alias_dtypes)


def normalise_gpu_name(text: str) -> str:
    """Lookup key for an accelerator name: lower case, no spaces/underscores/dashes."""
    return _squash(text)


def normalise_model_name(text: str) -> str:
    """Lookup key for a model name: lower case, no spaces/underscores/dashes, org prefix kept."""
    return _squash(text)


def _gpu_keys(text: str) -> list[str]:
    key = normalise_gpu_name(text)
    keys = [key]
    for prefix in _GPU_PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            keys.append(key[len(prefix) :])
    return keys


def _model_keys(text: str) -> list[str]:
    """Candidate keys for a model name, most specific first."""
    raw = text.strip()
    forms = [raw]
    if "/" in raw:
        forms.append(raw.rsplit("/", 1)[1])
    keys: list[str] = []
    for form in forms:
        key = normalise_model_name(form)
        keys.append(key)
        changed = True
        while changed:
            changed = False
            for suffix in _MODEL_SUFFIXES:
                if key.endswith(suffix) and len(key) > len(suffix):
                    key = key[: -len(suffix)]
                    keys.append(key)
                    changed = True
    return list(dict.fromkeys(keys))


@dataclass(frozen=True, slots=True)
class CatalogDefaults:
    """Which entries to use when the caller does not say."""

    electricity_region: str = "us"
    electricity_sector: str = "industrial"
    pue_facility: str = "typical"
    gpu_price_tier: str = "on_demand"
    gpu_price_provider_kind: str = "specialised"


def _format_validation(origin: str, section: str, index: int, entry: Any, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "(entry)"
    ident = ""
    if isinstance(entry, Mapping):
        for key in ("id", "gpu", "model", "region", "facility"):
            if key in entry:
                ident = f" ({entry[key]})"
                break
    msg = err.get("msg", "invalid")
    got = ""
    if err.get("type") not in ("missing",) and "input" in err and not isinstance(err["input"], Mapping):
        got = f", got {err['input']!r}"
    if err.get("type") == "extra_forbidden":
        msg = "unknown field (computed or misspelt?)"
    return f"{origin}: {section}[{index}]{ident} field '{loc}': {msg}{got}"


def parse_catalog_document(origin: str, doc: Any) -> dict[str, list[Mapping[str, Any]]]:
    """Check the top-level shape of one catalogue document; returns section → list of raw entries."""
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise CatalogError(f"{origin}: expected a mapping with keys {', '.join(CATALOG_SECTIONS)}")
    out: dict[str, list[Mapping[str, Any]]] = {}
    for key, value in doc.items():
        if key == "schema_version":
            if value != 1:
                raise CatalogError(f"{origin}: schema_version {value!r} is not supported (expected 1)")
            continue
        if key not in CATALOG_SECTIONS:
            raise CatalogError(
                f"{origin}: unknown section '{key}'; expected one of {', '.join(CATALOG_SECTIONS)}"
            )
        if key == "defaults":
            if not isinstance(value, Mapping):
                raise CatalogError(f"{origin}: 'defaults' must be a mapping")
            out[key] = [value]
            continue
        if value is None:
            continue
        if not isinstance(value, list):
            raise CatalogError(f"{origin}: section '{key}' must be a list of entries")
        for i, entry in enumerate(value):
            if not isinstance(entry, Mapping):
                raise CatalogError(f"{origin}: {key}[{i}] must be a mapping, got {type(entry).__name__}")
        out[key] = list(value)
    return out


def _validate(cls: type[M], origin: str, section: str, index: int, entry: Mapping[str, Any]) -> M:
    try:
        return cls.model_validate(dict(entry))
    except ValidationError as exc:
        raise CatalogError(_format_validation(origin, section, index, entry, exc)) from None


@dataclass(slots=True)
class _Index:
    """Name → canonical id, with the origin of every key (for collision messages)."""

    keys: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, ident: str, origin: str, what: str) -> None:
        prev = self.keys.get(key)
        if prev is not None and prev != ident:
            raise CatalogError(f"{origin}: {what} name '{key}' of '{ident}' is already used by '{prev}'")
        self.keys[key] = ident


class Catalog:
    """Accelerators, models and prices with lookup by id or alias. Immutable; build new ones with overrides."""

    __slots__ = (
        "_gpus",
        "_models",
        "_gpu_index",
        "_model_index",
        "_origins",
        "gpu_prices",
        "api_price_entries",
        "electricity_prices",
        "pue_entries",
        "owned_hardware",
        "defaults",
    )

    def __init__(
        self,
        gpus: Iterable[Accelerator] = (),
        models: Iterable[ModelSpec] = (),
        gpu_prices: Iterable[GpuPrice] = (),
        api_prices: Iterable[ApiPrice] = (),
        electricity: Iterable[ElectricityPrice] = (),
        pue: Iterable[PueEntry] = (),
        owned_hardware: Iterable[OwnedHardware] = (),
        defaults: CatalogDefaults | None = None,
        origins: Mapping[str, str] | None = None,
    ) -> None:
        self._gpus: dict[str, Accelerator] = {}
        self._models: dict[str, ModelSpec] = {}
        self._origins: dict[str, str] = dict(origins or {})
        self._gpu_index = _Index()
        self._model_index = _Index()
        for gpu in gpus:
            self._gpus[gpu.id] = gpu
            origin = self._origins.get(gpu.id, "catalogue")
            for name in (gpu.id, gpu.name, *gpu.aliases):
                keys = _gpu_keys(name)
                self._gpu_index.add(keys[0], gpu.id, origin, "GPU")
                for stripped in keys[1:]:  # 'NVIDIA L4' also answers to 'L4' unless something else does
                    self._gpu_index.keys.setdefault(stripped, gpu.id)
        for spec in models:
            self._models[spec.id] = spec
            origin = self._origins.get(spec.id, "catalogue")
            for name in (spec.id, *spec.aliases, *([spec.name] if spec.name else [])):
                self._model_index.add(normalise_model_name(name), spec.id, origin, "model")
                if "/" in name:
                    self._model_index.add(
                        normalise_model_name(name.rsplit("/", 1)[1]), spec.id, origin, "model"
                    )
        self.gpu_prices: tuple[GpuPrice, ...] = tuple(gpu_prices)
        self.api_price_entries: tuple[ApiPrice, ...] = tuple(api_prices)
        self.electricity_prices: tuple[ElectricityPrice, ...] = tuple(electricity)
        self.pue_entries: tuple[PueEntry, ...] = tuple(pue)
        self.owned_hardware: tuple[OwnedHardware, ...] = tuple(owned_hardware)
        self.defaults = defaults or CatalogDefaults()
        for p in self.gpu_prices:
            self._resolve_ref(self.gpu, p.gpu, "gpu_prices", p.provider)
        for o in self.owned_hardware:
            self._resolve_ref(self.gpu, o.gpu, "owned_hardware", "")
        for a in self.api_price_entries:
            self._resolve_ref(self.model, a.model, "api_prices", a.provider)

    def _resolve_ref(self, lookup: Any, name: str, section: str, detail: str) -> None:
        try:
            lookup(name)
        except CatalogError as exc:
            where = f" ({detail})" if detail else ""
            raise CatalogError(f"{section}{where}: {exc}") from None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_documents(cls, documents: Iterable[tuple[str, Any]]) -> Catalog:
        """Build a catalogue from ``(origin, parsed YAML)`` pairs, later documents overriding earlier ones."""
        return cls().with_documents(documents)

    def with_documents(self, documents: Iterable[tuple[str, Any]]) -> Catalog:
        """A new catalogue with ``(origin, parsed YAML)`` documents layered on top of this one."""
        gpus = dict(self._gpus)
        models = dict(self._models)
        origins = dict(self._origins)
        gpu_prices = {p.key: p for p in self.gpu_prices}
        api_prices = {p.key: p for p in self.api_price_entries}
        electricity = {p.key: p for p in self.electricity_prices}
        pue = {p.key: p for p in self.pue_entries}
        owned = {p.key: p for p in self.owned_hardware}
        defaults = self.defaults
        for origin, doc in documents:
            sections = parse_catalog_document(origin, doc)
            gpu_ids = _Lookup(gpus, _gpu_keys, _gpu_keys)
            model_ids = _Lookup(models, _model_keys, _model_index_keys)
            for i, raw in enumerate(sections.get("gpus", [])):
                self._merge_entry(Accelerator, gpu_ids, origins, origin, "gpus", i, raw)
            for i, raw in enumerate(sections.get("models", [])):
                self._merge_entry(ModelSpec, model_ids, origins, origin, "models", i, raw)
            for i, raw in enumerate(sections.get("gpu_prices", [])):
                gp = _validate(GpuPrice, origin, "gpu_prices", i, raw)
                gp = gp.model_copy(update={"gpu": gpu_ids.canonical(gp.gpu, origin, "gpu_prices", i)})
                gpu_prices[gp.key] = gp
            for i, raw in enumerate(sections.get("api_prices", [])):
                ap = _validate(ApiPrice, origin, "api_prices", i, raw)
                ap = ap.model_copy(update={"model": model_ids.canonical(ap.model, origin, "api_prices", i)})
                api_prices[ap.key] = ap
            for i, raw in enumerate(sections.get("electricity", [])):
                ep = _validate(ElectricityPrice, origin, "electricity", i, raw)
                electricity[ep.key] = ep
            for i, raw in enumerate(sections.get("pue", [])):
                pe = _validate(PueEntry, origin, "pue", i, raw)
                pue[pe.key] = pe
            for i, raw in enumerate(sections.get("owned_hardware", [])):
                oh = _validate(OwnedHardware, origin, "owned_hardware", i, raw)
                oh = oh.model_copy(update={"gpu": gpu_ids.canonical(oh.gpu, origin, "owned_hardware", i)})
                owned[oh.key] = oh
            for raw_defaults in sections.get("defaults", []):
                known = set(CatalogDefaults.__dataclass_fields__)
                for key in raw_defaults:
                    if key not in known:
                        raise CatalogError(
                            f"{origin}: defaults.{key} is not a known default; expected {sorted(known)}"
                        )
                    if not isinstance(raw_defaults[key], str):
                        raise CatalogError(f"{origin}: defaults.{key} must be a string")
                current = {k: getattr(defaults, k) for k in known}
                current.update(raw_defaults)
                defaults = CatalogDefaults(**current)
        return Catalog(
            gpus=gpus.values(),
            models=models.values(),
            gpu_prices=gpu_prices.values(),
            api_prices=api_prices.values(),
            electricity=electricity.values(),
            pue=pue.values(),
            owned_hardware=owned.values(),
            defaults=defaults,
            origins=origins,
        )

    @staticmethod
    def _merge_entry(
        cls: type[M],
        lookup: _Lookup,
        origins: dict[str, str],
        origin: str,
        section: str,
        index: int,
        raw: Mapping[str, Any],
    ) -> None:
        table = lookup.table
        ident = raw.get("id")
        if not isinstance(ident, str) or not ident.strip():
            raise CatalogError(f"{origin}: {section}[{index}] field 'id': missing or not a string")
        existing = lookup.find(ident)
        if existing is None:
            for alias in raw.get("aliases", ()) or ():
                if isinstance(alias, str):
                    existing = lookup.find(alias)
                    if existing is not None:
                        break
        if existing is None:
            entry = _validate(cls, origin, section, index, raw)
            table[entry.id] = entry  # type: ignore[attr-defined]
            origins[entry.id] = origin  # type: ignore[attr-defined]
            lookup.add(entry.id, entry)  # type: ignore[attr-defined]
            return
        for required in ("source", "as_of"):
            if required not in raw:
                raise CatalogError(
                    f"{origin}: {section}[{index}] ({ident}) field '{required}': an override of '{existing}' "
                    "must give its own source and as_of"
                )
        base = table[existing].model_dump()
        merged = {**base, **dict(raw)}
        merged["id"] = existing
        aliases = list(base.get("aliases", ()))
        for name in [*(raw.get("aliases") or ()), ident]:
            if isinstance(name, str) and name != existing and name not in aliases:
                aliases.append(name)
        merged["aliases"] = aliases
        entry = _validate(cls, origin, section, index, merged)
        table[existing] = entry
        origins[existing] = origin
        lookup.add(existing, entry)

    # ------------------------------------------------------------------ accelerators
    @property
    def gpus(self) -> tuple[Accelerator, ...]:
        return tuple(self._gpus.values())

    def gpu_ids(self) -> tuple[str, ...]:
        return tuple(self._gpus)

    def find_gpu(self, name: str) -> Accelerator | None:
        """The accelerator called ``name`` (id or alias), or None."""
        for key in _gpu_keys(name):
            ident = self._gpu_index.keys.get(key)
            if ident is not None:
                return self._gpus[ident]
        return None

    def gpu(self, name: str) -> Accelerator:
        """The accelerator called ``name`` (id or alias); :class:`CatalogError` with the nearest match if unknown."""
        found = self.find_gpu(name)
        if found is None:
            raise CatalogError(f"unknown GPU '{name}'{_suggest(name, self._gpu_index, normalise_gpu_name)}")
        return found

    # ------------------------------------------------------------------ models
    @property
    def models(self) -> tuple[ModelSpec, ...]:
        return tuple(self._models.values())

    def model_ids(self) -> tuple[str, ...]:
        return tuple(self._models)

    def find_model(self, name: str) -> ModelSpec | None:
        """The model called ``name`` (HF id with or without org and -Instruct, or alias), or None."""
        for key in _model_keys(name):
            ident = self._model_index.keys.get(key)
            if ident is not None:
                return self._models[ident]
        return None

    def model(self, name: str) -> ModelSpec:
        """The model called ``name``; :class:`CatalogError` with the nearest match if unknown."""
        found = self.find_model(name)
        if found is None:
            raise CatalogError(
                f"unknown model '{name}'{_suggest(name, self._model_index, normalise_model_name)}"
            )
        return found

    def suggest(self, name: str) -> str | None:
        """The nearest GPU or model id to ``name`` (for 'did you mean' messages), or None."""
        merged = _Index({**self._gpu_index.keys, **self._model_index.keys})
        hint = _nearest(name, merged, normalise_model_name)
        return hint

    def origin(self, ident: str) -> str:
        """Where an accelerator or model entry came from (package data file or override file)."""
        return self._origins.get(ident, "catalogue")

    # ------------------------------------------------------------------ prices
    def gpu_price(self, gpu: str, provider: str | None = None, tier: str | None = None) -> GpuPrice:
        """One GPU-hour price for ``gpu``.

        With ``provider`` and/or ``tier`` the entries are filtered to those; without ``tier`` the default tier
        (``on_demand``) is used when it exists. Of the remaining entries the default is the lower median by
        price among specialised clouds (``defaults.gpu_price_provider_kind``), falling back to all providers;
        ties go to the alphabetically first provider. Lower median, so the answer is always a real, sourced
        entry rather than an average.
        """
        gpu_id = self.gpu(gpu).id
        rows = [p for p in self.gpu_prices if p.gpu == gpu_id]
        if not rows:
            raise CatalogError(f"no GPU-hour price for '{gpu_id}' in the catalogue; add one under gpu_prices")
        if provider is not None:
            rows = [p for p in rows if p.provider.lower() == provider.strip().lower()]
            if not rows:
                have = sorted({p.provider for p in self.gpu_prices if p.gpu == gpu_id})
                raise CatalogError(
                    f"no price for '{gpu_id}' from provider '{provider}'; have {', '.join(have)}"
                )
        if tier is not None:
            tier_rows = [p for p in rows if p.tier == tier]
            if not tier_rows:
                have = sorted({p.tier for p in rows})
                raise CatalogError(f"no '{tier}' price for '{gpu_id}'; tiers available: {', '.join(have)}")
            rows = tier_rows
        else:
            default_tier = [p for p in rows if p.tier == self.defaults.gpu_price_tier]
            rows = default_tier or rows
        if provider is None:
            kind = [p for p in rows if p.provider_kind == self.defaults.gpu_price_provider_kind]
            rows = kind or rows
        rows.sort(key=lambda p: (p.usd_per_gpu_hour, p.provider, p.region or ""))
        target = median_low([p.usd_per_gpu_hour for p in rows])
        return next(p for p in rows if p.usd_per_gpu_hour == target)

    def gpu_prices_for(self, gpu: str) -> tuple[GpuPrice, ...]:
        """Every GPU-hour price for ``gpu``, cheapest first."""
        gpu_id = self.gpu(gpu).id
        return tuple(
            sorted((p for p in self.gpu_prices if p.gpu == gpu_id), key=lambda p: p.usd_per_gpu_hour)
        )

    def api_prices(self, model: str) -> tuple[ApiPrice, ...]:
        """Hosted-API prices for ``model`` (cheapest blended first; empty if none are catalogued)."""
        model_id = self.model(model).id
        rows = [p for p in self.api_price_entries if p.model == model_id]
        return tuple(
            sorted(
                rows, key=lambda p: (p.usd_per_1m_input_tokens + 3 * p.usd_per_1m_output_tokens, p.provider)
            )
        )

    def electricity(self, region: str | None = None, sector: str | None = None) -> ElectricityPrice:
        """Electricity price for ``region`` (default ``defaults.electricity_region``)."""
        want_region = (region or self.defaults.electricity_region).lower()
        want_sector = (sector or self.defaults.electricity_sector).lower()
        for p in self.electricity_prices:
            if p.region.lower() == want_region and p.sector.lower() == want_sector:
                return p
        for p in self.electricity_prices:
            if p.region.lower() == want_region and sector is None:
                return p
        have = sorted({f"{p.region}/{p.sector}" for p in self.electricity_prices})
        raise CatalogError(
            f"no electricity price for region '{want_region}' ({want_sector}); have {', '.join(have)}"
        )

    def pue(self, facility: str | None = None) -> PueEntry:
        """PUE for ``facility`` (default ``defaults.pue_facility``)."""
        want = (facility or self.defaults.pue_facility).lower()
        for p in self.pue_entries:
            if p.facility.lower() == want:
                return p
        have = sorted(p.facility for p in self.pue_entries)
        raise CatalogError(f"no PUE entry for facility '{want}'; have {', '.join(have)}")

    def owned(self, gpu: str) -> OwnedHardware:
        """Owned-hardware defaults (capex, amortisation, ops) for ``gpu``."""
        gpu_id = self.gpu(gpu).id
        for o in self.owned_hardware:
            if o.gpu == gpu_id:
                return o
        raise CatalogError(f"no owned-hardware entry for '{gpu_id}'; add one under owned_hardware")

    # ------------------------------------------------------------------ overrides
    def with_overrides(self, documents: Iterable[tuple[str, Any]]) -> Catalog:
        """A new catalogue with user documents layered on top.

        ``documents`` are ``(origin, parsed YAML)`` pairs (same schema as the package data). Core reads no user
        files: edges read them with :func:`gpuyield.edges.io.models.read_catalog_files` (the CLI's
        :func:`gpuyield.edges.cli.common.load_catalog` does).
        """
        docs: list[tuple[str, Any]] = []
        for src in documents:
            if not isinstance(src, tuple):
                raise CatalogError(
                    f"catalogue override {src!r}: expected an (origin, document) pair; read files with "
                    "gpuyield.edges.io.models.read_catalog_files"
                )
            docs.append(src)
        return self.with_documents(docs)


def _model_index_keys(name: str) -> list[str]:
    keys = [normalise_model_name(name)]
    if "/" in name:
        keys.append(normalise_model_name(name.rsplit("/", 1)[1]))
    return keys


class _Lookup:
    """Id/alias lookup over a plain ``id → entry`` table while a catalogue is being built."""

    def __init__(self, table: dict[str, Any], lookup_keys: _KeyFn, index_keys: _KeyFn) -> None:
        self.table = table
        self.lookup_keys = lookup_keys
        self.index_keys = index_keys
        self.index: dict[str, str] = {}
        for ident, entry in table.items():
            self.add(ident, entry)

    def add(self, ident: str, entry: Any) -> None:
        """Index ``entry`` (its id, aliases and name) under ``ident``; earlier claims on a key win."""
        names = [ident, *entry.aliases]
        if getattr(entry, "name", None):
            names.append(entry.name)
        for n in names:
            for k in self.index_keys(n):
                self.index.setdefault(k, ident)

    def find(self, name: str) -> str | None:
        for key in self.lookup_keys(name):
            if key in self.index:
                return self.index[key]
        return None

    def canonical(self, name: str, origin: str, section: str, index: int) -> str:
        found = self.find(name)
        if found is None:
            hint = _suggest(name, _Index(dict(self.index)), normalise_model_name)
            raise CatalogError(f"{origin}: {section}[{index}] refers to unknown '{name}'{hint}")
        return found


def _nearest(name: str, index: _Index, norm: Any) -> str | None:
    key = norm(name)
    match = difflib.get_close_matches(key, list(index.keys), n=1, cutoff=0.5)
    if not match:
        # substring fallback, e.g. 'h100' inside 'h100sxm'
        subs = sorted(k for k in index.keys if key and (key in k or k in key))
        if not subs:
            return None
        match = [subs[0]]
    return index.keys[match[0]]


def _suggest(name: str, index: _Index, norm: Any) -> str:
    hint = _nearest(name, index, norm)
    return f"; did you mean '{hint}'?" if hint else ""


def parse_catalog_yaml(origin: str, text: str) -> Any:
    """Parse one catalogue YAML text (no I/O); a syntax error raises :class:`CatalogError` naming ``origin``."""
    return _load_yaml(origin, text)


def _load_yaml(origin: str, text: str) -> Any:
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CatalogError(f"{origin}:{where} is not valid YAML: {problem}") from None


def _package_documents(files: Sequence[str] = DATA_FILES) -> list[tuple[str, Any]]:
    base = resources.files("gpuyield.core.catalog").joinpath("data")
    docs = []
    for name in files:
        text = base.joinpath(name).read_text(encoding="utf-8")
        docs.append((f"package:{name}", _load_yaml(f"package:{name}", text)))
    return docs


@lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    """The built-in catalogue (package data), built once per process."""
    return Catalog.from_documents(_package_documents())
