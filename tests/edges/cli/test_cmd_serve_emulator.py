"""CLI surface of `gpuyield serve` and `gpuyield engine-emulator` (no servers started)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from gpuyield.edges.cli.main import app

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


def test_help_has_examples() -> None:
    for cmd in ("serve", "engine-emulator"):
        r = runner.invoke(app, [cmd, "--help"])
        assert r.exit_code == 0 and "Examples" in r.output


def test_serve_check_and_hash_key(tmp_path: Path) -> None:
    r = runner.invoke(app, ["serve", "--check", "--config", str(ROOT / "examples" / "gateway.yaml")])
    assert r.exit_code == 0 and "2 backends" in r.output
    r = runner.invoke(app, ["serve", "--hash-key", "sk-team-a-demo"])
    assert r.exit_code == 0 and r.output.strip() == "68bf1bf9bc3cc3fe4bd96a4ed8f75ef0b4a453649af66692906bf27d7ecc51fe"
    bad = tmp_path / "gw.yaml"
    bad.write_text("backends:\n  - name: a\n    url: nope\n")
    r = runner.invoke(app, ["serve", "--check", "--config", str(bad)])
    assert r.exit_code == 2 and "backends.0.url" in r.output
    r = runner.invoke(app, ["serve"])
    assert r.exit_code == 2 and "--config" in r.output


def test_emulator_bad_flags_exit_2() -> None:
    r = runner.invoke(app, ["engine-emulator", "--model", "m", "--fixed-step-ms", "0", "--port", "1"])
    assert r.exit_code == 2 and "--fixed-step-ms" in r.output
    r = runner.invoke(app, ["engine-emulator", "--model", "no-such-model-xyz", "--gpu", "h100-sxm", "--port", "1"])
    assert r.exit_code == 2


def test_emulator_fleet_model_flags_are_checked() -> None:
    base = ["engine-emulator", "--model", "Qwen/Qwen3-32B", "--gpu", "h100_sxm", "--tp", "4", "--port", "1"]
    r = runner.invoke(app, [*base, "--measured-at", "1024"])
    assert r.exit_code == 2 and "ISL,OSL" in r.output
    r = runner.invoke(app, [*base, "--measured-at", "0,256"])
    assert r.exit_code == 2 and "positive" in r.output
    r = runner.invoke(app, ["engine-emulator", "--model", "m", "--fixed-step-ms", "5", "--precision", "fp8"])
    assert r.exit_code == 2 and "--fixed-step-ms" in r.output
    r = runner.invoke(app, [*base, "--calibration", "/nonexistent/cal.yaml"])
    assert r.exit_code == 2 and "cal.yaml" in r.output
