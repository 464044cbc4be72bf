"""The one YAML reader every edge uses: the same one-line errors everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuyield.edges.io.deployment import load_deployment
from gpuyield.edges.io.yaml_file import read_yaml
from gpuyield.edges.perf.io import load_calibration
from gpuyield.edges.telemetry.watch import load_targets
from gpuyield.errors import ConfigError


def test_reads_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("a: 1\nb: [x, y]\n")
    (tmp_path / "a.json").write_text('{"a": 1}')
    assert read_yaml(tmp_path / "a.yaml", "--x") == {"a": 1, "b": ["x", "y"]}
    assert read_yaml(tmp_path / "a.json", "--x") == {"a": 1}


@pytest.mark.parametrize(
    "setup, expected",
    [
        (lambda d: d / "missing.yaml", r"^--opt .*missing\.yaml: file not found$"),
        (lambda d: d, r"^--opt .*: is a directory, expected a YAML file$"),
        (lambda d: (d / "bad.yaml", (d / "bad.yaml").write_text("a: [1, 2\nb: 3\n"))[0], r"bad\.yaml line \d+: not valid YAML \("),
        (lambda d: (d / "bin.yaml", (d / "bin.yaml").write_bytes(b"\xff\xfe\x00bad"))[0], r"not a text file"),
    ],
)
def test_errors_are_one_line_and_name_the_option_and_file(tmp_path: Path, setup, expected) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=expected) as info:
        read_yaml(setup(tmp_path), "--opt")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "loader, flag",
    [(load_deployment, "--deployment"), (load_calibration, "--calibration"), (load_targets, "--targets")],
)
def test_edge_loaders_share_the_wording(tmp_path: Path, loader, flag) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=f"^{flag} .*nope.yaml: file not found$"):
        loader(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: value: other\n")
    with pytest.raises(ConfigError, match=f"^{flag} .*bad.yaml line 1: not valid YAML"):
        loader(bad)
