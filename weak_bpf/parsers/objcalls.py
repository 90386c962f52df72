"""What each function of a BPF object calls and loads, from its instructions and relocations.

Helper calls, kfunc call sites, loads of extern addresses, BPF-to-BPF calls and callbacks (a
function's address passed to a helper such as bpf_loop). Instruction indexes are slots in the code
section, as in `bpfobject.py`.
"""

from __future__ import annotations

from weak_bpf.parsers.insn import Insn, LdImm64Src
from weak_bpf.parsers.objvalues import (
    STB_LOCAL,
    ExternRef,
    Function,
    KfuncCall,
    Relocation,
    SubprogCall,
    Symbol,
)
from weak_bpf.parsers.sections import SectionInfo


def summarise_function(  # noqa: PLR0917
    sym: Symbol,
    section: str,
    info: SectionInfo,
    insns: tuple[Insn, ...],
    start: int,
    by_insn: dict[int, Relocation],
    code_sections: frozenset[str],
) -> Function:
    """Summarise one function; `insns` are its own, `start` its first slot, `by_insn` the
    relocations of its section by slot, `code_sections` the names of all code sections."""
    helpers = set()
    kfuncs = []
    extern_refs = []
    calls = []
    for index, insn in enumerate(insns, start):
        reloc = by_insn.get(index)
        if insn.is_call:
            if reloc is None:
                if insn.src == 0:
                    helpers.add(insn.imm)
                elif insn.src == 1:
                    calls.append(SubprogCall(section, index, section, index + 1 + insn.imm))
                elif insn.src == 2:
                    kfuncs.append(KfuncCall("", section, index, insn.imm))
            elif reloc.against_extern:
                kfuncs.append(KfuncCall(reloc.symbol, section, index))
            elif insn.src == 1:
                calls.append(_call_target(section, index, insn.imm, reloc))
        elif insn.is_ld_imm64 and reloc is not None:
            if reloc.against_extern:
                extern_refs.append(ExternRef(reloc.symbol, section, index))
            elif reloc.symbol_section in code_sections or insn.src == LdImm64Src.FUNC:
                # a function's address (a callback for bpf_loop & co): clang leaves src_reg 0
                calls.append(_call_target(section, index, insn.imm, reloc, True))
    return Function(
        name=sym.name,
        section=section,
        offset=sym.value,
        size=sym.size,
        is_global=sym.bind != STB_LOCAL,
        info=info,
        instructions=insns,
        helper_ids=frozenset(helpers),
        kfunc_calls=tuple(kfuncs),
        extern_refs=tuple(extern_refs),
        subprog_calls=tuple(calls),
    )


def _call_target(
    section: str, index: int, imm: int, reloc: Relocation, callback: bool = False
) -> SubprogCall:
    # libbpf: a call against a section symbol lands at value/8 + imm + 1; against a function
    # symbol clang leaves imm = -1, so the same sum gives the function's first slot.
    target = (reloc.symbol_value + imm) // 8 if callback else reloc.symbol_value // 8 + imm + 1
    return SubprogCall(section, index, reloc.symbol_section, target, callback)
