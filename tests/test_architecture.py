"""The core is pure: it imports with the edge libraries blocked, and never imports the edges."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "gpuyield"
BLOCKED = ["duckdb", "typer", "starlette", "uvicorn", "httpx", "rich", "ray", "torch", "pyarrow", "pandas"]


def test_core_imports_with_edge_libraries_blocked() -> None:
    code = textwrap.dedent(
        f"""
        import importlib, importlib.abc, pkgutil, sys
        BLOCKED = {BLOCKED!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked in core: " + name)
                return None
        sys.meta_path.insert(0, Block())
        import gpuyield.core as core
        names = [m.name for m in pkgutil.walk_packages(core.__path__, "gpuyield.core.")]
        for name in names:
            importlib.import_module(name)
        print(len(names))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _imported(node: ast.AST) -> list[str]:
    """Module names an ``import`` / ``from ... import`` node brings in (none for other nodes)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module]
    return []


def test_core_never_imports_edges() -> None:
    offenders = []
    for path in (SRC / "core").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for mod in _imported(node):
                if mod.startswith("gpuyield.edges"):
                    offenders.append(f"{path.relative_to(SRC)} imports {mod}")
    assert not offenders, offenders


def test_test_file_basenames_are_unique() -> None:
    # pytest's default ("prepend") import mode imports tests/a/test_x.py and tests/b/test_x.py both as module
    # ``test_x``; the second fails collection with "import file mismatch" (this has bitten us once).
    tests_dir = pathlib.Path(__file__).resolve().parent
    seen: dict[str, list[str]] = {}
    for path in sorted(tests_dir.rglob("*.py")):
        if path.name.startswith("test_") or path.name.endswith("_test.py"):
            seen.setdefault(path.name, []).append(str(path.relative_to(tests_dir)))
    assert seen, "no test files found"
    duplicates = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not duplicates, f"test file basenames must be unique across tests/: {duplicates}"


def test_core_does_no_file_or_environment_io() -> None:
    # Package data is read through importlib.resources; user files are read at the edges
    # (e.g. gpuyield.edges.io.models.read_catalog_files for --catalog).
    banned_modules = {"pathlib", "os", "shutil", "glob", "tempfile", "socket", "subprocess", "asyncio"}
    offenders = []
    for path in (SRC / "core").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} calls open()")
            for mod in _imported(node):
                if mod.split(".")[0] in banned_modules:
                    offenders.append(f"{path.relative_to(SRC)} imports {mod}")
    assert not offenders, offenders
