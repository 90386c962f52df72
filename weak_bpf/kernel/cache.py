"""The cache of parsed kernel data, `var/cache/weak-bpf-progs/` under the root: safe to delete.

Entries are named by a hash of what they were made from, so a stale entry is never used: it is
simply not found. Reading never fails (a bad entry counts as absent); writing goes through
weak_bpf.apply.writer and is skipped in a dry run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from weak_bpf.apply import writer as actions

CACHE_DIR = "var/cache/weak-bpf-progs"
MAX_ENTRY = 256 << 20


def content_key(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:32]


def file_key(path: Path) -> str:
    """A hash of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


def stat_key(paths: Sequence[str | Path]) -> str:
    """A hash of many files' names, inodes, sizes and modification times: cheap. Package managers
    replace a file by renaming a new one over it (a new inode). The change time is left out: a
    new hard link to a file changes it, and test roots hard-link their kernels."""
    parts = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            parts.append(f"{path}\0-")
            continue
        parts.append(f"{path}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}")
    return content_key("\n".join(parts))


class Cache:
    def __init__(self, root: Path, *, writable: bool) -> None:
        self.dir = root / CACHE_DIR
        self.writable = writable

    def get(self, name: str) -> bytes | None:
        try:
            with open(self.dir / name, "rb") as f:
                data = f.read(MAX_ENTRY + 1)
        except OSError:
            return None
        return data if len(data) <= MAX_ENTRY else None

    def map(self, name: str) -> memoryview | None:
        """An entry mapped, not read: processes that map it share its pages, and a page is read
        only when touched. None if absent or empty."""
        try:
            with open(self.dir / name, "rb") as f:
                return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        except (OSError, ValueError):
            return None

    def get_json(self, name: str) -> Any:
        """A JSON entry, or None if absent or unreadable."""
        data = self.get(name)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None

    def put(self, name: str, data: bytes) -> None:
        if not self.writable:
            return
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
            actions.write_atomic(self.dir / name, data)
