"""Example roots for tests that change them: one built per module, a fresh copy per test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import exampleroot


def copy_file(src: str, dst: str) -> None:
    """Hard-link what no test writes (kernel modules and images), copy the rest."""
    if "/kernel/" in src or src.endswith(("vmlinuz", "symvers.gz", "System.map", "config")):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def copy_root(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True, copy_function=copy_file)
    return dst


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, debian_kernels: dict[str, Path]) -> Path:
    """The example root: both Debian kernels and the example programs. Never change it."""
    root = tmp_path_factory.mktemp("pristine") / "root"
    exampleroot.build_example_root(root, debian_kernels)
    return root


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the example root, for one test to change."""
    return copy_root(pristine, tmp_path / "root")
