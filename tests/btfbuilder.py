"""A tiny raw BTF writer for tests that need kernels with made-up facts."""

from __future__ import annotations

import struct

from weak_bpf.parsers.btf import BTF, Kind


class Builder:
    """A tiny raw BTF writer: each method adds one type and returns its id."""

    def __init__(self) -> None:
        self.strings = b"\0"
        self.words: list[int] = []
        self.count = 0

    def _name(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def _add(
        self, name: str, kind: Kind, vlen: int, third: int, *extra: int, kflag: int = 0
    ) -> int:
        self.words += [self._name(name), kflag << 31 | kind << 24 | vlen, third, *extra]
        self.count += 1
        return self.count

    def int_(self, name: str = "int", size: int = 4, offset: int = 0, signed: bool = True) -> int:
        return self._add(name, Kind.INT, 0, size, int(signed) << 24 | offset << 16 | size * 8)

    def float_(self) -> int:
        return self._add("double", Kind.FLOAT, 0, 8)

    def ptr(self, to: int) -> int:
        return self._add("", Kind.PTR, 0, to)

    def array(self, elem: int, nelems: int) -> int:
        return self._add("", Kind.ARRAY, 0, 0, elem, self.int_(), nelems)

    def struct(
        self, name: str, kind: Kind = Kind.STRUCT, members: tuple[tuple[str, int, int], ...] = ()
    ) -> int:
        """`members`: (name, type id, bit offset) each."""
        extra = [
            word
            for m_name, m_type, m_bits in members
            for word in (self._name(m_name), m_type, m_bits)
        ]
        return self._add(name, kind, len(members), 8, *extra)

    def fwd(self, name: str, union: bool = False) -> int:
        return self._add(name, Kind.FWD, 0, 0, kflag=int(union))

    def enum(self, name: str, size: int = 4, kind: Kind = Kind.ENUM) -> int:
        return self._add(name, kind, 0, size)

    def mod(self, kind: Kind, to: int, name: str = "") -> int:
        return self._add(name, kind, 0, to)

    def proto(self, ret: int, *params: int) -> int:
        extra = []
        for index, param in enumerate(params):
            extra += [self._name(f"p{index}"), param]
        return self._add("", Kind.FUNC_PROTO, len(params), ret, *extra)

    def func(self, name: str, proto: int) -> int:
        return self._add(name, Kind.FUNC, 1, proto)

    def decl_tag(self, name: str, to: int, component: int = -1) -> int:
        return self._add(name, Kind.DECL_TAG, 0, to, component & 0xFFFFFFFF)

    def btf(self) -> BTF:
        types = struct.pack(f"<{len(self.words)}I", *self.words)
        header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), 0)
        header = header[:20] + struct.pack("<I", len(self.strings))
        return BTF.from_bytes(header + types + self.strings)
