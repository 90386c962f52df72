"""Example roots for tests that change them: one built per module, a fresh copy per test."""

from __future__ import annotations

from pathlib import Path

import pytest

import exampleroot
from exampleroot import copy_root


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
