"""README opens with two setup commands; .ci/run runs the test command verbatim."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2, "README must open with two fenced setup commands"
    return [blocks[0].strip(), blocks[1].strip()]


def test_ci_runs_readme_test_command_verbatim() -> None:
    _, test_cmd = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines(), f"{test_cmd!r} not found verbatim in .ci/run"


def test_readme_main_command_uses_builtin_data() -> None:
    main_cmd, _ = _readme_commands()
    assert "pip install" in main_cmd and "gpuyield " in main_cmd
    assert "builtin:" in main_cmd or "catalog" in main_cmd
