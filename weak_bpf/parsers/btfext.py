"""The `.BTF.ext` section of a BPF object: func_info, line_info and CO-RE relocations.

Layout (kernel include/uapi/linux/btf.h, libbpf src/libbpf_internal.h): a header with magic 0xeB9F,
version, flags and hdr_len, then offset/length pairs (relative to the end of the header) for
func_info, line_info and, when hdr_len >= 32, core_relo. Each info area starts with a u32 record
size, followed by blocks `{u32 sec_name_off; u32 num_info; record[num_info]}`. Instruction
offsets in a `.o` file are byte offsets into the section.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Iterator
from typing import Any, Callable, Protocol, Union

from weak_bpf.errors import BTFError

MAGIC = 0xEB9F
_HEADER_MIN = 24
_HEADER_WITH_CORE = 32


class CoreReloKind(enum.IntEnum):
    """libbpf's enum bpf_core_relo_kind."""

    FIELD_BYTE_OFFSET = 0
    FIELD_BYTE_SIZE = 1
    FIELD_EXISTS = 2
    FIELD_SIGNED = 3
    FIELD_LSHIFT_U64 = 4
    FIELD_RSHIFT_U64 = 5
    TYPE_ID_LOCAL = 6
    TYPE_ID_TARGET = 7
    TYPE_EXISTS = 8
    TYPE_SIZE = 9
    ENUMVAL_EXISTS = 10
    ENUMVAL_VALUE = 11
    TYPE_MATCHES = 12

    @property
    def is_existence(self) -> bool:
        """Resolves to 0 or 1 instead of failing when the target is absent."""
        return self in (
            CoreReloKind.FIELD_EXISTS,
            CoreReloKind.TYPE_EXISTS,
            CoreReloKind.ENUMVAL_EXISTS,
        )

    @property
    def is_field_based(self) -> bool:
        return self <= CoreReloKind.FIELD_RSHIFT_U64

    @property
    def is_type_based(self) -> bool:
        return self in (
            CoreReloKind.TYPE_ID_LOCAL,
            CoreReloKind.TYPE_ID_TARGET,
            CoreReloKind.TYPE_EXISTS,
            CoreReloKind.TYPE_SIZE,
            CoreReloKind.TYPE_MATCHES,
        )

    @property
    def is_enumval_based(self) -> bool:
        return self in (CoreReloKind.ENUMVAL_EXISTS, CoreReloKind.ENUMVAL_VALUE)


@dataclasses.dataclass(frozen=True)
class FuncInfo:
    section: str
    insn_off: int  # bytes into the section
    type_id: int  # a BTF FUNC of the object

    @property
    def insn_index(self) -> int:
        return self.insn_off // 8


@dataclasses.dataclass(frozen=True)
class LineInfo:
    section: str
    insn_off: int
    file_name: str
    line_text: str
    line: int
    column: int

    @property
    def insn_index(self) -> int:
        return self.insn_off // 8


@dataclasses.dataclass(frozen=True)
class CoreRelo:
    section: str
    insn_off: int
    type_id: int  # the local (object BTF) type the access starts from
    access: str  # e.g. "0:1:2"; "0" for type and enum-value relocations' enumerator index
    kind: CoreReloKind | int  # an int if the kind is newer than this reader

    @property
    def insn_index(self) -> int:
        return self.insn_off // 8

    @property
    def access_indexes(self) -> tuple[int, ...]:
        """The access string as numbers; () if it is not a list of numbers."""
        try:
            return tuple(int(part) for part in self.access.split(":"))
        except ValueError:
            return ()


@dataclasses.dataclass(frozen=True)
class BtfExt:
    byteorder: str
    version: int
    flags: int
    func_info: tuple[FuncInfo, ...]
    line_info: tuple[LineInfo, ...]
    core_relos: tuple[CoreRelo, ...]

    def core_relos_in(self, section: str) -> tuple[CoreRelo, ...]:
        return tuple(relo for relo in self.core_relos if relo.section == section)

    def func_info_in(self, section: str) -> tuple[FuncInfo, ...]:
        return tuple(info for info in self.func_info if info.section == section)


class _HasStrings(Protocol):
    def string(self, offset: int) -> str: ...


StringLookup = Union[Callable[[int], str], _HasStrings]


def parse_btf_ext(
    data: bytes,
    strings: StringLookup,
    *,
    source: str | None = None,
) -> BtfExt:
    """Parse `.BTF.ext`; `strings` resolves offsets in the object's BTF string table (a BTF
    object or a callable). Raises BTFError."""
    lookup: Callable[[int], str] = strings if callable(strings) else strings.string
    try:
        return _parse(memoryview(data), lookup)
    except BTFError as err:
        raise (err.located(source) if source else err) from None
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as err:
        raise BTFError(f"bad .BTF.ext: {err}", source=source) from err


def _parse(data: memoryview, lookup: Callable[[int], str]) -> BtfExt:
    if len(data) < _HEADER_MIN:
        raise BTFError(f".BTF.ext is {len(data)} bytes, shorter than its header", offset=0)
    magic_le = struct.unpack_from("<H", data, 0)[0]
    if magic_le == MAGIC:
        order, endian = "little", "<"
    elif magic_le == 0x9FEB:
        order, endian = "big", ">"
    else:
        raise BTFError(f".BTF.ext magic {magic_le:#06x} is not {MAGIC:#06x}", offset=0)
    version, flags, hdr_len = struct.unpack_from(endian + "BBI", data, 2)
    if version != 1:
        raise BTFError(f".BTF.ext version {version} is not supported", offset=2)
    if hdr_len < _HEADER_MIN or hdr_len > len(data):
        raise BTFError(f".BTF.ext hdr_len {hdr_len} is out of range", offset=4)
    fi_off, fi_len, li_off, li_len = struct.unpack_from(endian + "4I", data, 8)
    cr_off = cr_len = 0
    if hdr_len >= _HEADER_WITH_CORE:
        cr_off, cr_len = struct.unpack_from(endian + "2I", data, 24)
    body = data[hdr_len:]
    opts: dict[str, Any] = {"endian": endian, "lookup": lookup, "base": hdr_len}

    func_info = tuple(
        FuncInfo(section, *struct.unpack_from(endian + "2I", rec))
        for section, rec in _records(body, (fi_off, fi_len), 8, **opts)
    )
    line_info = []
    for section, rec in _records(body, (li_off, li_len), 16, **opts):
        insn_off, file_off, line_off, line_col = struct.unpack_from(endian + "4I", rec)
        line_info.append(
            LineInfo(
                section,
                insn_off,
                lookup(file_off),
                lookup(line_off),
                line_col >> 10,
                line_col & 0x3FF,
            )
        )
    core_relos = []
    for section, rec in _records(body, (cr_off, cr_len), 16, **opts):
        insn_off, type_id, access_off, kind = struct.unpack_from(endian + "4I", rec)
        core_relos.append(CoreRelo(section, insn_off, type_id, lookup(access_off), _kind(kind)))
    return BtfExt(order, version, flags, func_info, tuple(line_info), tuple(core_relos))


def _kind(value: int) -> CoreReloKind | int:
    try:
        return CoreReloKind(value)
    except ValueError:
        return value


def _records(
    body: memoryview,
    area: tuple[int, int],
    min_rec_size: int,
    *,
    endian: str,
    lookup: Callable[[int], str],
    base: int,
) -> Iterator[tuple[str, memoryview]]:
    """Yield (section name, record bytes) for one info area: `area` is (offset, length)."""
    off, length = area
    if length == 0:
        return
    if off + length > len(body) or length < 4:
        raise BTFError(
            f".BTF.ext area [{off}, {off + length}) is outside the section", offset=base + off
        )
    data = body[off : off + length]
    rec_size = struct.unpack_from(endian + "I", data, 0)[0]
    if rec_size < min_rec_size or rec_size % 4:
        raise BTFError(f".BTF.ext record size {rec_size} is invalid", offset=base + off)
    pos = 4
    while pos < length:
        if pos + 8 > length:
            raise BTFError(".BTF.ext block header is truncated", offset=base + off + pos)
        name_off, count = struct.unpack_from(endian + "2I", data, pos)
        pos += 8
        if count == 0 or count * rec_size > length - pos:
            raise BTFError(
                f".BTF.ext block claims {count} records of {rec_size} bytes",
                offset=base + off + pos - 4,
            )
        section = lookup(name_off)
        for _ in range(count):
            yield section, data[pos : pos + rec_size]
            pos += rec_size
