"""Reachability under resolved existence constants: real CO-RE and weak-kfunc programs built
against Debian's 6.1 kernel, and hand-assembled instruction sequences for every branch form."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import uuid
from pathlib import Path

import pytest

from weak_bpf.engine.reachability import (
    NONZERO,
    Known,
    KnownValue,
    poisoned_reachable,
    reachability,
)
from weak_bpf.parsers.bpfobject import read_bpf_object
from weak_bpf.parsers.btfext import CoreReloKind
from weak_bpf.parsers.insn import Insn, JmpOp, decode
from weak_bpf.parsers.objvalues import BpfObject, CoreReloSite, Function, SubprogCall
from weak_bpf.parsers.sections import section_info

from bpfprogs import bpf_compiler, old_progs, old_vmlinux  # noqa: F401
from conftest import require_root, require_tool

# --- a tiny assembler ------------------------------------------------------------------------


def mov(dst: int, imm: int) -> Insn:
    return Insn(0xB7, dst, 0, 0, imm)


def mov32(dst: int, imm: int) -> Insn:
    return Insn(0xB4, dst, 0, 0, imm)


def movx(dst: int, src: int) -> Insn:
    return Insn(0xBF, dst, src, 0, 0)


def movx32(dst: int, src: int) -> Insn:
    return Insn(0xBC, dst, src, 0, 0)


def add(dst: int, imm: int) -> Insn:
    return Insn(0x07, dst, 0, 0, imm)


def ld64(dst: int, value: int) -> list[Insn]:
    value &= (1 << 64) - 1
    lo, hi = value & 0xFFFFFFFF, value >> 32
    signed = [v - (1 << 32) if v >> 31 else v for v in (lo, hi)]
    return [Insn(0x18, dst, 0, 0, signed[0]), Insn(0, 0, 0, 0, signed[1])]


def jmp(op: int, dst: int, operand: int, off: int, *, x: bool = False, j32: bool = False) -> Insn:
    code = op | (0x06 if j32 else 0x05) | (0x08 if x else 0)
    return Insn(code, dst, operand if x else 0, off, 0 if x else operand)


def goto(off: int) -> Insn:
    return Insn(0x05, 0, 0, off, 0)


def ldx(dst: int, src: int) -> Insn:
    return Insn(0x79, dst, src, 0, 0)


def call_helper(helper_id: int) -> Insn:
    return Insn(0x85, 0, 0, 0, helper_id)


EXIT = Insn(0x95, 0, 0, 0, 0)
SEC = "tp/test"
NOTHING: dict[int, KnownValue] = {}  # no constant known


def function(
    name: str, section: str, start: int, insns: list[Insn], calls: tuple[SubprogCall, ...] = ()
) -> Function:
    return Function(
        name=name,
        section=section,
        offset=start * 8,
        size=len(insns) * 8,
        is_global=section != ".text",
        info=section_info(section),
        instructions=tuple(insns),
        helper_ids=frozenset(),
        kfunc_calls=(),
        extern_refs=(),
        subprog_calls=calls,
    )


def make_obj(
    prog: list[Insn],
    subprogs: tuple[Function, ...] = (),
    calls: tuple[SubprogCall, ...] = (),
    patched: tuple[int, ...] = (),
) -> tuple[BpfObject, Function]:
    """A one-program object; `patched` slots carry a CO-RE existence relocation."""
    program = function("prog", SEC, 0, prog, calls)
    relos = tuple(
        CoreReloSite(CoreReloKind.FIELD_EXISTS, 1, "t", "0:0", SEC, i, "prog", "prog")
        for i in patched
    )
    obj = BpfObject(
        source=None,
        byteorder="little",
        license="GPL",
        kernel_version=None,
        programs=(program,),
        subprograms=subprogs,
        maps=(),
        data_sections=(),
        ksyms=(),
        kconfig=(),
        extern_problems=(),
        relocations=(),
        core_relos=relos,
        btf=None,
        btf_ext=None,
        greylist=None,
    )
    return obj, program


def reached(obj: BpfObject, program: Function, known: Known) -> set[int]:
    result = reachability(obj, program, known)
    assert result.decided, result.undecidable
    return {index for section, index in result.reachable if section == SEC}


# --- every conditional jump, JMP and JMP32, K and X sources ------------------------------------

U64 = (1 << 64) - 1
CASES = [
    # op, left (64-bit), right (32-bit immediate, sign-extended), jmp32, taken
    (JmpOp.JEQ, 5, 5, False, True),
    (JmpOp.JEQ, 5, 6, False, False),
    (JmpOp.JNE, 5, 6, False, True),
    (JmpOp.JNE, 5, 5, False, False),
    (JmpOp.JGT, -1, 1, False, True),
    (JmpOp.JGT, 1, 1, False, False),
    (JmpOp.JGE, 1, 1, False, True),
    (JmpOp.JGE, 0, 1, False, False),
    (JmpOp.JLT, 1, 2, False, True),
    (JmpOp.JLT, -1, 2, False, False),
    (JmpOp.JLE, 2, 2, False, True),
    (JmpOp.JLE, 3, 2, False, False),
    (JmpOp.JSGT, 1, -1, False, True),
    (JmpOp.JSGT, -1, 1, False, False),
    (JmpOp.JSGE, -1, -1, False, True),
    (JmpOp.JSGE, -2, -1, False, False),
    (JmpOp.JSLT, -2, -1, False, True),
    (JmpOp.JSLT, 1, -1, False, False),
    (JmpOp.JSLE, -1, -1, False, True),
    (JmpOp.JSLE, 0, -1, False, False),
    (JmpOp.JSET, 6, 2, False, True),
    (JmpOp.JSET, 6, 1, False, False),
    (JmpOp.JSET, 1 << 32, -1, False, True),
    # JMP32 looks only at the low halves
    (JmpOp.JSET, 1 << 32, -1, True, False),
    (JmpOp.JEQ, (1 << 32) + 5, 5, True, True),
    (JmpOp.JEQ, (1 << 32) + 5, 5, False, False),
    (JmpOp.JNE, (1 << 32) + 5, 5, True, False),
    (JmpOp.JGT, 0xFFFFFFFF, 1, True, True),
    (JmpOp.JGE, 1 << 32, 1, True, False),
    (JmpOp.JLT, 1 << 32, 1, True, True),
    (JmpOp.JLE, 0x1FFFFFFFF, 1, True, False),
    (JmpOp.JSGT, 0xFFFFFFFF, 1, True, False),
    (JmpOp.JSGT, 0xFFFFFFFF, 1, False, True),
    (JmpOp.JSGE, 0x80000000, 0, True, False),
    (JmpOp.JSLT, 0x80000000, 0, True, True),
    (JmpOp.JSLE, 0x100000000, 0, True, True),
    (JmpOp.JSLE, 0x100000000, 0, False, False),
]


def branch_prog(op: int, left: int, right: int, j32: bool, x: bool) -> list[Insn]:
    # 0-1: r1 = left; 2: r2 = right; 3: branch to 6; 4-5 fall-through; 6-7 taken
    return [
        *ld64(1, left),
        mov(2, right),
        jmp(op, 1, 2 if x else right, 2, x=x, j32=j32),
        mov(0, 0),
        EXIT,
        mov(0, 1),
        EXIT,
    ]


@pytest.mark.parametrize("x", [False, True], ids=["K", "X"])
@pytest.mark.parametrize("op,left,right,j32,taken", CASES)
def test_every_conditional_jump(  # noqa: PLR0917
    op: int, left: int, right: int, j32: bool, taken: bool, x: bool
) -> None:
    obj, prog = make_obj(branch_prog(op, left, right, j32, x))
    got = reached(obj, prog, NOTHING)
    assert (6 in got, 4 in got) == (taken, not taken)
    assert {0, 2, 3} <= got and 1 not in got  # the second ld_imm64 slot is no instruction


def test_every_op_is_covered() -> None:
    conds = {op for op in JmpOp if op not in (JmpOp.JA, JmpOp.CALL, JmpOp.EXIT, JmpOp.JCOND)}
    for outcome in (False, True):
        assert {c[0] for c in CASES if not c[3] and c[4] == outcome} == conds
    assert {c[0] for c in CASES if c[3]} == conds


@pytest.mark.parametrize("op", [op for op, *_ in CASES])
def test_unknown_operand_keeps_both_branches(op: int) -> None:
    prog = [ldx(1, 10), mov(2, 1), jmp(op, 1, 2, 2, x=True), mov(0, 0), EXIT, mov(0, 1), EXIT]
    obj, program = make_obj(prog)
    assert {3, 4, 5, 6} <= reached(obj, program, NOTHING)


def test_may_goto_keeps_both_branches() -> None:
    prog = [Insn(0xE5, 0, 0, 2, 0), mov(0, 0), EXIT, mov(0, 1), EXIT]
    obj, program = make_obj(prog)
    assert reached(obj, program, NOTHING) == {0, 1, 2, 3, 4}


# --- known constants, nonzero, copies, calls, loops --------------------------------------------

GUARD = [
    mov(1, 1),  # 0: a CO-RE existence check; the object's 1 is a placeholder
    jmp(JmpOp.JEQ, 1, 0, 2),  # 1: if r1 == 0 goto 4
    mov(0, 0),  # 2: guarded
    EXIT,  # 3
    mov(0, 1),  # 4: fallback
    EXIT,  # 5
]


def test_known_constant_decides_and_placeholder_is_ignored() -> None:
    obj, prog = make_obj(GUARD, patched=(0,))
    assert reached(obj, prog, {0: 1}) == {0, 1, 2, 3}
    assert reached(obj, prog, {0: 0}) == {0, 1, 4, 5}
    assert reached(obj, prog, NOTHING) == {0, 1, 2, 3, 4, 5}
    assert reached(obj, prog, {(SEC, 0): 0}) == {0, 1, 4, 5}


def test_nonzero_only_decides_64_bit_equality_with_zero() -> None:
    prog = [*ld64(1, 0), jmp(JmpOp.JEQ, 1, 0, 2), mov(0, 0), EXIT, mov(0, 1), EXIT]
    obj, program = make_obj(prog, patched=(0,))
    assert reached(obj, program, {0: NONZERO}) == {0, 2, 3, 4}
    assert reached(obj, program, {0: 0}) == {0, 2, 5, 6}
    for op, j32 in [(JmpOp.JEQ, True), (JmpOp.JGT, False), (JmpOp.JSET, False)]:
        prog[2] = jmp(op, 1, 0, 2, j32=j32)
        obj, program = make_obj(prog, patched=(0,))
        assert reached(obj, program, {0: NONZERO}) == {0, 2, 3, 4, 5, 6}, (op, j32)


def test_constant_flows_through_copies() -> None:
    prog = [mov(1, 1), movx(3, 1), movx32(4, 3), jmp(JmpOp.JNE, 4, 0, 2), mov(0, 0), EXIT]
    prog += [mov(0, 1), EXIT]
    obj, program = make_obj(prog, patched=(0,))
    assert reached(obj, program, {0: 0}) == {0, 1, 2, 3, 4, 5}
    assert reached(obj, program, {0: 1}) == {0, 1, 2, 3, 6, 7}


def test_alu_on_constants() -> None:
    # r1 = known; r1 += 1; r1 <<= 4  ->  if r1 == 16 goto taken
    prog = [mov(1, 0), add(1, 1), Insn(0x67, 1, 0, 0, 4), jmp(JmpOp.JEQ, 1, 16, 2)]
    prog += [mov(0, 0), EXIT, mov(0, 1), EXIT]
    obj, program = make_obj(prog, patched=(0,))
    assert reached(obj, program, {0: 0}) == {0, 1, 2, 3, 6, 7}
    assert reached(obj, program, {0: 1}) == {0, 1, 2, 3, 4, 5}


def test_call_clobbers_r0_to_r5_but_not_r6() -> None:
    for reg, pruned in [(1, False), (5, False), (0, False), (6, True), (9, True)]:
        prog = [mov(reg, 0), call_helper(14), jmp(JmpOp.JNE, reg, 0, 2), mov(0, 0), EXIT]
        prog += [mov(0, 1), EXIT]
        obj, program = make_obj(prog, patched=(0,))
        got = reached(obj, program, {0: 0})
        assert (5 not in got) == pruned, reg


def test_stack_fill_is_unknown() -> None:
    prog = [mov(1, 0), Insn(0x7B, 10, 1, -8, 0), ldx(1, 10), jmp(JmpOp.JNE, 1, 0, 2)]
    prog += [mov(0, 0), EXIT, mov(0, 1), EXIT]
    obj, program = make_obj(prog, patched=(0,))
    assert reached(obj, program, {0: 0}) == set(range(8))


def test_loop_reaches_fixpoint() -> None:
    prog = [
        mov(6, 0),  # 0: known existence constant, kept in a callee-saved register
        mov(1, 0),  # 1
        add(1, 1),  # 2: loop body
        call_helper(5),  # 3
        mov(1, 3),  # 4
        jmp(JmpOp.JLT, 1, 10, -4),  # 5: back to 2 (r1 is 3 every time: the loop is infinite)
        jmp(JmpOp.JNE, 6, 0, 2),  # 6
        mov(0, 0),  # 7
        EXIT,  # 8
        mov(0, 1),  # 9: needs r6 != 0
        EXIT,  # 10
    ]
    obj, program = make_obj(prog, patched=(0,))
    knowns: list[dict[int, KnownValue]] = [{}, {0: 0}, {0: 1}]
    for known in knowns:  # 3 < 10: the loop never ends
        assert reached(obj, program, known) == {0, 1, 2, 3, 4, 5}
    prog[4] = add(1, 1)  # r1 is unknown after the call: the loop may end
    obj, program = make_obj(prog, patched=(0,))
    assert reached(obj, program, NOTHING) == set(range(11))
    prog[3] = mov(2, 0)  # no call: r1 counts 1, 2, 3, ... and joins to unknown
    obj, program = make_obj(prog, patched=(0,))
    assert reached(obj, program, {0: 0}) == set(range(9))
    assert reached(obj, program, {0: 1}) == set(range(7)) | {9, 10}


def test_subprograms_reached_only_through_live_calls() -> None:
    sub_a = function("sub_a", ".text", 0, [mov(0, 0), EXIT])
    sub_b = function("sub_b", ".text", 2, [mov(0, 1), EXIT])
    calls = (SubprogCall(SEC, 2, ".text", 0), SubprogCall(SEC, 3, ".text", 2))
    pseudo_call = Insn(0x85, 0, 1, 0, -1)
    prog = [mov(6, 1), jmp(JmpOp.JEQ, 6, 0, 1), pseudo_call, pseudo_call, mov(0, 0), EXIT]
    obj, program = make_obj(prog, (sub_a, sub_b), calls, patched=(0,))
    result = reachability(obj, program, {0: 0})
    assert result.decided
    assert (".text", 0) not in result.reachable and (".text", 1) not in result.reachable
    assert {(".text", 2), (".text", 3), (SEC, 3), (SEC, 4)} <= result.reachable
    assert set(result.functions) == {"prog", "sub_b"}
    assert poisoned_reachable(obj, program, {0: 0}, {(".text", 0), (".text", 3)}) == [(".text", 3)]
    result = reachability(obj, program, {0: 1})
    assert {(".text", 0), (".text", 1), (".text", 2)} <= result.reachable


def test_callback_and_unresolved_call() -> None:
    sub = function("cb", ".text", 0, [mov(0, 0), EXIT])
    prog = [mov(1, 0), jmp(JmpOp.JEQ, 1, 0, 2), *ld64(2, 0), mov(0, 0), EXIT]
    obj, program = make_obj(prog, (sub,), (SubprogCall(SEC, 2, ".text", 0, True),), (0,))
    assert (".text", 0) in reachability(obj, program, {0: 1}).reachable
    assert (".text", 0) not in reachability(obj, program, {0: 0}).reachable
    # a BPF-to-BPF call the object does not resolve: give up rather than guess
    prog[2:4] = [Insn(0x85, 0, 1, 0, 5), mov(0, 0)]
    obj, program = make_obj(prog, (sub,), (), (0,))
    assert not reachability(obj, program, {0: 1}).decided


def test_raw_bytes_and_undecidable() -> None:
    raw = struct.pack("<BBhi", 0xB7, 0x01, 0, 0)  # r1 = 0
    raw += struct.pack("<BBhi", 0x55, 0x01, 1, 0)  # if r1 != 0 goto +1
    raw += struct.pack("<BBhi", 0x95, 0, 0, 0)  # exit
    raw += struct.pack("<BBhi", 0x85, 0, 0, 0xBAD2310)  # poisoned
    raw += struct.pack("<BBhi", 0x95, 0, 0, 0)
    obj, program = make_obj(list(decode(raw, "little")), patched=(0,))
    assert poisoned_reachable(obj, program, {0: 0}, {(SEC, 3)}) == []
    assert poisoned_reachable(obj, program, {0: 7}, {(SEC, 3)}) == [(SEC, 3)]
    assert poisoned_reachable(obj, program, NOTHING, {(SEC, 3)}) == [(SEC, 3)]
    # a jump out of the function: give up, and count every poisoned slot as reachable
    bad = list(decode(raw, "little"))
    bad[1] = jmp(JmpOp.JNE, 1, 0, 40)
    obj, program = make_obj(bad, patched=(0,))
    assert not reachability(obj, program, {0: 0}).decided
    assert poisoned_reachable(obj, program, {0: 0}, {(SEC, 3), ("x", 1)}) == [(SEC, 3)]
    # falling off the end, too
    obj, program = make_obj([mov(0, 0)])
    assert not reachability(obj, program, NOTHING).decided


# --- real programs built against Debian's 6.1 -------------------------------------------------


def relo(obj: BpfObject, kind: CoreReloKind, type_name: str, access: str) -> CoreReloSite:
    sites = [
        r
        for r in obj.core_relos
        if r.kind == kind and r.type_name == type_name and r.access == access
    ]
    assert len(sites) == 1, sites
    return sites[0]


@pytest.fixture(scope="module")
def core_guards(old_progs: dict[str, Path]) -> BpfObject:  # noqa: F811
    return read_bpf_object(old_progs["core_guards"].read_bytes())


def test_core_guards_prunes_the_dead_field(core_guards: BpfObject) -> None:
    obj = core_guards
    prog = obj.program("fork_guarded")
    has_new_state = relo(obj, CoreReloKind.FIELD_EXISTS, "task_struct___new", "0:0")
    new_read = relo(obj, CoreReloKind.FIELD_BYTE_OFFSET, "task_struct___new", "0:0")
    old_read = relo(obj, CoreReloKind.FIELD_BYTE_OFFSET, "task_struct___old", "0:0")
    sec = prog.section
    poisoned = {(sec, new_read.insn_index), (sec, old_read.insn_index)}

    # 6.1 and 6.18: __state exists, state does not; libbpf poisons the `state` read
    truth = {has_new_state.insn_index: 1}
    result = reachability(obj, prog, truth)
    assert result.decided
    assert (sec, old_read.insn_index) not in result.reachable
    assert (sec, new_read.insn_index) in result.reachable
    assert poisoned_reachable(obj, prog, truth, {(sec, old_read.insn_index)}) == []

    # an old kernel: the opposite
    flipped = {has_new_state.insn_index: 0}
    result = reachability(obj, prog, flipped)
    assert (sec, old_read.insn_index) in result.reachable
    assert (sec, new_read.insn_index) not in result.reachable
    assert poisoned_reachable(obj, prog, flipped, poisoned) == [(sec, old_read.insn_index)]

    # nothing known: every instruction may run
    result = reachability(obj, prog, NOTHING)
    starts = {(sec, i) for i in range(prog.insn_start, prog.insn_end)}
    starts -= {
        (sec, i + 1) for s, i in starts if prog.instructions[i - prog.insn_start].is_ld_imm64
    }
    assert result.reachable == starts
    assert poisoned_reachable(obj, prog, NOTHING, poisoned) == sorted(poisoned)


def test_core_guards_other_existence_checks(core_guards: BpfObject) -> None:
    obj = core_guards
    prog = obj.program("fork_guarded")
    enum_missing = relo(obj, CoreReloKind.ENUMVAL_EXISTS, "bpf_func_id___local", "1")
    type_exists = relo(obj, CoreReloKind.TYPE_EXISTS, "bpf_key___local", "0")
    type_size = relo(obj, CoreReloKind.TYPE_SIZE, "bpf_key___local", "0")
    # the TYPE_SIZE mov sits inside the TYPE_EXISTS guard
    for exists, size_reached in [(0, False), (1, True)]:
        known = {type_exists.insn_index: exists, enum_missing.insn_index: 0}
        result = reachability(obj, prog, known)
        assert ((prog.section, type_size.insn_index) in result.reachable) == size_reached
        # `flags |= 2` is the only `|= 2`, guarded by the missing enum value
        or2 = [
            i
            for i in range(prog.insn_start, prog.insn_end)
            if prog.instructions[i - prog.insn_start] == Insn(0x47, 2, 0, 0, 2)
        ]
        assert len(or2) == 1 and (prog.section, or2[0]) not in result.reachable


def test_weak_kfunc_call_pruned_when_absent(old_progs: dict[str, Path]) -> None:  # noqa: F811
    obj = read_bpf_object(old_progs["kfunc_weak"].read_bytes())
    prog = obj.program("on_newtask_weak")
    (exists_check,) = [r for r in prog.extern_refs if r.name == "bpf_task_acquire"]
    kfunc_sites = {(c.section, c.insn_index) for c in prog.kfunc_calls}
    assert len(kfunc_sites) == 2
    assert poisoned_reachable(obj, prog, {exists_check.insn_index: 0}, kfunc_sites) == []
    present: dict[int, KnownValue] = {exists_check.insn_index: NONZERO}
    for known in (present, NOTHING):
        assert poisoned_reachable(obj, prog, known, kfunc_sites) == sorted(kfunc_sites)


# --- the real loader agrees: poisoned, yet unreachable, so the program loads --------------------

PATCHED = re.compile(r"relo #\d+: patched insn #(\d+) \([^)]*\) imm(?:64)? (-?\d+) -> (-?\d+)")
POISONED = re.compile(r"relo #\d+: substituting insn #(\d+) w/ invalid insn")


def test_real_load_poisoned_but_unreachable(
    core_guards: BpfObject,
    old_progs: dict[str, Path],  # noqa: F811
) -> None:
    require_root()
    bpftool = require_tool("bpftool")
    pin = Path("/sys/fs/bpf") / f"weak_bpf_reach_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        done = subprocess.run(
            [bpftool, "-d", "prog", "loadall", str(old_progs["core_guards"]), str(pin)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        subprocess.run(["rm", "-rf", str(pin)], check=False)
    log = done.stderr + done.stdout
    assert done.returncode == 0, log[-3000:]
    # libbpf's own resolution on the running kernel: the constants and the poisoned slots
    known: dict[int, KnownValue] = {int(m[1]): int(m[3]) for m in PATCHED.finditer(log)}
    poisoned = {int(m[1]) for m in POISONED.finditer(log)}
    prog = core_guards.program("fork_guarded")
    old_read = relo(core_guards, CoreReloKind.FIELD_BYTE_OFFSET, "task_struct___old", "0:0")
    assert poisoned == {old_read.insn_index}, log[-3000:]
    assert len(known) == len(core_guards.core_relos) - 1
    slots = {(prog.section, i) for i in poisoned}
    assert reachability(core_guards, prog, known).decided
    assert poisoned_reachable(core_guards, prog, known, slots) == []
    # without the constants we could not tell: we must not call it safe
    assert poisoned_reachable(core_guards, prog, NOTHING, slots) == sorted(slots)
