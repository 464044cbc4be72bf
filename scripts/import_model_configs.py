"""Print catalogue entries (models.yaml form) for Hugging Face ``config.json`` files.

The catalogue's model entries are what ``gpuyield.core.catalog.load_hf_config`` reads from a model's
``config.json``, plus an id, aliases, a name, a source and a date. This script makes those entries for a list of
configs so they can be reviewed and appended to ``src/gpuyield/core/catalog/data/models.yaml``. Used on
2026-11-22 with the configs that aiconfigurator-core 0.12.0 (PyPI, Apache-2.0) ships as copies of the models'
Hugging Face ``config.json`` files (``aiconfigurator_core/model_configs/ORG--NAME_config.json``)::

    python scripts/import_model_configs.py --from "$(python -c 'import aiconfigurator_core, os; \
        print(os.path.dirname(aiconfigurator_core.__file__))')/model_configs" \
        MiniMaxAI/MiniMax-M2.7=nvidia/MiniMax-M2.7-NVFP4 Qwen/Qwen3.5-27B ...

Each argument is ``ID[=ALIAS,ALIAS...]``; the config file is ``ORG--NAME_config.json`` in ``--from``.
Entries already in the catalogue are refused (it would shadow them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import yaml

from gpuyield.core.catalog import default_catalog, load_hf_config

PACKAGE = "aiconfigurator-core 0.12.0 (PyPI, Apache-2.0)"


def entry(config_dir: Path, arg: str, as_of: dt.date, note: str | None) -> dict[str, object]:
    ident, _, alias_text = arg.partition("=")
    aliases = [a for a in alias_text.split(",") if a]
    path = config_dir / (ident.replace("/", "--") + "_config.json")
    spec = load_hf_config(json.loads(path.read_text()), model_id=ident, source=str(path), as_of=as_of)
    fields = spec.model_dump(exclude_defaults=True, mode="json")
    out: dict[str, object] = {"id": ident}
    if aliases:
        out["aliases"] = aliases
    out["name"] = ident.split("/", 1)[-1]
    for key, value in fields.items():
        if key not in ("id", "source", "as_of"):
            out[key] = value
    out["source"] = (
        f"{PACKAGE} aiconfigurator_core/model_configs/{path.name}, a copy of the Hugging Face config.json of {ident}"
    )
    out["as_of"] = as_of.isoformat()
    if note:
        out["notes"] = note
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="config_dir", required=True, type=Path)
    ap.add_argument("--as-of", default=dt.date.today().isoformat())
    ap.add_argument("--note", default=None, help="notes: text for every entry")
    ap.add_argument("models", nargs="+", help="ID[=ALIAS,ALIAS...]")
    args = ap.parse_args()
    cat = default_catalog()
    entries = []
    for arg in args.models:
        ident = arg.split("=", 1)[0]
        if cat.find_model(ident) is not None and cat.find_model(ident).id == ident:  # type: ignore[union-attr]
            sys.exit(f"{ident} is already in the catalogue")
        entries.append(entry(args.config_dir, arg, dt.date.fromisoformat(args.as_of), args.note))
    sys.stdout.write(yaml.safe_dump(entries, sort_keys=False, width=110))


if __name__ == "__main__":
    main()
