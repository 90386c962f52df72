"""Kernel modules (`.ko`, decompressed) and vmlinux ELF files: name, `.BTF`, `.BTF_ids` sets.

The `.BTF` bytes are returned raw: module BTF is split BTF, which the caller parses on the vmlinux
base (weak_bpf.parsers.btf.BTF.from_bytes(data, base=vmlinux_btf)).

`.BTF_ids` sets are found through their symbols, `__BTF_ID__set8__<name>` (struct btf_id_set8:
u32 cnt, u32 flags, then cnt pairs of u32 id and u32 flags; kfunc sets since 6.0) and
`__BTF_ID__set__<name>` (struct btf_id_set: u32 cnt, then cnt u32 ids; older kfunc sets and other
id sets). resolve_btfids sorts each set by id after the build, so the `__BTF_ID__func__<name>`
symbols inside a set no longer say which id is which: names come from BTF, not from here.
A vmlinux taken out of a vmlinuz has no symbols: then `has_symbols` is false and there are no sets.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

from elftools.common.exceptions import ELFError as PyELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from weak_bpf.errors import ELFError
from weak_bpf.parsers.bytestream import ByteStream
from weak_bpf.parsers.elf import section_headers

# KF_* bits of the `flags` in each set8 pair (include/linux/btf.h). The table is the newest
# meaning of each bit; KF_KPTR_GET (bit 3) existed in 6.0 to 6.3 and its bit has been free since.
KF_FLAGS: tuple[tuple[int, str], ...] = (
    (1 << 0, "KF_ACQUIRE"),
    (1 << 1, "KF_RELEASE"),
    (1 << 2, "KF_RET_NULL"),
    (1 << 3, "KF_KPTR_GET"),  # 6.0-6.3 only
    (1 << 4, "KF_TRUSTED_ARGS"),  # 6.0+; the default for every kfunc from 6.19 or so
    (1 << 5, "KF_SLEEPABLE"),
    (1 << 6, "KF_DESTRUCTIVE"),  # 6.1+
    (1 << 7, "KF_RCU"),  # 6.2+
    (1 << 8, "KF_ITER_NEW"),  # 6.4+
    (1 << 9, "KF_ITER_NEXT"),
    (1 << 10, "KF_ITER_DESTROY"),
    (1 << 11, "KF_RCU_PROTECTED"),  # 6.7+
    (1 << 12, "KF_FASTCALL"),  # 6.13+
    (1 << 13, "KF_ARENA_RET"),  # 6.15+
    (1 << 14, "KF_ARENA_ARG1"),
    (1 << 15, "KF_ARENA_ARG2"),
)
BTF_SET8_KFUNCS = 1 << 0  # set8 header flag (6.8+): the set holds kfuncs

_SET8_PREFIX = "__BTF_ID__set8__"
_SET_PREFIX = "__BTF_ID__set__"
_MODNAME_OFFSET = {64: 24, 32: 12}  # struct module: state, list_head, then char name[]
_MODNAME_LEN = {64: 56, 32: 60}  # MODULE_NAME_LEN = 64 - sizeof(unsigned long)


def decode_kf_flags(flags: int) -> tuple[str, ...]:
    """The KF_* names of `flags`; an unknown bit n shows as "bit<n>"."""
    names = [name for bit, name in KF_FLAGS if flags & bit]
    known = sum(bit for bit, _ in KF_FLAGS)
    names.extend(f"bit{n}" for n in range(32) if flags & ~known & (1 << n))
    return tuple(names)


@dataclasses.dataclass(frozen=True)
class IdSetEntry:
    btf_id: int
    flags: int = 0  # raw KF_* bits (set8 only)

    @property
    def flag_names(self) -> tuple[str, ...]:
        return decode_kf_flags(self.flags)


@dataclasses.dataclass(frozen=True)
class BtfIdSet:
    name: str  # the set's C name, e.g. "nf_ct_kfunc_set"
    kind: str  # "set8" or "set"
    flags: int  # the set8 header flags (BTF_SET8_KFUNCS); 0 for "set"
    entries: tuple[IdSetEntry, ...]


@dataclasses.dataclass(frozen=True)
class KernelObject:
    """What weak-bpf-progs needs from a .ko or a vmlinux."""

    name: str | None  # the module name; None for vmlinux
    btf: bytes | None = dataclasses.field(repr=False)  # the raw .BTF section
    id_sets: tuple[BtfIdSet, ...]
    has_symbols: bool
    modinfo: tuple[tuple[str, str], ...] = ()
    little_endian: bool = True

    @property
    def kfunc_sets(self) -> tuple[BtfIdSet, ...]:
        """The set8 sets: kfunc registrations (a set8 holds kfuncs in every kernel so far)."""
        return tuple(s for s in self.id_sets if s.kind == "set8")

    def modinfo_value(self, key: str) -> str | None:
        return next((v for k, v in self.modinfo if k == key), None)


def read_kernel_object(data: bytes, source: str | None = None) -> KernelObject:
    """Read a .ko or vmlinux ELF. Raises weak_bpf.errors.ELFError on anything unreadable."""
    try:
        return _read(bytes(data), source)
    except ELFError:
        raise
    except (PyELFError, struct.error, ValueError, IndexError, KeyError, TypeError) as e:
        # pyelftools raises these on truncated or inconsistent headers
        raise ELFError(f"unreadable ELF file: {e}", source=source) from None


def _read(data: bytes, source: str | None) -> KernelObject:
    if not data.startswith(b"\x7fELF"):
        raise ELFError("not an ELF file (bad magic)", source=source, offset=0)
    section_headers(data, source)  # pyelftools trusts the table: check it
    elf = ELFFile(ByteStream(data))
    bits = elf.elfclass
    little = elf.little_endian
    sections: dict[str, tuple[int, Any]] = {}
    for index, section in enumerate(elf.iter_sections()):
        sections.setdefault(section.name, (index, section))
    modinfo = _modinfo(_section_bytes(data, sections, ".modinfo", source))
    name = next((v for k, v in modinfo if k == "name"), None)
    if name is None and ".gnu.linkonce.this_module" in sections:
        raw = _section_bytes(data, sections, ".gnu.linkonce.this_module", source) or b""
        start = _MODNAME_OFFSET[bits]
        field = raw[start : start + _MODNAME_LEN[bits]].split(b"\0", 1)[0]
        name = field.decode("utf-8", "replace") or None
    btf = _section_bytes(data, sections, ".BTF", source)
    symtab = elf.get_section_by_name(".symtab")
    has_symbols = isinstance(symtab, SymbolTableSection) and symtab.num_symbols() > 1
    id_sets: tuple[BtfIdSet, ...] = ()
    if has_symbols and ".BTF_ids" in sections:
        assert isinstance(symtab, SymbolTableSection)
        id_sets = _id_sets(
            data, elf, sections[".BTF_ids"], symtab=symtab, little=little, source=source
        )
    return KernelObject(name, btf, id_sets, has_symbols, modinfo, little)


def _section_bytes(
    data: bytes, sections: dict[str, tuple[int, Any]], name: str, source: str | None
) -> bytes | None:
    if name not in sections:
        return None
    section = sections[name][1]
    if section["sh_type"] == "SHT_NOBITS":
        return b""
    start, size = section["sh_offset"], section["sh_size"]
    if start + size > len(data):
        raise ELFError(
            f"section {name} [{start:#x}, {start + size:#x}) runs past the end of the file",
            source=source,
            offset=start,
        )
    return data[start : start + size]


def _modinfo(raw: bytes | None) -> tuple[tuple[str, str], ...]:
    if not raw:
        return ()
    pairs = []
    for item in raw.split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep:
            pairs.append((key, value))
    return tuple(pairs)


def _id_sets(
    data: bytes,
    elf: ELFFile,
    btf_ids: tuple[int, Any],
    *,
    symtab: SymbolTableSection,
    little: bool,
    source: str | None,
) -> tuple[BtfIdSet, ...]:
    index, section = btf_ids
    raw = _section_bytes(data, {".BTF_ids": btf_ids}, ".BTF_ids", source) or b""
    relocatable = elf["e_type"] == "ET_REL"
    order = "<" if little else ">"
    sets = []
    for symbol in symtab.iter_symbols():
        name = symbol.name
        if name.startswith(_SET8_PREFIX):
            kind, set_name = "set8", name[len(_SET8_PREFIX) :]
        elif name.startswith(_SET_PREFIX):
            kind, set_name = "set", name[len(_SET_PREFIX) :]
        else:
            continue
        if symbol["st_shndx"] != index:
            continue
        offset = symbol["st_value"] - (0 if relocatable else section["sh_addr"])
        sets.append(
            _one_set(
                raw, offset, kind, set_name, order=order, source=source, base=section["sh_offset"]
            )
        )
    return tuple(sorted(sets, key=lambda s: s.name))


def _one_set(
    raw: bytes, offset: int, kind: str, name: str, *, order: str, source: str | None, base: int
) -> BtfIdSet:
    header = 8 if kind == "set8" else 4
    entry_size = 8 if kind == "set8" else 4
    if offset < 0 or offset + header > len(raw):
        raise ELFError(
            f".BTF_ids set {name} at {offset:#x} lies outside the section",
            source=source,
            offset=base + max(offset, 0),
        )
    (count,) = struct.unpack_from(order + "I", raw, offset)
    set_flags = struct.unpack_from(order + "I", raw, offset + 4)[0] if kind == "set8" else 0
    end = offset + header + count * entry_size
    if end > len(raw):  # checked before reading, so a huge count costs nothing
        raise ELFError(
            f".BTF_ids set {name} claims {count} entries, more than the section holds",
            source=source,
            offset=base + offset,
        )
    if kind == "set8":
        flat = struct.unpack_from(f"{order}{2 * count}I", raw, offset + header)
        entries = tuple(IdSetEntry(flat[i], flat[i + 1]) for i in range(0, 2 * count, 2))
    else:
        ids = struct.unpack_from(f"{order}{count}I", raw, offset + header)
        entries = tuple(IdSetEntry(i) for i in ids)
    return BtfIdSet(name, kind, set_flags, entries)
