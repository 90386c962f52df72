"""Static checks run as tests: ruff, mypy, and the layering rules of STYLE.md."""

from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, require

PACKAGE = REPO / "weak_bpf"

# Modules that must stay free of I/O and side effects.
PURE = (
    "weak_bpf.parsers",
    "weak_bpf.versions",
    "weak_bpf.engine",
    "weak_bpf.model",
    "weak_bpf.apply.plan",
    "weak_bpf.verify.guest",
)
# Imports a pure module may not make (I/O, processes, logging, the outside world).
IMPURE_IMPORTS = {
    "os",
    "pathlib",
    "subprocess",
    "shutil",
    "tempfile",
    "logging",
    "socket",
    "fcntl",
    "glob",
    "io",
    "mmap",
    "signal",
    "threading",
    "multiprocessing",
    "rpm",
    "systemd",
    "pydbus",
    "gi",
}
IMPURE_CALLS = {"open", "print", "input", "exit", "quit"}
# Only these modules may import the CLI's modules (weak_bpf.cli, weak_bpf.cli_parser).
CLI_USERS = {"weak_bpf.__main__", "weak_bpf.cli"}
# Only these modules may import gi: the D-Bus object (manager.py) and the loop that serves it.
GI_USERS = {"weak_bpf.daemon.manager", "weak_bpf.daemon.service"}


def _ruff() -> str:
    cache = os.environ.get("WEAK_BPF_DEV_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "weak-bpf-progs-dev"
    )
    for candidate in (os.environ.get("RUFF"), "/usr/bin/ruff", f"{cache}/tools/bin/ruff"):
        if candidate and Path(candidate).exists():
            return candidate
    from shutil import which

    found = which("ruff")
    require(found, "ruff is not installed (scripts/install-deps installs it)")
    assert found
    return found


@functools.cache
def _modules() -> dict[str, ast.Module]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        modules[name] = ast.parse(path.read_bytes(), filename=str(path))
    return modules


def _imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_ruff_check() -> None:
    proc = subprocess.run(
        [_ruff(), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format() -> None:
    proc = subprocess.run(
        [_ruff(), "format", "--check", "--no-cache", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("module", sorted(m for m in _modules() if m.startswith(PURE)))
def test_pure_modules_do_no_io(module: str) -> None:
    tree = _modules()[module]
    bad = {name for name in _imports(tree) if name.split(".")[0] in IMPURE_IMPORTS}
    assert not bad, f"{module} imports {sorted(bad)}"
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not calls & IMPURE_CALLS, f"{module} calls {sorted(calls & IMPURE_CALLS)}"
    internal = {n for n in _imports(tree) if n.startswith("weak_bpf.")}
    allowed = ("weak_bpf.errors", *PURE)
    assert all(n.startswith(allowed) for n in internal), f"{module} imports {sorted(internal)}"


def test_only_entry_points_import_the_cli() -> None:
    for module, tree in _modules().items():
        if module not in CLI_USERS:
            assert not any(n.startswith("weak_bpf.cli") for n in _imports(tree)), module


# The floors of the package, top first: a module imports only from its own floor or below.
FLOORS = (
    ("weak_bpf.__main__", "weak_bpf.cli", "weak_bpf.cli_parser", "weak_bpf.daemon"),
    ("weak_bpf.report",),
    ("weak_bpf.ops",),
    ("weak_bpf.program",),
    ("weak_bpf.kernel", "weak_bpf.verify"),
    ("weak_bpf.engine", "weak_bpf.apply"),
    ("weak_bpf.config", "weak_bpf.model"),
    ("weak_bpf.files",),
    ("weak_bpf.parsers", "weak_bpf.versions", "weak_bpf.errors", "weak_bpf"),
)


def _floor(module: str) -> int:
    floors = [
        (i, prefix)
        for i, names in enumerate(FLOORS)
        for prefix in names
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert floors, f"{module} is on no floor"
    return max(floors, key=lambda f: len(f[1]))[0]  # the longest prefix names it


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_point_down_the_floors(module: str) -> None:
    here = _floor(module)
    names = {n for n in _imports(_modules()[module]) if n.startswith("weak_bpf.")}
    packages = {n.rsplit(".", 1)[0] if n not in _modules() else n for n in names}
    upward = sorted(n for n in packages if n in _modules() and _floor(n) < here)
    assert not upward, f"{module} (floor {here}) imports from above: {upward}"


def test_only_the_dbus_service_imports_pydbus_or_gi() -> None:
    for module, tree in _modules().items():
        if module not in GI_USERS:
            bad = {n for n in _imports(tree) if n.split(".")[0] in ("pydbus", "gi", "dasbus")}
            assert not bad, f"{module} imports {sorted(bad)}"
