"""The BTF signature CRC of a kfunc (SPEC §3): the greylist CRC of a function with no symvers CRC.

The CRC is zlib.crc32 of the UTF-8 *signature text*, a canonical spelling of the function's
prototype that keeps exactly what libbpf's `bpf_core_types_are_compat` compares (see
weak_bpf.btfcompat) and nothing else. Two prototypes are compatible by libbpf's rules if and
only if their texts are equal and contain no `!`. A text with `!` describes a prototype that
libbpf refuses against any target, itself included.

Grammar (no spaces anywhere):

    signature := proto
    proto     := "fn(" [ type { "," type } ] ")->" type
    type      := "void"             type id 0 (also a `...` varargs param)
               | "int"              any INT: size, signedness, char and bool are not compared
               | "enum"             ENUM or ENUM64, any size
               | "struct" | "union" | "fwd"
                                    by kind alone, never by name; "fwd" is a forward
                                    declaration (`struct foo;`), which matches only another
               | "*" type           PTR
               | "[]" type          ARRAY; the element count is not compared
               | proto              FUNC_PROTO (reached through a pointer)
               | "int!"             INT with a bit offset
               | KIND "!"           any other kind, lower case: "float!", "var!", "unknown!"
               | "!depth"           more than 32 steps along pointers, arrays and return types
               | "!level"           params nested more than 32 prototypes deep

Modifiers (const, volatile, restrict, type tags) and typedefs are skipped; names of the
function, its params and its types do not appear. Example, bpf_xdp_ct_lookup (Linux 6.1):

    struct nf_conn *bpf_xdp_ct_lookup(struct xdp_md *, struct bpf_sock_tuple *, u32,
                                      struct bpf_ct_opts *, u32)
    -> fn(*struct,*struct,int,*struct,int)->*struct

docs/btf-signature.md has more examples and the reasons for each choice.
"""

from __future__ import annotations

import zlib

from weak_bpf.engine.btfcompat import MAX_DEPTH, MAX_LEVEL
from weak_bpf.parsers.btf import BTF, Kind, Param

_LEAVES = {
    Kind.STRUCT: "struct",
    Kind.UNION: "union",
    Kind.FWD: "fwd",
    Kind.ENUM: "enum",
    Kind.ENUM64: "enum",
}


def signature_text(btf: BTF, func_id: int) -> str:
    """The signature text of a FUNC (or of a FUNC_PROTO). Raises BTFError for bad BTF."""
    t = btf.type(func_id)
    proto_id = t.type if t.kind == Kind.FUNC else func_id
    return _call_text(btf, proto_id, MAX_LEVEL)


def signature_crc(btf: BTF, func_id: int) -> int:
    return zlib.crc32(signature_text(btf, func_id).encode("utf-8"))


def format_crc(crc: int) -> str:
    """As Module.symvers spells a CRC: 0x%08x."""
    return f"0x{crc & 0xFFFFFFFF:08x}"


def _call_text(btf: BTF, type_id: int, level: int) -> str:
    """The text of one type, walked as one libbpf comparison call walks it."""
    out = []
    depth = MAX_DEPTH
    while True:
        depth -= 1
        if depth < 0:
            out.append("!depth")
            break
        type_id = btf.resolve(type_id)
        t = btf.type(type_id)
        kind = t.kind
        if kind == Kind.UNKN:
            out.append("void" if type_id == 0 else "unknown!")
            break
        leaf = _LEAVES.get(kind)
        if leaf is not None:
            out.append(leaf)
            break
        if kind == Kind.INT:
            out.append("int!" if t.int_offset else "int")
            break
        if kind == Kind.PTR:
            out.append("*")
            type_id = t.type
        elif kind == Kind.ARRAY:
            out.append("[]")
            type_id = t.elem_type
        elif kind == Kind.FUNC_PROTO:
            out.append("fn(" + _params_text(btf, t.params, level) + ")->")
            type_id = t.type
        else:
            out.append(kind.name.lower() + "!")
            break
    return "".join(out)


def _params_text(btf: BTF, params: tuple[Param, ...], level: int) -> str:
    if params and level <= 0:
        return "!level"
    return ",".join(_call_text(btf, param.type, level - 1) for param in params)
