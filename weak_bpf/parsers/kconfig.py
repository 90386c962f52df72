"""Kernel configuration (`.config`, `/boot/config-K`): `CONFIG_X=y|m|"text"|123|0x1f`, and
`# CONFIG_X is not set`. Values keep their text; strings lose their quotes and escapes."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from weak_bpf.errors import FormatError
from weak_bpf.parsers.symvers import iter_lines

_SET = re.compile(r"(CONFIG_[A-Za-z0-9_]+)=(.*)\Z")
_NOT_SET = re.compile(r"# (CONFIG_[A-Za-z0-9_]+) is not set\Z")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"\Z')
_BARE = re.compile(r"[A-Za-z0-9_+-]+\Z")  # y, m, n, decimal, hex


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Options by name (with the CONFIG_ prefix). "is not set" is stored as "n"."""

    options: Mapping[str, str]
    source: str | None = None

    def get(self, name: str) -> str | None:
        return self.options.get(_full(name))

    def enabled(self, name: str) -> bool:
        """Built in or modular (y or m)."""
        return self.get(name) in ("y", "m")

    def builtin(self, name: str) -> bool:
        return self.get(name) == "y"

    def get_int(self, name: str) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        try:
            return int(value, 0)
        except ValueError:
            return None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _full(name) in self.options


def _full(name: str) -> str:
    return name if name.startswith("CONFIG_") else "CONFIG_" + name


def parse_kconfig(data: bytes, source: str | None = None) -> KernelConfig:
    options: dict[str, str] = {}
    for number, offset, line in iter_lines(data, source, "kernel config"):
        text = line.strip()
        if not text:
            continue
        not_set = _NOT_SET.match(text)
        if not_set:
            options[not_set.group(1)] = "n"
            continue
        if text.startswith("#"):
            continue
        assignment = _SET.match(text)
        if assignment is None:
            raise FormatError(
                f"line {number}: expected CONFIG_NAME=value, found {text[:80]!r}",
                source=source,
                offset=offset,
            )
        name, value = assignment.groups()
        string = _STRING.match(value)
        if string:
            value = re.sub(r"\\(.)", r"\1", string.group(1))
        elif not _BARE.match(value):
            raise FormatError(
                f"line {number}: bad value for {name}: {value[:80]!r}", source=source, offset=offset
            )
        options[name] = value
    return KernelConfig(options, source)
