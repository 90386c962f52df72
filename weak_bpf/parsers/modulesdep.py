"""modules.dep, as depmod writes it: `path/to/mod.ko[.xz]: dep1.ko dep2.ko ...`, one module a line,
each listing every module it needs (the last one is loaded first)."""

from __future__ import annotations


def parse_modules_dep(data: bytes, source: str | None = None) -> dict[str, tuple[str, ...]]:
    """{module file as listed: the module files it depends on}. A line without a colon is not a
    module's line and is passed over, as modprobe does."""
    deps: dict[str, tuple[str, ...]] = {}
    for line in data.decode(errors="replace").splitlines():
        head, colon, rest = line.partition(":")
        if head and colon:
            deps[head] = tuple(rest.split())
    return deps
