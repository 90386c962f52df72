"""System.map (and /proc/kallsyms): `address type name[<TAB>[module]]` lines.

Parsing checks every line with one regular expression over the whole text; the name index is a
dict built on first lookup. A 150k-line map parses in about 40 ms and indexes in about 20 ms.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
from collections.abc import Mapping

from weak_bpf.errors import FormatError

_LINE = re.compile(r"^[0-9a-fA-F]{1,16} [A-Za-z?] (\S+)(?:\t\[[^\]\s]+\])?[ \t]*$", re.M)
_PLACEHOLDER = "The real System.map is in"  # Debian's stub when the map ships in a -dbg package


@dataclasses.dataclass(frozen=True)
class MapSymbol:
    address: int
    type: str  # nm's letter: T/t text, D/d data, B/b bss, R/r rodata, W/w weak, A absolute, ...
    name: str
    module: str | None = None  # kallsyms' [module] column

    @property
    def is_text(self) -> bool:
        return self.type in "TtWw"


@dataclasses.dataclass(frozen=True)
class SystemMap:
    """`placeholder` is true for Debian's stub map, which lists no real symbol."""

    lines: tuple[str, ...] = dataclasses.field(repr=False)
    names: tuple[str, ...] = dataclasses.field(repr=False)
    source: str | None = None
    placeholder: bool = False

    @functools.cached_property
    def _line_by_name(self) -> Mapping[str, str]:
        # reversed, so that the first line of a name wins
        return dict(zip(reversed(self.names), reversed(self.lines)))

    @functools.cached_property
    def _duplicates(self) -> frozenset[str]:
        if len(self._line_by_name) == len(self.names):
            return frozenset()
        return frozenset(n for n, c in collections.Counter(self.names).items() if c > 1)

    def get(self, name: str) -> MapSymbol | None:
        """The first symbol called `name`."""
        line = self._line_by_name.get(name)
        if line is None:
            return None
        address, letter, rest = line.split(None, 2)
        module = rest.split("\t[", 1)[1].rstrip().rstrip("]") if "\t[" in rest else None
        return MapSymbol(int(address, 16), letter, name, module)

    def __contains__(self, name: object) -> bool:
        return name in self._line_by_name

    def __len__(self) -> int:
        return len(self.names)

    def is_unique(self, name: str) -> bool:
        """Whether `name` appears once (new kernels refuse a kprobe on an ambiguous name)."""
        return name in self._line_by_name and name not in self._duplicates


def parse_system_map(data: bytes, source: str | None = None) -> SystemMap:
    """Check every line; a bad one is a FormatError naming it."""
    raw = bytes(data)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise FormatError(f"line {line}: not ASCII text", source=source, offset=e.start) from None
    if _PLACEHOLDER in text[:200] and text.count("\n") <= 1:
        return SystemMap((), (), source, placeholder=True)
    lines = [line for line in text.splitlines() if line.strip()]
    names = _LINE.findall(text)
    if len(names) != len(lines):
        _raise_first_bad_line(text, source)
    return SystemMap(tuple(lines), tuple(names), source)


def _raise_first_bad_line(text: str, source: str | None) -> None:
    offset = 0
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip() and not _LINE.fullmatch(line.rstrip("\r")):
            raise FormatError(
                f"line {number}: expected 'address type name', found {line[:80]!r}",
                source=source,
                offset=offset,
            )
        offset += len(line) + 1
    raise FormatError("unreadable System.map", source=source, offset=0)
