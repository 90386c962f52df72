"""Kill -9 during add-kernel, at every filesystem step it takes: afterwards the kernel's link set
is the old one or the new one, never a mix, and a rerun completes. The kill is injected with
WEAK_BPF_FAULT_STEP=N (weak_bpf/apply/writer.py): the process SIGKILLs itself at its Nth step."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from weak_bpf.apply.writer import current_links

import exampleroot
from conftest import REPO
from exampleroot import copy_root

NEW = "6.1.0-56-cloud-amd64"
MAX_STEPS = 200


def add_kernel(root: Path, step: int = 0) -> int:
    env = {**os.environ, "WEAK_BPF_FAULT_STEP": str(step)}
    return subprocess.run(
        [sys.executable, "-m", "weak_bpf", "--root", str(root), "--no-journal", "add-kernel", NEW],
        cwd=REPO,
        env=env,
        capture_output=True,
        check=False,
    ).returncode


@pytest.fixture(scope="module")
def before(tmp_path_factory: pytest.TempPathFactory, debian_kernels: dict[str, Path]) -> Path:
    """A root whose kernel has a link set, and whose programs then changed: one went, one came,
    and an admin's file sits in weak-updates."""
    root = tmp_path_factory.mktemp("crash") / "root"
    exampleroot.build_example_root(root, debian_kernels)
    assert add_kernel(root) == 0
    (root / "usr/lib/bpf/acme-trace/open_count.bpf.o").unlink()
    new = root / "usr/lib/bpf/acme-new/exec2.bpf.o"
    new.parent.mkdir(parents=True)
    shutil.copyfile(root / "usr/lib/bpf/acme-trace/exec_state.bpf.o", new)
    wu = root / "usr/lib/modules" / NEW / "bpf/weak-updates"
    (wu / "admin.txt").write_text("mine")
    return root


def test_every_crash_leaves_the_old_or_the_new_link_set(before: Path, tmp_path: Path) -> None:
    old = current_links(before, NEW)
    reference = tmp_path / "reference"
    copy_root(before, reference)
    assert add_kernel(reference) == 0
    new = current_links(reference, NEW)
    assert old != new
    outcomes = {"old": 0, "new": 0}
    for step in range(1, MAX_STEPS + 1):
        root = tmp_path / f"run{step}"
        copy_root(before, root)
        status = add_kernel(root, step)
        state = current_links(root, NEW)
        assert state in (old, new), f"step {step}: a mixed link set {state}"
        assert (root / "usr/lib/modules" / NEW / "bpf/weak-updates/admin.txt").read_text() == "mine"
        if status == 0:  # finished before reaching the step: every step has been tried
            assert state == new
            break
        assert status == -signal.SIGKILL, f"step {step}: exit {status}"
        outcomes["old" if state == old else "new"] += 1
        assert add_kernel(root) == 0, f"step {step}: the rerun failed"
        assert current_links(root, NEW) == new
        shutil.rmtree(root)
    else:
        pytest.fail(f"add-kernel took more than {MAX_STEPS} steps")
    assert outcomes["old"] > 0 and outcomes["new"] > 0, outcomes
