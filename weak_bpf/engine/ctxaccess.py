"""How a BTF tracing program (tp_btf, fentry, fexit, fmod_ret) uses its context.

`BPF_PROG(...)` reads a tracing program's arguments from its context, one 8-byte slot each. The
verifier checks each read against the target's prototype on the running kernel: a slot past the
last argument is refused, and so is a dereference of an argument that the prototype makes a
scalar. This module finds, in the code that can run, which slots are read and which argument
values are dereferenced, so the checks can hold them against K's prototype.

A forward "must" analysis over the program's own function: a register or an 8-byte stack slot
holds the context pointer (at a known offset) or an argument value only when it does on every
path. So every read or dereference reported is one the verifier will see; a use the analysis
cannot follow is not reported (subprograms that get the context are not followed).

Pure: instructions and the reachable slots in, values out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Optional, Union

from weak_bpf.parsers.insn import Insn, InsnClass, jump_target
from weak_bpf.parsers.objvalues import Function

_MOV = 0xB0
_ADD = 0x00
_SUB = 0x10
_SIZE_DW = 0x18
_MODE_MEM = 0x60
_MODE_ATOMIC = 0xC0
_FP = 10


@dataclasses.dataclass(frozen=True)
class Ctx:
    offset: int  # the context pointer, moved on by `offset` bytes


@dataclasses.dataclass(frozen=True)
class Arg:
    slot: int  # the value read from context slot `slot`


@dataclasses.dataclass(frozen=True)
class Fp:
    offset: int  # the frame pointer, moved on by `offset` bytes: a pointer into the stack


Known = Union[Ctx, Arg, Fp]
Value = Optional[Known]
# registers r0..r10, then the 8-byte stack slots that hold a value: ((fp offset, value), ...)
State = tuple[tuple[Value, ...], tuple[tuple[int, Known], ...]]


@dataclasses.dataclass(frozen=True)
class ContextUse:
    """`reads`: (slot, instruction index) of every context read; `derefs`: (slot, instruction
    index) of every memory access through an argument's value. Indexes are in the section."""

    reads: tuple[tuple[int, int], ...]
    derefs: tuple[tuple[int, int], ...]


def context_use(program: Function, reachable: Collection[int] | None = None) -> ContextUse:
    """The context reads and argument dereferences of `program`'s own code, among the
    instructions in `reachable` (indexes in the section; None: all of them)."""
    return _Analysis(program, reachable).run()


def _join(a: State, b: State) -> State:
    regs = tuple(x if x == y else None for x, y in zip(a[0], b[0]))
    stack = tuple(sorted(set(a[1]) & set(b[1]), key=lambda item: item[0]))
    return regs, stack


class _Analysis:
    def __init__(self, program: Function, reachable: Collection[int] | None) -> None:
        self.func = program
        self.reachable = reachable
        self.states: dict[int, State] = {}
        self.todo: list[int] = []
        self.reads: set[tuple[int, int]] = set()
        self.derefs: set[tuple[int, int]] = set()

    def run(self) -> ContextUse:
        entry: list[Value] = [None] * 11
        entry[1] = Ctx(0)
        entry[_FP] = Fp(0)
        self._flow(self.func.insn_start, (tuple(entry), ()))
        while self.todo:
            index = self.todo.pop()
            self._step(index, self.states[index])
        return ContextUse(tuple(sorted(self.reads)), tuple(sorted(self.derefs)))

    def _flow(self, index: int, state: State) -> None:
        if not self.func.insn_start <= index < self.func.insn_end:
            return
        if self.reachable is not None and index not in self.reachable:
            return
        old = self.states.get(index)
        new = state if old is None else _join(old, state)
        if new != old:
            self.states[index] = new
            self.todo.append(index)

    def _step(self, index: int, state: State) -> None:
        insn = self.func.instructions[index - self.func.insn_start]
        regs = list(state[0])
        stack = dict(state[1])
        cls = insn.code & 0x07
        if insn.dst > 10 or (insn.src > 10 and cls not in (InsnClass.LD, InsnClass.JMP)):
            return  # the verifier refuses the program; nothing to learn here
        nxt = index + 1
        if insn.is_ld_imm64:
            regs[insn.dst] = None
            nxt = index + 2
        elif cls == InsnClass.LD or insn.is_call:  # legacy packet loads and calls clobber r0-r5
            if any(isinstance(r, Fp) for r in regs[1:6]):
                stack.clear()  # a helper (or subprogram) may write where it was pointed
            regs[0:6] = [None] * 6
        elif cls == InsnClass.LDX:
            regs[insn.dst] = self._load(index, insn, regs, stack)
        elif cls in (InsnClass.ST, InsnClass.STX):
            self._store(index, insn, regs, stack)
        elif cls in (InsnClass.ALU, InsnClass.ALU64):
            regs[insn.dst] = self._alu(insn, regs, cls == InsnClass.ALU64)
        elif insn.is_exit:
            return
        elif insn.is_uncond_jump:
            local = index - self.func.insn_start
            target = self.func.insn_start + jump_target(self.func.instructions, local)
            self._flow(target, (tuple(regs), _stack(stack)))
            return
        elif insn.is_cond_jump:
            self._flow(index + 1 + insn.jump_offset, (tuple(regs), _stack(stack)))
        self._flow(nxt, (tuple(regs), _stack(stack)))

    def _load(self, index: int, insn: Insn, regs: list[Value], stack: dict[int, Known]) -> Value:
        off, code = insn.off, insn.code
        where = regs[insn.src]
        if isinstance(where, Fp):
            return stack.get(where.offset + off) if code & 0x18 == _SIZE_DW else None
        if isinstance(where, Ctx):
            at = where.offset + off
            self.reads.add((at // 8, index))
            whole = code & 0x18 == _SIZE_DW and at % 8 == 0
            return Arg(at // 8) if whole else None
        if isinstance(where, Arg):
            self.derefs.add((where.slot, index))
        return None

    def _store(self, index: int, insn: Insn, regs: list[Value], stack: dict[int, Known]) -> None:
        where = regs[insn.dst]
        if isinstance(where, Arg):
            self.derefs.add((where.slot, index))
        mode = insn.code & 0xE0
        if isinstance(where, Fp):
            to = where.offset + insn.off
            for at in [a for a in stack if a - 7 <= to < a + 8]:
                del stack[at]  # any overlapping store ends what the slot held
            spilled = regs[insn.src] if insn.code & 0x07 == InsnClass.STX else None
            if mode == _MODE_MEM and insn.code & 0x18 == _SIZE_DW and spilled is not None:
                stack[to] = spilled
        if mode == _MODE_ATOMIC:  # may write src (fetch), r0 (cmpxchg) or dst (load-acquire)
            regs[insn.src] = None
            regs[0] = None
            regs[insn.dst] = None

    def _alu(self, insn: Insn, regs: list[Value], wide: bool) -> Value:
        op = insn.code & 0xF0
        from_reg = insn.uses_reg_source
        if op == _MOV and wide and from_reg and insn.off == 0:  # off != 0: a sign-extending move
            return regs[insn.src]
        current = regs[insn.dst]
        if wide and not from_reg and op in (_ADD, _SUB):
            moved = insn.imm if op == _ADD else -insn.imm
            if isinstance(current, Ctx):
                return Ctx(current.offset + moved)
            if isinstance(current, Fp):
                return Fp(current.offset + moved)
        return None


def _stack(stack: Mapping[int, Value]) -> tuple[tuple[int, Known], ...]:
    return tuple(sorted(((k, v) for k, v in stack.items() if v is not None), key=lambda kv: kv[0]))
