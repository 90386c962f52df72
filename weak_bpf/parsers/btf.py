"""BTF reader: raw blobs and ELF `.BTF` sections, both byte orders, split BTF on a base.

Layout of a blob (include/uapi/linux/btf.h): a header, then, at offsets relative to the header's
end, the type section (u32 words), an optional layout section and the string section. The
header, the sections' bounds and the ELF `.BTF` section are read in btfblob.py; the records and
their decoding are in btftypes.py. Kinds unknown here (> 19) are skipped by the layout section's
sizes and decode as Kind.UNKN.

Speed: `from_bytes` validates the header and walks the type section once, keeping each type's word
offset and name offset; nothing is decoded. `type(id)` decodes one type and caches it. The
name index behind `find` is built on first use from C-speed primitives (split, accumulate, sort,
bisect), never by decoding types.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator, Sequence
from operator import itemgetter

from weak_bpf.errors import BTFError
from weak_bpf.parsers import btfblob
from weak_bpf.parsers.btfnames import NameIndex
from weak_bpf.parsers.btftypes import (
    KIND_MASK,
    KIND_OF,
    KNOWN_FIXED,
    KNOWN_PER_VLEN,
    NR_KINDS,
    VLEN_MASK,
    Kind,
    KindLayout,
    Param,
    Type,
    decode_record,
)
from weak_bpf.parsers.elf import Buffer

__all__ = ["BTF", "Kind", "KindLayout", "Param", "Type"]

# A step that ends the walk: marks a kind whose size is unknown (checked after the loop).
_UNSIZED = 1 << 40

_WORD = "I" if array("I").itemsize == 4 else "L"
_NATIVE = sys.byteorder
_U32 = 0xFFFFFFFF

_WITH_SIZE = frozenset(
    {Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.DATASEC, Kind.FLOAT}
)
_MODIFIERS = frozenset({Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG})
_SIZE_THROUGH = _MODIFIERS | {Kind.VAR, Kind.DECL_TAG}
_LONG_NAMES = ("long", "long int", "unsigned long", "long unsigned int")


def _gather(words: array, indexes: Sequence[int]) -> tuple[int, ...]:
    """words[i] for every i in indexes, at C speed."""
    if len(indexes) >= 2:
        return tuple(itemgetter(*indexes)(words))
    return tuple(words[i] for i in indexes)


class _Steps(dict[int, int]):
    """info word -> words the type takes; filled on first sight of each info value."""

    def __init__(self, fixed: list[int], per_vlen: list[int]) -> None:
        super().__init__()
        self._fixed = fixed
        self._per_vlen = per_vlen

    def __missing__(self, info: int) -> int:
        top = info >> 24
        step = self._fixed[top] + self._per_vlen[top] * (info & VLEN_MASK)
        self[info] = step
        return step


class BTF(NameIndex):
    """A parsed BTF blob. Cheap to build: only offsets, kinds and name offsets are read up front;
    `type(id)` decodes one type on demand and caches it.

    Type ids: 0 is void. A base BTF owns ids 1..nr_types-1. A split BTF (module BTF) owns ids
    start_id..nr_types-1, where start_id == base.nr_types, and looks up lower ids in its base.
    String offsets of a split BTF continue after the base's strings, as in the kernel.
    """

    @classmethod
    def from_bytes(cls, data: Buffer, *, base: BTF | None = None, source: str | None = None) -> BTF:
        """Parse a raw BTF blob, or an ELF file with a `.BTF` section. Raises BTFError.

        `data` may be any bytes-like object (bytes, memoryview, mmap); only the type and string
        sections are copied.
        """
        try:
            return cls._from_view(memoryview(data), base, source)
        except BTFError as err:
            # Drop the frames that still hold views of `data`, so that a caller can close an
            # mmap right after the error.
            raise err.with_traceback(None) from None

    @classmethod
    def _from_view(cls, view: memoryview, base: BTF | None, source: str | None) -> BTF:
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        blob_at = 0
        if view[:4] == btfblob.ELF_MAGIC:
            blob_at, size = btfblob.elf_btf_section(view, source)
            view = view[blob_at : blob_at + size]
        btf = cls.__new__(cls)
        btf._parse(view, base, source, blob_at)
        return btf

    byteorder: str  # "little" or "big"
    start_id: int
    nr_types: int  # one past the last valid id, base included
    base: BTF | None
    _str_end: int  # one past the last string offset, base included

    # --- parsing -------------------------------------------------------------------------

    def _parse(self, view: memoryview, base: BTF | None, source: str | None, at: int) -> None:
        self.source = source
        self.base = base
        self._at = at
        header = btfblob.read_header(view, self._error)
        self.byteorder = header.byteorder
        self.version, self.flags, self.hdr_len = header.version, header.flags, header.hdr_len
        self.type_offset = header.type_start  # where the type section starts in the blob
        strings = btfblob.read_strings(view, header, split=base is not None, error=self._error)
        self._strings = strings
        self._str_start = base._str_end if base is not None else 0
        self._str_end = self._str_start + len(strings)
        self._layout = btfblob.read_layout(view, header)
        self.start_id = base.nr_types if base is not None else 1
        words = array(_WORD)
        words.frombytes(view[self.type_offset : self.type_offset + header.type_len])
        if self.byteorder != _NATIVE:
            words.byteswap()
        self._words = words
        self._offs = self._walk(words)
        self.nr_types = self.start_id + len(self._offs)
        self._name_offs = array(_WORD, _gather(words, self._offs))
        if self._name_offs and max(self._name_offs) >= self._str_end:
            bad = next(i for i, off in enumerate(self._name_offs) if off >= self._str_end)
            raise self._error(
                f"type [{self.start_id + bad}] has name offset {self._name_offs[bad]} past the "
                f"strings ({self._str_end} bytes)",
                self._word_at(self._offs[bad]),
            )
        self._types: dict[int, Type] = {}
        self._str_cache: dict[int, str] = {}
        self._name_keys: array | None = None
        self._str_first: dict[bytes, int] | None = None
        self._str_more: dict[bytes, list[int]] = {}
        self._by_kind: dict[int, tuple[int, ...]] | None = None
        self._tags: dict[int, list[int]] | None = None
        self._ptr_size: int | None = None

    def _kind_tables(self) -> tuple[list[int], list[int]]:
        """Words per kind (fixed, per vlen item), completed from the layout section."""
        fixed = list(KNOWN_FIXED) + [_UNSIZED] * (NR_KINDS - len(KNOWN_FIXED))
        per_vlen = list(KNOWN_PER_VLEN) + [0] * (NR_KINDS - len(KNOWN_PER_VLEN))
        fixed[Kind.UNKN] = _UNSIZED
        layout = self._layout
        if not layout and self.base is not None:
            layout = self.base.layout  # a split BTF shares its base's layout, as in libbpf
        for kind, entry in enumerate(layout[:NR_KINDS]):
            if fixed[kind] != _UNSIZED:
                continue  # known kinds keep their fixed encoding
            if entry.info_size % 4 == 0 and entry.elem_size % 4 == 0:
                fixed[kind] = 3 + entry.info_size // 4
                per_vlen[kind] = entry.elem_size // 4
        return fixed, per_vlen

    def _walk(self, words: array) -> array:
        """Word offset of every type.

        The loop is the hot path of indexing: a step cache keyed by the info word, no bound
        check (running off the end raises IndexError), and the checks done once afterwards. A
        record that overruns the section, or a kind of unknown size, ends with `at` != the end.
        """
        fixed, per_vlen = self._kind_tables()
        steps = _Steps(fixed + fixed, per_vlen + per_vlen)  # indexed by info >> 24 (kind_flag too)
        infos = words[1:]  # infos[at] is the info word of the type at word `at`
        offs = array(_WORD)
        append = offs.append
        at = 0
        try:
            while True:
                append(at)
                at += steps[infos[at]]
        except IndexError:
            offs.pop()  # the `at` that found no type
        except OverflowError:
            pass  # `at` left the 32-bit range (an unsized kind): it was not appended
        end = len(words)
        if at != end:
            last = offs[-1] if offs else 0
            tid = self.start_id + len(offs) - 1
            if not offs:
                tid, last = self.start_id, at
            elif last + 2 < end:
                kind = words[last + 1] >> 24 & KIND_MASK
                if fixed[kind] == _UNSIZED:
                    raise self._error(
                        f"type [{tid}] has kind {kind}, unknown to this reader and not described "
                        f"by a layout section",
                        self._word_at(last),
                    )
            raise self._error(
                f"type [{tid}] runs past the end of the type section", self._word_at(last)
            )
        return offs

    def _word_at(self, word: int) -> int:
        return self.type_offset + 4 * word

    def _error(self, message: str, offset: int, hint: str | None = None) -> BTFError:
        """An error at `offset` in the blob (which may start inside an ELF file)."""
        return BTFError(message, source=self.source, offset=self._at + offset, hint=hint)

    # --- properties of the blob ----------------------------------------------------------

    @property
    def layout(self) -> tuple[KindLayout, ...]:
        """The layout section's entries (kind -> sizes); () without one."""
        return self._layout

    @property
    def strings_size(self) -> int:
        """One past the last string offset, base included."""
        return self._str_end

    def own_ids(self) -> range:
        """The ids this blob defines (excluding the base's)."""
        return range(self.start_id, self.nr_types)

    # --- per-type access -----------------------------------------------------------------

    def _own_index(self, type_id: int) -> int:
        index = type_id - self.start_id
        if index < 0 or type_id >= self.nr_types:
            raise BTFError(
                f"type id {type_id} is out of range (1..{self.nr_types - 1})", source=self.source
            )
        return index

    def raw_kind(self, type_id: int) -> int:
        """The kind number as encoded (kinds above 19 included)."""
        if type_id == 0:
            return 0
        if 0 < type_id < self.start_id and self.base is not None:
            return self.base.raw_kind(type_id)
        off = self._offs[self._own_index(type_id)]
        return self._words[off + 1] >> 24 & KIND_MASK

    def kind(self, type_id: int) -> Kind:
        """The kind of a type, without decoding it."""
        return KIND_OF[self.raw_kind(type_id)]

    def name(self, type_id: int) -> str:
        """The name of a type, without decoding it ("" for anonymous types and void)."""
        if type_id == 0:
            return ""
        if 0 < type_id < self.start_id and self.base is not None:
            return self.base.name(type_id)
        return self.string(self._name_offs[self._own_index(type_id)])

    def string(self, offset: int) -> str:
        """The string at `offset` in the (possibly base-continued) string section."""
        cached = self._str_cache.get(offset)
        if cached is not None:
            return cached
        if offset < self._str_start and self.base is not None:
            return self.base.string(offset)
        rel = offset - self._str_start
        if rel < 0 or offset >= self._str_end:
            raise BTFError(
                f"string offset {offset} is outside the strings (0..{self._str_end - 1})",
                source=self.source,
            )
        end = self._strings.index(b"\0", rel)  # the section ends with NUL
        text = self._strings[rel:end].decode("utf-8", "replace")
        self._str_cache[offset] = text
        return text

    def type(self, type_id: int) -> Type:
        """Decode type `type_id` (own or base). Raises BTFError for an id out of range."""
        cached = self._types.get(type_id)
        if cached is not None:
            return cached
        if type_id == 0:
            return Type(id=0, kind=Kind.UNKN, name="")
        if 0 < type_id < self.start_id and self.base is not None:
            return self.base.type(type_id)
        at = self._offs[self._own_index(type_id)]
        try:
            decoded = decode_record(self._words, at, type_id, self.string)
        except BTFError as err:
            err.offset = self._at + self._word_at(at)
            raise
        self._types[type_id] = decoded
        return decoded

    def __iter__(self) -> Iterator[Type]:
        """Decode every own type, in id order."""
        for type_id in self.own_ids():
            yield self.type(type_id)

    def ids_of_kind(self, kind: Kind) -> tuple[int, ...]:
        """Own ids of one kind, in id order (from an index built on first use)."""
        if self._by_kind is None:
            infos = _gather(self._words, [at + 1 for at in self._offs])
            by_kind: dict[int, list[int]] = {}
            start = self.start_id
            for index, info in enumerate(infos):
                raw = info >> 24 & KIND_MASK
                ids = by_kind.get(raw)
                if ids is None:
                    by_kind[raw] = [start + index]
                else:
                    ids.append(start + index)
            self._by_kind = {raw: tuple(ids) for raw, ids in by_kind.items()}
        return self._by_kind.get(int(kind), ())

    def decl_tags(self, type_id: int) -> tuple[Type, ...]:
        """DECL_TAG types that tag `type_id` (any component), from an index built on first use."""
        if self._tags is None:
            tags: dict[int, list[int]] = {}
            for tag_id in self.ids_of_kind(Kind.DECL_TAG):
                target = self._words[self._offs[tag_id - self.start_id] + 2]
                tags.setdefault(target, []).append(tag_id)
            self._tags = tags
        found = self.base.decl_tags(type_id) if self.base is not None else ()
        return found + tuple(self.type(tag) for tag in self._tags.get(type_id, ()))

    # --- following types -----------------------------------------------------------------

    def _check_id(self, type_id: int) -> None:
        if not 0 <= type_id < self.nr_types:
            raise BTFError(
                f"type id {type_id} is out of range (0..{self.nr_types - 1})", source=self.source
            )

    def resolve(self, type_id: int) -> int:
        """Skip TYPEDEF, VOLATILE, CONST, RESTRICT and TYPE_TAG; return the id underneath."""
        seen = set()
        self._check_id(type_id)
        while self.kind(type_id) in _MODIFIERS:
            if type_id in seen:
                raise BTFError(f"type [{type_id}] refers to itself", source=self.source)
            seen.add(type_id)
            type_id = self.type(type_id).type
            self._check_id(type_id)
        return type_id

    def type_size(self, type_id: int) -> int:
        """Byte size of a type, following modifiers, typedefs, arrays and pointers, as libbpf's
        btf__resolve_size does. Raises BTFError where a type has no size (void, FUNC, FWD)."""
        seen = set()
        nelems = 1
        start = type_id
        while True:
            self._check_id(type_id)
            if type_id in seen:
                raise BTFError(f"type [{start}] has a reference loop", source=self.source)
            seen.add(type_id)
            t = self.type(type_id)
            kind = t.kind
            if type_id == 0 or kind == Kind.UNKN:
                raise BTFError(f"type [{start}] has no size (void)", source=self.source)
            if kind in _WITH_SIZE:
                size = t.size
                break
            if kind == Kind.PTR:
                size = self.pointer_size()
                break
            if kind in _SIZE_THROUGH:
                type_id = t.type
            elif kind == Kind.ARRAY:
                nelems *= t.nelems
                if nelems > _U32:
                    raise BTFError(f"type [{start}] is too large", source=self.source)
                type_id = t.elem_type
            else:
                raise BTFError(
                    f"type [{start}] ({kind.name} [{type_id}]) has no size", source=self.source
                )
        if nelems * size > _U32:
            raise BTFError(f"type [{start}] is too large", source=self.source)
        return nelems * size

    def pointer_size(self) -> int:
        """Pointer size of the target: the size of its `long`, else 8 (as libbpf guesses)."""
        if self._ptr_size is None:
            self._ptr_size = 8
            for name in _LONG_NAMES:
                sizes = [self.type(tid).size for tid in self.find(name, Kind.INT)]
                if sizes and sizes[0] in (4, 8):
                    self._ptr_size = sizes[0]
                    break
        return self._ptr_size

    # --- writing -------------------------------------------------------------------------

    def to_bytes(self, byteorder: str | None = None) -> bytes:
        """This blob's own part as raw BTF in `byteorder` (default: as read), laid out
        canonically: header, types, layout, strings. Split BTF stays split."""
        byteorder = byteorder or self.byteorder
        if byteorder not in ("little", "big"):
            raise ValueError(f"byteorder must be 'little' or 'big', not {byteorder!r}")
        words = array(_WORD, self._words)
        if byteorder != _NATIVE:
            words.byteswap()
        return btfblob.pack(
            byteorder,
            version=self.version,
            flags=self.flags,
            with_layout_fields=self.hdr_len >= btfblob.HEADER_LEN_LAYOUT,
            types=words.tobytes(),
            layout=self._layout,
            strings=self._strings,
        )
