"""kABI stablelists (RHEL's `kabi_stablelist_<arch>`; older files are `kabi_whitelist_<arch>`).

The first line is a header such as `[rhel9_x86_64_stablelist]`, then one tab-indented symbol a
line.
Blank lines and `#` comments are skipped.
"""

from __future__ import annotations

import dataclasses
import re

from weak_bpf.errors import FormatError
from weak_bpf.parsers.symvers import iter_lines

# Architectures that RHEL and Fedora build, longest first so that "x86_64" wins over "64".
KNOWN_ARCHES = ("x86_64", "aarch64", "ppc64le", "ppc64", "s390x", "riscv64", "i686")
_HEADER = re.compile(r"\[(?P<name>[A-Za-z0-9_.+-]+?)_(?P<kind>stablelist|whitelist)\]\Z")
_SYMBOL = re.compile(r"[A-Za-z0-9_.$]+\Z")


@dataclasses.dataclass(frozen=True)
class KabiList:
    """`release` and `arch` are split from the header name ("rhel9", "x86_64"); `arch` is None
    when the name ends in no known architecture."""

    header: str  # e.g. "rhel9_x86_64_stablelist"
    release: str
    arch: str | None
    kind: str  # "stablelist" or "whitelist"
    symbols: frozenset[str]
    source: str | None = None

    def __contains__(self, symbol: object) -> bool:
        return symbol in self.symbols


def parse_kabi_list(data: bytes, source: str | None = None) -> KabiList:
    header: re.Match[str] | None = None
    symbols: set[str] = set()
    for number, offset, line in iter_lines(data, source, "kABI list"):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if header is None:
            header = _HEADER.match(text)
            if header is None:
                raise FormatError(
                    f"line {number}: expected a header like [rhel9_x86_64_stablelist], "
                    f"found {text[:80]!r}",
                    source=source,
                    offset=offset,
                )
            continue
        if not _SYMBOL.match(text):
            raise FormatError(
                f"line {number}: not a symbol name: {text[:80]!r}", source=source, offset=offset
            )
        symbols.add(text)
    if header is None:
        raise FormatError("empty kABI list: no [..._stablelist] header", source=source, offset=0)
    name = header.group("name")
    release, arch = name, None
    for known in KNOWN_ARCHES:
        if name.endswith("_" + known):
            release, arch = name[: -len(known) - 1], known
            break
    return KabiList(
        header=header.group(0)[1:-1],
        release=release,
        arch=arch,
        kind=header.group("kind"),
        symbols=frozenset(symbols),
        source=source,
    )
