"""The name index of a BTF blob: which type ids a name has, built on the first lookup.

Names are string offsets; the index is the sorted `name_off << 32 | own index` keys, so the ids of
one name are a contiguous run, and each distinct string's offsets are found from its text. A split
BTF (module BTF) looks names up in its own strings, then in its base's.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from itertools import accumulate, repeat
from operator import add, lshift, or_

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
    _str_starts: array | None

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
        """Whether a string of this blob or its base reads `name` (a type's name may point into
        the base's strings, or at the tail of a longer string)."""
        return bool(self._offsets_of(name.encode("utf-8", "surrogatepass")))

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
        """String -> its first offset in this blob's own string section (built once)."""
        if self._str_first is None:
            parts = self._strings.split(b"\0")
            parts.pop()  # the piece after the final NUL
            starts = list(accumulate(map(add, map(len, parts), repeat(1)), initial=self._str_start))
            starts.pop()
            first = dict(zip(reversed(parts), reversed(starts)))
            if len(first) < len(parts):  # duplicate strings: rare, keep every offset
                for text, count in Counter(parts).items():
                    if count > 1:
                        self._str_more[text] = []
                for text, off in zip(parts, starts):
                    more = self._str_more.get(text)
                    if more is not None and first[text] != off:
                        more.append(off)
            self._str_starts = array("Q", starts)
            self._str_first = first
            self._index_inner_names(starts)
        return self._str_first

    def _index_inner_names(self, starts: list[int]) -> None:
        """Name offsets that are no string's start (legal, rare: they point into a string, or
        into the base's strings) are indexed one by one."""
        base = self.base
        for off in sorted(set(self._name_offs).difference(starts)):
            if off < self._str_start:
                if base is None or base._is_string_start(off):
                    continue  # the base's own index covers it
                text = base.string(off).encode("utf-8", "surrogatepass")
            else:
                rel = off - self._str_start
                text = self._strings[rel : self._strings.index(b"\0", rel)]
            self._str_more.setdefault(text, []).append(off)

    def _is_string_start(self, off: int) -> bool:
        if off < self._str_start:
            return self.base is not None and self.base._is_string_start(off)
        self._string_index()
        assert self._str_starts is not None
        pos = bisect_left(self._str_starts, off)
        return pos < len(self._str_starts) and self._str_starts[pos] == off

    def own_strings(self) -> Iterable[bytes]:
        """The distinct strings of this blob's own string section (not the base's), undecoded."""
        return self._string_index().keys()

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
