"""Branches of the checks that no real kernel here exercises, on kernels with made-up BTF: a
real program (compiled from tests/progs) against hand-built kernel facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from weak_bpf.engine.checks import check_object
from weak_bpf.model import KernelFacts, Outcome, ReasonCode, Verdict
from weak_bpf.parsers.bpfobject import read_bpf_object
from weak_bpf.parsers.btf import Kind
from weak_bpf.parsers.greylist import parse_greylist
from weak_bpf.parsers.kabi import parse_kabi_list
from weak_bpf.parsers.objvalues import BpfObject
from weak_bpf.parsers.symvers import parse_symvers

from btfbuilder import Builder


@pytest.fixture(scope="module")
def kfunc_task(old_progs: dict[str, Path]) -> BpfObject:
    """Calls bpf_task_acquire(struct task_struct *) and bpf_task_release(struct task_struct *)."""
    return read_bpf_object(old_progs["kfunc_task"].read_bytes())


def kernel(build: Builder) -> KernelFacts:
    return KernelFacts("9.9.9-test", vmlinux=build.btf())


def task_kernel(
    *, params: int = 1, tagged: bool | None = True, in_btf_ids: bool | None = None
) -> KernelFacts:
    """A kernel whose bpf_task_acquire takes `params` task pointers. `tagged`: whether its BTF
    tags kfuncs at all (None) and this one (True); `in_btf_ids`, for untagged BTF: whether
    vmlinux's .BTF_ids holds the kfuncs' ids (None: no .BTF_ids known)."""
    b = Builder()
    task = b.ptr(b.struct("task_struct", members=(("pid", b.int_(), 0),)))
    acquire = b.func("bpf_task_acquire", b.proto(task, *[task] * params))
    release = b.func("bpf_task_release", b.proto(0, task))
    b.struct("trace_event_raw_task_newtask")
    b.mod(Kind.TYPEDEF, b.ptr(b.proto(0)), "btf_trace_task_newtask")
    if tagged is not None:
        b.decl_tag("bpf_kfunc", release)
        if tagged:
            b.decl_tag("bpf_kfunc", acquire)
    facts = kernel(b)
    if in_btf_ids is not None:
        facts.set_fact("vmlinux_btf_ids", frozenset({acquire, release} if in_btf_ids else ()))
    return facts


def failures(obj: BpfObject, facts: KernelFacts) -> list[tuple[str, str]]:
    result = check_object(obj, None, facts)
    return [
        (c.code.value, c.detail)
        for c in result.checks
        if c.outcome in (Outcome.FAIL, Outcome.UNDECIDED) and c.code is not None
    ]


def test_matching_kernel_is_compatible(kfunc_task: BpfObject) -> None:
    assert check_object(kfunc_task, None, task_kernel()).verdict is Verdict.COMPATIBLE


def test_more_than_five_arguments(kfunc_task: BpfObject) -> None:
    got = failures(kfunc_task, task_kernel(params=6))
    assert got == [
        ("kfunc-proto", "found in vmlinux, but it takes 6 arguments; BPF passes at most 5")
    ]


def test_prototype_change(kfunc_task: BpfObject) -> None:
    [(code, detail)] = failures(kfunc_task, task_kernel(params=2))
    assert code == "kfunc-proto" and "prototype is incompatible" in detail


def test_untagged_function_where_the_kernel_tags_kfuncs(kfunc_task: BpfObject) -> None:
    assert failures(kfunc_task, task_kernel(tagged=True)) == []
    [(code, detail)] = failures(kfunc_task, task_kernel(tagged=False))
    assert code == "kfunc-missing" and "does not tag it as a kfunc" in detail


def test_untagged_kernels_need_the_kfunc_sets(kfunc_task: BpfObject) -> None:
    assert failures(kfunc_task, task_kernel(tagged=None, in_btf_ids=True)) == []
    got = failures(kfunc_task, task_kernel(tagged=None, in_btf_ids=False))
    assert got and all(code == "kfunc-missing" and "plain kernel function" in d for code, d in got)
    result = check_object(kfunc_task, None, task_kernel(tagged=None))
    assert result.verdict is Verdict.UNKNOWN
    assert {r.code for r in result.reasons} == {ReasonCode.KERNEL_DATA_MISSING}
    # why, and what would tell
    for r in result.reasons:
        assert "read from the .BTF_ids of a vmlinux or vmlinuz with the same BTF" in r.detail
        assert "loading the program" in r.detail


def test_no_btf_is_unknown_never_compatible(kfunc_task: BpfObject) -> None:
    facts = KernelFacts("9.9.9-nobtf", problems=["no vmlinux, vmlinuz or sysfs BTF was found"])
    result = check_object(kfunc_task, None, facts)
    assert result.verdict is Verdict.UNKNOWN
    assert [r.code for r in result.reasons] == [ReasonCode.KERNEL_DATA_MISSING]


def test_missing_attach_target(kfunc_task: BpfObject) -> None:
    b = Builder()
    task = b.ptr(b.struct("task_struct", members=(("pid", b.int_(), 0),)))
    b.decl_tag("bpf_kfunc", b.func("bpf_task_acquire", b.proto(task, task)))
    b.decl_tag("bpf_kfunc", b.func("bpf_task_release", b.proto(0, task)))
    got = failures(kfunc_task, kernel(b))
    assert got == [("attach-target", "btf_trace_task_newtask is absent from 9.9.9-test")]


def test_native_programs_keep_their_checks(kfunc_task: BpfObject) -> None:
    result = check_object(kfunc_task, None, task_kernel(params=2), native=True)
    assert result.verdict is Verdict.NATIVE and result.reasons


# --- greylists and the kABI stablelist --------------------------------------------------------


@pytest.fixture(scope="module")
def greylisted(old_progs: dict[str, Path]) -> BpfObject:
    """Calls bpf_lookup_system_key and bpf_key_put, and ships a greylist for them."""
    return read_bpf_object(old_progs["greylist"].read_bytes())


def key_kernel(*, stablelist: tuple[str, ...] | None = None) -> KernelFacts:
    """A tagged kernel with the two key kfuncs, prototypes as in 6.1 (so the same CRCs)."""
    b = Builder()
    key = b.ptr(b.struct("bpf_key"))
    b.decl_tag("bpf_kfunc", b.func("bpf_lookup_system_key", b.proto(key, b.int_("u64", 8))))
    b.decl_tag("bpf_kfunc", b.func("bpf_key_put", b.proto(0, key)))
    b.mod(Kind.TYPEDEF, b.ptr(b.proto(0)), "btf_trace_sched_process_exec")
    facts = kernel(b)
    if stablelist is not None:
        kabi = parse_kabi_list(
            ("[rhel9_x86_64_stablelist]\n" + "".join(f"\t{s}\n" for s in stablelist)).encode()
        )
        facts.set_fact("kabi", kabi)
    return facts


def test_greylisted_symbols_off_the_stablelist_are_unstable(greylisted: BpfObject) -> None:
    result = check_object(greylisted, parse_greylist(greylisted.greylist or b""), key_kernel())
    assert result.verdict is Verdict.COMPATIBLE_UNSTABLE
    assert sorted(result.unstable_symbols) == ["bpf_key_put", "bpf_lookup_system_key"]


def test_greylisted_symbols_on_the_stablelist_are_compatible(greylisted: BpfObject) -> None:
    facts = key_kernel(stablelist=("bpf_key_put", "bpf_lookup_system_key"))
    result = check_object(greylisted, parse_greylist(greylisted.greylist or b""), facts)
    assert result.verdict is Verdict.COMPATIBLE
    partly = key_kernel(stablelist=("bpf_key_put",))
    result = check_object(greylisted, parse_greylist(greylisted.greylist or b""), partly)
    assert result.unstable_symbols == ("bpf_lookup_system_key",)


def test_a_changed_crc_and_an_obsolete_export_type(greylisted: BpfObject) -> None:
    greylist = parse_greylist(
        b"0x12345678\tbpf_lookup_system_key\tvmlinux\tEXPORT_SYMBOL_BPF_GPL\n"
        b"0x8b737d5b\tbpf_key_put\tvmlinux\tEXPORT_SYMBOL_GPL_FUTURE\n"
    )
    result = check_object(greylisted, greylist, key_kernel())
    assert [(r.code.value, r.symbol) for r in result.reasons] == [
        ("crc-mismatch", "bpf_lookup_system_key")
    ]
    [reason] = result.reasons
    assert "0x12345678 in the greylist, 0xe1c9c661 in the BTF signature" in reason.detail
    notes = [c for c in result.checks if c.outcome is Outcome.NOTE and c.area.value == "greylist"]
    assert [n.symbol for n in notes] == ["bpf_key_put"]
    assert "obsolete" in notes[0].detail


def test_a_kernel_with_symvers_but_no_btf(greylisted: BpfObject) -> None:
    """The greylist is checked against symvers; what is not there is unknown, not a crash."""
    facts = KernelFacts("9.9.9-symvers-only")
    facts.set_fact(
        "symvers", parse_symvers(b"0x8b737d5b\tbpf_key_put\tvmlinux\tEXPORT_SYMBOL_BPF_GPL\n")
    )
    result = check_object(greylisted, parse_greylist(greylisted.greylist or b""), facts)
    assert result.verdict is Verdict.UNKNOWN
    assert {r.code for r in result.reasons} == {ReasonCode.KERNEL_DATA_MISSING}
