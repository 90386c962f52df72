"""The name index of a BTF blob: which type ids a name has, built on the first lookup.

Names are string offsets; the index is the sorted `name_off << 32 | own index` keys, so the ids of
one name are a contiguous run, and each distinct string's offsets are found from its text. A split
BTF (module BTF) looks names up in its own strings, then in its base's.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable
from itertools import repeat
from operator import lshift, or_

from weak_bpf.parsers.btftypes import Kind

_U32 = 0xFFFFFFFF
_NAME_SHIFT = 32  # name index keys: name_off << 32 | own index


class NameIndex:
    """Name lookups of parsers.btf.BTF, which sets these attributes when it parses a blob."""

    start_id: int
    base: NameIndex | None
    _strings: bytes  # this blob's own string section
    _str_start: int  # the offset its strings start at (after the base's)
    _name_offs: array  # each own type's name offset, by own index
    _name_keys: array | None
    _str_first: dict[bytes, int] | None
    _str_more: dict[bytes, list[int]]

    def kind(self, type_id: int) -> Kind:
        raise NotImplementedError

    def string(self, offset: int) -> str:
        raise NotImplementedError

    def find(self, name: str, kind: Kind | None = None) -> tuple[int, ...]:
        """Ids of all types named `name` (of `kind`, if given), own types first, then the base's."""
        keys = self._name_index()
        found: list[int] = []
        for off in self._offsets_of(name.encode("utf-8", "surrogatepass")):
            lo = bisect_left(keys, off << _NAME_SHIFT)
            hi = bisect_left(keys, (off + 1) << _NAME_SHIFT, lo)
            found.extend(key & _U32 for key in keys[lo:hi])
        found.sort()
        start = self.start_id
        ids = [start + index for index in found]
        if kind is not None:
            ids = [tid for tid in ids if self.kind(tid) == kind]
        if self.base is not None:
            ids.extend(self.base.find(name, kind))
        return tuple(ids)

    def has_string(self, name: str) -> bool:
        """Whether a string of this blob or its base reads `name`, or ends with it (a type's name
        may point into the base's strings, or at the tail of a longer string)."""
        needle = name.encode("utf-8", "surrogatepass") + b"\0"
        return needle in self._strings or (self.base is not None and self.base.has_string(name))

    def build_index(self) -> None:
        """Build the name index now; it is otherwise built on the first lookup."""
        self._name_index()
        self._string_index()

    def _name_index(self) -> array:
        """Sorted `name_off << 32 | own index` keys: the ids of one name are a contiguous run."""
        if self._name_keys is None:
            keys = list(
                map(
                    or_,
                    map(lshift, self._name_offs, repeat(_NAME_SHIFT)),
                    range(len(self._name_offs)),
                )
            )
            keys.sort()
            self._name_keys = array("Q", keys)  # no int objects: a tenth of the memory
        return self._name_keys

    def _string_index(self) -> dict[bytes, int]:
        """Type name -> its first offset in this blob's own string section (built once). Only
        the strings that name a type are indexed, and no other string is copied out: a lookup
        by name wants no other, and a kernel's index is a third of what all strings cost."""
        if self._str_first is None:
            strings, start, base = self._strings, self._str_start, self.base
            first: dict[bytes, int] = {}
            for off in sorted(set(self._name_offs)):
                rel = off - start
                if rel < 0:  # a name in the base's strings
                    if base is None:
                        continue
                    text = base.string(off).encode("utf-8", "surrogatepass")
                    if off in base._offsets_of(text):
                        continue  # the base's own index covers it (a name of one of its types)
                else:
                    text = strings[rel : strings.index(b"\0", rel)]
                    if (rel == 0 or strings[rel - 1] == 0) and text not in first:
                        first[text] = off
                        continue
                # a repeated string, or a name that points into a string: rare, kept apart
                self._str_more.setdefault(text, []).append(off)
            self._str_first = first
        return self._str_first

    def own_strings(self) -> Iterable[bytes]:
        """The distinct strings of this blob's own string section (not the base's), undecoded."""
        return dict.fromkeys(self._strings.split(b"\0")[:-1]).keys()

    def _offsets_of(self, text: bytes) -> list[int]:
        """Every string offset, in this blob's strings or its bases', that reads `text`."""
        offsets = []
        first = self._string_index().get(text)
        if first is not None:
            offsets.append(first)
        offsets.extend(self._str_more.get(text, ()))
        if self.base is not None:
            offsets.extend(self.base._offsets_of(text))
        return offsets
