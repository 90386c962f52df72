"""Paths below a root, looked up as in a chroot: an absolute symlink target is taken relative to
the root, and a link whose target climbs above the root (through "..") counts as absent."""

from __future__ import annotations

import os
import stat
from pathlib import Path

_MAX_LINKS = 40  # like the kernel's limit on nested symlinks


def resolve_in_root(root: Path, relative: str) -> Path | None:
    """`root/relative` with symlinks resolved inside the root; None if absent or if a link leads
    out of the root (or loops)."""
    found = resolved_path(str(root), relative)
    return None if found is None else Path(found)


def resolved_path(top: str, relative: str) -> str | None:
    """resolve_in_root on strings, for the paths of many programs."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    parts.reverse()  # a stack: the next component is last
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop()
        if part == "..":
            if not done:
                return None  # above the root
            done.pop()
            continue
        here = os.path.join(top, *done, part)
        try:
            mode = os.lstat(here).st_mode
        except (OSError, ValueError):
            return None
        if not stat.S_ISLNK(mode):
            done.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            return None
        target = os.readlink(here)
        if target.startswith("/"):
            done = []  # chroot semantics: absolute targets start at the root
        parts.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
    return os.path.join(top, *done)


def module_dirs(root: Path) -> tuple[str, ...]:
    """The module trees to look in: usr/lib/modules, and lib/modules on a root whose lib is a
    real directory (no merged /usr)."""
    lib = root / "lib"
    if lib.is_dir() and not lib.is_symlink():
        return ("usr/lib/modules", "lib/modules")
    return ("usr/lib/modules",)
