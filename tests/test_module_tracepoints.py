"""BTF tracepoints that a module defines: Debian builds kvm as a module, so the typedef
btf_trace_kvm_exit is in kvm.ko's BTF, not in vmlinux's. libbpf looks there, and so must the
checks: the older Debian kernel, booted under qemu with kvm inserted, loads these programs."""

from __future__ import annotations

from pathlib import Path

import pytest

from weak_bpf import ops
from weak_bpf.model import Outcome, Verdict

import exampleroot
import qemuload
from bpfprogs import compile_source
from conftest import require_tool
from realload import install_programs

OLD = "6.1.0-47-cloud-amd64"
SOURCE = r"""
#include "common.h"

struct kvm_vcpu;
__u64 exits;

SEC("tp_btf/kvm_exit")
int BPF_PROG(kvm_exit_btf, struct kvm_vcpu *vcpu, u32 isa)
{
	exits += isa;
	return 0;
}

SEC("raw_tp/kvm_exit")
int kvm_exit_raw(void *ctx)
{
	exits++;
	return 0;
}

SEC("tp/kvm/kvm_entry")
int kvm_entry_tp(void *ctx)
{
	exits++;
	return 0;
}

SEC("tp_btf/no_such_tracepoint_anywhere")
int BPF_PROG(absent)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="module")
def objects(old_vmlinux: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("module-tp")
    both = compile_source(SOURCE, "kvm_exit", old_vmlinux, work)
    # the same programs without the absent tracepoint: an object that loads
    present = SOURCE.replace(
        'SEC("tp_btf/no_such_tracepoint_anywhere")', "static __attribute__((unused))"
    )
    return {
        "kvm_exit": both,
        "kvm_exit_only": compile_source(present, "kvm_exit_only", old_vmlinux, work),
    }


@pytest.fixture(scope="module")
def audited(
    tmp_path_factory: pytest.TempPathFactory,
    old_kernel: tuple[str, Path],
    objects: dict[str, Path],
) -> ops.AuditReport:
    _, unpacked = old_kernel
    root = tmp_path_factory.mktemp("module-tp-root")
    exampleroot.install_kernel(root, OLD, unpacked)
    install_programs(root, objects)
    return ops.audit(root, [OLD], cache=False)


def test_a_module_tracepoint_is_found_in_the_module(audited: ops.AuditReport) -> None:
    results = {Path(p.program.path).stem: p.results[OLD][0] for p in audited.programs}
    only = results["kvm_exit_only.bpf"]
    assert only.verdict is Verdict.COMPATIBLE, only.reasons
    targets = {c.program: c for c in only.checks if c.subject.startswith("attach target")}
    assert targets["kvm_exit_btf"].detail == (
        "btf_trace_kvm_exit is a BTF tracepoint of module kvm (must be loaded)"
    )
    assert targets["kvm_exit_raw"].outcome is Outcome.PASS
    assert targets["kvm_entry_tp"].detail == (
        "kvm/kvm_entry is a tracepoint of module kvm (must be loaded)"
    )
    assert "kvm" in only.modules
    # the arguments are read from the module's prototype of the tracepoint
    [args] = [c for c in only.checks if c.subject.startswith("arguments of")]
    assert args.outcome is Outcome.PASS and args.detail.endswith(
        "prototype has: kvm_exit(struct kvm_vcpu *, u32)"
    )
    # a tracepoint that no module defines is still absent
    both = results["kvm_exit.bpf"]
    assert both.verdict is Verdict.INCOMPATIBLE
    assert [(r.code.value, r.symbol) for r in both.reasons] == [
        ("attach-target", "btf_trace_no_such_tracepoint_anywhere")
    ]


def test_the_kernel_loads_it_once_the_module_is_in(
    old_kernel: tuple[str, Path], objects: dict[str, Path], audited: ops.AuditReport
) -> None:
    require_tool("qemu-system-x86_64")
    _, unpacked = old_kernel
    report = qemuload.boot_and_load(
        unpacked / f"boot/vmlinuz-{OLD}",
        unpacked / "lib/modules" / OLD,
        objects,
        modules_to_load=("kvm",),
    )
    assert [(m, rc) for m, rc, _ in report.modules if m == "kvm"] == [("kvm", 0)], report.modules
    loaded = {r.name: r.loaded for r in report.results}
    usable = {
        Path(p.program.path).stem[: -len(".bpf")]: p.results[OLD][0].verdict.usable
        for p in audited.programs
    }
    assert loaded == usable == {"kvm_exit": False, "kvm_exit_only": True}, report.results
