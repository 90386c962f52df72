"""BPF bytecode: decode 8-byte instructions and classify calls, jumps and wide loads.

Indexes are instruction slots, as in the kernel and in relocation offsets / 8: a 16-byte
`ld_imm64` occupies two slots, and its second slot decodes as a pseudo-instruction with code 0.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Iterator

from weak_bpf.errors import ELFError

INSN_SIZE = 8


class InsnClass(enum.IntEnum):
    LD = 0x00
    LDX = 0x01
    ST = 0x02
    STX = 0x03
    ALU = 0x04
    JMP = 0x05
    JMP32 = 0x06
    ALU64 = 0x07


class JmpOp(enum.IntEnum):
    """The op field (code & 0xf0) of JMP and JMP32 instructions."""

    JA = 0x00
    JEQ = 0x10
    JGT = 0x20
    JGE = 0x30
    JSET = 0x40
    JNE = 0x50
    JSGT = 0x60
    JSGE = 0x70
    CALL = 0x80
    EXIT = 0x90
    JLT = 0xA0
    JLE = 0xB0
    JSLT = 0xC0
    JSLE = 0xD0
    JCOND = 0xE0  # may_goto: a conditional jump the verifier decides


class CallKind(enum.IntEnum):
    """src_reg of a call instruction."""

    HELPER = 0  # imm is the helper id
    PSEUDO_CALL = 1  # BPF-to-BPF call: imm is the relative target (in a .o, also kfunc externs)
    KFUNC = 2  # imm is a kernel BTF id (after libbpf); in a .o file: see is_extern_call


class LdImm64Src(enum.IntEnum):
    """src_reg of ld_imm64: what the 64-bit immediate means."""

    IMM = 0
    MAP_FD = 1
    MAP_VALUE = 2
    BTF_ID = 3  # ksym variable
    FUNC = 4  # address of a BPF function
    MAP_IDX = 5
    MAP_IDX_VALUE = 6


_LD_IMM64_CODE = 0x18  # BPF_LD | BPF_IMM | BPF_DW
_CALL_CODE = 0x85  # BPF_JMP | BPF_CALL
_EXIT_CODE = 0x95  # BPF_JMP | BPF_EXIT
_COND_OPS = frozenset(int(op) for op in JmpOp) - {JmpOp.JA, JmpOp.CALL, JmpOp.EXIT}


@dataclasses.dataclass(frozen=True)
class Insn:
    code: int
    dst: int
    src: int
    off: int  # signed 16 bits
    imm: int  # signed 32 bits

    @property
    def cls(self) -> InsnClass:
        return InsnClass(self.code & 0x07)

    @property
    def op(self) -> int:
        return self.code & 0xF0

    @property
    def uses_reg_source(self) -> bool:
        """BPF_X: the second operand is src_reg, not imm."""
        return bool(self.code & 0x08)

    @property
    def is_ld_imm64(self) -> bool:
        return self.code == _LD_IMM64_CODE

    @property
    def is_call(self) -> bool:
        return self.code == _CALL_CODE

    @property
    def is_helper_call(self) -> bool:
        return self.is_call and self.src == CallKind.HELPER

    @property
    def is_pseudo_call(self) -> bool:
        """A src_reg 1 call: a BPF-to-BPF call, or (in a .o) a kfunc extern call."""
        return self.is_call and self.src == CallKind.PSEUDO_CALL

    @property
    def is_kfunc_call(self) -> bool:
        """A src_reg 2 call, as the kernel sees kfunc calls after libbpf fixed them up."""
        return self.is_call and self.src == CallKind.KFUNC

    @property
    def is_exit(self) -> bool:
        return self.code == _EXIT_CODE

    @property
    def _is_jmp_class(self) -> bool:
        return self.code & 0x07 in (InsnClass.JMP, InsnClass.JMP32)

    @property
    def is_jump(self) -> bool:
        """Any branch with a target: `ja`, conditional jumps, may_goto. Not call or exit."""
        return self._is_jmp_class and self.op not in (JmpOp.CALL, JmpOp.EXIT)

    @property
    def is_uncond_jump(self) -> bool:
        return self._is_jmp_class and self.op == JmpOp.JA

    @property
    def is_cond_jump(self) -> bool:
        return self._is_jmp_class and self.op in _COND_OPS

    @property
    def jump_offset(self) -> int:
        """Relative target of a jump, in slots after the next one. JMP32 `ja` (gotol) uses imm."""
        if self.code & 0x07 == InsnClass.JMP32 and self.op == JmpOp.JA:
            return self.imm
        return self.off


def jump_target(insns: tuple[Insn, ...], index: int) -> int:
    """Slot a jump or BPF-to-BPF call at `index` goes to (not range-checked)."""
    insn = insns[index]
    if insn.is_call:
        return index + 1 + insn.imm
    if not insn.is_jump:
        raise ValueError(f"instruction {index} is not a jump")
    return index + 1 + insn.jump_offset


def ld_imm64_value(insns: tuple[Insn, ...], index: int) -> int:
    """The 64-bit immediate of the ld_imm64 starting at `index` (unsigned)."""
    low = insns[index].imm & 0xFFFFFFFF
    high = insns[index + 1].imm & 0xFFFFFFFF if index + 1 < len(insns) else 0
    return (high << 32) | low


def instruction_indexes(insns: tuple[Insn, ...]) -> Iterator[int]:
    """Slots that start an instruction: every slot but the second halves of ld_imm64."""
    index = 0
    while index < len(insns):
        yield index
        index += 2 if insns[index].is_ld_imm64 else 1


_FORMATS = {"little": struct.Struct("<BBhi"), "big": struct.Struct(">BBhi")}


def decode(data: bytes, byteorder: str) -> tuple[Insn, ...]:
    """Decode a section's instructions. `byteorder` is "little" or "big"."""
    fmt = _FORMATS.get(byteorder)
    if fmt is None:
        raise ValueError(f"byteorder must be 'little' or 'big', not {byteorder!r}")
    if len(data) % INSN_SIZE:
        raise ELFError(f"code size {len(data)} is not a multiple of {INSN_SIZE}", offset=len(data))
    little = byteorder == "little"
    out = []
    for code, regs, off, imm in fmt.iter_unpack(data):
        if little:
            dst, src = regs & 0x0F, regs >> 4
        else:
            dst, src = regs >> 4, regs & 0x0F
        out.append(Insn(code, dst, src, off, imm))
    return tuple(out)
