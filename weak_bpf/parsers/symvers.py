"""Module.symvers: `0xCRC<TAB>symbol<TAB>module<TAB>export-type[<TAB>namespace]`, one export a line.

The line parser here is shared with the greylist reader (same columns, plus comments there).
The input is the plain text: decompress first (weak_bpf.compression).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
from collections.abc import Iterator, Mapping

from weak_bpf.errors import FormatError


class ExportType(str, enum.Enum):
    """An export macro. The BPF ones are from the 2020 proposal; kernels emit the first two."""

    EXPORT_SYMBOL = "EXPORT_SYMBOL"
    EXPORT_SYMBOL_GPL = "EXPORT_SYMBOL_GPL"
    EXPORT_SYMBOL_BPF = "EXPORT_SYMBOL_BPF"
    EXPORT_SYMBOL_BPF_GPL = "EXPORT_SYMBOL_BPF_GPL"
    EXPORT_SYMBOL_BPF__acquires = "EXPORT_SYMBOL_BPF__acquires"
    EXPORT_SYMBOL_BPF_GPL__acquires = "EXPORT_SYMBOL_BPF_GPL__acquires"
    EXPORT_SYMBOL_BPF__releases = "EXPORT_SYMBOL_BPF__releases"
    EXPORT_SYMBOL_BPF_GPL__releases = "EXPORT_SYMBOL_BPF_GPL__releases"
    # accepted, and flagged: removed from the kernel (unused exports in 5.13, GPL_FUTURE in 5.13)
    EXPORT_UNUSED_SYMBOL = "EXPORT_UNUSED_SYMBOL"
    EXPORT_UNUSED_SYMBOL_GPL = "EXPORT_UNUSED_SYMBOL_GPL"
    EXPORT_SYMBOL_GPL_FUTURE = "EXPORT_SYMBOL_GPL_FUTURE"

    @property
    def gpl_only(self) -> bool:
        """Only GPL-compatible code may use the symbol (GPL_FUTURE is not GPL-only yet)."""
        return "_GPL" in self.value and not self.value.endswith("_GPL_FUTURE")

    @property
    def bpf(self) -> bool:
        """One of the proposal's BPF export types."""
        return self.value.startswith("EXPORT_SYMBOL_BPF")

    @property
    def acquires(self) -> bool:
        return self.value.endswith("__acquires")

    @property
    def releases(self) -> bool:
        return self.value.endswith("__releases")

    @property
    def flagged(self) -> bool:
        """An obsolete export type: accepted, but worth a warning."""
        return "UNUSED" in self.value or self.value.endswith("_GPL_FUTURE")


@dataclasses.dataclass(frozen=True)
class SymvEntry:
    """One exported symbol. `crc` is an unsigned 32-bit value."""

    crc: int
    symbol: str
    module: str
    export_type: ExportType
    namespace: str | None = None
    line: int = 0  # 1-based line in the source (0: not from a file)

    def render(self) -> str:
        """The entry as a Module.symvers line, without a newline."""
        cols = [f"0x{self.crc:08x}", self.symbol, self.module, self.export_type.value]
        if self.namespace:
            cols.append(self.namespace)
        return "\t".join(cols)


@dataclasses.dataclass(frozen=True)
class Symvers:
    """A parsed Module.symvers. The first entry of a symbol wins in the index."""

    entries: tuple[SymvEntry, ...]
    source: str | None = None

    @functools.cached_property
    def by_symbol(self) -> Mapping[str, SymvEntry]:
        index: dict[str, SymvEntry] = {}
        for entry in self.entries:
            index.setdefault(entry.symbol, entry)
        return index

    def get(self, symbol: str) -> SymvEntry | None:
        return self.by_symbol.get(symbol)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self.by_symbol

    def __len__(self) -> int:
        return len(self.entries)


_EXPORT_TYPES = {t.value: t for t in ExportType}
_CRC = re.compile(r"0x[0-9a-fA-F]{1,8}\Z")
_NAME = re.compile(r"[^\s]+\Z")


def iter_lines(data: bytes, source: str | None, what: str) -> Iterator[tuple[int, int, str]]:
    """(1-based line number, byte offset of the line, its text without the newline).

    A byte that is not UTF-8 is a FormatError at its offset.
    """
    offset = 0
    for number, raw in enumerate(bytes(data).split(b"\n"), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(
                f"line {number}: {what} is not UTF-8 text ({e.reason})",
                source=source,
                offset=offset + e.start,
            ) from None
        yield number, offset, line.rstrip("\r")
        offset += len(raw) + 1


def parse_line(line: str, lineno: int, offset: int, source: str | None) -> SymvEntry:
    """One Module.symvers line. Raises FormatError naming the line."""

    def bad(what: str) -> FormatError:
        return FormatError(f"line {lineno}: {what}: {line[:80]!r}", source=source, offset=offset)

    cols = line.split("\t")
    if len(cols) == 5 and cols[4] == "":
        cols.pop()  # modpost ends every line with a tab: an empty namespace
    if not 4 <= len(cols) <= 5:
        raise bad(f"expected 4 or 5 tab-separated columns, found {len(cols)}")
    crc_text, symbol, module, export = cols[:4]
    if not _CRC.match(crc_text):
        raise bad(f"bad CRC {crc_text[:20]!r} (expected 0x and up to 8 hex digits)")
    if not _NAME.match(symbol):
        raise bad("empty or blank symbol name")
    if not _NAME.match(module):
        raise bad("empty or blank module name")
    export_type = _EXPORT_TYPES.get(export)
    if export_type is None:
        raise bad(f"unknown export type {export[:40]!r}")
    namespace = cols[4] if len(cols) == 5 else None
    if namespace is not None and not _NAME.match(namespace):
        raise bad("blank namespace")
    return SymvEntry(int(crc_text, 16), symbol, module, export_type, namespace, lineno)


# a well-formed line, matched in one step; anything else goes through parse_line for its error
_GOOD_LINE = re.compile(r"0x([0-9a-fA-F]{1,8})\t([^\s]+)\t([^\s]+)\t([^\s]+)(?:\t([^\s]*))?\r?\Z")


def parse_symvers(data: bytes, source: str | None = None) -> Symvers:
    """Parse a plain Module.symvers (blank lines are skipped)."""
    entries = []
    for number, offset, line in iter_lines(data, source, "Module.symvers"):
        good = _GOOD_LINE.match(line)
        export_type = _EXPORT_TYPES.get(good.group(4)) if good else None
        if good and export_type is not None:
            crc, symbol, module, _, namespace = good.groups()
            entry = SymvEntry(int(crc, 16), symbol, module, export_type, namespace or None, number)
            entries.append(entry)
        elif line.strip():
            entries.append(parse_line(line, number, offset, source))
    return Symvers(tuple(entries), source)
