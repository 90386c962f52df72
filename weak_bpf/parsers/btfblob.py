"""The frame of a BTF blob (pure): its header, where its sections lie, the layout section, and the
`.BTF` section of an ELF file. What the type section holds is btf.py's business.

Header: hdr_len 24 is the classic header; 32 adds layout_off/layout_len (kernel 7.1+), whose
layout section gives each kind's record sizes (struct btf_layout: u8 info_sz, u8 elem_sz, u16
flags), so that kinds unknown here (> 19) can be skipped. A hdr_len between 24 and 32 is read as
24; fields past 32 are ignored (forward compatible, as libbpf).
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Protocol

from weak_bpf.errors import BTFError
from weak_bpf.parsers.btftypes import KindLayout
from weak_bpf.parsers.elf import SHF_COMPRESSED, SHT_NOBITS, section_headers

MAGIC = 0xEB9F
VERSION = 1
HEADER_LEN = 24  # magic..str_len
HEADER_LEN_LAYOUT = 32  # + layout_off, layout_len (kernel 7.1+)
ELF_MAGIC = b"\x7fELF"


class ErrorAt(Protocol):
    """Makes the error to raise for a problem at `offset` in the blob."""

    def __call__(self, message: str, offset: int, hint: str | None = None) -> BTFError: ...


@dataclasses.dataclass(frozen=True)
class Header:
    """A validated header. Offsets are from the start of the blob, not from the header's end."""

    byteorder: str  # "little" or "big"
    version: int
    flags: int
    hdr_len: int
    type_start: int
    type_len: int
    strings_start: int
    strings_len: int
    layout_start: int
    layout_len: int

    @property
    def order(self) -> str:
        """The struct module's byte-order prefix."""
        return "<" if self.byteorder == "little" else ">"


def read_header(view: memoryview, error: ErrorAt) -> Header:
    """Validate the header and the section bounds of the blob in `view`."""
    size = len(view)
    if size < HEADER_LEN:
        raise error(f"{size} bytes are too few for a BTF header", 0)
    magic_le = view[0] | view[1] << 8
    if magic_le == MAGIC:
        byteorder, order = "little", "<"
    elif magic_le == 0x9FEB:
        byteorder, order = "big", ">"
    else:
        raise error(
            f"bad BTF magic {bytes(view[:2]).hex()}",
            0,
            "expected eb9f (little-endian) or 9feb (big-endian) BTF, or an ELF file",
        )
    version, flags = view[2], view[3]
    if version != VERSION:
        raise error(f"unsupported BTF version {version}", 2)
    hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(order + "5I", view, 4)
    if hdr_len < HEADER_LEN:
        raise error(f"BTF header length {hdr_len} is below {HEADER_LEN}", 4)
    if hdr_len > size:
        raise error(f"BTF header length {hdr_len} exceeds the data ({size} bytes)", 4)
    layout_off = layout_len = 0
    if hdr_len >= HEADER_LEN_LAYOUT:
        layout_off, layout_len = struct.unpack_from(order + "2I", view, HEADER_LEN)
    body = size - hdr_len
    if str_off + str_len > body:
        raise error(f"string section {str_off}+{str_len} runs past the data ({body} bytes)", 16)
    if type_off + type_len > str_off:
        raise error(f"type section {type_off}+{type_len} overlaps the strings at {str_off}", 8)
    if type_off % 4 or type_len % 4:
        raise error(f"type section {type_off}+{type_len} is not 4-byte aligned", 8)
    if layout_len:
        if layout_off % 4 or layout_len % 4:
            raise error(f"layout section {layout_off}+{layout_len} is not 4-byte aligned", 24)
        if layout_off < type_off + type_len or layout_off + layout_len > str_off:
            raise error(
                f"layout section {layout_off}+{layout_len} is not between the type section "
                f"and the strings",
                24,
            )
    return Header(
        byteorder,
        version,
        flags,
        hdr_len,
        hdr_len + type_off,
        type_len,
        hdr_len + str_off,
        str_len,
        hdr_len + layout_off,
        layout_len,
    )


def read_strings(view: memoryview, header: Header, *, split: bool, error: ErrorAt) -> bytes:
    """The string section, checked: it ends with NUL and, unless split, starts with ""."""
    at = header.strings_start
    strings = bytes(view[at : at + header.strings_len])
    if strings:
        if strings[-1] != 0:
            raise error("the string section does not end with NUL", at)
        if not split and strings[0] != 0:
            raise error(
                "the string section does not start with an empty string",
                at,
                "this looks like split BTF (module BTF): give its vmlinux as the base",
            )
    elif not split:
        raise error("empty string section", 16)
    return strings


def read_layout(view: memoryview, header: Header) -> tuple[KindLayout, ...]:
    """The layout section's entries, one per kind; () without one."""
    entries = []
    start = header.layout_start
    for pos in range(start, start + header.layout_len, 4):
        info_size, elem_size, flags = struct.unpack_from(header.order + "BBH", view, pos)
        entries.append(KindLayout(info_size, elem_size, flags))
    return tuple(entries)


def pack(
    byteorder: str,
    *,
    version: int,
    flags: int,
    with_layout_fields: bool,
    types: bytes,
    layout: tuple[KindLayout, ...],
    strings: bytes,
) -> bytes:
    """A canonical blob: header, types, layout, strings."""
    order = "<" if byteorder == "little" else ">"
    layout_bytes = b"".join(
        struct.pack(order + "BBH", e.info_size, e.elem_size, e.flags) for e in layout
    )
    hdr_len = HEADER_LEN_LAYOUT if layout or with_layout_fields else HEADER_LEN
    header = struct.pack(
        order + "HBBIIIII",
        MAGIC,
        version,
        flags,
        hdr_len,
        0,
        len(types),
        len(types) + len(layout_bytes),
        len(strings),
    )
    if hdr_len == HEADER_LEN_LAYOUT:
        header += struct.pack(order + "II", len(types) if layout_bytes else 0, len(layout_bytes))
    return header + types + layout_bytes + strings


def elf_btf_section(view: memoryview, source: str | None) -> tuple[int, int]:
    """Offset and size of the `.BTF` section of an ELF file (either class, either byte order)."""
    for sec in section_headers(view, source, error=BTFError):
        if sec.name != ".BTF":
            continue
        if sec.type == SHT_NOBITS:
            raise BTFError(
                "the .BTF section has no data (NOBITS)", source=source, offset=sec.header_offset
            )
        if sec.flags & SHF_COMPRESSED:
            raise BTFError(
                "the .BTF section is compressed, which this reader does not support",
                source=source,
                offset=sec.header_offset,
            )
        return sec.offset, sec.size
    raise BTFError(
        "ELF file has no .BTF section",
        source=source,
        offset=0,
        hint="build the kernel or module with CONFIG_DEBUG_INFO_BTF, or pass a raw BTF file",
    )
