"""The use cases on an example root: the results cache is invisible except in speed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from weak_bpf import ops, report
from weak_bpf.cache import CACHE_DIR

import exampleroot


@pytest.fixture
def root(tmp_path: Path, debian_kernels: dict[str, Path]) -> Path:
    root = tmp_path / "root"
    exampleroot.build_example_root(root, debian_kernels)
    return root


def _doc(root: Path, *, cache: bool = True) -> dict[str, object]:
    return report.audit_json(ops.audit(root, cache=cache))


def test_warm_audit_equals_cold(root: Path) -> None:
    cold = _doc(root)
    results = sorted((root / CACHE_DIR).glob("results-*.json"))
    assert len(results) == 2  # one per kernel
    assert _doc(root) == cold


def test_a_replaced_object_is_checked_again(root: Path) -> None:
    before = _doc(root)
    # the proprietary agent's package is "fixed": its object is now the GPL exec_state one
    target = root / "usr/lib/bpf/acme-sec/task_guard.bpf.o"
    shutil.copyfile(root / "usr/lib/bpf/acme-trace/exec_state.bpf.o", target)
    after = _doc(root)
    verdicts = {
        doc_name: [
            r["verdict"]
            for p in doc["programs"]  # type: ignore[attr-defined]
            if p["path"].endswith("task_guard.bpf.o")
            for r in p["results"].values()
        ]
        for doc_name, doc in (("before", before), ("after", after))
    }
    assert verdicts == {"before": ["incompatible"] * 2, "after": ["compatible"] * 2}


def test_a_damaged_cache_is_ignored(root: Path) -> None:
    cold = _doc(root)
    for entry in (root / CACHE_DIR).iterdir():
        entry.write_bytes(b"\x00garbage")
    assert _doc(root) == cold


def test_without_cache_nothing_is_written(root: Path) -> None:
    _doc(root, cache=False)
    assert not (root / CACHE_DIR).exists()
