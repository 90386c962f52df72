"""BPF object reader: an ELF relocatable object for EM_BPF, as clang writes it and libbpf loads it.

What libbpf would see, without loading anything: programs (FUNC symbols in executable sections
other than `.text`) with their section-implied type and target, `.text` subprograms, license,
maps, `.ksyms`/`.kconfig` externs (ELF symbols cross-checked with the BTF DATASECs), helper ids,
kfunc call sites, extern loads, BPF-to-BPF calls, the object's BTF and `.BTF.ext` with its CO-RE
relocations, and the raw `.greylist` section. What each function calls is read in `objcalls.py`,
the externs in `objexterns.py`.

Instruction indexes are slots in the code section (byte offset / 8), as in relocations and
`.BTF.ext`; `Function.insn_start` converts them to program-relative ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
from collections.abc import Iterator, Mapping

from weak_bpf.errors import BTFError, ELFError, ParseError
from weak_bpf.parsers.btf import BTF, Kind
from weak_bpf.parsers.btfext import BtfExt, parse_btf_ext
from weak_bpf.parsers.elf import Buffer, elf_header, section_headers
from weak_bpf.parsers.insn import Insn, decode
from weak_bpf.parsers.objcalls import summarise_function
from weak_bpf.parsers.objexterns import read_externs
from weak_bpf.parsers.objstructops import STRUCT_OPS_SECTIONS, read_struct_ops
from weak_bpf.parsers.objvalues import (
    SHN_UNDEF,
    STB_LOCAL,
    BpfObject,
    CoreReloSite,
    DataSection,
    Function,
    Map,
    Relocation,
    StructOps,
    Symbol,
    function_containing,
)
from weak_bpf.parsers.sections import section_info

EM_BPF = 247
ET_REL = 1
_DEBUG = re.compile(r"\.(rel|rela)?\.?debug_")
_EHDR64_SIZE = 64  # the ELF header of a 64-bit object
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_NOBITS = 8
SHT_REL = 9
SHF_EXECINSTR = 0x4
SHN_ABS = 0xFFF1
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION = 0, 1, 2, 3

TEXT = ".text"
MAPS = ".maps"
LEGACY_MAPS = "maps"
GREYLIST = ".greylist"
# Sections libbpf turns into internal array maps (global data), not user maps.
_DATA_PREFIXES = (".data", ".rodata", ".bss")


def read_bpf_object(
    data: Buffer, source: str | None = None, *, seen: Mapping[str, BpfObject] | None = None
) -> BpfObject:
    """Read a BPF ELF object (bytes, or a mapped file: its DWARF is never touched). Raises
    ELFError (or BTFError for bad BTF) on bad input. `seen`: objects read before, by digest; an
    object with one of their digests is that object, named `source`, and only its section table
    is read."""
    try:
        return _Reader(data, source).read(seen or {})
    except ParseError as err:
        raise (err.located(source) if source else err) from None
    except (
        struct.error,
        IndexError,
        KeyError,
        ValueError,
        UnicodeDecodeError,
        OverflowError,
    ) as err:
        raise ELFError(f"not a readable BPF object: {err}", source=source) from err


@dataclasses.dataclass
class _Section:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    data: bytes


class _Reader:
    def __init__(self, data: Buffer, source: str | None) -> None:
        self.raw = data if isinstance(data, bytes) else memoryview(data).cast("B")
        self.source = source

    # --- ELF structure -------------------------------------------------------------------------

    def read(self, seen: Mapping[str, BpfObject]) -> BpfObject:
        if bytes(self.raw[:4]) != b"\x7fELF":
            raise ELFError("not an ELF file (bad magic)", offset=0)
        self.sections = self._elf_layout()
        same = seen.get(self.digest)
        if same is not None:
            return dataclasses.replace(same, source=self.source)
        self.by_name = {sec.name: sec for sec in self.sections}
        self.symbols = self._symbols()

        btf = self._btf()
        btf_ext = self._btf_ext(btf)
        code = {
            sec.index: decode(sec.data, self.byteorder)
            for sec in self.sections
            if self._is_code(sec)
        }
        self.code_sections = frozenset(self.sections[index].name for index in code)
        relocs = self._relocations(code)
        functions = self._functions(code, relocs)
        programs = tuple(f for f in functions if f.section != TEXT)
        subprograms = tuple(f for f in functions if f.section == TEXT)
        ksyms, kconfig, problems = read_externs(self.symbols, btf, relocs)
        core = self._core_relos(btf, btf_ext, programs, subprograms)
        return BpfObject(
            source=self.source,
            byteorder=self.byteorder,
            license=self._license(),
            kernel_version=self._kernel_version(),
            programs=programs,
            subprograms=subprograms,
            maps=self._maps(btf),
            data_sections=self._data_sections(),
            ksyms=ksyms,
            kconfig=kconfig,
            extern_problems=problems,
            relocations=tuple(r for rs in relocs.values() for r in rs),
            core_relos=core,
            btf=btf,
            btf_ext=btf_ext,
            greylist=self._section_bytes(GREYLIST),
            struct_ops=self._struct_ops(btf, programs),
            digest=self.digest,
        )

    def _elf_layout(self) -> list[_Section]:
        """Check the ELF header and read the (validated) section table."""
        header = elf_header(self.raw, self.source)
        if header.machine != EM_BPF:
            raise ELFError(
                f"not a BPF object: e_machine is {header.machine}",
                offset=0x12,
                hint="BPF objects are built with clang -target bpf",
            )
        if header.type != ET_REL:
            raise ELFError(f"not a relocatable BPF object: e_type is {header.type}", offset=0x10)
        if header.elf_class != 64:
            raise ELFError("BPF objects are 64-bit ELF", offset=4)
        self.byteorder = header.byteorder
        self.endian = "<" if header.byteorder == "little" else ">"
        sections = [
            _Section(
                h.index,
                h.name,
                h.type,
                h.flags,
                h.offset,
                h.size,
                h.link,
                h.info,
                # DWARF is most of an object's bytes and nothing here reads it
                b""
                if h.type in (SHT_NOBITS, 0) or _DEBUG.match(h.name)
                else bytes(self.raw[h.offset : h.offset + h.size]),
            )
            for h in section_headers(self.raw, self.source)
        ]
        digest = hashlib.sha256(bytes(self.raw[:_EHDR64_SIZE]))
        for sec in sections:
            fields = (sec.name, sec.type, sec.flags, sec.size, sec.link, sec.info)
            digest.update(repr(fields).encode("utf-8", "surrogateescape"))
            digest.update(sec.data)
        self.digest = digest.hexdigest()
        return sections

    def _symbols(self) -> list[Symbol]:
        symtabs = [sec for sec in self.sections if sec.type == SHT_SYMTAB]
        if not symtabs:
            raise ELFError("no symbol table", hint="was the object stripped?")
        symtab = symtabs[0]
        if symtab.link >= len(self.sections):
            raise ELFError("symbol table names a missing string table", offset=symtab.offset)
        strtab = self.sections[symtab.link].data
        fmt = struct.Struct(self.endian + "IBBHQQ")
        count = len(symtab.data) // fmt.size
        out = []
        for index, (name_off, info, _other, shndx, value, size) in enumerate(
            fmt.iter_unpack(symtab.data[: count * fmt.size])
        ):
            out.append(
                Symbol(
                    index,
                    _cstr(strtab, name_off, "symbol name"),
                    value,
                    size,
                    info >> 4,
                    info & 0xF,
                    shndx,
                )
            )
        return out

    @staticmethod
    def _is_code(sec: _Section) -> bool:
        return sec.type == SHT_PROGBITS and bool(sec.flags & SHF_EXECINSTR) and sec.size > 0

    def _section_name(self, shndx: int) -> str:
        if shndx == SHN_UNDEF or shndx >= len(self.sections):
            return ""
        return self.sections[shndx].name

    def _section_bytes(self, name: str) -> bytes | None:
        sec = self.by_name.get(name)
        return sec.data if sec is not None and sec.type != SHT_NOBITS else None

    # --- simple sections -----------------------------------------------------------------------

    def _license(self) -> str | None:
        data = self._section_bytes("license")
        if data is None:
            return None
        return data.split(b"\0", 1)[0].decode("utf-8", "replace")

    def _kernel_version(self) -> int | None:
        data = self._section_bytes("version")
        if data is None:
            return None
        if len(data) != 4:
            raise ELFError(f"the version section is {len(data)} bytes, not 4")
        return int(struct.unpack(self.endian + "I", data)[0])

    def _data_sections(self) -> tuple[DataSection, ...]:
        return tuple(
            DataSection(sec.name, sec.size)
            for sec in self.sections
            if sec.name.startswith(_DATA_PREFIXES)
            and sec.type in (SHT_PROGBITS, SHT_NOBITS)
            and not sec.flags & SHF_EXECINSTR
        )

    # --- BTF -------------------------------------------------------------------------------

    def _btf(self) -> BTF | None:
        data = self._section_bytes(".BTF")
        if data is None:
            return None
        return BTF.from_bytes(data, source=self.source)

    def _btf_ext(self, btf: BTF | None) -> BtfExt | None:
        data = self._section_bytes(".BTF.ext")
        if data is None or btf is None:
            return None
        return parse_btf_ext(data, btf, source=self.source)

    # --- relocations and functions -------------------------------------------------------------

    def _rel_entries(self, rel: _Section) -> Iterator[tuple[int, int, Symbol]]:
        """The (offset, type, symbol) of each entry of SHT_REL section `rel`."""
        fmt = struct.Struct(self.endian + "QQ")
        count = len(rel.data) // fmt.size
        for r_offset, r_info in fmt.iter_unpack(rel.data[: count * fmt.size]):
            sym_index = r_info >> 32
            if sym_index >= len(self.symbols):
                raise ELFError(
                    f"relocation in {rel.name} names symbol {sym_index}, past the table",
                    offset=rel.offset,
                )
            yield r_offset, r_info & 0xFFFFFFFF, self.symbols[sym_index]

    def _relocations(self, code: dict[int, tuple[Insn, ...]]) -> dict[int, tuple[Relocation, ...]]:
        out: dict[int, tuple[Relocation, ...]] = {}
        for sec in self.sections:
            if sec.type != SHT_REL or sec.info not in code:
                continue
            target = self.sections[sec.info]
            insns = code[sec.info]
            relocs = []
            for r_offset, r_type, sym in self._rel_entries(sec):
                if r_offset % 8 or r_offset // 8 >= len(insns):
                    raise ELFError(
                        f"relocation in {sec.name} at {r_offset:#x} is not on an instruction",
                        offset=sec.offset,
                    )
                relocs.append(
                    Relocation(
                        target.name,
                        r_offset // 8,
                        r_type,
                        sym.name,
                        self._section_name(sym.shndx),
                        sym.value,
                        sym.type,
                    )
                )
            out[sec.info] = tuple(relocs)
        return out

    def _functions(
        self, code: dict[int, tuple[Insn, ...]], relocs: dict[int, tuple[Relocation, ...]]
    ) -> list[Function]:
        out = []
        for shndx, insns in code.items():
            sec = self.sections[shndx]
            info = section_info(sec.name)
            by_insn = {r.insn_index: r for r in relocs.get(shndx, ())}
            syms = sorted(
                (s for s in self.symbols if s.shndx == shndx and s.type == STT_FUNC),
                key=lambda s: s.value,
            )
            for sym in syms:
                if sec.name != TEXT and sym.bind == STB_LOCAL:
                    raise ELFError(
                        f"program {sym.name!r} in {sec.name} is static, which libbpf refuses",
                        hint="programs must be global functions",
                    )
                if sym.value % 8 or sym.size % 8 or sym.value + sym.size > sec.size:
                    raise ELFError(
                        f"function {sym.name!r} [{sym.value:#x}, +{sym.size:#x}) does not fit "
                        f"{sec.name}",
                        offset=sec.offset + min(sym.value, sec.size),
                    )
                start, end = sym.value // 8, (sym.value + sym.size) // 8
                out.append(
                    summarise_function(
                        sym, sec.name, info, insns[start:end], start, by_insn, self.code_sections
                    )
                )
        return out

    # --- maps ----------------------------------------------------------------------------------

    def _maps(self, btf: BTF | None) -> tuple[Map, ...]:
        maps: list[Map] = []
        sec = self.by_name.get(MAPS)
        if sec is not None:
            details = _btf_map_details(btf) if btf is not None else {}
            for sym in self._data_symbols(sec.index):
                maps.append(details.get(sym.name, Map(sym.name, MAPS)))
        sec = self.by_name.get(LEGACY_MAPS)
        if sec is not None:
            for sym in self._data_symbols(sec.index):
                maps.append(self._legacy_map(sym, sec))
        return tuple(maps)

    def _data_symbols(self, shndx: int) -> list[Symbol]:
        return sorted(
            (
                s
                for s in self.symbols
                if s.shndx == shndx
                and s.name
                and s.type != STT_SECTION
                and (s.type == STT_OBJECT or s.bind != STB_LOCAL)
            ),
            key=lambda s: s.value,
        )

    def _legacy_map(self, sym: Symbol, sec: _Section) -> Map:
        # struct bpf_map_def: type, key_size, value_size, max_entries, map_flags (u32 each)
        raw = sec.data[sym.value : sym.value + min(sym.size, 20)]
        values: list[int | None] = [None] * 5
        for slot in range(len(raw) // 4):
            values[slot] = int(struct.unpack_from(self.endian + "I", raw, slot * 4)[0])
        return Map(sym.name, LEGACY_MAPS, *values)

    # --- struct_ops --------------------------------------------------------------------------

    def _struct_ops(self, btf: BTF | None, programs: tuple[Function, ...]) -> tuple[StructOps, ...]:
        sections = [
            (sec.name, sec.data, self._programs_set_in(sec, programs))
            for sec in (self.by_name.get(name) for name in STRUCT_OPS_SECTIONS)
            if sec is not None
        ]
        return read_struct_ops(btf, sections)

    def _programs_set_in(self, sec: _Section, programs: tuple[Function, ...]) -> dict[int, str]:
        """{byte offset in `sec`: the program a relocation there points to}."""
        found: dict[int, str] = {}
        for rel in self.sections:
            if rel.type != SHT_REL or rel.info != sec.index:
                continue
            for r_offset, _type, sym in self._rel_entries(rel):
                where = self._section_name(sym.shndx)
                program = function_containing(programs, where, sym.value // 8)
                if program is None:  # a subprogram or data: libbpf refuses the object
                    raise ELFError(
                        f"a relocation in {rel.name} points to {sym.name or where}, which is no "
                        "program (libbpf refuses it)"
                    )
                found[r_offset] = program.name
        return found

    # --- CO-RE ---------------------------------------------------------------------------------

    def _core_relos(
        self,
        btf: BTF | None,
        btf_ext: BtfExt | None,
        programs: tuple[Function, ...],
        subprograms: tuple[Function, ...],
    ) -> tuple[CoreReloSite, ...]:
        if btf is None or btf_ext is None:
            return ()
        out = []
        for relo in btf_ext.core_relos:
            index = relo.insn_index
            func = function_containing(programs + subprograms, relo.section, index)
            out.append(
                CoreReloSite(
                    kind=relo.kind,
                    type_id=relo.type_id,
                    type_name=btf.name(relo.type_id) if relo.type_id else "",
                    access=relo.access,
                    section=relo.section,
                    insn_index=index,
                    function=func.name if func else None,
                    program=func.name if func and func.section != TEXT else None,
                )
            )
        return tuple(out)


_MAP_INT_FIELDS = ("type", "max_entries", "key_size", "value_size", "map_flags")


def _btf_map_details(btf: BTF) -> dict[str, Map]:
    """Decode `__uint`/`__type` members of each `.maps` VAR, where BTF allows."""
    out = {}
    for datasec_id in btf.find(MAPS, Kind.DATASEC):
        for info in btf.type(datasec_id).secinfos:
            var = btf.type(info.type)
            if var.kind != Kind.VAR:
                continue
            struct_type = btf.type(btf.resolve(var.type))
            if struct_type.kind != Kind.STRUCT:
                out[var.name] = Map(var.name, MAPS)
                continue
            fields: dict[str, int | None] = {}
            for member in struct_type.members:
                fields[member.name] = _map_member_value(btf, member.name, member.type)
            out[var.name] = Map(
                var.name,
                MAPS,
                map_type=fields.get("type"),
                key_size=fields.get("key_size", fields.get("key")),
                value_size=fields.get("value_size", fields.get("value")),
                max_entries=fields.get("max_entries"),
                map_flags=fields.get("map_flags"),
            )
    return out


def _map_member_value(btf: BTF, name: str, type_id: int) -> int | None:
    """`__uint(x, N)` is `int (*x)[N]`; `__type(x, T)` is `T *x`."""
    ptr = btf.type(btf.resolve(type_id))
    if ptr.kind != Kind.PTR:
        return None
    if name in _MAP_INT_FIELDS:
        target = btf.type(btf.resolve(ptr.type))
        return target.nelems if target.kind == Kind.ARRAY else None
    if name in ("key", "value"):
        try:
            return btf.type_size(ptr.type)
        except BTFError:
            return None
    return None


def _cstr(table: bytes, offset: int, what: str) -> str:
    if offset >= len(table) and offset != 0:
        raise ELFError(f"{what} offset {offset:#x} is outside its string table")
    end = table.find(b"\0", offset)
    if end < 0:
        raise ELFError(f"{what} at {offset:#x} is not NUL-terminated")
    return table[offset:end].decode("utf-8", "replace")
