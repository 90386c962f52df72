"""A validated ELF section table (either class, either byte order).

pyelftools trusts the section header table: a crafted `e_shentsize` or extended section count
makes it loop for hours. Every reader of ELF input checks the table here first.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Collection
from typing import Union

from weak_bpf.errors import ELFError, ParseError

# what ELF readers take: bytes, or a view (of a mapped file: a debuginfo vmlinux is 600 MB)
Buffer = Union[bytes, memoryview]
SHT_NOBITS = 8
SHF_COMPRESSED = 0x800


@dataclasses.dataclass(frozen=True)
class SectionHeader:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    header_offset: int  # where this header is in the file, for error messages
    address: int = 0  # sh_addr: where an allocated section is in memory


@dataclasses.dataclass(frozen=True)
class ElfHeader:
    elf_class: int  # 32 or 64
    byteorder: str  # "little" or "big"
    type: int  # e_type: 1 ET_REL, 2 ET_EXEC, 3 ET_DYN
    machine: int  # e_machine: 247 EM_BPF, 62 EM_X86_64, ...


def elf_header(data: Buffer, source: str | None = None) -> ElfHeader:
    """The identification fields of an ELF header. Raises ELFError."""
    if len(data) < 0x34 or bytes(data[:4]) != b"\x7fELF":
        raise ELFError("not an ELF file (bad magic or truncated header)", source=source, offset=0)
    if data[4] not in (1, 2) or data[5] not in (1, 2):
        raise ELFError("bad ELF class or data encoding", source=source, offset=4)
    order = "<" if data[5] == 1 else ">"
    e_type, e_machine = struct.unpack_from(order + "HH", data, 0x10)
    return ElfHeader(32 * data[4], "little" if data[5] == 1 else "big", e_type, e_machine)


def section_headers(
    data: Buffer, source: str | None = None, *, error: type[ParseError] = ELFError
) -> tuple[SectionHeader, ...]:
    """Every section header, checked to lie inside the file. Raises `error` (ELFError)."""
    table = _Table(data, source, error)
    headers = []
    for index, (name_off, sh_type, flags, addr, offset, size, link, info) in enumerate(table.rows):
        at = table.header_offset(index)
        table.check_inside(index, sh_type, offset, size)
        name = table.name(name_off).decode("utf-8", "replace")
        headers.append(
            SectionHeader(index, name, sh_type, flags, offset, size, link, info, at, addr)
        )
    return tuple(headers)


def find_sections(
    data: Buffer, names: Collection[str], source: str | None = None
) -> dict[str, tuple[int, int]]:
    """(offset, size) of the first section of each of `names` that the file has, with the checks
    of section_headers on the table and on those sections: a scan of a thousand modules looks
    for two sections in each, and builds no header it does not return. Raises ELFError."""
    table = _Table(data, source, ELFError)
    wanted = {name.encode(): name for name in names}
    found: dict[str, tuple[int, int]] = {}
    for index, (name_off, sh_type, _f, _a, offset, size, _l, _i) in enumerate(table.rows):
        name = wanted.get(table.name(name_off))
        if name is not None and name not in found:
            table.check_inside(index, sh_type, offset, size)
            found[name] = (offset, size)
    return found


class _Table:
    """The section header table of an ELF file, checked to lie inside it, as rows of raw fields
    (name, type, flags, addr, offset, size, link, info), and the section names."""

    def __init__(self, data: Buffer, source: str | None, error: type[ParseError]) -> None:
        self.source, self.error = source, error
        self.size = size = len(data)
        if size < 0x34 or bytes(data[:4]) != b"\x7fELF":
            raise self.fail("not an ELF file (bad magic or truncated header)", 0)
        elf_class, elf_data = data[4], data[5]
        if elf_data not in (1, 2):
            raise self.fail(f"bad ELF data encoding {elf_data}", 5)
        order = "<" if elf_data == 1 else ">"
        if elf_class == 2:
            if size < 0x40:
                raise self.fail("ELF header is truncated", 0)
            (shoff,) = struct.unpack_from(order + "Q", data, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(order + "3H", data, 0x3A)
            sh_format, sh_min = order + "IIQQQQII", 0x40
        elif elf_class == 1:
            (shoff,) = struct.unpack_from(order + "I", data, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(order + "3H", data, 0x2E)
            sh_format, sh_min = order + "IIIIIIII", 0x28
        else:
            raise self.fail(f"bad ELF class {elf_class}", 4)
        self.shoff, self.shentsize = shoff, shentsize

        def raw(index: int) -> tuple[int, ...]:
            at = shoff + index * shentsize
            if at + sh_min > size:
                raise self.fail(f"ELF section header {index} is outside the file", at)
            return struct.unpack_from(sh_format, data, at)

        if shoff == 0 or shentsize < sh_min:
            raise self.fail("ELF file has no usable section headers", 0x20)
        if shnum == 0:  # extended numbering: the count is in section 0
            shnum = raw(0)[5]
        if shstrndx == 0xFFFF:  # SHN_XINDEX: the index is section 0's sh_link
            shstrndx = raw(0)[6]
        if shoff + shnum * shentsize > size:
            raise self.fail(f"ELF section headers ({shnum} at {shoff:#x}) run past the file", 0x20)
        if shstrndx >= shnum:
            raise self.fail(f"ELF section name table index {shstrndx} is out of range", 0x3E)
        _n, _t, _f, _a, names_at, names_size, _l, _i = raw(shstrndx)
        if names_at + names_size > size:
            raise self.fail(
                "ELF section name table runs past the file", self.header_offset(shstrndx)
            )
        self.names = bytes(data[names_at : names_at + names_size])
        if shentsize == sh_min:  # the usual case: every header in one call
            padded = f"{sh_format}{sh_min - struct.calcsize(sh_format)}x"
            table = data[shoff : shoff + shnum * shentsize]
            self.rows: list[tuple[int, ...]] = list(struct.iter_unpack(padded, table))
        else:
            self.rows = [raw(index) for index in range(shnum)]

    def fail(self, message: str, offset: int) -> ParseError:
        return self.error(message, source=self.source, offset=offset)

    def name(self, offset: int) -> bytes:
        """The section name at `offset` in the name table; empty where none ends there."""
        end = self.names.find(b"\0", offset)
        return self.names[offset:end] if 0 <= offset < end else b""

    def header_offset(self, index: int) -> int:
        return self.shoff + index * self.shentsize

    def check_inside(self, index: int, sh_type: int, offset: int, size: int) -> None:
        if sh_type != SHT_NOBITS and offset + size > self.size:
            raise self.fail(
                f"ELF section {index} ({offset:#x}+{size:#x}) runs past the file",
                self.header_offset(index),
            )


def section_bytes(data: Buffer, name: str, source: str | None = None) -> bytes | None:
    """The contents of the first section called `name`; None if there is none. Raises ELFError."""
    for section in section_headers(data, source):
        if section.name == name:
            return bytes(data[section.offset : section.offset + section.size])
    return None


def bytes_at_address(
    data: Buffer, address: int, size: int, source: str | None = None
) -> bytes | None:
    """The `size` bytes an executable ELF holds for memory at `address`, from the one section
    that holds all of them; None if none does. Raises ELFError."""
    for section in section_headers(data, source):
        start = address - section.address
        if section.address and section.type != SHT_NOBITS and 0 <= start <= section.size - size:
            return bytes(data[section.offset + start : section.offset + start + size])
    return None
