"""Which instructions of a program can run on a kernel, given the constants the kernel resolves.

libbpf poisons an instruction whose CO-RE relocation fails (and leaves an absent `__weak` kfunc
unresolved); the verifier rejects the program only if such an instruction is reachable. Existence
relocations and `bpf_ksym_exists` become constants on a given kernel, and the verifier prunes the
branches they decide. This module does the same with a small abstract interpretation: each register
is a known constant, "nonzero" or unknown, and a conditional jump is pruned only when both operands
are decided. Anything the analysis does not understand keeps both paths alive, so an instruction is
called unreachable only when every path to it is cut by a decided branch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Union

from weak_bpf.parsers.insn import (
    Insn,
    InsnClass,
    JmpOp,
    LdImm64Src,
    instruction_indexes,
    jump_target,
    ld_imm64_value,
)
from weak_bpf.parsers.objvalues import BpfObject, Function

NONZERO = "nonzero"  # a known value: non-zero, exact value unknown (a present ksym's address)

Slot = tuple[str, int]  # (section, instruction index in the section)
KnownValue = Union[int, str]  # an int, or NONZERO
KnownKey = Union[int, Slot]  # a slot of the program's own section, or (section, index)
Known = Union[Mapping[int, KnownValue], Mapping[Slot, KnownValue], Mapping[KnownKey, KnownValue]]

_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()
# A register's abstract value: an unsigned 64-bit int, NONZERO, or UNKNOWN.
Value = Union[int, str, _Unknown]
State = tuple[Value, ...]  # r0..r10

_ENTRY: State = (UNKNOWN,) * 11
_CALL_CLOBBERED = range(6)  # r0-r5


@dataclasses.dataclass(frozen=True)
class Reachability:
    """Result for one program. `undecidable` lists why the analysis gave up (then `reachable`
    is meaningless: treat everything in the program's call graph as reachable)."""

    program: str
    reachable: frozenset[Slot]  # first slots of the instructions that may run
    functions: tuple[str, ...]  # functions (program and subprograms) that may run
    undecidable: tuple[str, ...]

    @property
    def decided(self) -> bool:
        return not self.undecidable

    def is_reachable(self, section: str, insn_index: int) -> bool:
        return bool(self.undecidable) or (section, insn_index) in self.reachable


class _GiveUp(Exception):
    pass


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _join(a: State, b: State) -> State:
    return tuple(x if x == y and type(x) is type(y) else UNKNOWN for x, y in zip(a, b))


def _normalize_known(program: Function, known: Known) -> dict[Slot, Value]:
    out: dict[Slot, Value] = {}
    for key, value in known.items():
        slot = (program.section, key) if isinstance(key, int) else key
        if value == NONZERO:
            out[slot] = NONZERO
        elif isinstance(value, int) and not isinstance(value, bool):
            out[slot] = value & _MASK64
        else:
            raise ValueError(f"known value for {slot} must be an int or {NONZERO!r}: {value!r}")
    return out


def _alu(op: int, dst: int, src: int, bits: int) -> int | None:
    """dst op src on `bits`-wide unsigned operands; None when not modelled."""
    mask = (1 << bits) - 1
    dst &= mask
    src &= mask
    if op == 0x00:
        return (dst + src) & mask
    if op == 0x10:
        return (dst - src) & mask
    if op == 0x20:
        return (dst * src) & mask
    if op == 0x30:
        return dst // src if src else None
    if op == 0x40:
        return dst | src
    if op == 0x50:
        return dst & src
    if op == 0x60:
        return (dst << (src & (bits - 1))) & mask
    if op == 0x70:
        return dst >> (src & (bits - 1))
    if op == 0x80:
        return -dst & mask
    if op == 0x90:
        return dst % src if src else None
    if op == 0xA0:
        return dst ^ src
    if op == 0xB0:
        return src
    if op == 0xC0:
        return (_signed(dst, bits) >> (src & (bits - 1))) & mask
    return None  # 0xd0 byte swap and anything unknown


def _compare(op: int, dst: int, src: int, bits: int) -> bool | None:
    """Whether the conditional jump `op` is taken for two known operands."""
    mask = (1 << bits) - 1
    dst &= mask
    src &= mask
    sdst, ssrc = _signed(dst, bits), _signed(src, bits)
    table = {
        JmpOp.JEQ: dst == src,
        JmpOp.JNE: dst != src,
        JmpOp.JGT: dst > src,
        JmpOp.JGE: dst >= src,
        JmpOp.JLT: dst < src,
        JmpOp.JLE: dst <= src,
        JmpOp.JSGT: sdst > ssrc,
        JmpOp.JSGE: sdst >= ssrc,
        JmpOp.JSLT: sdst < ssrc,
        JmpOp.JSLE: sdst <= ssrc,
        JmpOp.JSET: bool(dst & src),
    }
    return table.get(JmpOp(op)) if op in table else None


def _decide(op: int, dst: Value, src: Value, bits: int) -> bool | None:
    """True/False when the branch is decided, None when both ways are possible."""
    if isinstance(dst, int) and isinstance(src, int):
        return _compare(op, dst, src, bits)
    # "nonzero" is only known on 64 bits (its low half may be zero), and only against 0
    if bits == 64 and op in (JmpOp.JEQ, JmpOp.JNE):
        pair = {dst, src} if not (dst is UNKNOWN or src is UNKNOWN) else set()
        if pair == {NONZERO, 0}:
            return op == JmpOp.JNE
    return None


class _Analysis:
    def __init__(self, obj: BpfObject, program: Function, known: Known) -> None:
        self.obj = obj
        self.program = program
        self.known = _normalize_known(program, known)
        # slots whose immediate the loader rewrites: not what the object file says
        self.patched: set[Slot] = {(r.section, r.insn_index) for r in obj.core_relos}
        self.patched |= {(r.section, r.insn_index) for r in obj.relocations}
        self.states: dict[Slot, State] = {}
        self.functions: dict[str, Function] = {}
        self.todo: list[Slot] = []
        self.starts: dict[tuple[str, str], frozenset[int]] = {}

    def run(self) -> Reachability:
        try:
            self._enter(self.program.section, self.program.insn_start)
            while self.todo:
                slot = self.todo.pop()
                self._step(slot, self.states[slot])
        except _GiveUp as e:
            return Reachability(self.program.name, frozenset(), (), (str(e),))
        return Reachability(self.program.name, frozenset(self.states), tuple(self.functions), ())

    # --- worklist --------------------------------------------------------------------------

    def _function(self, slot: Slot) -> Function:
        func = self.obj.function_at(*slot)
        if func is None:
            raise _GiveUp(f"instruction {slot[1]} of {slot[0]} is in no function")
        if func.name not in self.functions:
            self.functions[func.name] = func
            self._check_jumps(func)
        return func

    def _check_jumps(self, func: Function) -> None:
        """The verifier checks every jump, live or not: so do we, and give up on a bad one."""
        starts = self._starts(func)
        for index in sorted(starts):
            local = index - func.insn_start
            if func.instructions[local].is_jump:
                target = func.insn_start + jump_target(func.instructions, local)
                if target not in starts:
                    raise _GiveUp(
                        f"{func.name}: jump at {index} to {target}, not an instruction of it"
                    )

    def _starts(self, func: Function) -> frozenset[int]:
        key = (func.section, func.name)
        starts = self.starts.get(key)
        if starts is None:
            starts = self.starts[key] = _starts(func)
        return starts

    def _enter(self, section: str, index: int) -> None:
        """A subprogram (or the program) starts at `index` with unknown registers."""
        func = self._function((section, index))
        if index not in self._starts(func):
            raise _GiveUp(f"{func.name}: called at {index}, not an instruction of it")
        self._flow((section, index), _ENTRY)

    def _flow(self, slot: Slot, state: State) -> None:
        old = self.states.get(slot)
        new = state if old is None else _join(old, state)
        if new != old:
            self.states[slot] = new
            self.todo.append(slot)

    def _goto(self, func: Function, section: str, target: int, state: State) -> None:
        if target not in self._starts(func):
            raise _GiveUp(f"{func.name}: jump to {target} is not an instruction of the function")
        self._flow((section, target), state)

    # --- transfer --------------------------------------------------------------------------

    def _step(self, slot: Slot, state: State) -> None:
        section, index = slot
        func = self._function(slot)
        insn = func.instructions[index - func.insn_start]
        regs = list(state)
        cls = insn.code & 0x07
        nxt = index + 1
        if insn.dst > 10 or (insn.uses_reg_source and insn.src > 10 and cls != InsnClass.LD):
            raise _GiveUp(f"{func.name}: bad register at {index}")

        if insn.is_ld_imm64:
            nxt = index + 2
            if nxt > func.insn_end:
                raise _GiveUp(f"{func.name}: truncated ld_imm64 at {index}")
            regs[insn.dst] = self._ld_imm64(func, slot)
            self._callback(slot)
        elif cls == InsnClass.LD:  # legacy packet loads: clobber like a call
            for reg in _CALL_CLOBBERED:
                regs[reg] = UNKNOWN
        elif cls == InsnClass.LDX:
            regs[insn.dst] = UNKNOWN
        elif cls == InsnClass.STX:
            if insn.code & 0xE0 == 0xC0:  # atomics may write src, r0 or dst
                if insn.src > 10:
                    raise _GiveUp(f"{func.name}: bad register at {index}")
                regs[insn.src] = UNKNOWN
                regs[0] = UNKNOWN
                regs[insn.dst] = UNKNOWN
        elif cls in (InsnClass.ALU, InsnClass.ALU64):
            regs[insn.dst] = self._alu(slot, insn, regs)
        elif insn.is_exit:
            return
        elif insn.is_call:
            self._call(slot)
            for reg in _CALL_CLOBBERED:
                regs[reg] = UNKNOWN
        elif insn.is_uncond_jump:
            self._goto(
                func,
                section,
                jump_target(func.instructions, index - func.insn_start) + func.insn_start,
                tuple(regs),
            )
            return
        elif insn.is_cond_jump:
            target = index + 1 + insn.jump_offset
            taken = self._branch(insn, regs)
            if taken is not False:
                self._goto(func, section, target, tuple(regs))
            if taken is True:
                return
        elif cls != InsnClass.ST:
            raise _GiveUp(f"{func.name}: unknown instruction {insn.code:#x} at {index}")

        if nxt >= func.insn_end:
            raise _GiveUp(f"{func.name}: falls off its end after {index}")
        self._flow((section, nxt), tuple(regs))

    def _ld_imm64(self, func: Function, slot: Slot) -> Value:
        if slot in self.known:
            return self.known[slot]
        insn = func.instructions[slot[1] - func.insn_start]
        if slot in self.patched or insn.src != LdImm64Src.IMM:
            return UNKNOWN
        return ld_imm64_value(func.instructions, slot[1] - func.insn_start)

    def _alu(self, slot: Slot, insn: Insn, regs: list[Value]) -> Value:
        bits = 64 if insn.code & 0x07 == InsnClass.ALU64 else 32
        op = insn.op
        if insn.off != 0 or op == 0xD0:  # signed div/mod, movsx, byte swaps
            return UNKNOWN
        if insn.uses_reg_source:
            src = regs[insn.src] if insn.src <= 10 else UNKNOWN
        else:
            imm = self.known.get(slot, insn.imm)
            if slot in self.patched and slot not in self.known:
                return UNKNOWN
            if not isinstance(imm, int):  # NONZERO patched into an immediate
                return NONZERO if op == 0xB0 and bits == 64 else UNKNOWN
            # the immediate is 32 bits, sign-extended for 64-bit ops
            src = _signed(imm, 32) & _MASK64 if bits == 64 else imm & _MASK32
        if op == 0xB0:  # mov
            if isinstance(src, int):
                return src & ((1 << bits) - 1)
            return src if bits == 64 else UNKNOWN
        dst = regs[insn.dst]
        if op == 0x80:  # neg ignores src
            src = 0
        if not (isinstance(dst, int) and isinstance(src, int)):
            return UNKNOWN
        result = _alu(op, dst, src, bits)
        return UNKNOWN if result is None else result

    def _branch(self, insn: Insn, regs: list[Value]) -> bool | None:
        if insn.op == JmpOp.JCOND:
            return None
        bits = 32 if insn.code & 0x07 == InsnClass.JMP32 else 64
        dst = regs[insn.dst]
        if insn.uses_reg_source:
            src: Value = regs[insn.src] if insn.src <= 10 else UNKNOWN
        else:
            src = _signed(insn.imm, 32) & _MASK64 if bits == 64 else insn.imm & _MASK32
        return _decide(insn.op, dst, src, bits)

    def _subprog_targets(self, slot: Slot) -> list[Slot]:
        func = self._function(slot)
        return [
            (call.target_section, call.target_index)
            for call in func.subprog_calls
            if (call.section, call.insn_index) == slot
        ]

    def _call(self, slot: Slot) -> None:
        targets = self._subprog_targets(slot)
        func = self._function(slot)
        insn = func.instructions[slot[1] - func.insn_start]
        is_kfunc = any((k.section, k.insn_index) == slot for k in func.kfunc_calls)
        if insn.is_pseudo_call and not targets and not is_kfunc:
            raise _GiveUp(f"{func.name}: BPF-to-BPF call at {slot[1]} with no known target")
        for target in targets:
            self._enter(*target)

    def _callback(self, slot: Slot) -> None:
        targets = self._subprog_targets(slot)
        func = self._function(slot)
        if func.instructions[slot[1] - func.insn_start].src == LdImm64Src.FUNC and not targets:
            raise _GiveUp(f"{func.name}: function address at {slot[1]} with no known target")
        for target in targets:
            self._enter(*target)


def _starts(func: Function) -> frozenset[int]:
    """Slots of `func` that start an instruction (not second halves of ld_imm64)."""
    return frozenset(i + func.insn_start for i in instruction_indexes(func.instructions))


def reachability(obj: BpfObject, program: Function, known: Known) -> Reachability:
    """Instructions of `program` (and of the subprograms it may call) that may run, when the
    slots in `known` hold the given values: an int, or NONZERO. Keys are slots of the program's
    section, or (section, index) pairs for subprograms in other sections. Slots with a CO-RE
    relocation or ELF relocation that are not in `known` are unknown."""
    return _Analysis(obj, program, known).run()


def poisoned_reachable(
    obj: BpfObject,
    program: Function,
    known: Known,
    poisoned: Iterable[Slot],
) -> list[Slot]:
    """The poisoned (section, index) slots that `program` may execute. When reachability is
    undecidable, every poisoned slot in the program's call graph counts as reachable."""
    result = reachability(obj, program, known)
    if result.undecidable:
        funcs = obj.reachable_functions(program)
        return sorted(s for s in set(poisoned) if any(f.contains(*s) for f in funcs))
    return sorted(s for s in set(poisoned) if s in result.reachable)
