"""The compatibility engine against the truth: real loads on the running kernel, and the facts of
the two real Debian kernels, for the C test programs built against the older Debian kernel (as
packages are built in real life)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

from weak_bpf import ops
from weak_bpf.model import Verdict
from weak_bpf.parsers.bpfobject import read_bpf_object
from weak_bpf.parsers.sections import AttachType, ProgType

from conftest import require
from realload import SYSFS_BTF, install_programs, install_running_kernel, load_running

RUNNING = platform.release()
# The host refuses every fentry/fexit/fmod_ret/lsm program with EPERM, whatever it holds: a host
# policy, not ABI. Those are checked on the Debian kernels, booted under qemu.
HOST_REFUSED = (AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT, AttachType.MODIFY_RETURN)


@pytest.fixture(scope="module")
def running_root(tmp_path_factory: pytest.TempPathFactory, old_progs: dict[str, Path]) -> Path:
    """A root holding the running kernel (its sysfs BTF and kallsyms) and the test programs."""
    require(SYSFS_BTF.exists(), "the running kernel has no /sys/kernel/btf/vmlinux")
    root = tmp_path_factory.mktemp("running") / "root"
    install_running_kernel(root, RUNNING)
    install_programs(root, old_progs)
    return root


@pytest.fixture(scope="module")
def running_audit(running_root: Path) -> ops.AuditReport:
    return ops.audit(running_root, [RUNNING], cache=False)


def _testable_on_host(obj_path: Path) -> bool:
    obj = read_bpf_object(obj_path.read_bytes())
    return not any(
        p.info.prog_type is ProgType.LSM or p.info.attach_type in HOST_REFUSED for p in obj.programs
    )


def test_verdicts_agree_with_real_loads_on_the_running_kernel(
    running_audit: ops.AuditReport, old_progs: dict[str, Path]
) -> None:
    require(os.geteuid() == 0, "real loads need root")
    compared = disagreements = 0
    table = []
    for p in running_audit.programs:
        name = Path(p.program.path).name[: -len(".bpf.o")]
        result, _ = p.results[RUNNING]
        if not _testable_on_host(old_progs[name]):
            continue
        load = load_running(old_progs[name], name)
        predicted = result.verdict.usable
        compared += 1
        table.append(
            f"{name}: predicted {result.verdict.value}, load {'ok' if load.ok else 'failed'}"
        )
        assert result.verdict is not Verdict.UNKNOWN, f"{name}: {result.reasons}"
        if predicted != load.ok:
            disagreements += 1
            table.append(f"  reasons: {result.reasons}\n  log: {load.log[-1500:]}")
    assert compared >= 10, table
    assert disagreements == 0, "\n".join(table)
