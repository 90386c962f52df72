"""Greylists (SPEC §3): Module.symvers lines, `#` comments, and `# build-kernel: K1`.

The input is a sidecar file's bytes or an ELF `.greylist` section's bytes (trailing NULs of a
section are ignored). Lines are parsed by the Module.symvers line parser, so both stay in step.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping

from weak_bpf.errors import FormatError
from weak_bpf.parsers.symvers import SymvEntry, iter_lines, parse_line

_BUILD_KERNEL = "build-kernel:"


@dataclasses.dataclass(frozen=True)
class Greylist:
    entries: tuple[SymvEntry, ...]
    build_kernel: str | None = None
    source: str | None = None

    @functools.cached_property
    def by_symbol(self) -> Mapping[str, SymvEntry]:
        return {entry.symbol: entry for entry in self.entries}

    def get(self, symbol: str) -> SymvEntry | None:
        return self.by_symbol.get(symbol)

    def __len__(self) -> int:
        return len(self.entries)


def parse_greylist(data: bytes, source: str | None = None) -> Greylist:
    """Parse a greylist. A symbol listed twice with different columns is an error."""
    build_kernel: str | None = None
    entries: list[SymvEntry] = []
    seen: dict[str, SymvEntry] = {}
    for number, offset, line in iter_lines(bytes(data).rstrip(b"\0"), source, "greylist"):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comment = stripped[1:].strip()
            if comment.startswith(_BUILD_KERNEL):
                kver = comment[len(_BUILD_KERNEL) :].strip()
                if not kver or len(kver.split()) != 1:
                    raise FormatError(
                        f"line {number}: bad build-kernel comment: {line[:80]!r}",
                        source=source,
                        offset=offset,
                    )
                if build_kernel is not None and build_kernel != kver:
                    raise FormatError(
                        f"line {number}: a second build-kernel ({kver}, was {build_kernel})",
                        source=source,
                        offset=offset,
                    )
                build_kernel = kver
            continue
        entry = parse_line(line, number, offset, source)
        previous = seen.get(entry.symbol)
        if previous is not None:
            if dataclasses.replace(previous, line=entry.line) != entry:
                raise FormatError(
                    f"line {number}: {entry.symbol} is listed again (first on line "
                    f"{previous.line}) with other columns",
                    source=source,
                    offset=offset,
                )
            continue
        seen[entry.symbol] = entry
        entries.append(entry)
    return Greylist(tuple(entries), build_kernel, source)


def render_greylist(
    entries: Iterable[SymvEntry],
    *,
    build_kernel: str | None = None,
    comments: Iterable[str] = (),
) -> str:
    """A greylist as text: comment lines, the build kernel, then entries sorted by symbol."""
    lines = [f"# {c}" if c else "#" for comment in comments for c in comment.splitlines() or [""]]
    if build_kernel is not None:
        lines.append(f"# {_BUILD_KERNEL} {build_kernel}")
    lines.extend(e.render() for e in sorted(entries, key=lambda e: (e.symbol, e.module)))
    return "".join(line + "\n" for line in lines)
