"""Shared fixtures. Tests use real tools and real kernels; in CI (CI=true) a missing one fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"

# scripts/ holds the build helpers shared by the demo and the tests.
sys.path.insert(0, str(REPO / "scripts"))

pytest_plugins = ("bpfprogs", "roots")


def require(condition: object, why: str) -> None:
    """Skip when `condition` is false; in CI, fail instead: CI must run every test."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required in CI: {why}")
        pytest.skip(why)


def require_tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    require(path, f"{name} is not installed (scripts/install-deps installs it)")
    assert path is not None
    return path


def require_root() -> None:
    require(os.geteuid() == 0, "needs root")


def audit_json(root: Path) -> dict[str, Any]:
    """`weak-bpf-progs --root ROOT audit --json`, run as a command, its report read."""
    proc = subprocess.run(
        [sys.executable, "-m", "weak_bpf", "--root", str(root), "--no-journal", "audit", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: something is incompatible or unknown
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


@pytest.fixture(scope="session")
def debian_kernels() -> dict[str, Path]:
    """The two real Debian cloud kernels: {kver: dir with boot/, lib/modules/, usr/src/}."""
    proc = subprocess.run(
        [str(REPO / "scripts" / "fetch-debian-kernels")],
        capture_output=True,
        text=True,
        check=False,
    )
    require(proc.returncode == 0, f"cannot fetch the Debian kernels: {proc.stderr.strip()}")
    kernels = {}
    for line in proc.stdout.splitlines():
        kver, path = line.split("\t")
        kernels[kver] = Path(path)
    return kernels


@pytest.fixture(scope="session")
def old_kernel(debian_kernels: dict[str, Path]) -> tuple[str, Path]:
    kver = min(debian_kernels)
    return kver, debian_kernels[kver]


@pytest.fixture(scope="session")
def new_kernel(debian_kernels: dict[str, Path]) -> tuple[str, Path]:
    kver = max(debian_kernels)
    return kver, debian_kernels[kver]
