"""The values BTF is decoded into (pure, frozen): kinds, types and their members, enumerators,
parameters and DATASEC entries, and the layout of each kind (`Kind`, `Type`, ...)."""

from __future__ import annotations

import dataclasses
import enum


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
