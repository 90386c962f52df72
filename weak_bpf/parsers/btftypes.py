"""The values BTF is decoded into (pure, frozen): kinds, types and their members, enumerators,
parameters and DATASEC entries, and the layout of each kind (`Kind`, `Type`, ...); and how one
type record's words decode into a `Type` (`decode_record`)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence


class Kind(enum.IntEnum):
    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


class Linkage(enum.IntEnum):
    """FUNC linkage (vlen) and VAR linkage share these values."""

    STATIC = 0
    GLOBAL = 1
    EXTERN = 2


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    type: int
    bit_offset: int
    bitfield_size: int = 0  # 0 unless the struct's kind_flag is set and the member is a bitfield


@dataclasses.dataclass(frozen=True)
class EnumValue:
    name: str
    value: int  # signed or unsigned per the enum's kind_flag; ENUM64 values are joined


@dataclasses.dataclass(frozen=True)
class Param:
    name: str  # "" for a prototype's unnamed params
    type: int  # 0 on the last param means "..." (varargs)


@dataclasses.dataclass(frozen=True)
class VarSecInfo:
    type: int
    offset: int
    size: int


@dataclasses.dataclass(frozen=True)
class Type:
    """One decoded BTF type. Fields that do not apply to a kind keep their defaults.

    A kind this reader does not know (> 19, skipped thanks to the layout section) decodes as
    Kind.UNKN with its name, kind_flag, vlen and its third word in `size`.
    """

    id: int
    kind: Kind
    name: str
    kind_flag: bool = False
    vlen: int = 0
    size: int = 0  # INT STRUCT UNION ENUM ENUM64 DATASEC FLOAT
    type: int = (
        0  # PTR TYPEDEF VOLATILE CONST RESTRICT FUNC FUNC_PROTO(return) VAR DECL_TAG TYPE_TAG
    )
    # INT
    int_encoding: int = 0  # bit 0 SIGNED, bit 1 CHAR, bit 2 BOOL
    int_offset: int = 0
    int_bits: int = 0
    # ARRAY
    elem_type: int = 0
    index_type: int = 0
    nelems: int = 0
    # STRUCT UNION
    members: tuple[Member, ...] = ()
    # ENUM ENUM64
    values: tuple[EnumValue, ...] = ()
    # FUNC_PROTO
    params: tuple[Param, ...] = ()
    # FUNC (from vlen) and VAR
    linkage: int = 0
    # DATASEC
    secinfos: tuple[VarSecInfo, ...] = ()
    # DECL_TAG: -1 tags the type itself, else a member or param index
    component_idx: int = -1


@dataclasses.dataclass(frozen=True)
class KindLayout:
    """One entry of the layout section: bytes after the 12-byte type header, and per vlen item."""

    info_size: int
    elem_size: int
    flags: int = 0


# The info word: bits 0-23 vlen, 24-30 kind, 31 kind_flag. Before kernel 7.1 vlen had 16 bits
# and kind 5; the bits in between were required to be zero, so the wide masks read old BTF too.
VLEN_MASK = 0xFFFFFF
KIND_MASK = 0x7F
NR_KINDS = KIND_MASK + 1
# Words a type takes: header (3) + a fixed part, plus some words per vlen item.
KNOWN_FIXED = (3, 4, 3, 6, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 3, 3, 4, 3, 3)
KNOWN_PER_VLEN = (0, 0, 0, 0, 3, 3, 2, 0, 0, 0, 0, 0, 0, 2, 0, 3, 0, 0, 0, 3)
KIND_OF = tuple(Kind(k) if k < len(KNOWN_FIXED) else Kind.UNKN for k in range(NR_KINDS))


def _s32(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


def decode_record(w: Sequence[int], at: int, tid: int, s: Callable[[int], str]) -> Type:
    """Decode the type record that starts at word `at` of `w`; `s` looks up a string offset."""
    name_off, info, size_or_type = w[at], w[at + 1], w[at + 2]
    kind = KIND_OF[info >> 24 & KIND_MASK]
    vlen = info & VLEN_MASK
    kflag = bool(info >> 31)
    name = s(name_off)
    x = at + 3  # first word after the header
    if kind == Kind.UNKN:
        return Type(tid, kind, name, kflag, vlen, size=size_or_type)
    if kind == Kind.INT:
        enc = w[x]
        return Type(
            tid,
            kind,
            name,
            kflag,
            vlen,
            size=size_or_type,
            int_encoding=enc >> 24 & 0x0F,
            int_offset=enc >> 16 & 0xFF,
            int_bits=enc & 0xFF,
        )
    if kind in (Kind.STRUCT, Kind.UNION):
        if kflag:
            members = tuple(
                Member(s(w[i]), w[i + 1], w[i + 2] & 0xFFFFFF, w[i + 2] >> 24)
                for i in range(x, x + 3 * vlen, 3)
            )
        else:
            members = tuple(Member(s(w[i]), w[i + 1], w[i + 2]) for i in range(x, x + 3 * vlen, 3))
        return Type(tid, kind, name, kflag, vlen, size=size_or_type, members=members)
    if kind == Kind.ENUM:
        values = tuple(
            EnumValue(s(w[i]), _s32(w[i + 1]) if kflag else w[i + 1])
            for i in range(x, x + 2 * vlen, 2)
        )
        return Type(tid, kind, name, kflag, vlen, size=size_or_type, values=values)
    if kind == Kind.ENUM64:
        values64 = []
        for i in range(x, x + 3 * vlen, 3):
            value = w[i + 2] << 32 | w[i + 1]
            if kflag and value >> 63:
                value -= 1 << 64
            values64.append(EnumValue(s(w[i]), value))
        return Type(tid, kind, name, kflag, vlen, size=size_or_type, values=tuple(values64))
    if kind == Kind.ARRAY:
        return Type(
            tid, kind, name, kflag, vlen, elem_type=w[x], index_type=w[x + 1], nelems=w[x + 2]
        )
    if kind == Kind.FUNC_PROTO:
        params = tuple(Param(s(w[i]), w[i + 1]) for i in range(x, x + 2 * vlen, 2))
        return Type(tid, kind, name, kflag, vlen, type=size_or_type, params=params)
    if kind == Kind.DATASEC:
        secinfos = tuple(VarSecInfo(w[i], w[i + 1], w[i + 2]) for i in range(x, x + 3 * vlen, 3))
        return Type(tid, kind, name, kflag, vlen, size=size_or_type, secinfos=secinfos)
    if kind == Kind.FUNC:
        return Type(tid, kind, name, kflag, vlen, type=size_or_type, linkage=vlen)
    if kind == Kind.VAR:
        return Type(tid, kind, name, kflag, vlen, type=size_or_type, linkage=w[x])
    if kind == Kind.DECL_TAG:
        return Type(tid, kind, name, kflag, vlen, type=size_or_type, component_idx=_s32(w[x]))
    if kind == Kind.FLOAT:
        return Type(tid, kind, name, kflag, vlen, size=size_or_type)
    # PTR FWD TYPEDEF VOLATILE CONST RESTRICT TYPE_TAG
    return Type(tid, kind, name, kflag, vlen, type=size_or_type)
