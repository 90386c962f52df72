"""The struct_ops maps of a BPF object: each VAR of a `.struct_ops` DATASEC is a kernel struct
(tcp_congestion_ops, sched_ext_ops, ...) whose function pointers relocations set to programs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from weak_bpf.errors import ELFError
from weak_bpf.parsers.btf import BTF, Kind, Type
from weak_bpf.parsers.objvalues import StructOps, StructOpsMember

# "?": created only when the loader asks; ".link": registered through a BPF link
STRUCT_OPS_SECTIONS = (".struct_ops", ".struct_ops.link", "?.struct_ops", "?.struct_ops.link")


def read_struct_ops(
    btf: BTF | None, sections: Sequence[tuple[str, bytes, Mapping[int, str]]]
) -> tuple[StructOps, ...]:
    """Each struct_ops map of `sections` ((name, bytes, {offset: the program a relocation
    there points to})): the struct its DATASEC VAR has, and what each member is set to."""
    out: list[StructOps] = []
    for name, data, set_to in sections:
        datasec = btf.find(name, Kind.DATASEC) if btf is not None else []
        if btf is None or not datasec:
            raise ELFError(f"{name} has no BTF that describes it (libbpf refuses it)")
        for info in btf.type(datasec[0]).secinfos:
            var = btf.type(info.type)
            if info.offset + info.size > len(data):
                raise ELFError(f"struct_ops map {var.name} runs past the end of {name}")
            struct_type = btf.type(btf.resolve(var.type))
            if struct_type.kind is not Kind.STRUCT:
                raise ELFError(f"struct_ops map {var.name} in {name} is not a struct")
            members = []
            for member in struct_type.members:
                at = info.offset + member.bit_offset // 8
                size = btf.type_size(member.type) if not member.bitfield_size else 0
                program = set_to.get(at)
                if program is not None and pointed_func_proto(btf, member.type) is None:
                    raise ELFError(
                        f"struct_ops map {var.name} sets {member.name}, which is no function "
                        f"pointer, to program {program} (libbpf refuses it)"
                    )
                zero = program is None and not any(data[at : at + max(size, 1)])
                bitfield = bool(member.bitfield_size)
                members.append(
                    StructOpsMember(member.name, member.type, size, program, zero, bitfield)
                )
            starts = {info.offset + m.bit_offset // 8 for m in struct_type.members}
            end = info.offset + info.size
            stray = [at for at in set_to if info.offset <= at < end and at not in starts]
            if stray:
                raise ELFError(
                    f"a relocation of struct_ops map {var.name} at {stray[0]:#x} is at no "
                    "member's start (libbpf refuses it)"
                )
            out.append(StructOps(var.name, name, struct_type.name, tuple(members)))
    return tuple(out)


def pointed_func_proto(btf: BTF, type_id: int) -> Type | None:
    """The FUNC_PROTO a member of pointer-to-function type points to (past modifiers and
    typedefs, as libbpf looks); None for other members."""
    resolved = btf.resolve(type_id)
    if not resolved or btf.kind(resolved) is not Kind.PTR:
        return None
    target = btf.resolve(btf.type(resolved).type)
    return btf.type(target) if target and btf.kind(target) is Kind.FUNC_PROTO else None
