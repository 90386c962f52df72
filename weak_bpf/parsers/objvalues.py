"""The values a BPF object is read into (pure, frozen): its programs and subprograms, maps,
externs, relocations and CO-RE relocation sites, and the object itself (`BpfObject`)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

from weak_bpf.parsers.btf import BTF
from weak_bpf.parsers.btfext import BtfExt, CoreReloKind
from weak_bpf.parsers.insn import Insn
from weak_bpf.parsers.sections import SectionInfo

SHN_UNDEF = 0
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2


class ExternKind(str, enum.Enum):
    FUNC = "func"
    VAR = "var"


@dataclasses.dataclass(frozen=True)
class Symbol:
    """An ELF symbol, decoded directly from `.symtab`."""

    index: int
    name: str
    value: int
    size: int
    bind: int
    type: int
    shndx: int

    @property
    def undefined(self) -> bool:
        return self.shndx == SHN_UNDEF

    @property
    def weak(self) -> bool:
        return self.bind == STB_WEAK


@dataclasses.dataclass(frozen=True)
class Relocation:
    """A relocation on a code section's instruction."""

    section: str  # the code section
    insn_index: int
    type: int  # R_BPF_*
    symbol: str
    symbol_section: str  # "" when the symbol is undefined (an extern)
    symbol_value: int
    symbol_type: int  # STT_*

    @property
    def against_extern(self) -> bool:
        return self.symbol_section == ""


@dataclasses.dataclass(frozen=True)
class KfuncCall:
    name: str  # "" for a src_reg 2 call with no relocation: only its BTF id is known
    section: str
    insn_index: int  # in the section
    btf_id: int = 0  # the imm of a src_reg 2 call without relocation


@dataclasses.dataclass(frozen=True)
class ExternRef:
    """An ld_imm64 that loads the address (or value) of an extern: ksym variable, weak kfunc
    (as in bpf_ksym_exists), or kconfig value."""

    name: str
    section: str
    insn_index: int


@dataclasses.dataclass(frozen=True)
class SubprogCall:
    """A BPF-to-BPF call, or (callback) an ld_imm64 of a function's address."""

    section: str
    insn_index: int
    target_section: str
    target_index: int  # slot in target_section
    callback: bool = False


@dataclasses.dataclass(frozen=True)
class Function:
    """A program (entry point) or a `.text` subprogram."""

    name: str
    section: str
    offset: int  # bytes into the section
    size: int
    is_global: bool
    info: SectionInfo  # for subprograms, the (meaningless) info of ".text"
    instructions: tuple[Insn, ...]
    helper_ids: frozenset[int]
    kfunc_calls: tuple[KfuncCall, ...]
    extern_refs: tuple[ExternRef, ...]
    subprog_calls: tuple[SubprogCall, ...]

    @property
    def insn_start(self) -> int:
        return self.offset // 8

    @property
    def insn_end(self) -> int:
        return (self.offset + self.size) // 8

    def contains(self, section: str, insn_index: int) -> bool:
        return section == self.section and self.insn_start <= insn_index < self.insn_end


@dataclasses.dataclass(frozen=True)
class Map:
    name: str
    section: str  # ".maps" (BTF-defined) or "maps" (legacy)
    map_type: int | None = None
    key_size: int | None = None
    value_size: int | None = None
    max_entries: int | None = None
    map_flags: int | None = None


@dataclasses.dataclass(frozen=True)
class StructOpsMember:
    """A member of a struct_ops map's struct, as the object sets it."""

    name: str
    type_id: int  # in the object's BTF
    size: int
    program: str | None  # the program a function pointer is set to
    zero: bool  # nothing set: no program, every byte zero
    bitfield: bool = False


@dataclasses.dataclass(frozen=True)
class StructOps:
    """A struct_ops map: a kernel struct of function pointers (tcp_congestion_ops,
    sched_ext_ops, ...) that the object fills with its programs, for libbpf to register."""

    name: str
    section: str  # ".struct_ops" or ".struct_ops.link", "?"-prefixed when not created by default
    type_name: str  # the struct, as the object names it
    members: tuple[StructOpsMember, ...]

    @property
    def link(self) -> bool:
        """Registered through a BPF link (BPF_F_LINK), which kernels before 6.4 refuse."""
        return self.section.endswith(".link")

    @property
    def optional(self) -> bool:
        """SEC("?.struct_ops"): libbpf creates it only when the loader asks."""
        return self.section.startswith("?")


@dataclasses.dataclass(frozen=True)
class DataSection:
    """Global data (.data, .rodata*, .bss*): libbpf makes internal maps of them."""

    name: str
    size: int


@dataclasses.dataclass(frozen=True)
class Extern:
    name: str
    section: str  # ".ksyms" or ".kconfig"; "" if the BTF does not say
    kind: ExternKind
    weak: bool  # ELF STB_WEAK
    typed: bool  # functions and variables with a non-void type
    btf_id: int  # the FUNC or VAR in the object's BTF; 0 if absent
    btf_type: int  # FUNC: its FUNC_PROTO; VAR: its type; 0 if absent


@dataclasses.dataclass(frozen=True)
class CoreReloSite:
    """A CO-RE relocation placed in its object: which function holds the instruction."""

    kind: CoreReloKind | int
    type_id: int
    type_name: str
    access: str
    section: str
    insn_index: int
    function: str | None  # the program or subprogram holding the instruction
    program: str | None  # the program, or None for a `.text` subprogram


@dataclasses.dataclass(frozen=True)
class BpfObject:
    source: str | None
    byteorder: str
    license: str | None
    kernel_version: int | None
    programs: tuple[Function, ...]
    subprograms: tuple[Function, ...]
    maps: tuple[Map, ...]
    data_sections: tuple[DataSection, ...]
    ksyms: tuple[Extern, ...]
    kconfig: tuple[Extern, ...]
    extern_problems: tuple[str, ...]  # ELF and BTF disagreements about externs
    relocations: tuple[Relocation, ...]
    core_relos: tuple[CoreReloSite, ...]
    btf: BTF | None = dataclasses.field(compare=False, repr=False)
    btf_ext: BtfExt | None = dataclasses.field(compare=False, repr=False)
    greylist: bytes | None
    struct_ops: tuple[StructOps, ...] = ()
    # a hash of every byte the reader used (the ELF header, and each section but DWARF, with
    # its header): objects with equal digests are equal for every check
    digest: str = dataclasses.field(default="", compare=False, repr=False)

    @property
    def externs(self) -> tuple[Extern, ...]:
        return self.ksyms + self.kconfig

    def program(self, name: str) -> Function:
        for prog in self.programs:
            if prog.name == name:
                return prog
        raise KeyError(name)

    def function_at(self, section: str, insn_index: int) -> Function | None:
        return function_containing(self.programs + self.subprograms, section, insn_index)

    def reachable_functions(self, program: Function) -> tuple[Function, ...]:
        """The program and every subprogram it may call (call graph, not control flow)."""
        seen = [program]
        todo = [program]
        while todo:
            func = todo.pop()
            for call in func.subprog_calls:
                callee = self.function_at(call.target_section, call.target_index)
                if callee is not None and callee not in seen:
                    seen.append(callee)
                    todo.append(callee)
        return tuple(seen)


def function_containing(functions: Iterable[Function], section: str, index: int) -> Function | None:
    for func in functions:
        if func.contains(section, index):
            return func
    return None
