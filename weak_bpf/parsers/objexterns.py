"""The `.ksyms` and `.kconfig` externs of a BPF object.

Its undefined ELF symbols are cross-checked with the VARs and FUNCs in the BTF DATASECs of those
names, as libbpf pairs them; what does not pair up is reported as a problem.
"""

from __future__ import annotations

import dataclasses

from weak_bpf.errors import BTFError
from weak_bpf.parsers.btf import BTF, Kind
from weak_bpf.parsers.objvalues import STB_LOCAL, Extern, ExternKind, Relocation, Symbol

R_BPF_64_32 = 10  # the relocation of a call

KSYMS = ".ksyms"
KCONFIG = ".kconfig"


def read_externs(
    symbols: list[Symbol], btf: BTF | None, relocs: dict[int, tuple[Relocation, ...]]
) -> tuple[tuple[Extern, ...], tuple[Extern, ...], tuple[str, ...]]:
    """The `.ksyms` externs, the `.kconfig` externs, and what does not pair up; `relocs` tell
    which externs are called."""
    problems: list[str] = []
    undefined = {s.name: s for s in symbols if s.undefined and s.name and s.bind != STB_LOCAL}
    called = {r.symbol for rs in relocs.values() for r in rs if r.type == R_BPF_64_32}
    from_btf: dict[str, Extern] = {}
    if btf is not None:
        for section in (KSYMS, KCONFIG):
            for ext in _btf_externs(btf, section):
                from_btf[ext.name] = ext
    out: dict[str, list[Extern]] = {KSYMS: [], KCONFIG: []}
    for name, ext in from_btf.items():
        sym = undefined.get(name)
        if sym is None:
            problems.append(f"extern {name!r} is in BTF {ext.section} but has no ELF symbol")
            weak = False
        else:
            weak = sym.weak
        if ext.kind is ExternKind.VAR and name in called:
            problems.append(f"extern {name!r} is a BTF VAR but is called like a function")
        out[ext.section].append(dataclasses.replace(ext, weak=weak))
    for name, sym in undefined.items():
        if name not in from_btf:
            kind = ExternKind.FUNC if name in called else ExternKind.VAR
            problems.append(
                f"undefined symbol {name!r} has no BTF in .ksyms or .kconfig"
                + ("" if btf is not None else " (the object has no BTF)")
            )
            out[KSYMS].append(Extern(name, "", kind, sym.weak, False, 0, 0))
    return tuple(out[KSYMS]), tuple(out[KCONFIG]), tuple(problems)


def _btf_externs(btf: BTF, section: str) -> list[Extern]:
    """The VARs and FUNCs of the DATASEC `section`, not yet paired with ELF symbols."""
    out = []
    for datasec_id in btf.find(section, Kind.DATASEC):
        for info in btf.type(datasec_id).secinfos:
            member = btf.type(info.type)
            if member.kind == Kind.FUNC:
                out.append(
                    Extern(
                        member.name, section, ExternKind.FUNC, False, True, member.id, member.type
                    )
                )
            elif member.kind == Kind.VAR:
                typed = btf.resolve(member.type) != 0
                out.append(
                    Extern(
                        member.name, section, ExternKind.VAR, False, typed, member.id, member.type
                    )
                )
            else:
                raise BTFError(f"DATASEC {section} holds a {member.kind.name}, not a VAR or FUNC")
    return out
