"""The symbol table (`.symtab`) of a vmlinux ELF, as a System.map.

A debuginfo vmlinux (RHEL's kernel-debuginfo, Debian's linux-image-K-dbg) keeps the symbol table
that the installed image lost, so it answers what Debian's placeholder System.map cannot: is there
a function to put a kprobe on, a symbol for a typeless ksym. Each symbol gets the letter `nm`
would give it, from its binding, its type and the flags of its section.
"""

from __future__ import annotations

import struct

from weak_bpf.errors import ELFError
from weak_bpf.parsers.elf import SHT_NOBITS, Buffer, section_headers
from weak_bpf.parsers.sysmap import SystemMap

SHT_SYMTAB = 2
SHF_WRITE = 0x1
SHF_EXECINSTR = 0x4
SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00
SHN_ABS = 0xFFF1
STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 1, 2, 3, 4
STB_LOCAL, STB_WEAK = 0, 2


def symbol_map(data: Buffer, source: str | None = None) -> SystemMap | None:
    """The symbols of an ELF file's `.symtab`, as `address letter name` lines; None when the file
    has no symbol table (a stripped vmlinux). Raises ELFError."""
    headers = section_headers(data, source)
    symtab = next((h for h in headers if h.type == SHT_SYMTAB), None)
    if symtab is None:
        return None
    if not 0 < symtab.link < len(headers):
        raise ELFError(
            f"the symbol table's string table index {symtab.link} is out of range",
            source=source,
            offset=symtab.header_offset,
        )
    strtab = headers[symtab.link]
    if strtab.type == SHT_NOBITS:
        raise ELFError("the symbol table's strings have no data", source=source, offset=0)
    strings = bytes(data[strtab.offset : strtab.offset + strtab.size])
    order = "<" if data[5] == 1 else ">"
    if data[4] == 2:  # Elf64_Sym: name, info, other, shndx, value, size
        entry, fields = 24, order + "IBBHQQ"
    else:  # Elf32_Sym: name, value, size, info, other, shndx
        entry, fields = 16, order + "IIIBBH"
    table = bytes(data[symtab.offset : symtab.offset + symtab.size - symtab.size % entry])
    flags = [(h.flags, h.type) for h in headers]
    lines: list[str] = []
    names: list[str] = []
    for raw in struct.iter_unpack(fields, table):
        if entry == 24:
            name_off, info, _other, shndx, value, _size = raw
        else:
            name_off, value, _size, info, _other, shndx = raw
        letter = _letter(info, shndx, flags)
        if letter is None or not 0 < name_off < len(strings):
            continue
        end = strings.find(b"\0", name_off)
        name = strings[name_off : end if end >= 0 else len(strings)].decode("ascii", "replace")
        if not name or " " in name or "\t" in name:
            continue
        lines.append(f"{value:016x} {letter} {name}")
        names.append(name)
    return SystemMap(tuple(lines), tuple(names), source)


def _letter(info: int, shndx: int, sections: list[tuple[int, int]]) -> str | None:
    """nm's letter for a symbol; None for what System.map leaves out (files, sections,
    undefined symbols)."""
    kind, binding = info & 0xF, info >> 4
    if kind in (STT_SECTION, STT_FILE) or shndx == SHN_UNDEF:
        return None
    if shndx == SHN_ABS:
        letter = "a"
    elif shndx >= SHN_LORESERVE or shndx >= len(sections):
        return None
    else:
        flags, sh_type = sections[shndx]
        if flags & SHF_EXECINSTR or kind == STT_FUNC:
            letter = "t"
        elif sh_type == SHT_NOBITS:
            letter = "b"
        elif flags & SHF_WRITE:
            letter = "d"
        else:
            letter = "r"
    if binding == STB_WEAK:
        return "W" if letter == "t" else "V"
    return letter if binding == STB_LOCAL else letter.upper()
