"""One YAML reader for every file an edge loads, so bad files fail the same way everywhere.

``read_yaml(path, what)`` returns the parsed document or raises :class:`~gpuyield.errors.ConfigError` with
one line that names the option or role (``what``, e.g. ``--deployment``), the path and the problem:
``--deployment dep.yaml: file not found``, ``... cannot read (Permission denied)``,
``... line 3: not valid YAML (mapping values are not allowed here)``. JSON is YAML, so JSON files load too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gpuyield.errors import ConfigError

__all__ = ["read_yaml"]

# libyaml's safe loader when PyYAML was built with it (several times faster on large calibration files)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: str | Path, what: str) -> Any:
    """The YAML (or JSON) document in ``path``; a clear :class:`ConfigError` when it cannot be read."""
    p = Path(path)
    prefix = f"{what} {p}" if what else str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{prefix}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{prefix}: is a directory, expected a YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{prefix}: not a text file (expected UTF-8 YAML)") from None
    except OSError as exc:
        raise ConfigError(f"{prefix}: cannot read ({exc.strerror or exc})") from None
    try:
        return yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{prefix}{where}: not valid YAML ({problem})") from None
