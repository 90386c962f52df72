"""The matrix: every C test program, built against the older Debian kernel as packages are, on
the two real Debian kernels and the running kernel. Verdicts must match what the kernels really
do: the Debian kernels are booted under qemu and load every program (tests/qemuload.py); the
running kernel's loads are in tests/test_engine.py. Programs named break_* break on the newer
Debian kernel through real differences found by diffing the two kernels' BTF."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest

from weak_bpf import cli, ops
from weak_bpf.model import Verdict

import exampleroot
import qemuload
from conftest import REPO, require, require_tool
from realload import SYSFS_BTF, install_programs, install_running_kernel

OLD, NEW = "6.1.0-47-cloud-amd64", "6.1.0-56-cloud-amd64"
RUNNING = platform.release()
GOLDEN = REPO / "tests" / "golden"
REGENERATE = os.environ.get("WEAK_BPF_REGENERATE_GOLDEN") == "1"

C, U, INC, UNSTABLE = "compatible", "unknown", "incompatible", "compatible-unstable"
# program -> {kernel: (verdict, reason codes)}; what the kernels' data says, derived by hand.
EXPECTED: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "break_field": {OLD: (C, ()), NEW: (INC, ("core-relo",))},
    "break_field_guarded": {OLD: (C, ()), NEW: (C, ())},
    "break_attach": {OLD: (C, ()), NEW: (INC, ("attach-target",))},
    "break_enum": {OLD: (C, ()), NEW: (INC, ("core-relo",))},
    "core_guards": {OLD: (C, ()), NEW: (C, ()), RUNNING: (C, ())},
    "kfunc_task": {OLD: (INC, ("kfunc-missing",)), RUNNING: (C, ())},
    "kfunc_weak": {OLD: (C, ()), NEW: (C, ()), RUNNING: (C, ())},
    "kfunc_weak_unguarded": {OLD: (INC, ("kfunc-missing",)), RUNNING: (C, ())},
    # found by review: a plain kernel function is no kfunc; 6.1's verifier refuses a kfunc
    # address in ld_imm64, and nothing in 6.1's BTF says so
    "kfunc_not_registered": {OLD: (INC, ("kfunc-missing",)), RUNNING: (INC, ("kfunc-missing",))},
    "kfunc_exists_present": {OLD: (U, ("kernel-data-missing",)), RUNNING: (C, ())},
    "kfunc_module_ct": {OLD: (C, ()), NEW: (C, ())},
    "proprietary_kfunc": {OLD: (INC, ("license",)), RUNNING: (INC, ("license",))},
    "proprietary_plain": {OLD: (C, ()), RUNNING: (C, ())},
    # Debian's System.map is a placeholder: a typeless ksym cannot be checked there
    "ksyms": {OLD: (U, ("kernel-data-missing",)), RUNNING: (INC, ("ksym-missing",))},
    # no kABI stablelist on Debian: greylisted symbols are off the stablelist
    "greylist": {OLD: (UNSTABLE, ()), RUNNING: (UNSTABLE, ())},
    # sidecar greylists with real symvers entries of the older kernel (GREYLISTS below)
    "greylist_crc": {OLD: (UNSTABLE, ()), NEW: (INC, ("crc-mismatch",))},
    "greylist_gone": {OLD: (UNSTABLE, ()), NEW: (INC, ("symbol-missing",))},
}
# Greylists are the vendor's declaration, checked by policy: the kernel itself never reads them,
# so a program that fails only these checks still loads.
GREYLIST_CODES = {"crc-mismatch", "symbol-missing"}
# The fewest programs whose verdict must be compared with a real load on each Debian kernel: the
# EXPECTED entries of that kernel with a verdict other than unknown and not only greylist codes
# (OLD: all but kfunc_exists_present and ksyms; NEW: the break_* four, core_guards, kfunc_weak,
# kfunc_module_ct). The programs outside EXPECTED come on top.
MIN_COMPARED = {OLD: 16, NEW: 7}
GREYLISTS = {
    # I_BDEV's CRC changed from 6.1.0-47 to 6.1.0-56
    "greylist_crc": f"# build-kernel: {OLD}\n0xcbbb7132\tI_BDEV\tvmlinux\tEXPORT_SYMBOL\n",
    # __skb_get_hash left both symvers and BTF in 6.1.0-56
    "greylist_gone": f"# build-kernel: {OLD}\n0xb0462c83\t__skb_get_hash\tvmlinux\tEXPORT_SYMBOL\n",
}


@pytest.fixture(scope="module")
def programs(old_progs: dict[str, Path]) -> dict[str, Path]:
    """The test programs, plus copies of `net` that ship the sidecar greylists above."""
    return {**old_progs, **{name: old_progs["net"] for name in GREYLISTS}}


@pytest.fixture(scope="module")
def matrix_root(
    tmp_path_factory: pytest.TempPathFactory,
    debian_kernels: dict[str, Path],
    programs: dict[str, Path],
) -> Path:
    root = tmp_path_factory.mktemp("matrix") / "root"
    for kver, unpacked in debian_kernels.items():
        exampleroot.install_kernel(root, kver, unpacked)
    if SYSFS_BTF.exists():
        install_running_kernel(root, RUNNING)
    install_programs(root, programs)
    for name, text in GREYLISTS.items():
        (root / "usr/lib/bpf/tests" / f"{name}.bpf.o.greylist").write_text(text)
    return root


@pytest.fixture(scope="module")
def matrix(matrix_root: Path) -> dict[str, dict[str, ops.ProgramAudit]]:
    report = ops.audit(matrix_root)
    return {
        Path(p.program.path).name[: -len(".bpf.o")]: p  # type: ignore[misc]
        for p in report.programs
    }


@pytest.mark.parametrize("program", sorted(EXPECTED))
def test_expected_verdicts(program: str, matrix: dict[str, ops.ProgramAudit]) -> None:
    audit = matrix[program]
    running_missing = False
    for kver, (verdict, codes) in EXPECTED[program].items():
        if kver not in audit.results:
            # only the running kernel may be absent, and only when it has no sysfs BTF
            assert kver == RUNNING and not SYSFS_BTF.exists(), f"{program}: no result on {kver}"
            running_missing = True
            continue
        result = audit.results[kver][0]
        got = (result.verdict.value, tuple(sorted({r.code.value for r in result.reasons})))
        assert got == (verdict, codes), f"{program} on {kver}: {result.reasons}"
    require(not running_missing, "the running kernel has no sysfs BTF")


@pytest.mark.parametrize("kver", [OLD, NEW])
def test_debian_verdicts_agree_with_real_loads(
    kver: str,
    matrix: dict[str, ops.ProgramAudit],
    debian_kernels: dict[str, Path],
    programs: dict[str, Path],
) -> None:
    """Boot the kernel, load every program: no verdict may disagree, and no false compatible."""
    require_tool("qemu-system-x86_64")
    unpacked = debian_kernels[kver]
    loads = qemuload.load_on_kernel(
        unpacked / f"boot/vmlinuz-{kver}", unpacked / "lib/modules" / kver, programs
    )
    lines, wrong, compared = [], 0, 0
    for name, audit in sorted(matrix.items()):
        result = audit.results[kver][0]
        loaded = loads[name].loaded
        lines.append(f"{name}: {result.verdict.value}, real load {'ok' if loaded else 'failed'}")
        codes = {r.code.value for r in result.reasons}
        if result.verdict is Verdict.UNKNOWN:
            assert codes == {"kernel-data-missing"}, (name, result.reasons)
            continue
        if codes and codes <= GREYLIST_CODES:
            assert loaded, f"{name}: {loads[name].log}"
            continue
        compared += 1
        if result.verdict.usable != loaded:
            wrong += 1
            lines.append(f"  reasons {result.reasons}\n  log {loads[name].log[-1200:]}")
    assert wrong == 0, "\n".join(lines)
    # an audit that says unknown or greylist-only everywhere must not pass for an agreement
    assert compared >= MIN_COMPARED[kver], f"only {compared} compared\n" + "\n".join(lines)


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGENERATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with WEAK_BPF_REGENERATE_GOLDEN=1"
    assert text == path.read_text()


def test_golden_audit_json(matrix_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["--root", str(matrix_root), "audit", "--json", OLD, NEW])
    out = capsys.readouterr().out
    assert status == cli.Exit.FINDINGS
    doc = json.loads(out)
    doc["root"] = "<root>"
    _golden("audit.json", json.dumps(doc, indent=2) + "\n")


def test_golden_explain(matrix_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("break_field", "kfunc_module_ct"):
        path = f"usr/lib/bpf/tests/{name}.bpf.o"
        assert cli.main(["--root", str(matrix_root), "explain", path, OLD, NEW]) == cli.Exit.OK
        _golden(f"explain-{name}.txt", capsys.readouterr().out)
